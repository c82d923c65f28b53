"""Peak memory of the point-map model's forward as the number of views grows (fp32, CPU).

Each view count runs in a fresh process: the bundled point-map model on V random views at a small size,
one forward; the figure is the process's peak resident memory less its resident memory once the model is
loaded, and that per view. ``--dense-views`` sets how many views go through the dense head at once
(MapAnything's memory-efficient inference is 1 view at a time on CPU; pixio's default is DENSE_VIEWS).

    python -m benchmarks.pointmap_memory --views 8,32,128 --side 128x96

Rows: pixio's default, the dense head given every view at once, and one view at a time at the largest
count; each a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(views: int, side: tuple[int, int], dense_views: int | None) -> dict:
    import torch

    import heads.pointmap.model as P
    from heads.pointmap.checkpoint import load_pointmap

    if dense_views is not None:
        P.DENSE_VIEWS = dense_views
    torch.set_grad_enabled(False)
    model = load_pointmap("pointmap-tiny").float().eval()
    w, h = side
    x = torch.randn(1, views, 3, h, w)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB: the model and the inputs
    start = time.perf_counter()
    model(x)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"views": views, "side": f"{w}x{h}", "dense_views": P.DENSE_VIEWS, "forward_s": round(seconds, 2),
            "peak_above_model_mib": round((peak - base) / 1024, 1),
            "per_view_mib": round((peak - base) / 1024 / views, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--views", default="8,32,128")
    ap.add_argument("--side", default="128x96")
    ap.add_argument("--dense-views", type=int, default=None)
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    side = tuple(int(v) for v in args.side.split("x"))
    if args.one is not None:
        print(json.dumps(one(args.one, side, args.dense_views)))
        return
    views = [int(s) for s in args.views.split(",")]
    modes = {"default": (args.dense_views, views), "all_at_once": (10 ** 6, views),  # the dense head unsplit
             "one_at_a_time": (1, views[-1:])}  # MapAnything's memory-efficient inference on a CPU
    rows = []
    for mode, (dense, counts) in modes.items():
        for v in counts:
            cmd = [sys.executable, "-m", "benchmarks.pointmap_memory", "--one", str(v), "--side", args.side]
            if dense is not None:
                cmd += ["--dense-views", str(dense)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append({"mode": mode, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    import torch

    from .common import emit, environment

    emit({"benchmark": "pointmap_memory", **environment(torch.device("cpu")), "rows": rows})

if __name__ == "__main__":
    main()

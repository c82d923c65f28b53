"""Known depth in: `pixio recon3d` on the 7-Scenes folder in ``../shared`` as it is (its colour frames as the
views, its recorded depth as known depth, its ``camera-intrinsics.txt`` as K), scored against that depth on the
recorded poses (`pixio evaluate recon3d --no-sensor-offset`: the depth images are the depth camera's, not
registered to the colour frames).

Three runs, each a fresh process, default options otherwise: the default (cameras moved until the measured
depths agree), ``--no-depth-cameras`` (the matched cameras as they are) and ``--no-depth-input`` (the network's
depth alone, the same frames). Wall time, peak memory, and the ATE and geometry rows of each under two
alignments: the similarity of the camera paths (the scale fitted) and a rigid one (`--no-scale`: the scene is
in metres, and its scale is judged).

    python -m benchmarks.known_depth --frames 250
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from .common import emit, environment, run_timed
from .recon3d import KITCHEN

RUNS = {"default": [], "no_depth_cameras": ["--no-depth-cameras"], "no_depth_input": ["--no-depth-input"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=250, help="the first N frames of the folder")
    args = ap.parse_args()
    frames = sorted(KITCHEN.glob("frame-*.color.jpg"))[:args.frames]
    record = {"benchmark": "known_depth", **environment(torch.device("cpu")), "frames": len(frames), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "seq"
        folder.mkdir()
        for p in frames:  # the RGB-D layout as it is: colour, depth and pose side by side, and the K
            for kind in ("color.jpg", "depth.png", "pose.txt"):
                (folder / p.name.replace("color.jpg", kind)).symlink_to(
                    (KITCHEN / p.name.replace("color.jpg", kind)).resolve())
        (folder / "camera-intrinsics.txt").symlink_to((KITCHEN / "camera-intrinsics.txt").resolve())
        for name, extra in RUNS.items():
            out = Path(tmp) / name
            seconds, peak, stdout, err = run_timed([sys.executable, "-m", "pixio_cli", "recon3d", str(folder), "-o",
                                                    str(out), "--cameras", "json", "--json", "-q", *extra])
            summary = json.loads(stdout.strip().splitlines()[-1])
            run = {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2),
                   "depth_registration": summary["cameras"].get("depth_registration")}
            for protocol, flag in (("similarity", "--scale"), ("rigid", "--no-scale")):
                _, _, scored, _ = run_timed([sys.executable, "-m", "pixio_cli", "evaluate", "recon3d", str(out),
                                             "--data", str(folder), "--no-sensor-offset", flag, "--json"])
                geometry = json.loads(scored.strip().splitlines()[-1])
                run[protocol] = {k: geometry[k] for k in ("ate", "ate_origin", "scale", "rows")}
            record["runs"][name] = run
            print(json.dumps({name: {p: run[p]["rows"]["scene"]["f@0.05"] for p in ("similarity", "rigid")}}),
                  file=sys.stderr, flush=True)
    emit(record)


if __name__ == "__main__":
    main()

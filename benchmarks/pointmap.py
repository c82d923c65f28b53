"""Views/s of the point-map model (MapAnything's architecture on Pixio) at pixio's default precision
against the same model in float32.

The float32 forward is MapAnything's numbers (scripts/pointmap_parity.py: worst 2e-5 relative), so it is
the plain reference inside this project; MapAnything's own code is not a dependency and is not timed here.
Random weights of the full MapAnything-Pixio-H shape by default. On CUDA the peak memory of our forward is reported too
(both models loaded).

    python -m benchmarks.pointmap --views 2 --side 256 --device cpu
    python -m benchmarks.pointmap --views 64 --side 512 --device cuda
"""

from __future__ import annotations

import argparse
import copy

import torch

from heads.pointmap.checkpoint import prepare_pointmap
from heads.pointmap.model import PointMapConfig, PointMapModel
from pixio_cli.encoder import build_encoder
from pixio_cli.engine import Engine, autocast

from .common import emit, environment, matmul_peak, paired_rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="h16", help="encoder size (MapAnything's: h16)")
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--side", type=int, default=256, help="square views of this side")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--iters", type=int, default=2, help="alternating timed calls of each model; the best counts")
    args = ap.parse_args()

    engine = Engine(args.device, args.precision, batch_size=args.views, workers=0)
    ref_engine = Engine(args.device, "fp32", batch_size=args.views, workers=0)
    torch.manual_seed(0)
    model = PointMapModel(build_encoder(args.size), PointMapConfig())
    model.init_weights()
    ours = prepare_pointmap(engine, model)
    ref = prepare_pointmap(ref_engine, copy.deepcopy(model).float())
    x = torch.randn(1, args.views, 3, args.side, args.side, device=engine.device)

    def run(net, eng):
        def fn(b: torch.Tensor):
            with torch.inference_mode(), autocast(eng.device, eng.dtype):
                return net(b)
        return fn

    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    a = run(ours, engine)(x)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None  # ours alone, both models loaded
    b = run(ref, ref_engine)(x)
    rel = float((a.pts3d - b.pts3d).abs().max() / b.pts3d.abs().max())
    # one scene of V views per call: scenes/s x V = views/s
    ours_rate, ref_rate = paired_rates(run(ours, engine), run(ref, ref_engine), batches=[x], rounds=args.iters,
                                       device=engine.device)
    record = {"benchmark": "pointmap", **environment(engine.device), "size": args.size, "views": args.views,
              "side": args.side, "precision": str(engine.dtype).replace("torch.", ""), "reference_precision": "float32",
              "reference": "the same model in float32 (= MapAnything's numbers)",
              "ours_views_s": round(args.views * ours_rate, 3), "reference_views_s": round(args.views * ref_rate, 3),
              "ratio": round(ours_rate / ref_rate, 3), "max_rel_diff_pts3d": round(rel, 5),
              "matmul_peak_tflop_s": round(matmul_peak(engine.device, engine.dtype), 3)}
    if cuda:
        record["peak_memory_gib"] = round(peak_gib, 2)
    emit(record)


if __name__ == "__main__":
    main()

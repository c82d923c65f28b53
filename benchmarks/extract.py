"""Images/s of `pixio extract`'s model path against transformers.PixioModel, same run.

Both models get the same random weights (made by transformers, read by our
checkpoint reader), the same device, precision, batch and images (real photos
from ../shared/data/photos when present, random pixels otherwise). Prints the
ratio ours / transformers; on a CPU also ``--precision int8``'s rate against the
same reference, and its features' smallest token cosine to ours in fp32 over
every batch.

    python -m benchmarks.extract --size b16 --device cpu --batch 8 --iters 5
    python -m benchmarks.extract --size h16 --device cuda --precision bf16 --batch 64
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from pixio_cli.engine import Engine
from pixio_cli.images import ResizePolicy, load_for_model
from pixio_cli.int8 import BelowBound, available as int8_available, min_cosine

from .common import PHOTOS, emit, environment, paired_rates, matmul_peak, same_weights

def images(n: int, side: int) -> list[np.ndarray]:
    files = sorted(PHOTOS.glob("*.JPEG"))[:n] if PHOTOS.exists() else []
    policy = ResizePolicy.parse(f"{side}x{side}")
    out = [load_for_model(f, policy)[0] for f in files]
    rng = np.random.default_rng(0)
    while len(out) < n:
        out.append(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="b16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--iters", type=int, default=3, help="alternating timed passes of each model; the best counts")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    engine = Engine(args.device, args.precision, batch_size=args.batch, workers=0, compile=args.compile)
    hf, ours = same_weights(args.size, engine)
    ours = engine.prepare(ours)

    imgs = images(args.images, args.side)
    batches = [engine.to_pixels(imgs[i:i + args.batch]) for i in range(0, len(imgs), args.batch)]

    def tokens_of(model):  # what `pixio extract` runs per batch (last block, normed, split into CLS/patches)
        def fn(x):
            t = model.forward_blocks(x, [-1])[0]
            return {"cls": t[:, :8], "patches": t[:, 8:]}
        return fn

    ours_fn = tokens_of(ours)

    def hf_fn(x):
        t = hf(pixel_values=x).last_hidden_state
        return {"cls": t[:, :8], "patches": t[:, 8:]}

    ours_run = engine.maybe_compile(ours_fn)
    hf_run = engine.maybe_compile(hf_fn)
    with torch.no_grad():
        diff = (engine.infer(ours_run, batches[0])["patches"].float()
                - engine.infer(hf_run, batches[0])["patches"].float()).abs().max().item()
    ours_ips, hf_ips = paired_rates(lambda b: engine.infer(ours_run, b), lambda b: engine.infer(hf_run, b),
                                    batches=batches, rounds=args.iters, device=engine.device)
    int8 = {}
    if engine.device.type == "cpu" and engine.dtype == torch.float32 and int8_available() and not args.compile:
        # --precision int8: the same model with int8 linear layers, against the same reference
        engine8 = Engine(args.device, "int8", batch_size=args.batch, workers=0, int8=True)
        ours8_fn = tokens_of(engine8.prepare(copy.deepcopy(ours)))

        try:
            with torch.no_grad():
                pairs = [(engine8.infer(ours8_fn, b), engine.infer(ours_run, b)) for b in batches]
            cos = min(min_cosine(q[k], f[k]) for q, f in pairs for k in ("patches", "cls"))
        except BelowBound as e:  # the job's own check stopped it, as `pixio extract` would: say so
            int8 = {"int8_refused": str(e)}
        else:
            int8_ips, hf8_ips = paired_rates(lambda b: engine8.infer(ours8_fn, b), lambda b: engine.infer(hf_run, b),
                                             batches=batches, rounds=args.iters, device=engine.device)
            int8 = {"ours_int8_img_s": round(int8_ips, 2), "reference_same_pass_img_s": round(hf8_ips, 2),
                    "ratio_int8": round(int8_ips / hf8_ips, 3), "int8_min_cosine_to_fp32": round(cos, 6)}
        int8["int8_weight_bits"] = engine8.int8_bits
    emit({"benchmark": "extract", **environment(engine.device), "size": args.size,
          "precision": str(engine.dtype).replace("torch.", ""), "batch": args.batch, "side": args.side,
          "compile": args.compile, "reference": "transformers.PixioModel, same weights, precision and batches",
          "ours_img_s": round(ours_ips, 2), "reference_img_s": round(hf_ips, 2), "ratio": round(ours_ips / hf_ips, 3),
          "max_abs_diff": diff, **int8, "matmul_peak_tflop_s": round(matmul_peak(engine.device, engine.dtype), 3)})


if __name__ == "__main__":
    main()

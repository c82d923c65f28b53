"""Images/s of `pixio depth`'s model path against the same DPT head on transformers.PixioModel features.

Both paths share the weights (made by transformers, read by our checkpoint
reader), the head, device, batch and input size. The reference is the plain
way: transformers with all hidden states, its final LayerNorm on the chosen
blocks, the head on top, at the official precision of the device (fp32 on a
CPU, bf16 on CUDA). Ours runs at `pixio depth`'s default precision and stops
after the last block the head needs.

    python -m benchmarks.depth --size b16 --side 512 --device cuda --precision bf16 --batch 16
    python -m benchmarks.depth --size t16 --side 256 --device cpu --batch 4 --features 64 --head-channels 48,96,192,192
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from heads.dense.encoder_features import dpt_blocks
from heads.dense.model import DenseModel, HeadConfig
from pixio_cli.engine import Engine

from .common import emit, environment, paired_rates, matmul_peak, same_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="b16")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="alternating timed passes of each model; the best counts")
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--head-channels", default="256,512,1024,1024")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    engine = Engine(args.device, args.precision, batch_size=args.batch, workers=0, compile=args.compile)
    ref_engine = Engine(args.device, "bf16" if engine.device.type == "cuda" else "fp32", batch_size=args.batch, workers=0,
                        compile=args.compile)
    hf, encoder = same_weights(args.size, ref_engine)
    head_cfg = HeadConfig(task="depth", features=args.features,
                          head_channels=[int(c) for c in args.head_channels.split(",")])
    ours = DenseModel(encoder, head_cfg)
    unprepared = copy.deepcopy(ours)  # for ours at the reference's precision, cast from the same fp32 weights
    ref_head = ref_engine.prepare(copy.deepcopy(ours.head))
    ours = engine.prepare(ours)
    blocks = dpt_blocks(encoder.depth)

    def reference(x: torch.Tensor) -> dict[str, torch.Tensor]:
        states = hf(pixel_values=x, output_hidden_states=True).hidden_states
        h, w = x.shape[-2] // 16, x.shape[-1] // 16
        feats = []
        for b in blocks:
            t = hf.layernorm(states[b + 1])
            f = torch.cat([t[:, 8:], t[:, :8].mean(1, keepdim=True).expand(-1, h * w, -1)], 2)
            feats.append(f.transpose(1, 2).reshape(x.shape[0], -1, h, w))
        out = F.interpolate(ref_head(feats), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return {"depth": torch.sigmoid(out[:, 0]) * head_cfg.max_depth}

    def ours_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"depth": ours(x)}

    same = ref_engine.prepare(unprepared) if ref_engine.dtype != engine.dtype else None  # ours at its precision

    def same_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"depth": same(x)}

    ref_run, ours_run = ref_engine.maybe_compile(reference), engine.maybe_compile(ours_fn)
    x = torch.randn(args.batch, 3, args.side, args.side, device=engine.device)
    diff = (engine.infer(ours_run, x)["depth"].float() - ref_engine.infer(ref_run, x)["depth"].float()).abs().max()
    ours_ips, ref_ips = paired_rates(lambda b: engine.infer(ours_run, b), lambda b: ref_engine.infer(ref_run, b),
                                     batches=[x], rounds=args.iters, device=engine.device)
    extra = {}
    if same is not None:  # ours at the reference's precision: the same-precision ratio
        same_run = ref_engine.maybe_compile(same_fn)
        same_ips, ref2_ips = paired_rates(lambda b: ref_engine.infer(same_run, b),
                                          lambda b: ref_engine.infer(ref_run, b), batches=[x], rounds=args.iters,
                                          device=engine.device)
        extra = {"ours_same_precision_img_s": round(same_ips, 2), "ratio_same_precision": round(same_ips / ref2_ips, 3)}
    emit({**extra, "benchmark": "depth", **environment(engine.device), "size": args.size, "side": args.side,
          "precision": str(engine.dtype).replace("torch.", ""),
          "reference_precision": str(ref_engine.dtype).replace("torch.", ""), "batch": args.batch,
          "reference": "transformers.PixioModel hidden states + the same DPT head",
          "ours_img_s": round(ours_ips, 2), "reference_img_s": round(ref_ips, 2),
          "ratio": round(ours_ips / ref_ips, 3), "max_abs_diff_m": round(float(diff), 5),
          "matmul_peak_tflop_s": round(matmul_peak(engine.device, engine.dtype), 3)})


if __name__ == "__main__":
    main()

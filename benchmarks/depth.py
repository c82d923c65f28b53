"""Images/s of `pixio depth`'s model path against the same DPT head on transformers.PixioModel features.

Both paths share the weights (made by transformers, read by our checkpoint
reader), the head, device, precision, batch and input size. The reference runs
transformers with all hidden states and applies its final LayerNorm to the
chosen blocks; ours stops after the last block the head needs.

    python -m benchmarks.depth --size b16 --side 512 --device cuda --precision bf16 --batch 16
    python -m benchmarks.depth --size t16 --side 256 --device cpu --batch 4 --features 64 --head-channels 48,96,192,192
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from heads.features import dpt_blocks
from heads.model import DenseModel, HeadConfig
from pixio_cli.engine import Engine

from .common import images_per_second, same_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="b16")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--head-channels", default="256,512,1024,1024")
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    engine = Engine(args.device, args.precision, args.batch, workers=0, compile=args.compile)
    hf, encoder = same_weights(args.size, engine)
    head_cfg = HeadConfig(task="depth", features=args.features,
                          head_channels=[int(c) for c in args.head_channels.split(",")])
    ours = engine.prepare(DenseModel(encoder, head_cfg))
    blocks = dpt_blocks(encoder.depth)

    def reference(x: torch.Tensor) -> dict[str, torch.Tensor]:
        states = hf(pixel_values=x, output_hidden_states=True).hidden_states
        h, w = x.shape[-2] // 16, x.shape[-1] // 16
        feats = []
        for b in blocks:
            t = hf.layernorm(states[b + 1])
            f = torch.cat([t[:, 8:], t[:, :8].mean(1, keepdim=True).expand(-1, h * w, -1)], 2)
            feats.append(f.transpose(1, 2).reshape(x.shape[0], -1, h, w))
        out = F.interpolate(ours.head(feats), size=x.shape[-2:], mode="bilinear", align_corners=True)
        return {"depth": torch.sigmoid(out[:, 0]) * head_cfg.max_depth}

    def ours_fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"depth": ours(x)}

    ref_run, ours_run = engine.maybe_compile(reference), engine.maybe_compile(ours_fn)
    x = torch.randn(args.batch, 3, args.side, args.side, device=engine.device)
    diff = (engine.infer(ours_run, x)["depth"].float() - engine.infer(ref_run, x)["depth"].float()).abs().max()
    ours_ips = images_per_second(lambda b: engine.infer(ours_run, b), [x], args.iters, engine.device)
    ref_ips = images_per_second(lambda b: engine.infer(ref_run, b), [x], args.iters, engine.device)
    print(json.dumps({"size": args.size, "side": args.side, "device": str(engine.device),
                      "dtype": str(engine.dtype).replace("torch.", ""), "batch": args.batch,
                      "ours_img_s": round(ours_ips, 2), "transformers_head_img_s": round(ref_ips, 2),
                      "ratio": round(ours_ips / ref_ips, 3), "max_abs_diff_m": float(diff)}))


if __name__ == "__main__":
    main()

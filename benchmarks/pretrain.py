"""Images/s and MFU of one Pixio pretraining step, against a plain MAE step in the same run.

The reference is the plain recipe: eager model, autocast, AdamW with its
default (for-loop) update. Ours: fused AdamW on CUDA and, with --compile,
torch.compile. MFU = model FLOPs per second / the device's peak dense bf16
FLOPs (given with --peak-tflops; H100 SXM: 989). Model FLOPs count the matmuls
of forward and backward (3x forward), attention included.

    python -m benchmarks.pretrain --size h16 --batch 64 --peak-tflops 989 --compile
    python -m benchmarks.pretrain --size t16 --batch 16 --device cpu --decoder-depth 2 --decoder-dim 192
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pixio_cli.encoder import size_config
from pixio_cli.engine import autocast, pick_device, pick_dtype
from pretrain.mae import MAEConfig, PixioMAE
from pretrain.train import param_groups


def step_flops(cfg: MAEConfig, batch: int) -> float:
    """Matmul FLOPs of one forward+backward pass (3x the forward)."""
    e = cfg.encoder
    n_patches = e.grid ** 2
    g = cfg.mask_grid
    n_blocks = n_patches // (g * g)
    visible = int(n_blocks * (1 - cfg.mask_ratio)) * g * g
    patch_in = e.patch_size ** 2 * e.in_chans

    def blocks(n_tokens: int, dim: int, depth: int) -> float:
        return depth * (2 * n_tokens * 12 * dim * dim + 4 * n_tokens * n_tokens * dim)

    fwd = (2 * n_patches * patch_in * e.embed_dim
           + blocks(e.n_cls_tokens + visible, e.embed_dim, e.depth)
           + 2 * (e.n_cls_tokens + visible) * e.embed_dim * cfg.decoder_dim
           + blocks(e.n_cls_tokens + n_patches, cfg.decoder_dim, cfg.decoder_depth)
           + 2 * (e.n_cls_tokens + n_patches) * cfg.decoder_dim * patch_in)
    return 3 * fwd * batch


def measure(model: PixioMAE, opt: torch.optim.Optimizer, x: torch.Tensor, device, dtype, iters: int,
            compile: bool = False) -> float:
    fwd = torch.compile(model) if compile else model

    def step():
        with autocast(device, dtype):
            loss = fwd(x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="h16")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None)
    ap.add_argument("--decoder-depth", type=int, default=32)
    ap.add_argument("--decoder-dim", type=int, default=512)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak dense bf16 TFLOP/s, for MFU")
    args = ap.parse_args()

    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    cfg = MAEConfig(size_config(args.size), decoder_depth=args.decoder_depth, decoder_dim=args.decoder_dim)
    x = torch.randn(args.batch, 3, 256, 256, device=device)
    flops = step_flops(cfg, args.batch)
    result = {"size": args.size, "batch": args.batch, "device": str(device),
              "dtype": str(dtype).replace("torch.", ""), "tflop_per_step": round(flops / 1e12, 3)}
    for name, fused, comp in (("reference", False, False), ("ours", device.type == "cuda", False),
                              *((("ours_compiled", device.type == "cuda", True),) if args.compile else ())):
        torch.manual_seed(0)
        model = PixioMAE(cfg).to(device).train()
        model.grad_checkpointing = args.grad_checkpointing and name != "reference"
        opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95),
                                fused=fused or None, foreach=False if name == "reference" else None)
        sec = measure(model, opt, x, device, dtype, args.iters, compile=comp)
        result[f"{name}_img_s"] = round(args.batch / sec, 2)
        result[f"{name}_tflop_s"] = round(flops / sec / 1e12, 3)
        if args.peak_tflops:
            result[f"{name}_mfu"] = round(flops / sec / 1e12 / args.peak_tflops, 4)
        del model, opt
    for name in ("ours", "ours_compiled"):
        if f"{name}_img_s" in result:
            result[f"{name}_vs_reference"] = round(result[f"{name}_img_s"] / result["reference_img_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

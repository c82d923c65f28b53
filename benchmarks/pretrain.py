"""Steady-state pretraining steps: ours against a plain MAE step and transformers' ViTMAE in the same run, and
the loss curves.

The reference is the official recipe's step as it runs on this device: eager
model, autocast only on CUDA (the official loop uses bf16 there, fp32 on a
CPU), AdamW with its default for-loop update. Ours is `pixio pretrain`'s step
at its default precision (bf16 wherever the hardware has it natively, CPUs with
AVX-512 BF16 / AMX included) with fused AdamW (CUDA and CPU); with --compile,
compiled as `pixio pretrain` runs 2000 steps or more, and eager beside it.
Both start from the same weights and see the same batches and masks; the loss
of every step is printed, so "same curve within noise" is checked, not assumed.
The outside reference, code a user would otherwise run, is transformers'
``ViTMAEForPreTraining`` of the same shape with torch's AdamW at its defaults
(its own weights and masks: its losses are not compared).

MFU = model FLOPs per second / the measured matmul rate of the device at the
precision used (and against --peak-tflops, the data-sheet figure, when given).

    python -m benchmarks.pretrain --size h16 --batch 64 --compile
    python -m benchmarks.pretrain --size t16 --img-size 128 --batch 32 --device cpu --decoder-depth 3 --decoder-dim 192
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Callable

import torch

from pixio_cli.encoder import set_fused_attention, size_config
from pixio_cli.engine import adamw, autocast, pick_device, pick_dtype
from pretrain.mae import MAEConfig, PixioMAE
from pretrain.train import compile_step, param_groups

from .common import emit, environment, matmul_peak, sync


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


def trainer(cfg: MAEConfig, device: torch.device, dtype: torch.dtype, ours: bool, compile: bool,
            grad_checkpointing: bool) -> Callable[[torch.Tensor], float]:
    """One training step (forward, backward, AdamW) of a fresh model as a function of the batch; returns the loss."""
    torch.manual_seed(0)  # the same initial weights for both
    model = PixioMAE(cfg).to(device).train()
    model.grad_checkpointing = grad_checkpointing
    if ours:
        set_fused_attention(model, device, dtype, training=True, compiled=compile)
    if ours:  # what pretrain/train.py does
        opt = adamw(param_groups(model, 0.05), device, lr=1e-4, betas=(0.9, 0.95))
    else:  # the official loop: AdamW's default for-loop update
        opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95), foreach=False)
    fwd = compile_step(model) if compile else model

    def step(x: torch.Tensor) -> float:
        with autocast(device, dtype):
            loss = fwd(x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def transformers_trainer(cfg: MAEConfig, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], float]:
    """The step a user would otherwise write: transformers' ``ViTMAEForPreTraining`` of the same shape (one class
    token, random patch masking at the same ratio, the pixel-normalised loss), torch's AdamW at its defaults,
    at the device's usual precision."""
    from .curate import transformers_mae

    model = transformers_mae(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def step(x: torch.Tensor) -> float:
        with autocast(device, dtype):
            loss = model(pixel_values=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def run_alternating(steps: dict[str, Callable[[torch.Tensor], float]], batches: list[torch.Tensor],
                    device: torch.device, warmup: int) -> dict[str, tuple[float, list[float]]]:
    """Seconds per step after ``warmup`` and every step's loss, for each trainer.

    The trainers take turns on each batch, so a machine that drifts during the
    run slows both alike; each turn starts from the same seed, so both draw the
    same masks.
    """
    seconds = {name: 0.0 for name in steps}
    losses: dict[str, list[float]] = {name: [] for name in steps}
    for i, x in enumerate(batches):
        for name, step in steps.items():
            torch.manual_seed(1000 + i)
            sync(device)
            start = time.perf_counter()
            losses[name].append(step(x))
            sync(device)
            if i >= warmup:
                seconds[name] += time.perf_counter() - start
    return {name: (seconds[name] / (len(batches) - warmup), losses[name]) for name in steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="h16")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default=None, help="ours (default: bf16 where native)")
    ap.add_argument("--decoder-depth", type=int, default=32)
    ap.add_argument("--decoder-dim", type=int, default=512)
    ap.add_argument("--decoder-heads", type=int, default=16)
    ap.add_argument("--mask-grid", type=int, default=4)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="data-sheet dense bf16 TFLOP/s, for MFU")
    args = ap.parse_args()

    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    ref_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what the official loop runs
    enc = dataclasses.replace(size_config(args.size), img_size=args.img_size)
    cfg = MAEConfig(enc, decoder_depth=args.decoder_depth, decoder_dim=args.decoder_dim,
                    decoder_heads=args.decoder_heads, mask_grid=args.mask_grid)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(args.batch, 3, args.img_size, args.img_size, generator=gen).to(device)
               for _ in range(args.warmup + args.iters)]
    flops = step_flops(cfg, args.batch)
    trainers = {"reference": trainer(cfg, device, dtype=ref_dtype, ours=False, compile=False, grad_checkpointing=False),
                "ours": trainer(cfg, device, dtype=dtype, ours=True, compile=args.compile,
                                grad_checkpointing=args.grad_checkpointing),
                "transformers": transformers_trainer(cfg, device, ref_dtype)}
    if args.compile:  # also ours eager (runs under 2000 steps, FSDP): what the compile adds, in the same run
        trainers["ours_eager"] = trainer(cfg, device, dtype=dtype, ours=True, compile=False,
                                         grad_checkpointing=args.grad_checkpointing)
    if dtype != ref_dtype:  # also ours at the reference's precision: the same-precision ratio
        trainers["ours_same_precision"] = trainer(cfg, device, dtype=ref_dtype, ours=True, compile=args.compile,
                                                  grad_checkpointing=args.grad_checkpointing)
    timed = run_alternating(trainers, batches, device, args.warmup)
    (ref_s, ref_losses), (ours_s, ours_losses) = timed["reference"], timed["ours"]
    peak = matmul_peak(device, dtype)
    result = {"benchmark": "pretrain", **environment(device), "size": args.size, "img_size": args.img_size,
              "batch": args.batch, "decoder": f"{args.decoder_depth}x{args.decoder_dim}",
              "precision": str(dtype).removeprefix("torch."), "reference_precision": str(ref_dtype).removeprefix("torch."),
              "reference": "plain MAE step (eager, for-loop AdamW, official precision)", "compile": args.compile,
              "reference_img_s": round(args.batch / ref_s, 2), "ours_img_s": round(args.batch / ours_s, 2),
              "ratio": round(ref_s / ours_s, 3), "tflop_per_step": round(flops / 1e12, 4),
              "ours_tflop_s": round(flops / ours_s / 1e12, 3), "matmul_peak_tflop_s": round(peak, 3),
              "mfu_of_measured_peak": round(flops / ours_s / 1e12 / peak, 3),
              "reference_losses": [round(v, 4) for v in ref_losses], "ours_losses": [round(v, 4) for v in ours_losses],
              "max_loss_rel_diff": round(max(abs(a - b) / abs(a) for a, b in zip(ref_losses, ours_losses)), 4)}
    hf_s = timed["transformers"][0]
    result["transformers_img_s"] = round(args.batch / hf_s, 2)
    result["transformers_precision"] = str(ref_dtype).removeprefix("torch.")
    result["ratio_transformers"] = round(hf_s / ours_s, 3)
    if "ours_same_precision" in timed:
        result["ratio_transformers_same_precision"] = round(hf_s / timed["ours_same_precision"][0], 3)
    if "ours_same_precision" in timed:
        same_s = timed["ours_same_precision"][0]
        result["ours_same_precision_img_s"] = round(args.batch / same_s, 2)
        result["ratio_same_precision"] = round(ref_s / same_s, 3)
    if "ours_eager" in timed:
        eager_s = timed["ours_eager"][0]
        result["ours_eager_img_s"] = round(args.batch / eager_s, 2)
        result["ratio_eager"] = round(ref_s / eager_s, 3)
    if args.peak_tflops:
        result["mfu_of_datasheet_peak"] = round(flops / ours_s / 1e12 / args.peak_tflops, 4)
    emit(result)


if __name__ == "__main__":
    main()

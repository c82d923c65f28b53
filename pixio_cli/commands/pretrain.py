"""``pixio pretrain``: train a Pixio MAE, on one device or many under torchrun."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError

# Official drop-path for the large models (H and up); the small ones train without it.
_DROP_PATH = {"h16": 0.4, "1b16": 0.4, "5b16": 0.4}


def pretrain(
    data: Annotated[Optional[list[str]], typer.Option(
        help="Image folder, .tar shard, folder of shards, or .txt file list; repeat for several.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder.")] = None,
    size: Annotated[str, typer.Option(help="Encoder size: t16, s16, b16, l16, h16, 1b16, 5b16.")] = "h16",
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (or use --epochs).", min=1)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the data (counted up front).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per process per micro-step.")] = 64,
    accum: Annotated[int, typer.Option(help="Gradient accumulation steps.", min=1)] = 1,
    blr: Annotated[float, typer.Option(help="Base lr; lr = blr x total batch / 256.")] = 2.5e-5,
    lr: Annotated[Optional[float], typer.Option(help="Absolute peak lr (overrides --blr).")] = None,
    min_lr: Annotated[float, typer.Option(help="Final lr of the cosine schedule.")] = 0.0,
    warmup_steps: Annotated[Optional[int], typer.Option(help="Linear warmup steps (default: 10% of steps).")] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (not on biases and norms).")] = 0.05,
    clip_grad: Annotated[Optional[float], typer.Option(help="Clip the gradient norm to this value.")] = None,
    img_size: Annotated[int, typer.Option(help="Training crop size.")] = 256,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of mask blocks hidden.")] = 0.75,
    mask_grid: Annotated[int, typer.Option(help="Mask block side, in patches.")] = 4,
    cls_tokens: Annotated[int, typer.Option(help="Number of CLS tokens.")] = 8,
    decoder_depth: Annotated[int, typer.Option(help="Decoder blocks.")] = 32,
    decoder_dim: Annotated[int, typer.Option(help="Decoder width.")] = 512,
    decoder_heads: Annotated[int, typer.Option(help="Decoder attention heads.")] = 16,
    drop_path: Annotated[Optional[float], typer.Option(help="Stochastic depth (default 0.4 for h16 and up, else 0).")] = None,
    crop_scale_min: Annotated[float, typer.Option(help="RandomResizedCrop minimum area.")] = 0.2,
    curation: Annotated[Optional[str], typer.Option(help="`pixio curate` output: per-shard JSONs or manifest.jsonl.")] = None,
    min_entropy: Annotated[Optional[float], typer.Option(help="Drop images with histogram_score <= this (paper: 4.5).")] = None,
    min_size: Annotated[Optional[int], typer.Option(help="Drop images whose height or width is below this (paper: 320).")] = None,
    soft_sampling: Annotated[bool, typer.Option("--soft-sampling", help="Keep each image with probability mae_loss.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed (weights, masks, data order).")] = 0,
    save_every: Annotated[int, typer.Option(help="Checkpoint every N steps.", min=1)] = 1000,
    log_every: Annotated[int, typer.Option(help="Log every N steps.", min=1)] = 20,
    recon_every: Annotated[int, typer.Option(help="Reconstruction grid PNG every N steps (0: never).", min=0)] = 1000,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder exactly.")] = None,
    fsdp: Annotated[bool, typer.Option("--fsdp", help="Shard with FSDP2 (fully_shard) instead of DDP.")] = False,
    grad_checkpointing: Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute activations.")] = False,
    compile: opt.Compile = False,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    workers: Annotated[int, typer.Option(help="Data loading processes per training process.")] = 4,
) -> None:
    """Pretrain a Pixio encoder (masked autoencoder with block masking and 8 CLS tokens).

    Writes <out>/checkpoint.pt (resumable), metrics.jsonl, recon/*.png and, at the
    end, encoder.pth (official layout) and mae.safetensors (encoder and decoder).
    """
    from pretrain.data import CurationRules, Sources
    from pretrain.mae import MAEConfig
    from pretrain.train import TrainConfig, Trainer, read_run_config

    from ..encoder import size_config

    if resume is not None:
        cfg = read_run_config(resume)
        if steps is not None:
            cfg.steps = steps
        result = Trainer(cfg, resume=True).run()
        _report(result, cfg)
        return

    if not data or output is None:
        raise UsageError("pretrain needs --data and -o/--output (or --resume DIR)")
    rules = CurationRules(min_entropy, min_size, soft_sampling)
    if rules.active and curation is None:
        raise UsageError("--min-entropy, --min-size and --soft-sampling need --curation (a `pixio curate` output)")
    if (Path(output) / "checkpoint.pt").exists():
        raise UsageError(f"{output} already holds a run: use --resume {output}, or another -o")
    enc = size_config(size)
    enc = dataclasses.replace(enc, img_size=img_size, n_cls_tokens=cls_tokens)
    mae = MAEConfig(enc, decoder_dim, decoder_depth, decoder_heads, mask_ratio, mask_grid)
    from ..engine import dist_info

    world = dist_info()[1]
    if steps is None:
        if epochs is None:
            raise UsageError("give --steps or --epochs")
        n = Sources.find(data).count()
        steps = max(1, int(epochs * n / (batch_size * accum * world)))
    key = size.lower().removeprefix("pixio-").removeprefix("vit")
    cfg = TrainConfig(
        mae=mae, data=data, output=str(output), steps=steps, batch_size=batch_size, accum=accum, blr=blr, lr=lr,
        min_lr=min_lr, warmup_steps=warmup_steps if warmup_steps is not None else steps // 10,
        weight_decay=weight_decay, clip_grad=clip_grad,
        drop_path=drop_path if drop_path is not None else _DROP_PATH.get(key, 0.0),
        crop_scale_min=crop_scale_min, seed=seed, save_every=save_every, log_every=log_every,
        recon_every=recon_every, workers=workers, device=device, precision=precision, compile=compile,
        grad_checkpointing=grad_checkpointing, fsdp=fsdp, curation=curation, rules=rules)
    result = Trainer(cfg).run()
    _report(result, cfg)


def _report(result: dict, cfg) -> None:
    from ..engine import dist_info

    if dist_info()[0] == 0:
        typer.echo(f"done: step {result.get('step')}, loss {result.get('loss', float('nan')):.4f}; "
                   f"encoder at {Path(cfg.output) / 'encoder.pth'}", err=True)
        typer.echo(json.dumps(result), err=True)


def register(app: typer.Typer) -> None:
    app.command(help=pretrain.__doc__)(pretrain)

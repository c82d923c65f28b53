"""``pixio pretrain``: train a Pixio MAE, on one device or many under torchrun."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError
from . import pretraining as t
from .common import require_positive

# Official drop-path for the large models (H and up); the small ones train without it.
_DROP_PATH = {"h16": 0.4, "1b16": 0.4, "5b16": 0.4}


def pretrain(
    ctx: typer.Context,
    data: t.Data = None,
    output: t.Output = None,
    size: Annotated[str, typer.Option(help="Encoder size: t16, s16, b16, l16, h16, 1b16, 5b16.")] = "h16",
    steps: t.Steps = None,
    epochs: t.Epochs = None,
    batch_size: t.Batch = 64,
    accum: t.Accum = 1,
    blr: t.Blr = 2.5e-5,
    lr: t.Lr = None,
    min_lr: t.MinLr = 0.0,
    warmup_steps: t.Warmup = None,
    weight_decay: t.WeightDecay = 0.05,
    clip_grad: t.ClipGrad = None,
    img_size: t.ImgSize = 256,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of mask blocks hidden.")] = 0.75,
    mask_grid: t.MaskGrid = 4,
    cls_tokens: Annotated[int, typer.Option(help="Number of CLS tokens.", min=1)] = 8,
    decoder_depth: Annotated[int, typer.Option(help="Decoder blocks.", min=1)] = 32,
    decoder_dim: Annotated[int, typer.Option(help="Decoder width.", min=1)] = 512,
    decoder_heads: Annotated[int, typer.Option(help="Decoder attention heads.", min=1)] = 16,
    drop_path: Annotated[Optional[float], typer.Option(help="Stochastic depth (default 0.4 for h16 and up, else 0).",
                                                       min=0.0, max=0.99)] = None,
    crop_scale_min: t.CropScaleMin = 0.2,
    curation: t.Curation = None,
    min_entropy: t.MinEntropy = None,
    min_size: t.MinSize = None,
    soft_sampling: t.SoftSampling = False,
    seed: t.Seed = 0,
    save_every: t.SaveEvery = 1000,
    log_every: t.LogEvery = 20,
    recon_every: Annotated[int, typer.Option(help="Reconstruction grid PNG every N steps (0: never).", min=0)] = 1000,
    resume: t.Resume = None,
    fsdp: t.Fsdp = False,
    grad_checkpointing: t.GradCkpt = False,
    compile: opt.CompileAuto = None,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    workers: t.Workers = 4,
    quiet: opt.Quiet = False,
) -> None:
    """Pretrain a Pixio encoder (masked autoencoder with block masking and 8 CLS tokens).

    Writes <out>/checkpoint.pt (resumable), metrics.jsonl, recon/*.png and, at the
    end, encoder.pth (official layout) and mae.safetensors (encoder and decoder).
    """
    if resume is not None:
        t.resume_run(ctx, resume, steps, quiet)
        return
    if not 0 < mask_ratio < 1:
        raise UsageError(f"--mask-ratio {mask_ratio:g}: the fraction of mask blocks hidden lies between 0 and 1 "
                         "(official 0.75)")

    import dataclasses

    from pretrain.mae import MAEConfig, check_masking
    from pretrain.train import TrainConfig, Trainer

    from ..encoder import size_config

    require_positive(lr=lr, blr=blr, crop_scale_min=crop_scale_min)
    shared = t.shared_settings(data, output, steps=steps, epochs=epochs, batch_size=batch_size, accum=accum,
                               warmup_steps=warmup_steps, curation=curation, min_entropy=min_entropy, min_size=min_size,
                               soft_sampling=soft_sampling)
    enc = dataclasses.replace(size_config(size), img_size=img_size, n_cls_tokens=cls_tokens)
    mae = MAEConfig(enc, decoder_dim, decoder_depth=decoder_depth, decoder_heads=decoder_heads, mask_ratio=mask_ratio,
                    mask_grid=mask_grid)
    check_masking((enc.grid, enc.grid), mask_grid, mask_ratio)
    key = size.lower().removeprefix("pixio-").removeprefix("vit")
    cfg = TrainConfig(
        mae=mae, **shared, blr=blr, lr=lr, min_lr=min_lr, weight_decay=weight_decay, clip_grad=clip_grad,
        drop_path=drop_path if drop_path is not None else _DROP_PATH.get(key, 0.0),
        crop_scale_min=crop_scale_min, seed=seed, save_every=save_every, log_every=log_every,
        recon_every=recon_every, workers=workers, device=device, precision=precision, compile=compile,
        grad_checkpointing=grad_checkpointing, fsdp=fsdp, command_line=t.command_line(ctx.params))
    t.report(Trainer(cfg, quiet=quiet).run(), cfg)


def register(app: typer.Typer) -> None:
    app.command(help=pretrain.__doc__, short_help='Pretrain a Pixio encoder (MAE with block masking) on folders, lists or tar shards.')(pretrain)

"""``pixio distill``: train smaller encoders from a frozen one, on the pretraining loop."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError
from . import pretraining as t
from .common import require_positive


class Loss(str, Enum):
    cosine = "cosine"
    l1 = "l1"
    mse = "mse"


class Fuse(str, Enum):
    avg = "avg"
    sum = "sum"


def distill(
    ctx: typer.Context,
    teacher: Annotated[Optional[str], typer.Option(
        help="The frozen teacher: a model id (pixio-vit5b16 ...), checkpoint or run folder.")] = None,
    students: Annotated[Optional[str], typer.Option(
        help="Comma-separated student sizes (l16,b16) or WIDTHxDEPTH[xHEADS] shapes (96x6).")] = None,
    data: t.Data = None,
    output: t.Output = None,
    teacher_size: Annotated[Optional[str], typer.Option(help="The teacher's size, for checkpoints that do not say.")] = None,
    steps: t.Steps = None,
    epochs: t.Epochs = None,
    batch_size: t.Batch = 64,
    accum: t.Accum = 1,
    blr: Annotated[float, typer.Option(
        help="Base lr; lr = blr x total batch / 256 (default: the official 1e-3 at batch 8192).")] = 1e-3 * 256 / 8192,
    lr: t.Lr = None,
    min_lr: t.MinLr = 0.0,
    warmup_steps: t.Warmup = None,
    weight_decay: t.WeightDecay = 0.05,
    clip_grad: t.ClipGrad = None,
    img_size: t.ImgSize = 256,
    loss_cls: Annotated[Loss, typer.Option(help="Loss on the 8 CLS tokens.")] = Loss.cosine,
    loss_patch: Annotated[Loss, typer.Option(help="Loss on the patch tokens.")] = Loss.cosine,
    loss_fuse: Annotated[Fuse, typer.Option(
        help="avg: mean of the two; sum: weighted by their token counts.")] = Fuse.avg,
    mask_ratio: Annotated[float, typer.Option(help="Fraction of the student's mask blocks hidden (official: 0).",
                                              min=0.0, max=0.99)] = 0.0,
    mask_grid: t.MaskGrid = 4,
    drop_path: Annotated[float, typer.Option(help="Students' stochastic depth.", min=0.0, max=1.0)] = 0.1,
    crop_scale_min: t.CropScaleMin = 0.2,
    curation: t.Curation = None,
    min_entropy: t.MinEntropy = None,
    min_size: t.MinSize = None,
    soft_sampling: t.SoftSampling = False,
    seed: t.Seed = 0,
    save_every: t.SaveEvery = 1000,
    log_every: t.LogEvery = 20,
    resume: t.Resume = None,
    fsdp: t.Fsdp = False,
    grad_checkpointing: t.GradCkpt = False,
    compile: opt.CompileTraining = False,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    workers: t.Workers = 4,
    quiet: opt.Quiet = False,
) -> None:
    """Distil a frozen Pixio encoder into one or more smaller students (the official recipe).

    Each student learns the teacher's last-block tokens (before its final norm)
    through a projector, with cosine losses on the CLS and patch tokens. Writes
    <out>/checkpoint.pt (resumable), metrics.jsonl (per-student losses) and, at
    the end, <out>/<student>/encoder.pth (official layout) for each student.
    """
    if resume is not None:
        t.resume_run(ctx, resume, steps, quiet)
        return
    if not teacher or not students:
        raise UsageError("distill needs --teacher and --students (or --resume DIR)")

    from ..model_ids import resolve

    resolve(teacher)  # a teacher that cannot be had fails now, before the slow imports

    from pretrain.distill import DistillConfig, student_config
    from pretrain.mae import check_masking
    from pretrain.train import TrainConfig, Trainer

    from ..checkpoints import encoder_config
    from ..resume import model_identity

    require_positive(lr=lr, blr=blr, crop_scale_min=crop_scale_min)
    shared = t.shared_settings(data, output, steps=steps, epochs=epochs, batch_size=batch_size, accum=accum,
                               warmup_steps=warmup_steps, curation=curation, min_entropy=min_entropy, min_size=min_size,
                               soft_sampling=soft_sampling)
    n_cls = encoder_config(teacher, teacher_size).n_cls_tokens  # shapes only: the teacher is read once, later
    names = [s.strip() for s in students.split(",") if s.strip()]
    if len(set(names)) != len(names):
        raise UsageError(f"--students {students}: a student is named twice")
    shapes = {name: student_config(name, img_size, n_cls).to_dict() for name in names}
    grid = img_size // student_config(names[0], img_size, n_cls).patch_size if names else 0
    if grid:
        check_masking((grid, grid), mask_grid, mask_ratio)
    if Path(teacher).expanduser().exists():  # a file: by its full path, so a resume from elsewhere finds it
        teacher = str(Path(teacher).expanduser().resolve())
    dcfg = DistillConfig(teacher=teacher, students=shapes, loss_cls=loss_cls.value, loss_patch=loss_patch.value,
                         loss_fuse=loss_fuse.value, mask_ratio=mask_ratio, mask_grid=mask_grid,
                         teacher_size=teacher_size, teacher_identity=model_identity(teacher))
    cfg = TrainConfig(
        mae=None, distill=dcfg, **shared, blr=blr, lr=lr, min_lr=min_lr, weight_decay=weight_decay,
        clip_grad=clip_grad, drop_path=drop_path, crop_scale_min=crop_scale_min, seed=seed, save_every=save_every,
        log_every=log_every, recon_every=0, workers=workers, device=device, precision=precision, compile=compile,
        grad_checkpointing=grad_checkpointing, fsdp=fsdp, command_line=t.command_line(ctx.params))
    t.report(Trainer(cfg, quiet=quiet).run(), cfg)


def register(app: typer.Typer) -> None:
    app.command(help=distill.__doc__, short_help='Distil a frozen Pixio encoder into smaller students.')(distill)

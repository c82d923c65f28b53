"""What `pixio pretrain` and `pixio distill` share: their training options and the run around them.

Both drive the one training loop (``pretrain/train.py``); they differ only in
the model and its loss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError

Data = Annotated[Optional[list[str]], typer.Option(
    help="Image folder, .tar shard, folder of shards, or .txt file list; repeat for several.")]
Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Run folder.")]
Steps = Annotated[Optional[int], typer.Option(help="Optimizer steps (or use --epochs).", min=1)]
Epochs = Annotated[Optional[float], typer.Option(
    help="Passes over the data, counted up front over every image given (before --curation's rules drop any).")]
Batch = Annotated[int, typer.Option("--batch-size", "-b", help="Images per process per micro-step.", min=1)]
Accum = Annotated[int, typer.Option(help="Gradient accumulation steps.", min=1)]
Blr = Annotated[float, typer.Option(help="Base lr; lr = blr x total batch / 256.")]
Lr = Annotated[Optional[float], typer.Option(help="Absolute peak lr (overrides --blr).")]
MinLr = Annotated[float, typer.Option(help="Final lr of the cosine schedule.", min=0.0)]
Warmup = Annotated[Optional[int], typer.Option(help="Linear warmup steps (default: 10% of steps).", min=0)]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay (not on biases and norms).", min=0.0)]
ClipGrad = Annotated[Optional[float], typer.Option(help="Clip the gradient norm to this value.")]
ImgSize = Annotated[int, typer.Option(help="Training crop size.", min=16)]
MaskGrid = Annotated[int, typer.Option(help="Mask block side, in patches.", min=1)]
CropScaleMin = Annotated[float, typer.Option(help="RandomResizedCrop minimum area, in (0, 1].", max=1.0)]
Curation = Annotated[Optional[str], typer.Option(help="`pixio curate` output: per-shard JSONs or manifest.jsonl.")]
MinEntropy = Annotated[Optional[float], typer.Option(help="Drop images with histogram_score <= this (paper: 4.5).")]
MinSize = Annotated[Optional[int], typer.Option(help="Drop images whose height or width is below this (paper: 320).")]
SoftSampling = Annotated[bool, typer.Option("--soft-sampling", help="Keep each image with probability mae_loss.")]
Seed = Annotated[int, typer.Option(help="Random seed (weights, masks, data order).")]
SaveEvery = Annotated[int, typer.Option(help="Checkpoint every N steps.", min=1)]
LogEvery = Annotated[int, typer.Option(help="Log every N steps.", min=1)]
Resume = Annotated[Optional[Path], typer.Option(help="Continue the run in this folder exactly.")]
Fsdp = Annotated[bool, typer.Option("--fsdp", help="Shard with FSDP2 (fully_shard) instead of DDP.")]
GradCkpt = Annotated[bool, typer.Option("--grad-checkpointing", help="Recompute activations.")]
Workers = Annotated[int, typer.Option(help="Data loading processes per training process.", min=0)]


def shared_settings(data: list[str] | None, output: Path | None, steps: int | None, epochs: float | None,
                    batch_size: int, accum: int, warmup_steps: int | None, curation: str | None,
                    min_entropy: float | None, min_size: int | None, soft_sampling: bool) -> dict:
    """Checks and derived values common to both commands: steps from epochs, warmup, curation rules."""
    from pretrain.data import CurationRules, Sources

    from ..engine import dist_info

    if not data or output is None:
        raise UsageError("needs --data and -o/--output (or --resume DIR)")
    rules = CurationRules(min_entropy, min_size, soft_sampling)
    if rules.active and curation is None:
        raise UsageError("--min-entropy, --min-size and --soft-sampling need --curation (a `pixio curate` output)")
    if (Path(output) / "checkpoint.pt").exists():
        raise UsageError(f"{output} already holds a run: use --resume {output}, or another -o")
    if warmup_steps is not None and steps is not None and warmup_steps >= steps:
        raise UsageError(f"--warmup-steps {warmup_steps} leaves no step of the run ({steps}) after the warmup")
    if epochs is not None and not epochs > 0:
        raise UsageError(f"--epochs {epochs:g}: expected a positive number of passes")
    if steps is not None and epochs is not None:
        raise UsageError("--steps and --epochs both set the run's length: give one, not both")
    if steps is None:
        if epochs is None:
            raise UsageError("give --steps or --epochs")
        n = Sources.find(data).count()
        steps = max(1, int(epochs * n / (batch_size * accum * dist_info()[1])))
    return {"data": data, "output": str(output), "steps": steps, "batch_size": batch_size, "accum": accum,
            "warmup_steps": warmup_steps if warmup_steps is not None else steps // 10, "curation": curation,
            "rules": rules}


def resume_run(ctx: typer.Context, folder: Path, steps: int | None, quiet: bool = False) -> None:
    """Continue the run in ``folder`` exactly with its own settings (``--steps`` may extend it, and
    ``--compile/--no-compile`` and ``-q``, which change no number, may change); other options given beside
    ``--resume`` are refused rather than ignored."""
    from pretrain.train import Trainer, read_run

    from ..resume import model_identity

    cfg, done = read_run(folder)
    started = cfg.command_line or {}
    given = [p for p in ctx.command.params
             if p.name not in ("resume", "steps", "compile", "quiet") and _on_command_line(ctx, p.name)]
    changed = [p.opts[0] for p in given if p.name not in started or command_line({p.name: ctx.params[p.name]})
               != {p.name: started[p.name]}]  # the command that started the run, plus --resume, is fine
    if changed:
        raise UsageError(f"--resume continues the run with the settings it was started with: {', '.join(changed)} "
                         "cannot change (--steps can, to train further, and --compile/--no-compile and -q, which "
                         "change no number)")
    command = ctx.command.name
    if (cfg.distill is not None) != (command == "distill"):
        made_by = "distill" if cfg.distill is not None else "pretrain"
        raise UsageError(f"--resume {folder}: a `pixio {made_by}` run; continue it with `pixio {made_by} --resume`")
    cfg.output = str(folder)  # where it is now (a copied or moved run continues in its own folder)
    if _on_command_line(ctx, "compile"):
        cfg.compile = ctx.params["compile"]
    if cfg.distill is not None and cfg.distill.teacher_identity not in (None, model_identity(cfg.distill.teacher)):
        why = ("is not found" if cfg.distill.teacher_identity != cfg.distill.teacher
               and not Path(cfg.distill.teacher).expanduser().exists() else
               "is not the file the run started with (its size or time changed)")
        raise UsageError(f"--resume {folder}: the teacher {cfg.distill.teacher} {why}; put that one back, or start "
                         "a new run")
    if steps is not None and steps != cfg.steps:  # the starting --steps again is no change
        if steps <= done:
            raise UsageError(f"--steps {steps}: the run in {folder} is already at step {done}")
        cfg.steps = steps
    if done >= cfg.steps:
        trainer = Trainer(cfg, resume=True, quiet=quiet)
        missing = [p for p in trainer.exports() if not p.exists()]
        if missing:  # the run ended but its export did not (a full disk, a kill): write it now
            trainer.export()
            typer.echo(f"pixio: the run in {folder} had finished at step {done}; wrote its missing "
                       f"{', '.join(p.name for p in missing)}", err=True)
            return
        typer.echo(f"pixio: the run in {folder} already finished at step {done}; give --steps N (more than {done}) "
                   "with --resume to train further", err=True)
        return
    report(Trainer(cfg, resume=True, quiet=quiet).run(), cfg)


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (its source by name: typer vendors click)."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def command_line(params: dict) -> dict:
    """A command's option values as JSON gives them back (stored in the run for ``--resume``)."""
    return json.loads(json.dumps(params, default=lambda v: getattr(v, "value", str(v))))


def report(result: dict, cfg) -> None:
    """The run's last log line, on rank 0."""
    from ..engine import dist_info

    if dist_info()[0] == 0:
        made = (", ".join(str(Path(cfg.output) / n / "encoder.pth") for n in cfg.distill.students)
                if cfg.distill is not None else str(Path(cfg.output) / "encoder.pth"))
        typer.echo(f"done: step {result.get('step')}, loss {result.get('loss', float('nan')):.4f}; encoder at {made}",
                   err=True)
        typer.echo(json.dumps(result), err=True)

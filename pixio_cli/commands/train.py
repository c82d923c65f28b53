"""``pixio train depth|segment|pointmap``: train a dense head or a point-map model on a Pixio encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError
from .common import require_positive

app = typer.Typer(help="Train a depth or segmentation head (official recipe by default), or a point-map model.",
                  no_args_is_help=True)

Encoder = Annotated[str, typer.Option(help="Encoder: model id or checkpoint (frozen unless --finetune).")]
Data = Annotated[Path, typer.Option(help="Dataset root folder.")]
Output = Annotated[Path, typer.Option("--output", "-o", help="The head checkpoint to write (.safetensors).")]
Head = Annotated[str, typer.Option(help="dpt or linear.")]
Features = Annotated[int, typer.Option(help="DPT fusion width (256 official; narrower for small encoders).", min=1)]
Channels = Annotated[str, typer.Option("--head-channels", help="DPT projection widths, comma-separated.")]
Steps = Annotated[int, typer.Option(help="Optimizer steps.", min=1)]
Batch = Annotated[int, typer.Option("--batch-size", "-b", help="Crops per step.", min=1)]
Lr = Annotated[Optional[float], typer.Option(help="Head lr (default 1e-4 DPT, 2e-4 linear).")]
Crop = Annotated[int, typer.Option(help="Training crop and sliding-window size.", min=16)]
Finetune = Annotated[bool, typer.Option("--finetune", help="Train the encoder too, at lr x --encoder-lr-scale.")]
Half = Annotated[bool, typer.Option("--half", help="Store the weights in fp16.")]
EvalLimit = Annotated[Optional[int], typer.Option(help="Evaluate on at most this many held-out images.", min=1)]
Workers = Annotated[int, typer.Option(help="Data loading processes.", min=0)]
SaveEvery = Annotated[int, typer.Option(help="Write <output>.ckpt every N steps.", min=1)]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from <output>.ckpt (same arguments).")]


def _run(task: str, resume: bool, **kw) -> None:
    from heads.dense.train import HeadTrainConfig, train_head

    if kw["output"].suffix.lower() != ".safetensors":
        raise UsageError(f"-o {kw['output']}: a head is written as .safetensors")
    require_positive(lr=kw["lr"], max_depth=kw.get("max_depth"), depth_scale=kw.get("depth_scale"))
    kw["head_channels"] = _widths(kw["head_channels"], "--head-channels")
    result = train_head(HeadTrainConfig(task=task, **{k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in kw.items()}), resume=resume)
    if result:  # rank 0
        typer.echo(json.dumps(result))


def _widths(spec: str, option: str) -> tuple[int, ...]:
    """``"48,96,192,384"`` -> four positive widths."""
    try:
        widths = tuple(int(c) for c in spec.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 4 or min(widths) < 1:
        raise UsageError(f"{option} {spec}: expected four positive widths such as 48,96,192,384")
    return widths


@app.command("depth")
def train_depth(encoder: Encoder, data: Data, output: Output,
                dataset: Annotated[str, typer.Option(help="7scenes, generic-rgbd, nyuv2, kitti or generic-depth.")] = "7scenes",
                head: Head = "dpt", size: opt.Size = None, features: Features = 256,
                head_channels: Channels = "256,512,1024,1024",
                depth_scale: Annotated[Optional[float], typer.Option(
                    help="Stored value per metre (generic-depth, generic-rgbd).")] = None,
                max_depth: Annotated[float, typer.Option(help="Depth = sigmoid x max depth (metres).")] = 10.0,
                crop: Crop = 256, steps: Steps = 2000, batch_size: Batch = 8, lr: Lr = None,
                finetune: Finetune = False, seed: int = 0, workers: Workers = 2, device: opt.Device = "auto",
                precision: opt.Precision = None, half: Half = False, eval_limit: EvalLimit = None,
                save_every: SaveEvery = 500, resume: Resume = False) -> None:
    """Train a depth head; evaluates on the held-out split and stores the metrics in the checkpoint."""
    _run("depth", resume, save_every=save_every, encoder=encoder, data=data, output=output, dataset=dataset, head=head, size=size,
         features=features, head_channels=head_channels, depth_scale=depth_scale, max_depth=max_depth, crop=crop,
         steps=steps, batch_size=batch_size, lr=lr, finetune=finetune, seed=seed, workers=workers, device=device,
         precision=precision, half=half, eval_limit=eval_limit)


@app.command("segment")
def train_segment(encoder: Encoder, data: Data, output: Output,
                  dataset: Annotated[str, typer.Option(
                      help="camvid, ade20k, voc, loveda or generic-segment.")] = "camvid",
                  head: Head = "dpt", size: opt.Size = None, features: Features = 256,
                  head_channels: Channels = "256,512,1024,1024",
                  classes: Annotated[Optional[str], typer.Option(help="Class-names file (generic-segment).")] = None,
                  crop: Crop = 256, steps: Steps = 2000, batch_size: Batch = 8, lr: Lr = None,
                  finetune: Finetune = False, seed: int = 0, workers: Workers = 2, device: opt.Device = "auto",
                  precision: opt.Precision = None, half: Half = False, eval_limit: EvalLimit = None,
                  save_every: SaveEvery = 500, resume: Resume = False) -> None:
    """Train a segmentation head; evaluates on the held-out split and stores the metrics in the checkpoint."""
    _run("segment", resume, save_every=save_every, encoder=encoder, data=data, output=output, dataset=dataset, head=head, size=size,
         features=features, head_channels=head_channels, classes=classes, crop=crop, steps=steps,
         batch_size=batch_size, lr=lr, finetune=finetune, seed=seed, workers=workers, device=device,
         precision=precision, half=half, eval_limit=eval_limit)


@app.command("pointmap")
def train_pointmap(
        encoder: Encoder, data: Data,
        output: Annotated[Path, typer.Option("--output", "-o", help="Folder: pointmap.safetensors and train.ckpt.")],
        dataset: Annotated[str, typer.Option(help="7scenes or generic-rgbd.")] = "7scenes",
        size: opt.Size = None,
        dim: Annotated[int, typer.Option(help="Multi-view transformer width (768 for MapAnything).")] = 192,
        depth: Annotated[int, typer.Option(help="Its layers (24 for MapAnything).", min=4)] = 4,
        num_heads: Annotated[int, typer.Option(help="Its attention heads.", min=1)] = 3,
        dpt_features: Annotated[int, typer.Option(help="DPT fusion width (256 for MapAnything).")] = 64,
        dpt_channels: Annotated[str, typer.Option(help="DPT projection widths (96,192,384,768 for MapAnything).")]
        = "48,96,192,384",
        pose_dim: Annotated[int, typer.Option(help="Pose head width (1024 for MapAnything).", min=8)] = 256,
        views: Annotated[int, typer.Option(help="Views per training sample.", min=1)] = 3,
        max_gap: Annotated[int, typer.Option(help="At most this many frames between a sample's views.", min=1)] = 6,
        width: Annotated[int, typer.Option(help="Training width (a multiple of 16).")] = 256,
        height: Annotated[int, typer.Option(help="Training height (a multiple of 16).")] = 192,
        depth_scale: Annotated[Optional[float], typer.Option(help="Stored value per metre (generic-rgbd).")] = None,
        steps: Steps = 2000, batch_size: Batch = 4,
        lr: Annotated[float, typer.Option(help="Peak learning rate (warmup, then poly decay).")] = 2e-4,
        finetune: Finetune = False, seed: int = 0, workers: Workers = 2, device: opt.Device = "auto",
        precision: opt.Precision = None, half: Half = False,
        eval_limit: Annotated[Optional[int], typer.Option(help="Evaluate on at most this many held-out view sets.")]
        = 20,
        save_every: Annotated[int, typer.Option(help="Write <output>/train.ckpt every N steps.", min=1)] = 500,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from <output>/train.ckpt (same arguments).")]
        = False) -> None:
    """Train a point-map model (MapAnything's architecture, small by default) on multi-view RGB-D sequences;
    scores the untrained and the trained model on the held-out split and stores both in the file."""
    from heads.pointmap.train import PointMapTrainConfig
    from heads.pointmap.train import train_pointmap as run

    channels = _widths(dpt_channels, "--dpt-channels")
    require_positive(lr=lr, depth_scale=depth_scale)
    if dim % num_heads:
        raise UsageError(f"--dim {dim} is not divisible by --num-heads {num_heads}")
    cfg = PointMapTrainConfig(encoder=encoder, data=str(data), dataset=dataset, output=str(output), size=size, dim=dim,
                              depth=depth, num_heads=num_heads, dpt_features=dpt_features, dpt_channels=channels, pose_dim=pose_dim,
                              views=views, max_gap=max_gap, width=width, height=height, steps=steps,
                              batch_size=batch_size, lr=lr, finetune=finetune, depth_scale=depth_scale, seed=seed,
                              workers=workers, device=device, precision=precision, half=half, eval_limit=eval_limit,
                              save_every=save_every)
    result = run(cfg, resume=resume)
    if result:
        typer.echo(json.dumps(result))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="train", short_help='Train a depth, segmentation or point-map head.')

"""``pixio evaluate depth|segment``: the official metrics of a head checkpoint on a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError

app = typer.Typer(help="Evaluate a head checkpoint (sliding windows, official metrics).", no_args_is_help=True)


def _run(task: str, model: str, data: Path, dataset: str, split: str, json_out: bool, device: str,
         precision: str | None, limit: int | None, workers: int | None, depth_scale: float | None = None,
         classes: str | None = None) -> None:
    import json

    from heads.datasets import find_layout
    from heads.evaluate import evaluate
    from heads.model import load_head

    from ..engine import Engine

    engine = Engine(device, precision, batch_size=4, workers=workers, progress=None)
    net = load_head(model)
    if net.cfg.task != task:
        raise UsageError(f"{model} is a {net.cfg.task} head, not a {task} head")
    layout = find_layout(dataset, data, split, depth_scale, classes)
    result = evaluate(net, layout, engine, limit=limit)
    for k, v in result.items():
        if k != "iou":
            typer.echo(f"{k:>10s}  {v:.4f}" if isinstance(v, float) else f"{k:>10s}  {v}", err=True)
    if json_out:
        typer.echo(json.dumps(result))


Data = Annotated[Path, typer.Option(help="Dataset root folder.")]
Split = Annotated[str, typer.Option(help="train or val.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Metrics as JSON on stdout.")]
Limit = Annotated[Optional[int], typer.Option(help="At most this many images.", min=1)]


@app.command("depth")
def evaluate_depth(
        data: Data,
        model: Annotated[str, typer.Option("--model", "-m", help="Depth head checkpoint.")] = "depth-tiny",
        dataset: Annotated[str, typer.Option(help="7scenes, nyuv2, kitti or generic-depth.")] = "7scenes",
        split: Split = "val",
        depth_scale: Annotated[Optional[float], typer.Option(help="Stored value per metre (generic-depth).")] = None,
        json_out: JsonOut = False, device: opt.Device = "auto",
        precision: opt.Precision = None, limit: Limit = None, workers: opt.Workers = None) -> None:
    """d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog (per image, averaged).

    Measures exactly what `pixio depth` writes by default."""
    _run("depth", model, data, dataset, split, json_out, device, precision, limit, workers, depth_scale)


@app.command("segment")
def evaluate_segment(
        data: Data,
        model: Annotated[str, typer.Option("--model", "-m", help="Segmentation head checkpoint.")] = "segment-tiny",
        dataset: Annotated[str, typer.Option(help="camvid, ade20k, voc, loveda or generic-segment.")] = "camvid",
        split: Split = "val",
        classes: Annotated[Optional[str], typer.Option(help="Class-names file (generic-segment).")] = None,
        json_out: JsonOut = False, device: opt.Device = "auto",
        precision: opt.Precision = None, limit: Limit = None, workers: opt.Workers = None) -> None:
    """mIoU and pixel accuracy from the confusion matrix over the whole split.

    Measures exactly what `pixio segment` writes by default."""
    _run("segment", model, data, dataset, split, json_out, device, precision, limit, workers, classes=classes)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="evaluate")

"""``pixio evaluate depth|segment``: the official metrics of a head checkpoint on a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .. import options as opt
from ..errors import UsageError

app = typer.Typer(help="Evaluate a head checkpoint (sliding windows, official metrics).", no_args_is_help=True)


def _run(task: str, model: str, data: Path, dataset: str, split: str, json_out: bool, device: str,
         precision: str | None, limit: int | None) -> None:
    from heads.datasets import find_layout
    from heads.evaluate import evaluate
    from heads.model import load_head

    from ..engine import pick_device, pick_dtype

    dev = pick_device(device)
    net = load_head(model).to(dev)
    if net.cfg.task != task:
        raise UsageError(f"{model} is a {net.cfg.task} head")
    layout = find_layout(dataset, data, split)
    result = evaluate(net, layout, dev, pick_dtype(precision, dev), limit=limit)
    for k, v in result.items():
        if k != "iou":
            typer.echo(f"{k:>10s}  {v:.4f}" if isinstance(v, float) else f"{k:>10s}  {v}", err=True)
    if json_out:
        typer.echo(json.dumps(result))


Model = Annotated[str, typer.Option("--model", "-m", help="Head checkpoint.")]
Data = Annotated[Path, typer.Option(help="Dataset root folder.")]
Split = Annotated[str, typer.Option(help="train or val.")]
JsonOut = Annotated[bool, typer.Option("--json", help="Metrics as JSON on stdout.")]
Limit = Annotated[int | None, typer.Option(help="At most this many images.")]


@app.command("depth")
def evaluate_depth(model: Model, data: Data, dataset: Annotated[str, typer.Option()] = "7scenes", split: Split = "val",
                   json_out: JsonOut = False, device: opt.Device = "auto", precision: opt.Precision = None,
                   limit: Limit = None) -> None:
    """d1, d2, d3, abs_rel, sq_rel, rmse, rmse_log, log10, silog (per image, averaged)."""
    _run("depth", model, data, dataset, split, json_out, device, precision, limit)


@app.command("segment")
def evaluate_segment(model: Model, data: Data, dataset: Annotated[str, typer.Option()] = "camvid",
                     split: Split = "val", json_out: JsonOut = False, device: opt.Device = "auto",
                     precision: opt.Precision = None, limit: Limit = None) -> None:
    """mIoU and pixel accuracy from the confusion matrix over the whole split."""
    _run("segment", model, data, dataset, split, json_out, device, precision, limit)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="evaluate")

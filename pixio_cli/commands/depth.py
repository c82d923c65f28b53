"""``pixio depth``: metric depth maps from images, folders, globs, stdin lists or videos."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import cv2
import numpy as np
import torch
import typer

from .. import options as opt
from ..engine import Engine, Sample
from ..errors import UsageError
from ..inputs import Item, collect
from ..writers import write_bytes, write_image
from .common import finish
from .dense import batch_fn, default_policy, load_dense, output_namer


class DepthFormat(str, Enum):
    png16 = "png16"
    npy = "npy"


def depth(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder, or a file for one input.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Head checkpoint from `pixio train depth`.")] = "depth-tiny",
    format: Annotated[DepthFormat, typer.Option("--format", "-f", help="png16: 16-bit PNG in millimetres; "
                                                "npy: float32 metres.")] = DepthFormat.png16,
    vis: Annotated[bool, typer.Option("--vis", help="Also a coloured picture with a depth legend.")] = False,
    ply: Annotated[bool, typer.Option("--ply", help="Also a coloured point cloud (Open3D).")] = False,
    fov: Annotated[Optional[float], typer.Option(help="Horizontal field of view in degrees, for --ply.")] = None,
    fx: Annotated[Optional[float], typer.Option(help="Focal length in pixels of the input, for --ply.")] = None,
    tile: opt.Tile = False,
    resize: opt.HeadResize = None,
    json_lines: opt.Json = False,
    every: opt.Every = 1,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    batch_size: opt.BatchSize = 8,
    workers: opt.Workers = None,
    compile: opt.Compile = False,
    quiet: opt.Quiet = False,
) -> None:
    """Predict depth (metres) for every image; results at the input's original resolution."""
    items = collect(inputs, every=every)
    main = ".png" if format == DepthFormat.png16 else ".npy"
    name = output_namer(output, items, (main,))
    wanted = [main] + (["_vis.png"] if vis else []) + ([".ply"] if ply else [])

    engine = Engine(device, precision, batch_size, workers, compile, progress=False if quiet else None)
    net = load_dense(engine, model, "depth")
    if ply and fov is None and fx is None and not net.cfg.intrinsics:
        raise UsageError("--ply needs the camera: give --fov or --fx (this head does not carry intrinsics)")
    policy = default_policy(resize, net)

    def write(item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        h, w = sample.orig_hw
        d = cv2.resize(out["out"].numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
        if format == DepthFormat.png16:
            mm = np.clip(d * 1000 + 0.5, 0, 65535).astype(np.uint16)
            write_image(name(item, main), mm)
        else:
            import io

            buf = io.BytesIO()
            np.save(buf, d.astype(np.float32))
            write_bytes(name(item, main), buf.getvalue())
        image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_LINEAR) if (vis or ply) else None
        if vis:
            from heads.visualize import depth_picture

            write_image(name(item, "_vis.png"), depth_picture(d))
        if ply:
            from heads.visualize import write_point_cloud

            write_point_cloud(name(item, ".ply"), d, image, *_intrinsics(net.cfg.intrinsics, w, h, fov, fx))
        if json_lines:
            rec = {"path": item.label, "output": str(name(item, main)), "min_m": float(d.min()),
                   "median_m": float(np.median(d)), "max_m": float(d.max())}
            sys.stdout.write(json.dumps(rec) + "\n")
            sys.stdout.flush()

    summary = engine.run(items, policy, batch_fn(net, tile), write, desc="depth",
                         skip=lambda it: all(name(it, t).exists() for t in wanted))
    finish(summary, "predicted")


def _intrinsics(known: dict | None, w: int, h: int, fov: float | None, fx: float | None):
    """(fx, fy, cx, cy) for an image of w x h: --fx, --fov, or the training camera scaled to this size."""
    if fx is None and fov is not None:
        fx = w / 2 / np.tan(np.radians(fov) / 2)
    if fx is not None:
        return fx, fx, w / 2, h / 2
    if known:
        sx, sy = w / known["width"], h / known["height"]
        return known["fx"] * sx, known["fy"] * sy, known["cx"] * sx, known["cy"] * sy
    raise UsageError("--ply needs the camera: give --fov or --fx (this head does not carry intrinsics)")


def register(app: typer.Typer) -> None:
    app.command(help=depth.__doc__)(depth)

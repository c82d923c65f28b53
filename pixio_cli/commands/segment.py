"""``pixio segment``: semantic label maps from images, folders, globs, stdin lists or videos."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import typer

from .. import options as opt
from ..engine import Engine, Sample
from ..inputs import Item, collect
from ..writers import write_image
from .common import finish
from .dense import batch_fn, default_policy, load_dense, output_namer


def segment(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder, or a .png file for one input.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Head checkpoint from `pixio train segment`.")] = "segment-tiny",
    overlay: Annotated[bool, typer.Option("--overlay", help="Also the image blended with class colours and a legend.")] = False,
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
    """Label every pixel; writes palette PNGs whose pixel values are the class ids."""
    items = collect(inputs, every=every)
    name = output_namer(output, items, (".png",))
    wanted = [".png"] + (["_overlay.png"] if overlay else [])

    engine = Engine(device, precision, batch_size, workers, compile, progress=False if quiet else None)
    net = load_dense(engine, model, "segment")
    classes = net.cfg.classes or [str(i) for i in range(net.cfg.n_out)]
    palette = np.array(net.cfg.palette or _palette(len(classes)), np.uint8)
    policy = default_policy(resize, net)

    def write(item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        h, w = sample.orig_hw
        probs = F.interpolate(out["out"][None], size=(h, w), mode="bilinear", align_corners=False)[0]
        labels = probs.argmax(0).numpy().astype(np.uint8)
        write_image(name(item, ".png"), labels, palette=palette)
        if overlay:
            from heads.visualize import overlay_picture

            image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_LINEAR)
            write_image(name(item, "_overlay.png"), overlay_picture(image, labels, palette, classes))
        if json_lines:
            counts = np.bincount(labels.ravel(), minlength=len(classes))
            fractions = {classes[c]: round(float(n) / labels.size, 6) for c, n in enumerate(counts) if n}
            sys.stdout.write(json.dumps({"path": item.label, "output": str(name(item, ".png")),
                                         "fractions": fractions}) + "\n")
            sys.stdout.flush()

    summary = engine.run(items, policy, batch_fn(net, tile), write, desc="segment",
                         skip=lambda it: all(name(it, t).exists() for t in wanted))
    finish(summary, "segmented")


def _palette(n: int) -> list[list[int]]:
    """Distinct colours for heads that carry no palette (golden-ratio hues)."""
    hsv = np.array([[[int(i * 0.618034 * 180) % 180, 200, 230]] for i in range(n)], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:, 0].tolist()


def register(app: typer.Typer) -> None:
    app.command(help=segment.__doc__)(segment)

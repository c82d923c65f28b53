"""``pixio segment``: semantic label maps from images, folders, globs, stdin lists or videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .. import options as opt

FORMATS = {".png": "png"}


def segment(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder, or a .png file for one input.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Head checkpoint from `pixio train segment`.")] = "segment-tiny",
    overlay: Annotated[bool, typer.Option("--overlay", help="Also the image blended with class colours and a legend.")] = False,
    tile: opt.Tile = True,
    resize: opt.HeadResize = None,
    json_lines: opt.Json = False,
    every: opt.Every = 1,
    overwrite: opt.Overwrite = False,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    batch_size: opt.BatchSize = 8,
    workers: opt.Workers = None,
    compile: opt.Compile = False,
    quiet: opt.Quiet = False,
) -> None:
    """Label every pixel; writes palette PNGs whose pixel values are the class ids.

    By default the path `pixio evaluate segment` measures: the head's training
    scale, sliding windows of its crop size, averaged.
    """
    import numpy as np
    import torch

    from heads.dense.predict import batch_fn, default_policy, labels_at, load_dense

    from ..engine import Engine, Sample, dist_info
    from ..inputs import Item, collect
    from ..locks import claim
    from ..outputs import destination, output_folder
    from ..resume import Ledger, model_identity
    from ..writers import write_image
    from .common import finish, write_json_line

    # input
    items = collect(inputs, every=every, outputs=output_folder(output))  # not its own outputs
    dest, _ = destination(output, items, formats=FORMATS, fmt=None, default="png")
    tags = [".png"] + (["_overlay.png"] if overlay else [])
    dest.check_unique(items, tags, {"_overlay.png": "--overlay"})

    # engine and model
    engine = Engine(device, precision, batch_size=batch_size, workers=workers, compile=compile, progress=False if quiet else None)
    net = load_dense(engine, model, "segment")
    classes = net.cfg.classes or [str(i) for i in range(net.cfg.n_out)]
    palette = np.array(net.cfg.palette or _palette(len(classes)), np.uint8)
    policy = default_policy(resize, net)
    claim(dest.target, folder=not dest.single, rank=dist_info()[0])  # a second run into this output is refused
    ledger = None if dest.single else Ledger(
        dest.folder, {"--model": model_identity(model), "--tile": tile, "--resize": policy.describe(),
                      "--precision": engine.precision}, overwrite, *dist_info()[:2])

    # output
    def write(item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        h, w = sample.orig_hw
        labels = labels_at(out["out"], (h, w))
        write_image(dest.path(item, ".png"), labels, palette=palette)
        if overlay:
            import cv2

            from heads.dense.visualize import overlay_picture

            image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_LINEAR)
            write_image(dest.path(item, "_overlay.png"), overlay_picture(image, labels, palette, classes))
        if ledger is not None:
            ledger.record_item(item)
        if json_lines:
            counts = np.bincount(labels.ravel(), minlength=len(classes))
            fractions = {classes[c]: round(float(n) / labels.size, 6) for c, n in enumerate(counts) if n}
            write_json_line({"path": item.label, "output": str(dest.path(item, ".png")), "fractions": fractions})

    def done(it: Item) -> bool:
        return ledger is not None and ledger.done_item(it) and all(dest.path(it, t).exists() for t in tags)

    summary = engine.run(items, policy, batch_fn(net, tile), write, desc="segment", skip=done, split_ranks=True)
    finish(summary, "segmented")


def _palette(n: int) -> list[list[int]]:
    """Distinct colours for heads that carry no palette (golden-ratio hues)."""
    import cv2
    import numpy as np

    hsv = np.array([[[int(i * 0.618034 * 180) % 180, 200, 230]] for i in range(n)], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[:, 0].tolist()


def register(app: typer.Typer) -> None:
    app.command(help=segment.__doc__, short_help='Per-pixel class labels of images (palette PNGs, overlays).')(segment)

"""``pixio recon3d``: frames or a video in, one point cloud of the scene out (a point-map model)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError

DEFAULT_POINTMAP = "pixio-vith16-mapanything"
DEFAULT_SHORT_SIDE = 384  # 512x384 for 4:3 frames


def recon3d(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The scene's .ply file, or a folder to hold scene.ply.")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Point-map model: pixio-vith16-mapanything (MapAnything on Pixio-H, metric) or a "
                              "checkpoint file.")] = DEFAULT_POINTMAP,
    intrinsics: Annotated[Optional[Path], typer.Option(
        help="Known camera: a 3x3 K (text, .npy or .json) for every image, or a JSON list of one K per image, "
             "in the original images' pixels.", show_default=False)] = None,
    save_predictions: Annotated[Optional[Path], typer.Option(
        "--save-predictions", help="Also the raw predictions as .npz (points, depths, confidences, masks, poses, "
                                   "intrinsics, scale, image names), before any cleaning.", show_default=False)] = None,
    resize: Annotated[Optional[str], typer.Option(
        help="Processing size: short side N, WxH or native (default: the model's, short side "
             f"{DEFAULT_SHORT_SIDE} for MapAnything's).",
        show_default=False)] = None,
    use_mask: Annotated[bool, typer.Option(
        "--mask/--no-mask", help="Keep only the pixels the model's mask marks as unambiguous.")] = True,
    every: opt.Every = 1,
    json_summary: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.")] = False,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    workers: opt.Workers = None,
    quiet: opt.Quiet = False,
) -> None:
    """Reconstruct one scene from its views: per-view point maps in the first view's frame (metres with a
    metric model), written as one coloured point cloud (x right, y down, z forward of the first camera)."""
    scene = output / "scene.ply" if output.suffix.lower() != ".ply" else output
    if output.suffix and output.suffix.lower() != ".ply":
        raise UsageError(f"-o {output}: the scene is written as .ply (or give a folder)")
    if save_predictions is not None and save_predictions.suffix.lower() != ".npz":
        raise UsageError(f"--save-predictions {save_predictions}: predictions are written as .npz")

    import json

    import numpy as np
    import torch

    from heads.geometry import write_ply
    from heads.pointmap import load_pointmap, prepare_pointmap
    from heads.scene import predict, read_intrinsics, scene_points

    from ..engine import Engine, Summary, autocast
    from ..errors import PixioError
    from ..images import ResizePolicy
    from ..inputs import collect
    from .common import report_failures

    started = time.perf_counter()
    # input, engine and model (whose training scale is the default processing size)
    items = collect(inputs, every=every)
    engine = Engine(device, precision, 8, workers, progress=False if quiet else None)
    net = prepare_pointmap(engine, load_pointmap(model))
    metric = bool(getattr(net, "metric", True))
    short = getattr(net, "infer_short", DEFAULT_SHORT_SIDE)
    policy = ResizePolicy.parse(resize) if resize else ResizePolicy(short=short)
    summary = Summary()
    samples = sorted((s for b in engine.batches(items, policy, summary) for s in b.samples), key=lambda s: s.index)
    if not samples:
        report_failures(summary)
        raise typer.Exit(1)
    frames = _one_size([s.image for s in samples], [items[s.index].label for s in samples])
    names = [items[s.index].label for s in samples]
    known = read_intrinsics(intrinsics, len(samples)) if intrinsics is not None else None
    if known is not None and summary.failures:
        raise UsageError("--intrinsics lists one K per image, and some images could not be read: fix or remove "
                         "them first")
    loaded = time.perf_counter()

    # the views, all at once
    try:
        with torch.inference_mode(), autocast(engine.device, engine.dtype):
            pred = predict(net, engine.to_pixels(frames), names, [s.orig_hw for s in samples], known, metric)
    except torch.cuda.OutOfMemoryError:
        raise PixioError(f"out of GPU memory on {len(frames)} views of {frames[0].shape[1]}x{frames[0].shape[0]}: "
                         "use fewer frames (--every) or a smaller --resize") from None
    inferred = time.perf_counter()

    # output
    if save_predictions is not None:
        pred.save(save_predictions)
    points, colours = scene_points(pred, np.stack(frames), None if use_mask else np.ones(pred.mask.shape, bool))
    if not len(points):
        raise PixioError(f"no points to write: the model's mask removed every pixel of {len(frames)} views "
                         "(--no-mask keeps them)")
    write_ply(scene, points, colours)
    unit = "metres" if metric else "unknown (the model is not metric)"
    record = {"scene": str(scene), "frames": len(frames), "failed": summary.failed, "points": int(len(points)),
              "scale": pred.scale, "unit": unit, "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
              "predictions": str(save_predictions) if save_predictions else None,
              "seconds": {"load_and_decode": round(loaded - started, 2), "inference": round(inferred - loaded, 2),
                          "total": round(time.perf_counter() - started, 2)}}
    if json_summary:
        typer.echo(json.dumps(record))
    report_failures(summary)
    typer.echo(f"reconstructed {len(frames)} views into {scene}: {len(points)} points, unit {unit}, "
               f"failed {summary.failed}", err=True)
    if summary.failed:
        raise typer.Exit(1)


def _one_size(images: list, labels: list[str]) -> list:
    """Frames at one processing size (the first frame's); others of the same aspect (within 5 %) are
    resized to it, others refused."""
    from ..images import resize_image

    h, w = images[0].shape[:2]
    out = []
    for img, label in zip(images, labels):
        if img.shape[:2] != (h, w):
            if abs((img.shape[1] / img.shape[0]) / (w / h) - 1) > 0.05:
                raise UsageError(f"{label} is processed at {img.shape[1]}x{img.shape[0]} but the first frame at "
                                 f"{w}x{h}: the views of one scene must share an aspect ratio (within 5 %)")
            img = resize_image(img, (h, w))
        out.append(img)
    return out


def register(app: typer.Typer) -> None:
    app.command(help=recon3d.__doc__)(recon3d)

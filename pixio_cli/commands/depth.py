"""``pixio depth``: metric depth maps from images, folders, globs, stdin lists or videos."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError
from .common import require_positive

FORMATS = {".png": "png16", ".npy": "npy"}


class DepthFormat(str, Enum):
    png16 = "png16"
    npy = "npy"


class Cmap(str, Enum):
    turbo = "turbo"
    grey = "grey"
    inverse = "inverse"


def depth(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Output folder, a .png (png16) / .npy file for one input, or an .mp4 for a depth "
                               "video of one input video.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Head checkpoint from `pixio train depth`, or a point-map "
                                                             "model (pixio-vith16-mapanything, a file): metric depth "
                                                             "and the camera from one image.")] = "depth-tiny",
    format: Annotated[Optional[DepthFormat], typer.Option(
        "--format", "-f", help="png16: 16-bit PNG in millimetres; npy: float32 metres (default: png16, or what "
                               "the -o file's extension says).", show_default=False)] = None,
    vis: Annotated[bool, typer.Option("--vis", help="Also a coloured picture with a depth legend.")] = False,
    cmap: Annotated[Cmap, typer.Option(
        help="Colours of the pictures: turbo (near red, far blue), grey (near white), inverse (inverse depth in "
             "inferno, Depth Anything's look).")] = Cmap.turbo,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side", help="Pictures show the input and its depth side by side (implies --vis).")] = False,
    ply: Annotated[bool, typer.Option("--ply", help="Also a coloured point cloud (Open3D).")] = False,
    fov: Annotated[Optional[float], typer.Option(help="Horizontal field of view in degrees, for --ply.")] = None,
    fx: Annotated[Optional[float], typer.Option(help="Focal length in pixels of the input, for --ply.")] = None,
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
    """Predict depth (metres) for every image; results at the input's original resolution.

    By default the path `pixio evaluate depth` measures: the head's training
    scale, sliding windows of its crop size blended without seams.
    """
    _check_camera(ply, fov, fx)
    vis = vis or side_by_side

    import numpy as np
    import torch

    from heads.dense.predict import batch_fn, default_policy, depth_at, load_dense

    from ..engine import Engine, Sample, dist_info
    from ..inputs import Item, collect
    from ..outputs import destination, output_folder
    from ..resume import Ledger, model_identity
    from ..writers import write_bytes, write_image
    from .common import finish, write_json_line

    # input
    items = collect(inputs, every=every, outputs=output_folder(output))  # not its own outputs
    if output.suffix.lower() == ".mp4":  # a depth video of a video
        return _depth_video(items, output, model, cmap.value, side_by_side, ply, format, resize, tile, every,
                            Engine(device, precision, batch_size, workers, compile, progress=False if quiet else None))
    dest, fmt = destination(output, items, FORMATS, format.value if format else None, "png16")
    tags = [dest.main] + (["_vis.png"] if vis else []) + ([".ply"] if ply else [])
    dest.check_unique(items, tags, {"_vis.png": "--vis", ".ply": "--ply"})

    # engine and model
    engine = Engine(device, precision, batch_size, workers, compile, progress=False if quiet else None)
    net = load_dense(engine, model, "depth")
    predicts_camera = getattr(net, "whole_image", False)
    if ply and fov is None and fx is None and not net.cfg.intrinsics and not predicts_camera:
        raise UsageError("--ply needs the camera: give --fov or --fx (this head does not carry intrinsics)")
    policy = default_policy(resize, net)
    ledger = None if dest.single else Ledger(
        dest.folder, {"--model": model_identity(model), "--format": fmt, "--tile": tile,
                      "--resize": policy.describe(), "--precision": engine.precision},
        overwrite, *dist_info()[:2], optional={"--ply camera": _camera_setting(fov, fx) if ply else None,
                                               "--vis picture": f"{cmap.value}{' side by side' if side_by_side else ''}"
                                               if vis else None})

    # output
    def write(item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        h, w = sample.orig_hw
        d = depth_at(out["out"], (h, w))
        if fmt == "png16":
            write_image(dest.path(item, dest.main), np.clip(d * 1000 + 0.5, 0, 65535).astype(np.uint16))
        else:
            import io

            buf = io.BytesIO()
            np.save(buf, d)
            write_bytes(dest.path(item, dest.main), buf.getvalue())
        if vis or ply:
            import cv2

            image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_LINEAR)
        if vis:
            from heads.dense.visualize import depth_picture

            write_image(dest.path(item, "_vis.png"),
                        depth_picture(d, cmap=cmap.value, image=image if side_by_side else None))
        if ply:
            from heads.dense.visualize import write_point_cloud

            if "K" in out and fov is None and fx is None:  # the camera the point-map model predicted
                from heads.geometry import scale_intrinsics

                K = scale_intrinsics(out["K"].numpy(), sample.image.shape[:2], (h, w))
                camera = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
            else:
                camera = _intrinsics(net.cfg.intrinsics, w, h, fov, fx)
            write_point_cloud(dest.path(item, ".ply"), d, image, *camera)
        if ledger is not None:
            ledger.record_item(item)
        if json_lines:
            write_json_line({"path": item.label, "output": str(dest.path(item, dest.main)), "min_m": float(d.min()),
                             "median_m": float(np.median(d)), "max_m": float(d.max())})

    def done(it: Item) -> bool:
        return ledger is not None and ledger.done_item(it) and all(dest.path(it, t).exists() for t in tags)

    summary = engine.run(items, policy, batch_fn(net, tile), write, desc="depth", skip=done, split_ranks=True)
    where = dest.target if dest.single else f"{dest.target}/*{dest.main}"
    what = (f"{where}: depth in millimetres, 16-bit PNG, which viewers show nearly black; --vis also writes a "
            "picture" if fmt == "png16" and not vis else f"{where}: depth in metres, float32 .npy" if fmt == "npy"
            else None)
    finish(summary, "predicted", what)


def _depth_video(items: list, output: Path, model: str, cmap: str, side_by_side: bool, ply: bool, format,
                 resize: str | None, tile: bool, every: int, engine, warmup: int = 48) -> None:
    """``-o out.mp4``: the depth pictures of one video's frames as a video at its frame rate (over
    ``--every``), every frame coloured over one range (the 1st to 99th percentile of the first ``warmup``
    frames), so a colour means the same depth throughout. Frames stream to the file: memory and disk do
    not grow with the video's length."""
    import os
    import queue
    import threading

    import cv2
    import numpy as np

    from heads.dense.predict import batch_fn, default_policy, depth_at, load_dense
    from heads.dense.visualize import depth_picture

    from ..writers import EmptyVideo, check_writable, write_video
    from .common import finish

    videos = {it.path for it in items if it.frame is not None}
    if len(videos) != 1 or any(it.frame is None and it.error is None for it in items):
        raise UsageError(f"-o {output}: a depth video is made of one input video; give one video (or a folder of "
                         "outputs for images)")
    video = next(iter(videos))
    if os.path.realpath(output) == os.path.realpath(video):
        raise UsageError(f"-o {output} is the input video itself: name another file")
    if ply or format is not None:
        raise UsageError(f"-o {output}: a depth video holds pictures only; --ply and --format are for a folder of "
                         "outputs")
    check_writable(output.parent, f"-o {output}")
    cap = cv2.VideoCapture(video)
    fps = (cap.get(cv2.CAP_PROP_FPS) or 25.0) / max(1, every)
    cap.release()
    net = load_dense(engine, model, "depth")
    frames: queue.Queue = queue.Queue(maxsize=2 * warmup)

    ended = threading.Event()  # the end marker has been taken off the queue

    def take():
        got = frames.get()
        if got is None:
            ended.set()
        return got

    def pictures():
        first = []
        while len(first) < warmup and (got := take()) is not None:
            first.append(got)
        if not first:
            return
        sample = np.concatenate([d[:: max(1, d.shape[0] // 64), :: max(1, d.shape[1] // 64)].ravel() for d, _ in first])
        lo, hi = float(np.percentile(sample, 1)), float(np.percentile(sample, 99))
        for d, image in first:
            yield depth_picture(d, lo, hi, cmap, image)
        if got is not None:
            while (got := take()) is not None:
                yield depth_picture(got[0], lo, hi, cmap, got[1])

    def encode() -> None:
        try:
            written.append(write_video(output, pictures(), fps))
        except EmptyVideo:  # every frame failed: they are reported, and no file is made
            pass
        except BaseException as e:  # handed to the main thread
            failed.append(e)
            while not ended.is_set():  # let the producer finish, up to the end marker (once)
                take()

    written: list[int] = []
    failed: list[BaseException] = []
    encoder = threading.Thread(target=encode, name="pixio-depth-video", daemon=True)
    encoder.start()

    def add(item, sample, out) -> None:  # in frame order: the engine hands results over in input order
        if failed:  # the writer has stopped: no more frames to predict
            raise failed[0]
        h, w = sample.orig_hw
        image = cv2.resize(sample.image, (w, h)) if side_by_side else None
        frames.put((depth_at(out["out"], (h, w)), image))

    try:
        summary = engine.run(items, default_policy(resize, net), batch_fn(net, tile), add, desc="depth")
    finally:
        frames.put(None)
        encoder.join()
    if failed:
        raise failed[0]
    finish(summary, f"wrote {output}: frames")


def _check_camera(ply: bool, fov: float | None, fx: float | None) -> None:
    """The camera options must fit together, before any work."""
    if fov is not None and fx is not None:
        raise UsageError("--fov and --fx both set the focal length: give one")
    if (fov is not None or fx is not None) and not ply:
        raise UsageError(f"{'--fov' if fov is not None else '--fx'} is only used by --ply: add --ply, or leave it out")
    if fov is not None and not 0 < fov < 180:
        raise UsageError(f"--fov {fov:g}: a horizontal field of view is between 0 and 180 degrees")
    require_positive(fx=fx)  # a focal length in pixels


def _camera_setting(fov: float | None, fx: float | None) -> str:
    """How the point clouds' camera was chosen, for the run ledger."""
    return f"--fov {fov:g}" if fov is not None else f"--fx {fx:g}" if fx is not None else "the model's"


def _intrinsics(known: dict | None, w: int, h: int, fov: float | None, fx: float | None):
    """(fx, fy, cx, cy) for an image of w x h: --fx, --fov, or the training camera scaled to this size."""
    if fx is None and fov is not None:
        fx = w / 2 / math.tan(math.radians(fov) / 2)
    if fx is not None:
        return fx, fx, w / 2, h / 2
    sx, sy = w / known["width"], h / known["height"]
    return known["fx"] * sx, known["fy"] * sy, known["cx"] * sx, known["cy"] * sy


def register(app: typer.Typer) -> None:
    app.command(help=depth.__doc__, short_help='Metric depth maps of images or videos (PNG/NPY, pictures, point clouds, videos).')(depth)

"""``pixio depth``: metric depth maps from images, folders, globs, stdin lists or videos."""

from __future__ import annotations

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

    from heads.dense.depth_outputs import DepthFiles, DepthOutputs, camera_from
    from heads.dense.predict import batch_fn, default_policy, load_dense

    from ..engine import Engine, dist_info
    from ..inputs import collect
    from ..locks import claim
    from ..outputs import destination, output_folder
    from ..resume import Ledger, model_identity
    from .common import finish, write_json_line

    # input
    items = collect(inputs, every=every, outputs=output_folder(output))  # not its own outputs
    engine = Engine(device, precision, batch_size=batch_size, workers=workers, compile=compile,
                    progress=False if quiet else None)
    if output.suffix.lower() == ".mp4":  # a depth video of a video
        return _depth_video(items, output, engine, model=model, cmap=cmap.value, side_by_side=side_by_side,
                            ply=ply, format=format, resize=resize, tile=tile, every=every)
    dest, fmt = destination(output, items, formats=FORMATS, fmt=format.value if format else None, default="png16")
    dest.check_unique(items, [dest.main] + (["_vis.png"] if vis else []) + ([".ply"] if ply else []),
                      {"_vis.png": "--vis", ".ply": "--ply"})

    # model
    net = load_dense(engine, model, "depth")
    camera = None if getattr(net, "whole_image", False) and fov is None and fx is None else camera_from(
        getattr(getattr(net, "cfg", None), "intrinsics", None), fov=fov, fx=fx)  # None: the point-map model predicts the camera
    if ply and camera is None and not getattr(net, "whole_image", False):
        raise UsageError("--ply needs the camera: give --fov or --fx (this head does not carry intrinsics)")
    policy = default_policy(resize, net)

    # output
    claim(dest.target, folder=not dest.single, rank=dist_info()[0])  # a second run into this output is refused
    ledger = None if dest.single else Ledger(
        dest.folder, {"--model": model_identity(model), "--format": fmt, "--tile": tile,
                      "--resize": policy.describe(), "--precision": engine.precision},
        overwrite, *dist_info()[:2], optional={"--ply camera": _camera_setting(fov, fx) if ply else None,
                                               "--vis picture": f"{cmap.value}{' side by side' if side_by_side else ''}"
                                               if vis else None})
    files = DepthFiles(fmt=fmt, vis=vis, cmap=cmap.value, side_by_side=side_by_side, ply=ply, camera=camera)
    outputs = DepthOutputs(dest, files, ledger=ledger, on_record=write_json_line if json_lines else None)
    summary = engine.run(items, policy, batch_fn(net, tile), outputs.write, desc="depth", skip=outputs.done,
                         split_ranks=True)
    where = dest.target if dest.single else f"{dest.target}/*{dest.main}"
    what = (f"{where}: depth in millimetres, 16-bit PNG, which viewers show nearly black; --vis also writes a "
            "picture" if fmt == "png16" and not vis else f"{where}: depth in metres, float32 .npy" if fmt == "npy"
            else None)
    finish(summary, "predicted", what)


def _depth_video(items: list, output: Path, engine, *, model: str, cmap: str, side_by_side: bool, ply: bool,
                 format, resize: str | None, tile: bool, every: int) -> None:
    """``-o out.mp4``: the depth pictures of one video's frames as a video at its frame rate (over ``--every``),
    as :class:`heads.dense.depth_outputs.DepthVideo` writes it."""
    import os

    from heads.dense.depth_outputs import DepthVideo
    from heads.dense.predict import batch_fn, default_policy, load_dense

    from ..locks import claim
    from ..video import frame_rate
    from ..writers import check_writable
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
    claim(output, folder=False)
    fps = (frame_rate(video) or 25.0) / max(1, every)
    net = load_dense(engine, model, "depth")
    writer = DepthVideo(output, fps=fps, cmap=cmap, side_by_side=side_by_side)
    try:
        summary = engine.run(items, default_policy(resize, net), batch_fn(net, tile), writer.add, desc="depth")
    finally:
        writer.close()
    if writer.failed:
        raise writer.failed[0]
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


def register(app: typer.Typer) -> None:
    app.command(help=depth.__doc__, short_help='Metric depth maps of images or videos (PNG/NPY, pictures, point clouds, videos).')(depth)

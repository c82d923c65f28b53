"""``pixio recon3d``: frames or a video in, one clean scene out (PLY, mesh, cameras, COLMAP)."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import options as opt
from ..errors import UsageError
from ..model_ids import DEFAULT_POINTMAP, POINTMAP_SHORT_SIDE
from .common import Stages, report_failures, require_positive, single_process



class Cameras(str, Enum):
    json = "json"
    colmap = "colmap"
    colmap_text = "colmap-text"


class Matching(str, Enum):
    auto = "auto"
    exhaustive = "exhaustive"
    sequential = "sequential"


class Prior(str, Enum):
    network = "network"
    flat = "flat"


class Mapper(str, Enum):
    auto = "auto"
    incremental = "incremental"
    global_ = "global"
    keyframes = "keyframes"


IN, CAM, DEPTH, FUSE, OUT, PERF, ADV = ("Inputs", "Cameras", "Depth", "Fusion and mesh", "Outputs", "Performance",
                                        opt.ADVANCED)


def recon3d(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The scene's .ply file, or a folder to hold scene.ply.", rich_help_panel=IN)],
    model: Annotated[str, typer.Option(
        "--model", "-m", metavar="ID|PATH", help="pointmap-tiny (bundled), pixio-vith16-mapanything, or a file.",
        rich_help_panel=IN)] = DEFAULT_POINTMAP,
    every: Annotated[int, typer.Option(metavar="N", help="Videos: every N-th frame.", min=1,
                                       rich_help_panel=IN)] = 1,
    fps: Annotated[Optional[float], typer.Option(
        help="Videos: frames per second to take (instead of --every).", min=0.001, show_default=False,
        rich_help_panel=IN)] = None,
    max_frames: Annotated[Optional[int], typer.Option(
        help="At most N frames, evenly spread.", min=1, show_default=False, rich_help_panel=IN)] = None,
    keyframes: Annotated[Optional[float], typer.Option(
        help="Keep a frame once the image moved this much (of its width; e.g. 0.05).", min=0,
        show_default=False, rich_help_panel=IN)] = None,
    intrinsics: Annotated[Optional[Path], typer.Option(
        help="Known K (3x3 text, .npy, .json; or a JSON list), in image pixels.",
        show_default=False, rich_help_panel=CAM)] = None,
    known_cameras: Annotated[Optional[Path], typer.Option(
        "--known-cameras", help="pixio's cameras.json (metres) or a COLMAP model.",
        show_default=False, rich_help_panel=CAM)] = None,
    known_poses: Annotated[bool, typer.Option(
        "--known-poses/--no-known-poses", help="An RGB-D folder's recorded poses as known cameras.",
        rich_help_panel=CAM)] = True,
    hold_cameras: Annotated[bool, typer.Option(
        "--hold-cameras", help="Known cameras as given, even where they fit the images loosely.",
        rich_help_panel=CAM)] = False,
    sfm: Annotated[bool, typer.Option(
        "--sfm/--no-sfm", help="Cameras from matching (COLMAP); no: the network's own.",
        rich_help_panel=CAM)] = True,
    mapper: Annotated[Mapper, typer.Option(
        metavar="MAPPER", help="auto (incremental up to 250 frames, else keyframes), incremental, keyframes or "
                               "global.", rich_help_panel=CAM)] = Mapper.auto,
    loop_closure: Annotated[bool, typer.Option(
        "--loop-closure/--no-loop-closure", help="Also match frames alike far apart in a video.",
        rich_help_panel=CAM)] = False,
    known_depth: Annotated[Optional[Path], typer.Option(
        "--known-depth", help="Depth per image: <stem>.npy (m) or 16-bit <stem>.png (mm); 0 unknown.",
        show_default=False, rich_help_panel=DEPTH)] = None,
    depth_input: Annotated[bool, typer.Option(
        "--depth-input/--no-depth-input", help="An RGB-D folder's depth images as known depth.",
        rich_help_panel=DEPTH)] = True,
    depth_scale: Annotated[Optional[float], typer.Option(
        "--depth-scale", help="Stored depth values per metre (default: 1000 PNG, 5000 TUM, 1 .npy).", min=1e-9,
        show_default=False, rich_help_panel=DEPTH)] = None,
    depth_cameras: Annotated[bool, typer.Option(
        "--depth-cameras/--no-depth-cameras", help="Known depth: move cameras until the depths agree.",
        rich_help_panel=DEPTH)] = True,
    fusion: Annotated[bool, typer.Option(
        "--fusion/--no-fusion", help="Keep depths other views confirm, each surface once.",
        rich_help_panel=FUSE)] = True,
    mesh: Annotated[bool, typer.Option("--mesh", help="Also <name>_mesh.ply, a TSDF mesh of the depths.",
                                       rich_help_panel=FUSE)] = False,
    mesh_voxel: Annotated[Optional[float], typer.Option(
        help="Mesh voxel side (default: 1.5 pixels' footprint at the median depth).", min=0,
        show_default=False, rich_help_panel=FUSE)] = None,
    voxel: Annotated[Optional[float], typer.Option(
        help="One point per voxel of this side (metres with a metric model).", min=0, show_default=False,
        rich_help_panel=FUSE)] = None,
    max_points: Annotated[Optional[int], typer.Option(
        help="Keep a random subset of at most N points.", min=1, show_default=False, rich_help_panel=FUSE)] = None,
    cameras: Annotated[Optional[Cameras], typer.Option(
        metavar="FORMAT", help="json (cameras.json, the default), colmap (sparse/0/) or colmap-text.",
        show_default=False, rich_help_panel=OUT)] = None,
    preview: Annotated[Optional[Path], typer.Option(
        help="Also a .png picture of the cloud and the cameras.", show_default=False, rich_help_panel=OUT)] = None,
    glb: Annotated[bool, typer.Option("--glb", help="Also <name>.glb of the mesh (needs --mesh).",
                                      rich_help_panel=OUT)] = False,
    view: Annotated[bool, typer.Option(
        "--view", help="Then turn the scene in the browser (pixio view).", rich_help_panel=OUT)] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.",
                                               rich_help_panel=OUT)] = False,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda or cuda:N.",
                                        rich_help_panel=PERF)] = "auto",
    precision: Annotated[Optional[str], typer.Option(
        metavar="fp32|bf16|fp16", help="Default: bf16 where native (CUDA, AMX/AVX-512 BF16), else fp32.",
        show_default=False, rich_help_panel=PERF)] = None,
    workers: Annotated[Optional[int], typer.Option(
        metavar="N", help="Decoding processes (0: in this one; default: up to 4).", show_default=False, min=0,
        rich_help_panel=PERF)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel=PERF)] = False,
    help_all: opt.HelpAll = False,
    matching: Annotated[Matching, typer.Option(
        help="Frame pairs matched: exhaustive (every pair), sequential (each frame with the next 10 and at "
             "powers of two: video, ordered frames), or auto (exhaustive up to 40 frames, else sequential; "
             "sequential for video).", rich_help_panel=ADV)] = Matching.auto,
    depth_prior: Annotated[Prior, typer.Option(
        "--depth-prior", help="What stereo starts from and fills holes with: network (the model's depth), or "
                              "flat (one plane per view at the tracks' median depth: a check that the geometry "
                              "comes from the images).", rich_help_panel=ADV)] = Prior.network,
    chunk: Annotated[int, typer.Option(
        help="Views per model pass; longer sequences go in overlapping chunks aligned to each other.", min=2,
        rich_help_panel=ADV)] = 32,
    overlap: Annotated[int, typer.Option(help="Views each chunk shares with the previous one.", min=1,
                                         rich_help_panel=ADV)] = 4,
    use_mask: Annotated[bool, typer.Option(
        "--mask/--no-mask", help="Keep only the pixels the model's mask keeps (it drops sky, glass and other "
                                 "pixels whose depth the model says it cannot tell).", rich_help_panel=ADV)] = True,
    conf_percentile: Annotated[Optional[float], typer.Option(
        help="Drop the N % of pixels the model is least confident of (over all views).", min=0, max=100,
        show_default=False, rich_help_panel=ADV)] = None,
    conf_min: Annotated[Optional[float], typer.Option(
        help="Drop pixels whose confidence is below this (the model's confidence starts at 1; higher is "
             "surer).", show_default=False, rich_help_panel=ADV)] = None,
    edge_rtol: Annotated[float, typer.Option(
        help="Drop pixels on depth edges, where a neighbour's depth differs by more than this fraction "
             "(0.03: 3 %; 0 keeps them): edges smear into flying points between surfaces.", min=0,
        rich_help_panel=ADV)] = 0.03,
    outliers: Annotated[bool, typer.Option(
        "--outliers", help="Statistical outlier removal (20 neighbours, 2 standard deviations).",
        rich_help_panel=ADV)] = False,
    normals: Annotated[bool, typer.Option("--normals", help="Estimate normals (oriented to the cameras).",
                                          rich_help_panel=ADV)] = False,
    save_predictions: Annotated[Optional[Path], typer.Option(
        "--save-predictions", help="Also the raw predictions as .npz (points, depths, confidences, masks, poses, "
                                   "intrinsics, scale, image names), before any cleaning; an interrupted chunked "
                                   "run resumes from the chunks it finished.", show_default=False,
        rich_help_panel=ADV)] = None,
    resize: Annotated[Optional[str], typer.Option(
        help="Processing size: short side N, WxH or native (default: the model's; short side "
             f"{POINTMAP_SHORT_SIDE} for MapAnything's).", show_default=False, rich_help_panel=ADV)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random choices (RANSAC, --max-points).", min=0,
                                      max=2 ** 31 - 1, rich_help_panel=ADV)] = 0,
) -> None:
    """Reconstruct one scene from its views: cameras from matching and bundle adjustment, each view's
    depth from the network fitted to them, cleaned and fused into one coloured point cloud in the first
    camera's frame (x right, y down, z forward; metres with a metric model)."""
    single_process("recon3d")
    require_positive(mesh_voxel=mesh_voxel, voxel=voxel)  # 0 once meant the default without a word
    if view:
        from .view import require_viewer

        require_viewer()  # before the run, not after it
    cameras = cameras or Cameras.json  # small, and what the viewer and evaluate read: always written
    scene_path = _check(output, save_predictions, preview=preview, overlap=overlap, chunk=chunk, glb=glb, mesh=mesh,
                        every=every, fps=fps, cameras=cameras)
    if known_cameras is not None and intrinsics is not None:
        raise UsageError("--known-cameras holds the intrinsics too: give one of --known-cameras and --intrinsics")
    if known_cameras is not None and not known_cameras.exists():
        raise UsageError(f"--known-cameras {known_cameras}: no such file or folder")
    if known_cameras is not None and cameras is not None:
        _check_given_apart(known_cameras, scene_path, cameras)
    started = time.perf_counter()

    import json


    from heads.recon.cleaning import Cleaning
    from heads.recon.outputs import SceneOutputs, write_scene
    from heads.recon.pipeline import SceneOptions, reconstruct
    from heads.recon.sfm import SfmOptions
    from heads.recon.workspace import Workspace

    from ..engine import Engine, Summary

    inputs, frames_folder = _inputs(inputs, output, scene_path=scene_path, intrinsics=intrinsics,
                                    known_depth=known_depth, depth_scale=depth_scale, depth_input=depth_input,
                                    known_cameras=known_cameras, known_poses=known_poses, every=every, fps=fps,
                                    max_frames=max_frames,
                                    keyframes=keyframes, cameras=cameras, preview=preview,
                                    save_predictions=save_predictions, mesh=mesh, glb=glb)
    from ..locks import claim

    claim(scene_path, folder=False)  # a second run into this output is refused, not let loose on this one's work folder
    options = SceneOptions(model=model, resize=resize, chunk=chunk, overlap=overlap, sfm=SfmOptions(
        matching=matching.value, mapper=mapper.value, loop_closure=loop_closure, seed=seed) if sfm else None,
                           depth_cameras=depth_cameras, fusion=fusion, prior=depth_prior.value, hold_cameras=hold_cameras,
                           seed=seed, save_predictions=save_predictions)
    cleaning = Cleaning(use_mask, conf_percentile, conf_min=conf_min, edge_rtol=edge_rtol or None, outliers=outliers,
                        voxel=voxel, max_points=max_points, seed=seed)
    outputs = SceneOutputs(scene_path, cleaning,
                           mesh=mesh, mesh_voxel=mesh_voxel, glb=glb, cameras=cameras.value if cameras else None,
                           preview=preview, normals=normals, frames_folder=frames_folder)
    engine = Engine(device, precision, batch_size=8, workers=workers, progress=False if quiet else None)
    stages = Stages(["loading the model and decoding", "predicting", "cameras", "fusing the views", "writing"],
                    quiet, "recon3d")
    summary = Summary()
    try:  # the views' arrays in files beside the scene while it is made, not all in memory
        with Workspace(scene_path.parent / f".{scene_path.name}.work"):
            scene = reconstruct(inputs, options, engine, stages=stages, summary=summary)
            if scene is None:
                report_failures(summary)
                raise typer.Exit(1)
            stages.next()
            record = write_scene(scene, options, out=outputs, say=stages.say, progress=stages.next)
            n_chunks, scene = len(scene.chunks), None  # its arrays dropped before the workspace's files go
    except BaseException:
        stages.close()
        raise
    _warn_stale(scene_path, record["outputs"], known_cameras)
    record["failed"] = summary.failed
    record["seconds"]["total"] = round(time.perf_counter() - started, 2)
    stages.close()
    record["peak_memory_gib"] = stages.peak_gib  # by the end of each stage: where memory grows
    unusable = record.pop("unusable")
    if json_summary:
        typer.echo(json.dumps(record))
    report_failures(summary)
    n = record["frames"]
    typer.echo(f"reconstructed {n} views ({n_chunks} chunk{'s' if n_chunks > 1 else ''}) into "
               f"{scene_path}: {record['points']} points, unit {record['unit']}, failed {summary.failed}", err=True)
    if summary.failed or unusable:
        raise typer.Exit(1)
    if view:
        from .view import show

        show(scene_path)


def _inputs(specs: list[str], output: Path, scene_path: Path, intrinsics: Optional[Path], known_depth: Optional[Path],
            depth_scale: Optional[float], depth_input: bool, known_cameras: Optional[Path], known_poses: bool, *,
            every: int,
            fps: Optional[float], max_frames: Optional[int], keyframes: Optional[float], cameras: Optional["Cameras"],
            preview: Optional[Path],
            save_predictions: Optional[Path], mesh: bool, glb: bool):
    """The views and what is known of them, checked before any work (heads.recon.pipeline.SceneInputs), and
    the folder a video's frames go to for the cameras to name (or None)."""
    import numpy as np

    from heads.recon.known_cameras import read_intrinsics
    from heads.recon.views import SceneInputs, image_names

    from ..inputs import collect, rgbd_depth_images
    from ..outputs import check_apart_from_inputs

    own = output if not output.suffix else None  # a folder of outputs: walks leave it out
    items = collect(specs, every=_every(specs, every, fps), outputs=own)
    depth_images = set(rgbd_depth_images(items))
    if depth_images:  # an RGB-D sequence: its colour frames are the views
        items = [it for i, it in enumerate(items) if i not in depth_images]
    video = any(it.frame is not None for it in items)
    frames_folder = scene_path.parent / "images" if video and cameras is not None else None  # for COLMAP to find
    check_apart_from_inputs(items, specs, [
        ("-o", scene_path), ("--preview", preview), ("--save-predictions", save_predictions),
        ("--cameras (a video's frames)", frames_folder),
        ("--mesh", scene_path.with_name(scene_path.stem + "_mesh.ply") if mesh else None),
        ("--glb", scene_path.with_suffix(".glb") if glb else None)], skip=own)
    if cameras == Cameras.colmap_text:
        spaced = [n for n in image_names([it for it in items if it.error is None])[1] if any(c.isspace() for c in n)]
        if spaced:
            raise UsageError(f"--cameras colmap-text: COLMAP's text format ends an image's line with its name, and "
                             f"'{spaced[0]}' holds a space, which would read back as another name: use --cameras "
                             "colmap (binary), or names without spaces")
    Ks = read_intrinsics(intrinsics, len(items)) if intrinsics is not None else None  # one per input, in order
    if depth_images and known_cameras is None and known_poses:
        known_cameras = _recorded_cameras(items, Ks if Ks is not None else _folder_intrinsics(items))
        Ks = None if known_cameras is not None else Ks  # the cameras hold K
    depth_files, Ks = _known_depth(items, known_depth, per_metre=depth_scale, rgbd=depth_input and bool(depth_images),
                                   n_depth=len(depth_images), Ks=Ks, given_cameras=known_cameras is not None)
    prior_K = None
    if Ks is None and known_cameras is None:  # a calibration file beside colour frames: matching starts from it
        found = _folder_intrinsics(items)
        if found is not None:
            prior_K = found[0]
            typer.echo(f"pixio: the frames' intrinsics file gives fx {prior_K[0, 0]:.1f} px: matching starts from "
                       "it and fits it to the frames (--intrinsics holds a K as given)", err=True)
    scene = SceneInputs(items, Ks, depth_files=depth_files, depth_scale=depth_scale, known_cameras=known_cameras,
                        prior_K=prior_K)
    good = [i for i, it in enumerate(items) if it.error is None]
    if max_frames and len(good) > max_frames:  # frames, not failed inputs, are what is counted
        picks = {good[int(i)] for i in np.linspace(0, len(good) - 1, max_frames).round()}
        scene = scene.keep([i for i in range(len(items)) if i in picks or items[i].error is not None])
    if keyframes is not None:
        from heads.recon.keyframes import KeyframeRule, select_keyframes

        from ..engine import ImageStream
        from ..images import ResizePolicy

        rule = KeyframeRule(motion=keyframes)
        decoded = (None if s.error else s.image for s in ImageStream(scene.items, ResizePolicy(short=rule.width,
                                                                                                 multiple=1)))
        before = len(scene.items)
        scene = scene.keep(select_keyframes(decoded, rule))
        typer.echo(f"pixio: {len(scene.items)} of {before} frames kept as keyframes (moved at least {keyframes:g} "
                   "of the width since the last one kept)", err=True)
    return scene, frames_folder


def _check_given_apart(given: Path, scene: Path, cameras: "Cameras") -> None:
    """A usage error when the cameras given as input are where ``--cameras`` would write: a file given to a
    run is never one of its outputs."""
    import os

    target = scene.parent / ("cameras.json" if cameras == Cameras.json else os.path.join("sparse", "0"))
    given_at, target_at = os.path.realpath(given), os.path.realpath(target)
    if given_at == target_at or (cameras != Cameras.json and given_at.startswith(target_at + os.sep)):
        raise UsageError(f"--known-cameras {given} is where --cameras {cameras.value} would write this run's "
                         f"cameras ({target}), an output: copy it elsewhere or choose another -o")


_WRITTEN_BY = {".json": "--cameras json", "": "--cameras colmap", ".ply": "--mesh", ".glb": "--glb"}


def _warn_stale(scene: Path, written: list[str], known_cameras: Path | None) -> None:
    """One warning line for cameras or a mesh an earlier run left beside the scene, which this run did not
    rewrite: they belong to another scene (left in place: they may be kept on purpose)."""
    given = known_cameras.resolve() if known_cameras is not None else None
    stale = [p for p in (scene.parent / "cameras.json", scene.parent / "sparse" / "0",
                         scene.with_name(scene.stem + "_mesh.ply"), scene.with_suffix(".glb"))
             if p.exists() and str(p) not in written and p.resolve() != given]
    if stale:
        verb, them = ("come", "them") if len(stale) > 1 else ("comes", "it")
        options = list(dict.fromkeys(_WRITTEN_BY[p.suffix] for p in stale))
        typer.echo(f"pixio: warning: {' and '.join(map(str, stale))} beside {scene} {verb} from an earlier run, not "
                   f"this one ({' and '.join(options)} rewrite{'' if len(options) > 1 else 's'} {them})", err=True)


def _known_depth(items: list, folder: Optional[Path], per_metre: Optional[float], rgbd: bool, n_depth: int,
                 Ks, given_cameras: bool):
    """Each input's known-depth file (None where it has none), or None when no depth is given; and the K
    for it (an RGB-D folder's ``camera-intrinsics.txt`` when no other is given, its depth used or not).
    Every file is read and checked now, before any work; said in one line."""
    import cv2

    from heads.recon.known_depth import check_known_depth

    if Ks is None and not given_cameras and folder is None and n_depth:
        Ks = _folder_intrinsics(items)
    if folder is None and not rgbd:
        if n_depth:
            typer.echo(f"pixio: an RGB-D sequence: its {len(items)} colour frames are the views, its {n_depth} "
                       "depth images are left out (--no-depth-input)", err=True)
        return None, Ks
    if folder is not None and not folder.is_dir():
        raise UsageError(f"--known-depth {folder}: not a folder (of <stem>.npy or 16-bit <stem>.png files)")
    if any(it.frame is not None for it in items):
        raise UsageError("known depth is for image files, not video frames")
    what = f"--known-depth {folder}" if folder is not None else f"the RGB-D sequence's {n_depth} depth images"
    if Ks is None and not given_cameras:
        if folder is not None:
            near = _folder_intrinsics(items) is not None
            raise UsageError(f"{what}: known depth needs the camera's K (--intrinsics or --known-cameras"
                             + (", e.g. --intrinsics with the images' camera-intrinsics.txt)" if near else ")"))
        typer.echo(f"pixio: an RGB-D sequence: its {len(items)} colour frames are the views, its {n_depth} "
                   "depth images are left out: known depth needs the camera's K (--intrinsics)", err=True)
        return None, Ks  # the folder as it is still runs: on the colour frames alone, said
    sizes = []
    for it in items:  # the images' own sizes, which each depth map must have; an unreadable image fails later
        image = cv2.imread(it.path, cv2.IMREAD_COLOR) if it.error is None else None  # EXIF-turned, as decoded
        sizes.append(image.shape[:2] if image is not None else None)
    files, empty = check_known_depth([Path(it.path) for it in items], sizes, folder, per_metre,
                                     required=folder is not None)
    without = [Path(it.path).name for it, f, hw in zip(items, files, sizes) if f is None and hw is not None]
    typer.echo(f"pixio: known depth for {sum(f is not None for f in files)} of {len(items)} views from {what}"
               + (" (the colour frames are the views)" if folder is None else "")
               + (f"; none for {', '.join(without[:3])}{' ...' if len(without) > 3 else ''}" if without else "")
               + (f" ({len(empty)} file{'s' if len(empty) > 1 else ''} with no valid pixel: {empty[0].name}"
                  f"{' ...' if len(empty) > 1 else ''})" if empty else ""), err=True)
    return files, Ks


def _recorded_cameras(items: list, Ks):
    """An RGB-D sequence's recorded poses (heads.recon.known_poses) as known cameras, when every colour frame
    has one and ``Ks`` (one K per item, the images' own pixels) is known; said in one line either way."""
    import numpy as np

    from heads.recon.known_poses import PoseError, recorded_pose, rigid
    from heads.recon.views import image_names
    from heads.recon.known_cameras import GivenCameras

    frames = [it for it in items if it.error is None]
    try:
        poses = [recorded_pose(Path(it.path)) for it in frames]
        missing = [Path(it.path).name for it, T in zip(frames, poses) if T is None]
        if missing or not frames:
            if len(missing) < len(frames):
                typer.echo(f"pixio: the RGB-D sequence's recorded poses are not used: {len(missing)} of "
                           f"{len(frames)} frames have none (first: {missing[0]}); the cameras come from matching",
                           err=True)
            return None
        checked = [rigid(T, str(Path(it.path).name)) for it, T in zip(frames, poses)]
    except PoseError as e:
        typer.echo(f"pixio: the RGB-D sequence's recorded poses are not used ({e}); the cameras come from "
                   "matching", err=True)
        return None
    if Ks is None:
        typer.echo("pixio: the RGB-D sequence's recorded poses are not used: its camera's K is not known "
                   "(camera-intrinsics.txt or --intrinsics); the cameras come from matching", err=True)
        return None
    _, names = image_names(frames)
    K_of = {id(it): K for it, K in zip(items, Ks)}
    cameras = {n: (np.asarray(K_of[id(it)], np.float64), T, None) for n, it, (T, _) in zip(names, frames, checked)}
    worst = max(off for _, off in checked)
    typer.echo(f"pixio: the RGB-D sequence's recorded poses are the cameras ({len(frames)} frames, metres); "
               "--no-known-poses to find them by matching instead", err=True)
    return GivenCameras(cameras, 1.0, source="the recorded poses", rotation_off=worst)


def _folder_intrinsics(items: list):
    """One K per input from the intrinsics file of the folder all inputs lie in: 7-Scenes'
    ``camera-intrinsics.txt`` beside the frames, or the ``generic-rgbd`` layout's ``K.txt`` beside ``images/``;
    None when there is none."""
    from heads.recon.known_cameras import read_intrinsics

    from ..inputs import sibling

    folders = {Path(it.path).parent for it in items}
    if len(folders) != 1:
        return None
    folder = next(iter(folders))
    for where, name in ((folder, "camera-intrinsics.txt"), (folder.parent if folder.name == "images" else None, "K.txt")):
        found = sibling(where, name) if where is not None else None
        if found is not None and found.is_file():
            return read_intrinsics(found, len(items))
    return None


def _check(output: Path, save_predictions: Optional[Path], preview: Optional[Path], overlap: int, chunk: int,
           glb: bool, mesh: bool, every: int, fps: Optional[float], cameras: Optional[Cameras] = None) -> Path:
    """Option combinations that cannot work, and outputs that cannot be written, before any work; the
    scene's path."""
    from ..writers import check_writable  # numpy: not at start-up

    if str(output) == "-":  # as for inputs, "-" is the standard stream, which holds no scene
        raise UsageError("-o -: a scene is files (scene.ply, cameras.json, ...): give a .ply or a folder (--json "
                         "writes the run's summary on standard output)")
    if output.suffix and output.suffix.lower() != ".ply":
        raise UsageError(f"-o {output}: the scene is written as .ply (or give a folder)")
    if save_predictions is not None and save_predictions.suffix.lower() != ".npz":
        raise UsageError(f"--save-predictions {save_predictions}: predictions are written as .npz")
    if preview is not None and preview.suffix.lower() != ".png":
        raise UsageError(f"--preview {preview}: the preview is a .png")
    if overlap >= chunk:
        raise UsageError(f"--overlap {overlap} must be smaller than --chunk {chunk}")
    if glb and not mesh:
        raise UsageError("--glb writes the mesh (Open3D cannot write a point cloud as GLB): add --mesh")
    if fps is not None and every != 1:
        raise UsageError("--fps and --every both choose video frames: give one")
    if output.suffix and output.is_dir():
        raise UsageError(f"-o {output} is a folder: name the scene's .ply file, or give the folder without the "
                         "extension")
    scene = output if output.suffix.lower() == ".ply" else output / "scene.ply"
    files = [scene] + ([scene.parent / "cameras.json"] if cameras == Cameras.json else [])
    folders = [scene.parent / "sparse", scene.parent / "sparse" / "0"] if cameras in (Cameras.colmap,
                                                                                      Cameras.colmap_text) else []
    for path in files + folders:
        if path.exists() and path.is_dir() != (path in folders):
            raise UsageError(f"{path} is in the way of an output ({'a folder' if path.is_dir() else 'a file'}): "
                             "move it or choose another -o")
    for option, path in (("-o", output), ("--save-predictions", save_predictions), ("--preview", preview)):
        if path is not None:
            check_writable(scene.parent if path is output else path.parent, f"{option} {path}")
    return scene


def _every(inputs: list[str], every: int, fps: Optional[float]) -> int:
    """--fps as a frame step, from the first video's frame rate."""
    if fps is None:
        return every
    from ..images import is_video
    from ..video import frame_rate

    for spec in inputs:
        if is_video(spec):
            rate = frame_rate(spec)
            if rate > 0:
                return max(1, round(rate / fps))
    raise UsageError("--fps needs a video with a known frame rate among the inputs (use --every for frames)")


def register(app: typer.Typer) -> None:
    app.command(help=recon3d.__doc__, short_help='One 3D scene (PLY, mesh, cameras, COLMAP) from frames or a video.')(recon3d)

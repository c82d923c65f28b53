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
from .common import Stages, report_failures, single_process



class Cameras(str, Enum):
    json = "json"
    colmap = "colmap"
    colmap_text = "colmap-text"


class Matching(str, Enum):
    auto = "auto"
    exhaustive = "exhaustive"
    sequential = "sequential"


def recon3d(
    inputs: opt.Inputs,
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The scene's .ply file, or a folder to hold scene.ply.")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="Point-map model: pointmap-tiny (bundled, small, trained on one 7-Scenes kitchen), "
                              "pixio-vith16-mapanything (MapAnything on Pixio-H, metric) or a checkpoint file.")
    ] = DEFAULT_POINTMAP,
    intrinsics: Annotated[Optional[Path], typer.Option(
        help="Known camera: a 3x3 K (text, .npy or .json) for every image, or a JSON list of one K per image, "
             "in the original images' pixels.", show_default=False)] = None,
    known_depth: Annotated[Optional[Path], typer.Option(
        "--known-depth", help="A folder of known depth per image, by file name: <stem>.npy (z-depth in metres) or "
                              "16-bit <stem>.png (millimetres), at the image's own size (.npy first when both "
                              "exist); 0 = unknown, and 65535 in a PNG. Needs --intrinsics or --known-cameras. "
                              "It replaces the network's depth where known.",
        show_default=False)] = None,
    depth_scale: Annotated[Optional[float], typer.Option(
        "--depth-scale", help="Stored depth values per metre, for --known-depth and RGB-D folders alike (default: "
                              "1000 for PNG, 5000 for TUM's, 1 for .npy).", min=1e-9, show_default=False)] = None,
    depth_input: Annotated[bool, typer.Option(
        "--depth-input/--no-depth-input", help="An RGB-D folder's depth images as known depth (with the folder's "
                                               "camera-intrinsics.txt as K when no other is given), or left out.")
    ] = True,
    depth_cameras: Annotated[bool, typer.Option(
        "--depth-cameras/--no-depth-cameras", help="With known depth, move the matched cameras until the views' "
                                                   "depths agree (ICP between views that overlap, one pose graph); "
                                                   "given cameras are never moved.")] = True,
    known_cameras: Annotated[Optional[Path], typer.Option(
        "--known-cameras", help="Known cameras: a cameras.json of pixio's (in metres) or a COLMAP model folder "
                                "(with its points, which set the scale): no matching; the network gives each "
                                "view's depth on them.", show_default=False)] = None,
    sfm: Annotated[bool, typer.Option(
        "--sfm/--no-sfm", help="Cameras from feature matching and bundle adjustment (COLMAP, through pycolmap), "
                               "the network's depth fitted to them; --no-sfm: the network's cameras alone (fast, "
                               "for a model whose cameras hold on your frames).")] = True,
    matching: Annotated[Matching, typer.Option(
        help="Which frame pairs are matched: exhaustive (every pair), sequential (each frame with the next "
             "few, for video and ordered frames), or auto (exhaustive up to 40 frames, else sequential; "
             "sequential for video).")] = Matching.auto,
    chunk: Annotated[int, typer.Option(
        help="Views per model pass; longer sequences go in overlapping chunks aligned to each other.", min=2)] = 32,
    overlap: Annotated[int, typer.Option(help="Views each chunk shares with the previous one.", min=1)] = 4,
    fusion: Annotated[bool, typer.Option(
        "--fusion/--no-fusion", help="Check each pixel's depth against the other views that see it, refine it by "
                                     "matching the images, average the depths that agree and keep each surface "
                                     "once; --no-fusion: every view's pixels as placed (views stack in layers).")
    ] = True,
    use_mask: Annotated[bool, typer.Option(
        "--mask/--no-mask", help="Keep only the pixels the model's mask marks as unambiguous.")] = True,
    conf_percentile: Annotated[Optional[float], typer.Option(
        help="Drop the least confident N % of pixels (over all views).", min=0, max=100, show_default=False)] = None,
    conf_min: Annotated[Optional[float], typer.Option(
        help="Drop pixels with confidence below this (the model's confidence is >= 1).", show_default=False)] = None,
    edge_rtol: Annotated[float, typer.Option(
        help="Drop pixels on depth edges: a neighbour's depth differs by more than this fraction (0: keep).",
        min=0)] = 0.03,
    outliers: Annotated[bool, typer.Option(
        "--outliers", help="Statistical outlier removal (20 neighbours, 2 standard deviations).")] = False,
    voxel: Annotated[Optional[float], typer.Option(
        help="Keep one point per voxel of this side (metres for a metric model).", min=0, show_default=False)] = None,
    max_points: Annotated[Optional[int], typer.Option(
        help="Keep a random subset of at most this many points.", min=1, show_default=False)] = None,
    normals: Annotated[bool, typer.Option("--normals", help="Estimate normals (oriented to the cameras).")] = False,
    mesh: Annotated[bool, typer.Option("--mesh", help="Also <name>_mesh.ply by TSDF fusion of the depths.")] = False,
    mesh_voxel: Annotated[Optional[float], typer.Option(
        help="TSDF voxel side (default: 1.5 pixels' footprint at the scene's median depth).", min=0,
        show_default=False)] = None,
    glb: Annotated[bool, typer.Option("--glb", help="Also <name>.glb of the mesh (needs --mesh).")] = False,
    cameras: Annotated[Optional[Cameras], typer.Option(
        help="Also the cameras: json (cameras.json), colmap (a COLMAP model in sparse/0/, binary, with the "
             "matched points and their tracks) or colmap-text (the same as text).",
        show_default=False)] = None,
    preview: Annotated[Optional[Path], typer.Option(
        help="Also a .png picture of the cleaned cloud and the cameras.", show_default=False)] = None,
    save_predictions: Annotated[Optional[Path], typer.Option(
        "--save-predictions", help="Also the raw predictions as .npz (points, depths, confidences, masks, poses, "
                                   "intrinsics, scale, image names), before any cleaning; an interrupted chunked "
                                   "run resumes from the chunks it finished.", show_default=False)] = None,
    resize: Annotated[Optional[str], typer.Option(
        help="Processing size: short side N, WxH or native (default: the model's; short side "
             f"{POINTMAP_SHORT_SIDE} for MapAnything's).", show_default=False)] = None,
    every: opt.Every = 1,
    fps: Annotated[Optional[float], typer.Option(
        help="For videos: frames per second to take (instead of --every).", min=0.001, show_default=False)] = None,
    max_frames: Annotated[Optional[int], typer.Option(
        help="At most this many frames, evenly spread over the input.", min=1, show_default=False)] = None,
    json_summary: Annotated[bool, typer.Option("--json", help="A JSON summary on stdout.")] = False,
    view: Annotated[bool, typer.Option(
        "--view", help="Then look at the scene in the browser (pixio view); writes cameras.json for it when "
                       "--cameras is not given.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random choices (RANSAC, --max-points).", min=0,
                                      max=2 ** 31 - 1)] = 0,
    device: opt.Device = "auto",
    precision: opt.Precision = None,
    workers: opt.Workers = None,
    quiet: opt.Quiet = False,
) -> None:
    """Reconstruct one scene from its views: cameras from matching and bundle adjustment, each view's
    depth from the network fitted to them, cleaned and fused into one coloured point cloud in the first
    camera's frame (x right, y down, z forward; metres with a metric model)."""
    single_process("recon3d")
    if view:
        from .view import require_viewer

        require_viewer()  # before the run, not after it
        cameras = cameras or Cameras.json  # the viewer shows the cameras it finds beside the scene
    scene_path = _check(output, save_predictions, preview, overlap, chunk, glb, mesh, every, fps, cameras)
    if known_cameras is not None and intrinsics is not None:
        raise UsageError("--known-cameras holds the intrinsics too: give one of --known-cameras and --intrinsics")
    if known_cameras is not None and not known_cameras.exists():
        raise UsageError(f"--known-cameras {known_cameras}: no such file or folder")
    if known_cameras is not None and cameras is not None:
        _check_given_apart(known_cameras, scene_path, cameras)
    started = time.perf_counter()

    import json

    import numpy as np
    import torch

    from heads import geometry as G
    from heads.pointmap.model import load_pointmap, prepare_pointmap
    from heads.pointmap.predictions import predict
    from heads.recon.scene import (Cleaning, clean_points, fuse, on_cameras, pixel_mask, predict_in_chunks,
                                   read_intrinsics)
    from heads.recon.export import preview_picture

    from ..engine import Engine, Summary, autocast
    from ..errors import PixioError
    from ..images import ResizePolicy
    from ..inputs import collect, rgbd_depth_images
    from ..outputs import check_apart_from_inputs
    from ..resume import item_identity, model_identity
    from ..writers import write_image

    # input, engine and model (whose training scale is the default processing size)
    own = output if not output.suffix else None  # a folder of outputs: walks leave it out
    items = collect(inputs, every=_every(inputs, every, fps), outputs=own)
    depth_images = set(rgbd_depth_images(items))
    if depth_images:  # an RGB-D sequence: its colour frames are the views
        items = [it for i, it in enumerate(items) if i not in depth_images]
    video = any(it.frame is not None for it in items)
    frames_folder = scene_path.parent / "images" if video and cameras is not None else None  # for COLMAP to find
    check_apart_from_inputs(items, inputs, [
        ("-o", scene_path), ("--preview", preview), ("--save-predictions", save_predictions),
        ("--cameras (a video's frames)", frames_folder),
        ("--mesh", scene_path.with_name(scene_path.stem + "_mesh.ply") if mesh else None),
        ("--glb", scene_path.with_suffix(".glb") if glb else None)], skip=own)
    if cameras == Cameras.colmap_text:
        spaced = [n for n in _image_names([it for it in items if it.error is None])[1] if any(c.isspace() for c in n)]
        if spaced:
            raise UsageError(f"--cameras colmap-text: COLMAP's text format ends an image's line with its name, and "
                             f"'{spaced[0]}' holds a space, which would read back as another name: use --cameras "
                             "colmap (binary), or names without spaces")
    Ks = read_intrinsics(intrinsics, len(items)) if intrinsics is not None else None  # one per input, in order
    depth_files, Ks = _known_depth(items, known_depth, depth_scale, depth_input and bool(depth_images),
                                   len(depth_images), Ks, known_cameras is not None)
    good = [i for i, it in enumerate(items) if it.error is None]
    if max_frames and len(good) > max_frames:  # frames, not failed inputs, are what is counted
        picks = {good[int(i)] for i in np.linspace(0, len(good) - 1, max_frames).round()}
        kept = [i for i in range(len(items)) if i in picks or items[i].error is not None]
        items = [items[i] for i in kept]
        Ks = [Ks[i] for i in kept] if Ks is not None else None
        depth_files = [depth_files[i] for i in kept] if depth_files is not None else None
    engine = Engine(device, precision, 8, workers, progress=False if quiet else None)
    job = _start_sfm(items, Ks, matching, seed) if sfm and known_cameras is None else None  # runs beside the network
    stages = Stages(["loading the model and decoding", "predicting", "cameras", "fusing the views", "writing"],
                    quiet, "recon3d")
    try:
        stages.next()
        net = prepare_pointmap(engine, load_pointmap(model))
        policy = ResizePolicy.parse(resize) if resize else ResizePolicy(short=net.infer_short)
        summary = Summary()
        samples = sorted((s for b in engine.batches(items, policy, summary) for s in b.samples),
                         key=lambda s: s.index)
        if not samples:
            report_failures(summary)
            raise typer.Exit(1)
        frames = _one_size([s.image for s in samples], [items[s.index].label for s in samples])
        names = [items[s.index].label for s in samples]
        sizes = [s.orig_hw for s in samples]
        known = [Ks[s.index] for s in samples] if Ks is not None else None
        view_items = [items[s.index] for s in samples]
        root, image_names = _image_names(view_items)
        given = None
        if known_cameras is not None:  # the user's cameras; their K goes to the network as --intrinsics would
            from heads.recon.sfm import read_known_cameras

            given = read_known_cameras(known_cameras, image_names, sizes)
            known = list(given.K)
        loaded = time.perf_counter()

        # the views, in chunks aligned to each other
        stages.next(f"{len(frames)} views")

        # a model with MapAnything's encoders of them takes known depth and metric cameras as inputs
        takes = net.cfg.geometric_inputs
        model_depth = _depth_at_size(depth_files, samples, sizes, depth_scale, frames[0].shape[:2]) \
            if takes and depth_files is not None else None
        model_poses = given.cam2world if takes and given is not None and given.scale is not None else None

        def run(views: list[int]):
            with torch.inference_mode(), autocast(engine.device, engine.dtype):
                return predict(net, engine.to_pixels([frames[i] for i in views]), [names[i] for i in views],
                               [sizes[i] for i in views], [known[i] for i in views] if known else None,
                               [model_depth[i] for i in views] if model_depth is not None else None,
                               model_poses[views] if model_poses is not None else None)

        parts = _Parts(save_predictions, {  # what decides a chunk's numbers: an edited input or model redoes it
            "model": model_identity(model), "size": list(frames[0].shape[:2]), "chunk": chunk, "overlap": overlap,
            "images": names, "inputs": [item_identity(items[s.index]) for s in samples],
            "intrinsics": [k.tolist() for k in known] if known else None, "precision": str(engine.dtype),
            "known_depth": [str(f) for f in depth_files] if model_depth is not None else None,
            "known_poses": model_poses.tolist() if model_poses is not None else None})
        try:
            pred, chunks = predict_in_chunks(run, len(frames), chunk, overlap, parts.done(), parts.save, seed)
        except torch.cuda.OutOfMemoryError:
            raise PixioError(f"out of GPU memory on chunks of {min(chunk, len(frames))} views of "
                             f"{frames[0].shape[1]}x{frames[0].shape[0]}: use a smaller --chunk or --resize"
                             ) from None
        except RuntimeError as e:
            if "alloc" not in str(e):
                raise
            raise PixioError(f"out of memory on chunks of {min(chunk, len(frames))} views: use a smaller --chunk "
                             "or --resize") from None
        inferred = time.perf_counter()

        # the cameras: from matching where it registers a frame, else the network's
        stages.next("from matching" if job is not None else "given" if given is not None else "the network's")
        sfm_cameras = job.result([s.index for s in samples], sizes, stages.detail) if job is not None else given
        if sfm_cameras is not None and sfm_cameras.focal_held:
            stages.say(f"pixio: note: {sfm_cameras.focal_held}")
        held, depth_report = None, None
        if model_poses is not None:  # the model took the cameras: its outputs are in their frame already
            sfm_cameras = None
        if depth_files is not None and model_depth is None:  # measured depth in place of the network's
            from heads.recon.known_depth import put_known_depth, read_depth

            files = [depth_files[s.index] for s in samples]
            pred, held, depth_report = put_known_depth(pred, [
                read_depth(f, hw, depth_scale) if f is not None else None for f, hw in zip(files, sizes)])
        if model_depth is not None:
            depth_report = {"views": sum(d is not None for d in model_depth), "given_to_the_model": True}
        if model_poses is not None:
            placed = {"cameras": "given to the model", "registered": len(frames), "unregistered": []}
        else:
            pred, placed = on_cameras(pred, sfm_cameras, seed,
                                      given_depth=held.any((1, 2)) if held is not None else None)
        if held is not None and depth_cameras and placed["cameras"] in ("sfm", "network") and len(frames) > 1:
            from heads.recon.depth_poses import register_views

            pred, placed["depth_registration"] = register_views(pred, held)
        solved = time.perf_counter()
    except BaseException:
        stages.close()
        raise
    finally:
        if job is not None:
            job.cancel()  # nothing once it has finished; stops COLMAP on an error or Ctrl-C

    # cleaning and outputs
    stages.next()
    if save_predictions is not None:
        pred.save(save_predictions)
        parts.clear()
    colours = np.stack(frames)
    cleaning = Cleaning(use_mask, conf_percentile, conf_min, edge_rtol or None, outliers, voxel, max_points, seed)
    keep, counts = pixel_mask(pred, cleaning)
    surface, fused = keep, None  # what the mesh averages, and what fusion said
    if fusion:
        pred, surface, keep, fused = fuse(pred, colours, keep, fixed=held)
        counts.update(after_views=fused["after_views"], after_once=fused["after_once"])
    # photos with nothing in common: matching registered none and no view sees what another sees
    apart = (job is not None and len(frames) > 1 and placed["registered"] == 0 and fused is not None
             and len(fused["unchecked"]) == len(frames))
    if apart:
        typer.echo(f"pixio: warning: the {len(frames)} photos do not form one scene: matching found nothing in common "
                   "between them and no view sees what another sees; each keeps the network's camera and depth, "
                   "unchecked", err=True)
    else:
        if job is not None:
            _warn_unplaced(placed, sfm_cameras, len(frames))
        if fused is not None:
            _warn_unchecked(fused["unchecked"], len(frames))
    fusing_done = time.perf_counter()
    points, point_colours, _, counts = clean_points(pred, colours, cleaning, keep, counts)
    if not len(points):
        raise PixioError(f"no points to write: cleaning removed every pixel of {len(frames)} views ({counts}); "
                         "loosen it (--no-mask, --edge-rtol 0, no --conf-*)")
    unit = "metres" if net.metric else "unknown (the model is not metric)"
    stages.next(str(scene_path))
    G.write_ply(scene_path, points, point_colours, pred.cam2world[0, :3, 3] if normals else None, unit)
    written = [str(scene_path)]
    meshed = time.perf_counter()
    if mesh:
        written += _write_mesh(pred, colours, scene_path, mesh_voxel, glb, surface)
    meshed = time.perf_counter() - meshed
    cam_sizes = np.array(pred.original_hw)
    flipped = [name for name, K in zip(pred.images, pred.K_original) if not (K[0, 0] > 0 and K[1, 1] > 0)]
    if cameras == Cameras.json and flipped:  # written as predicted, but said: no pinhole camera has them
        typer.echo(f"pixio: warning: the predicted camera of {len(flipped)} view(s) (first: {flipped[0]}) has a "
                   "non-positive focal length, as for frames far from the model's training data; cameras.json "
                   "holds it as predicted", err=True)
    unusable = cameras in (Cameras.colmap, Cameras.colmap_text) and (flipped or apart)
    if frames_folder is not None and not unusable:  # a video's frames, where the cameras can name them
        image_names = _write_views(view_items, frames_folder)
        root = str(frames_folder.resolve())
        written.append(str(frames_folder))
    if unusable:  # a model no tool can use is not written: said as an error, and the run exits 1
        why = (f"the predicted camera of {len(flipped)} view(s) (first: {flipped[0]}) has a non-positive focal "
               "length, which COLMAP cannot hold" if flipped else "the photos do not form one scene")
        typer.echo(f"pixio: error: no COLMAP model written: {why}", err=True)
    if cameras == Cameras.json:
        G.write_cameras_json(scene_path.parent / "cameras.json", image_names, cam_sizes, pred.K_original,
                             pred.cam2world, unit, root)
        written.append(str(scene_path.parent / "cameras.json"))
    elif cameras in (Cameras.colmap, Cameras.colmap_text) and not unusable:
        from heads.recon.sfm import write_colmap

        to_world = ((placed["sfm_scale"], np.array(placed["to_output"]))
                    if placed["cameras"] in ("sfm", "given") and sfm_cameras.reconstruction is not None else None)
        write_colmap(scene_path.parent / "sparse" / "0", image_names, cam_sizes, pred.K_original, pred.cam2world,
                     sfm_cameras if to_world else None, to_world, text=cameras == Cameras.colmap_text,
                     unit="metres" if net.metric else None)
        written.append(str(scene_path.parent / "sparse" / "0"))
    if preview is not None:
        write_image(preview, preview_picture(points, point_colours, pred, unit="m" if net.metric else "units"))
        written.append(str(preview))
    _warn_stale(scene_path, written, known_cameras)
    record = {"scene": str(scene_path), "outputs": written, "frames": len(frames), "failed": summary.failed,
              "image_root": root,
              "points": int(len(points)), "cleaning": counts, "scale": pred.scale, "unit": unit,
              "size": [int(frames[0].shape[1]), int(frames[0].shape[0])], "chunks": chunks,
              "cameras": {k: v for k, v in placed.items() if k != "to_output"},
              "fusion": {k: v for k, v in fused.items() if k != "unchecked"} | {"unchecked": len(fused["unchecked"])}
              if fused else None,
              "frame": "the first view's camera: x right, y down, z forward",
              "predictions": str(save_predictions) if save_predictions else None, "known_depth": depth_report,
              "seconds": {"load_and_decode": round(loaded - started, 2), "inference": round(inferred - loaded, 2),
                          "cameras": round(solved - inferred, 2), "sfm_thread": round(job.seconds, 2) if job else None,
                          "fusion": round(fusing_done - solved, 2), "mesh": round(meshed, 2) if mesh else None,
                          "total": round(time.perf_counter() - started, 2)}}
    stages.close()
    record["peak_memory_gib"] = stages.peak_gib  # by the end of each stage: where memory grows
    if json_summary:
        typer.echo(json.dumps(record))
    report_failures(summary)
    typer.echo(f"reconstructed {len(frames)} views ({len(chunks)} chunk{'s' if len(chunks) > 1 else ''}) into "
               f"{scene_path}: {len(points)} points, unit {unit}, failed {summary.failed}", err=True)
    if summary.failed or unusable:
        raise typer.Exit(1)
    if view:
        from .view import show

        show(scene_path)


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


def _warn_unchecked(unchecked: list[str], n_views: int) -> None:
    """One warning line for views whose depth no other view could check (one view, unrelated photos,
    cameras too far off): their pixels are kept as the network placed them."""
    if not unchecked:
        return
    if n_views == 1:
        typer.echo("pixio: warning: one view: its depth could not be checked against another view", err=True)
        return
    more = f" and {len(unchecked) - 3} more" if len(unchecked) > 3 else ""
    typer.echo(f"pixio: warning: the depth of {len(unchecked)} of {n_views} views ({', '.join(unchecked[:3])}{more}) "
               "could not be checked against other views (none sees the same surfaces from these cameras): "
               "their pixels are kept unchecked", err=True)


def _image_names(items: list) -> tuple[str, list[str]]:
    """The folder the frames lie in and each frame's name relative to it, as COLMAP and the cameras
    file name images (COLMAP, given that folder, finds every one); a video's frames are <video>#frame<N>."""
    import os

    paths = [os.path.abspath(it.path) for it in items]
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    names = [os.path.relpath(p, root) + (f"#frame{it.frame}" if it.frame is not None else "")
             for p, it in zip(paths, items)]
    return root, names


def _write_views(items: list, folder: Path) -> list[str]:
    """The views' images at their own size in ``folder`` (a video's frames as ``<video>_<frame>.jpg``, an image
    file copied as it is), atomically, for the cameras to name; returns their names in ``folder``."""
    import os

    from ..engine import ImageStream
    from ..images import ResizePolicy
    from ..writers import write_bytes, write_image

    folder.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for it in items:
        base = f"{Path(it.path).stem}_{it.frame:06d}.jpg" if it.frame is not None else os.path.basename(it.path)
        name, k = base, 1
        while name in names:  # two inputs of one name in different folders
            name, k = f"{Path(base).stem}_{k}{Path(base).suffix}", k + 1
        names.append(name)
    for sample in ImageStream(items, ResizePolicy(short=None, multiple=1)):
        it = items[sample.index]
        if it.frame is not None:
            write_image(folder / names[sample.index], sample.image)
        else:
            write_bytes(folder / names[sample.index], Path(it.path).read_bytes())
    return names


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
    files = check_known_depth([Path(it.path) for it in items], sizes, folder, per_metre, required=folder is not None)
    without = [Path(it.path).name for it, f, hw in zip(items, files, sizes) if f is None and hw is not None]
    typer.echo(f"pixio: known depth for {sum(f is not None for f in files)} of {len(items)} views from {what}"
               + (" (the colour frames are the views)" if folder is None else "")
               + (f"; none for {', '.join(without[:3])}{' ...' if len(without) > 3 else ''}" if without else ""),
               err=True)
    return files, Ks


def _folder_intrinsics(items: list):
    """One K per input from the ``camera-intrinsics.txt`` of the folder all inputs lie in, or None."""
    from heads.recon.scene import read_intrinsics

    found = {Path(it.path).parent / "camera-intrinsics.txt" for it in items}
    if len(found) == 1 and next(iter(found)).is_file():
        return read_intrinsics(next(iter(found)), len(items))
    return None


def _depth_at_size(files: list, samples: list, sizes: list, per_metre, hw: tuple[int, int]) -> list:
    """Each view's known depth (None where it has none) at the processing size ``hw`` (nearest: no mixing
    across edges), in metres, for a model that takes depth as an input."""
    import cv2

    from heads.recon.known_depth import read_depth

    out = []
    for s, size in zip(samples, sizes):
        f = files[s.index]
        out.append(None if f is None else cv2.resize(read_depth(f, size, per_metre), (hw[1], hw[0]),
                                                     interpolation=cv2.INTER_NEAREST))
    return out


def _start_sfm(items: list, Ks, matching: "Matching", seed: int):
    from heads.recon.sfm import SfmJob, SfmOptions

    return SfmJob(items, SfmOptions(matching=matching.value, known_K=Ks, seed=seed),
                  video=any(it.frame is not None for it in items))


def _warn_unplaced(placed: dict, cams, n_views: int) -> None:
    """One warning line when matching left frames on the network's cameras (all of them, or some)."""
    unplaced = placed["unregistered"]
    if not unplaced:
        return
    if n_views == 1:
        typer.echo("pixio: warning: one frame has nothing to match: its camera is the network's", err=True)
        return
    if placed["cameras"] == "network":
        if "reason" in placed:
            what = f"{placed['registered']} of the {n_views} frames, but {placed['reason']}"
        else:
            why = f" ({cams.error})" if cams is not None and cams.error else ""
            what = f"{'none' if not placed['registered'] else 'too few'} of the {n_views} frames{why}"
        typer.echo(f"pixio: warning: matching registered {what}: the cameras are the network's, as with --no-sfm",
                   err=True)
        return
    more = f" and {len(unplaced) - 3} more" if len(unplaced) > 3 else ""
    typer.echo(f"pixio: warning: matching did not register {len(unplaced)} of {n_views} frames "
               f"({', '.join(unplaced[:3])}{more}): they keep the network's cameras, aligned to the rest", err=True)


def _check(output: Path, save_predictions: Optional[Path], preview: Optional[Path], overlap: int, chunk: int,
           glb: bool, mesh: bool, every: int, fps: Optional[float], cameras: Optional[Cameras] = None) -> Path:
    """Option combinations that cannot work, and outputs that cannot be written, before any work; the
    scene's path."""
    from ..writers import check_writable  # numpy: not at start-up

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
    import cv2

    from ..images import is_video

    for spec in inputs:
        if is_video(spec):
            cap = cv2.VideoCapture(spec)
            rate = cap.get(cv2.CAP_PROP_FPS) or 0
            cap.release()
            if rate > 0:
                return max(1, round(rate / fps))
    raise UsageError("--fps needs a video with a known frame rate among the inputs (use --every for frames)")


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


def _write_mesh(pred, colours, scene_path: Path, voxel: Optional[float], glb: bool, keep=None) -> list[str]:
    """``<scene>_mesh.ply`` (and ``<scene>.glb``) by TSDF fusion; returns the files written."""
    from heads.geometry import write_mesh
    from heads.recon.export import tsdf_mesh

    from ..errors import PixioError

    try:
        tri, _ = tsdf_mesh(pred, colours, voxel, keep)
    except RuntimeError as e:  # Open3D's own checks, e.g. a voxel too small for the memory
        raise PixioError(f"TSDF fusion failed: {str(e).strip().splitlines()[-1][:200]}") from None
    if len(tri.triangles) == 0:
        raise PixioError("TSDF fusion made no surface (too few or inconsistent depths); leave out --mesh")
    tri.compute_vertex_normals()
    targets = [scene_path.with_name(scene_path.stem + "_mesh.ply")] + ([scene_path.with_suffix(".glb")] if glb else [])
    for target in targets:
        write_mesh(target, tri)
    return [str(t) for t in targets]


class _Parts:
    """Chunk predictions kept beside --save-predictions while a chunked run goes, so a rerun with the same
    settings and frames resumes from the chunks it finished."""

    def __init__(self, target: Optional[Path], settings: dict) -> None:
        import json

        self.folder = None if target is None else target.with_name(target.name + ".parts")
        self.settings = json.dumps(settings, sort_keys=True)

    def done(self) -> dict:
        from heads.pointmap.predictions import Predictions

        if self.folder is None or not (self.folder / "settings.json").exists():
            return {}
        if (self.folder / "settings.json").read_text() != self.settings:
            return {}  # other settings or frames: start afresh
        return {int(p.stem.split("-")[1]): Predictions.load(p) for p in sorted(self.folder.glob("chunk-*.npz"))}

    def save(self, k: int, pred) -> None:
        if self.folder is None:
            return
        from ..writers import write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "settings.json").exists() or (self.folder / "settings.json").read_text() != self.settings:
            for old in self.folder.glob("chunk-*.npz"):
                old.unlink()
            write_text(self.folder / "settings.json", self.settings)
        pred.save(self.folder / f"chunk-{k:04d}.npz")

    def clear(self) -> None:
        import shutil

        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)


def register(app: typer.Typer) -> None:
    app.command(help=recon3d.__doc__, short_help='One 3D scene (PLY, mesh, cameras, COLMAP) from frames or a video.')(recon3d)

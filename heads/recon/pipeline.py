"""The reconstruction `pixio recon3d` runs, top to bottom: the views decoded, the model's predictions in chunks,
the cameras (matching, given, or the network's), known depth put in place (:func:`reconstruct`); then the
scene cleaned, fused and written (:func:`write_scene`). The command parses, checks and reports; this module
makes the scene. Messages for the user go through ``say`` (one line each); errors are
:mod:`pixio_cli.errors` exceptions."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pixio_cli.engine import autocast
from pixio_cli.errors import PixioError
from pixio_cli.images import ResizePolicy
from pixio_cli.resume import item_identity, model_identity

from heads.pointmap.checkpoint import load_pointmap, prepare_pointmap
from heads.pointmap.predictions import Predictions, predict
from heads.recon.chunks import KeptChunks, predict_in_chunks
from heads.recon.depth_poses import register_views
from heads.recon.known_depth import put_known_depth, read_depth
from heads.recon.placement import on_cameras
from heads.recon.sfm import SfmOptions
from heads.recon.sfm_job import SfmJob
from heads.recon.views import SceneInputs, Views, depth_at_size
from heads.recon.workspace import active


LOOSE_CAMERAS_PX = 1.25  # given cameras whose triangulated matches reproject farther than this are said to fit loosely


@dataclass
class SceneOptions:
    """How the scene is made."""

    model: str
    resize: Optional[str] = None  # processing size (default: the model's)
    chunk: int = 32  # views per model pass
    overlap: int = 4  # views each chunk shares with the previous one
    sfm: Optional[SfmOptions] = field(default_factory=SfmOptions)  # cameras from matching, so; None: the network's
    depth_cameras: bool = True  # with known depth, move the matched cameras until the depths agree
    fusion: bool = True
    prior: str = "network"  # the depth matching starts from and fills in with: network, or flat (an ablation)
    hold_cameras: bool = False  # given cameras used as they are, even where they fit the images loosely
    seed: int = 0
    save_predictions: Optional[Path] = None


@dataclass
class Scene:
    """A reconstructed scene before cleaning: the predictions on their cameras and what made them."""

    pred: Predictions
    frames: np.ndarray  # (V, H, W, 3) uint8 views at the processing size
    view_items: list  # the items the views came from, in order
    root: str  # the folder the views' names are relative to
    image_names: list[str]
    placed: dict  # how the cameras were placed (on_cameras' report)
    sfm_cameras: object  # heads.recon.camera_files.SfmCameras, or None
    measured: Optional[np.ndarray]  # (V, H, W) bool: pixels whose depth was measured
    depth_report: Optional[dict]
    chunks: list[dict]
    scale_from: Optional[str]  # what set the scene's metres: "given cameras", "measured depth", "network", or None
    seconds: dict = field(default_factory=dict)
    sfm_seconds: Optional[float] = None
    sfm_stages: Optional[dict] = None  # seconds by stage of the SfM thread


def reconstruct(inputs: SceneInputs, options: SceneOptions, engine, *, stages, summary) -> Optional[Scene]:
    """Decode the views, predict them in chunks aligned to each other and place them on their cameras;
    None when no view could be decoded (``summary`` lists why). ``stages`` is the command's progress line
    (next, detail, say). The views' arrays are made in the workspace entered (:mod:`heads.recon.workspace`)."""
    started = time.perf_counter()
    items = inputs.items
    measured = inputs.depth_files is not None and all(f is not None for f in inputs.depth_files)
    # given cameras have their matches triangulated, for the network's depth to fit: not needed where all is measured
    matching = options.sfm is not None and not (inputs.known_cameras is not None and measured)
    job = None

    def start_matching() -> None:  # once the decoding workers are forked: never beside COLMAP's threads
        nonlocal job
        if matching:
            job = _start_sfm(inputs, options.sfm)

    try:
        stages.next()
        net = prepare_pointmap(engine, load_pointmap(options.model))
        policy = ResizePolicy.parse(options.resize) if options.resize else ResizePolicy(short=net.infer_short)
        views = Views.decode(items, engine.batches(items, policy, summary, on_started=start_matching), inputs=inputs)
        if views is None:
            return None
        loaded = time.perf_counter()
        stages.next(f"{len(views.frames)} views")
        with _core_left_for(job, engine):
            pred, chunks, model_poses = _predict(net, engine, views=views, inputs=inputs, options=options)
        if options.prior == "flat":
            flatten(pred)
        if job is not None:
            job.describe(views.indices, pred.descriptor)
        inferred = time.perf_counter()
        stages.next("given" if views.given is not None else "from matching" if job is not None else "the network's")
        if job is None:
            sfm_cameras = views.given
        elif views.given is not None:  # the matches triangulated from the given cameras, where they have no points
            loose = None if options.hold_cameras else LOOSE_CAMERAS_PX  # looser: the frames' own mapping, placed
            sfm_cameras = views.given if views.given.points else job.triangulate(
                views.given, views.indices, stages.detail, loose_above=loose)
            if sfm_cameras.error:
                stages.say(f"pixio: warning: {sfm_cameras.error}: the network's depth is used as it comes")
            elif sfm_cameras.points and sfm_cameras.reprojection_error > LOOSE_CAMERAS_PX:
                stages.say(f"pixio: warning: the given cameras fit the images loosely: the points matched from "
                           f"them land {sfm_cameras.reprojection_error:.2f} px from where they were seen (well "
                           "under 1 px from cameras found by matching), so the depth matching finds is poorer; "
                           "poses an RGB-D dataset records are often its depth sensor's, not the colour camera's")
        else:
            sfm_cameras = job.result(views.indices, views.sizes, stages.detail)
        if sfm_cameras is not None and sfm_cameras.note:
            stages.say(f"pixio: note: {sfm_cameras.note}")
        pred, placed, measured, depth_report = _place(pred, sfm_cameras, model_poses=model_poses, views=views,
                                                  inputs=inputs, options=options)
        solved = time.perf_counter()
    finally:
        if job is not None:
            job.cancel()  # nothing once it has finished; stops COLMAP on an error or Ctrl-C
    if options.save_predictions is not None:
        pred.save(options.save_predictions)
        active().release()
        views.parts.clear()
    return Scene(pred, views.frames, view_items=views.items, root=views.root, image_names=views.image_names,
                 placed=placed, sfm_cameras=None if model_poses is not None else sfm_cameras, measured=measured,
                 depth_report=depth_report, chunks=chunks,
                 scale_from=_scale_from(measured, sfm_cameras, model_poses=model_poses, metric=net.metric),
                 seconds={"load_and_decode": round(loaded - started, 2), "inference": round(inferred - loaded, 2),
                          "cameras": round(solved - inferred, 2)},
                 sfm_seconds=round(job.seconds, 2) if job else None, sfm_stages=job.stage_seconds if job else None)


def flatten(pred: Predictions) -> None:
    """The network's depth replaced, in place, by one plane facing each camera at the median depth of all views
    (points moved along their rays): the ablation that shows what the images alone give, since placement
    then fits that plane to the tracks and matching finds the rest."""
    c = float(np.median([np.median(d[np.isfinite(d) & (d > 0)]) for d in pred.depth_z]))
    for v in range(len(pred.depth_z)):
        centre = pred.cam2world[v, :3, 3].astype(np.float64)
        z = pred.depth_z[v].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            along = np.where(z > 0, c / z, np.nan)[..., None]
        pred.pts3d[v] = (centre + (pred.pts3d[v] - centre) * along).astype(np.float32)
        pred.depth_z[v] = np.float32(c)


def _predict(net, engine, views: Views, inputs: SceneInputs, options: SceneOptions):
    """The predictions of every view, in chunks aligned to each other; with a model that
    takes them (MapAnything's encoders), known depth and metric cameras go in as inputs."""
    frames, names, sizes, known = views.frames, views.names, views.sizes, views.known
    takes = net.cfg.geometric_inputs
    model_depth = depth_at_size(inputs.depth_files, views.indices, sizes=sizes, per_metre=inputs.depth_scale,
                                 hw=frames[0].shape[:2]) \
        if takes and inputs.depth_files is not None else None
    given = views.given
    model_poses = given.cam2world if takes and given is not None and given.scale is not None else None

    def run(chosen: list[int]):
        with torch.inference_mode(), autocast(engine.device, engine.dtype):
            return predict(net, engine.to_pixels([frames[i] for i in chosen]), names=[names[i] for i in chosen],
                           original_hw=[sizes[i] for i in chosen],
                           K_original=[known[i] for i in chosen] if known else None,
                           depth_z=[model_depth[i] for i in chosen] if model_depth is not None else None,
                           cam2world=model_poses[chosen] if model_poses is not None else None)

    views.parts = KeptChunks(options.save_predictions, {  # what decides a chunk's numbers: an edited input redoes it
        "model": model_identity(options.model), "size": list(frames[0].shape[:2]), "chunk": options.chunk,
        "overlap": options.overlap, "images": names,
        "inputs": [item_identity(it) for it in views.items],
        "intrinsics": [k.tolist() for k in known] if known else None, "precision": str(engine.dtype),
        "known_depth": [str(f) for f in inputs.depth_files] if model_depth is not None else None,
        "known_poses": model_poses.tolist() if model_poses is not None else None})
    try:
        pred, chunks = predict_in_chunks(run, len(frames), size=options.chunk, overlap=options.overlap,
                                         done=views.parts.done(), on_chunk=views.parts.save, seed=options.seed)
    except torch.cuda.OutOfMemoryError:
        raise PixioError(f"out of GPU memory on chunks of {min(options.chunk, len(frames))} views of "
                         f"{frames[0].shape[1]}x{frames[0].shape[0]}: use a smaller --chunk or --resize") from None
    except RuntimeError as e:
        if "alloc" not in str(e):
            raise
        raise PixioError(f"out of memory on chunks of {min(options.chunk, len(frames))} views: use a smaller "
                         "--chunk or --resize") from None
    if model_depth is not None:
        views.depth_report = {"views": sum(d is not None for d in model_depth), "given_to_the_model": True}
    return pred, chunks, model_poses


def _place(pred: Predictions, sfm_cameras, model_poses, views: Views, inputs: SceneInputs, options: SceneOptions):
    """The predictions on their cameras, with measured depth in place of the network's where known: the
    cameras' report, the measured pixels and the known-depth report."""
    measured, depth_report = None, views.depth_report
    if model_poses is not None:  # the model took the cameras: its outputs are in their frame already
        sfm_cameras = None
    if inputs.depth_files is not None and depth_report is None:  # measured depth in place of the network's
        files = [inputs.depth_files[i] for i in views.indices]
        pred, measured, depth_report = put_known_depth(pred, (  # in place, a file at a time
            read_depth(f, hw, inputs.depth_scale) if f is not None else None for f, hw in zip(files, views.sizes)))
    if model_poses is not None:
        placed = {"cameras": "given to the model", "registered": len(views.frames), "unregistered": []}
    else:
        pred, placed = on_cameras(pred, sfm_cameras, options.seed,  # in place: the network's arrays are not kept
                                  measured_views=measured.any((1, 2)) if measured is not None else None, in_place=True)
    if measured is not None and options.depth_cameras and placed["cameras"] in ("sfm", "network") and len(views.frames) > 1:
        pred, placed["depth_registration"] = register_views(pred, measured)
    return pred, placed, measured, depth_report


def _start_sfm(inputs: SceneInputs, options: SfmOptions) -> SfmJob:
    """Matching on a thread of its own, beside the network (heads.recon.sfm_job.SfmJob), with what is known of
    the inputs: given cameras are matched only, then their matches triangulated (SfmJob.triangulate)."""
    known = inputs.known_cameras is not None
    sfm = replace(options, mapper="none" if known else options.mapper, known_K=None if known else inputs.Ks,
                  prior_K=inputs.prior_K, one_camera=not known, loop_closure=options.loop_closure and not known)
    # where the given cameras prove to fit loosely, the frames are mapped as if none were given
    refit = replace(options, known_K=None, prior_K=inputs.prior_K, loop_closure=False) if known else None
    return SfmJob(inputs.items, sfm, video=any(it.frame is not None for it in inputs.items), refit=refit)


@contextmanager
def _core_left_for(job, engine):
    """On the CPU, the network's pass leaves one core to the SfM thread while it runs: on a long video matching
    and mapping take longer than the network, so every second the thread waits for a core is a second more."""
    threads = torch.get_num_threads()
    if job is None or engine.device.type != "cpu" or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _scale_from(measured: Optional[np.ndarray], sfm_cameras, model_poses, metric: bool) -> Optional[str]:
    """What the scene's scale comes from (a key of :data:`UNITS`): measured depth, metric cameras given (to the
    placement or to the model), or the network's own estimate; None when nothing made it metric."""
    if measured is not None and measured.any():
        return "measured depth"
    if model_poses is not None or (sfm_cameras is not None and sfm_cameras.known and sfm_cameras.scale is not None):
        return "given cameras"
    return "network" if metric else None

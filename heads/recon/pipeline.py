"""The reconstruction `pixio recon3d` runs, top to bottom: the views decoded, the model's predictions in chunks,
the cameras (matching, given, or the network's), known depth put in place (:func:`reconstruct`); then the
scene cleaned, fused and written (:func:`write_scene`). The command parses, checks and reports; this module
makes the scene. Messages for the user go through ``say`` (one line each); errors are
:mod:`pixio_cli.errors` exceptions."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from pixio_cli.errors import PixioError, UsageError

from heads.pointmap.predictions import Predictions
from heads.recon.scene import Cleaning
from heads.recon.scene_files import SceneFiles
from heads.recon.workspace import active


LOOSE_CAMERAS_PX = 1.25  # given cameras whose triangulated matches reproject farther than this are said to fit loosely


@dataclass
class SceneInputs:
    """What the scene is made of: the inputs in order (failed ones included) and what is known of them."""

    items: list  # pixio_cli.inputs.Item
    Ks: Optional[list] = None  # one K (original pixels) per item
    depth_files: Optional[list] = None  # one known-depth file (or None) per item
    depth_scale: Optional[float] = None  # stored depth values per metre
    known_cameras: object = None  # a cameras.json or COLMAP model (Path), or heads.recon.known_cameras.GivenCameras: no mapping
    prior_K: Optional[np.ndarray] = None  # a first guess at every frame's K (original pixels), which matching fits

    def keep(self, positions: list[int]) -> "SceneInputs":
        """The inputs at ``positions`` (in order), with what is known of each."""
        pick = lambda xs: [xs[i] for i in positions] if xs is not None else None  # noqa: E731
        return SceneInputs(pick(self.items), pick(self.Ks), depth_files=pick(self.depth_files),
                           depth_scale=self.depth_scale, known_cameras=self.known_cameras, prior_K=self.prior_K)


@dataclass
class SceneOptions:
    """How the scene is made."""

    model: str
    resize: Optional[str] = None  # processing size (default: the model's)
    chunk: int = 32  # views per model pass
    overlap: int = 4  # views each chunk shares with the previous one
    sfm: bool = True  # cameras from matching
    matching: str = "auto"
    mapper: str = "auto"  # incremental, keyframes, global, or auto (heads.recon.sfm.SfmOptions)
    loop_closure: bool = False  # sequential matching also matches frames alike far apart (the network's descriptors)
    depth_cameras: bool = True  # with known depth, move the matched cameras until the depths agree
    fusion: bool = True
    prior: str = "network"  # the depth matching starts from and fills in with: network, or flat (an ablation)
    seed: int = 0
    save_predictions: Optional[Path] = None


@dataclass
class SceneOutputs:
    """What is written, and where."""

    scene_path: Path
    cleaning: Cleaning
    mesh: bool = False
    mesh_voxel: Optional[float] = None
    glb: bool = False
    cameras: Optional[str] = None  # json, colmap or colmap-text
    preview: Optional[Path] = None
    normals: bool = False
    frames_folder: Optional[Path] = None  # a video's frames, for the cameras to name


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
    from heads.pointmap.checkpoint import load_pointmap, prepare_pointmap
    from pixio_cli.images import ResizePolicy

    started = time.perf_counter()
    items = inputs.items
    measured = inputs.depth_files is not None and all(f is not None for f in inputs.depth_files)
    # given cameras have their matches triangulated, for the network's depth to fit: not needed where all is measured
    job = _start_sfm(inputs, options) if options.sfm and not (inputs.known_cameras is not None and measured) else None
    try:
        stages.next()
        net = prepare_pointmap(engine, load_pointmap(options.model))
        policy = ResizePolicy.parse(options.resize) if options.resize else ResizePolicy(short=net.infer_short)
        views = _Views.decode(items, engine.batches(items, policy, summary), inputs=inputs)
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
            sfm_cameras = views.given if views.given.points else job.triangulate(views.given, views.indices,
                                                                                stages.detail)
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


class _Views:
    """The decoded views at one processing size (``frames``, (V, H, W, 3) uint8), which inputs they are,
    their names, sizes and known cameras."""

    def __init__(self, items: list, indices: list[int], frames: np.ndarray, sizes: list, inputs: SceneInputs) -> None:
        self.indices = indices  # the views' positions among the inputs
        self.frames = frames
        self.items = [items[i] for i in indices]
        self.names = [it.label for it in self.items]
        self.sizes = sizes  # each view's original (h, w)
        self.known = [inputs.Ks[i] for i in indices] if inputs.Ks is not None else None
        self.root, self.image_names = image_names(self.items)
        self.given = None
        if inputs.known_cameras is not None:  # the user's cameras; their K goes to the network as --intrinsics would
            from heads.recon.known_cameras import read_known_cameras

            self.given = read_known_cameras(inputs.known_cameras, self.image_names, self.sizes)
            self.known = list(self.given.K)
        self.parts: _Parts = _Parts(None, {})  # chunks kept beside --save-predictions, set when predicting
        self.depth_report: Optional[dict] = None  # known depth given to the model as an input, when it was

    @classmethod
    def decode(cls, items: list, batches, inputs: SceneInputs) -> Optional["_Views"]:
        """The views ``batches`` decode (failures left out), each written into one array of the workspace as
        it comes, so that no list of images is held; None when none could be decoded."""
        frames, sizes, ws = None, {}, active()
        for batch in batches:
            for s in batch.samples:
                if frames is None:
                    frames = ws.array("frames", (len(items),) + s.image.shape, np.uint8)
                frames[s.index] = _at_size(s.image, frames.shape[1:3], items[s.index].label)
                sizes[s.index] = s.orig_hw
                ws.tick()
        if frames is None:
            return None
        indices = sorted(sizes)
        for k, i in enumerate(indices):  # decoded views to the front, in order (i >= k: nothing overwritten)
            if i != k:
                frames[k] = frames[i]
        return cls(items, indices, frames[:len(indices)], sizes=[sizes[i] for i in indices], inputs=inputs)


def _predict(net, engine, views: _Views, inputs: SceneInputs, options: SceneOptions):
    """The predictions of every view, in chunks aligned to each other; with a model that
    takes them (MapAnything's encoders), known depth and metric cameras go in as inputs."""
    import torch

    from heads.pointmap.predictions import predict
    from heads.recon.scene import predict_in_chunks
    from pixio_cli.engine import autocast
    from pixio_cli.resume import item_identity, model_identity

    frames, names, sizes, known = views.frames, views.names, views.sizes, views.known
    takes = net.cfg.geometric_inputs
    model_depth = _depth_at_size(inputs.depth_files, views.indices, sizes=sizes, per_metre=inputs.depth_scale,
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

    views.parts = _Parts(options.save_predictions, {  # what decides a chunk's numbers: an edited input redoes it
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


def _place(pred: Predictions, sfm_cameras, model_poses, views: _Views, inputs: SceneInputs, options: SceneOptions):
    """The predictions on their cameras, with measured depth in place of the network's where known: the
    cameras' report, the measured pixels and the known-depth report."""
    from heads.recon.scene import on_cameras

    measured, depth_report = None, views.depth_report
    if model_poses is not None:  # the model took the cameras: its outputs are in their frame already
        sfm_cameras = None
    if inputs.depth_files is not None and depth_report is None:  # measured depth in place of the network's
        from heads.recon.known_depth import put_known_depth, read_depth

        files = [inputs.depth_files[i] for i in views.indices]
        pred, measured, depth_report = put_known_depth(pred, (  # in place, a file at a time
            read_depth(f, hw, inputs.depth_scale) if f is not None else None for f, hw in zip(files, views.sizes)))
    if model_poses is not None:
        placed = {"cameras": "given to the model", "registered": len(views.frames), "unregistered": []}
    else:
        pred, placed = on_cameras(pred, sfm_cameras, options.seed,  # in place: the network's arrays are not kept
                                  measured_views=measured.any((1, 2)) if measured is not None else None, in_place=True)
    if measured is not None and options.depth_cameras and placed["cameras"] in ("sfm", "network") and len(views.frames) > 1:
        from heads.recon.depth_poses import register_views

        pred, placed["depth_registration"] = register_views(pred, measured)
    return pred, placed, measured, depth_report


def write_scene(scene: Scene, options: SceneOptions, out: SceneOutputs, say: Callable[[str], None],
                progress: Callable[[str], None] = lambda what: None) -> dict:
    """Clean and fuse the scene and write every output asked for; returns the summary record (its
    ``outputs``, and ``unusable``: a COLMAP model that could not be written, said as an error line)."""
    from heads import writers3d as G
    from heads.recon.scene import clean_points, fuse, pixel_mask

    started = time.perf_counter()
    pred, n = scene.pred, len(scene.frames)
    colours = scene.frames
    keep, counts = pixel_mask(pred, out.cleaning)
    surface, fused = keep, None  # what the mesh averages, and what fusion said
    if options.fusion:  # in place: the scene's predictions are not used again
        pred, surface, keep, fused = fuse(pred, colours, keep, measured=scene.measured, tracks=scene.placed.get("tracks"),
                                          in_place=True)
        counts.update(after_views=fused["after_views"], after_once=fused["after_once"])
    # photos with nothing in common: matching registered none and no view sees what another sees
    apart = (scene.sfm_seconds is not None and n > 1 and scene.placed["registered"] == 0 and fused is not None
             and len(fused["unchecked"]) == n)
    if apart:
        say(f"pixio: warning: the {n} photos do not form one scene: matching found nothing in common between "
            "them and no view sees what another sees; each keeps the network's camera and depth, unchecked")
    else:
        if scene.sfm_seconds is not None:
            _warn_unplaced(scene.placed, scene.sfm_cameras, n, say)
        if fused is not None:
            _warn_unchecked(fused["unchecked"], n, say)
    fusing_done = time.perf_counter()
    points, point_colours, _, counts = clean_points(pred, colours, c=out.cleaning, keep=keep, counts=counts)
    if not len(points):
        raise PixioError(f"no points to write: cleaning removed every pixel of {n} views ({counts}); loosen it "
                         "(--no-mask, --edge-rtol 0, no --conf-*)")
    unit = UNITS[scene.scale_from]
    progress(str(out.scene_path))
    files = SceneFiles(out.scene_path, staging=None if active().folder is None else active().folder / "outputs")
    G.write_ply(files.path(out.scene_path), points, colours=point_colours,
                normals_towards=pred.cam2world[0, :3, 3] if out.normals else None, unit=unit)
    written = [str(out.scene_path)]
    meshed = time.perf_counter()
    if out.mesh:
        written += _write_mesh(pred, colours, scene_path=out.scene_path, voxel=out.mesh_voxel, glb=out.glb,
                               keep=surface, files=files, say=say)
    meshed = time.perf_counter() - meshed
    unusable, root = _write_cameras(scene, pred, out=out, apart=apart, unit=unit, written=written, say=say,
                                    files=files)
    if out.preview is not None:
        from heads.recon.preview import preview_picture
        from pixio_cli.writers import write_image

        write_image(files.path(out.preview),
                    preview_picture(points, point_colours, pred, unit="m" if scene.scale_from else "units"))
        written.append(str(out.preview))
    files.commit({"command": "pixio recon3d", "pid": os.getpid(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "frames": n, "unit": unit})
    return {"scene": str(out.scene_path), "outputs": written, "frames": n, "image_root": root,
            "points": int(len(points)), "cleaning": counts, "scale": pred.scale, "unit": unit,
            "size": [int(scene.frames[0].shape[1]), int(scene.frames[0].shape[0])], "chunks": scene.chunks,
            "cameras": {k: v for k, v in scene.placed.items() if k not in ("to_output", "tracks")},
            "fusion": {k: v for k, v in fused.items() if k != "unchecked"} | {"unchecked": len(fused["unchecked"])}
            if fused else None,
            "frame": "the first view's camera: x right, y down, z forward",
            "predictions": str(options.save_predictions) if options.save_predictions else None,
            "known_depth": scene.depth_report, "unusable": unusable,
            "seconds": {**scene.seconds, "sfm_thread": scene.sfm_seconds, "sfm_stages": scene.sfm_stages,
                        "fusion": round(fusing_done - started, 2), "mesh": round(meshed, 2) if out.mesh else None}}


def _write_cameras(scene: Scene, pred: Predictions, out: SceneOutputs, apart: bool, unit: str, written: list[str],
                   say: Callable[[str], None], files: SceneFiles) -> tuple[bool, str]:
    """cameras.json or the COLMAP model (and a video's frames for them to name), where ``files`` puts them;
    whether a COLMAP model asked for could not be written, and the folder the cameras name the images from."""
    from heads import writers3d as G

    cam_sizes = np.array(pred.original_hw)
    flipped = [name for name, K in zip(pred.images, pred.K_original) if not (K[0, 0] > 0 and K[1, 1] > 0)]
    if out.cameras == "json" and flipped:  # written as predicted, but said: no pinhole camera has them
        say(f"pixio: warning: the predicted camera of {len(flipped)} view(s) (first: {flipped[0]}) has a "
            "non-positive focal length, as for frames far from the model's training data; cameras.json holds it "
            "as predicted")
    unusable = out.cameras in ("colmap", "colmap-text") and bool(flipped or apart)
    root, image_names = scene.root, scene.image_names
    if out.frames_folder is not None and not unusable:  # a video's frames, where the cameras can name them
        image_names = write_views(scene.view_items, files.path(out.frames_folder))
        root = str(out.frames_folder.resolve())
        written.append(str(out.frames_folder))
    if unusable:  # a model no tool can use is not written: said as an error, and the run exits 1
        why = (f"the predicted camera of {len(flipped)} view(s) (first: {flipped[0]}) has a non-positive focal "
               "length, which COLMAP cannot hold" if flipped else "the photos do not form one scene")
        say(f"pixio: error: no COLMAP model written: {why}")
    if out.cameras == "json":
        G.write_cameras_json(files.path(out.scene_path.parent / "cameras.json"), image_names, sizes=cam_sizes,
                             K=pred.K_original, cam2world=pred.cam2world, unit=unit, image_root=root)
        written.append(str(out.scene_path.parent / "cameras.json"))
    elif out.cameras in ("colmap", "colmap-text") and not unusable:
        from heads.recon.camera_files import write_colmap

        placed, sfm = scene.placed, scene.sfm_cameras
        to_world = ((placed["sfm_scale"], np.array(placed["to_output"]))
                    if placed["cameras"] in ("sfm", "given") and sfm.reconstruction is not None else None)
        write_colmap(files.path(out.scene_path.parent / "sparse" / "0"), image_names, original_hw=cam_sizes,
                     K=pred.K_original,
                     cam2world=pred.cam2world, sfm=sfm if to_world else None, sfm_to_world=to_world,
                     text=out.cameras == "colmap-text", unit="metres" if scene.scale_from else None)
        written.append(str(out.scene_path.parent / "sparse" / "0"))
    return unusable, root


UNITS = {"given cameras": "metres, from the given cameras", "measured depth": "metres, from the measured depth",
         "network": "metres, as the network estimates them", None: "unknown (the model is not metric)"}


def _scale_from(measured: Optional[np.ndarray], sfm_cameras, model_poses, metric: bool) -> Optional[str]:
    """What the scene's scale comes from (a key of :data:`UNITS`): measured depth, metric cameras given (to the
    placement or to the model), or the network's own estimate; None when nothing made it metric."""
    if measured is not None and measured.any():
        return "measured depth"
    if model_poses is not None or (sfm_cameras is not None and sfm_cameras.known and sfm_cameras.scale is not None):
        return "given cameras"
    return "network" if metric else None


def _warn_unchecked(unchecked: list[str], n_views: int, say: Callable[[str], None]) -> None:
    """One warning line for views whose depth no other view could check (one view, unrelated photos,
    cameras too far off): their pixels are kept as the network placed them."""
    if not unchecked:
        return
    if n_views == 1:
        say("pixio: warning: one view: its depth could not be checked against another view")
        return
    more = f" and {len(unchecked) - 3} more" if len(unchecked) > 3 else ""
    say(f"pixio: warning: the depth of {len(unchecked)} of {n_views} views ({', '.join(unchecked[:3])}{more}) could "
        "not be checked against other views (none sees the same surfaces from these cameras): their pixels are kept "
        "unchecked")


def image_names(items: list) -> tuple[str, list[str]]:
    """The folder the frames lie in and each frame's name relative to it, as COLMAP and the cameras
    file name images (COLMAP, given that folder, finds every one); a video's frames are <video>#frame<N>."""
    import os

    paths = [os.path.abspath(it.path) for it in items]
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    names = [os.path.relpath(p, root) + (f"#frame{it.frame}" if it.frame is not None else "")
             for p, it in zip(paths, items)]
    return root, names


def write_views(items: list, folder: Path) -> list[str]:
    """The views' images at their own size in ``folder`` (a video's frames as ``<video>_<frame>.jpg``, an image
    file copied as it is), atomically, for the cameras to name; returns their names in ``folder``."""
    import os

    from pixio_cli.engine import ImageStream
    from pixio_cli.images import ResizePolicy
    from pixio_cli.writers import write_bytes, write_image

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


def _depth_at_size(files: list, indices: list[int], sizes: list, per_metre, hw: tuple[int, int]) -> list:
    """Each view's known depth (None where it has none) at the processing size ``hw`` (nearest: no mixing
    across edges), in metres, for a model that takes depth as an input."""
    import cv2

    from heads.recon.known_depth import read_depth

    out = []
    for i, size in zip(indices, sizes):
        f = files[i]
        out.append(None if f is None else cv2.resize(read_depth(f, size, per_metre), (hw[1], hw[0]),
                                                     interpolation=cv2.INTER_NEAREST))
    return out


def _start_sfm(inputs: SceneInputs, options: SceneOptions):
    """Matching on a thread of its own, beside the network (heads.recon.sfm_job.SfmJob)."""
    from heads.recon.sfm import SfmOptions
    from heads.recon.sfm_job import SfmJob

    known = inputs.known_cameras is not None  # matched only, then triangulated from them (SfmJob.triangulate)
    sfm = SfmOptions(matching=options.matching, mapper="none" if known else options.mapper,
                     known_K=None if known else inputs.Ks, prior_K=inputs.prior_K, seed=options.seed,
                     one_camera=not known, loop_closure=options.loop_closure and not known)
    return SfmJob(inputs.items, sfm, video=any(it.frame is not None for it in inputs.items))


@contextmanager
def _core_left_for(job, engine):
    """On the CPU, the network's pass leaves one core to the SfM thread while it runs: on a long video matching
    and mapping take longer than the network, so every second the thread waits for a core is a second more."""
    import torch

    threads = torch.get_num_threads()
    if job is None or engine.device.type != "cpu" or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _warn_unplaced(placed: dict, cams, n_views: int, say: Callable[[str], None]) -> None:
    """One warning line when matching left frames on the network's cameras (all of them, or some)."""
    unplaced = placed["unregistered"]
    if not unplaced:
        return
    if n_views == 1:
        say("pixio: warning: one frame has nothing to match: its camera is the network's")
        return
    if placed["cameras"] == "network":
        if "reason" in placed:
            what = f"{placed['registered']} of the {n_views} frames, but {placed['reason']}"
        else:
            why = f" ({cams.error})" if cams is not None and cams.error else ""
            what = f"{'none' if not placed['registered'] else 'too few'} of the {n_views} frames{why}"
        say(f"pixio: warning: matching registered {what}: the cameras are the network's, as with --no-sfm")
        return
    more = f" and {len(unplaced) - 3} more" if len(unplaced) > 3 else ""
    say(f"pixio: warning: matching did not register {len(unplaced)} of {n_views} frames "
        f"({', '.join(unplaced[:3])}{more}): they keep the network's cameras, aligned to the rest")


def _at_size(image: np.ndarray, hw: tuple[int, int], label: str) -> np.ndarray:
    """A frame at the processing size ``hw`` (the first frame's): one of the same aspect (within 5 %) is
    resized to it, another refused."""
    from pixio_cli.images import resize_image

    h, w = hw
    if image.shape[:2] == (h, w):
        return image
    if abs((image.shape[1] / image.shape[0]) / (w / h) - 1) > 0.05:
        raise UsageError(f"{label} is processed at {image.shape[1]}x{image.shape[0]} but the first frame at "
                         f"{w}x{h}: the views of one scene must share an aspect ratio (within 5 %)")
    return resize_image(image, (h, w))


def _write_mesh(pred, colours, scene_path: Path, voxel: Optional[float], glb: bool, keep=None,
                files: Optional["SceneFiles"] = None, say=print) -> list[str]:
    """``<scene>_mesh.ply`` (and ``<scene>.glb``) by TSDF fusion, where ``files`` puts them; returns the files
    written. A voxel too fine for the volume's memory (``MESH_MEMORY``) is coarsened, and said."""
    from heads.recon.mesh import MESH_MEMORY, tsdf_mesh
    from heads.writers3d import write_mesh

    try:
        tri, used, asked = tsdf_mesh(pred, colours, voxel, keep)
        if asked is not None:
            say(f"pixio: note: the mesh's voxel is {used:.3g} instead of {asked:.3g} (scene units): a finer one "
                f"would not fit the {MESH_MEMORY / 2**30:g} GiB the TSDF volume may use (--mesh-voxel)")
    except RuntimeError as e:  # Open3D's own checks, e.g. a voxel too small for the memory
        raise PixioError(f"TSDF fusion failed: {str(e).strip().splitlines()[-1][:200]}") from None
    if len(tri.triangles) == 0:
        raise PixioError("TSDF fusion made no surface (too few or inconsistent depths); leave out --mesh")
    tri.compute_vertex_normals()
    targets = [scene_path.with_name(scene_path.stem + "_mesh.ply")] + ([scene_path.with_suffix(".glb")] if glb else [])
    for target in targets:
        write_mesh(files.path(target) if files is not None else target, tri)
    return [str(t) for t in targets]


class _Parts:
    """Chunk predictions kept beside --save-predictions while a chunked run goes, so a rerun with the same
    settings and frames resumes from the chunks it finished."""

    def __init__(self, target: Optional[Path], settings: dict) -> None:
        import json

        self.folder = None if target is None else target.with_name(target.name + ".parts")
        self.settings = json.dumps(settings, sort_keys=True)

    def done(self) -> dict:
        """The chunks a killed run with the same settings kept: their files by number (read when used)."""
        if self.folder is None or not (self.folder / "settings.json").exists():
            return {}
        if (self.folder / "settings.json").read_text() != self.settings:
            return {}  # other settings or frames: start afresh
        return {int(p.stem.split("-")[1]): p for p in sorted(self.folder.glob("chunk-*.npz"))}

    def save(self, k: int, pred) -> None:
        """Keeps chunk ``k``'s predictions, atomically."""
        if self.folder is None:
            return
        from pixio_cli.writers import write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "settings.json").exists() or (self.folder / "settings.json").read_text() != self.settings:
            for old in self.folder.glob("chunk-*.npz"):
                old.unlink()
            write_text(self.folder / "settings.json", self.settings)
        pred.save(self.folder / f"chunk-{k:04d}.npz")

    def clear(self) -> None:
        """Removes the kept chunks (the scene they made is written)."""
        import shutil

        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)

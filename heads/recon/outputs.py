"""A reconstructed scene written: cleaned and fused (:func:`write_scene`), then the point cloud, the mesh, the
cameras (cameras.json or a COLMAP model, with a video's frames for them to name) and the preview, each
staged and committed together (:class:`heads.recon.scene_files.SceneFiles`); warnings go to ``say``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from pixio_cli.engine import ImageStream
from pixio_cli.errors import PixioError
from pixio_cli.images import ResizePolicy, resize_image
from pixio_cli.writers import write_bytes, write_image

from heads.pointmap.predictions import Predictions
from heads.recon.camera_files import write_colmap
from heads.recon.cleaning import Cleaning, clean_points, pixel_mask
from heads.recon.fusion import fuse
from heads.recon.mesh import MESH_MEMORY, tsdf_mesh
from heads.recon.mvs import Stereo
from heads.recon.pipeline import Scene, SceneOptions
from heads.recon.preview import preview_picture
from heads.recon.scene_files import SceneFiles
from heads.recon.workspace import active
from heads.writers3d import write_cameras_json, write_mesh, write_ply


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


def write_scene(scene: Scene, options: SceneOptions, out: SceneOutputs, say: Callable[[str], None],
                progress: Callable[[str], None] = lambda what: None) -> dict:
    """Clean and fuse the scene and write every output asked for; returns the summary record (its
    ``outputs``, and ``unusable``: a COLMAP model that could not be written, said as an error line)."""

    started = time.perf_counter()
    pred, n = scene.pred, len(scene.frames)
    colours = scene.frames
    keep, counts = pixel_mask(pred, out.cleaning)
    surface, fused = keep, None  # what the mesh averages, and what fusion said
    if options.fusion:  # in place: the scene's predictions are not used again
        fine = fine_grays(scene.view_items, pred.depth_z.shape[1:], pred.original_hw, Stereo().resolution)
        pred, surface, keep, fused = fuse(pred, colours, keep, measured=scene.measured, tracks=scene.placed.get("tracks"),
                                          fine=fine, in_place=True)
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
    write_ply(files.path(out.scene_path), points, colours=point_colours,
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
        write_cameras_json(files.path(out.scene_path.parent / "cameras.json"), image_names, sizes=cam_sizes,
                             K=pred.K_original, cam2world=pred.cam2world, unit=unit, image_root=root)
        written.append(str(out.scene_path.parent / "cameras.json"))
    elif out.cameras in ("colmap", "colmap-text") and not unusable:

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


def _write_mesh(pred, colours, scene_path: Path, voxel: Optional[float], glb: bool, keep=None,
                files: Optional["SceneFiles"] = None, say=print) -> list[str]:
    """``<scene>_mesh.ply`` (and ``<scene>.glb``) by TSDF fusion, where ``files`` puts them; returns the files
    written. A voxel too fine for the volume's memory (``MESH_MEMORY``) is coarsened, and said."""

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


def fine_grays(items: list, hw: tuple[int, int], original_hw: np.ndarray, factor: float) -> Optional[np.ndarray]:
    """The views (``items``, decoded again from their files) as grey images at ``factor`` times the processing
    size ``hw``, or at the smallest view's own size where that is less, for matching (finer disparities): an
    array (V, H, W) uint8 of the workspace. None when no view is larger than ``hw``, or one no longer
    decodes (the views are then matched at the processing size)."""
    h, w = hw
    k = min(factor, float(np.min(original_hw[:, 0])) / h, float(np.min(original_hw[:, 1])) / w)
    if k <= 1.0 + 1e-6:
        return None
    size = (int(round(h * k)), int(round(w * k)))
    out = active().array("fine", (len(items),) + size, np.uint8)
    for sample in ImageStream(items, ResizePolicy(short=None, multiple=1)):
        if sample.error is not None:
            return None
        out[sample.index] = cv2.cvtColor(resize_image(sample.image, size), cv2.COLOR_RGB2GRAY)
        active().tick()
    return out


def write_views(items: list, folder: Path) -> list[str]:
    """The views' images at their own size in ``folder`` (a video's frames as ``<video>_<frame>.jpg``, an image
    file copied as it is), atomically, for the cameras to name; returns their names in ``folder``."""


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

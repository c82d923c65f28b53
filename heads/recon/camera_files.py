"""A COLMAP reconstruction as pixio uses it: read into arrays in pixio's conventions (:class:`SfmCameras`:
OpenCV axes, camera-to-world, pixel centres at integers, the original images' pixels), and COLMAP models
written (:func:`write_colmap`) and read (:func:`read_colmap_model`).

pycolmap is imported when first needed (:func:`_pycolmap`), so that the command line starts without it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pixio_cli.errors import UsageError
from pixio_cli.interrupts import sigterm_as_interrupt
from pixio_cli.writers import write_text

from heads.geometry import invert_pose, scale_intrinsics

# pycolmap is imported by _pycolmap() when first needed: it costs the command line ~0.3 s of start-up


@dataclass
class SfmCameras:
    """What one pycolmap ``Reconstruction`` says of each of V frames, as arrays in our conventions (OpenCV axes,
    camera-to-world, pixel centres at integers, the frames' own pixels).

    The reconstruction is the model and the arrays are read from it (once, on first use), so they cannot drift
    apart. A frame is unregistered when the reconstruction has no posed image of its name.

    Args:
        reconstruction: the ``pycolmap.Reconstruction``, or None when no frame has a camera.
        names: (V,) the reconstruction's image name of each frame, by position in the list given to run_sfm.
        written_hw: (V, 2) the size of the images its cameras are in (the size the frames were matched at).
        original_hw: (V, 2) the frames' own size.
        error: why there is no reconstruction, when COLMAP failed.
        scale: network units per reconstruction unit when known (cameras in metres: 1.0), else None (fitted).
        known: given by the user (``--known-cameras``), not found by matching.
        note: what the user should hear of these cameras, or None: a focal length held at the camera's prior,
            and why (the frames could not fix it, or fitted one no lens has), or kept though loosely fixed;
            given rotations made exactly orthonormal.
    """

    reconstruction: object
    names: list[str]
    written_hw: np.ndarray
    original_hw: np.ndarray
    error: str | None = None
    scale: float | None = None
    known: bool = False
    note: str | None = None

    @classmethod
    def empty(cls, hw: list[tuple[int, int]], **kwargs) -> "SfmCameras":
        """No camera for any of the frames of sizes ``hw`` (fields in ``kwargs`` set otherwise)."""
        hw = np.array(hw, np.int64).reshape(-1, 2)
        return cls(**{"reconstruction": None, "names": [""] * len(hw), "written_hw": hw, "original_hw": hw,
                      **kwargs})

    @cached_property
    def _frames(self) -> dict:
        return _read_frames(self.reconstruction, self.names, self.written_hw, self.original_hw)

    @property
    def registered(self) -> np.ndarray:
        """(V,) bool."""
        return self._frames["registered"]

    @property
    def cam2world(self) -> np.ndarray:
        """(V, 4, 4) float64 in the reconstruction's units; identity where unregistered."""
        return self._frames["cam2world"]

    @property
    def K(self) -> np.ndarray:
        """(V, 3, 3) float64, the pinhole part of each camera in original pixels; zeros where unregistered."""
        return self._frames["K"]

    @property
    def cameras(self) -> list:
        """(V,) ``pycolmap.Camera`` in the written images' pixels, or None where unregistered."""
        return self._frames["cameras"]

    @property
    def observations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(V,) per frame its triangulated keypoints: pixels (n, 2) in original pixels and their depth z (n,)."""
        return self._frames["observations"]

    @property
    def points(self) -> int:
        """Triangulated points."""
        return 0 if self.reconstruction is None else int(self.reconstruction.num_points3D())

    @property
    def reprojection_error(self) -> float:
        """Mean reprojection error in the written images' pixels (NaN without points)."""
        return float(self.reconstruction.compute_mean_reprojection_error()) if self.points else float("nan")


def _read_frames(rec, names: list[str], written_hw: np.ndarray, original_hw: np.ndarray) -> dict:
    """:class:`SfmCameras`' arrays, read from ``rec`` (or None) for the frames ``names``."""
    V = len(names)
    out = {"registered": np.zeros(V, bool), "cam2world": np.tile(np.eye(4), (V, 1, 1)), "K": np.zeros((V, 3, 3)),
           "cameras": [None] * V, "observations": [(np.zeros((0, 2)), np.zeros(0))] * V}
    if rec is None:
        return out
    position = {name: i for i, name in enumerate(names)}
    for image in rec.images.values():
        if not image.has_pose or image.name not in position:
            continue
        i = position[image.name]
        c2w = image_cam2world(image)
        w2c = np.linalg.inv(c2w)
        xy, z = [], []
        for p2d in image.points2D:
            if p2d.has_point3D():
                xy.append(p2d.xy)
                z.append((w2c[:3, :3] @ rec.points3D[p2d.point3D_id].xyz + w2c[:3, 3])[2])
        sy, sx = original_hw[i][0] / written_hw[i][0], original_hw[i][1] / written_hw[i][1]
        xy = np.array(xy, np.float64).reshape(-1, 2) * [sx, sy] - 0.5  # COLMAP's pixels, rescaled, to ours
        out["registered"][i] = True
        out["cam2world"][i] = c2w
        out["K"][i] = scale_intrinsics(camera_K(image.camera), tuple(written_hw[i]), tuple(original_hw[i]))
        out["cameras"][i] = image.camera
        out["observations"][i] = (xy, np.array(z, np.float64))
    return out


def pinhole_view(rec, *, name: str, K: np.ndarray, hw: tuple[int, int], cam2world: np.ndarray, image_id: int) -> None:
    """Adds to ``rec`` an image ``name`` with pose ``cam2world`` (4, 4) and its own PINHOLE camera of ``K``
    (3, 3, our pixels) for an image of ``hw`` (h, w), and no keypoints."""
    pycolmap = _pycolmap()

    h, w = int(hw[0]), int(hw[1])
    camera = pycolmap.Camera.create_from_model_name(len(rec.cameras) + 1, "PINHOLE", float(K[0, 0]), w, h)
    camera.params = _colmap_params(np.asarray(K, np.float64))
    rec.add_camera_with_trivial_rig(camera)
    image = pycolmap.Image(name=name, camera_id=camera.camera_id, image_id=image_id)
    rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(invert_pose(np.asarray(cam2world, np.float64))[:3]))


def _pycolmap():
    try:
        import pycolmap
    except ImportError as e:
        raise UsageError(f"cameras from the images need pycolmap ({e}); install it (pip install pycolmap) or "
                         "pass --no-sfm for the network's cameras") from None
    pycolmap.logging.minloglevel = 3  # its INFO lines would bury ours; its errors come back as exceptions or in our warning

    sigterm_as_interrupt()  # glog's crash handler took SIGTERM on import: a stack dump and death, not a stop
    return pycolmap


def _colmap_params(K: np.ndarray) -> list[float]:
    """PINHOLE parameters of K (ours: pixel centres at integers) as COLMAP takes them (centres at +0.5)."""
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5]


def image_cam2world(image) -> np.ndarray:
    """A registered pycolmap image's camera-to-world (4, 4), OpenCV axes as COLMAP's."""
    w2c = np.eye(4)
    w2c[:3] = image.cam_from_world().matrix()
    return np.linalg.inv(w2c)


def camera_K(camera) -> np.ndarray:
    """The pinhole part (3, 3) of a pycolmap camera, in our pixels (COLMAP puts pixel centres at +0.5)."""
    K = camera.calibration_matrix().astype(np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def read_colmap_model(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A COLMAP model folder's registered images: names, K (V, 3, 3) in their cameras' pixels, camera-to-world
    (V, 4, 4), in image-name order, and its triangulated points (N, 3)."""
    pycolmap = _pycolmap()
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as e:  # pycolmap's reader says why in its own words
        raise UsageError(f"{folder}: not a COLMAP model folder ({str(e).strip()[:150]})") from None
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    points = np.array([p.xyz for p in rec.points3D.values()], np.float64).reshape(-1, 3)
    return ([im.name for im in images], np.array([camera_K(im.camera) for im in images]).reshape(-1, 3, 3),
            np.array([image_cam2world(im) for im in images]).reshape(-1, 4, 4), points)


def normalised_coordinates(camera, written_hw: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """(h, w, 2) x/z, y/z in the camera frame of every pixel centre of an (h, w) grid over the image,
    through the camera's model (its distortion included)."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    sy, sx = written_hw[0] / h, written_hw[1] / w
    pix = np.stack([(u + 0.5) * sx, (v + 0.5) * sy], -1).reshape(-1, 2)  # COLMAP: centres at +0.5
    return np.asarray(camera.cam_from_img(pix), np.float64).reshape(h, w, 2)


LENGTHS = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0, "cm": 0.01, "centimetres": 0.01,
           "centimeters": 0.01, "mm": 0.001, "millimetres": 0.001, "millimeters": 0.001}  # metres per unit


UNIT_FILE = "unit.txt"  # beside a model pixio writes: the unit of its lengths, when it is one (COLMAP ignores it)


def write_colmap(folder: Path, labels: list[str], original_hw: np.ndarray, K: np.ndarray, cam2world: np.ndarray,
                 sfm: SfmCameras | None = None, sfm_to_world: tuple[float, np.ndarray] | None = None,
                 text: bool = False, unit: str | None = None) -> None:
    """A COLMAP model of the scene in ``folder`` (binary as COLMAP writes it, or text), through pycolmap.

    Every frame is an image named by its input ``labels`` with pose ``cam2world``.
    Frames the reconstruction ``sfm`` registered keep its camera (its model, rescaled
    to the original pixels) and their keypoints, and its points come along with
    their multi-view tracks, mapped into the scene's world by ``sfm_to_world`` =
    (scale, 4x4 rigid). Every other frame gets a PINHOLE camera of its ``K`` (original
    pixels) and no points. Each file is written atomically; with ``unit`` a length (the scene's, e.g.
    ``metres``) a ``unit.txt`` beside the model says it, so the model given back as known cameras keeps it.
    """
    pycolmap = _pycolmap()

    out = pycolmap.Reconstruction()
    old = sfm.reconstruction if sfm is not None and sfm.registered.any() else None
    old_images = {im.name: im for im in old.images.values()} if old is not None else {}
    image_of: dict[int, int] = {}  # the reconstruction's image id -> ours
    cameras: dict[int, int] = {}  # the reconstruction's camera id -> ours
    for v, label in enumerate(labels):
        w2c = invert_pose(np.asarray(cam2world[v], np.float64))
        w, h = int(original_hw[v][1]), int(original_hw[v][0])
        if old is not None and sfm.registered[v]:
            src = old_images[sfm.names[v]]
            if src.camera_id not in cameras:
                got = old.cameras[src.camera_id]
                camera = pycolmap.Camera.create_from_model_name(len(out.cameras) + 1, got.model_name, 1.0,
                                                                got.width, got.height)
                camera.params = got.params
                if (camera.width, camera.height) != (w, h):
                    camera.rescale(w, h)
                out.add_camera_with_trivial_rig(camera)
                cameras[src.camera_id] = camera.camera_id
            sx, sy = w / old.cameras[src.camera_id].width, h / old.cameras[src.camera_id].height
            keypoints = np.array([p.xy for p in src.points2D], np.float64).reshape(-1, 2) * [sx, sy]
            image = pycolmap.Image(name=label, keypoints=keypoints, camera_id=cameras[src.camera_id], image_id=v + 1)
            image_of[src.image_id] = v + 1
            out.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3]))
        else:
            pinhole_view(out, name=label, K=K[v], hw=(h, w), cam2world=cam2world[v], image_id=v + 1)
    if old is not None:
        s, T = sfm_to_world
        for point in old.points3D.values():
            track = pycolmap.Track()
            for el in point.track.elements:
                if el.image_id in image_of:
                    track.add_element(image_of[el.image_id], el.point2D_idx)
            if track.length() >= 2:
                out.add_point3D(s * T[:3, :3] @ point.xyz + T[:3, 3], track, point.color)
    out.update_point_3d_errors()  # each point's reprojection error (pycolmap leaves -1 on points it is given)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".colmap-*"):  # what a killed write left: no live write shares the folder
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".colmap-") as tmp:
        (out.write_text if text else out.write_binary)(tmp)
        _check_model(Path(tmp), out, folder)  # pycolmap's writer says nothing of a full disk
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, folder / f.name)  # one rename per file: never half a file under its name
        other = ".bin" if text else ".txt"  # the folder holds this run's model only: COLMAP reads .bin first
        for name in MODEL_FILES:
            (folder / (name + other)).unlink(missing_ok=True)
    if unit in LENGTHS:
        write_text(folder / UNIT_FILE, unit + "\n")
    else:
        (folder / UNIT_FILE).unlink(missing_ok=True)


MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")  # a COLMAP model's files, without extension


def _check_model(tmp: Path, model, folder: Path) -> None:
    """An OSError unless the model written in ``tmp`` reads back with as many cameras, images and points."""
    pycolmap = _pycolmap()
    try:
        back = pycolmap.Reconstruction(str(tmp))
        whole = (back.num_cameras(), back.num_images(), back.num_points3D()) == \
            (model.num_cameras(), model.num_images(), model.num_points3D())
    except Exception:  # pycolmap's reader fails on a truncated file in its own words
        whole = False
    if not whole:
        raise OSError(errno.EIO, "the COLMAP model written is not whole (is the disk full?)", str(folder))

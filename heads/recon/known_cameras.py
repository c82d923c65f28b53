"""Cameras the user gives (``--known-cameras``): pixio's ``cameras.json`` or a COLMAP model, matched to the
frames by name, with the unit of their lengths; an RGB-D layout's recorded poses arrive here as
:class:`GivenCameras` (:mod:`heads.recon.known_poses` reads them).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixio_cli.errors import UsageError

from heads.geometry import scale_intrinsics
from heads.recon.camera_files import LENGTHS, UNIT_FILE, SfmCameras, _pycolmap, pinhole_view
from heads.recon.known_poses import PoseError, rigid


@dataclass
class GivenCameras:
    """Cameras known before any matching, by image name: K (3, 3) in the pixels of an image of (h, w) (None:
    the image's own size), camera-to-world (4, 4); metres per unit of length (None: not said); where they come
    from (what messages name) and how far from orthonormal the worst rotation was (made exact)."""

    cameras: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int] | None]]
    scale: float | None
    source: str
    rotation_off: float = 0.0


def read_known_cameras(given: Path | GivenCameras, names: list[str], original_hw: list[tuple[int, int]]
                       ) -> SfmCameras:
    """Cameras given for the frames ``names`` (relative to the frames' common folder, as ``pixio recon3d``
    names them): our ``cameras.json`` (its unit says whether they are in metres), a COLMAP model folder (in
    metres when pixio wrote it so, as its ``unit.txt`` says; else its points, when it has them, set the
    scale), or :class:`GivenCameras` (an RGB-D layout's recorded poses). Every frame must be in them, and
    each camera taken once."""
    if isinstance(given, GivenCameras):
        path, source, scale, cams = None, given.source, given.scale, given.cameras
    else:
        path = Path(given)
        source = f"--known-cameras {path}"
        if path.is_dir():
            return _known_colmap_model(path, names, original_hw)
        cams_json = read_cameras_json(path)
        scale, cams = cams_json.scale, cams_json.cameras
        given = cams_json
    matched = [_match(n, cams) for n in names]
    _require_all(source, names, matched)
    _require_one_each(source, names, matched)
    rec = _pycolmap().Reconstruction()
    for v, m in enumerate(matched):
        K, T, hw = cams[m]
        oh, ow = original_hw[v]
        h, w = hw if hw is not None else (oh, ow)
        if abs((w / h) / (ow / oh) - 1) > 0.01:
            raise UsageError(f"{source}: {m} is {w}x{h} there, but the image is {ow}x{oh} (another shape: not "
                             "this image's camera)")
        T = T.copy()
        T[:3, 3] *= scale or 1.0  # metres
        pinhole_view(rec, name=m, K=scale_intrinsics(K, (h, w), (oh, ow)), hw=(oh, ow), cam2world=T, image_id=v + 1)
    hw = np.array(original_hw, np.int64).reshape(-1, 2)
    note = (f"{source}: rotations orthonormal only to {given.rotation_off:.1e} were made exactly orthonormal"
            if given.rotation_off > 1e-6 else None)
    return SfmCameras(rec, matched, hw, hw, known=True, scale=1.0 if scale else None, note=note)


def _known_colmap_model(path: Path, names: list[str], original_hw: list[tuple[int, int]]) -> SfmCameras:
    """:func:`read_known_cameras` of a COLMAP model folder."""
    pycolmap = _pycolmap()
    source = f"--known-cameras {path}"
    try:
        rec = pycolmap.Reconstruction(str(path))
    except Exception as e:  # pycolmap's reader says why in its own words
        raise UsageError(f"{source}: not a COLMAP model folder ({str(e).strip()[:150]})") from None
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    matched = [_match(n, by_name) for n in names]
    _require_all(source, names, matched)
    _require_one_each(source, names, matched)
    hws = np.array([(by_name[m].camera.height, by_name[m].camera.width) for m in matched], np.int64)
    unit = (path / UNIT_FILE).read_text().strip().lower() if (path / UNIT_FILE).is_file() else ""
    scale = LENGTHS.get(unit)
    if scale is not None:  # in a unit of length: metres, exactly, and the points need not set it
        rec.transform(pycolmap.Sim3d(scale, pycolmap.Rotation3d(), np.zeros(3)))
    return SfmCameras(rec, matched, hws, np.array(original_hw, np.int64).reshape(-1, 2), known=True,
                      scale=None if scale is None else 1.0)


FOCAL_RANGE = (0.05, 100.0)  # focal lengths a camera may have, times its image's long side (a fisheye to 100x zoom)


def read_cameras_json(path: Path) -> GivenCameras:
    """A ``cameras.json`` (pixio's layout), checked: metres per unit of its translations (None where the unit
    is not said, or is pixio's 'unknown'), and per image name its K (3, 3), camera-to-world (4, 4) and
    (height, width). A :class:`UsageError` naming the file and the camera for anything else. Rotations
    orthonormal to :data:`heads.recon.known_poses.ROTATION_TOLERANCE` are made exactly so."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--known-cameras {path}: not a cameras.json ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise UsageError(f"--known-cameras {path}: not a cameras.json of pixio's (no list 'cameras')")
    unit = str(data.get("unit", "")).strip().lower().split(",")[0].strip()  # "metres, as the network estimates them"
    if unit and unit not in LENGTHS and not unit.startswith("unknown"):
        raise UsageError(f"--known-cameras {path}: unit {data['unit']!r} is not a length (m, cm or mm)")
    scale = LENGTHS.get(unit)
    out: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
    worst = 0.0
    for i, c in enumerate(data["cameras"]):
        name = c.get("image") if isinstance(c, dict) else None
        where = f"--known-cameras {path}: camera {i}" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: 'image' must name the image file")
        if name in out:
            raise UsageError(f"{where}: a second camera for the same image")
        size = [c.get("height"), c.get("width")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10 ** 6 for v in size):
            raise UsageError(f"{where}: 'width' and 'height' must be positive whole numbers of pixels")
        try:
            K, T = np.array(c["K"], np.float64), np.array(c["cam2world"], np.float64)
        except (KeyError, ValueError, TypeError):
            raise UsageError(f"{where}: 'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers") from None
        if K.shape != (3, 3) or T.shape != (4, 4) or not (np.isfinite(K).all() and np.isfinite(T).all()):
            raise UsageError(f"{where}: 'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers")
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
            raise UsageError(f"{where}: K is not a pinhole camera (positive fx and fy, last row 0 0 1)")
        side = max(size)
        if not all(FOCAL_RANGE[0] * side <= f <= FOCAL_RANGE[1] * side for f in (K[0, 0], K[1, 1])):
            raise UsageError(f"{where}: a focal length of {K[0, 0]:.6g} x {K[1, 1]:.6g} px is no camera's for an "
                             f"image of {size[1]}x{size[0]} (expected {FOCAL_RANGE[0]:g}-{FOCAL_RANGE[1]:g} x its "
                             "long side)")
        try:
            T, off = rigid(T, where)
        except PoseError as e:
            raise UsageError(str(e)) from None
        worst = max(worst, off)
        if np.abs(T[:3, 3]).max() > 1e6:
            raise UsageError(f"{where}: the camera is {np.abs(T[:3, 3]).max():.3g} units from the origin")
        out[name] = (K, T, (size[0], size[1]))
    return GivenCameras(out, scale, source=f"--known-cameras {path}", rotation_off=worst)


def _require_one_each(source: str, names: list[str], matched: list[str]) -> None:
    """Two frames matched to one camera (the same file name in two folders) are refused."""
    seen: dict[str, str] = {}
    for n, m in zip(names, matched):
        if m in seen:
            raise UsageError(f"{source}: {seen[m]} and {n} both take the camera of {m} (the same file "
                             "name in two folders): name the images by their path relative to the frames' folder")
        seen[m] = n


def _match(name: str, known: dict) -> str | None:
    """``name`` in ``known``, else the one entry with the same file name (cameras made from another folder)."""
    if name in known:
        return name
    same = [k for k in known if _file_key(k) == _file_key(name)]
    return same[0] if len(same) == 1 else None


def _file_key(name: str) -> str:
    """An image name without its folders: ``a/b/c.png`` -> ``c.png``, ``v/clip.mp4#frame3`` -> ``clip.mp4#frame3``."""
    path, sep, frame = name.partition("#")
    return Path(path).name + sep + frame


def _require_all(source: str, names: list[str], matched: list[str | None]) -> None:
    missing = [n for n, m in zip(names, matched) if m is None]
    if missing:
        raise UsageError(f"{source}: no camera for {len(missing)} of the {len(names)} frames (first: "
                         f"{missing[0]})")


def read_intrinsics(path: str | Path, n_views: int) -> list[np.ndarray]:
    """``--intrinsics FILE``: one 3x3 K (text, .npy or JSON) for every view, or a JSON list of one 3x3 per
    view, in the original images' pixels."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns of an empty file: one error line instead
            if path.suffix == ".json":
                data = np.array(json.loads(path.read_text()), dtype=np.float64)
            elif path.suffix == ".npy":
                data = np.load(path, allow_pickle=False).astype(np.float64)
            else:
                data = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError, TypeError, UserWarning) as e:  # TypeError: JSON that is not a list of numbers
        raise UsageError(f"--intrinsics {path}: cannot read it as one 3x3 K or a list of them "
                         f"({str(e).splitlines()[0][:120]})") from None
    if data.shape == (3, 3):
        data = np.repeat(data[None], n_views, axis=0)
    if data.ndim != 3 or data.shape[1:] != (3, 3):
        raise UsageError(f"--intrinsics {path}: expected one 3x3 matrix or a list of 3x3 matrices, got shape "
                         f"{'x'.join(map(str, data.shape))}")
    if len(data) != n_views:
        raise UsageError(f"--intrinsics {path}: {len(data)} matrices for {n_views} images")
    if not np.isfinite(data).all():
        bad = int(np.flatnonzero(~np.isfinite(data).all(axis=(1, 2)))[0])
        raise UsageError(f"--intrinsics {path}: matrix {bad} holds a value that is not a finite number")
    bad = [i for i, k in enumerate(data) if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], [0, 0, 1]))]
    if bad:
        raise UsageError(f"--intrinsics {path}: matrix {bad[0]} is not a pinhole K (positive fx, fy; last row 0 0 1)")
    return list(data)

"""Depth the user already has (an RGB-D camera, a phone's LiDAR) in place of the network's.

Each view's depth file is found by the image's name (:func:`depth_file_for`), read and checked before any
work (:func:`read_depth`), and put in place of the network's depth where it is known; where it is not
(0: no return), the network's depth fills in, fitted to the known depth around it by the same smooth
correction field as on matched points (:func:`put_known_depth`). Known depth is z-depth in the image's own
pixels and camera, so it needs the camera's K.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from pixio_cli.errors import UsageError
from pixio_cli.inputs import sibling

from heads.geometry import pixel_grid, pixel_rays, world_points
from heads.recon.depth_fit import FieldFit, fit_depth_field
from heads.recon.workspace import active, tick
from heads.sequences import NO_RETURN

PER_METRE = {".png": 1000.0, ".npy": 1.0}  # stored value per metre unless --depth-scale says otherwise
TUM_PER_METRE = 5000.0  # TUM RGB-D's depth PNGs
TUM_MAX_GAP = 0.02  # seconds: TUM's associate.py pairs colour and depth frames at most this far apart
FIT_SAMPLES = 4000  # known pixels the network's depth is fitted to, per view


def per_metre_of(path: Path) -> float:
    """Stored depth values per metre of a depth file, as its layout has them: TUM's (a ``depth/`` folder
    beside its ``depth.txt``, or of files named by decimal timestamps) 5000, other PNGs 1000 (millimetres),
    ``.npy`` 1 (metres)."""
    if path.suffix.lower() == ".png" and path.parent.name == "depth" and (
            (path.parent.parent / "depth.txt").is_file() or _is_timestamp(path.stem)):
        return TUM_PER_METRE
    return PER_METRE[path.suffix.lower()]


def _is_timestamp(stem: str) -> bool:
    """TUM names its frames by seconds with a fraction (``1305031102.175304``); ScanNet's are whole numbers."""
    whole, dot, fraction = stem.partition(".")
    return bool(dot) and whole.isdigit() and fraction.isdigit()


@functools.lru_cache(maxsize=8)
def _stamped(folder: Path) -> tuple[np.ndarray, tuple[Path, ...]]:
    """The PNGs of a TUM ``depth/`` folder, named by their timestamps, in time order."""
    files = []
    for p in folder.glob("*.png"):
        try:
            files.append((float(p.stem), p))
        except ValueError:
            continue
    files.sort()
    return np.array([t for t, _ in files]), tuple(p for _, p in files)


def _nearest_in_time(image: Path) -> Path | None:
    """TUM's ``rgb/<time>.png`` has its depth in ``depth/`` at another time: the nearest, within
    ``TUM_MAX_GAP`` seconds (as TUM's associate.py pairs them)."""
    folder = image.parent.parent / "depth"
    if image.parent.name != "rgb" or not folder.is_dir():
        return None
    try:
        t = float(image.stem)
    except ValueError:
        return None
    times, paths = _stamped(folder)
    if not len(times):
        return None
    i = int(np.clip(np.searchsorted(times, t), 1, len(times) - 1)) if len(times) > 1 else 0
    best = min((j for j in (i - 1, i) if 0 <= j < len(times)), key=lambda j: abs(times[j] - t))
    return paths[best] if abs(times[best] - t) <= TUM_MAX_GAP else None


def _partners(image: Path) -> list[Path]:
    """Where an RGB-D layout keeps the depth of colour frame ``image``: ``x.depth.png`` beside ``x.color.*``
    (7-Scenes), ``x_depth.png`` beside ``x_color.*``, ``depth/<stem>.png`` beside ``rgb|color/<name>``
    (ScanNet exports), or for TUM's ``rgb/<time>.png`` the ``depth/`` frame nearest in time; names in any
    case (``FRAME-1.COLOR.JPG`` beside ``FRAME-1.DEPTH.PNG``)."""
    name, out = image.name, []
    for colour, depth in ((".color.", ".depth."), ("_color.", "_depth.")):
        if colour in name.lower():
            i = name.lower().index(colour)
            out.append(image.parent / f"{name[:i]}{depth}png")
    if image.parent.name.lower() in ("rgb", "color", "colour", "image", "images"):
        depth_folder = sibling(image.parent.parent, "depth")
        if depth_folder is not None:
            out.append(depth_folder / f"{image.stem}.png")
    tum = _nearest_in_time(image)
    return [sibling(p.parent, p.name) or p for p in out] + ([tum] if tum is not None else [])


def depth_file_for(image: Path, folder: Path | None) -> Path | None:
    """The depth file of ``image``: in ``folder`` (``--known-depth``) the file named after the image's stem
    (``.npy`` or ``.png``, also with ``.color``/``_color`` read as ``.depth``/``_depth``); without a folder,
    its RGB-D partner beside it. None where there is none."""
    if folder is None:
        return next((p for p in _partners(image) if p.is_file()), None)
    stems = [image.stem] + [p.name.rsplit(".", 1)[0] for p in _partners(image)]
    for stem in stems:
        for suffix in (".npy", ".png"):
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
    return None


def read_depth(path: Path, hw: tuple[int, int], per_metre: float | None = None) -> np.ndarray:
    """z-depth in metres (H, W) float32 from ``path`` (``.npy`` in metres, 16-bit ``.png`` in millimetres, TUM's
    in fifths of a millimetre, or ``per_metre`` stored values per metre), 0 where unknown (0, and 65535 in a
    PNG); checked against the image's size ``hw``. A :class:`UsageError` naming the file for anything else,
    an integer ``.npy`` without ``per_metre`` included (its unit cannot be metres)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            try:
                raw = np.load(path, allow_pickle=False)
            except ValueError:
                raise ValueError("not a readable .npy array") from None
            if np.issubdtype(raw.dtype, np.integer) and per_metre is None:
                raise ValueError(f"holds integers ({raw.dtype}), which are not metres: give --depth-scale, the "
                                 "stored values per metre (1000 for millimetres)")
        elif suffix == ".png":
            raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if raw is None:
                raise ValueError("not a readable PNG")
            if raw.dtype != np.uint16 or raw.ndim != 2:
                raise ValueError(f"a {raw.dtype} PNG with {1 if raw.ndim == 2 else raw.shape[2]} channel(s), not "
                                 "one 16-bit channel")
        else:
            raise ValueError("not a .npy or 16-bit .png depth file")
    except (OSError, ValueError) as e:
        raise UsageError(f"known depth {path}: {str(e).splitlines()[0][:150]}") from None
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.number):
        raise UsageError(f"known depth {path}: expected one depth map (H, W) of numbers, got {raw.dtype} {raw.shape}")
    if tuple(raw.shape) != tuple(hw):
        raise UsageError(f"known depth {path}: {raw.shape[1]}x{raw.shape[0]}, but its image is {hw[1]}x{hw[0]}")
    depth = raw.astype(np.float64)
    if suffix == ".png":
        depth[raw == NO_RETURN] = 0  # the sensor's "no measurement", not 65 m
    depth /= per_metre or per_metre_of(path)
    if not np.isfinite(depth).all():
        raise UsageError(f"known depth {path}: {int((~np.isfinite(depth)).sum())} values are not finite (NaN or "
                         "inf); write 0 where the depth is unknown")
    if (depth < 0).any():
        raise UsageError(f"known depth {path}: {int((depth < 0).sum())} negative values; write 0 where the depth "
                         "is unknown")
    return depth.astype(np.float32)


def put_known_depth(pred, depths):
    """``pred`` (:class:`heads.pointmap.predictions.Predictions`) with each view's known depth (original pixels, metres, 0
    unknown; None: no file) in place of the network's where it is known, the network's fitted to it
    elsewhere, and the points moved with it, in ``pred``'s own arrays (which the caller gives up). ``depths``:
    one per view, in order, read as they are used (a generator keeps one in memory). Returns the predictions,
    which pixels hold known depth (V, H, W) bool, and a report (views with depth, the share of their pixels
    it covers)."""
    V, H, W = pred.depth_z.shape
    measured = active().array("measured", (V, H, W), bool)
    rng = np.random.default_rng(0)
    u_, v_ = pixel_grid(H, W)
    with_depth, covered = 0, 0
    for v, known in enumerate(depths):
        if known is None:
            continue
        depth_z = pred.depth_z[v].astype(np.float64)
        small = cv2.resize(known, (W, H), interpolation=cv2.INTER_NEAREST)  # no mixing across edges
        ok = small > 0
        if ok.any():
            vv, uu = np.nonzero(ok)
            pick = rng.choice(len(vv), min(len(vv), FIT_SAMPLES), replace=False)
            field, _ = fit_depth_field(depth_z, np.stack([uu[pick], vv[pick]], 1).astype(np.float64),
                                       small[vv[pick], uu[pick]].astype(np.float64), FieldFit())
            depth_z = np.where(ok, small, depth_z * field)
        measured[v] = ok
        with_depth, covered = with_depth + 1, covered + int(ok.sum())
        K = pred.K[v].astype(np.float64)  # the given K, at the processing size: known depth comes with one
        pred.pts3d[v] = world_points(depth_z, pixel_rays(K, u_, v_), pred.cam2world[v].astype(np.float64))
        pred.depth_z[v] = depth_z
        tick()
    report = {"views": with_depth, "covered": round(covered / (with_depth * H * W), 4) if with_depth else 0.0}
    return pred, measured, report


PLAUSIBLE_DEPTH_M = (0.02, 100.0)  # a scene's median measured depth, metres, from a phone's LiDAR to a street


def check_known_depth(images: list[Path], sizes: list[tuple[int, int] | None], folder: Path | None,
                      per_metre: float | None, required: bool) -> tuple[list[Path | None], list[Path]]:
    """Each image's depth file, every one read and checked now (before any work); None for an image of
    size None (unreadable), or whose file holds no valid pixel (all 0: no measurement; those files come
    second). With ``required`` (a
    ``--known-depth`` folder) an image without a file is an error naming the file looked for. Depth whose
    median over every file lies outside :data:`PLAUSIBLE_DEPTH_M` is refused, naming the unit it likely is
    (millimetres read as metres, or a --depth-scale off by 1000)."""
    files, medians, empty = [], [], []
    for image, hw in zip(images, sizes):
        if hw is None:  # an unreadable image: it fails as an input, not as its depth's
            files.append(None)
            continue
        found = depth_file_for(image, folder)
        if found is None and required:
            raise UsageError(f"--known-depth {folder}: no depth file for {image.name} "
                             f"(looked for {image.stem}.npy or {image.stem}.png)")
        if found is not None:
            depth = read_depth(found, hw, per_metre)
            valid = depth[depth > 0]
            if not valid.size:
                empty.append(found)
                found = None  # no measurement at all: the view keeps the network's depth
            else:
                medians.append((float(np.median(valid)), found))
        files.append(found)
    if medians:
        median = float(np.median([m for m, _ in medians]))
        lo, hi = PLAUSIBLE_DEPTH_M
        if not lo <= median <= hi:
            likely = ("millimetres read as metres: give --depth-scale 1000" if median > hi else
                      "metres read as millimetres, or a --depth-scale 1000x too large")
            raise UsageError(f"the known depth's median is {median:.4g} m ({medians[0][1].name} and "
                             f"{len(medians) - 1} more), no scene's: likely {likely}")
    return files, empty

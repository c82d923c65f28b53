"""The camera poses an RGB-D layout records beside its colour frames, read as known cameras.

Where each layout keeps a colour frame's pose (camera-to-world, metres):

- 7-Scenes: ``<stem>.pose.txt`` beside ``<stem>.color.*`` (a 4x4 matrix);
- ScanNet exports: ``pose/<stem>.txt`` beside ``color/`` (a 4x4 matrix);
- the ``generic-rgbd`` layout: ``poses/<stem>.txt`` beside ``images/`` (a 4x4 matrix);
- TUM RGB-D: ``groundtruth.txt`` beside ``rgb/`` (``time tx ty tz qx qy qz qw`` lines), the line nearest in
  time to the frame's name, within 0.02 s as TUM's ``associate.py`` pairs them.

Recorded rotations are often stored to a few digits (7-Scenes' are orthonormal to about 3e-4): up to
``ROTATION_TOLERANCE`` they are made exactly orthonormal, and how far the worst was is reported.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pixio_cli.inputs import sibling

from heads.geometry import rotation_from_quaternion

ROTATION_TOLERANCE = 1e-3  # |R^T R - I| a recorded rotation may be off by, and be made orthonormal
TUM_MAX_GAP = 0.02  # seconds, as TUM's associate.py


class PoseError(ValueError):
    """A pose file that is not a camera-to-world pose."""


def rigid(T: np.ndarray, where: str) -> tuple[np.ndarray, float]:
    """``T`` (4, 4) with its rotation made exactly orthonormal, and how far it was (max |R^T R - I|); a
    :class:`PoseError` naming ``where`` when it is no rigid pose within :data:`ROTATION_TOLERANCE`."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise PoseError(f"{where}: not a 4x4 matrix of finite numbers")
    R = T[:3, :3]
    off = float(np.abs(R.T @ R - np.eye(3)).max())
    if off > ROTATION_TOLERANCE or np.linalg.det(R) <= 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise PoseError(f"{where}: cam2world is not a rigid pose (a rotation, orthonormal to "
                        f"{ROTATION_TOLERANCE:g}; a translation; last row 0 0 0 1)")
    U, _, Vt = np.linalg.svd(R)
    out = T.copy()
    out[:3, :3] = U @ Vt
    return out, off


def pose_file_for(image: Path) -> Path | None:
    """The file holding colour frame ``image``'s pose as a 4x4 matrix in its layout (names in any case), or
    None."""
    name = image.name
    lower = name.lower()
    candidates = []
    if ".color." in lower:
        candidates.append((image.parent, name[:lower.index(".color.")] + ".pose.txt"))
    folder = image.parent.name.lower()
    for kind, poses in (({"color", "colour", "rgb"}, "pose"), ({"images"}, "poses")):
        found = sibling(image.parent.parent, poses) if folder in kind else None
        if found is not None:
            candidates.append((found, f"{image.stem}.txt"))
    for where, file in candidates:
        found = sibling(where, file)
        if found is not None and found.is_file():
            return found
    return None


@functools.lru_cache(maxsize=4)
def _groundtruth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """TUM's ``groundtruth.txt``: times (n,) and camera-to-world poses (n, 4, 4)."""
    rows = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            continue
        if len(values) == 8:
            rows.append(values)
    data = np.array(rows, np.float64).reshape(-1, 8)
    T = np.tile(np.eye(4), (len(data), 1, 1))
    T[:, :3, :3] = rotation_from_quaternion(data[:, 4:8])  # x y z w, as TUM writes them
    T[:, :3, 3] = data[:, 1:4]
    order = np.argsort(data[:, 0])
    return data[order, 0], T[order]


def _tum_pose(image: Path) -> np.ndarray | None:
    """The pose of TUM's ``rgb/<time>.png`` from ``groundtruth.txt``, nearest in time within TUM_MAX_GAP."""
    truth = image.parent.parent / "groundtruth.txt"
    if image.parent.name != "rgb" or not truth.is_file():
        return None
    try:
        t = float(image.stem)
    except ValueError:
        return None
    times, poses = _groundtruth(truth)
    if not len(times):
        return None
    i = int(np.argmin(np.abs(times - t)))
    return poses[i] if abs(times[i] - t) <= TUM_MAX_GAP else None


def recorded_pose(image: Path) -> np.ndarray | None:
    """Colour frame ``image``'s recorded camera-to-world pose (4, 4, metres) as its layout keeps it, or None;
    a :class:`PoseError` for a file that holds no pose."""
    file = pose_file_for(image)
    if file is not None:
        try:
            values = np.loadtxt(file, dtype=np.float64, ndmin=1).ravel()
        except (OSError, ValueError) as e:
            raise PoseError(f"{file}: cannot read it as a 4x4 pose ({str(e).splitlines()[0][:100]})") from None
        if values.size != 16:
            raise PoseError(f"{file}: {values.size} numbers, where a 4x4 pose has 16")
        return values.reshape(4, 4)
    return _tum_pose(image)

"""Multi-view RGB-D layouts: sequences of frames with depth, camera-to-world pose and intrinsics.

One reader per layout; the depth heads read their pairs from here too, so a
layout means the same thing for depth and for point maps.

- ``7scenes``: the real 7-Scenes layout, ``<scene>/seq-XX/frame-NNNNNN.color.png``
  (``.depth.png`` in millimetres, 65535 = no measurement, ``.pose.txt`` a 4x4
  camera-to-world matrix in metres), ``TrainSplit.txt`` / ``TestSplit.txt``
  naming the sequences (``sequence1`` -> ``seq-01``); K fx = fy = 585,
  cx = 320, cy = 240. The root may be one scene or a folder of scenes. A flat
  folder of ``frame-*.color.jpg`` (``../shared/data/rgbd-7scenes-redkitchen``)
  is one sequence whose frames >= 800 are the validation split, with K from
  ``camera-intrinsics.txt`` when present.
- ``generic-rgbd``: ``images/``, ``depth/`` (``--depth-scale`` stored values per
  metre, 0 = invalid), ``poses/<stem>.txt`` (4x4 camera-to-world) and ``K.txt``,
  optionally under ``<split>/``; or one sequence per sub-folder of ``<split>/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixio_cli.errors import InputError, UsageError
from pixio_cli.images import is_image


SEVENSCENES_K = np.array([[585.0, 0, 320], [0, 585.0, 240], [0, 0, 1]])
SEVENSCENES_HOLDOUT = 800  # flat folder: frames from this index on are the validation split
NO_RETURN = 65535  # a 16-bit depth PNG's "no measurement" (7-Scenes, Kinect tools), unknown like 0
SEVENSCENES_INVALID = NO_RETURN


@dataclass
class Frame:
    """One RGB-D frame: its image, its depth image, and its camera when the layout has one."""
    image: Path
    depth: Path
    cam2world: np.ndarray | None = None  # 4x4, metres
    K: np.ndarray | None = None  # 3x3, pixels of the image


@dataclass
class Sequence:
    """A sequence of frames and how its depth images are stored."""
    name: str
    frames: list[Frame] = field(default_factory=list)
    depth_scale: float = 1000.0  # stored value per metre
    invalid: int | None = None  # stored value that means "no measurement" (besides 0)

    def read_depth(self, frame: Frame) -> np.ndarray:
        """Depth in metres (float32); invalid pixels are 0."""
        import cv2

        raw = cv2.imread(str(frame.depth), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise InputError(f"{frame.depth}: cannot read the depth image")
        depth = depth_from_raw(raw, self.depth_scale, self.invalid)
        if not (depth > 0).any():
            raise InputError(f"{frame.depth}: no pixel has a depth (all are 0 or the invalid value)")
        return depth


def depth_from_raw(raw: np.ndarray, scale: float, invalid: int | None) -> np.ndarray:
    """Metres (float32) from a stored depth image (first channel) of ``scale`` values per metre; the
    ``invalid`` value becomes 0."""
    if raw.ndim == 3:
        raw = raw[..., 0]
    depth = raw.astype(np.float32) / scale
    if invalid is not None:
        depth[raw == invalid] = 0
    return depth


def _frame_number(path: Path) -> int:
    m = re.search(r"(\d+)", path.name)
    return int(m.group(1)) if m else -1


def _numbers(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """A matrix of finite numbers read from a text file; an :class:`InputError` naming the file otherwise."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).ravel()
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read it as {what} ({str(e).splitlines()[0][:100]})") from None
    if values.size != shape[0] * shape[1]:
        raise InputError(f"{path}: {values.size} numbers, where {what} has {shape[0] * shape[1]}")
    if not np.isfinite(values).all():
        raise InputError(f"{path}: {what} holds a value that is not a finite number")
    return values.reshape(shape)


def _intrinsics(path: Path) -> np.ndarray:
    K = _numbers(path, (3, 3), "a 3x3 K")
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
        raise InputError(f"{path}: not a pinhole K (positive fx, fy; last row 0 0 1)")
    return K


def _pose(path: Path) -> np.ndarray | None:
    """A 4x4 camera-to-world matrix, its rotation made exactly orthonormal (7-Scenes' are off by ~1e-4,
    which would make view 0 of a set not quite the identity in its own frame)."""
    if not path.exists():
        return None
    T = _numbers(path, (4, 4), "a 4x4 camera-to-world pose")
    if not np.allclose(T[3], [0, 0, 0, 1]) or abs(abs(np.linalg.det(T[:3, :3])) - 1) > 0.05:
        raise InputError(f"{path}: not a camera-to-world pose (a rotation, a translation, last row 0 0 0 1)")
    U, _, Vt = np.linalg.svd(T[:3, :3])
    T[:3, :3] = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    return T


def _sevenscenes_frames(folder: Path, K: np.ndarray) -> list[Frame]:
    frames = []
    for img in sorted(list(folder.glob("frame-*.color.png")) + list(folder.glob("frame-*.color.jpg")),
                      key=_frame_number):
        stem = img.name.split(".color.")[0]
        frames.append(Frame(img, folder / f"{stem}.depth.png", _pose(folder / f"{stem}.pose.txt"), K))
    return frames


def _split_file_sequences(scene: Path, split: str) -> list[str]:
    listing = scene / ("TrainSplit.txt" if split == "train" else "TestSplit.txt")
    names = []
    for line in listing.read_text().splitlines():
        m = re.search(r"(\d+)", line)
        if m:
            names.append(f"seq-{int(m.group(1)):02d}")
    return names


def sevenscenes(root: Path, split: str) -> list[Sequence]:
    """The sequences of a 7-Scenes root (real layout or the flat frame folder) for ``split``."""
    scenes = [root] if (root / "TrainSplit.txt").exists() else sorted(
        d for d in root.iterdir() if d.is_dir() and (d / "TrainSplit.txt").exists())
    if scenes:
        out = []
        for scene in scenes:
            for name in _split_file_sequences(scene, split):
                if (scene / name).is_dir():
                    out.append(Sequence(f"{scene.name}/{name}", _sevenscenes_frames(scene / name, SEVENSCENES_K),
                                        1000.0, SEVENSCENES_INVALID))
        return out
    kfile = root / "camera-intrinsics.txt"
    K = _intrinsics(kfile) if kfile.exists() else SEVENSCENES_K
    frames = [f for f in _sevenscenes_frames(root, K)
              if (_frame_number(f.image) >= SEVENSCENES_HOLDOUT) == (split != "train")]
    return [Sequence(root.name, frames, 1000.0, SEVENSCENES_INVALID)] if frames else []


def require_depth_scale(depth_scale: float | None, dataset: str) -> None:
    """A usage error unless a generic layout's --depth-scale is given and a positive number."""
    if depth_scale is None:
        raise UsageError(f"--dataset {dataset} needs --depth-scale (stored value per metre, e.g. 1000 for mm)")
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise UsageError(f"--depth-scale {depth_scale:g}: expected a positive number of stored values per metre")


def generic_rgbd(root: Path, split: str, depth_scale: float | None) -> list[Sequence]:
    """``images/ depth/ poses/ K.txt`` under ``<root>/<split>/`` or ``<root>/``, or one such folder per
    sequence under either. With ``train/`` or ``val/`` folders only the asked split's is read; without,
    ``<root>`` serves any split (the trainers refuse a held-out split that is their training data)."""
    require_depth_scale(depth_scale, "generic-rgbd")
    if any((root / s).is_dir() for s in ("train", "val")):  # split folders: only this split's, never the other's
        base = root / split
        if not base.is_dir():
            return []
    else:
        base = root  # one folder of data serves whichever split is asked for
    folders = [base] if (base / "images").is_dir() else sorted(d for d in base.iterdir() if (d / "images").is_dir())
    out = []
    for folder in folders:
        K = _intrinsics(folder / "K.txt") if (folder / "K.txt").exists() else None
        depth = {p.stem: p for p in (folder / "depth").iterdir() if is_image(p)} if (folder / "depth").is_dir() else {}
        frames = [Frame(img, depth[img.stem], _pose(folder / "poses" / f"{img.stem}.txt"), K)
                  for img in sorted((folder / "images").iterdir(), key=lambda p: p.name)
                  if is_image(img) and img.stem in depth]
        if frames:
            out.append(Sequence(folder.name, frames, depth_scale))
    return out


def require_cameras(sequences: list[Sequence]) -> None:
    """An :class:`InputError` naming the first sequence with a frame that lacks its pose or intrinsics
    (what training and scoring point maps need)."""
    for seq in sequences:
        for f in seq.frames:
            if f.cam2world is None or f.K is None:
                what = "pose" if f.cam2world is None else "intrinsics (K.txt)"
                raise InputError(f"{seq.name}: {f.image.name} has no {what}; point maps need both for every frame")


def shared_frames(a: list[Sequence], b: list[Sequence]) -> int:
    """How many frames two lists of sequences have in common (a held-out split must have none)."""
    return len({f.image.resolve() for s in a for f in s.frames} & {f.image.resolve() for s in b for f in s.frames})


def find_sequences(dataset: str, root: str | Path, split: str, depth_scale: float | None = None) -> list[Sequence]:
    """The sequences of a multi-view layout (``7scenes`` or ``generic-rgbd``) for ``split``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a folder")
    if dataset == "7scenes":
        if depth_scale is not None:
            raise UsageError("--depth-scale is for --dataset generic-rgbd: 7-Scenes depth is in millimetres")
        return sevenscenes(root, split)
    if dataset == "generic-rgbd":
        return generic_rgbd(root, split, depth_scale)
    raise UsageError(f"--dataset {dataset}: multi-view layouts are 7scenes and generic-rgbd")

"""Long sequences predicted in chunks of views, each aligned to the scene so far on the views it shares with
the previous chunk (:func:`predict_in_chunks`); the similarity that moves a chunk's predictions
(:func:`transformed`); and the chunks kept beside ``--save-predictions`` so a killed run resumes
(:class:`KeptChunks`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Optional

import numpy as np

from pixio_cli.errors import UsageError
from pixio_cli.writers import write_text

from heads.geometry import apply_sim3_to_poses, ransac_umeyama
from heads.pointmap.predictions import Predictions
from heads.recon.workspace import active, tick


def chunk_ranges(n: int, size: int, overlap: int) -> list[list[int]]:
    """View indices of consecutive chunks of ``size`` views, each sharing ``overlap`` views with the one
    before; one chunk when everything fits."""
    if size < 2 or not 0 < overlap < size:
        if n <= size:
            return [list(range(n))]
        raise UsageError(f"--chunk {size} --overlap {overlap}: need chunk >= 2 and 0 < overlap < chunk")
    if n <= size:
        return [list(range(n))]
    out, start = [], 0
    while True:
        end = min(start + size, n)
        out.append(list(range(max(0, end - size), end)))
        if end == n:
            return out
        start = end - overlap


def align_to(scene: Predictions, part: Predictions, shared: list[tuple[int, int]], with_scale: bool,
             max_pairs: int = 20000, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray, int]:
    """(s, R, t, pixel pairs used) mapping ``part``'s frame onto ``scene``'s from the views both hold,
    given as (view in scene, view in part): the same pixel of the same view is a correspondence
    (Umeyama inside RANSAC on the confident ones)."""

    idx = corresponding_pixels(scene, part, shared, max_pairs=max_pairs, seed=seed)
    a, b = points_at_pixels(scene, [i for i, _ in shared], idx), points_at_pixels(part, [j for _, j in shared], idx)
    s, R, t, _ = ransac_umeyama(b, a, with_scale=with_scale, seed=seed)
    return s, R, t, len(idx)


def corresponding_pixels(scene: Predictions, part: Predictions, shared: list[tuple[int, int]], *,
                         max_pairs: int = 20000, seed: int = 0) -> np.ndarray:
    """The pixels :func:`align_to` pairs, as indices into the shared views' pixels laid end to end: both
    finite, in both masks (unless they disagree), of at least the median confidence, at most ``max_pairs``
    drawn with ``seed``. Made a view at a time, with no copy of the views' points."""
    finite = np.concatenate([(np.isfinite(scene.pts3d[i]).all(-1) & np.isfinite(part.pts3d[j]).all(-1)).reshape(-1)
                             for i, j in shared])
    keep = finite & np.concatenate([(scene.mask[i] & part.mask[j]).reshape(-1) for i, j in shared])
    if keep.sum() < 100:  # the masks disagree: fall back on confidence alone
        keep = finite
    conf = np.concatenate([np.minimum(scene.conf[i], part.conf[j]).reshape(-1) for i, j in shared])
    keep &= conf >= np.median(conf[keep])
    idx = np.flatnonzero(keep)
    if len(idx) > max_pairs:
        idx = np.random.default_rng(seed).choice(idx, max_pairs, replace=False)
    return idx


def points_at_pixels(pred: Predictions, views: list[int], idx: np.ndarray) -> np.ndarray:
    """(n, 3): the points of ``views``' pixels laid end to end, at ``idx`` (in its order)."""
    v, pixel = np.divmod(idx, pred.depth_z.shape[1] * pred.depth_z.shape[2])
    out = np.empty((len(idx), 3), pred.pts3d.dtype)
    for k, view in enumerate(views):
        out[v == k] = pred.pts3d[view].reshape(-1, 3)[pixel[v == k]]
    return out


def _per_view(pred: Predictions) -> list[str]:
    return [f.name for f in fields(Predictions) if f.name not in ("images", "scale", "metric")
            and getattr(pred, f.name) is not None]


def predict_in_chunks(run, n: int, size: int, overlap: int, done: dict | None = None, on_chunk=None,
                      seed: int = 0) -> tuple[Predictions, list[dict]]:
    """One scene from ``run(view_indices) -> Predictions`` over chunks of the sequence, each aligned to the
    scene so far on its overlap (a similarity, or rigid for a metric model; RANSAC seeded by ``seed``).
    ``done`` maps chunk number -> Predictions already made, or the file :meth:`Predictions.save` kept them in
    (resuming); ``on_chunk(k, pred)`` sees each new one. The scene's arrays are made once for all ``n`` views
    (in the workspace, :mod:`heads.recon.workspace`) and filled chunk by chunk, so memory holds one chunk, not copies of the scene."""
    ranges = chunk_ranges(n, size, overlap)
    scene, report, have, ws = None, [], 0, active()
    for k, views in enumerate(ranges):
        part = done[k] if done and k in done else run(views)
        if isinstance(part, (str, Path)):
            part = Predictions.load(part)
        if on_chunk is not None and not (done and k in done):
            on_chunk(k, part)
        if scene is None:
            if len(ranges) == 1:
                return part, [{"views": [views[0], views[-1]], "scale": 1.0}]
            scene = replace(part, images=[""] * n, **{name: ws.array(name, (n,) + getattr(part, name).shape[1:],
                                                                         getattr(part, name).dtype)
                                                       for name in _per_view(part)})
            report.append({"views": [views[0], views[-1]], "scale": 1.0})
        else:  # the scene holds views 0..have-1, in order
            shared = [(i, j) for j, i in enumerate(views) if i < have]
            s, R, t, pairs = align_to(scene, part, shared, with_scale=not part.metric, seed=seed)
            part = transformed(part, s, R, t)
            report.append({"views": [views[0], views[-1]], "scale": round(float(s), 5), "pairs": pairs})
        new = [j for j, i in enumerate(views) if i >= have]
        for name in _per_view(scene):
            if getattr(part, name) is not None:  # a chunk kept by an earlier version may lack the descriptors
                getattr(scene, name)[[views[j] for j in new]] = getattr(part, name)[new]
        for j in new:
            scene.images[views[j]] = part.images[j]
        have = views[-1] + 1
        ws.release()
    return scene, report


# ---------------------------------------------------------------------------- cameras from matching


class KeptChunks:
    """Chunk predictions kept beside --save-predictions while a chunked run goes, so a rerun with the same
    settings and frames resumes from the chunks it finished."""

    def __init__(self, target: Optional[Path], settings: dict) -> None:

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

        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "settings.json").exists() or (self.folder / "settings.json").read_text() != self.settings:
            for old in self.folder.glob("chunk-*.npz"):
                old.unlink()
            write_text(self.folder / "settings.json", self.settings)
        pred.save(self.folder / f"chunk-{k:04d}.npz")

    def clear(self) -> None:
        """Removes the kept chunks (the scene they made is written)."""

        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)


def transformed(pred: Predictions, s: float, R: np.ndarray, t: np.ndarray, *, in_place: bool = False,
                views: list[int] | None = None) -> Predictions:
    """``pred`` with its world mapped by x -> s R x + t (depths scale by s), for every view or only ``views``;
    ``in_place``: in ``pred``'s own arrays, with no copy of the scene."""

    out = pred if in_place else replace(pred, pts3d=pred.pts3d.astype(np.float32, copy=True),
                                        depth_z=pred.depth_z.astype(np.float32, copy=True),
                                        cam2world=pred.cam2world.astype(np.float32, copy=True))
    views = list(range(len(pred.pts3d))) if views is None else list(views)
    for v in views:  # float64 for one view at a time, not for all
        out.pts3d[v] = s * out.pts3d[v].astype(np.float64) @ R.T + t
        out.depth_z[v] = out.depth_z[v] * s
        tick()
    out.cam2world[views] = apply_sim3_to_poses(out.cam2world[views].astype(np.float64), s, R, t)
    return out

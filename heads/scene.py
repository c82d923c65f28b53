"""One run of a point-map model over the views of a scene: its predictions as arrays, saved and read
back by ``pixio recon3d``, ``pixio depth`` and evaluation.

Every array is at the processing size (H, W) the model saw; ``K`` is in those
pixels and ``K_original`` in each input image's own pixels. Poses are
camera-to-world (OpenCV axes: x right, y down, z forward) in view 0's
predicted frame; lengths are metres when the model is metric.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from pixio_cli.errors import InputError, UsageError

from .geometry import scale_intrinsics
from .pointmap import PointMapModel, intrinsics, rays_from_intrinsics


@dataclass
class Predictions:
    images: list[str]  # the input files (or video#frameN), in view order
    pts3d: np.ndarray  # (V, H, W, 3) float32
    depth_z: np.ndarray  # (V, H, W) float32
    conf: np.ndarray  # (V, H, W) float32, >= 1
    mask: np.ndarray  # (V, H, W) bool: the model's non-ambiguous mask
    cam2world: np.ndarray  # (V, 4, 4) float32
    K: np.ndarray  # (V, 3, 3) float32, processing pixels
    K_original: np.ndarray  # (V, 3, 3) float32, original pixels
    original_hw: np.ndarray  # (V, 2) int
    scale: float  # the model's metric scale (already applied to every length)
    metric: bool

    def save(self, path: str | Path) -> None:
        """A .npz, atomically: raw predictions before any cleaning."""
        from pixio_cli.writers import write_npz

        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("images", "scale", "metric")}
        arrays.update(images=np.array(self.images), scale=np.float32(self.scale), metric=np.bool_(self.metric))
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        return cls(images=[str(s) for s in d.pop("images")], scale=float(d.pop("scale")),
                   metric=bool(d.pop("metric")), **d)


def predict(model: PointMapModel, pixels: torch.Tensor, names: list[str], original_hw: list[tuple[int, int]],
            K_original: list[np.ndarray] | None = None, metric: bool = True) -> Predictions:
    """Run ``model`` on V views (V, 3, H, W) (normalised, on the model's device; caller sets precision).

    ``K_original``: known intrinsics per view in its original pixels; they are
    given to the model (as MapAnything takes them) and reported as they are.
    """
    V, _, H, W = pixels.shape
    rays = None
    if K_original is not None:
        K_proc = np.stack([scale_intrinsics(k, hw, (H, W)) for k, hw in zip(K_original, original_hw)])
        rays = rays_from_intrinsics(torch.from_numpy(K_proc).float().to(pixels.device), H, W)[None]
    out = model(pixels[None], rays)
    pred_rays = out.rays[0].float().cpu().numpy()
    K = intrinsics(pred_rays) if K_original is None else K_proc
    K_orig = np.stack([scale_intrinsics(k, (H, W), hw) for k, hw in zip(K, original_hw)]) \
        if K_original is None else np.stack(K_original)
    return Predictions(
        images=list(names), pts3d=out.pts3d[0].float().cpu().numpy(), depth_z=out.depth_z[0].float().cpu().numpy(),
        conf=out.conf[0].float().cpu().numpy(), mask=(out.mask_logits[0] > 0).cpu().numpy(),
        cam2world=out.cam2world[0].float().cpu().numpy(), K=K.astype(np.float32), K_original=K_orig.astype(np.float32),
        original_hw=np.array(original_hw, np.int64), scale=float(out.scale[0]), metric=metric)


def read_intrinsics(path: str | Path, n_views: int) -> list[np.ndarray]:
    """``--intrinsics FILE``: one 3x3 K (text, .npy or JSON) for every view, or a JSON list of one 3x3 per
    view, in the original images' pixels."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            data = np.array(json.loads(path.read_text()), dtype=np.float64)
        elif path.suffix == ".npy":
            data = np.load(path, allow_pickle=False).astype(np.float64)
        else:
            data = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise InputError(f"--intrinsics {path}: cannot read it ({str(e).splitlines()[0][:120]})") from None
    if data.shape == (3, 3):
        data = np.repeat(data[None], n_views, axis=0)
    if data.ndim != 3 or data.shape[1:] != (3, 3):
        raise UsageError(f"--intrinsics {path}: expected one 3x3 matrix or a list of 3x3 matrices, got shape "
                         f"{'x'.join(map(str, data.shape))}")
    if len(data) != n_views:
        raise UsageError(f"--intrinsics {path}: {len(data)} matrices for {n_views} images")
    bad = [i for i, k in enumerate(data) if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], [0, 0, 1]))]
    if bad:
        raise UsageError(f"--intrinsics {path}: matrix {bad[0]} is not a pinhole K (positive fx, fy; last row 0 0 1)")
    return list(data)


def scene_points(pred: Predictions, colours: np.ndarray, keep: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """All views' points (N, 3) and their colours (N, 3) uint8 where ``keep`` (default: the model's
    mask and finite points)."""
    if keep is None:
        keep = pred.mask
    keep = keep & np.isfinite(pred.pts3d).all(-1)
    return pred.pts3d[keep], colours[keep]


# ---------------------------------------------------------------------------- evaluation


def view_sets(n_frames: int, views: int, gap: int) -> list[list[int]]:
    """Indices of sets of ``views`` frames ``gap`` apart, one set after another without sharing frames."""
    return [[start + j * gap for j in range(views)] for start in range(0, n_frames - (views - 1) * gap, views * gap)]


def ground_truth(depths: list[np.ndarray], Ks: list[np.ndarray], cam2world: list[np.ndarray],
                 hw: tuple[int, int]) -> tuple[dict, np.ndarray]:
    """Ground truth of one view set at the processing size: points in view 0's frame, camera-frame points,
    poses relative to view 0, and the valid mask (depth > 0)."""
    import cv2

    from .geometry import depth_to_points, relative_to_first, scale_intrinsics, transform

    h, w = hw
    rel = relative_to_first(np.stack(cam2world).astype(np.float64))
    pts_cam, pts, valid = [], [], []
    for d, K, T in zip(depths, Ks, rel):
        d = cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST) if d.shape != (h, w) else d
        cam = depth_to_points(d.astype(np.float64), scale_intrinsics(K, depths[0].shape, hw))
        pts_cam.append(cam)
        pts.append(transform(cam, T))
        valid.append(d > 0)
    return {"pts3d": np.stack(pts), "pts3d_cam": np.stack(pts_cam), "cam2world": rel}, np.stack(valid)


def as_evaluated(pred: Predictions) -> dict:
    """Predictions in view 0's predicted frame, as the metrics take them."""
    from .geometry import invert_pose, relative_to_first, transform

    T = pred.cam2world.astype(np.float64)
    to_first = invert_pose(T[0])
    pts = transform(pred.pts3d.astype(np.float64), to_first)
    cam = np.stack([transform(p, invert_pose(t)) for p, t in zip(pred.pts3d.astype(np.float64), T)])
    return {"pts3d": pts, "pts3d_cam": cam, "cam2world": relative_to_first(T), "metric": pred.metric}


def evaluate_pointmap(model: PointMapModel, sequences: list, engine, views: int = 4, gap: int = 5,
                      policy=None, limit: int | None = None, metric: bool = True) -> dict:
    """MapAnything's multi-view metrics (:func:`heads.metrics.pointmap_metrics`) averaged over view sets
    of every sequence, predicted as `pixio recon3d` predicts them."""
    from pixio_cli.engine import autocast
    from pixio_cli.images import ResizePolicy, load_for_model

    from .metrics import pointmap_metrics

    policy = policy or ResizePolicy(short=384)
    sums: dict[str, float] = {}
    n_sets = 0
    for seq in sequences:
        for idx in view_sets(len(seq.frames), views, gap):
            if limit is not None and n_sets >= limit:
                break
            frames = [seq.frames[i] for i in idx]
            if any(f.cam2world is None or f.K is None for f in frames):
                raise InputError(f"{seq.name}: frames without a pose or intrinsics cannot be scored")
            loaded = [load_for_model(f.image, policy) for f in frames]
            images = [img for img, _ in loaded]
            with torch.inference_mode(), autocast(engine.device, engine.dtype):
                pred = predict(model, engine.to_pixels(images), [str(f.image) for f in frames],
                               [hw for _, hw in loaded], metric=metric)
            gt, valid = ground_truth([seq.read_depth(f) for f in frames], [f.K for f in frames],
                                     [f.cam2world for f in frames], images[0].shape[:2])
            for k, v in pointmap_metrics(as_evaluated(pred), gt, valid).items():
                sums[k] = sums.get(k, 0.0) + v
            n_sets += 1
    if not n_sets:
        raise InputError(f"no set of {views} frames {gap} apart in {len(sequences)} sequence(s)")
    return {**{k: v / n_sets for k, v in sums.items()}, "sets": n_sets, "views": views, "gap": gap}

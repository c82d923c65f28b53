"""A point-map model's output on the views of one scene, as arrays (saved and read back by ``pixio recon3d``
and evaluation), and the run that makes it.

Every array is at the processing size (H, W) the model saw; ``K`` is in those
pixels and ``K_original`` in each input image's own pixels. Poses are
camera-to-world (OpenCV axes: x right, y down, z forward) in view 0's
predicted frame (or the given cameras'); lengths are metres when the model is metric.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from pixio_cli.writers import write_npz

from heads.geometry import scale_intrinsics, transform
from heads.pointmap.cameras import intrinsics, rays_from_intrinsics
from heads.pointmap.model import PointMapModel


@dataclass
class Predictions:
    """The point-map model's output on a scene's V views at the processing size (H, W), as arrays."""
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
    descriptor: np.ndarray | None = None  # (V, D) float32: each view's mean encoder token, unit length

    def save(self, path: str | Path) -> None:
        """A .npz, atomically: raw predictions before any cleaning."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in ("images", "scale", "metric") and getattr(self, f.name) is not None}
        arrays.update(images=np.array(self.images), scale=np.float32(self.scale), metric=np.bool_(self.metric))
        write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Predictions":
        """Predictions saved by :meth:`save`."""
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        return cls(images=[str(s) for s in d.pop("images")], scale=float(d.pop("scale")),
                   metric=bool(d.pop("metric")), **d)


def predict(model: PointMapModel, pixels: torch.Tensor, names: list[str], original_hw: list[tuple[int, int]],
            K_original: list[np.ndarray] | None = None, depth_z: list[np.ndarray | None] | None = None,
            cam2world: np.ndarray | None = None) -> Predictions:
    """Run ``model`` on V views (V, 3, H, W) (normalised, on the model's device; caller sets precision).

    ``K_original``: known intrinsics per view in its original pixels; they are
    given to the model (as MapAnything takes them) and reported as they are.
    A model with MapAnything's encoders of them also takes known ``depth_z`` per
    view (H, W) in metres at the processing size, 0 unknown (None: none for that
    view), and known ``cam2world`` (V, 4, 4) in metres; its outputs, in the
    first view's frame, are then put in the frame of the given cameras.
    """
    V, _, H, W = pixels.shape
    rays = depth_ray = poses = None
    if K_original is not None:
        K_proc = np.stack([scale_intrinsics(k, hw, (H, W)) for k, hw in zip(K_original, original_hw)])
        rays = rays_from_intrinsics(torch.from_numpy(K_proc).float().to(pixels.device), H, W)[None]
    if depth_z is not None and any(d is not None for d in depth_z):
        z = torch.from_numpy(np.stack([d if d is not None else np.zeros((H, W), np.float32) for d in depth_z]))
        depth_ray = (z.to(pixels.device) * (rays[0] / rays[0][..., 2:]).norm(dim=-1))[None]
    if cam2world is not None:
        poses = torch.from_numpy(np.asarray(cam2world, np.float32)).to(pixels.device)[None]
    out = model(pixels[None], rays, depth_ray, poses) if (depth_ray is not None or poses is not None) \
        else model(pixels[None], rays)
    pts3d, c2w = out.pts3d[0].float().cpu().numpy(), out.cam2world[0].float().cpu().numpy()
    if poses is not None:  # from the first view's frame to the given cameras'
        T = np.asarray(cam2world[0], np.float64)
        pts3d = transform(pts3d.astype(np.float64), T).astype(np.float32)
        c2w = (T @ c2w.astype(np.float64)).astype(np.float32)
    pred_rays = out.rays[0].float().cpu().numpy()
    K = intrinsics(pred_rays) if K_original is None else K_proc
    K_orig = np.stack([scale_intrinsics(k, (H, W), hw) for k, hw in zip(K, original_hw)]) \
        if K_original is None else np.stack(K_original)
    return Predictions(
        images=list(names), pts3d=pts3d, depth_z=out.depth_z[0].float().cpu().numpy(),
        conf=out.conf[0].float().cpu().numpy(), mask=(out.mask_logits[0] > 0).cpu().numpy(),
        cam2world=c2w, K=K.astype(np.float32), K_original=K_orig.astype(np.float32),
        original_hw=np.array(original_hw, np.int64), scale=float(out.scale[0]), metric=model.metric,
        descriptor=out.descriptor[0].float().cpu().numpy() if out.descriptor is not None else None)

"""Cameras and rotations as the point-map model takes and gives them: (x, y, z, w) quaternions and rotation
matrices, and unit rays from intrinsics, on tensors; intrinsics fitted to predicted rays, on arrays.
Conventions as :mod:`heads.geometry`'s (whose NumPy functions these mirror)."""

from __future__ import annotations

import numpy as np
import torch

from heads.geometry import intrinsics_from_rays


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (..., 4) in (x, y, z, w) order with w >= 0 from rotation matrices (..., 3, 3)."""
    m = R.reshape(-1, 3, 3)
    trace = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = torch.stack([  # 4 |q_i| ** 2 for i = w, x, y, z; the largest is the stable one to divide by
        1 + trace, 1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], 1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
        1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2]], -1)
    best = cands.argmax(-1)
    q = torch.empty(len(m), 4, dtype=m.dtype, device=m.device)  # x, y, z, w
    for i, (a, b, c, d) in enumerate([  # w, x, y, z times 4 * q_i for each choice of i
        (cands[:, 0], m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]),
        (m[:, 2, 1] - m[:, 1, 2], cands[:, 1], m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]),
        (m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], cands[:, 2], m[:, 1, 2] + m[:, 2, 1]),
        (m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], cands[:, 3])]):
        sel = best == i
        k = 0.5 / cands[sel, i].clamp(min=1e-12).sqrt()
        q[sel] = torch.stack([b[sel] * k, c[sel] * k, d[sel] * k, a[sel] * k], -1)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, 3:] < 0, -q, q)
    return q.reshape(*R.shape[:-2], 4)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Hamilton product a b of quaternions (..., 4) in (x, y, z, w) order."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz], -1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from unit quaternions (..., 4) in (x, y, z, w) order."""
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def rays_from_intrinsics(K: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Unit rays (..., h, w, 3) of cameras K (..., 3, 3), pixel centres at integer coordinates."""
    v, u = torch.meshgrid(torch.arange(h, dtype=K.dtype, device=K.device),
                          torch.arange(w, dtype=K.dtype, device=K.device), indexing="ij")
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    d = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u - cx)], -1)
    return d / d.norm(dim=-1, keepdim=True)


def intrinsics(rays: np.ndarray) -> np.ndarray:
    """K (..., 3, 3) from rays (..., H, W, 3) (MapAnything's least-squares fit, per view)."""
    flat = rays.reshape(-1, *rays.shape[-3:])
    return np.stack([intrinsics_from_rays(r) for r in flat]).reshape(*rays.shape[:-3], 3, 3)

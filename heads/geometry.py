"""Multi-view geometry as plain functions: rays, depth and points, poses, alignment.

Conventions everywhere: OpenCV cameras (x right, y down, z forward), 4x4
camera-to-world matrices, pixel centres at integer coordinates (u, v) with K
in the pixels of the image it describes, metres when the data is metric.
Arrays are NumPy, float64 unless said otherwise; batched inputs carry leading
dimensions. The points' files are :mod:`heads.writers3d`'s, a scene's cleaning
:mod:`heads.recon.cleaning`'s, its preview picture :mod:`heads.recon.preview`'s.
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------------------- cameras


def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel coordinates of an h x w image, each (h, w)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return u, v


def pixel_rays(K: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The normalised coordinates x/z, y/z (..., 2) of pixels (u, v) (each (...)) of a pinhole camera K:
    the ray through each pixel, as the camera-frame point at z = 1. The one pixel-to-ray in the project."""
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]], -1)


def ray_directions(K: np.ndarray, h: int, w: int) -> np.ndarray:
    """Unit ray directions (h, w, 3) in the camera frame for intrinsics K."""
    u, v = pixel_grid(h, w)
    d = np.concatenate([pixel_rays(K, u, v), np.ones_like(u)[..., None]], -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def intrinsics_from_rays(rays: np.ndarray, step: int | None = None) -> np.ndarray:
    """K (3, 3) of the pinhole camera closest to per-pixel ray directions (h, w, 3).

    MapAnything's fit: on every ``step``-th row and column (default: about 50
    of each) u = cx + fx x/z and v = cy + fy y/z by least squares. For rays of a
    pinhole camera any fit is exact; for a network's rays this one is what
    MapAnything reports.
    """
    h, w = rays.shape[:2]
    sh, sw = (step, step) if step else (max(1, h // 50), max(1, w // 50))
    r = rays[::sh, ::sw].astype(np.float64)
    u, v = pixel_grid(h, w)
    u, v = u[::sh, ::sw].ravel(), v[::sh, ::sw].ravel()
    fx, cx = np.polyfit((r[..., 0] / r[..., 2]).ravel(), u, 1)
    fy, cy = np.polyfit((r[..., 1] / r[..., 2]).ravel(), v, 1)
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


def scale_intrinsics(K: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """K of the same camera for an image resized from ``from_hw`` to ``to_hw`` (pixel centres kept)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = np.array(K, np.float64, copy=True)
    out[0, 0] *= sx
    out[1, 1] *= sy
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def camera_points(depth: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) of z-depths (...) along normalised rays (..., 2) (:func:`pixel_rays`)."""
    return np.concatenate([rays * depth[..., None], depth[..., None]], -1)


def depth_to_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (h, w, 3) from a z-depth map (h, w) of a pinhole camera K."""
    return camera_points(depth, pixel_rays(K, *pixel_grid(*depth.shape)))


def world_points(depth: np.ndarray, rays: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """World points (..., 3) of z-depths (...) along normalised rays (..., 2) of a camera at ``cam2world``:
    the one back-projection (give float64 arrays: maps stored in float32 are cast by the caller)."""
    return transform(camera_points(depth, rays), cam2world)


def to_camera(points: np.ndarray, cam2world: np.ndarray) -> np.ndarray:
    """Camera-frame coordinates (..., 3) of world points (..., 3) for a camera at ``cam2world`` (rigid)."""
    return (points - cam2world[:3, 3]) @ cam2world[:3, :3]


def camera_pixels(cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (u, v) (..., 2) of camera-frame points (..., 3) in a pinhole camera K; NaN for a point not in
    front of it (z <= 0 or NaN)."""
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * cam[..., 0] / z + K[0, 2], K[1, 1] * cam[..., 1] / z + K[1, 2]], -1)
    uv[~(z > 0)] = np.nan
    return uv


def project(points: np.ndarray, K: np.ndarray, cam2world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (..., 2) and z-depths (...) of world points (..., 3) in a pinhole camera K at ``cam2world``
    (NaN pixels behind it): the one projection, the inverse of :func:`world_points` on
    :func:`pixel_rays`."""
    cam = to_camera(points, cam2world)
    return camera_pixels(cam, K), cam[..., 2]


# ---------------------------------------------------------------------------- poses


def transform(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Apply a 4x4 (or 3x4) transform to points (..., 3)."""
    return points @ T[:3, :3].T + T[:3, 3]


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4), in closed form."""
    out = np.zeros_like(T)
    rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ T[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1
    return out


def relative_to_first(cam2world: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (V, 4, 4) expressed in the first camera's frame (the first becomes I)."""
    return invert_pose(cam2world[0])[None] @ cam2world


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) from unit quaternions (..., 4) in (x, y, z, w) order."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def quaternion_from_rotation(R: np.ndarray) -> np.ndarray:
    """Unit quaternions (..., 4) in (x, y, z, w) order, w >= 0, from rotation matrices (..., 3, 3)
    (the eigenvector of the largest eigenvalue of Bar-Itzhack's symmetric 4x4: robust for any angle
    and for matrices a little off orthonormal)."""
    R = np.asarray(R, np.float64)
    m = R.reshape(-1, 3, 3)
    out = np.empty((len(m), 4))
    for i, r in enumerate(m):
        (a, b, c), (d, e, f), (g, h, k) = r
        Q = np.array([[a - e - k, d + b, g + c, h - f],
                      [d + b, e - a - k, h + f, c - g],
                      [g + c, h + f, k - a - e, d - b],
                      [h - f, c - g, d - b, a + e + k]]) / 3
        w, v = np.linalg.eigh(Q)
        q = v[:, np.argmax(w)]
        out[i] = q if q[3] >= 0 else -q
    return out.reshape(*R.shape[:-2], 4)


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of the rotation taking R_a to R_b, for (..., 3, 3) stacks."""
    cos = (np.trace(np.swapaxes(R_a, -1, -2) @ R_b, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def translation_angle_deg(t_a: np.ndarray, t_b: np.ndarray, ambiguity: bool = True) -> np.ndarray:
    """Angle (degrees) between translation directions (..., 3); with ``ambiguity`` the sign is ignored,
    as MapAnything's benchmark does (min(a, 180 - a))."""
    a = t_a / (np.linalg.norm(t_a, axis=-1, keepdims=True) + 1e-15)
    b = t_b / (np.linalg.norm(t_b, axis=-1, keepdims=True) + 1e-15)
    ang = np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))
    return np.minimum(ang, 180 - ang) if ambiguity else ang


def relative_pose_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of every view pair i < j.

    For each pair the relative pose inv(T_i) T_j of the prediction is compared
    with that of the ground truth (camera-to-world stacks, (V, 4, 4)).
    """
    i, j = np.triu_indices(len(gt), k=1)
    rel_p = invert_pose(pred[i]) @ pred[j]
    rel_g = invert_pose(gt[i]) @ gt[j]
    return (rotation_angle_deg(rel_g[:, :3, :3], rel_p[:, :3, :3]),
            translation_angle_deg(rel_g[:, :3, 3], rel_p[:, :3, 3]))


# ---------------------------------------------------------------------------- alignment


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising sum |dst - (s R src + t)|^2 over point pairs (N, 3) (Umeyama 1991).

    Without ``with_scale`` s is 1 (a rigid fit, for metric predictions).
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def ransac_umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True, threshold: float | None = None,
                   seed: int = 0) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """A robust :func:`umeyama` over point pairs (N, 3): COLMAP's LO-RANSAC (pycolmap's
    ``estimate_sim3d_robust``, or ``estimate_rigid3d_robust`` without ``with_scale``; seeded by ``seed``, so
    the same input gives the same fit) finds the inliers (residual under ``threshold``, default 5 % of the
    destination's spread), then :func:`umeyama` refits on them, once more on the inliers of that fit. With
    under 3 pairs, or no fit found, every pair is used.

    Returns (s, R, t, inlier mask).
    """
    n = len(src)
    if threshold is None:
        threshold = 0.05 * float(np.linalg.norm(dst - dst.mean(0), axis=1).mean() or 1.0)
    best = np.ones(n, bool)
    if n >= 3:
        import pycolmap  # here, not at the top: importing pycolmap costs the command line's start-up ~0.3 s

        options = pycolmap.RANSACOptions()
        options.max_error, options.random_seed = threshold, seed
        estimate = pycolmap.estimate_sim3d_robust if with_scale else pycolmap.estimate_rigid3d_robust
        found = estimate(np.ascontiguousarray(src, np.float64), np.ascontiguousarray(dst, np.float64), options)
        if found is not None and found["num_inliers"] >= 3:
            best = np.asarray(found["inlier_mask"], bool)
    s, R, t = umeyama(src[best], dst[best], with_scale)
    inliers = np.linalg.norm(dst - (s * src @ R.T + t), axis=1) < threshold
    if inliers.sum() >= 3:
        s, R, t = umeyama(src[inliers], dst[inliers], with_scale)
    return s, R, t, inliers


def apply_sim3_to_poses(cam2world: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (V, 4, 4) after the world is mapped by x -> s R x + t."""
    out = np.array(cam2world, np.float64, copy=True)
    out[:, :3, :3] = R @ cam2world[:, :3, :3]
    out[:, :3, 3] = s * cam2world[:, :3, 3] @ R.T + t
    return out


def mean_norm(points: list[np.ndarray], masks: list[np.ndarray] | None = None) -> float:
    """The mean distance to the origin of the valid points of several point maps (joint)."""
    total, count = 0.0, 0
    for i, p in enumerate(points):
        norms = np.linalg.norm(p, axis=-1)
        keep = masks[i] if masks is not None else np.ones(norms.shape, bool)
        total += float(norms[keep].sum())
        count += int(keep.sum())
    return total / count if count else 0.0

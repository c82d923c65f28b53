"""The preview picture of a reconstructed scene (``pixio recon3d --preview``): its cleaned cloud drawn by a
z-buffer from a viewpoint behind and above the first camera, with every camera's frustum, a scale bar and a
legend; no display needed."""

from __future__ import annotations

import cv2
import numpy as np

from heads.geometry import camera_pixels, pixel_rays, transform, world_points
from heads.pointmap.predictions import Predictions


def preview_picture(points: np.ndarray, colours: np.ndarray, pred: Predictions, hw: tuple[int, int] = (600, 800),
                    unit: str = "m") -> np.ndarray:
    """The cleaned cloud seen from behind and above the first camera, framed on what it holds, with every
    camera's frustum (the first green, the others red, sized to their spacing so a track of many stays a
    track), a scale bar and a legend; RGB (h, w, 3), no display needed."""
    K, w2c = preview_camera(pred.cam2world.astype(np.float64), points, hw)
    centres = pred.cam2world[:, :3, 3].astype(np.float64)
    K = _framed(K, w2c, points=points, centres=centres, hw=hw)
    image = render_points(points, colours, K=K, world2cam=w2c, hw=hw)
    extent = float(np.percentile(np.linalg.norm(points - np.median(points, 0), axis=1), 90)) if len(points) else 1.0
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    size = min(0.12 * extent, 0.6 * float(np.median(steps))) if len(steps) and np.median(steps) > 0 else 0.12 * extent

    def to_pixels(p3: np.ndarray) -> tuple[np.ndarray, bool]:
        c = transform(p3, w2c)
        return camera_pixels(c, K), bool((c[:, 2] > 1e-6).all())

    for i in reversed(range(len(pred.K))):  # the first camera last, on top
        k, T = pred.K[i], pred.cam2world[i]
        for a, b in frustum_segments(k.astype(np.float64), pred.pts3d.shape[1:3], T.astype(np.float64), size):
            (pa, pb), ok = to_pixels(np.stack([a, b]))
            if ok:
                cv2.line(image, tuple(int(v) for v in pa), tuple(int(v) for v in pb),
                         (0, 170, 0) if i == 0 else (220, 30, 30), 2 if i == 0 else 1, cv2.LINE_AA)
    _legend(image, K, w2c=w2c, points=points if len(points) else centres, cameras=len(pred.K), unit=unit)
    return image


def _framed(K: np.ndarray, w2c: np.ndarray, points: np.ndarray, centres: np.ndarray, hw: tuple[int, int]
            ) -> np.ndarray:
    """K re-aimed and re-scaled so that most points (2nd-98th percentile) and every camera fill the picture
    with a small margin, instead of sitting in one part of it."""
    h, w = hw
    sample = points[:: max(1, len(points) // 20000)] if len(points) else centres
    c = transform(np.concatenate([sample, centres]), w2c)
    c = c[c[:, 2] > 1e-6]
    if len(c) < 2:
        return K
    x, y = c[:, 0] / c[:, 2], c[:, 1] / c[:, 2]
    n_cam = min(len(centres), len(c))
    lo_x = min(np.percentile(x, 2), x[-n_cam:].min())
    hi_x = max(np.percentile(x, 98), x[-n_cam:].max())
    lo_y = min(np.percentile(y, 2), y[-n_cam:].min())
    hi_y = max(np.percentile(y, 98), y[-n_cam:].max())
    f = 0.9 * min(w / max(hi_x - lo_x, 1e-9), (h - 40) / max(hi_y - lo_y, 1e-9))  # 40 px for the legend
    return np.array([[f, 0, w / 2 - f * (lo_x + hi_x) / 2], [0, f, (h - 40) / 2 - f * (lo_y + hi_y) / 2],
                     [0, 0, 1]])


def _legend(image: np.ndarray, K: np.ndarray, w2c: np.ndarray, points: np.ndarray, cameras: int, unit: str) -> None:
    """A scale bar (a round length at the points' median depth) and what the colours mean, at the bottom."""
    h, w = image.shape[:2]
    depth = float(np.median(transform(points, w2c)[:, 2])) if len(points) else 1.0
    per_unit = K[0, 0] / max(depth, 1e-9)  # pixels per unit length at that depth
    length = 10 ** np.floor(np.log10(max(w / 5 / per_unit, 1e-9)))
    for m in (5, 2, 1):
        if m * length * per_unit <= w / 4:
            length *= m
            break
    bar = int(length * per_unit)
    y = h - 14
    cv2.rectangle(image, (0, h - 34), (w, h), (255, 255, 255), -1)
    cv2.line(image, (12, y), (12 + bar, y), (0, 0, 0), 2)
    for x in (12, 12 + bar):
        cv2.line(image, (x, y - 5), (x, y + 5), (0, 0, 0), 2)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, f"{length:g} {unit} (at the scene's depth)", (20 + bar, y + 5), font, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    text = f"first camera: green; the other {cameras - 1}: red" if cameras > 1 else "the camera: green"
    tw = cv2.getTextSize(text, font, 0.45, 1)[0][0]
    cv2.putText(image, text, (w - tw - 12, y + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)


def render_points(points: np.ndarray, colours: np.ndarray, K: np.ndarray, world2cam: np.ndarray,
                  hw: tuple[int, int], radius: int = 1, background: int = 255) -> np.ndarray:
    """An RGB picture (h, w, 3) of coloured points seen by a pinhole camera, nearest point wins
    (z-buffer); each point covers a (2 radius + 1)^2 square."""
    h, w = hw
    cam = transform(points, world2cam)
    front = cam[:, 2] > 1e-6
    cam, col = cam[front], colours[front]
    u, v = np.round(camera_pixels(cam, K)).astype(np.int64).T
    image = np.full((h, w, 3), background, np.uint8)
    zbuf = np.full((h, w), np.inf)
    order = np.argsort(-cam[:, 2])  # far to near: nearer points overwrite
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            uu, vv = u[order] + dx, v[order] + dy
            ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            z = cam[order, 2][ok]
            idx = (vv[ok], uu[ok])
            nearer = z < zbuf[idx]  # with duplicates the last write (nearest) wins
            image[idx[0][nearer], idx[1][nearer]] = col[order][ok][nearer]
            zbuf[idx[0][nearer], idx[1][nearer]] = z[nearer]
    return image


def frustum_segments(K: np.ndarray, hw: tuple[int, int], cam2world: np.ndarray, size: float) -> np.ndarray:
    """The 8 line segments (8, 2, 3) of a camera frustum of depth ``size``, in world coordinates."""
    h, w = hw
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    far = world_points(np.full(4, float(size)), pixel_rays(K, corners[:, 0], corners[:, 1]), cam2world)
    apex = cam2world[:3, 3]
    return np.array([[apex, c] for c in far] + [[far[i], far[(i + 1) % 4]] for i in range(4)])


def preview_camera(cam2world: np.ndarray, points: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, world-to-camera) of a viewpoint behind and above the first camera, looking at the point half-way
    between the cameras' centre and the points', far enough back that every camera and most points show."""
    first = cam2world[0]
    centre = np.median(points, axis=0) if len(points) else first[:3, 3] + first[:3, 2]
    cameras = cam2world[:, :3, 3]
    target = (centre + cameras.mean(0)) / 2
    spread = float(np.percentile(np.linalg.norm(points - target, axis=1), 90)) if len(points) else 1.0
    reach = max(spread, float(np.linalg.norm(cameras - target, axis=1).max()), 1e-6)  # every camera in view
    back, up = -first[:3, 2], -first[:3, 1]  # OpenCV: z forward, y down
    eye = target + (back * 1.1 + up * 0.7) * reach
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ eye
    h, w = hw
    f = 0.7 * w
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]]), w2c

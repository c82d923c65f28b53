"""A view's depth refined by matching its image against its neighbours' (a plane sweep around it).

The network's depth, fitted to the tracks, is right at low spatial frequency
and a few per cent off locally. Around it, :func:`refine_depth` tries depths
from ``exp(-span)`` to ``exp(+span)`` times the current one; for each, every
pixel's point is projected into the neighbouring views and the window around
the pixel is compared with the window it lands on (normalised
cross-correlation, so lighting changes do not matter). A pixel takes the depth
whose best two neighbours agree most (a parabola through the peak gives the
sub-step), where that peak is clear and the window has texture; elsewhere it
keeps its depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sweep:
    """How depths are refined by matching images."""

    span: float = 0.15  # hypotheses from exp(-span) to exp(+span) times the depth
    steps: int = 11  # hypotheses tried (3 % apart at the defaults)
    window: int = 7  # side of the matched window, pixels
    neighbours: int = 3  # views matched against
    min_score: float = 0.3  # NCC (mean of the best two views) the chosen depth needs
    margin: float = 0.1  # ... above the mean over the hypotheses (a clear peak)
    min_texture: float = 1e-4  # variance of the window's grey levels (0-1) below which nothing is matched


def _box(image: np.ndarray, side: int) -> np.ndarray:
    import cv2

    return cv2.boxFilter(image, -1, (side, side), normalize=True, borderType=cv2.BORDER_REFLECT)


def refine_depth(depth: np.ndarray, rays: np.ndarray, cam2world: np.ndarray, gray: np.ndarray,
                 others: list[tuple[np.ndarray, np.ndarray, np.ndarray]], s: Sweep = Sweep()
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The refined z-depth (h, w) of one view and where it changed (h, w, bool).

    ``rays`` (h, w, 2) are the view's normalised pixel coordinates, ``gray`` (h, w) its image (float32,
    0-1); ``others`` the neighbours as (grey image (h, w), K (3, 3) of that image's pinhole part,
    camera-to-world (4, 4)).
    """
    import cv2

    h, w = depth.shape
    if not others:
        return depth, np.zeros((h, w), bool)
    deltas = np.linspace(-s.span, s.span, s.steps)
    mean_r = _box(gray, s.window)
    var_r = _box(gray * gray, s.window) - mean_r * mean_r
    ray3 = np.concatenate([rays, np.ones((h, w, 1))], -1) @ cam2world[:3, :3].T  # world direction per unit z
    depth32 = depth.astype(np.float32)[..., None]
    first = np.full((s.steps, h, w), -np.inf, np.float32)  # per hypothesis, the best view's score ...
    second = first.copy()  # ... and the second best's
    for j, (image, K, pose) in enumerate(others):
        # a point at depth d is d * a + b in the neighbour's camera: one multiply-add per hypothesis
        a = (ray3 @ pose[:3, :3]).astype(np.float32)
        b = ((cam2world[:3, 3] - pose[:3, 3]) @ pose[:3, :3]).astype(np.float32)
        fx, fy, cx, cy = (np.float32(K[0, 0]), np.float32(K[1, 1]), np.float32(K[0, 2]), np.float32(K[1, 2]))
        for k, delta in enumerate(deltas):
            d = depth32 * np.float32(np.exp(delta))
            cam = d * a + b
            z = cam[..., 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                mx = fx * cam[..., 0] / z + cx
                my = fy * cam[..., 1] / z + cy
            inside = ((z > 0) & (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)).astype(np.float32)
            mx, my = np.where(inside > 0, mx, -1).astype(np.float32), np.where(inside > 0, my, -1).astype(np.float32)
            warped = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            mean_w = _box(warped, s.window)
            var_w = _box(warped * warped, s.window) - mean_w * mean_w
            ncc = (_box(gray * warped, s.window) - mean_r * mean_w) / np.sqrt(np.maximum(var_r * var_w, 1e-8))
            ncc[_box(inside, s.window) < 0.999] = -np.inf  # the window leaves the neighbour's image
            second[k] = np.maximum(second[k], np.minimum(first[k], ncc))
            first[k] = np.maximum(first[k], ncc)
    # per hypothesis, the mean of the two best views (one view where only one sees the pixel)
    agg = np.where(np.isfinite(second), (first + second) / 2, first)
    agg = np.where(np.isfinite(agg), agg, -1.0)
    best = agg.argmax(0)
    top = np.take_along_axis(agg, best[None], 0)[0]
    mid = np.clip(best, 1, s.steps - 2)
    below, at, above = (np.take_along_axis(agg, (mid + o)[None], 0)[0] for o in (-1, 0, 1))
    curve = below - 2 * at + above
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curve < -1e-6, 0.5 * (below - above) / curve, 0.0)
    delta = deltas[0] + (mid + np.clip(offset, -0.5, 0.5)) * (deltas[1] - deltas[0])
    changed = ((top >= s.min_score) & (top - agg.mean(0) >= s.margin) & (best > 0) & (best < s.steps - 1)
               & (var_r >= s.min_texture) & (depth > 0))
    return np.where(changed, depth * np.exp(delta), depth), changed

"""A view's depth fitted to sparse depths that other views confirm (the tracks of structure from motion).

A network's depth is wrong at low spatial frequency (tilts and bends) in ways
one scale per view cannot fix. :func:`fit_depth_field` fits a smooth
multiplicative correction: a log-ratio on a coarse bilinear grid over the
image, robust (Cauchy weights, scaled to the residuals' own spread), pulled towards the view's median ratio and
towards a plane (second differences), so a view with few tracks gets back one
scale and a view with many gets its tilts and bends corrected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FieldFit:
    """How a view's depth correction is fitted."""

    grid: tuple[int, int] = (6, 8)  # nodes of the bilinear correction grid (rows, columns); (1, 1): one scale
    smooth: float = 0.1  # weight of the second differences between nodes (bending)
    prior: float = 0.05  # weight pulling each node towards the view's median log-ratio
    spread: float = 2.5  # Cauchy scale of the residuals: this many robust standard deviations of the last ones,
    min_scale: float = 0.02  # ... and at least this (log-ratio)
    iterations: int = 6  # reweighting rounds
    min_tracks: int = 20  # fewer tracks: no correction (too few to trust even their median)


def bilinear_weights(uv: np.ndarray, hw: tuple[int, int], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For pixels ``uv`` (n, 2) of an (h, w) image, the 4 nodes (n, 4, flat indices) and their weights
    (n, 4) of a grid of ``grid`` nodes whose corner nodes lie on the image's corner pixels."""
    h, w = hw
    gh, gw = grid
    gx = np.clip(uv[:, 0], 0, w - 1) / max(w - 1, 1) * (gw - 1)
    gy = np.clip(uv[:, 1], 0, h - 1) / max(h - 1, 1) * (gh - 1)
    x0 = np.minimum(np.floor(gx).astype(np.int64), gw - 2)
    y0 = np.minimum(np.floor(gy).astype(np.int64), gh - 2)
    fx, fy = gx - x0, gy - y0
    nodes = np.stack([y0 * gw + x0, y0 * gw + x0 + 1, (y0 + 1) * gw + x0, (y0 + 1) * gw + x0 + 1], 1)
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1)
    return nodes, weights


def field_image(log_ratio: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The multiplicative field (h, w) float32 of a grid (gh, gw) of log-ratios, bilinear over the image."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w]
    nodes, weights = bilinear_weights(np.stack([u.ravel(), v.ravel()], 1).astype(np.float64), hw, log_ratio.shape)
    return np.exp((log_ratio.ravel()[nodes] * weights).sum(1)).reshape(h, w).astype(np.float32)


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (n,) of a map (h, w) at pixels ``uv`` (n, 2); NaN outside it."""
    h, w = image.shape
    x, y = uv[:, 0], uv[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x0 = np.clip(np.floor(x).astype(np.int64), 0, max(w - 2, 0))
    y0 = np.clip(np.floor(y).astype(np.int64), 0, max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = np.clip(x - x0, 0, 1), np.clip(y - y0, 0, 1)
    out = (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x1] * fx * (1 - fy)
           + image[y1, x0] * (1 - fx) * fy + image[y1, x1] * fx * fy)
    return np.where(inside, out, np.nan)


def _bending(grid: tuple[int, int]) -> np.ndarray:
    """Second differences along the rows and columns of a grid of nodes (a plane costs nothing)."""
    gh, gw = grid
    rows = []
    for y in range(gh):
        for x in range(gw):
            i = y * gw + x
            if 0 < x < gw - 1:
                rows.append((i - 1, i, i + 1))
            if 0 < y < gh - 1:
                rows.append((i - gw, i, i + gw))
    D = np.zeros((len(rows), gh * gw))
    for k, (a, b, c) in enumerate(rows):
        D[k, a], D[k, b], D[k, c] = 1.0, -2.0, 1.0
    return D


def fit_depth_field(depth: np.ndarray, uv: np.ndarray, z: np.ndarray, fit: FieldFit = FieldFit()
                    ) -> tuple[np.ndarray, dict]:
    """The multiplicative correction (h, w) of a z-depth map (h, w) that makes it agree with track depths
    ``z`` (n,) seen at pixels ``uv`` (n, 2, the map's pixels): use ``depth * field``.

    Returns the field and a report: ``tracks`` used, ``median_ratio`` (the one scale a per-view fit would
    give), and the median absolute log-ratio of the tracks to the depth, about that scale before the fit
    (``residual_before``) and after it (``residual_after``).
    """
    h, w = depth.shape
    d = sample_bilinear(depth, uv)
    ok = np.isfinite(d) & (d > 0) & np.isfinite(z) & (z > 0)
    r = np.log(z[ok]) - np.log(d[ok])
    report = {"tracks": int(ok.sum())}
    if not ok.any():
        return np.ones((h, w), np.float32), {**report, "median_ratio": 1.0}
    m = float(np.median(r))
    report.update(median_ratio=float(np.exp(m)), residual_before=float(np.median(np.abs(r - m))))
    if ok.sum() < fit.min_tracks:  # too few to trust even their median: the depth as it is
        return np.ones((h, w), np.float32), {**report, "residual_after": float(np.median(np.abs(r)))}
    if fit.grid == (1, 1):  # one scale per view
        return np.full((h, w), np.exp(m), np.float32), {**report, "residual_after": report["residual_before"]}
    nodes, weights = bilinear_weights(uv[ok], (h, w), fit.grid)
    n_nodes = fit.grid[0] * fit.grid[1]
    # each track touches 4 of the nodes: the normal equations are summed from its 4 x 4 products, not from a
    # dense (tracks x nodes) design matrix
    pair_index = (nodes[:, :, None] * n_nodes + nodes[:, None, :]).reshape(len(r), 16)
    pair_weight = (weights[:, :, None] * weights[:, None, :]).reshape(len(r), 16)
    bend = _bending(fit.grid)
    penalty = (fit.smooth * bend.T @ bend + fit.prior * np.eye(n_nodes)) / n_nodes
    robust = np.ones(len(r))
    for _ in range(fit.iterations):
        W = robust / robust.sum()  # the data term as a weighted mean: the penalties mean the same for any n
        normal = np.bincount(pair_index.ravel(), (pair_weight * W[:, None]).ravel(), n_nodes * n_nodes)
        rhs = np.bincount(nodes.ravel(), (weights * (W * r)[:, None]).ravel(), n_nodes)
        g = np.linalg.solve(normal.reshape(n_nodes, n_nodes) + penalty, rhs + fit.prior * m / n_nodes)
        res = r - (g[nodes] * weights).sum(1)
        scale = max(fit.min_scale, fit.spread * 1.4826 * float(np.median(np.abs(res))))
        robust = 1.0 / (1.0 + (res / scale) ** 2)
    report["residual_after"] = float(np.median(np.abs(res)))
    return field_image(g.reshape(fit.grid), (h, w)), report

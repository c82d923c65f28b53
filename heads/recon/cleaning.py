"""The tests a scene's cleaning applies to its pixels and points: depth edges, one point per voxel,
statistical outliers (Open3D's). Plain functions on arrays; :class:`Cleaning` says which apply,
and :func:`pixel_mask` (pixels) and :func:`clean_points` (points) apply them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heads.open3d_access import load_open3d  # Open3D itself is imported when outliers are first removed
from heads.pointmap.predictions import Predictions
from heads.recon.workspace import active, tick


def depth_edges(depth: np.ndarray, rtol: float) -> np.ndarray:
    """Pixels (h, w) on a depth discontinuity: some 8-neighbour differs by more than ``rtol`` x the
    pixel's depth (the floaters between a foreground edge and the background)."""
    d = np.pad(depth.astype(np.float64), 1, mode="edge")
    h, w = depth.shape
    centre = d[1:-1, 1:-1]
    worst = np.zeros((h, w))
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            worst = np.maximum(worst, np.abs(d[dy:dy + h, dx:dx + w] - centre))
    return worst > rtol * np.maximum(centre, 1e-9)


def voxel_representatives(points: np.ndarray, voxel: float) -> np.ndarray:
    """Indices of one point per occupied voxel of side ``voxel`` (the first, so each kept point is still
    an observed pixel), in their original order."""
    cells = np.floor(points / voxel).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    if float(span[0]) * float(span[1]) * float(span[2]) < 2.0 ** 62:  # one integer per cell: a fast 1-D unique
        keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
        _, first = np.unique(keys, return_index=True)
    else:
        _, first = np.unique(cells, axis=0, return_index=True)
    return np.sort(first)


def statistical_inliers(points: np.ndarray, neighbours: int = 20, std_ratio: float = 2.0) -> np.ndarray:
    """Indices of points whose mean distance to their neighbours is within ``std_ratio`` standard
    deviations of the average (Open3D's statistical outlier removal)."""
    o3d = load_open3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    _, kept = pcd.remove_statistical_outlier(nb_neighbors=neighbours, std_ratio=std_ratio)
    return np.asarray(kept, np.int64)


@dataclass
class Cleaning:
    """Which points of a scene are kept (each stage optional)."""

    mask: bool = True  # the model's non-ambiguous mask
    conf_percentile: float | None = None  # drop the least confident N % (over all views)
    conf_min: float | None = None  # drop confidence below this
    edge_rtol: float | None = 0.03  # drop pixels on depth discontinuities (relative jump)
    outliers: bool = False  # statistical outlier removal (Open3D)
    voxel: float | None = None  # one point per voxel of this side (scene units)
    max_points: int | None = None  # a random subset of at most this many
    seed: int = 0


def pixel_mask(pred: Predictions, c: Cleaning) -> tuple[np.ndarray, dict[str, int]]:
    """The pixels (V, H, W) the per-pixel stages keep (a finite point in front of its camera, then the
    model's mask, confidence and depth edges, as ``c`` asks) and how many each stage left."""

    counts = {"pixels": int(pred.mask.size)}
    keep = active().array("keep", pred.mask.shape, bool)
    by_conf = c.conf_percentile or c.conf_min is not None
    above = None
    if c.conf_percentile:  # over all views, from every step-th pixel each way (every pixel up to 4 M of them)
        step = max(1, int(np.sqrt(pred.conf[0].size * len(pred.conf) / 4e6)))
        above = float(np.percentile(np.concatenate([v[::step, ::step].ravel() for v in pred.conf]),
                                    c.conf_percentile))
    stages = {"after_mask": c.mask, "after_confidence": by_conf, "after_edges": bool(c.edge_rtol)}
    left = dict.fromkeys((k for k, on in stages.items() if on), 0)
    for v in range(len(keep)):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        k = np.isfinite(pred.pts3d[v]).all(-1) & (pred.depth_z[v] > 0)
        if c.mask:
            k &= pred.mask[v]
            left["after_mask"] += int(k.sum())
        if above is not None:
            k &= pred.conf[v] > above
        if c.conf_min is not None:
            k &= pred.conf[v] >= c.conf_min
        if by_conf:
            left["after_confidence"] += int(k.sum())
        if c.edge_rtol:
            k &= ~depth_edges(pred.depth_z[v], c.edge_rtol)
            left["after_edges"] += int(k.sum())
        keep[v] = k
        tick()
    return keep, counts | left


def clean_points(pred: Predictions, colours: np.ndarray, c: Cleaning, keep: np.ndarray | None = None,
                 counts: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """The kept points (N, 3), their colours (N, 3) uint8, where each came from (N, 3: view, x, y in
    the original image's pixels), and how many points each stage left. ``keep`` (V, H, W): the pixels
    to start from (default: :func:`pixel_mask`'s, whose ``counts`` then come along)."""

    if keep is None:
        keep, counts = pixel_mask(pred, c)
    counts = dict(counts or {})
    view, y, x, points, cols = [], [], [], [], []
    for v in range(len(keep)):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        ys, xs = np.nonzero(keep[v])
        view.append(np.full(len(ys), v, np.int32))
        y.append(ys.astype(np.int32))
        x.append(xs.astype(np.int32))
        points.append(pred.pts3d[v][ys, xs])
        cols.append(colours[v][ys, xs])
        tick()
    view, y, x, cols = np.concatenate(view), np.concatenate(y), np.concatenate(x), np.concatenate(cols)
    points = np.concatenate(points).astype(np.float64)
    idx = np.arange(len(points))
    if c.outliers and len(idx) > 20:
        idx = idx[statistical_inliers(points[idx])]
        counts["after_outliers"] = len(idx)
    if c.voxel:
        idx = idx[voxel_representatives(points[idx], c.voxel)]
        counts["after_voxel"] = len(idx)
    if c.max_points and len(idx) > c.max_points:
        idx = np.sort(np.random.default_rng(c.seed).choice(idx, c.max_points, replace=False))
        counts["after_max_points"] = len(idx)
    if len(idx) < len(points):
        points, cols, view, y, x = points[idx], cols[idx], view[idx], y[idx], x[idx]
    h, w = pred.pts3d.shape[1:3]
    sy, sx = pred.original_hw[view, 0] / h, pred.original_hw[view, 1] / w
    obs = np.stack([view, (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5], 1)
    return points, cols, obs, counts

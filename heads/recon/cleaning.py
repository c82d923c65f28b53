"""The tests a scene's cleaning applies to its pixels and points: depth edges, one point per voxel,
statistical outliers (Open3D's). Plain functions on arrays; :class:`heads.recon.scene.Cleaning` says which
apply, and :func:`heads.recon.scene.pixel_mask` and :func:`heads.recon.scene.clean_points` apply them."""

from __future__ import annotations

import numpy as np

from heads.open3d_access import load_open3d  # Open3D itself is imported when outliers are first removed


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

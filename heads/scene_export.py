"""Pictures and meshes of a reconstructed scene (``pixio recon3d --preview``, ``--mesh``)."""

from __future__ import annotations

import numpy as np

from .scene import Predictions



def preview_picture(points: np.ndarray, colours: np.ndarray, pred: Predictions, hw: tuple[int, int] = (600, 800)
                    ) -> np.ndarray:
    """The cleaned cloud seen from behind and above the first camera, with every camera's frustum (red,
    the first one green), RGB (h, w, 3); no display needed."""
    import cv2

    from .geometry import frustum_segments, preview_camera, render_points, transform

    K, w2c = preview_camera(pred.cam2world.astype(np.float64), points, hw)
    image = render_points(points, colours, K, w2c, hw)
    extent = float(np.percentile(np.linalg.norm(points - np.median(points, 0), axis=1), 90)) if len(points) else 1.0
    size = 0.12 * extent
    for i in reversed(range(len(pred.K))):  # the first camera last, on top
        k, T = pred.K[i], pred.cam2world[i]
        for a, b in frustum_segments(k.astype(np.float64), pred.pts3d.shape[1:3], T.astype(np.float64), size):
            pa, pb = transform(np.stack([a, b]), w2c)
            if pa[2] <= 1e-6 or pb[2] <= 1e-6:
                continue
            ua = (int(pa[0] / pa[2] * K[0, 0] + K[0, 2]), int(pa[1] / pa[2] * K[1, 1] + K[1, 2]))
            ub = (int(pb[0] / pb[2] * K[0, 0] + K[0, 2]), int(pb[1] / pb[2] * K[1, 1] + K[1, 2]))
            cv2.line(image, ua, ub, (0, 170, 0) if i == 0 else (220, 30, 30), 2)
    return image


def tsdf_mesh(pred: Predictions, colours: np.ndarray, voxel: float | None = None, keep: np.ndarray | None = None):
    """A coloured triangle mesh (Open3D, legacy) by TSDF fusion of every view's depth (where ``keep``,
    default the model's mask), colour and pose in Open3D's hashed voxel-block grid (its scalable TSDF
    volume); the voxel side defaults to 1/256 of the scene's extent, the truncation is 4 voxels, surfaces
    seen once are kept. Vertices and triangles come in a fixed order, so one input gives one file."""
    from .geometry import _open3d, invert_pose

    o3d = _open3d()
    import open3d.core as o3c

    finite = pred.pts3d[np.isfinite(pred.pts3d).all(-1)]
    extent = float(np.linalg.norm(np.percentile(finite, 98, 0) - np.percentile(finite, 2, 0))) if len(finite) else 1.0
    voxel = voxel or max(extent / 256, 1e-6)
    depth_max = float(np.nanmax(pred.depth_z)) * 1.01 + 1e-6
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=16,
        block_count=max(1000, int(pred.mask.sum() // 64)), device=o3c.Device("CPU:0"))
    keep = (pred.mask if keep is None else keep) & np.isfinite(pred.depth_z) & (pred.depth_z > 0)
    for i in range(len(pred.images)):
        if not keep[i].any():
            continue
        depth = o3d.t.geometry.Image(o3c.Tensor(np.where(keep[i], pred.depth_z[i], 0).astype(np.float32)))
        colour = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(colours[i], np.float32) / 255))
        K = o3c.Tensor(pred.K[i].astype(np.float64))
        w2c = o3c.Tensor(invert_pose(pred.cam2world[i].astype(np.float64)))
        blocks = grid.compute_unique_block_coordinates(depth, K, w2c, 1.0, depth_max, 4.0)
        grid.integrate(blocks, depth, colour, K, K, w2c, 1.0, depth_max, 4.0)
    return _in_fixed_order(grid.extract_triangle_mesh(weight_threshold=0.5).to_legacy(), o3d), voxel


def _in_fixed_order(mesh, o3d):
    """``mesh`` with its vertices sorted by position and its triangles by their vertices (each starting
    at its lowest, winding kept): the hashed grid hands them out in an order that changes run to run."""
    v = np.asarray(mesh.vertices)
    order = np.lexsort(v.T[::-1])
    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))
    tri = new_id[np.asarray(mesh.triangles)]
    first = tri.argmin(1)
    tri = np.take_along_axis(tri, (first[:, None] + np.arange(3)) % 3, 1)
    tri = tri[np.lexsort(tri.T[::-1])]
    out = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v[order]), o3d.utility.Vector3iVector(tri))
    if mesh.has_vertex_colors():  # fusion's averages can end a hair above 1
        out.vertex_colors = o3d.utility.Vector3dVector(np.clip(np.asarray(mesh.vertex_colors)[order], 0, 1))
    return out

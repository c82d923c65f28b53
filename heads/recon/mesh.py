"""A reconstructed scene's mesh (``pixio recon3d --mesh``): every view's depth and colour fused in Open3D's
TSDF voxel-block grid, its voxel kept within a memory budget, vertices and triangles in a fixed order."""

from __future__ import annotations

import numpy as np

from heads.geometry import invert_pose
from heads.open3d_access import load_open3d
from heads.pointmap.predictions import Predictions
from heads.recon.workspace import tick


MESH_MEMORY = 0.5 * 2**30  # bytes the TSDF volume may hold: a finer voxel than fits is coarsened, and said
BLOCK = 16  # voxels along a block's side
BLOCK_BYTES = BLOCK**3 * 5 * 4 + 64  # a block's five float32 channels (tsdf, weight, colour) and its hash entry


def tsdf_mesh(pred: Predictions, colours: np.ndarray, voxel: float | None = None, keep: np.ndarray | None = None,
              memory: float = MESH_MEMORY):
    """A coloured triangle mesh (Open3D, legacy) by TSDF fusion of every view's depth (where ``keep``,
    default the model's mask), colour and pose in Open3D's hashed voxel-block grid (its scalable TSDF
    volume); the voxel side defaults to 1.5 pixel footprints at the kept pixels' median depth (between
    1/1024 and 1/64 of the scene's extent), coarsened until the blocks the surface needs fit in ``memory``
    bytes (:func:`voxel_within`); the truncation is 4 voxels, surfaces seen once are kept. Vertices and
    triangles come in a fixed order, so one input gives one file. Returns the mesh, the voxel side, and the
    side asked for when it had to be coarsened (else None)."""
    o3d = load_open3d()
    import open3d.core as o3c  # here, not at the top: Open3D is slow to import (heads.open3d_access)

    kept = lambda i: ((pred.mask[i] if keep is None else keep[i]) & np.isfinite(pred.depth_z[i])  # noqa: E731
                      & (pred.depth_z[i] > 0))
    step = max(1, int(np.sqrt(pred.depth_z.size / 4e6)))  # the statistics from every pixel up to 4 M of them
    points, footprints, depth_max = [], [], 0.0
    for i in range(len(pred.images)):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        k = kept(i)[::step, ::step]
        p = pred.pts3d[i][::step, ::step][k]
        points.append(p[np.isfinite(p).all(-1)])
        footprints.append(pred.depth_z[i][::step, ::step][k] / pred.K[i, 0, 0])
        depth_max = max(depth_max, float(np.nanmax(np.where(kept(i), pred.depth_z[i], 0))))
        tick()
    finite, footprints = np.concatenate(points), np.concatenate(footprints)  # the views' points stay apart too
    extent = float(np.linalg.norm(np.percentile(finite, 98, 0) - np.percentile(finite, 2, 0))) if len(finite) else 1.0
    if not voxel:  # about a pixel's footprint at the scene's typical depth (the data's own resolution)
        footprint = float(np.median(footprints)) if len(footprints) else extent / 256
        voxel = max(min(1.5 * footprint, extent / 64), extent / 1024, 1e-6)
    asked = voxel
    voxel, blocks = voxel_within(points, voxel, memory)
    depth_max = depth_max * 1.01 + 1e-6
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=BLOCK,
        block_count=max(1000, blocks), device=o3c.Device("CPU:0"))
    for i in range(len(pred.images)):
        k = kept(i)
        if not k.any():
            continue
        tick()
        depth = o3d.t.geometry.Image(o3c.Tensor(np.where(k, pred.depth_z[i], 0).astype(np.float32)))
        colour = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(colours[i], np.float32) / 255))
        K = o3c.Tensor(pred.K[i].astype(np.float64))
        w2c = o3c.Tensor(invert_pose(pred.cam2world[i].astype(np.float64)))
        blocks = grid.compute_unique_block_coordinates(depth, K, w2c, 1.0, depth_max, 4.0)
        grid.integrate(blocks, depth, colour, K, K, w2c, 1.0, depth_max, 4.0)
    mesh = _in_fixed_order(grid.extract_triangle_mesh(weight_threshold=0.5).to_legacy(), o3d)
    return mesh, voxel, (asked if voxel > asked else None)


BAND = 1.3  # blocks the truncation band adds, per block holding a point (1.05-1.11 measured on 7-Scenes depth)


def surface_blocks(views: list[np.ndarray], voxel: float) -> int:
    """How many voxel blocks of side ``BLOCK * voxel`` the grid must hold for the surface through the views'
    points (a list of (N, 3)): the blocks holding a point and the neighbours the truncation band reaches,
    and one view's blocks more (Open3D grows a grid, to twice its size, when the blocks already in it and
    a view's candidates together would not fit)."""
    views = [v for v in views if len(v)]
    if not views:
        return 0
    cells = [np.unique(np.floor(v / (BLOCK * voxel)).astype(np.int64), axis=0) for v in views]
    every = len(np.unique(np.concatenate(cells), axis=0))
    return int(np.ceil(BAND * (every + max(len(c) for c in cells))))


def voxel_within(views: list[np.ndarray], voxel: float, memory: float) -> tuple[float, int]:
    """The voxel side (``voxel`` or coarser) whose blocks for the views' points fit in ``memory`` bytes, and
    how many blocks that is: the count falls with the square of the side on a surface, so a few steps
    settle it."""
    blocks = surface_blocks(views, voxel)
    for _ in range(20):
        if blocks * BLOCK_BYTES <= memory:
            break
        voxel *= 1.02 * np.sqrt(blocks * BLOCK_BYTES / memory)
        blocks = surface_blocks(views, voxel)
    return voxel, blocks


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

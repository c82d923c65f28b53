"""Pictures and meshes of a reconstructed scene (``pixio recon3d --preview``, ``--mesh``)."""

from __future__ import annotations

import numpy as np

from heads.pointmap.predictions import Predictions
from heads.recon.workspace import tick



def preview_picture(points: np.ndarray, colours: np.ndarray, pred: Predictions, hw: tuple[int, int] = (600, 800),
                    unit: str = "m") -> np.ndarray:
    """The cleaned cloud seen from behind and above the first camera, framed on what it holds, with every
    camera's frustum (the first green, the others red, sized to their spacing so a track of many stays a
    track), a scale bar and a legend; RGB (h, w, 3), no display needed."""
    import cv2

    from heads.geometry import frustum_segments, preview_camera, render_points, transform

    K, w2c = preview_camera(pred.cam2world.astype(np.float64), points, hw)
    centres = pred.cam2world[:, :3, 3].astype(np.float64)
    K = _framed(K, w2c, points=points, centres=centres, hw=hw)
    image = render_points(points, colours, K=K, world2cam=w2c, hw=hw)
    extent = float(np.percentile(np.linalg.norm(points - np.median(points, 0), axis=1), 90)) if len(points) else 1.0
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    size = min(0.12 * extent, 0.6 * float(np.median(steps))) if len(steps) and np.median(steps) > 0 else 0.12 * extent

    def to_pixels(p3: np.ndarray) -> tuple[np.ndarray, bool]:
        c = transform(p3, w2c)
        ok = bool((c[:, 2] > 1e-6).all())
        return np.stack([c[:, 0] / np.maximum(c[:, 2], 1e-9) * K[0, 0] + K[0, 2],
                         c[:, 1] / np.maximum(c[:, 2], 1e-9) * K[1, 1] + K[1, 2]], 1), ok

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
    from heads.geometry import transform

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
    import cv2

    from heads.geometry import transform

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
    from heads.geometry import _open3d, invert_pose

    o3d = _open3d()
    import open3d.core as o3c

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

"""Cameras refined on measured depth, as RGB-D reconstruction systems do (Open3D's multiway registration).

Matching images places cameras to a few pixels, but over a long sequence its poses wander by centimetres,
and measured depth placed on them then lies in layers. Each view's measured depth, thinned to a cloud, is
registered by point-to-plane ICP to the views that see the same surfaces, starting from the cameras given;
the pairwise fits are joined in one pose graph and solved together (Open3D's ``global_optimization``), which
drops the fits that disagree with the rest. The first view stays where it is, so the world frame is kept.

Plain functions on arrays: z-depth maps (V, h, w) in metres, ``rays`` (V, h, w, 2) the normalised
coordinates of each pixel (through each camera's own model), camera-to-world poses (V, 4, 4), OpenCV axes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from heads.geometry import camera_points, world_points
from heads.open3d_access import load_open3d  # Open3D itself is imported when first used: it costs start-up
from heads.recon.fusion import Fusion, camera_rays, choose_neighbours
from heads.recon.workspace import tick


@dataclass(frozen=True)
class DepthRegistration:
    """How views' measured depths are registered to each other."""

    voxel: float = 0.02  # metres: each view's cloud thinned to this before ICP
    distance: float = 0.05  # metres: the farthest two points may be to pair up in ICP (and in the graph)
    neighbours: int = 2  # views each view is registered to, beside the next one: those that see most of it
    min_fitness: float = 0.3  # a fit pairing fewer of the view's points than this is not used
    min_points: int = 300  # a view whose cloud has fewer points is not registered (it moves with its neighbours)
    window: int | None = 160  # views apart a pair may be (where the camera returns: loops); None: any
    robust: float = 0.02  # metres: Tukey's loss in ICP, so points on surfaces only one view sees count for little


def register_views(pred, measured: np.ndarray, r: DepthRegistration = DepthRegistration()):
    """:class:`heads.pointmap.predictions.Predictions` whose cameras are moved so that their measured depth agrees
    (``measured`` (V, h, w) bool: the pixels whose depth was measured), every view's points placed on its
    moved camera; and the report of :func:`refine_on_depth`. Needs the depth in metres."""
    c2w = pred.cam2world.astype(np.float64)
    f = Fusion(window=r.window)
    samples = [pred.pts3d[v, ::f.sample, ::f.sample][measured[v, ::f.sample, ::f.sample]] for v in range(len(c2w))]
    _, overlapping = choose_neighbours(samples, measured.shape[1:], K=pred.K, cam2world=c2w, f=f)
    rays = camera_rays(pred)
    moved, report = refine_on_depth(pred.depth_z, rays, valid=measured, cam2world=c2w,
                                    pairs=pairs_to_register(overlapping, r.neighbours), r=r)
    for v in range(len(moved)):  # in place: the caller gives ``pred`` up
        pred.pts3d[v] = world_points(pred.depth_z[v].astype(np.float64), rays[v].astype(np.float64), moved[v])
        tick()
    return replace(pred, cam2world=moved.astype(np.float32)), report


def _cloud(points: np.ndarray, voxel: float):
    """An Open3D cloud of points (n, 3), thinned to ``voxel``, with normals."""
    o3d = load_open3d()
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    pc = pc.voxel_down_sample(voxel)
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * voxel, max_nn=30))
    return pc


def pairs_to_register(overlapping: list[list[int]], neighbours: int) -> list[tuple[int, int]]:
    """(i, j) with i < j, each once: every view with the next one, and with the ``neighbours`` views that see
    most of it (``overlapping[v]``: views by how much of ``v`` they see, most first)."""
    out = {(v, v + 1) for v in range(len(overlapping) - 1)}
    for v, seen_by in enumerate(overlapping):
        out.update((min(v, n), max(v, n)) for n in seen_by[:neighbours])
    return sorted(out)


def refine_on_depth(depth: np.ndarray, rays: np.ndarray, valid: np.ndarray, cam2world: np.ndarray,
                    pairs: list[tuple[int, int]], r: DepthRegistration = DepthRegistration()
                    ) -> tuple[np.ndarray, dict]:
    """Poses (V, 4, 4) moved so that the views' measured depths agree, and a report.

    ``valid`` (V, h, w) marks the measured pixels; ``pairs`` the views to register to each other. Two
    consecutive views without an accepted fit between them keep their given relative pose (a weak link in
    the graph), so a view without measured depth moves with its neighbours; the first view does not move.
    """
    reg = load_open3d().pipelines.registration
    V = len(depth)
    clouds = []
    for v in range(V):
        use = valid[v] & np.isfinite(rays[v]).all(-1) & (depth[v] > 0)
        cam = camera_points(depth[v], rays[v])[use]
        clouds.append(_cloud(cam, r.voxel) if len(cam) else None)
    usable = [c is not None and len(c.points) >= r.min_points for c in clouds]

    estimate = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=r.robust))
    graph = reg.PoseGraph()
    for v in range(V):
        graph.nodes.append(reg.PoseGraphNode(cam2world[v].astype(np.float64)))
    linked, refused, joined = set(), 0, np.zeros(V, bool)
    for i, j in pairs:
        if not (usable[i] and usable[j]):
            continue
        start = np.linalg.inv(cam2world[j]) @ cam2world[i]  # view i's camera frame -> view j's
        fit = start
        for scale in (2.0, 1.0):  # coarse, then fine: starting poses may be a few centimetres off
            fit = reg.registration_icp(clouds[i], clouds[j], scale * r.distance, fit, estimate,
                                       reg.ICPConvergenceCriteria(max_iteration=30)).transformation
        result = reg.evaluate_registration(clouds[i], clouds[j], r.distance, fit)
        if result.fitness < r.min_fitness:
            refused += 1
            continue
        info = reg.get_information_matrix_from_point_clouds(clouds[i], clouds[j], r.distance, fit)
        graph.edges.append(reg.PoseGraphEdge(i, j, fit, info, uncertain=j != i + 1))
        linked.add((i, j))
        joined[[i, j]] = True
    fitted = len(linked)
    for v in range(V - 1):  # no fit to the next view: their given relative pose holds them, weakly
        if (v, v + 1) not in linked:
            graph.edges.append(reg.PoseGraphEdge(v, v + 1, np.linalg.inv(cam2world[v + 1]) @ cam2world[v],
                                                 np.eye(6), uncertain=False))
    if fitted:
        reg.global_optimization(
            graph, reg.GlobalOptimizationLevenbergMarquardt(), reg.GlobalOptimizationConvergenceCriteria(),
            reg.GlobalOptimizationOption(max_correspondence_distance=r.distance, edge_prune_threshold=0.25,
                                         reference_node=0))
    out = np.stack([np.asarray(n.pose) for n in graph.nodes])
    out = cam2world[0] @ np.linalg.inv(out[0]) @ out  # the reference node's frame: view 0 back where it was
    moved = np.linalg.norm(out[:, :3, 3] - cam2world[:, :3, 3], axis=1)
    return out, {"pairs": len(pairs), "fitted": fitted, "refused": refused,
                 "views_held": int(joined.sum()), "median_move_m": round(float(np.median(moved)), 4),
                 "max_move_m": round(float(moved.max()), 4)}

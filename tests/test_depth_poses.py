"""Cameras refined on measured depth (heads/recon/depth_poses.py), tested on ground truth: a room with a box in it,
depth rendered from known poses, the poses then drifted as matching drifts them."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from heads.recon.depth_poses import DepthRegistration, _cloud, pairs_to_register, refine_on_depth, register_views
from heads.geometry import camera_points, rotation_angle_deg, world_points
from heads.open3d_access import load_open3d
from heads.pointmap.predictions import Predictions

H, W, F = 96, 128, 100.0
ROOM = (np.array([-2.0, -1.2, -1.0]), np.array([2.0, 1.2, 4.0]))  # the walls: seen from inside
BOXES = [(np.array([0.0, 0.1, 1.7]), np.array([0.6, 0.8, 2.3])),  # what stands in it: no view slides along
         (np.array([-1.2, 0.5, 2.4]), np.array([-0.7, 1.2, 3.0]))]


def pose(rvec, centre) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64))[0]
    T[:3, 3] = centre
    return T


def rays() -> np.ndarray:
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([(u - W / 2) / F, (v - H / 2) / F], -1)


def render(c2w: np.ndarray) -> np.ndarray:
    """z-depth (H, W) of the room and its boxes from a camera at ``c2w``."""
    d_cam = np.concatenate([rays(), np.ones((H, W, 1))], -1)
    d = d_cam @ c2w[:3, :3].T  # z-depth is the distance along d, as d's camera z is 1
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo, t_hi = (ROOM[0] - o) / d, (ROOM[1] - o) / d
        depth = np.maximum(t_lo, t_hi).min(-1)  # leaving the room
        for lo, hi in BOXES:
            a, b = (lo - o) / d, (hi - o) / d
            enter, leave = np.minimum(a, b).max(-1), np.maximum(a, b).min(-1)
            hit = (enter < leave) & (enter > 0)
            depth = np.where(hit & (enter < depth), enter, depth)
    return depth


def path(n: int) -> np.ndarray:
    """A camera walking across the room, turning as it goes."""
    return np.stack([pose([0.05 * np.sin(i / 3), 0.25 - 0.05 * i, 0.02 * i], [-0.6 + 0.12 * i, 0.05 * np.cos(i), 0.03 * i])
                     for i in range(n)])


def drifted(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """The poses as matching might give them: each step off by up to ~1 cm and ~0.4 degrees, adding up."""
    rng = np.random.default_rng(seed)
    out = [truth[0]]
    for i in range(1, len(truth)):
        step = np.linalg.inv(truth[i - 1]) @ truth[i]
        error = pose(rng.normal(0, np.radians(0.25), 3), rng.normal(0, 0.006, 3))
        out.append(out[-1] @ step @ error)
    return np.stack(out)


def relative_errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The worst error (cm, degrees) of every pose relative to the first, between two paths."""
    ra = np.linalg.inv(a[0]) @ a
    rb = np.linalg.inv(b[0]) @ b
    cm = 100 * np.linalg.norm(ra[:, :3, 3] - rb[:, :3, 3], axis=1).max()
    return float(cm), float(rotation_angle_deg(ra[:, :3, :3], rb[:, :3, :3]).max())


@pytest.fixture(scope="module")
def scene():
    truth = path(10)
    depth = np.stack([render(T) for T in truth])
    assert np.isfinite(depth).all() and (depth > 0.3).all()
    return truth, depth


@pytest.fixture  # per test, not per module: mutmut runs only the tests it saw call the code, and a shared
# fixture calls it in the first test alone
def gappy(scene):
    """Six drifted views, two without measured depth (2, and the last, 5), registered with pairs that leave
    gaps, Open3D's calls recorded on the way through: (start, moved, report, options, calls)."""
    truth, depth = scene
    V = 6
    start = drifted(truth, seed=1)[:V]
    valid = np.ones((V, H, W), bool)
    valid[[2, 5]] = False
    pairs = [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3), (3, 4), (4, 5)]
    options = DepthRegistration(distance=0.04, robust=0.015)
    reg = load_open3d().pipelines.registration
    icp, optimize = reg.registration_icp, reg.global_optimization
    calls = {"icp": [], "edges": None, "option": None}

    def spy_icp(source, target, distance, init, estimation, *criteria):
        calls["icp"].append((distance, estimation, criteria))
        assert estimation.kernel is not None, "ICP should weigh residuals by a robust loss, not none (Open3D would crash)"
        return icp(source, target, distance, init, estimation, *criteria)

    def spy_optimize(graph, method, criteria, option):
        calls["edges"] = [(e.source_node_id, e.target_node_id, e.uncertain, np.array(e.information),
                           np.array(e.transformation)) for e in graph.edges]
        calls["option"] = {k: getattr(option, k) for k in ("max_correspondence_distance", "edge_prune_threshold")}
        return optimize(graph, method, criteria, option)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reg, "registration_icp", spy_icp)
        mp.setattr(reg, "global_optimization", spy_optimize)
        moved, report = refine_on_depth(depth[:V], np.broadcast_to(rays(), (V, H, W, 2)), valid=valid,
                                        cam2world=start, pairs=pairs, r=options)
    return start, moved, report, options, calls


def test_the_pose_graph_holds_fits_and_consecutive_views_without_a_fit_by_their_given_pose(gappy):
    """Fits become edges weighed by their paired points, uncertain (prunable) where they close a loop; each two
    consecutive views with no fit between them (here 1-2, 2-3 and the last two, 4-5) are held by their given
    relative pose, a certain edge of unit weight."""
    start, moved, report, options, calls = gappy
    edges = {(i, j): (uncertain, info, T) for i, j, uncertain, info, T in calls["edges"]}
    assert sorted(edges) == [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3), (3, 4), (4, 5)], \
        f"the graph should hold the 4 fits and the 3 links between consecutive views without one: {sorted(edges)}"
    for (i, j), (uncertain, info, T) in edges.items():
        fitted = (i, j) in [(0, 1), (0, 3), (1, 3), (3, 4)]
        assert uncertain == (fitted and j != i + 1), \
            f"edge {i}-{j}: only fits between views that are not consecutive are uncertain, not {uncertain}"
        if fitted:
            assert info[3, 3] > 100, f"fit {i}-{j} should weigh by its hundreds of paired points: {np.diag(info)}"
        else:
            assert np.array_equal(info, np.eye(6)), f"held link {i}-{j} should be a weak one: {np.diag(info)}"
            given = np.linalg.inv(start[j]) @ start[i]
            assert np.allclose(T, given), f"held link {i}-{j} should be the given relative pose: {T} vs {given}"
    kept, given = np.linalg.inv(moved[4]) @ moved[5], np.linalg.inv(start[4]) @ start[5]
    assert np.linalg.norm(kept[:3, 3] - given[:3, 3]) < 0.002, f"the last view should move with the one before: {kept} vs {given}"


def test_icp_goes_coarse_then_fine_with_a_tukey_loss_and_the_graph_prunes_at_the_registration_distance(gappy):
    start, moved, report, options, calls = gappy
    reg = load_open3d().pipelines.registration
    d = options.distance
    assert [c[0] for c in calls["icp"]] == pytest.approx([2 * d, d] * 4), \
        f"each of the 4 usable pairs should be fitted within {2 * d} then {d} m: {[c[0] for c in calls['icp']]}"
    for _, estimation, criteria in calls["icp"]:
        kernel = estimation.kernel
        assert isinstance(kernel, reg.TukeyLoss) and kernel.k == pytest.approx(options.robust), \
            f"ICP should weigh residuals by Tukey's loss at {options.robust} m, not {kernel!r}"
        iterations = criteria[0].max_iteration if criteria else reg.ICPConvergenceCriteria().max_iteration
        assert iterations == 30, f"each ICP pass should stop after 30 iterations, not {iterations}"
    assert calls["option"] == pytest.approx({"max_correspondence_distance": d, "edge_prune_threshold": 0.25}), \
        f"the graph should be solved at the registration distance, pruning loop closures under 0.25: {calls['option']}"


def test_the_report_counts_pairs_fits_refusals_and_held_views_and_gives_the_moves_to_a_tenth_of_a_millimetre(gappy):
    start, moved, report, options, calls = gappy
    move = np.linalg.norm(moved[:, :3, 3] - start[:, :3, 3], axis=1)
    assert np.allclose(moved[0], start[0]), f"the first view should stay where it was: {moved[0]} vs {start[0]}"
    want = {"pairs": 7, "fitted": 4, "refused": 0, "views_held": 4,
            "median_move_m": round(float(np.median(move)), 4), "max_move_m": round(float(move.max()), 4)}
    assert report == want, f"report {report}, expected {want} (moves {move})"
    assert want["median_move_m"] != round(float(np.median(move)), 5) and want["max_move_m"] != round(float(move.max()), 5), \
        f"the scene should tell 4 decimals from 5: moves {move}"
    assert all(isinstance(report[k], float) for k in ("median_move_m", "max_move_m")), f"moves should be floats: {report}"


def test_drifted_cameras_come_back_to_the_truth_when_the_measured_depths_are_registered(scene):
    truth, depth = scene
    start = drifted(truth)
    before = relative_errors(start, truth)
    assert before[0] > 3 and before[1] > 1  # the drift is worth removing
    r = np.broadcast_to(rays(), (len(truth), H, W, 2))
    pairs = pairs_to_register([[v + 2] if v + 2 < len(truth) else [] for v in range(len(truth))], 1)
    moved, report = refine_on_depth(depth, r, valid=np.ones(depth.shape, bool), cam2world=start, pairs=pairs)
    cm, deg = relative_errors(moved, truth)
    assert cm < 0.6 and deg < 0.15, (before, (cm, deg), report)
    assert np.allclose(moved[0], start[0])  # the first view is where it was: the world frame is kept
    assert report["fitted"] == len(pairs) and report["views_held"] == len(truth)


def test_views_without_measured_depth_keep_their_place_beside_the_view_before(scene):
    truth, depth = scene
    start = drifted(truth, seed=1)
    valid = np.ones(depth.shape, bool)
    valid[4] = False  # no measurement at all in view 4
    r = np.broadcast_to(rays(), (len(truth), H, W, 2))
    moved, report = refine_on_depth(depth, r, valid=valid, cam2world=start,
                                    pairs=pairs_to_register([[]] * len(truth), 0))
    assert report["views_held"] == len(truth) - 1 and report["fitted"] == len(truth) - 3
    kept, given = np.linalg.inv(moved[3]) @ moved[4], np.linalg.inv(start[3]) @ start[4]
    assert np.linalg.norm(kept[:3, 3] - given[:3, 3]) < 0.005, (kept, given)
    assert rotation_angle_deg(kept[:3, :3], given[:3, :3]) < 0.1


def predictions(depth: np.ndarray, c2w: np.ndarray) -> Predictions:
    """Predictions of views with these depths on these cameras (the pinhole of ``rays``)."""
    r, V = rays(), len(depth)
    K = np.array([[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1]], np.float32)
    pts = np.stack([world_points(depth[v], r, c2w[v]) for v in range(V)]).astype(np.float32)
    return Predictions([f"v{v}.png" for v in range(V)], pts, depth_z=depth.astype(np.float32),
                       conf=np.ones((V, H, W), np.float32), mask=np.ones((V, H, W), bool),
                       cam2world=c2w.astype(np.float32), K=np.stack([K] * V), K_original=np.stack([K] * V),
                       original_hw=np.array([[H, W]] * V), scale=1.0, metric=True)


def test_register_views_moves_the_points_with_their_cameras(scene):
    truth, depth = scene
    start = drifted(truth, seed=2)
    r = rays()
    V = len(truth)
    pred = predictions(depth, start)
    out, report = register_views(pred, np.ones((V, H, W), bool))
    assert out.cam2world.dtype == np.float32, f"cameras should stay float32 as Predictions keeps them, not {out.cam2world.dtype}"
    assert relative_errors(out.cam2world.astype(np.float64), truth)[0] < 0.6, report
    # each view's points are its measured depth on its new camera: in the first camera's frame, the truth's
    in_first = np.linalg.inv(truth[0]) @ truth
    want = np.stack([world_points(depth[v], r, in_first[v]) for v in range(V)])
    got = (out.pts3d.astype(np.float64) - out.cam2world[0, :3, 3]) @ out.cam2world[0, :3, :3].astype(np.float64)
    assert np.percentile(np.linalg.norm(got - want, axis=-1), 95) < 0.01


def test_a_fit_that_pairs_too_few_points_is_refused(scene):
    """A pair of views that see different walls (one turned round): ICP still returns a transform, but it pairs
    few of the points; it is refused, and the view keeps its place beside its neighbour in the sequence."""
    truth, depth = scene
    turned = truth[3] @ pose([0, np.pi, 0], [0, 0, 0])  # where view 3 stands, facing the other way
    poses = np.concatenate([truth[:4], turned[None], truth[4:]])
    depths = np.concatenate([depth[:4], render(turned)[None], depth[4:]])
    r = np.broadcast_to(rays(), (len(poses), H, W, 2))
    # the turned view's pairs first: a refused fit neither stops the pairs after it nor is counted only once
    pairs = [(0, 4), (2, 4)] + [(v, v + 1) for v in range(len(poses) - 1) if 4 not in (v, v + 1)]
    moved, report = refine_on_depth(depths, r, valid=np.ones(depths.shape, bool), cam2world=poses, pairs=pairs)
    assert report["refused"] == 2 and report["fitted"] == len(pairs) - 2, \
        f"both fits to the turned view should be refused and every other one fitted: {report}"
    cm, deg = relative_errors(moved, poses)
    assert cm < 0.5 and deg < 0.2, (cm, deg)


def test_register_views_registers_each_view_to_the_neighbours_and_window_its_options_name(scene):
    """Five views that all see each other: with ``window=1`` only each view and the next are registered, and with
    ``neighbours=0`` too; the options also reach the fits (``min_fitness`` above 1 refuses every one)."""
    truth, depth = scene
    V = 5
    start = drifted(truth, seed=2)[:V]
    for options in (DepthRegistration(window=1, min_fitness=1.01), DepthRegistration(neighbours=0, min_fitness=1.01)):
        out, report = register_views(predictions(depth[:V], start), np.ones((V, H, W), bool), options)
        assert report["pairs"] == V - 1, f"with {options} each view should be registered to the next only: {report}"
        assert report["refused"] == V - 1 and report["fitted"] == 0, f"every fit should be refused with {options}: {report}"
        assert np.allclose(out.cam2world, start, atol=1e-6), "with every fit refused no camera should move"
    out, report = register_views(predictions(depth[:V], start), np.ones((V, H, W), bool),
                                 DepthRegistration(min_fitness=1.01))
    assert report["pairs"] > V - 1, f"by default the views that see each other are registered too: {report}"


def test_a_fit_that_pairs_exactly_min_fitness_of_the_points_is_accepted(scene, monkeypatch):
    truth, depth = scene
    V = 3
    reg = load_open3d().pipelines.registration
    monkeypatch.setattr(reg, "evaluate_registration", lambda *args: SimpleNamespace(fitness=0.5))
    moved, report = refine_on_depth(depth[:V], np.broadcast_to(rays(), (V, H, W, 2)), valid=np.ones((V, H, W), bool),
                                    cam2world=truth[:V], pairs=[(0, 1), (1, 2)], r=DepthRegistration(min_fitness=0.5))
    assert report["fitted"] == 2 and report["refused"] == 0, f"a fitness of exactly min_fitness should be accepted: {report}"


def test_a_view_registers_with_exactly_min_points_in_its_thinned_cloud(scene):
    truth, depth = scene
    V = 3
    r = np.broadcast_to(rays(), (V, H, W, 2))
    counts = [len(_cloud(camera_points(depth[v], r[v]).reshape(-1, 3), 0.02).points) for v in range(V)]
    moved, report = refine_on_depth(depth[:V], r, valid=np.ones((V, H, W), bool), cam2world=truth[:V],
                                    pairs=[(0, 1), (1, 2)], r=DepthRegistration(min_points=min(counts)))
    assert report["fitted"] == 2, f"with min_points {min(counts)} (clouds of {counts} points) every view should register: {report}"


def test_pixels_with_no_depth_or_no_ray_are_left_out_and_every_other_one_counts_however_near(scene):
    """The room at a fifth of its size (every depth under a metre); view 1 has depth 0 everywhere (measured
    but empty), view 2 no ray on its left half (as outside a fisheye's circle). View 1 is registered to no one,
    even with ``min_points`` 0; view 2 is, on its right half."""
    truth, depth = scene
    V, s = 4, 0.2
    c2w = truth[:V].copy()
    c2w[:, :3, 3] *= s
    small = s * depth[:V]
    assert small.max() < 1
    small[1] = 0
    r = np.array(np.broadcast_to(rays(), (V, H, W, 2)))
    r[2, :, : W // 2] = np.nan
    moved, report = refine_on_depth(small, r, valid=np.ones((V, H, W), bool), cam2world=c2w,
                                    pairs=[(0, 1), (0, 2), (1, 2), (2, 3)], r=DepthRegistration(voxel=0.004, min_points=0))
    assert report["fitted"] == 2 and report["refused"] == 0, \
        f"0-2 and 2-3 should be fitted, and the pairs with view 1 (no depth) neither fitted nor refused: {report}"


def test_a_cloud_takes_each_normal_from_its_30_nearest_points_within_three_voxels():
    """A bumpy surface, dense on one side and sparse on the other: each normal of the thinned cloud is the
    least-spread direction of the point's 30 nearest neighbours no farther than 3 voxels (itself included)."""
    rng = np.random.default_rng(0)
    voxel = 0.02
    xy = rng.uniform(-0.5, 0.5, (4000, 2))
    xy = xy[(xy[:, 0] < 0) | (rng.random(len(xy)) < 0.15)]
    z = 0.05 * np.sin(8 * xy[:, 0]) * np.cos(6 * xy[:, 1]) + rng.normal(0, 0.004, len(xy))
    pc = _cloud(np.c_[xy, z], voxel)
    p, normals = np.asarray(pc.points), np.asarray(pc.normals)
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    worst = 0.0
    for k in range(len(p)):
        near = np.argsort(d[k])[:30]
        near = near[d[k, near] <= 3 * voxel]
        if len(near) < 3:
            continue
        want = np.linalg.eigh(np.cov(p[near].T, bias=True))[1][:, 0]
        worst = max(worst, np.degrees(np.arccos(min(1.0, abs(want @ normals[k])))))
    assert worst < 0.01, f"a normal is {worst:.3f} degrees off the plane of its 30 nearest points within 3 voxels"

"""Cameras refined on measured depth (heads/recon/depth_poses.py), tested on ground truth: a room with a box in it,
depth rendered from known poses, the poses then drifted as matching drifts them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from heads.recon.depth_poses import pairs_to_register, refine_on_depth, register_views
from heads.geometry import rotation_angle_deg, world_points
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


def test_register_views_moves_the_points_with_their_cameras(scene):
    truth, depth = scene
    start = drifted(truth, seed=2)
    r = rays()
    K = np.array([[F, 0, W / 2 - 0.5], [0, F, H / 2 - 0.5], [0, 0, 1]], np.float32)
    V = len(truth)
    pts = np.stack([world_points(depth[v], r, start[v]) for v in range(V)]).astype(np.float32)
    pred = Predictions([f"v{v}.png" for v in range(V)], pts, depth_z=depth.astype(np.float32),
                       conf=np.ones((V, H, W), np.float32), mask=np.ones((V, H, W), bool),
                       cam2world=start.astype(np.float32), K=np.stack([K] * V), K_original=np.stack([K] * V),
                       original_hw=np.array([[H, W]] * V), scale=1.0, metric=True)
    out, report = register_views(pred, np.ones((V, H, W), bool))
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
    pairs = [(v, v + 1) for v in range(len(poses) - 1) if 4 not in (v, v + 1)] + [(0, 4)]
    moved, report = refine_on_depth(depths, r, valid=np.ones(depths.shape, bool), cam2world=poses, pairs=pairs)
    assert report["refused"] == 1 and report["fitted"] == len(pairs) - 1, report
    cm, deg = relative_errors(moved, poses)
    assert cm < 0.5 and deg < 0.2, (cm, deg)

"""Dense geometry on ground truth: depth fitted to tracks, refined by matching images, views fused once,
and the scene scores that judge it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from heads import geometry as G
from heads.recon.depth_fit import FieldFit, fit_depth_field
from heads.recon.fusion import Fusion, fuse_views, world_points
from heads.recon.evaluate import cloud_scores, similarity_with_offset, thin
from heads.recon.stereo import Sweep, refine_depth

from .conftest import KITCHEN

H, W = 96, 128
K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])


def pinhole_rays(h: int = H, w: int = W, k: np.ndarray = K) -> np.ndarray:
    u, v = G.pixel_grid(h, w)
    return np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]], -1)


def look_at(centre, target=(0.0, 0.0, 3.0)) -> np.ndarray:
    """A camera-to-world pose at ``centre`` looking at ``target`` (y down)."""
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.stack([x, np.cross(z, x), z], 1), centre
    return T


def wall_depth(T: np.ndarray, rays: np.ndarray, z_wall: float = 3.0) -> np.ndarray:
    """z-depth (h, w) in camera T of the wall z = z_wall (world)."""
    d = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], -1) @ T[:3, :3].T  # world direction per unit z
    return (z_wall - T[2, 3]) / d[..., 2]


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A grey pattern on the wall, from world x, y (smooth blobs at several scales, values 0-1)."""
    rng = np.random.default_rng(7)
    out = np.zeros_like(x)
    for freq in (3.0, 7.0, 17.0, 31.0):
        a, b, p, q = rng.uniform(0.5, 1.5, 4)
        out += np.sin(freq * a * x + 5 * p) * np.cos(freq * b * y + 5 * q) / np.sqrt(freq)
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


def wall_image(T: np.ndarray, rays: np.ndarray) -> np.ndarray:
    pts = world_points(wall_depth(T, rays), rays, T)
    return texture(pts[..., 0], pts[..., 1])


# ---------------------------------------------------------------------------- depth fitted to tracks


def test_a_field_fitted_to_tracks_takes_out_a_tilt_that_one_scale_cannot():
    rng = np.random.default_rng(0)
    truth = wall_depth(look_at((0.3, 0.0, 0.0)), pinhole_rays())
    u, v = G.pixel_grid(H, W)
    tilt = np.exp(0.15 * (u / W - 0.5) - 0.1 * (v / H - 0.5) + 0.05)  # the network's depth: tilted, scaled
    net = truth * tilt
    uv = np.stack([rng.uniform(0, W - 1, 300), rng.uniform(0, H - 1, 300)], 1)
    z = np.array([truth[int(round(b)), int(round(a))] for a, b in uv]) * rng.normal(1, 0.005, 300)
    z[:30] *= 1.5  # a tenth are bad tracks
    field, report = fit_depth_field(net, uv, z)
    err = np.abs(net * field / truth - 1)
    one, _ = fit_depth_field(net, uv, z, FieldFit(grid=(1, 1)))
    err_one = np.abs(net * one / truth - 1)
    assert np.median(err) < 0.005 and np.percentile(err, 95) < 0.015, (np.median(err), np.percentile(err, 95))
    assert np.median(err_one) > 0.02, np.median(err_one)
    assert report["tracks"] == 300 and report["residual_after"] < report["residual_before"] / 3
    few, few_report = fit_depth_field(net, uv[:10], z[:10] / 1.5)  # too few tracks: left as it is
    assert np.all(few == 1) and few_report["tracks"] == 10


# ---------------------------------------------------------------------------- matching images


def test_plane_sweep_finds_the_wall_the_neighbours_see():
    rays = pinhole_rays()
    poses = [look_at((x, 0.0, 0.0)) for x in (0.0, -0.35, 0.35)]
    images = [wall_image(T, rays) for T in poses]
    truth = wall_depth(poses[0], rays)
    start = truth * 1.06
    refined, changed = refine_depth(start, rays, cam2world=poses[0], gray=images[0],
                                    others=[(images[i], K, poses[i]) for i in (1, 2)], s=Sweep())
    err = np.abs(refined / truth - 1)
    assert changed.mean() > 0.5, changed.mean()
    assert np.median(err[changed]) < 0.006, np.median(err[changed])
    assert np.all(refined[~changed] == start[~changed])
    # a view nobody else sees is left as it is
    same, nothing = refine_depth(start, rays, cam2world=poses[0], gray=images[0], others=[], s=Sweep())
    assert np.all(same == start) and not nothing.any()


# ---------------------------------------------------------------------------- fusion


def fused_walls(offsets: list[float], corrupt: bool = False, far_view: bool = False):
    """Views of the wall whose depths are off by ``offsets`` (fractions); optionally a patch of view 1
    20 % off and a last view that sees something else entirely."""
    rays = pinhole_rays()
    centres = [(0.12 * i - 0.12 * (len(offsets) - 1) / 2, 0.0, 0.0) for i in range(len(offsets))]
    poses = [look_at(c) for c in centres]
    depth = np.stack([wall_depth(T, rays) * (1 + o) for T, o in zip(poses, offsets)])
    if corrupt:
        depth[1, 30:60, 40:80] *= 1.2
    if far_view:
        poses.append(look_at((0.0, 0.0, 0.0), target=(0.0, 0.0, -3.0)))  # looking the other way
        depth = np.concatenate([depth, np.full((1, H, W), 2.0)])
    V = len(poses)
    return (depth, np.repeat(rays[None], V, 0), np.stack(poses), np.repeat(K[None], V, 0),
            np.ones((V, H, W), bool))


def test_views_of_one_wall_fuse_into_one_layer_and_a_bad_patch_is_dropped():
    depth, rays, poses, Ks, valid = fused_walls([0.008, -0.008, 0.004, -0.004, 0.0], corrupt=True)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None))
    truth = np.stack([wall_depth(T, r) for T, r in zip(poses, rays)])
    assert out.checked.all()
    assert not out.keep[1, 35:55, 45:75].any()  # no other view agrees with the bad patch
    # the averaged depths are nearer the wall than the views were
    good = out.keep
    assert np.abs(out.depth / truth - 1)[good].mean() < 0.5 * np.abs(depth / truth - 1)[good].mean()
    # each part of the wall once: about one view's worth of pixels plus what the others add at the sides
    assert out.first.sum() < 1.6 * H * W < out.keep.sum()
    points = np.concatenate([world_points(out.depth[v], rays[v], poses[v])[out.first[v]] for v in range(len(depth))])
    assert np.abs(points[:, 2] - 3.0).max() < 0.03  # one layer within 1 % of the wall
    layered = np.concatenate([world_points(depth[v], rays[v], poses[v]) for v in range(len(depth))]).reshape(-1, 3)
    assert np.abs(layered[:, 2] - 3.0).max() > 0.5  # what --no-fusion would have written


def test_depth_that_is_right_stays_right():
    """A perfect model (the wall's true depth, true cameras, images that agree): matching and averaging keep
    nearly every pixel and move none of them by more than a fraction of a per cent."""
    depth, rays, poses, Ks, valid = fused_walls([0.0] * 5)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion())
    change = np.abs(out.depth / depth - 1)
    assert out.keep.mean() > 0.95 and np.percentile(change[out.keep], 99) < 0.005, (out.keep.mean(),
                                                                                   np.percentile(change, 99))


def test_a_video_that_returns_keeps_each_surface_once():
    """Along the wall, away (looking the other way) and back again, more views than the sequence window:
    the views on the way back are checked against those on the way out (the cameras nearest in space), so
    the wall is kept once, not once per pass."""
    offsets = [0.004, -0.004, 0.0, 0.002, -0.002, 0.0]
    depth, rays, poses, Ks, valid = fused_walls(offsets)
    away = np.stack([look_at((0.1 * i, 0.0, 0.0), target=(0.1 * i, 0.0, -3.0)) for i in range(5)])
    back = slice(None, None, -1)
    depth = np.concatenate([depth, np.full((5, H, W), 2.0), depth[back]])
    poses = np.concatenate([poses, away, poses[back]])
    V = len(poses)
    rays, Ks, valid = rays[:1].repeat(V, 0), Ks[:1].repeat(V, 0), np.ones((V, H, W), bool)
    again = slice(len(offsets) + 5, None)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None, window=2))
    assert out.first[again].sum() < 0.02 * H * W, out.first[again].sum()  # nothing the first pass holds
    assert out.first[:len(offsets)].sum() > H * W
    windowed = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None,
                          f=Fusion(stereo=None, window=2, nearest=False))
    assert windowed.first[again].sum() > H * W  # sequence neighbours alone: the wall twice


def test_fusion_in_files_gives_what_it_gives_in_memory(tmp_path):
    """The workspace that keeps a long video's arrays in files changes no number."""
    from heads.recon.workspace import Workspace

    depth, rays, poses, Ks, valid = fused_walls([0.008, -0.008, 0.004, -0.004, 0.0], corrupt=True)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    in_memory = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion())
    with Workspace(tmp_path / "work", every=1) as ws:
        in_files = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion())
        assert isinstance(in_files.depth, np.memmap) and len(list((tmp_path / "work").iterdir())) >= 4
        for name in ("depth", "keep", "first", "checked"):
            assert np.array_equal(getattr(in_memory, name), getattr(in_files, name)), name
        del in_files
    assert not (tmp_path / "work").exists()


def test_fusion_on_threads_gives_what_it_gives_on_one(monkeypatch):
    """Views fused on a pool of threads (one per core) change no number: each view's work reads the others'
    inputs, never their outputs. Two scenes: walls with a bad patch, and a video that returns (windowed)."""
    import heads.recon.workspace as workspace

    depth, rays, poses, Ks, valid = fused_walls([0.008, -0.008, 0.004, -0.004, 0.0], corrupt=True)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    runs = {}
    for cores in (1, 3):
        monkeypatch.setattr(workspace, "available_cores", lambda cores=cores: cores)
        runs[cores] = [fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion()),
                       fuse_views(np.concatenate([depth, depth[::-1]]), np.concatenate([rays, rays]),
                                  cam2world=np.concatenate([poses, poses[::-1]]), K=np.concatenate([Ks, Ks]),
                                  valid=np.concatenate([valid, valid]), grays=np.concatenate([images, images[::-1]]),
                                  f=Fusion(window=2))]
    for one, many in zip(runs[1], runs[3]):
        assert one.neighbours == many.neighbours and one.refined == many.refined
        for name in ("depth", "keep", "first", "checked"):
            assert np.array_equal(getattr(one, name), getattr(many, name)), name
    assert runs[1][0].refined > 0 and not runs[1][1].first[5:].all()  # the checks did something


def test_a_view_no_other_sees_is_kept_unchecked():
    depth, rays, poses, Ks, valid = fused_walls([0.0, 0.0, 0.0], far_view=True)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None))
    assert out.checked.tolist() == [True, True, True, False]
    assert out.keep[3].all() and out.first[3].all() and out.neighbours[3] == []


# ---------------------------------------------------------------------------- scores


def test_scene_scores_on_clouds_with_known_distances():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (40000, 2))
    truth = thin(np.c_[xy, np.zeros(len(xy))])
    same = cloud_scores(truth, truth)
    assert same["f@0.05"] == 1.0 and same["accuracy"] == 0.0
    shifted = cloud_scores(truth + [0, 0, 0.07], truth)  # a parallel layer 7 cm off
    assert shifted["precision@0.05"] == 0.0 and shifted["recall@0.05"] == 0.0 and shifted["f@0.1"] == 1.0
    assert shifted["accuracy"] == pytest.approx(0.07, abs=1e-9)
    half = cloud_scores(truth[truth[:, 0] < 0.5], truth)  # half the surface, exactly
    assert half["precision@0.05"] == 1.0 and 0.5 < half["recall@0.05"] < 0.6


def test_alignment_solves_the_offset_between_two_sensors():
    rng = np.random.default_rng(3)
    truth = np.stack([G.invert_pose(G.invert_pose(look_at(rng.normal(0, 0.4, 3), rng.normal(0, 1, 3) + [0, 0, 3])))
                      for _ in range(12)])
    lever = np.array([0.03, -0.02, 0.05])  # the scene's camera in each truth camera's frame
    centres = truth[:, :3, 3] + np.einsum("nij,j->ni", truth[:, :3, :3], lever)
    R = G.rotation_from_quaternion(np.array([0.1, -0.2, 0.3, 0.9]))
    ours = (centres @ R.T) / 1.3 + [1.0, 2.0, -0.5]  # another frame, 1 / 1.3 the size
    s, R_fit, t, x = similarity_with_offset(ours, truth)
    assert s == pytest.approx(1.3, rel=1e-5) and np.allclose(x, lever, atol=1e-4)
    s_plain, *_ , x0 = similarity_with_offset(ours, truth, offset=False)
    assert np.all(x0 == 0) and abs(s_plain - 1.3) > 1e-3  # the plain similarity is biased by the offset
    # a scene in metres is aligned rigidly: its scale is judged, not fitted
    s_rigid, R_rigid, t_rigid, x1 = similarity_with_offset(centres @ R.T + [1.0, 2.0, -0.5], truth, scale=False)
    assert s_rigid == 1.0 and np.allclose(x1, lever, atol=1e-4) and np.allclose(R_rigid, R.T, atol=1e-5)
    s_short, *_ = similarity_with_offset(ours, truth, scale=False)
    assert s_short == 1.0  # even where the sizes differ: the 1.3 stays in the score


# ---------------------------------------------------------------------------- end to end on real frames


def test_recon3d_on_held_out_frames_lies_on_the_recorded_surface(cli, tmp_path):
    """Frames the bundled model never saw: the fused cloud and mesh against the recorded depth, beside
    --no-fusion (the views stacked as placed), COLMAP's points, the ceiling and the flat baseline."""
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    frames = [KITCHEN / f"frame-{i:06d}.color.jpg" for i in range(800, 897, 12)]  # 9 frames, 1 m of motion
    scores = {}
    for name, extra in (("fused", ["--mesh"]), ("stacked", ["--no-fusion"])):
        code, out, err = cli(["recon3d", *frames, "-o", tmp_path / name, "--cameras", "colmap", "-q", *extra])
        assert code == 0, err
        code, out, err = cli(["evaluate", "recon3d", tmp_path / name, "--data", KITCHEN, "--json"])
        assert code == 0, err
        scores[name] = json.loads(out)
        assert "recorded_depth_on_cameras" in err and "constant_depth_on_cameras" in err  # the table
    fused, stacked = scores["fused"]["rows"], scores["stacked"]["rows"]
    assert scores["fused"]["frames"] == 9 and scores["fused"]["ate"] < 0.05
    assert fused["recorded_depth_on_cameras"]["f@0.05"] > 0.95  # the cameras allow it
    assert fused["scene"]["f@0.05"] > max(0.55, stacked["scene"]["f@0.05"]), (fused["scene"], stacked["scene"])
    assert fused["scene"]["precision@0.05"] > stacked["scene"]["precision@0.05"] + 0.05
    assert fused["scene"]["accuracy"] < 0.05 and fused["scene"]["completeness"] < 0.05
    assert fused["mesh"]["f@0.05"] > 0.8 * fused["scene"]["f@0.05"]
    assert fused["scene"]["f@0.05"] > 2 * fused["colmap_points"]["f@0.05"]
    assert fused["scene"]["f@0.05"] > 4 * fused["constant_depth_on_cameras"]["f@0.05"]

"""Cameras from matching (pycolmap) and the network's depth placed on them: on ground truth, on real
7-Scenes frames against their recorded poses, against COLMAP's own run, and the COLMAP export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from heads import geometry as G
from heads.metrics import camera_metrics
from heads.pointmap.predictions import Predictions
from heads.recon import camera_files, sfm_job
from heads.recon.chunks import transformed
from heads.recon.placement import on_cameras
from heads.recon.camera_files import camera_K, image_cam2world

from .conftest import KITCHEN

pycolmap = pytest.importorskip("pycolmap")

HELD_OUT = [800 + 24 * i for i in range(9)]  # frames the bundled model never saw: 1.2 m and 30 degrees of motion


def kitchen(frames: list[int]) -> tuple[list[Path], np.ndarray]:
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    return ([KITCHEN / f"frame-{i:06d}.color.jpg" for i in frames],
            np.stack([np.loadtxt(KITCHEN / f"frame-{i:06d}.pose.txt") for i in frames]))


def camera_errors(c2w: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """ATE (mean, metres), the alignment's scale (1 = metric) and the mean relative rotation error (degrees)."""
    m = camera_metrics(c2w, gt)
    return m["ate_mean"], m["scale"], m["rotation_error_deg"]


def colmap_alone(images: list[Path], folder: Path) -> np.ndarray:
    """Camera-to-world of each image by pycolmap's own SfM at its defaults (the benchmark's reference)."""
    from benchmarks.recon3d import colmap_poses

    (folder / "images").mkdir(parents=True)
    for p in images:
        (folder / "images" / p.name).symlink_to(p)
    poses, _, _ = colmap_poses(folder / "images", folder)
    return np.stack([poses.get(p.name, np.full((4, 4), np.nan)) for p in images])


# ---------------------------------------------------------------------------- on ground truth


HW = (60, 80)  # processing size of the synthetic predictions; originals are 480x640


@pytest.fixture(scope="module")
def truth():
    """Ground truth of 5 kitchen frames (800-896) as predictions in frame 800's camera, at 80x60."""
    paths, poses = kitchen([800, 824, 848, 872, 896])
    U, _, Vt = np.linalg.svd(poses[:, :3, :3])
    poses[:, :3, :3] = U @ Vt  # the recorded rotations are a little off orthonormal
    rel = G.relative_to_first(poses)
    K = np.array([[585.0, 0, 319.5], [0, 585.0, 239.5], [0, 0, 1]])
    Kp = G.scale_intrinsics(K, (480, 640), HW)
    depth = np.stack([cv2.resize(cv2.imread(str(p).replace("color.jpg", "depth.png"), cv2.IMREAD_UNCHANGED),
                                 HW[::-1], interpolation=cv2.INTER_NEAREST) / 1000.0 for p in paths])
    depth[depth > 60] = 0  # 65535: no measurement
    pts = np.stack([G.transform(G.depth_to_points(d, Kp), T) for d, T in zip(depth, rel)])
    pred = Predictions(images=[str(p) for p in paths], pts3d=pts.astype(np.float32), depth_z=depth.astype(np.float32),
                       conf=np.ones(depth.shape, np.float32), mask=depth > 0, cam2world=rel.astype(np.float32),
                       K=np.repeat(Kp[None], 5, 0).astype(np.float32), K_original=np.repeat(K[None], 5, 0).astype(np.float32),
                       original_hw=np.array([[480, 640]] * 5), scale=1.0, metric=True)
    return pred, K


def fake_sfm(pred: Predictions, K: np.ndarray, sfm_scale: float, registered: list[bool], seed: int = 0):
    """What COLMAP would report for the true cameras: poses in a world of another scale and origin, one
    PINHOLE camera, and 200 observed points per frame with their true depths in that world."""
    from heads.recon.camera_files import SfmCameras

    rng = np.random.default_rng(seed)
    world = np.eye(4)
    world[:3, :3] = G.rotation_from_quaternion(rng.normal(size=4))
    world[:3, 3] = rng.normal(size=3)
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 585.0, 640, 480)
    camera.params = [585.0, 585.0, 320.0, 240.0]
    V = len(registered)
    cam2world = np.tile(np.eye(4), (V, 1, 1))
    observations = []
    for v in range(V):
        T = world @ pred.cam2world[v].astype(np.float64)
        T[:3, 3] *= sfm_scale
        cam2world[v] = T
        ys, xs = np.nonzero(pred.depth_z[v] > 0)
        pick = rng.choice(len(ys), 200, replace=False)
        xy = np.stack([(xs[pick] + 0.5) * 8 - 0.5, (ys[pick] + 0.5) * 8 - 0.5], 1)  # original pixels
        observations.append((xy, pred.depth_z[v][ys[pick], xs[pick]].astype(np.float64) * sfm_scale))
    rec = pycolmap.Reconstruction()  # the model SfmCameras reads: cameras, posed images, one point per observation
    rec.add_camera_with_trivial_rig(camera)
    for v in map(int, np.flatnonzero(registered)):
        xy, z = observations[v]
        image = pycolmap.Image(name=f"{v}.png", keypoints=xy + 0.5, camera_id=1, image_id=v + 1)  # COLMAP's pixels
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(G.invert_pose(cam2world[v])[:3]))
        cam_pts = np.concatenate([(xy - K[:2, 2]) / np.diag(K)[:2] * z[:, None], z[:, None]], 1)
        for i, X in enumerate(G.transform(cam_pts, cam2world[v])):
            track = pycolmap.Track()
            track.add_element(v + 1, i)
            rec.add_point3D(X, track, np.zeros(3, np.uint8))
    hw = np.array([[480, 640]] * V)
    return SfmCameras(rec, [f"{v}.png" for v in range(V)], hw, hw)


def test_depth_is_placed_on_the_cameras_at_the_networks_scale(truth):
    """Wrong network cameras, a per-frame error in depth scale, and cameras of matching in a world of
    another scale: out come the true cameras and points, in metres, in the first camera's frame."""
    pred, K = truth
    factors = np.array([0.8, 1.0, 1.1, 0.9, 1.2])
    noisy = replace(pred, depth_z=pred.depth_z * factors[:, None, None].astype(np.float32),
                    cam2world=np.tile(np.eye(4, dtype=np.float32), (5, 1, 1)))
    # the network's overall scale is what the reconstruction takes: its median over the frames is 1.0
    out, report = on_cameras(noisy, fake_sfm(pred, K, 0.37, [True] * 5))
    assert report["cameras"] == "sfm" and report["registered"] == 5 and report["unregistered"] == []
    assert np.allclose(report["sfm_scale"] * 0.37, 1.0, rtol=0.1)
    s = 1 / (report["sfm_scale"] * 0.37)  # the whole scene's scale is the network's (median over frames)
    assert np.allclose(out.cam2world[0], np.eye(4), atol=1e-5)
    assert np.allclose(out.cam2world[:, :3, :3], pred.cam2world[:, :3, :3], atol=1e-5)
    assert np.allclose(out.cam2world[:, :3, 3] * s, pred.cam2world[:, :3, 3], atol=1e-4)
    valid = pred.depth_z > 0
    assert np.allclose(out.pts3d[valid] * s, pred.pts3d[valid], atol=1e-3)  # per-frame scale errors undone
    assert np.allclose(np.array(report["depth_scales"]) * factors, 1 / s, rtol=1e-3)


def test_frames_matching_missed_keep_the_network_camera_aligned_to_the_rest(truth):
    pred, K = truth
    rng = np.random.default_rng(3)
    R = G.rotation_from_quaternion(rng.normal(size=4))
    network = transformed(pred, 1.0, R, rng.normal(size=3))  # right geometry, in the network's own frame
    out, report = on_cameras(network, fake_sfm(pred, K, 2.5, [True, True, False, True, True]))
    assert report["unregistered"] == [pred.images[2]]
    assert np.allclose(out.cam2world, pred.cam2world, atol=1e-3)
    valid = pred.depth_z[2] > 0
    assert np.allclose(out.pts3d[2][valid], pred.pts3d[2][valid], atol=1e-3)


def test_without_enough_registered_frames_the_network_cameras_stay(truth):
    pred, K = truth
    moved = transformed(pred, 1.0, G.rotation_from_quaternion(np.array([0.1, 0.2, 0.3, 0.9])), np.ones(3))
    out, report = on_cameras(moved, fake_sfm(pred, K, 1.0, [True] + [False] * 4))
    assert report["cameras"] == "network" and len(report["unregistered"]) == 5
    assert np.allclose(out.cam2world, pred.cam2world, atol=1e-4)  # only put in the first camera's frame


# ---------------------------------------------------------------------------- on real frames


@pytest.fixture(scope="module")
def kitchen_sfm():
    """pycolmap's reconstruction of 5 held-out kitchen frames, read as SfmCameras, and the true poses."""
    from heads.recon.sfm import SfmOptions
    from heads.recon.sfm_job import SfmJob
    from pixio_cli.inputs import collect

    paths, poses = kitchen([800, 824, 848, 872, 896])
    job = SfmJob(collect([str(p) for p in paths]), SfmOptions())
    return job.result(list(range(5)), [(480, 640)] * 5), poses, paths


def test_matching_registers_real_frames_on_their_true_cameras(kitchen_sfm):
    cams, poses, _ = kitchen_sfm
    assert cams.registered.all() and cams.points > 150 and cams.reprojection_error < 1.5
    ate, _, rot = camera_errors(cams.cam2world, poses)
    assert ate < 0.03 and rot < 3.0, (ate, rot)  # the recorded poses are the depth camera's, off the colour one
    assert np.allclose(cams.K[:, 0, 0], 530, rtol=0.05)  # 7-Scenes' colour camera (585 is the depth camera's)
    for (xy, z), T, K in zip(cams.observations, cams.cam2world, cams.K):  # observations are in original pixels
        assert len(xy) > 50 and (z > 0).all()
        assert (xy >= -0.5).all() and (xy[:, 0] < 640).all() and (xy[:, 1] < 480).all()


@pytest.fixture(scope="module")
def eleven_frames(tmp_path_factory):
    """11 held-out kitchen frames written as SfM reads them, their names and true poses."""
    folder = tmp_path_factory.mktemp("eleven")
    paths, poses = kitchen(list(range(800, 921, 12)))
    names = [sfm_job.write_frame(folder, i, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))[0]
             for i, p in enumerate(paths)]
    return folder, names, poses


def _busy_cores(n: int = 2) -> list:
    """Processes spinning on ``n`` cores until killed: a machine busy with something else."""
    import subprocess
    import sys

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_long_videos_map_keyframes_and_register_the_rest_the_same_on_a_busy_machine(eleven_frames, monkeypatch):
    """Above INCREMENTAL_UP_TO frames ``auto`` maps every s-th frame incrementally and registers the others to
    their points, the camera held: every frame registered, on the true cameras, the focal length the
    keyframes fitted. Run again with two other processes spinning on the cores, the cameras are the same to
    the last digit (one thread, seeded: nothing depends on timing)."""
    import heads.recon.sfm as sfm

    folder, names, poses = eleven_frames
    monkeypatch.setattr(sfm, "INCREMENTAL_UP_TO", 5)
    assert sfm.keyframe_names(names) == [names[i] for i in (0, 3, 6, 9, 10)]  # every 3rd, and the last
    stages: list[str] = []
    rec, _ = sfm.run_sfm(folder, names, sfm.SfmOptions(first_octave=0), on_stage=stages.append)
    assert "incremental mapping of 5 keyframes, the other frames registered to them" in stages, stages
    hw = np.array([[480, 640]] * 11)
    cams = camera_files.SfmCameras(rec, names, hw, hw)
    assert cams.registered.all() and cams.points > 300
    assert all(len(xy) > 100 for xy, _ in cams.observations)  # the registered frames' own points triangulated
    ate, _, rot = camera_errors(cams.cam2world, poses)
    assert ate < 0.03 and rot < 3.0, (ate, rot)
    assert np.allclose(cams.K[:, 0, 0], 530, rtol=0.05) and np.allclose(cams.K, cams.K[0])
    hogs = _busy_cores()
    try:
        again, _ = sfm.run_sfm(folder, names, sfm.SfmOptions(first_octave=0), on_stage=lambda stage: None)
    finally:
        for hog in hogs:
            hog.kill()
    same = camera_files.SfmCameras(again, names, hw, hw)
    assert np.array_equal(same.cam2world, cams.cam2world) and np.array_equal(same.K, cams.K), \
        "a rerun on a busy machine gave other cameras"


def test_matching_verifies_the_same_pairs_on_a_busy_machine(tmp_path):
    """Sequential matching of 60 video frames twice, the second time with two other processes spinning on the
    cores: the verified matches in the database are the same, pair by pair (on more threads each verifying
    thread draws its RANSAC samples from its own seed, and which pairs it gets depends on timing)."""
    import sqlite3

    import heads.recon.sfm as sfm

    video = KITCHEN.parent / "video-7scenes-redkitchen"
    if not video.exists():
        pytest.skip("shared data not present")
    frames = sorted(video.glob("frame-*.color.jpg"))[:60]

    def verified(folder: Path, busy: bool) -> list:
        folder.mkdir()
        for p in frames:
            (folder / p.name).symlink_to(p)
        hogs = _busy_cores() if busy else []
        try:
            sfm.run_sfm(folder, [p.name for p in frames], sfm.SfmOptions(first_octave=0, mapper="none",
                                                                         matching="sequential"), video=True)
        finally:
            for hog in hogs:
                hog.kill()
        with sqlite3.connect(folder / "database.db") as db:
            return sorted(db.execute("SELECT pair_id, rows, config, data FROM two_view_geometries").fetchall())

    quiet, busy = verified(tmp_path / "quiet", False), verified(tmp_path / "busy", True)
    assert len(quiet) > 250 and sum(r[1] > 0 for r in quiet) > 200
    assert quiet == busy, "matching verified other inliers on a busy machine"


@pytest.mark.parametrize("max_track_views", [None, 3])
def test_the_global_mapper_finds_the_same_cameras_on_every_run(tmp_path, max_track_views, monkeypatch):
    """``--mapper global`` (GLOMAP: global rotations, then positions, then BA) on real frames finds the true
    cameras; tracks longer than MAX_TRACK_VIEWS are left out of positioning and BA, yet end in the model
    (retriangulated); one thread, seeded: a rerun gives the same cameras to the last digit."""
    import heads.recon.sfm as sfm

    paths, poses = kitchen([800, 824, 848, 872, 896, 920])  # wider apart than eleven_frames: GLOMAP fixes f
    folder = tmp_path
    names = [sfm_job.write_frame(folder, i, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))[0]
             for i, p in enumerate(paths)]
    if max_track_views is not None:
        monkeypatch.setattr(sfm, "MAX_TRACK_VIEWS", max_track_views)
    stages: list[str] = []
    options = sfm.SfmOptions(first_octave=0, mapper="global")
    rec, _ = sfm.run_sfm(folder, names, options, on_stage=stages.append)
    assert "global mapping and bundle adjustment" in stages, stages
    hw = np.array([[480, 640]] * 6)
    cams = camera_files.SfmCameras(rec, names, hw, hw)
    assert cams.registered.all() and cams.points > 150
    ate, _, rot = camera_errors(cams.cam2world, poses)
    assert ate < 0.03 and rot < 3.0, (ate, rot)
    assert np.allclose(cams.K[:, 0, 0], 530, rtol=0.05)
    assert max(p.track.length() for p in rec.points3D.values()) > 3  # long tracks kept, capped or not
    if max_track_views is None:
        again, _ = sfm.run_sfm(folder, names, options, on_stage=lambda stage: None)
        same = camera_files.SfmCameras(again, names, hw, hw)
        assert np.array_equal(same.cam2world, cams.cam2world) and np.array_equal(same.K, cams.K)


@pytest.mark.parametrize("mapper,per_frame", [("global", False), ("keyframes", False), ("keyframes", True)])
def test_long_video_mappers_hold_known_intrinsics_as_given(tmp_path, monkeypatch, mapper, per_frame):
    """--intrinsics on a long video: GLOMAP, or keyframes and the frames registered to them, map it, and the
    camera it writes is the one given (COLMAP's bundle adjustment, or a registration refining the focal
    length, would otherwise move it away from a calibration the user measured)."""
    import heads.recon.sfm as sfm

    monkeypatch.setattr(sfm, "INCREMENTAL_UP_TO", 3)
    paths, _ = kitchen([800, 824, 848, 872, 896, 920])
    names = [sfm_job.write_frame(tmp_path, i, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))[0]
             for i, p in enumerate(paths)]
    given = np.array([[560.0, 0, 321.0], [0, 560.0, 238.0], [0, 0, 1]])  # not what the frames would fit (about 530)
    # one K per frame (a camera each, as with a zoom): each registered frame's own camera must stay as given too
    given = np.stack([given * [[1 + 0.01 * (i % 2 if per_frame else 0)], [1], [1]] for i in range(6)])
    stages: list[str] = []
    rec, note = sfm.run_sfm(tmp_path, names, sfm.SfmOptions(first_octave=0, mapper=mapper, known_K=list(given)),
                            on_stage=stages.append)
    said = "global mapping and bundle adjustment" if mapper == "global" else "incremental mapping of 4 keyframes"
    assert any(stage.startswith(said) for stage in stages) and note is None, (stages, note)
    cams = camera_files.SfmCameras(rec, names, np.array([[480, 640]] * 6), np.array([[480, 640]] * 6))
    assert cams.registered.all()
    assert np.allclose(cams.K, given, atol=1e-6), cams.K[:, 0]


def test_loop_pairs_are_the_frames_alike_far_apart():
    """A walk out and back: each frame on the way back is paired with itself on the way out, and no pair is
    within the frames sequential matching covers."""
    rng = np.random.default_rng(0)
    out = rng.normal(size=(40, 16))
    walk = np.concatenate([out, out[::-1] + 0.05 * rng.normal(size=out.shape)])
    walk /= np.linalg.norm(walk, axis=1, keepdims=True)
    from heads.recon.sfm import loop_pairs

    pairs = loop_pairs(walk, apart=5, per_frame=1)
    assert all(j - i > 5 for i, j in pairs)
    returns = {(i, 79 - i) for i in range(40) if 79 - 2 * i > 5}  # frame i again at 79 - i
    assert returns <= set(pairs), sorted(returns - set(pairs))[:5]
    assert len(loop_pairs(walk, apart=100)) == 0  # nothing far enough apart


def test_loop_pairs_are_matched_before_mapping(tmp_path):
    """The pairs ``more_pairs`` gives are matched and verified beside the sequential ones: a walk there and
    back with overlap 1 has the first and last frame (the same place) matched only through them."""
    import heads.recon.sfm as sfm

    paths, _ = kitchen([800, 824, 848, 824, 800])
    names = [sfm_job.write_frame(tmp_path, i, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))[0]
             for i, p in enumerate(paths)]
    asked: list[list[str]] = []

    def more_pairs(frames: list[str]) -> list[tuple[str, str]]:
        asked.append(frames)
        return [(frames[0], frames[4])]

    rec, _ = sfm.run_sfm(tmp_path, names, sfm.SfmOptions(first_octave=0, matching="sequential", overlap=1),
                         more_pairs=more_pairs)
    assert asked == [names] and rec.num_reg_images() == 5
    db = pycolmap.Database.open(tmp_path / "database.db")
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        loop = len(db.read_two_view_geometry(ids[names[0]], ids[names[4]]).inlier_matches) \
            if db.exists_two_view_geometry(ids[names[0]], ids[names[4]]) else 0
        apart = db.exists_two_view_geometry(ids[names[0]], ids[names[3]])
    finally:
        db.close()
    assert loop > 100, loop  # the same place: matched and verified
    assert not apart  # 3 frames apart: not paired by overlap 1


def test_loop_closure_matches_where_the_video_returns(cli, tmp_path, monkeypatch):
    """``--loop-closure``: the network's descriptors reach matching, which pairs the frames alike far apart
    (here the walk's first and last frame, one image) before mapping."""
    import heads.recon.sfm as sfm

    walk, _ = kitchen([800, 824, 848, 872, 848, 824, 800])
    paths = [tmp_path / f"{i:02d}-{p.name}" for i, p in enumerate(walk)]  # a video's frames: one file each
    for link, p in zip(paths, walk):
        link.symlink_to(p)
    seen, matched = [], []
    real_pairs, real_match = sfm.loop_pairs, sfm._match_pairs

    def pairs(descriptors, apart, per_frame=sfm.LOOP_PAIRS):
        seen.append(descriptors)
        return real_pairs(descriptors, apart=2, per_frame=1)  # 7 frames: closer than matching's 10

    def match(db, path, pairs, **kw):
        matched.extend(pairs)
        return real_match(db, path, pairs, **kw)

    monkeypatch.setattr(sfm_job, "loop_pairs", pairs)  # the job thread asks for them
    monkeypatch.setattr(sfm, "_match_pairs", match)
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "out" / "scene.ply", "--loop-closure", "--matching",
                          "sequential", "--no-fusion", "--json", "-q"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["cameras"]["registered"] == 7
    d = seen[0]
    assert d.shape[0] == 7 and float(d[0] @ d[6]) > 0.999 and float(d[0] @ d[3]) < float(d[0] @ d[6])
    assert ("000000.png", "000006.png") in matched, matched  # the same place, far apart in the video


@pytest.mark.parametrize("text", [False, True])
def test_colmap_export_keeps_the_tracks_and_adds_the_frames_matching_missed(kitchen_sfm, tmp_path, text):
    from heads.recon.camera_files import write_colmap

    cams, _, paths = kitchen_sfm
    missed = replace(cams, names=[*cams.names[:4], "missing"])  # as if the last had failed
    s, T = 2.0, np.eye(4)
    T[:3, :3], T[:3, 3] = G.rotation_from_quaternion(np.array([0.2, -0.1, 0.3, 0.9])), [1.0, 2.0, 3.0]
    c2w = np.stack([T @ _scaled(c, s) for c in cams.cam2world])
    c2w[4] = np.eye(4)
    c2w[4, :3, 3] = [0.5, 0, 0]
    K = cams.K.copy()
    K[4] = [[500.0, 0, 100], [0, 510.0, 80], [0, 0, 1]]
    labels = [str(p) for p in paths]
    write_colmap(tmp_path / "sparse", labels, original_hw=np.array([[480, 640]] * 5), K=K, cam2world=c2w, sfm=missed,
                 sfm_to_world=(s, T), text=text)
    assert sorted(f.name for f in (tmp_path / "sparse").iterdir()) == sorted(
        f"{n}.{'txt' if text else 'bin'}" for n in ("cameras", "images", "points3D", "frames", "rigs"))
    rec = pycolmap.Reconstruction(str(tmp_path / "sparse"))
    assert rec.num_reg_images() == 5 and rec.num_points3D() > 0.5 * cams.points
    assert all(p.track.length() >= 2 for p in rec.points3D.values())  # real multi-view tracks
    by_name = {im.name: im for im in rec.images.values()}
    assert set(by_name) == set(labels)
    assert by_name[labels[4]].num_points3D == 0
    for label, want in zip(labels, c2w):
        assert np.allclose(image_cam2world(by_name[label]), want, atol=1e-6)
    added = rec.cameras[by_name[labels[4]].camera_id]
    assert added.model_name == "PINHOLE" and np.allclose(added.params, [500, 510, 100.5, 80.5])
    assert rec.compute_mean_reprojection_error() < 1.5  # the points moved with the cameras


def _scaled(c2w: np.ndarray, s: float) -> np.ndarray:
    out = c2w.copy()
    out[:3, 3] *= s
    return out


def test_default_recon3d_cameras_are_as_good_as_colmaps_and_metric(cli, tmp_path):
    """The command as a user runs it, bundled model, on frames it never saw: every frame has a camera,
    the cameras are within 1.25x COLMAP's own on the same frames, and lengths are metres within 15 %."""
    paths, poses = kitchen(HELD_OUT)
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "scene.ply", "--cameras", "json", "--json", "-q"])
    assert code == 0, err
    assert "warning" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["cameras"]["registered"] == len(paths) and summary["cameras"]["cameras"] == "sfm"
    sfm_stages = summary["seconds"]["sfm_stages"]  # where the SfM thread's time went, stage by stage
    assert any(k.startswith("SIFT features") for k in sfm_stages) and "exhaustive matching" in sfm_stages
    assert 0 < sum(sfm_stages.values()) <= summary["seconds"]["sfm_thread"] + 0.05, summary["seconds"]
    cams = json.loads((tmp_path / "cameras.json").read_text())
    ours = np.array([c["cam2world"] for c in cams["cameras"]])
    assert cams["unit"] == "metres, as the network estimates them" and np.allclose(ours[0], np.eye(4), atol=1e-6)
    ate, scale, rot = camera_errors(ours, poses)
    colmap_ate, _, _ = camera_errors(colmap_alone(paths, tmp_path / "colmap"), poses)
    origin_ate, _, _ = camera_errors(np.tile(np.eye(4), (len(paths), 1, 1)) + _jitter(len(paths)), poses)
    assert ate <= 1.25 * colmap_ate + 0.002, (ate, colmap_ate)
    assert ate < origin_ate / 5, (ate, origin_ate)
    assert 0.85 < scale < 1.15, scale
    assert rot < 3.0, rot


def _jitter(n: int) -> np.ndarray:
    """Cameras at the origin, told apart by a micrometre so the alignment is defined."""
    out = np.zeros((n, 4, 4))
    out[:, :3, 3] = np.random.default_rng(0).normal(size=(n, 3)) * 1e-6
    return out


def test_unrelated_photos_and_a_single_frame_keep_the_networks_cameras_with_a_warning(cli, tmp_path):
    samples = Path(__file__).resolve().parents[1] / "samples"
    street, room = samples / "street" / "camvid_0016E5_07959.jpg", samples / "room" / "frame-000900.color.jpg"
    code, out, err = cli(["recon3d", street, room, "-o", tmp_path / "a.ply",
                          "--cameras", "json", "--json", "-q"])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "the 2 photos do not form one scene" in warnings[0], err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["cameras"]["cameras"] == "network"
    assert len(json.loads((tmp_path / "cameras.json").read_text())["cameras"]) == 2
    # a COLMAP model of them would be two photos in one frame with nothing in common: not written
    code, out, err = cli(["recon3d", street, room, "-o", tmp_path / "m", "--cameras", "colmap", "-q"])
    assert code == 1 and "no COLMAP model written: the photos do not form one scene" in err, err
    assert (tmp_path / "m" / "scene.ply").exists() and not (tmp_path / "m" / "sparse").exists()
    code, out, err = cli(["recon3d", samples / "photos" / "beagle.jpg", "-o", tmp_path / "b.ply", "--json", "-q"])
    assert code == 0 and "one frame has nothing to match" in err
    assert "one view: its depth could not be checked" in err and json.loads(out)["points"] > 0, err


def test_no_sfm_is_the_network_alone_in_the_first_cameras_frame(cli, tmp_path):
    paths, _ = kitchen(HELD_OUT[:3])
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "s.ply", "--no-sfm", "--cameras", "json", "--json",
                          "-q"])
    assert code == 0 and "warning" not in err, err
    assert json.loads(out.strip().splitlines()[-1])["cameras"]["cameras"] == "network"
    first = json.loads((tmp_path / "cameras.json").read_text())["cameras"][0]["cam2world"]
    assert np.allclose(first, np.eye(4), atol=1e-6)


def test_known_cameras_are_used_as_given_from_our_json_and_from_a_colmap_model(cli, tmp_path):
    paths, _ = kitchen(HELD_OUT[:5])
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "a", "--cameras", "json", "--json", "-q"])
    assert code == 0, err
    code, _, err = cli(["recon3d", *paths, "-o", tmp_path / "c", "--cameras", "colmap", "-q"])
    assert code == 0, err
    first = json.loads((tmp_path / "a" / "cameras.json").read_text())["cameras"]
    rec = pycolmap.Reconstruction(str(tmp_path / "c" / "sparse" / "0"))
    by_name = {im.name: im for im in rec.images.values()}
    from_colmap = []
    for c in first:  # the COLMAP run's own cameras (another SfM run: not the json run's to the millimetre)
        from_colmap.append({"image": c["image"], "cam2world": image_cam2world(by_name[c["image"]]).tolist(),
                            "K": camera_K(by_name[c["image"]].camera).tolist()})
    for given, expected in ((tmp_path / "a" / "cameras.json", first), (tmp_path / "c" / "sparse" / "0", from_colmap)):
        extra: list = []
        code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "b", "--known-cameras", given, "--cameras", "json",
                              "--json", "-q", *extra])
        assert code == 0 and "warning" not in err, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["cameras"]["cameras"] == "given" and summary["cameras"]["registered"] == 5
        again = json.loads((tmp_path / "b" / "cameras.json").read_text())["cameras"]
        # the cameras come back as they were given, in the first one's frame: exactly from a cameras.json in
        # metres; from a COLMAP model up to the one scale its points set (the network, given the model's K,
        # sees the frames a little differently than when it found K itself)
        s = summary["cameras"]["sfm_scale"]
        assert (s == 1.0) if given.suffix == ".json" else abs(s - 1) < 0.05, s
        for a, b in zip(expected, again):
            assert a["image"] == b["image"]
            A, B = np.array(a["cam2world"]), np.array(b["cam2world"])
            assert np.allclose(A[:3, :3], B[:3, :3], atol=1e-5), given
            assert np.allclose(A[:3, 3] * s, B[:3, 3], atol=1e-4), given
            assert np.allclose(a["K"], b["K"], rtol=1e-3), given
    code, _, err = cli(["recon3d", *paths, "-o", tmp_path / "d", "--known-cameras", tmp_path / "a" / "cameras.json",
                        "--intrinsics", tmp_path / "a" / "cameras.json"])
    assert code == 2 and "give one of --known-cameras and --intrinsics" in err
    code, _, err = cli(["recon3d", *paths, kitchen([996])[0][0], "-o", tmp_path / "e", "--known-cameras",
                        tmp_path / "a" / "cameras.json"])
    assert code == 2 and "no camera for 1 of the 6 frames" in err, err


def test_frame_folders_of_killed_runs_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import tempfile

    from heads.recon.sfm_job import _remove_orphans

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, live = tmp_path / "pixio-sfm-999999999-abc", tmp_path / f"pixio-sfm-{__import__('os').getpid()}-def"
    for d in (dead, live):
        d.mkdir()
        (d / "000000.png").write_bytes(b"x")
    _remove_orphans()
    assert not dead.exists() and live.exists()


def test_the_same_frames_give_the_same_cameras(cli, tmp_path):
    """Five frames, three times, with the network running beside matching as in any run: COLMAP's threads
    gave another focal length from run to run (SIFT's images reached the database in another order, and
    verification drew its own RANSAC seed)."""
    paths, _ = kitchen([800, 808, 816, 824, 832])
    runs = []
    for k in range(3):
        code, out, err = cli(["recon3d", *paths, "-o", tmp_path / f"r{k}", "--cameras", "json", "--json", "-q",
                              "--no-fusion"])
        assert code == 0, err
        runs.append(json.loads((tmp_path / f"r{k}" / "cameras.json").read_text())["cameras"])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a["K"], b["K"]) and np.array_equal(a["cam2world"], b["cam2world"]), (a, b)


def test_a_loosely_fixed_focal_length_is_kept_and_said(cli, tmp_path):
    """Frames close together fix a focal length only loosely: COLMAP's fit wanders with the frames chosen (the
    colour camera is about 530 px at 640 x 480; five frames 8 apart fit almost 900). No evidence says the fit
    is wrong, and COLMAP's prior (768 px here: 1.2 x the long side) is a guess about another camera: the fit
    is kept, and the run says how loose it is and what fixes it (--intrinsics)."""
    paths, _ = kitchen([800, 808, 816, 824, 832])
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "few", "--cameras", "json", "--no-fusion"])
    assert code == 0, err
    assert "fix the focal length only loosely" in err and "it is kept" in err, err
    assert "give --intrinsics" in err, err
    fitted = float(err.split("fitted ")[1].split(" px")[0])
    for cam in json.loads((tmp_path / "few" / "cameras.json").read_text())["cameras"]:
        assert abs(np.array(cam["K"])[0, 0] - fitted) < 1.0 and abs(fitted - 768.0) > 1.0, (cam["K"], fitted)


def test_a_focal_length_no_lens_has_is_held_and_a_loose_one_kept(tmp_path):
    """Eight frames 8 apart fit a distortion no lens has: mapped again with the focal length held at the
    prior. Six frames 8 apart fit a focal length that, held 20 % off either way, hardly raises the
    reprojection error: loose, said, kept. Five frames 24 apart fix theirs, within 30 px of the camera's."""
    import shutil

    from heads.recon.focal import _unfixed_focal
    from heads.recon.sfm import SfmOptions, run_sfm

    for frames, expect in (([800 + 8 * i for i in range(6)], "only loosely"),
                           ([800 + 8 * i for i in range(8)], "is one no lens has"),
                           ([800 + 24 * i for i in range(5)], None)):
        paths, _ = kitchen(frames)
        folder = tmp_path / str(len(frames))
        folder.mkdir()
        for p in paths:
            shutil.copy(p, folder / p.name)
        rec, note = run_sfm(folder, [p.name for p in paths], SfmOptions())
        focal = next(iter(rec.cameras.values())).mean_focal_length()
        if expect is None:
            assert note is None and abs(focal - 530) < 30 and _unfixed_focal(rec) == (None, None), (note, focal)
        elif expect == "only loosely":
            assert note is not None and expect in note and focal != 768.0, (frames, note, focal)
        else:
            assert note is not None and expect in note and focal == 768.0, (frames, note, focal)


def test_the_focal_check_adjusts_quietly(kitchen_sfm, capfd):
    """The focal-length check's bundle adjustments print nothing (pycolmap's own call logs and turns glog's
    level back to INFO) and leave the reconstruction they were given as it was."""
    import pycolmap

    from heads.recon.camera_files import _pycolmap
    from heads.recon.focal import _error_held_at

    _pycolmap()
    rec = kitchen_sfm[0].reconstruction
    before = rec.compute_mean_reprojection_error()
    capfd.readouterr()
    errors = [_error_held_at(rec, f) for f in (1.0, 0.8)]
    assert capfd.readouterr().err == ""
    assert pycolmap.logging.minloglevel == 3
    assert 0 < errors[0] < errors[1]  # held 20 % off, the frames fit worse
    assert rec.compute_mean_reprojection_error() == before


def _bent(image: np.ndarray, K: np.ndarray, k: float) -> np.ndarray:
    """``image`` as a lens with COLMAP's SIMPLE_RADIAL distortion ``k`` would show it (focal length and centre
    from ``K``): each pixel of the result samples the undistorted point it is the image of."""
    h, w = image.shape[:2]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    xd, yd = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    x, y = xd.copy(), yd.copy()
    for _ in range(20):  # x (1 + k r^2) = xd, solved by fixed-point iteration (|k r^2| is small)
        scale = 1 + k * (x * x + y * y)
        x, y = xd / scale, yd / scale
    return cv2.remap(image, (x * K[0, 0] + K[0, 2]).astype(np.float32), (y * K[1, 1] + K[1, 2]).astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


FRAMES = 12


def test_a_lens_distortion_the_frames_do_not_need_is_held_at_zero_and_a_real_one_kept(tmp_path):
    """Rendered through a pinhole (525 px), 12 frames of a room let COLMAP trade a small radial distortion
    against the focal length (533.2 px with distortion 0.004): every depth then comes out 1.6 % too deep.
    Held at 0, the focal length refits within 0.5 % of the truth. The same frames bent by a real distortion
    (-0.08, corners moved 10 px) keep it: held at 0, they would fit far worse. (Their focal length is then
    fixed less well: 552 px from these 12 frames.)"""
    import shutil

    from benchmarks.synthetic_scenes import write_scene
    from heads.recon.sfm import SfmOptions, run_sfm

    images = write_scene("room", tmp_path / "room", frames=FRAMES)
    K = np.loadtxt(tmp_path / "room" / "K.txt")
    names = sorted(p.name for p in images.iterdir())
    rec, _ = run_sfm(images, names, SfmOptions(first_octave=0))
    camera = next(iter(rec.cameras.values()))
    assert rec.num_reg_images() == FRAMES
    assert abs(camera.mean_focal_length() / K[0, 0] - 1) < 0.005, camera.params
    assert not np.any(np.asarray(camera.params)[camera.extra_params_idxs()]), camera.params

    bent = tmp_path / "bent"
    bent.mkdir()
    for name in names:
        cv2.imwrite(str(bent / name), _bent(cv2.imread(str(images / name)), K, -0.08))
    shutil.rmtree(tmp_path / "room")
    rec, _ = run_sfm(bent, names, SfmOptions(first_octave=0))
    camera = next(iter(rec.cameras.values()))
    k = float(np.asarray(camera.params)[camera.extra_params_idxs()][0])
    assert abs(k + 0.08) < 0.02, camera.params


def test_recorded_poses_that_fit_the_colour_images_loosely_give_way_to_matching_placed_on_them(cli, tmp_path):
    """7-Scenes' poses and K are its depth camera's: the colour frames' matches triangulated from them land
    ~1.5 px off. The frames' own mapping is used instead, in the recorded frame and scale; --hold-cameras
    keeps the recorded cameras as they are, and says they fit loosely."""
    paths, poses = kitchen(HELD_OUT[:5])
    K = np.loadtxt(KITCHEN / "camera-intrinsics.txt")
    given = tmp_path / "recorded.json"
    given.write_text(json.dumps({"unit": "m", "cameras": [
        {"image": p.name, "width": 640, "height": 480, "K": K.tolist(), "cam2world": T.tolist()}
        for p, T in zip(paths, poses)]}))
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "a", "--known-cameras", given, "--cameras", "json",
                          "--json", "-q", "--no-fusion"])
    assert code == 0 and "warning" not in err, err
    assert "the given cameras fit the images loosely" in err and "the cameras matching finds" in err, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["cameras"]["cameras"] == "given" and summary["unit"] == "metres, from the given cameras"
    cams = json.loads((tmp_path / "a" / "cameras.json").read_text())["cameras"]
    centres = np.array([c["cam2world"] for c in cams])[:, :3, 3]
    assert np.abs(centres - poses[:, :3, 3]).max() < 0.05  # on the recorded path, in metres
    assert not np.allclose([c["K"][0][0] for c in cams], K[0, 0], rtol=0.02)  # the colour camera's own focal length
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "b", "--known-cameras", given, "--cameras", "json",
                          "--json", "-q", "--no-fusion", "--hold-cameras"])
    assert code == 0 and "warning: the given cameras fit the images loosely" in err, err
    assert "the cameras matching finds" not in err
    held = json.loads((tmp_path / "b" / "cameras.json").read_text())["cameras"]
    for c, T in zip(held, poses):
        assert np.allclose(np.array(c["cam2world"])[:3, 3], T[:3, 3], atol=1e-6) and np.allclose(c["K"], K)


def test_matching_starts_only_after_the_decoding_workers_are_forked(cli, tmp_path, monkeypatch):
    """A worker forked while COLMAP's thread creates threads can inherit a held lock and hang for ever (seen:
    a worker stuck in torch.set_num_threads for 17 min): the matching thread starts after the fork."""
    import threading

    from torch.utils.data import DataLoader

    at_fork: list[list[str]] = []
    real_iter = DataLoader.__iter__

    def watched(self):
        at_fork.append([t.name for t in threading.enumerate()])
        return real_iter(self)

    monkeypatch.setattr(DataLoader, "__iter__", watched)
    paths, _ = kitchen(HELD_OUT[:3])
    code, out, err = cli(["recon3d", *paths, "-o", tmp_path / "s", "--workers", "2", "--json", "-q", "--no-fusion"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["cameras"]["cameras"] == "sfm"
    assert len(at_fork) == 1 and "pixio-sfm" not in at_fork[0], at_fork

"""Given cameras that fit the images loosely give way to the frames' own mapping, placed on them
(heads.recon.sfm.placed_on_given, given_frame): the given frame and scale, the matched cameras' fit."""

from __future__ import annotations

import cv2
import numpy as np
import pycolmap
import pytest

from heads.geometry import apply_sim3_to_poses, invert_pose
from heads.recon.camera_files import SfmCameras, _colmap_params
from heads.recon.sfm import given_frame, placed_on_given

K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
HW = (480, 640)


def turn(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([rx, ry, rz], np.float64))[0]


def poses(centres: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cameras at ``centres`` (V, 3), each looking down +z turned a little its own way."""
    rng = np.random.default_rng(seed)
    out = np.tile(np.eye(4), (len(centres), 1, 1))
    for v, c in enumerate(centres):
        out[v, :3, :3] = turn(*rng.uniform(-0.1, 0.1, 3))
        out[v, :3, 3] = c
    return out


def model(cam2world: np.ndarray, points: np.ndarray, off_px: float = 0.0, seed: int = 1):
    """A reconstruction of PINHOLE cameras K at ``cam2world`` seeing ``points`` (N, 3), each observation
    ``off_px`` pixels from the point's projection (in a random direction)."""
    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    tracks = [pycolmap.Track() for _ in points]
    for v, T in enumerate(cam2world):
        camera = pycolmap.Camera.create_from_model_name(v + 1, "PINHOLE", float(K[0, 0]), HW[1], HW[0])
        camera.params = _colmap_params(K)
        rec.add_camera_with_trivial_rig(camera)
        w2c = invert_pose(T)
        cam = points @ w2c[:3, :3].T + w2c[:3, 3]
        xy = cam[:, :2] / cam[:, 2:] * K[0, 0] + K[:2, 2] + 0.5  # COLMAP's pixel centres sit at .5
        angle = rng.uniform(0, 2 * np.pi, len(points))
        xy += off_px * np.stack([np.cos(angle), np.sin(angle)], 1)
        image = pycolmap.Image(name=f"{v:06d}.png", keypoints=xy, camera_id=v + 1, image_id=v + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3]))
        for k, track in enumerate(tracks):
            track.add_element(v + 1, k)
    for X, track in zip(points, tracks):
        rec.add_point3D(X, track)
    rec.update_point_3d_errors()  # as COLMAP's triangulation leaves them
    return rec


def cameras(rec, V: int, **kwargs) -> SfmCameras:
    hw = np.tile(HW, (V, 1))
    return SfmCameras(rec, [f"{v:06d}.png" for v in range(V)], hw, hw, **kwargs)


def scene(V: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.stack([np.linspace(-0.5, 0.5, V), rng.uniform(-0.2, 0.2, V), rng.uniform(-0.1, 0.1, V)], 1)
    points = rng.uniform([-1, -1, 2], [1, 1, 4], (60, 3))
    return poses(centres, seed), points


SIM = (1.7, turn(0.3, -0.5, 0.9), np.array([2.0, -1.0, 0.5]))  # the given frame, from the found one


def test_the_frame_of_cameras_spread_on_a_plane_comes_from_their_centres():
    found, _ = scene()
    given = apply_sim3_to_poses(found, *SIM)
    given[:, :3, :3] = given[:, :3, :3] @ turn(0.05, 0.0, 0.0)  # another sensor on the rig: turned, not moved
    s, R, t = given_frame(found, given)
    assert s == pytest.approx(SIM[0], rel=1e-9)
    assert np.allclose(R, SIM[1], atol=1e-9) and np.allclose(t, SIM[2], atol=1e-9)


def test_cameras_on_one_line_take_the_turn_about_it_from_their_rotations():
    found, _ = scene()
    found[:, :3, 3] = np.outer(np.linspace(-0.5, 0.5, len(found)), [1.0, 0.0, 0.0]) + [0.3, 0.2, 1.0]
    given = apply_sim3_to_poses(found, *SIM)
    s, R, t = given_frame(found, given)
    assert s == pytest.approx(SIM[0], rel=1e-9)
    assert np.allclose(R, SIM[1], atol=1e-9) and np.allclose(t, SIM[2], atol=1e-9)


def test_cameras_near_one_line_take_the_turn_about_it_from_their_rotations_not_their_noise():
    """Centres 2 cm off a 1 m line, the given ones 1 cm off where they should be: the centres alone would
    turn the scene about the line by tens of degrees; the rotations fix it."""
    found, _ = scene()
    rng = np.random.default_rng(5)
    found[:, :3, 3] = np.outer(np.linspace(-0.5, 0.5, len(found)), [1.0, 0.0, 0.0]) + rng.normal(0, 0.02, (6, 3))
    given = apply_sim3_to_poses(found, *SIM)
    given[:, :3, 3] += rng.normal(0, 0.01 * SIM[0], (6, 3))
    s, R, t = given_frame(found, given)
    assert np.allclose(R, SIM[1], atol=1e-9)
    assert s == pytest.approx(SIM[0], rel=0.05)


def test_the_turn_from_rotations_that_disagree_is_a_rotation_never_a_mirror():
    """Cameras on one line, the given ones turned half a turn about x (4 of them), y (3) and z (2): the
    rotations' plain mean (their sum diag(-1, -3, -5), orthonormalised) is -I, a mirror; the nearest rotation
    is the half turn about x, which keeps the path's direction."""
    found = np.tile(np.eye(4), (9, 1, 1))
    found[:, :3, 3] = np.outer(np.arange(9.0), [1.0, 0.0, 0.0])
    given = found.copy()
    for v, flip in enumerate([[1, -1, -1]] * 4 + [[-1, 1, -1]] * 3 + [[-1, -1, 1]] * 2):
        given[v, :3, :3] = np.diag(flip)
    s, R, t = given_frame(found, given)
    assert np.allclose(R, np.diag([1.0, -1.0, -1.0]), atol=1e-9)
    assert s == pytest.approx(1.0) and np.allclose(t, 0.0, atol=1e-9)


def test_rotations_that_turn_the_path_against_the_given_one_give_no_frame():
    """Given cameras all turned half a turn about z, their path running the same way as the found one's: the
    turn reverses the path, so only a scale of -1 (a mirror) would fit the centres."""
    found = np.tile(np.eye(4), (3, 1, 1))
    found[:, :3, 3] = np.outer([0.0, 1.0, 2.0], [1.0, 0.0, 0.0])
    given = found.copy()
    given[:, :3, :3] = np.diag([-1.0, -1.0, 1.0])
    assert given_frame(found, given) is None
    given[:, :3, 3] *= -1  # the path the other way: the half turn fits it
    s, R, t = given_frame(found, given)
    assert s == pytest.approx(1.0) and np.allclose(s * found[:, :3, 3] @ R.T + t, given[:, :3, 3], atol=1e-9)


def test_given_cameras_stay_where_no_similarity_puts_the_mapped_ones_on_them(monkeypatch):
    from heads.recon import sfm

    truth, points = scene()
    given = cameras(model(truth, points, off_px=2.0), 6, known=True, scale=1.0)
    monkeypatch.setattr(sfm, "given_frame", lambda found, given: None)
    kept = placed_on_given(model(truth, points), given)
    assert kept.reconstruction is given.reconstruction and "mirror image" in kept.note


def test_a_camera_that_strays_does_not_move_the_frame():
    found, _ = scene(V=8)
    given = apply_sim3_to_poses(found, *SIM)
    given[3, :3, 3] += [0.4, -0.3, 0.2]
    s, R, t = given_frame(found, given)
    assert s == pytest.approx(SIM[0], rel=1e-6) and np.allclose(R, SIM[1], atol=1e-6)


def test_loose_given_cameras_give_way_to_the_mapped_ones_placed_on_them():
    truth, points = scene()
    found = model(apply_sim3_to_poses(truth, 0.4, turn(0.2, 0.1, -0.3), np.array([1.0, 2.0, 3.0])),
                  points * 0.4 @ turn(0.2, 0.1, -0.3).T + [1.0, 2.0, 3.0])
    given = cameras(model(truth, points, off_px=2.0), 6, known=True, scale=1.0)
    assert given.reprojection_error == pytest.approx(2.0, rel=0.05)
    placed = placed_on_given(found, given)
    assert placed.known and placed.scale == 1.0 and placed.reconstruction is found
    assert np.allclose(placed.cam2world, truth, atol=1e-9)
    assert placed.reprojection_error < 1e-6
    assert "fit the images loosely" in placed.note and "2.00 px" in placed.note and "0.00 px" in placed.note
    assert "0.0 cm apart" in placed.note and "--hold-cameras" in placed.note


def test_given_cameras_stay_where_mapping_found_no_model_left_a_frame_out_or_fits_no_better():
    truth, points = scene()
    given = cameras(model(truth, points, off_px=2.0), 6, known=True, scale=1.0)
    kept = placed_on_given(None, given)
    assert kept.reconstruction is given.reconstruction and kept.note == "mapping the frames found no model"
    short = model(truth[:5], points)
    kept = placed_on_given(short, given)
    assert kept.reconstruction is given.reconstruction and kept.note == "mapping the frames registered 5 of 6"
    for off, seed in ((2.0, 1), (2.5, 3)):  # as loose (the same model), or looser
        kept = placed_on_given(model(truth, points, off_px=off, seed=seed), given)
        assert kept.reconstruction is given.reconstruction
        assert kept.note == f"mapping the frames fitted them no better ({off:.2f} px)"
    assert placed_on_given(model(truth, points, off_px=1.99, seed=3), given).reconstruction is not given.reconstruction


class _Job:
    """What SfmJob._refitted reads of a job: the frames written, the options to map with, a stage line."""

    def __init__(self, refit):
        from heads.recon.sfm_job import SfmJob

        self._refitted = SfmJob._refitted.__get__(self)
        self.written = {v: (f"{v:06d}.png", HW, HW) for v in range(6)}
        self.refit, self.video, self.folder, self._token = refit, False, None, None
        self.stages: list[str] = []

    def _next_stage(self, stage):
        self.stages.append(stage)


def test_a_mapping_that_fails_keeps_the_given_cameras_and_says_why(monkeypatch):
    from heads.recon import sfm_job
    from heads.recon.sfm import SfmOptions

    truth, points = scene()
    given = cameras(model(truth, points, off_px=2.0), 6, known=True, scale=1.0)

    def fails(folder, names, options, video, cancel, on_stage):
        on_stage("incremental mapping")
        raise RuntimeError("Check failed: ok\n  no good initial image pair found  \n")

    monkeypatch.setattr(sfm_job, "run_sfm", fails)
    job = _Job(SfmOptions())
    kept = job._refitted(given, list(range(6)))
    assert kept.reconstruction is given.reconstruction
    assert kept.note == "mapping the frames failed (RuntimeError: no good initial image pair found)"
    assert job.stages == ["incremental mapping (the given cameras fit loosely; --hold-cameras skips this)"]


def test_the_frames_are_mapped_as_one_camera_only_when_all_are_one_size(monkeypatch):
    from heads.recon import sfm_job
    from heads.recon.sfm import SfmOptions

    truth, points = scene()
    given = cameras(model(truth, points, off_px=2.0), 6, known=True, scale=1.0)
    asked = []

    def records(folder, names, options, video, cancel, on_stage):
        asked.append((names, options.one_camera))
        return None, None

    monkeypatch.setattr(sfm_job, "run_sfm", records)
    job = _Job(SfmOptions(one_camera=True))
    assert job._refitted(given, list(range(6))).note == "mapping the frames found no model"
    job.written[3] = ("000003.png", HW, (960, 1280))  # one frame of another size
    job._refitted(given, list(range(6)))
    job._refitted(given, [0, 1, 2, 4, 5])  # the network's views: frame 3 failed there, so it is left out here
    names = [f"{v:06d}.png" for v in range(6)]
    assert asked == [(names, True), (names, False), ([n for n in names if n != "000003.png"], True)]

"""Recorded poses of RGB-D layouts (heads.recon.known_poses): which file holds a colour frame's pose, how it is
read, and which matrices are rigid poses. Tiny layouts written in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from heads.recon.known_poses import ROTATION_TOLERANCE, TUM_MAX_GAP, PoseError, pose_file_for, recorded_pose, rigid

QUARTER_TURN_Z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z


def pose(R: np.ndarray = np.eye(3), t=(0.5, -1.0, 2.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def write_matrix(path: Path, T: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(f"{x:.17g}" for x in row) for row in T) + "\n")
    return path


def frame(path: Path) -> Path:
    """A colour frame's file (its content is never read here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------------------- rigid


def test_a_rigid_pose_comes_back_as_it_is_with_no_error():
    T = pose(QUARTER_TURN_Z)
    out, off = rigid(T, "here")
    assert np.allclose(out, T, atol=1e-15) and off == 0.0, (out, off)
    assert out.dtype == np.float64 and out is not T


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_a_pose_in_another_number_type_comes_back_as_float64(dtype):
    """Integer or float32 matrices (read from anywhere) come back as float64, the rotation orthonormal to double
    precision."""
    c, s = np.cos(0.3), np.sin(0.3)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) if dtype == np.float32 else QUARTER_TURN_Z
    T = pose(R, (1, 2, 3)).astype(dtype)
    out, _ = rigid(T, "here")
    assert out.dtype == np.float64, out.dtype
    assert np.abs(out[:3, :3].T @ out[:3, :3] - np.eye(3)).max() < 1e-14
    assert np.allclose(out[:3, :3], R, atol=1e-6) and np.array_equal(out[:3, 3], [1, 2, 3])


def test_a_rotation_a_little_off_is_made_the_nearest_orthonormal_one_and_how_far_it_was_reported():
    """A rotation scaled by 1.0004 along x (as recorded poses' rounding leaves them): the nearest rotation (the
    polar factor, here the unscaled one) replaces it, the translation and last row kept, the input untouched."""
    R = QUARTER_TURN_Z @ np.diag([1.0004, 1.0, 1.0])
    T = pose(R, (3.0, -2.0, 1.0))
    before = T.copy()
    out, off = rigid(T, "here")
    assert off == pytest.approx(1.0004 ** 2 - 1, rel=1e-9), off
    assert np.allclose(out[:3, :3], QUARTER_TURN_Z, atol=1e-12), out[:3, :3]
    assert np.array_equal(out[:3, 3], [3.0, -2.0, 1.0]) and np.array_equal(out[3], [0, 0, 0, 1])
    assert np.array_equal(T, before), "the input was changed"


def test_a_rotation_off_by_exactly_the_tolerance_is_accepted():
    """Two columns whose dot product is exactly ROTATION_TOLERANCE: still a pose ("up to" the tolerance)."""
    R = np.eye(3)
    R[0, 1] = ROTATION_TOLERANCE  # columns (1, 0, 0) and (tol, 1, 0): their dot product is the tolerance exactly
    out, off = rigid(pose(R), "here")
    assert off == ROTATION_TOLERANCE, off
    assert np.abs(out[:3, :3].T @ out[:3, :3] - np.eye(3)).max() < 1e-14


@pytest.mark.parametrize("T, why", [
    (pose(np.diag([1.0, 1.0, 1.002])), "stretched past the tolerance"),
    (pose(np.diag([1.0, 1.0, -1.0])), "a reflection"),
    (pose(-np.eye(3)), "a reflection (all three axes)"),
    (np.vstack([pose()[:3], [0.0, 0.0, 0.5, 1.0]]), "a last row other than 0 0 0 1"),
    (np.vstack([pose()[:3], [0.1, 0.0, 0.0, 1.0]]), "a last row starting with 0.1"),
    (np.vstack([pose()[:3], [0.0, 0.1, 0.0, 1.0]]), "a last row with 0.1 second"),
    (np.vstack([pose()[:3], [0.0, 0.0, 0.0, 2.0]]), "a last row ending with 2"),
    (np.vstack([pose()[:3], [0.0, 0.0, 0.0, 0.0]]), "a last row of zeros"),
])
def test_a_matrix_that_is_no_rigid_pose_is_refused_naming_where_it_came_from(T, why):
    with pytest.raises(PoseError, match=r"^frame 7: cam2world is not a rigid pose \(a rotation, orthonormal to 0\.001"):
        rigid(T, "frame 7")


@pytest.mark.parametrize("T", [np.eye(4)[:3], np.eye(3), np.eye(5), np.where(np.eye(4) > 0, np.nan, 0.0),
                               pose(t=(0.0, np.inf, 0.0))],
                         ids=["3x4", "3x3", "5x5", "nan", "inf"])
def test_a_matrix_of_another_shape_or_with_non_finite_numbers_is_refused(T):
    with pytest.raises(PoseError, match="^frame 7: not a 4x4 matrix of finite numbers$"):
        rigid(T, "frame 7")


# ---------------------------------------------------------------------------- which file


def test_seven_scenes_keeps_the_pose_beside_the_colour_frame(tmp_path):
    image = frame(tmp_path / "seq-01" / "frame-000003.color.png")
    file = write_matrix(tmp_path / "seq-01" / "frame-000003.pose.txt", pose())
    write_matrix(tmp_path / "seq-01" / "frame-000004.pose.txt", pose())
    assert pose_file_for(image) == file


def test_seven_scenes_names_are_recognised_in_any_case(tmp_path):
    image = frame(tmp_path / "FRAME-000003.COLOR.PNG")
    file = write_matrix(tmp_path / "FRAME-000003.POSE.TXT", pose())
    assert pose_file_for(image) == file


def test_the_stem_ends_where_the_first_color_part_of_the_name_starts(tmp_path):
    """``a.color.b.color.png``: the stem is ``a`` (``<stem>.color.*`` with * anything)."""
    image = frame(tmp_path / "a.color.b.color.png")
    file = write_matrix(tmp_path / "a.pose.txt", pose())
    write_matrix(tmp_path / "a.color.b.pose.txt", pose())
    assert pose_file_for(image) == file


@pytest.mark.parametrize("colour, poses", [("color", "pose"), ("colour", "pose"), ("rgb", "pose"),
                                           ("Color", "Pose"), ("images", "poses"), ("IMAGES", "POSES")])
def test_a_colour_folder_keeps_its_poses_in_the_folder_beside_it(tmp_path, colour, poses):
    image = frame(tmp_path / colour / "000012.jpg")
    file = write_matrix(tmp_path / poses / "000012.txt", pose())
    write_matrix(tmp_path / poses / "000013.txt", pose())
    assert pose_file_for(image) == file


def test_a_name_in_the_layouts_own_spelling_is_taken_before_one_in_another_case(tmp_path):
    """Where a folder holds a name in two cases, the layout's own (lower-case) spelling is the one read."""
    seven = frame(tmp_path / "seven" / "frame-1.color.png")
    file = write_matrix(tmp_path / "seven" / "frame-1.pose.txt", pose())
    write_matrix(tmp_path / "seven" / "frame-1.POSE.TXT", pose())
    assert pose_file_for(seven) == file
    for colour, poses in (("color", "pose"), ("images", "poses")):
        image = frame(tmp_path / poses / colour / "000001.jpg")
        file = write_matrix(tmp_path / poses / poses / "000001.txt", pose())
        (tmp_path / poses / poses.upper()).mkdir()  # a decoy folder, empty
        assert pose_file_for(image) == file, (colour, poses)


@pytest.mark.parametrize("colour, poses", [("color", "poses"), ("images", "pose"), ("frames", "pose"),
                                           ("frames", "poses"), ("depth", "pose")])
def test_a_folder_no_layout_pairs_with_that_pose_folder_has_no_pose_file(tmp_path, colour, poses):
    image = frame(tmp_path / colour / "000012.jpg")
    write_matrix(tmp_path / poses / "000012.txt", pose())
    assert pose_file_for(image) is None


def test_without_the_frames_own_pose_file_there_is_none(tmp_path):
    """A pose folder without this frame's file, a 7-Scenes frame without its ``.pose.txt``, a directory where the
    file would be, a colour folder with no pose folder at all: no pose file."""
    write_matrix(tmp_path / "a" / "pose" / "000001.txt", pose())
    assert pose_file_for(frame(tmp_path / "a" / "color" / "000002.jpg")) is None
    write_matrix(tmp_path / "b" / "frame-000001.pose.txt", pose())
    assert pose_file_for(frame(tmp_path / "b" / "frame-000002.color.png")) is None
    (tmp_path / "c" / "pose" / "000001.txt").mkdir(parents=True)
    assert pose_file_for(frame(tmp_path / "c" / "color" / "000001.jpg")) is None
    assert pose_file_for(frame(tmp_path / "d" / "color" / "000001.jpg")) is None
    assert pose_file_for(frame(tmp_path / "e" / "000001.jpg")) is None


# ---------------------------------------------------------------------------- reading it


@pytest.mark.parametrize("layout", ["7-scenes", "scannet"])
def test_the_recorded_pose_is_the_4x4_matrix_in_its_file(tmp_path, layout):
    T = pose(QUARTER_TURN_Z, (0.25, -1.5, 3.0))
    if layout == "7-scenes":
        image = frame(tmp_path / "frame-000000.color.png")
        write_matrix(tmp_path / "frame-000000.pose.txt", T)
    else:
        image = frame(tmp_path / "color" / "0.jpg")
        write_matrix(tmp_path / "pose" / "0.txt", T)
    got = recorded_pose(image)
    assert got.shape == (4, 4) and got.dtype == np.float64 and np.array_equal(got, T), got


def test_a_pose_file_of_integers_on_one_line_is_read_as_a_4x4_matrix(tmp_path):
    image = frame(tmp_path / "frame-000000.color.png")
    (tmp_path / "frame-000000.pose.txt").write_text("0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1\n")
    got = recorded_pose(image)
    assert got.dtype == np.float64 and np.array_equal(got, pose(QUARTER_TURN_Z, (1, 2, 3))), got


@pytest.mark.parametrize("text, count", [("1 0 0 0\n0 1 0 0\n0 0 1 0\n", 12), ("5\n", 1), (" 0" * 17 + "\n", 17)])
def test_a_pose_file_with_another_count_of_numbers_is_refused(tmp_path, text, count):
    image = frame(tmp_path / "frame-000000.color.png")
    file = tmp_path / "frame-000000.pose.txt"
    file.write_text(text)
    with pytest.raises(PoseError, match=f"^{re.escape(str(file))}: {count} numbers, where a 4x4 pose has 16$"):
        recorded_pose(image)


def test_a_pose_file_that_is_no_numbers_is_refused_with_what_the_reader_said(tmp_path):
    """The reader's complaint comes along, its first line and at most 100 characters of it."""
    image = frame(tmp_path / "frame-000000.color.png")
    file = tmp_path / "frame-000000.pose.txt"
    file.write_text("1 0 0 " + "x" * 300 + "\n")
    try:
        np.loadtxt(file)
    except ValueError as e:
        said = str(e).splitlines()[0]
    assert len(said) > 100  # the clipping is tested
    with pytest.raises(PoseError) as caught:
        recorded_pose(image)
    assert str(caught.value) == f"{file}: cannot read it as a 4x4 pose ({said[:100]})", str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_frame_without_a_pose_file_outside_tum_has_no_recorded_pose(tmp_path):
    assert recorded_pose(frame(tmp_path / "color" / "000001.jpg")) is None
    assert recorded_pose(frame(tmp_path / "frame-000001.color.png")) is None


# ---------------------------------------------------------------------------- TUM's groundtruth.txt


def write_groundtruth(folder: Path, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "groundtruth.txt").write_text("# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"
                                            + "\n".join(lines) + "\n")


def test_a_tum_frame_takes_the_groundtruth_line_nearest_in_time(tmp_path):
    """Lines out of order, comments, a blank line and a line of another length among them: the pose is the
    nearest line's translation and quaternion (x y z w)."""
    h = np.sqrt(0.5)
    write_groundtruth(tmp_path, [
        "1305031102.2011 9 9 9 0 0 0 1",
        f"1305031102.1811 1.5 -2.0 0.25 0 0 {h} {h}",  # nearest to 1305031102.175304
        "",
        "1305031102.1700 7 7 7 0 0 0",  # seven numbers: not a pose line
        "1305031102.1600 5 5 5 0 0 0 1",
        "1305031102.1753 a b c 0 0 0 1",  # not numbers
    ])
    image = frame(tmp_path / "rgb" / "1305031102.175304.png")
    got = recorded_pose(image)
    assert got is not None and np.allclose(got, pose(QUARTER_TURN_Z, (1.5, -2.0, 0.25)), atol=1e-12), got


def test_a_tum_frame_further_than_the_gap_from_every_line_has_no_pose(tmp_path):
    write_groundtruth(tmp_path / "far", ["10.0 1 2 3 0 0 0 1", "10.5 1 2 3 0 0 0 1"])
    assert recorded_pose(frame(tmp_path / "far" / "rgb" / "10.250000.png")) is None
    assert recorded_pose(frame(tmp_path / "far" / "rgb" / "10.5300.png")) is None
    assert recorded_pose(frame(tmp_path / "far" / "rgb" / "9.9790.png")) is None
    assert recorded_pose(frame(tmp_path / "far" / "rgb" / "10.5150.png")) is not None


def test_a_tum_frame_exactly_the_gap_from_a_line_takes_it(tmp_path):
    write_groundtruth(tmp_path, [f"{TUM_MAX_GAP!r} 1 2 3 0 0 0 1"])  # times 0 and 0.02: exactly the gap apart
    got = recorded_pose(frame(tmp_path / "rgb" / "0.000000.png"))
    assert got is not None and np.allclose(got, pose(t=(1, 2, 3))), got


def test_tum_poses_need_an_rgb_folder_a_groundtruth_file_a_time_and_a_line(tmp_path):
    write_groundtruth(tmp_path / "other", ["5.0 1 2 3 0 0 0 1"])
    assert recorded_pose(frame(tmp_path / "other" / "color" / "5.0.png")) is None  # not rgb/
    assert recorded_pose(frame(tmp_path / "none" / "rgb" / "5.0.png")) is None  # no groundtruth.txt
    write_groundtruth(tmp_path / "named", ["5.0 1 2 3 0 0 0 1"])
    assert recorded_pose(frame(tmp_path / "named" / "rgb" / "frame5.png")) is None  # the name is no time
    write_groundtruth(tmp_path / "empty", [])
    assert recorded_pose(frame(tmp_path / "empty" / "rgb" / "5.0.png")) is None  # no pose line
    (tmp_path / "upper").mkdir()
    (tmp_path / "upper" / "GROUNDTRUTH.TXT").write_text("5.0 1 2 3 0 0 0 1\n")
    assert recorded_pose(frame(tmp_path / "upper" / "rgb" / "5.0.png")) is None  # TUM's name, as TUM writes it

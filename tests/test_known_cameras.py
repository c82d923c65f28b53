"""Cameras the user gives (heads.recon.known_cameras): cameras.json, a COLMAP model folder, recorded poses and
--intrinsics files, each read on small synthetic files whose cameras are known, and every malformed one refused
with a message that names the file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heads.recon import known_cameras as kc
from pixio_cli.errors import UsageError

pycolmap = pytest.importorskip("pycolmap")

K = np.array([[585.0, 0.0, 320.0], [0.0, 580.0, 240.0], [0.0, 0.0, 1.0]])


def pose(x: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """A camera-to-world: a turn of ``yaw`` radians about y, at (x, 0.5, 2)."""
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    T[:3, 3] = [x, 0.5, 2.0]
    return T


def camera(**changes) -> dict:
    """One camera of a cameras.json (a.jpg, 640 x 480, K above, at pose()), with fields changed or dropped
    (None)."""
    out = {"image": "a.jpg", "width": 640, "height": 480, "K": K.tolist(), "cam2world": pose().tolist()}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def write_json(tmp_path: Path, cameras: list[dict], unit: str | None = "m") -> Path:
    path = tmp_path / "cameras.json"
    data = {"cameras": cameras} if unit is None else {"unit": unit, "cameras": cameras}
    path.write_text(json.dumps(data))
    return path


def refused(path: Path, says: str) -> str:
    """read_cameras_json's message for ``path``, checked to name the file and to say ``says``."""
    with pytest.raises(UsageError) as e:
        kc.read_cameras_json(path)
    message = str(e.value)
    assert says in message and str(path) in message, message
    return message


# ---------------------------------------------------------------------------- cameras.json


def test_a_cameras_json_gives_each_images_K_pose_and_size(tmp_path):
    T2 = pose(0.3, 0.2)
    path = write_json(tmp_path, [camera(), camera(image="b/c.jpg", width=320, height=240, cam2world=T2.tolist())])
    given = kc.read_cameras_json(path)
    assert sorted(given.cameras) == ["a.jpg", "b/c.jpg"]
    Ka, Ta, hwa = given.cameras["a.jpg"]
    Kc, Tc, hwc = given.cameras["b/c.jpg"]
    assert np.array_equal(Ka, K) and np.allclose(Ta, pose()) and hwa == (480, 640)
    assert np.allclose(Tc, T2) and hwc == (240, 320)
    assert given.scale == 1.0 and given.source == f"--known-cameras {path}" and given.rotation_off < 1e-12


@pytest.mark.parametrize("unit,scale", [("m", 1.0), ("Metres", 1.0), (" cm ", 0.01), ("mm, as measured", 0.001),
                                        ("unknown (not metric)", None), ("", None), (None, None)])
def test_a_cameras_json_unit_gives_metres_per_unit(tmp_path, unit, scale):
    """The unit's first comma-separated word, in any case: a length, or not said (none, empty, 'unknown')."""
    given = kc.read_cameras_json(write_json(tmp_path, [camera()], unit=unit))
    assert given.scale == scale, (unit, given.scale)


@pytest.mark.parametrize("unit", ["seconds", "metres per second", "kilounknown"])
def test_a_unit_that_is_no_length_is_refused_by_its_own_words(tmp_path, unit):
    message = refused(write_json(tmp_path, [camera()], unit=unit), "is not a length (m, cm or mm)")
    assert repr(unit) in message, message


@pytest.mark.parametrize("text,says", [
    ("{not json", "not a cameras.json ("),
    ("[1, 2]", "no list 'cameras'"),
    ('{"cameras": {"a.jpg": 1}}', "no list 'cameras'"),
    ('{"unit": "m"}', "no list 'cameras'"),
])
def test_a_file_that_is_no_cameras_json_is_refused(tmp_path, text, says):
    path = tmp_path / "cameras.json"
    path.write_text(text)
    message = refused(path, says)
    assert "\n" not in message


def test_a_missing_cameras_json_is_refused_with_the_systems_reason_up_to_120_characters(tmp_path):
    path = tmp_path / ("x" * 120) / "cameras.json"
    try:
        path.read_text()
    except OSError as e:
        reason = str(e).splitlines()[0]
    assert len(reason) > 120
    assert refused(path, "not a cameras.json (") == f"--known-cameras {path}: not a cameras.json ({reason[:120]})"


def test_a_cameras_json_that_is_not_json_is_refused_with_the_parsers_reason(tmp_path):
    path = tmp_path / "cameras.json"
    path.write_text("{not json")
    try:
        json.loads("{not json")
    except ValueError as e:
        reason = str(e)
    assert refused(path, "not a cameras.json (") == f"--known-cameras {path}: not a cameras.json ({reason})"


@pytest.mark.parametrize("cam,says", [
    ("a.jpg", "'image' must name the image file"),
    (camera(image=None), "'image' must name the image file"),
    (camera(image=""), "'image' must name the image file"),
    (camera(image=3), "'image' must name the image file"),
    (camera(width=None), "'width' and 'height' must be positive whole numbers"),
    (camera(height="480"), "'width' and 'height' must be positive whole numbers"),
    (camera(height=480.0), "'width' and 'height' must be positive whole numbers"),
    (camera(width=True), "'width' and 'height' must be positive whole numbers"),
    (camera(width=0), "'width' and 'height' must be positive whole numbers"),
    (camera(height=-480), "'width' and 'height' must be positive whole numbers"),
    (camera(width=10 ** 6), "'width' and 'height' must be positive whole numbers"),
    (camera(K=None), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers"),
    (camera(cam2world=None), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers"),
    (camera(K="K"), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers"),
    (camera(K=[[1, 2], [3]]), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers"),
    (camera(K={"fx": 1}), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers"),
    (camera(K=K[:2].tolist()), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers"),
    (camera(cam2world=pose()[:3].tolist()), "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers"),
    (camera(K=[[585.0, 0, 320], [0, float("nan"), 240], [0, 0, 1]]), "a 4x4 matrix of finite numbers"),
    (camera(cam2world=[[1, 0, 0, float("inf")], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers"),
    (camera(cam2world=[[1, 0, 0, None], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers"),
    (camera(K=[[585.0, 0, None], [0, 580, 240], [0, 0, 1]]),
     "'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers"),
    (camera(K=[[-585.0, 0, 320], [0, 580, 240], [0, 0, 1]]), "K is not a pinhole camera"),
    (camera(K=[[585.0, 0, 320], [0, -580, 240], [0, 0, 1]]), "K is not a pinhole camera"),
    (camera(K=[[585.0, 0, 320], [0, 0, 240], [0, 0, 1]]), "K is not a pinhole camera"),
    (camera(K=[[0.0, 0, 320], [0, 580, 240], [0, 0, 1]]), "K is not a pinhole camera"),
    (camera(K=[[585.0, 0, 320], [0, 580, 240], [0, 0, 2]]), "K is not a pinhole camera"),
    (camera(K=[[585.0, 0, 320], [0, 580, 240], [0.5, 0, 1]]), "K is not a pinhole camera"),
    (camera(K=[[585.0, 0, 320], [0.5, 580, 240], [0, 0, 1]]), "K is not a pinhole camera"),
    (camera(cam2world=(np.eye(4) * 2).tolist()), "cam2world is not a rigid pose"),
    (camera(cam2world=[[1, 0, 0, 1e6 + 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
     "the camera is 1e+06 units from the origin"),
    (camera(cam2world=[[1, 0, 0, 0], [0, 1, 0, -2e6], [0, 0, 1, 0], [0, 0, 0, 1]]),
     "the camera is 2e+06 units from the origin"),
])
def test_a_cameras_json_is_checked_camera_by_camera(tmp_path, cam, says):
    """A camera that is not one is refused by what is wrong with it, naming it by position and image."""
    path = write_json(tmp_path, [camera(image="ok.jpg"), cam])
    message = refused(path, says)
    name = f" ({cam['image']})" if isinstance(cam, dict) and isinstance(cam.get("image"), str) else ""
    assert f"--known-cameras {path}: camera 1{name}: " in message, message
    assert "\n" not in message


def test_a_second_camera_for_one_image_is_refused(tmp_path):
    message = refused(write_json(tmp_path, [camera(), camera(cam2world=pose(1.0).tolist())]),
                      "a second camera for the same image")
    assert "camera 1 (a.jpg)" in message, message


@pytest.mark.parametrize("side", [1, 999_999])
def test_any_whole_number_of_pixels_below_a_million_is_a_size(tmp_path, side):
    f = side  # 1x the long side: within the range for any size
    cam = camera(width=side, height=1, K=[[f, 0, 0], [0, f, 0], [0, 0, 1]])
    assert kc.read_cameras_json(write_json(tmp_path, [cam])).cameras["a.jpg"][2] == (1, side)


@pytest.mark.parametrize("fx,fy,ok", [(32.0, 32.0, True), (64000.0, 64000.0, True), (31.99, 585.0, False),
                                      (585.0, 31.99, False), (64000.1, 585.0, False), (585.0, 64000.1, False)])
def test_a_focal_length_is_a_cameras_from_a_twentieth_to_a_hundred_times_the_long_side(tmp_path, fx, fy, ok):
    """640 x 480: 32 to 64000 px, fx and fy both, the bounds taken."""
    path = write_json(tmp_path, [camera(K=[[fx, 0, 320], [0, fy, 240], [0, 0, 1]])])
    if ok:
        assert kc.read_cameras_json(path).cameras["a.jpg"][0][0, 0] == fx
    else:
        message = refused(path, "is no camera's for an image of 640x480 (expected 0.05-100 x its long side)")
        assert f"{fx:.6g} x {fy:.6g} px" in message, message


def test_the_long_side_bounds_the_focal_length_of_a_portrait_image(tmp_path):
    """480 x 640 (portrait): the long side is the height, 640: 32 px is a focal length, 31.99 not."""
    cam = camera(width=480, height=640, K=[[32.0, 0, 240], [0, 32.0, 320], [0, 0, 1]])
    assert kc.read_cameras_json(write_json(tmp_path, [cam])).cameras["a.jpg"][2] == (640, 480)
    cam = camera(width=480, height=640, K=[[31.99, 0, 240], [0, 32.0, 320], [0, 0, 1]])
    refused(write_json(tmp_path, [cam]), "for an image of 480x640")


def test_a_camera_a_million_units_from_the_origin_is_still_taken(tmp_path):
    T = pose()
    T[2, 3] = -1e6
    given = kc.read_cameras_json(write_json(tmp_path, [camera(cam2world=T.tolist())]))
    assert given.cameras["a.jpg"][1][2, 3] == -1e6


def test_rotations_a_little_off_are_made_orthonormal_and_the_worst_is_kept(tmp_path):
    """Two cameras 2e-4 and 5e-4 off orthonormal (either order): both made exact, 5e-4 said."""
    small, large = pose(), pose(1.0)
    small[:3, :3] += np.diag([1e-4, 0, 0])  # R^T R - I: 2e-4 + 1e-8
    large[:3, :3] += np.diag([0, 2.5e-4, 0])
    for first, second in ((small, large), (large, small)):
        given = kc.read_cameras_json(write_json(tmp_path, [camera(cam2world=first.tolist()),
                                                           camera(image="b.jpg", cam2world=second.tolist())]))
        for _, T, _ in given.cameras.values():
            R = T[:3, :3]
            assert np.allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert given.rotation_off == pytest.approx(2 * 2.5e-4 + 2.5e-4 ** 2), given.rotation_off


# ---------------------------------------------------------------------------- frames matched to cameras


def test_a_name_is_matched_as_it_is_else_by_its_file_name_when_only_one_camera_has_it():
    known = {"a.jpg": 1, "x/b.jpg": 2, "y/b.jpg": 3, "v/clip.mp4#frame3": 4, "c.jpg": 5, "z/c.jpg": 6}
    assert kc._match("a.jpg", known) == "a.jpg"
    assert kc._match("frames/a.jpg", known) == "a.jpg"  # cameras made from another folder
    assert kc._match("x/b.jpg", known) == "x/b.jpg"
    assert kc._match("b.jpg", known) is None  # two cameras have it: neither is taken
    assert kc._match("c.jpg", known) == "c.jpg"  # as it is first, though z/c.jpg has the same file name
    assert kc._match("w/clip.mp4#frame3", known) == "v/clip.mp4#frame3"
    assert kc._match("v/clip.mp4#frame4", known) is None
    assert kc._match("d.jpg", known) is None


def test_a_file_key_is_the_name_without_its_folders_and_keeps_the_frame():
    assert kc._file_key("a/b/c.png") == "c.png"
    assert kc._file_key("c.png") == "c.png"
    assert kc._file_key("v/clip.mp4#frame3") == "clip.mp4#frame3"
    assert kc._file_key("v/clip.mp4#a/b") == "clip.mp4#a/b"  # only the path's folders go


def test_every_frame_needs_a_camera():
    kc._require_all("src", ["a", "b"], ["a", "b"])
    with pytest.raises(UsageError) as e:
        kc._require_all("src", ["a", "b", "c", "d"], ["a", None, "c", None])
    assert str(e.value) == "src: no camera for 2 of the 4 frames (first: b)", str(e.value)


def test_two_frames_may_not_take_one_camera():
    kc._require_one_each("src", ["x/a", "y/b"], ["a", "b"])
    with pytest.raises(UsageError) as e:
        kc._require_one_each("src", ["x/a", "y/b", "z/a"], ["a", "b", "a"])
    assert str(e.value).startswith("src: x/a and z/a both take the camera of a (the same file name in two "
                                   "folders): name the images by"), str(e.value)


# ---------------------------------------------------------------------------- read_known_cameras


def test_known_cameras_from_a_json_are_the_frames_cameras_in_metres(tmp_path):
    """Frames named by another folder take the cameras of their file names, in the frames' order, K scaled to
    each frame's own size (a copy twice as large), translations from mm to metres, image ids from 1."""
    T1, T2 = pose(100.0), pose(-50.0, 0.3)
    path = write_json(tmp_path, [camera(image="b.jpg", cam2world=T2.tolist()), camera(cam2world=T1.tolist())],
                      unit="mm")
    cams = kc.read_known_cameras(path, ["f/a.jpg", "f/b.jpg"], [(960, 1280), (480, 640)])
    assert cams.names == ["a.jpg", "b.jpg"] and cams.known and cams.scale == 1.0 and cams.note is None
    assert cams.registered.all()
    big = K.copy()
    big[:2] *= 2
    big[:2, 2] += 0.5  # pixel centres at integers: the centre of a pixel twice as large
    assert np.allclose(cams.K[0], big) and np.allclose(cams.K[1], K), cams.K
    for got, T in zip(cams.cam2world, (T1, T2)):
        assert np.allclose(got[:3, :3], T[:3, :3]) and np.allclose(got[:3, 3], T[:3, 3] * 0.001), got
    assert np.array_equal(cams.written_hw, [[960, 1280], [480, 640]])
    assert np.array_equal(cams.original_hw, [[960, 1280], [480, 640]])
    rec = cams.reconstruction
    assert {i: rec.images[i].name for i in rec.images} == {1: "a.jpg", 2: "b.jpg"}
    for v, image_id in enumerate((1, 2)):
        camera_ = rec.images[image_id].camera
        assert (camera_.height, camera_.width) == tuple(cams.original_hw[v]) and camera_.model_name == "PINHOLE"


def test_known_cameras_without_a_unit_keep_their_lengths_and_no_scale(tmp_path):
    T = pose(3.0)
    path = write_json(tmp_path, [camera(cam2world=T.tolist())], unit=None)
    cams = kc.read_known_cameras(path, ["a.jpg"], [(480, 640)])
    assert cams.scale is None and np.allclose(cams.cam2world[0], T)


def test_a_camera_of_another_shape_is_refused_but_a_rounding_apart_taken(tmp_path):
    """641 x 480 is the image's shape within 1 %; 656 x 480 (2.5 %) and 480 x 640 are other cameras."""
    ok = kc.read_known_cameras(write_json(tmp_path, [camera(width=641, K=[[585.0, 0, 320], [0, 585.0, 240],
                                                                          [0, 0, 1]])]),
                               ["a.jpg"], [(480, 640)])
    assert ok.registered.all()
    for w, h in ((656, 480), (480, 640)):
        path = write_json(tmp_path, [camera(width=w, height=h, K=[[585.0, 0, w / 2], [0, 585.0, h / 2],
                                                                  [0, 0, 1]])])
        with pytest.raises(UsageError) as e:
            kc.read_known_cameras(path, ["a.jpg"], [(480, 640)])
        assert str(e.value) == (f"--known-cameras {path}: a.jpg is {w}x{h} there, but the image is 640x480 "
                                "(another shape: not this image's camera)"), str(e.value)


def test_every_frame_must_have_one_camera_of_its_own(tmp_path):
    path = write_json(tmp_path, [camera(), camera(image="b.jpg")])
    with pytest.raises(UsageError, match=r"no camera for 1 of the 3 frames \(first: c.jpg\)"):
        kc.read_known_cameras(path, ["a.jpg", "c.jpg", "b.jpg"], [(480, 640)] * 3)
    with pytest.raises(UsageError) as e:
        kc.read_known_cameras(path, ["x/a.jpg", "y/a.jpg"], [(480, 640)] * 2)
    assert str(e.value).startswith(f"--known-cameras {path}: x/a.jpg and y/a.jpg both take the camera of a.jpg"), \
        str(e.value)


def test_recorded_poses_are_taken_as_given_and_left_as_they_were():
    """GivenCameras (an RGB-D layout's): a camera without a size is in the image's own pixels; cm to metres;
    the given poses are not changed by reading them; a rotation made orthonormal is said."""
    T = pose(150.0)
    given = kc.GivenCameras({"a.jpg": (K.copy(), T.copy(), None), "b.jpg": (K / 2 + np.diag([0, 0, 0.5]),
                                                                             pose(-20.0), (240, 320))},
                            scale=0.01, source="poses of seq-01", rotation_off=2e-4)
    cams = kc.read_known_cameras(given, ["a.jpg", "b.jpg"], [(480, 640), (480, 640)])
    assert np.allclose(cams.K[0], K) and np.allclose(cams.K[1][:2, :2], K[:2, :2]), cams.K
    assert np.allclose(cams.cam2world[0][:3, 3], T[:3, 3] * 0.01) and cams.scale == 1.0
    assert np.array_equal(given.cameras["a.jpg"][1], T)  # the caller's pose, unchanged
    assert cams.note == "poses of seq-01: rotations orthonormal only to 2.0e-04 were made exactly orthonormal"
    given.rotation_off = 1e-6
    assert kc.read_known_cameras(given, ["a.jpg", "b.jpg"], [(480, 640)] * 2).note is None
    given.scale = None
    cams = kc.read_known_cameras(given, ["a.jpg", "b.jpg"], [(480, 640)] * 2)
    assert cams.scale is None and np.allclose(cams.cam2world[0], T)
    with pytest.raises(UsageError, match="^poses of seq-01: no camera for 1 of the 1 frames"):
        kc.read_known_cameras(given, ["c.jpg"], [(480, 640)])


def test_a_rotation_made_orthonormal_in_a_json_is_said_once(tmp_path):
    T = pose()
    T[:3, :3] += np.diag([1e-4, 0, 0])
    path = write_json(tmp_path, [camera(cam2world=T.tolist())])
    cams = kc.read_known_cameras(path, ["a.jpg"], [(480, 640)])
    assert cams.note == f"--known-cameras {path}: rotations orthonormal only to 2.0e-04 were made exactly orthonormal"


# ---------------------------------------------------------------------------- a COLMAP model folder


def write_model(folder: Path, names: list[str], poses: list[np.ndarray], hw: tuple[int, int] = (240, 320),
                unit: str | None = None, unposed: str | None = None) -> None:
    """A COLMAP model of PINHOLE cameras (K for images of ``hw``) at ``poses``, ``unposed`` an image
    without a pose, and ``unit`` written to unit.txt."""
    from heads.geometry import scale_intrinsics
    from heads.recon.camera_files import pinhole_view

    rec = pycolmap.Reconstruction()
    for v, (name, T) in enumerate(zip(names, poses)):
        pinhole_view(rec, name=name, K=scale_intrinsics(K, (480, 640), hw), hw=hw, cam2world=T, image_id=v + 1)
    if unposed is not None:
        pinhole_view(rec, name=unposed, K=K, hw=hw, cam2world=np.eye(4), image_id=len(names) + 1)
        rec.deregister_frame(rec.images[len(names) + 1].frame_id)
    folder.mkdir(parents=True, exist_ok=True)
    rec.write(str(folder))
    if unit is not None:
        (folder / "unit.txt").write_text(unit)


@pytest.mark.parametrize("unit,scale", [(None, None), ("metres\n", 1.0), (" CM\n", 0.01), ("furlongs", None)])
def test_a_colmap_model_gives_its_posed_images_cameras_in_the_unit_it_says(tmp_path, unit, scale):
    """Frames matched by file name; each camera's size is the model's (the frames were matched at another),
    the frames' own sizes kept; translations in metres when unit.txt says a length."""
    folder = tmp_path / "sparse" / "0"
    T = [pose(2.0), pose(-1.0, 0.4)]
    write_model(folder, ["a.jpg", "b.jpg"], T, unit=unit)
    cams = kc.read_known_cameras(folder, ["x/b.jpg", "x/a.jpg"], [(480, 640), (480, 640)])
    said = None if scale is None else 1.0  # in metres once scaled
    assert cams.names == ["b.jpg", "a.jpg"] and cams.known and cams.scale == said, (cams.names, cams.scale)
    assert np.array_equal(cams.written_hw, [[240, 320]] * 2) and np.array_equal(cams.original_hw, [[480, 640]] * 2)
    assert cams.written_hw.dtype == np.int64 and cams.original_hw.dtype == np.int64
    for got, want in zip(cams.cam2world, (T[1], T[0])):
        assert np.allclose(got[:3, :3], want[:3, :3], atol=1e-9)
        assert np.allclose(got[:3, 3], want[:3, 3] * (scale or 1.0), atol=1e-9), (got, want, scale)
    assert np.allclose(cams.K, K, atol=1e-9)  # the model's K, in the frames' own pixels


def test_a_colmap_models_images_without_a_pose_are_no_cameras(tmp_path):
    folder = tmp_path / "model"
    write_model(folder, ["a.jpg"], [pose()], unposed="b.jpg")
    assert kc.read_known_cameras(folder, ["a.jpg"], [(480, 640)]).registered.all()
    with pytest.raises(UsageError) as e:
        kc.read_known_cameras(folder, ["a.jpg", "b.jpg"], [(480, 640)] * 2)
    assert str(e.value) == f"--known-cameras {folder}: no camera for 1 of the 2 frames (first: b.jpg)"


def test_a_colmap_model_gives_each_frame_one_camera(tmp_path):
    folder = tmp_path / "model"
    write_model(folder, ["a.jpg"], [pose()])
    with pytest.raises(UsageError, match=f"^--known-cameras {folder}: x/a.jpg and y/a.jpg both take the camera"):
        kc.read_known_cameras(folder, ["x/a.jpg", "y/a.jpg"], [(480, 640)] * 2)


def test_a_folder_that_is_no_colmap_model_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError) as e:
        kc.read_known_cameras(tmp_path / "empty", ["a.jpg"], [(480, 640)])
    message = str(e.value)
    assert message.startswith(f"--known-cameras {tmp_path / 'empty'}: not a COLMAP model folder (")
    assert message.endswith(")") and "\n" not in message and len(message) < len(str(tmp_path)) + 220, message


def test_a_colmap_models_unit_file_that_is_a_folder_says_nothing(tmp_path):
    folder = tmp_path / "model"
    write_model(folder, ["a.jpg"], [pose(4.0)])
    (folder / "unit.txt").mkdir()
    cams = kc.read_known_cameras(folder, ["a.jpg"], [(480, 640)])
    assert cams.scale is None and np.allclose(cams.cam2world[0][:3, 3], pose(4.0)[:3, 3])


# ---------------------------------------------------------------------------- --intrinsics


def intrinsics_file(tmp_path: Path, data, suffix: str) -> Path:
    path = tmp_path / f"K{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(np.asarray(data).tolist()))
    elif suffix == ".npy":
        np.save(path, np.asarray(data))
    else:
        np.savetxt(path, np.asarray(data))
    return path


@pytest.mark.parametrize("suffix", [".json", ".npy", ".txt", ""])
def test_one_K_is_every_views_in_any_format(tmp_path, suffix):
    got = kc.read_intrinsics(intrinsics_file(tmp_path, K, suffix), 3)
    assert len(got) == 3 and all(k.dtype == np.float64 and np.array_equal(k, K) for k in got), got


@pytest.mark.parametrize("suffix", [".json", ".npy"])
def test_a_list_of_Ks_is_one_per_view(tmp_path, suffix):
    Ks = np.stack([K * [[1 + 0.1 * i], [1 + 0.1 * i], [1]] for i in range(3)])
    got = kc.read_intrinsics(intrinsics_file(tmp_path, Ks, suffix), 3)
    assert len(got) == 3 and all(np.array_equal(g, k) for g, k in zip(got, Ks)), got
    with pytest.raises(UsageError) as e:
        kc.read_intrinsics(intrinsics_file(tmp_path, Ks, suffix), 4)
    assert str(e.value).endswith(": 3 matrices for 4 images"), str(e.value)


def test_a_list_of_Ks_is_read_from_a_path_given_as_text(tmp_path):
    path = intrinsics_file(tmp_path, np.stack([K, K]), ".json")
    assert len(kc.read_intrinsics(str(path), 2)) == 2


@pytest.mark.parametrize("data,says", [
    (np.eye(4), "expected one 3x3 matrix or a list of 3x3 matrices, got shape 4x4"),
    (np.ones(3), "expected one 3x3 matrix or a list of 3x3 matrices, got shape 3"),
    (np.ones((2, 3, 4)), "got shape 2x3x4"),
    (np.ones((2, 4, 3)), "got shape 2x4x3"),
    (np.ones((1, 2, 3, 3)), "got shape 1x2x3x3"),
])
def test_intrinsics_of_another_shape_are_refused(tmp_path, data, says):
    path = intrinsics_file(tmp_path, data, ".npy")
    with pytest.raises(UsageError) as e:
        kc.read_intrinsics(path, 2)
    assert str(e.value) == f"--intrinsics {path}: {says}" or says in str(e.value), str(e.value)
    assert str(e.value).startswith(f"--intrinsics {path}: expected one 3x3"), str(e.value)


@pytest.mark.parametrize("bad,value", [(0, np.nan), (1, np.inf), (2, -np.inf)])
def test_intrinsics_that_are_not_finite_are_refused_by_the_first_such_matrix(tmp_path, bad, value):
    Ks = np.stack([K] * 3)
    Ks[bad, 0, 2] = value
    Ks[2, 1, 2] = np.nan  # the last one is bad too
    path = intrinsics_file(tmp_path, Ks, ".npy")
    with pytest.raises(UsageError) as e:
        kc.read_intrinsics(path, 3)
    assert str(e.value) == (f"--intrinsics {path}: matrix {bad} holds a value that is not a finite number"), \
        str(e.value)


@pytest.mark.parametrize("bad,change", [(0, (0, 0, -1.0)), (1, (1, 1, 0.0)), (1, (2, 2, 2.0)), (2, (2, 0, 0.1))])
def test_intrinsics_that_are_no_pinhole_K_are_refused_by_the_first_such_matrix(tmp_path, bad, change):
    Ks = np.stack([K] * 4)
    Ks[bad, change[0], change[1]] = change[2]
    Ks[3, 0, 0] = -5.0  # a later bad one
    path = intrinsics_file(tmp_path, Ks, ".json")
    with pytest.raises(UsageError) as e:
        kc.read_intrinsics(path, 4)
    assert str(e.value) == (f"--intrinsics {path}: matrix {bad} is not a pinhole K (positive fx, fy; last row "
                            "0 0 1)"), str(e.value)


@pytest.mark.parametrize("name,text", [("K.txt", ""), ("K.txt", "1 2 three"), ("K.json", "{"),
                                       ("K.json", '[["a", "b"]]'), ("K.json", '{"fx": 1}'), ("K.npy", "no array"),
                                       ("absent.txt", None)])
def test_intrinsics_that_cannot_be_read_are_refused_in_one_line(tmp_path, name, text):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError) as e:
        kc.read_intrinsics(path, 2)
    message = str(e.value)
    assert message.startswith(f"--intrinsics {path}: cannot read it as one 3x3 K or a list of them (")
    assert "\n" not in message and len(message) < len(str(path)) + 200, message


def test_pycolmaps_reason_for_refusing_a_model_folder_is_said_up_to_150_characters(tmp_path):
    """pycolmap names the folder in its reason: a long folder name makes it longer than the 150 kept."""
    folder = tmp_path / ("m" * 120)
    folder.mkdir()
    try:
        pycolmap.Reconstruction(str(folder))
    except Exception as e:  # what pycolmap says of it, trimmed as the message trims it
        reason = str(e).strip()
    assert len(reason) > 150
    with pytest.raises(UsageError) as e:
        kc.read_known_cameras(folder, ["a.jpg"], [(480, 640)])
    assert str(e.value) == f"--known-cameras {folder}: not a COLMAP model folder ({reason[:150]})", str(e.value)


def test_numpys_reason_for_refusing_an_intrinsics_file_is_its_first_line_up_to_120_characters(tmp_path):
    path = tmp_path / "K.txt"
    path.write_text("1 2 " + "x" * 200 + "\n")
    try:
        np.loadtxt(path)
    except ValueError as e:
        reason = str(e).splitlines()[0]
    assert len(reason) > 120
    with pytest.raises(UsageError) as e:
        kc.read_intrinsics(path, 1)
    assert str(e.value) == f"--intrinsics {path}: cannot read it as one 3x3 K or a list of them ({reason[:120]})"


@pytest.mark.parametrize("fx,fy,ok", [(0.5, 0.5, True), (0.0, 530.0, False), (530.0, 0.0, False)])
def test_any_positive_focal_length_is_a_pinhole_K(tmp_path, fx, fy, ok):
    """--intrinsics checks only that fx and fy are positive (half a pixel is one; zero is not)."""
    path = intrinsics_file(tmp_path, [[fx, 0, 320], [0, fy, 240], [0, 0, 1]], ".json")
    if ok:
        assert kc.read_intrinsics(path, 1)[0][0, 0] == fx
    else:
        with pytest.raises(UsageError, match="matrix 0 is not a pinhole K"):
            kc.read_intrinsics(path, 1)

"""Trust on recon3d's newer surfaces: given files are never outputs, COLMAP models are whole and owned,
odd values are refused in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from heads.recon.camera_files import write_colmap

ROOM = Path(__file__).resolve().parents[1] / "samples" / "room"
FRAMES = sorted(ROOM.glob("*.color.jpg"))
K = np.array([[585.0, 0, 320], [0, 585.0, 240], [0, 0, 1]])


def poses(n: int) -> np.ndarray:
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, 0, 3] = 0.1 * np.arange(n)
    return out


def cameras_json(path: Path, names: list[str], **head) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cams = [{"image": n, "width": 640, "height": 480, "K": K.tolist(), "cam2world": T.tolist()}
            for n, T in zip(names, poses(len(names)))]
    path.write_text(json.dumps({"unit": "metres", **head, "cameras": cams}))
    return path


def colmap_model(folder: Path, names: list[str], text: bool = False) -> Path:
    write_colmap(folder, names, original_hw=np.array([(480, 640)] * len(names)), K=np.repeat(K[None], len(names), 0),
                 cam2world=poses(len(names)), text=text)
    return folder


def bare(tmp_path: Path, frames: list[Path]) -> list[Path]:
    """Copies of ``frames`` in a folder of their own, without the intrinsics file beside them (whose use is said
    in a line of its own)."""
    folder = tmp_path / "bare"
    folder.mkdir(exist_ok=True)
    for f in frames:
        (folder / f.name).write_bytes(f.read_bytes())
    return [folder / f.name for f in frames]


def model_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------- a given file is never an output


def test_known_cameras_that_an_output_would_replace_are_refused(cli, tmp_path):
    names = [p.name for p in FRAMES[:2]]
    given = cameras_json(tmp_path / "out" / "cameras.json", names)
    before = given.read_bytes()
    code, _, err = cli(["recon3d", *FRAMES[:2], "-o", tmp_path / "out", "--known-cameras", given,
                        "--cameras", "json", "-q"])
    assert code == 2 and "--known-cameras" in err and "output" in err, err
    assert given.read_bytes() == before and not (tmp_path / "out" / "scene.ply").exists()
    model = colmap_model(tmp_path / "proj" / "sparse" / "0", names)
    files = {p.name: p.read_bytes() for p in model.iterdir()}
    code, _, err = cli(["recon3d", *FRAMES[:2], "-o", tmp_path / "proj", "--known-cameras", model,
                        "--cameras", "colmap", "-q"])
    assert code == 2 and "--known-cameras" in err and "output" in err, err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == files


# ---------------------------------------------------------------------------- COLMAP models


def test_a_model_folder_holds_one_model_of_the_run_that_wrote_it(tmp_path):
    """A text model written over an earlier binary one (or back) leaves no file of the other: COLMAP would
    read the stale one first."""
    folder = tmp_path / "sparse" / "0"
    colmap_model(folder, ["a.jpg", "b.jpg", "c.jpg"])
    assert {"cameras.bin", "images.bin", "points3D.bin"} <= set(model_files(folder))
    colmap_model(folder, ["a.jpg", "b.jpg"], text=True)
    assert not [f for f in model_files(folder) if f.endswith(".bin")], model_files(folder)
    colmap_model(folder, ["a.jpg", "b.jpg", "c.jpg"])
    assert not [f for f in model_files(folder) if f.endswith(".txt")], model_files(folder)
    (folder / "notes.md").write_text("mine")  # not a model file: left alone
    colmap_model(folder, ["a.jpg"], text=True)
    assert (folder / "notes.md").read_text() == "mine"


def test_a_temporary_folder_left_by_a_killed_write_goes_on_the_next(tmp_path):
    folder = tmp_path / "sparse" / "0"
    stale = folder / ".colmap-dead"
    stale.mkdir(parents=True)
    (stale / "points3D.bin").write_bytes(b"half")
    colmap_model(folder, ["a.jpg", "b.jpg"])
    assert not any(p.name.startswith(".colmap-") for p in folder.iterdir()), model_files(folder)


def test_a_model_that_cannot_be_read_back_is_not_left_under_its_names(tmp_path, monkeypatch):
    """pycolmap's writer reports no error on a full disk: the files are read back before they take their
    names (here the writer is made to truncate one, as a full disk does)."""
    import pycolmap

    folder = tmp_path / "sparse" / "0"
    colmap_model(folder, ["a.jpg", "b.jpg"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = pycolmap.Reconstruction.write_binary

    def truncating(self, path):
        real(self, path)
        (Path(path) / "images.bin").write_bytes(b"")

    monkeypatch.setattr(pycolmap.Reconstruction, "write_binary", truncating)
    with pytest.raises(OSError, match="not whole"):
        colmap_model(folder, ["a.jpg", "b.jpg", "c.jpg"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the earlier model, untouched


def test_text_models_name_images_with_spaces_as_given_or_are_refused(cli, tmp_path):
    """COLMAP's text format ends an image's line with its name: a space in it reads back as another name."""
    spaced = tmp_path / "in" / "my frame 1.jpg"
    spaced.parent.mkdir()
    spaced.write_bytes(FRAMES[0].read_bytes())
    code, _, err = cli(["recon3d", spaced, FRAMES[1], "-o", tmp_path / "out", "--cameras", "colmap-text", "-q"])
    assert code == 2 and "space" in err and "--cameras colmap" in err, err
    assert not (tmp_path / "out").exists()


def test_exported_points_carry_their_reprojection_error(tmp_path):
    """Points of a COLMAP model that come from matching keep a real error (not -1), so the model's mean
    reprojection error means something."""
    import pycolmap

    from heads.recon.camera_files import SfmCameras

    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 585.0, 640, 480)
    cam.params = [585.0, 585.0, 320.5, 240.5]
    rec.add_camera_with_trivial_rig(cam)
    T = poses(2)
    X = np.array([[0.2, -0.1, 2.0], [-0.3, 0.2, 3.0], [0.1, 0.3, 2.5]])
    for v in range(2):
        w2c = np.linalg.inv(T[v])
        cam_pts = X @ w2c[:3, :3].T + w2c[:3, 3]
        uv = cam_pts[:, :2] / cam_pts[:, 2:] * 585.0 + [320.5, 240.5] + 0.7  # 0.7 px off in x and y
        image = pycolmap.Image(name=f"{v}.jpg", keypoints=uv, camera_id=1, image_id=v + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3]))
    for i, x in enumerate(X):
        track = pycolmap.Track()
        track.add_element(1, i)
        track.add_element(2, i)
        rec.add_point3D(x, track, np.zeros(3, np.uint8))
    sfm = SfmCameras(rec, ["0.jpg", "1.jpg"], np.array([(480, 640)] * 2), np.array([(480, 640)] * 2))
    folder = tmp_path / "sparse" / "0"
    write_colmap(folder, ["0.jpg", "1.jpg"], original_hw=np.array([(480, 640)] * 2), K=np.repeat(K[None], 2, 0),
                 cam2world=T, sfm=sfm, sfm_to_world=(1.0, np.eye(4)))
    back = pycolmap.Reconstruction(str(folder))
    errors = [p.error for p in back.points3D.values()]
    assert len(errors) == 3 and all(abs(e - 0.7 * np.sqrt(2)) < 1e-3 for e in errors), errors


def test_a_full_disk_under_matching_is_an_error_not_a_matching_result(cli, tmp_path, monkeypatch):
    """Matching writes each frame to a temporary folder; a disk that refuses them stops the run in one line
    (exit 1: the run failed) instead of reading as 'matching registered none'."""
    import errno

    import heads.recon.sfm
    import heads.recon.sfm_job

    def full(folder, index, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / f"{index:06d}.png"))

    monkeypatch.setattr(heads.recon.sfm_job, "write_frame", full)
    code, _, err = cli(["recon3d", *bare(tmp_path, FRAMES[:2]), "-o", tmp_path / "out", "-q"])
    assert code == 1 and "No space left on device" in err and "TMPDIR" in err, err
    assert "matching registered" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "scene.ply").exists()


def test_the_mapper_asked_for_reaches_matching(cli, tmp_path, monkeypatch):
    """--mapper goes to the SfM options as given (auto is decided there, by the number of frames)."""
    import heads.recon.sfm
    import heads.recon.sfm_job

    seen = []

    def no_model(folder, names, options, *args, **kwargs):
        seen.append(options.mapper)
        return None, None

    monkeypatch.setattr(heads.recon.sfm_job, "run_sfm", no_model)
    for mapper in ("global", "auto"):
        code, _, err = cli(["recon3d", *FRAMES[:2], "-o", tmp_path / mapper, "-q", "--mapper", mapper])
        assert code == 0, err
    assert seen == ["global", "auto"]


def test_frames_for_matching_are_written_without_opencv_messages_and_report_their_errors(tmp_path):
    """cv2.imwrite says False on a full disk (and libpng prints its own line): the frame is encoded in memory
    and written by Python, whose error names the cause."""
    import heads.recon.sfm
    import heads.recon.sfm_job

    image = np.zeros((48, 64, 3), np.uint8)
    name, hw = heads.recon.sfm_job.write_frame(tmp_path, 3, image)
    assert name == "000003.png" and hw == (48, 64) and (tmp_path / name).stat().st_size > 0
    with pytest.raises(OSError) as e:
        heads.recon.sfm_job.write_frame(tmp_path / "missing", 4, image)
    assert e.value.errno is not None


def test_an_rgbd_folder_gives_its_colour_frames_as_views(cli, tmp_path):
    """A 7-Scenes folder holds frame-N.color.jpg beside frame-N.depth.png (16-bit): the depth images were
    taken as more photos (twice the views, half of them black). The colour frames are the views, said in a
    line; TUM's rgb/ + depth/ the same."""
    import cv2

    folder = tmp_path / "seq"
    folder.mkdir()
    for i, frame in enumerate(FRAMES[:3]):
        (folder / f"frame-{i:06d}.color.jpg").write_bytes(frame.read_bytes())
        cv2.imwrite(str(folder / f"frame-{i:06d}.depth.png"), np.full((480, 640), 1500, np.uint16))
        (folder / f"frame-{i:06d}.pose.txt").write_text(" ".join(map(str, np.eye(4).ravel())))
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "out", "--no-sfm", "--cameras", "json", "-q",
                          "--json"])
    assert code == 0, err
    names = [c["image"] for c in json.loads((tmp_path / "out" / "cameras.json").read_text())["cameras"]]
    assert names == [f"frame-{i:06d}.color.jpg" for i in range(3)], names
    assert "RGB-D" in err and "3 depth images" in err, err
    tum = tmp_path / "tum"
    (tum / "rgb").mkdir(parents=True)
    (tum / "depth").mkdir()
    for i, frame in enumerate(FRAMES[:2]):
        (tum / "rgb" / f"{i}.png").write_bytes(cv2.imencode(".png", cv2.imread(str(frame)))[1].tobytes())
        cv2.imwrite(str(tum / "depth" / f"{i}.png"), np.full((480, 640), 5000, np.uint16))
    code, out, err = cli(["recon3d", tum, "-o", tmp_path / "out2", "--no-sfm", "--json", "-q"])
    assert code == 0 and json.loads(out)["frames"] == 2 and "2 depth images" in err, err


def _camera(**override) -> dict:
    c = {"image": "a.jpg", "width": 640, "height": 480, "K": K.tolist(), "cam2world": np.eye(4).tolist()}
    c.update(override)
    return c


def _flipped() -> list:
    T = np.eye(4)
    T[0, 0] = -1  # a reflection, not a rotation
    return T.tolist()


@pytest.mark.parametrize("camera,says", [
    (_camera(height="480"), "whole numbers of pixels"),
    ({"image": "a.jpg", "height": 480, "K": K.tolist(), "cam2world": np.eye(4).tolist()}, "whole numbers"),
    (_camera(image=5), "'image' must name"),
    (_camera(width=0), "whole numbers"),
    (_camera(K="K"), "3x3"),
    (_camera(cam2world=np.zeros((4, 4)).tolist()), "not a rigid pose"),
    (_camera(cam2world=(np.eye(4) * 2).tolist()), "not a rigid pose"),
    (_camera(cam2world=_flipped()), "not a rigid pose"),
    (_camera(K=[[-585.0, 0, 320], [0, 585.0, 240], [0, 0, 1]]), "not a pinhole"),
    (_camera(cam2world=[[1, 0, 0, 1e300], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "from the origin"),
])
def test_a_cameras_json_is_checked_camera_by_camera(tmp_path, camera, says):
    """Each of these ended in exit 3 (ValueError, KeyError, ZeroDivisionError) or was taken as a scene."""
    from heads.recon.known_cameras import read_cameras_json
    from pixio_cli.errors import UsageError

    path = tmp_path / "cameras.json"
    path.write_text(json.dumps({"unit": "metres", "cameras": [camera]}))
    with pytest.raises(UsageError, match=says) as e:
        read_cameras_json(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_cameras_json_says_its_unit_and_each_image_once(tmp_path):
    from heads.recon.known_cameras import read_cameras_json, read_known_cameras
    from pixio_cli.errors import UsageError

    path = tmp_path / "cameras.json"
    for unit, scale in (("m", 1.0), ("meters", 1.0), ("mm", 0.001), ("unknown (the model is not metric)", None)):
        path.write_text(json.dumps({"unit": unit, "cameras": [_camera()]}))
        assert read_cameras_json(path).scale == scale
    path.write_text(json.dumps({"unit": "seconds", "cameras": [_camera()]}))
    with pytest.raises(UsageError, match="not a length"):
        read_cameras_json(path)
    path.write_text(json.dumps({"unit": "m", "cameras": [_camera(), _camera()]}))
    with pytest.raises(UsageError, match="a second camera for the same image"):
        read_cameras_json(path)
    path.write_text(json.dumps({"unit": "m", "cameras": [_camera(width=480, height=640)]}))  # another shape
    with pytest.raises(UsageError, match="is 480x640 there, but the image is 640x480"):
        read_known_cameras(path, ["a.jpg"], [(480, 640)])
    path.write_text(json.dumps({"unit": "mm", "cameras": [_camera(cam2world=[[1, 0, 0, 500], [0, 1, 0, 0],
                                                                             [0, 0, 1, 0], [0, 0, 0, 1]])]}))
    cams = read_known_cameras(path, ["a.jpg"], [(960, 1280)])  # a larger copy of the image: K follows
    assert cams.scale == 1.0 and cams.cam2world[0][0, 3] == pytest.approx(0.5) and cams.K[0][0, 0] == 1170
    path.write_text(json.dumps({"unit": "m", "cameras": [_camera()]}))
    with pytest.raises(UsageError, match="both take the camera of a.jpg"):
        read_known_cameras(path, ["x/a.jpg", "y/a.jpg"], [(480, 640)] * 2)


def test_pixios_own_colmap_export_in_metres_is_taken_back_in_metres(tmp_path):
    """A model pixio wrote from the network's cameras has no points to set a scale; it says its unit."""
    from heads.recon.known_cameras import read_known_cameras

    folder = tmp_path / "sparse" / "0"
    write_colmap(folder, ["a.jpg", "b.jpg"], original_hw=np.array([(480, 640)] * 2), K=np.repeat(K[None], 2, 0),
                 cam2world=poses(2), unit="metres")
    cams = read_known_cameras(folder, ["a.jpg", "b.jpg"], [(480, 640)] * 2)
    assert cams.scale == 1.0 and cams.cam2world[1][0, 3] == pytest.approx(0.1)
    write_colmap(folder, ["a.jpg", "b.jpg"], original_hw=np.array([(480, 640)] * 2), K=np.repeat(K[None], 2, 0),
                 cam2world=poses(2))
    assert not (folder / "unit.txt").exists()  # not metric: not said
    assert read_known_cameras(folder, ["a.jpg", "b.jpg"], [(480, 640)] * 2).scale is None


def test_a_videos_colmap_model_names_images_that_exist(cli, tmp_path):
    """A video's frames were named walk.avi#frame0, which no tool can open: the frames used are written
    beside the model (images/), and the model and cameras.json name them there."""
    import cv2
    import pycolmap

    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(6):
        writer.write(cv2.resize(cv2.imread(str(FRAMES[i % len(FRAMES)])), (160, 120)))
    writer.release()
    out = tmp_path / "out"
    code, _, err = cli(["recon3d", video, "-o", out, "--every", "2", "--no-sfm", "--cameras", "colmap", "-q"])
    assert code == 0, err
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    names = sorted(im.name for im in rec.images.values())
    assert len(names) == 3 and all("#" not in n for n in names), names
    for n in names:
        image = cv2.imread(str(out / "images" / n))
        assert image is not None and image.shape[:2] == (120, 160), n
    code, _, err = cli(["recon3d", video, "-o", tmp_path / "j", "--every", "2", "--no-sfm", "--cameras", "json",
                        "-q"])
    cams = json.loads((tmp_path / "j" / "cameras.json").read_text())
    assert code == 0 and all((Path(cams["image_root"]) / c["image"]).is_file() for c in cams["cameras"]), cams


# ---------------------------------------------------------------------------- models that hold together


def test_the_colmap_model_written_reprojects_as_the_reconstruction_did(cli, tmp_path):
    """A Gaussian-splatting or NeRF trainer takes the COLMAP model as it is: its points must land where they
    were seen, as in the SfM that made them (the map to the output's frame was once taken after that frame
    was made, and the points reprojected 144 px from their observations on 5 kitchen frames)."""
    import pycolmap

    code, out, err = cli(["recon3d", *FRAMES, "-o", tmp_path / "s", "--cameras", "colmap", "--json", "-q"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    model = pycolmap.Reconstruction(str(tmp_path / "s" / "sparse" / "0"))
    assert model.num_points3D() > 50
    assert model.compute_mean_reprojection_error() == pytest.approx(summary["cameras"]["reprojection_error_px"],
                                                                     abs=0.01)


def test_recorded_rotations_stored_to_a_few_digits_are_taken_and_said(tmp_path):
    """7-Scenes stores its rotations orthonormal to about 3e-4: up to 1e-3 they are made exact (and said
    once); a rotation further off is refused."""
    from heads.recon.known_cameras import read_cameras_json, read_known_cameras
    from pixio_cli.errors import UsageError

    path = tmp_path / "cameras.json"
    T = np.eye(4)
    T[:3, :3] += np.array([[0, 4e-4, 0], [-3e-4, 0, 0], [0, 0, 2e-4]])
    path.write_text(json.dumps({"unit": "m", "cameras": [_camera(cam2world=T.tolist())]}))
    given = read_cameras_json(path)
    R = given.cameras["a.jpg"][1][:3, :3]
    assert np.allclose(R.T @ R, np.eye(3), atol=1e-12) and 2e-4 < given.rotation_off < 1e-3
    cams = read_known_cameras(path, ["a.jpg"], [(480, 640)])
    assert cams.note and "orthonormal" in cams.note and "a.jpg" not in cams.note
    T[:3, :3] += 2e-3
    path.write_text(json.dumps({"unit": "m", "cameras": [_camera(cam2world=T.tolist())]}))
    with pytest.raises(UsageError, match="not a rigid pose"):
        read_cameras_json(path)


# ---------------------------------------------------------------------------- inputs read as they are meant


def _seven_scenes_copy(folder: Path, ids, upper: bool = False, depth_scale: float = 1.0) -> Path:
    """Frames of the shared 7-Scenes kitchen (colour, depth, pose) and its intrinsics file, in ``folder``, their
    names upper-cased when asked, the depth times ``depth_scale``."""
    import cv2

    from .conftest import KITCHEN

    folder.mkdir(parents=True)
    case = str.upper if upper else str
    for i in ids:
        stem = f"frame-{i:06d}"
        os.symlink(KITCHEN / f"{stem}.color.jpg", folder / case(f"{stem}.color.jpg"))
        depth = cv2.imread(str(KITCHEN / f"{stem}.depth.png"), cv2.IMREAD_UNCHANGED).astype(np.float64) * depth_scale
        cv2.imwrite(str(folder / case(f"{stem}.depth.png")), np.clip(depth, 0, 65535).astype(np.uint16))
        os.symlink(KITCHEN / f"{stem}.pose.txt", folder / case(f"{stem}.pose.txt"))
    os.symlink(KITCHEN / "camera-intrinsics.txt", folder / case("camera-intrinsics.txt"))
    return folder


def test_an_rgbd_layout_is_recognised_whatever_the_case_of_its_names(cli, tmp_path):
    """FRAME-800.COLOR.JPG beside FRAME-800.DEPTH.PNG: the depth PNGs were taken as images and the intrinsics
    file ignored."""
    from .conftest import KITCHEN

    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    folder = _seven_scenes_copy(tmp_path / "UPPER", (800, 808, 816), upper=True)
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "out", "--json"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["frames"] == 3 and "known depth for 3 of 3 views" in err, err
    assert "recorded poses are the cameras" in err and summary["unit"] == "metres, from the measured depth"


def test_depth_in_the_wrong_unit_or_with_nothing_in_it_is_said(cli, tmp_path):
    """Millimetres read as metres gave scenes 1,352 m deep with "unit metres" and exit 0; files with no valid
    pixel were counted as known depth."""
    from .conftest import KITCHEN

    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    folder = _seven_scenes_copy(tmp_path / "seq", (800, 808))
    code, _, err = cli(["recon3d", folder, "-o", tmp_path / "a", "--depth-scale", "1", "--no-sfm", "-q"])
    assert code == 2 and "median is" in err and "millimetres read as metres" in err, err
    code, _, err = cli(["recon3d", folder, "-o", tmp_path / "b", "--depth-scale", "1e-9", "--no-sfm", "-q"])
    assert code == 2 and "median is" in err and "Traceback" not in err, err
    import cv2

    cv2.imwrite(str(folder / "frame-000808.depth.png"), np.zeros((480, 640), np.uint16))
    code, _, err = cli(["recon3d", folder, "-o", tmp_path / "c", "--no-sfm"])
    assert code == 0 and "known depth for 1 of 2 views" in err and "1 file with no valid pixel" in err, err


def test_a_colour_folders_intrinsics_file_is_where_matching_starts(cli, tmp_path):
    """samples/room holds camera-intrinsics.txt beside colour frames; it was ignored (the focal held at COLMAP's
    1.2x the long side). It is matching's first guess, said, and fitted to the frames."""
    code, out, err = cli(["recon3d", *FRAMES, "-o", tmp_path / "out2", "--json"])
    assert code == 0 and "intrinsics file gives fx 585.0 px" in err, err
    K = json.loads((tmp_path / "out2" / "cameras.json").read_text())["cameras"][0]["K"]
    assert 400 < K[0][0] < 700 and abs(K[0][0] - 768) > 50, K


@pytest.mark.parametrize("fx", [1e300, 1e-300, 1.0])
def test_a_focal_length_no_camera_has_is_refused_at_reading(tmp_path, fx):
    """fx = 1e300 ran and wrote Infinity into cameras.json; fx = 1e-300 failed with a hint about --no-mask."""
    from heads.recon.known_cameras import read_cameras_json
    from pixio_cli.errors import UsageError

    path = tmp_path / "cameras.json"
    path.write_text(json.dumps({"unit": "m", "cameras": [_camera(K=[[fx, 0, 320], [0, fx, 240], [0, 0, 1]])]}))
    with pytest.raises(UsageError, match="is no camera's for an image of 640x480"):
        read_cameras_json(path)


def test_a_zero_voxel_is_refused_not_taken_as_the_default(cli, tmp_path):
    for option in ("--mesh-voxel", "--voxel"):
        code, _, err = cli(["recon3d", *FRAMES[:2], "-o", tmp_path / "out", "--mesh", option, "0"])
        assert code == 2 and f"{option} 0: expected a positive number" in err, err


def test_evaluate_matches_frames_by_their_path_and_refuses_a_name_two_frames_share(tmp_path):
    """seq-01 and seq-02 hold the same file names: matched by bare name, a scene was scored against the other
    sequence's depth (F@5 0.045 instead of 0.965, exit 0)."""
    from heads.recon.evaluate import SceneCameras, match_frames
    from heads.sequences import Frame
    from pixio_cli.errors import InputError

    frames = [Frame(tmp_path / s / "frame-000000.color.png", tmp_path / s / "d.png", np.eye(4), K) for s in
              ("seq-01", "seq-02")]
    by_path = SceneCameras(["seq-02/frame-000000.color.png"], K[None], np.eye(4)[None])
    assert [f.image.parent.name for _, f in match_frames(by_path, frames)] == ["seq-02"]
    rooted = SceneCameras(["frame-000000.color.png"], K[None], np.eye(4)[None], image_root=tmp_path / "seq-01")
    assert [f.image.parent.name for _, f in match_frames(rooted, frames)] == ["seq-01"]
    bare = SceneCameras(["frame-000000.color.png"], K[None], np.eye(4)[None])
    with pytest.raises(InputError, match="fits 2 frames of the data"):
        match_frames(bare, frames)


def test_evaluate_says_what_is_missing_in_one_line_and_writes_valid_json(cli, tmp_path):
    """Missing pose files exited 3 ("all input arrays must have the same shape"); an empty cloud exited 0 with
    inf rows and Infinity in --json."""
    from .conftest import KITCHEN

    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    code, _, err = cli(["recon3d", *FRAMES, "-o", tmp_path / "s", "-q"])
    assert code == 0, err
    data = tmp_path / "data"
    data.mkdir()
    for p in KITCHEN.glob("frame-0009*"):
        if not p.name.endswith("pose.txt"):
            os.symlink(p, data / p.name)
    code, _, err = cli(["evaluate", "recon3d", tmp_path / "s", "--data", data])
    assert code == 1 and "no recorded pose" in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "s" / "scene.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\n"
                                              "property float y\nproperty float z\nend_header\n")
    (tmp_path / "s" / "scene.manifest.json").unlink()  # a cloud made elsewhere: no manifest to check
    code, out, err = cli(["evaluate", "recon3d", tmp_path / "s", "--data", KITCHEN, "--json"])
    assert code == 1 and "holds no points" in err, err
    from pixio_cli.commands.evaluate import _finite

    assert json.dumps(_finite({"a": [float("inf"), 1.0, float("nan")]}), allow_nan=False) == '{"a": [null, 1.0, null]}'


def test_the_viewer_refuses_a_cut_short_ply_and_a_cloud_it_cannot_hold(tmp_path):
    """A truncated PLY was served as whole (after an RPly error line), a cloud of NaN points exited 3."""
    from heads.writers3d import write_ply
    from heads.recon.view import read_scene
    from pixio_cli.errors import InputError

    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.ply"
    write_ply(whole, rng.normal(size=(5000, 3)), rng.integers(0, 255, (5000, 3)).astype(np.uint8))
    cut = tmp_path / "cut.ply"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="cut short: it holds less than its header says"):
        read_scene(cut, 10_000)
    nan = tmp_path / "nan.ply"
    write_ply(nan, np.full((100, 3), np.nan), np.zeros((100, 3), np.uint8))
    with pytest.raises(InputError, match="none of its 100 points"):
        read_scene(nan, 10_000)
    far = tmp_path / "far.ply"
    points = rng.normal(size=(100, 3))
    points[:10] = 1e30
    write_ply(far, points, np.zeros((100, 3), np.uint8))
    scene = read_scene(far, 10_000)
    assert len(scene.points) == 90 and any("10 points" in n for n in scene.notes)

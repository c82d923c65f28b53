"""Known depth (`--known-depth`, an RGB-D folder's depth images): put in place of the network's, checked before
any work, and a dense cloud that keeps the measured surface."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from .conftest import KITCHEN

ROOT = Path(__file__).resolve().parents[1]
ROOM = ROOT / "samples" / "room"
FRAMES = sorted(ROOM.glob("*.color.jpg"))
K_FILE = ROOM / "camera-intrinsics.txt"


def depth_folder(tmp_path: Path, maps: list[np.ndarray]) -> Path:
    folder = tmp_path / "depth"
    folder.mkdir()
    for frame, d in zip(FRAMES, maps):
        np.save(folder / f"{frame.name[:-len('.jpg')]}.npy", d)
    return folder


def rgbd_folder(folder: Path) -> Path:
    """Three room frames laid out as 7-Scenes does, each with a flat depth of 1.8 m, and the K."""
    folder.mkdir()
    for frame in FRAMES[:3]:
        shutil.copy(frame, folder / frame.name)
        cv2.imwrite(str(folder / frame.name.replace(".color.jpg", ".depth.png")), np.full((480, 640), 1800, np.uint16))
    shutil.copy(K_FILE, folder)
    return folder


def test_known_depth_is_the_depth_where_given_and_the_network_fills_the_rest(cli, tmp_path):
    """Two metres on the left half of each frame, unknown (0) on the right: the saved predictions hold
    exactly 2 m there, and the network's depth, fitted to it, elsewhere."""
    known = np.zeros((480, 640), np.float32)
    known[:, :320] = 2.0
    folder = depth_folder(tmp_path, [known] * 3)
    code, out, err = cli(["recon3d", *FRAMES[:3], "-o", tmp_path / "s.ply", "--no-sfm", "--intrinsics", K_FILE,
                          "--known-depth", folder, "--save-predictions", tmp_path / "p.npz", "--json", "-q"])
    assert code == 0, err
    assert "known depth for 3 of 3 views" in err
    assert json.loads(out)["known_depth"] == {"views": 3, "covered": 0.5}
    with np.load(tmp_path / "p.npz") as p:
        depth = p["depth_z"]
    w = depth.shape[2]
    assert np.allclose(depth[:, :, : w // 2 - 1], 2.0)
    right = depth[:, :, w // 2 + 1:]
    assert np.isfinite(right).all() and (right > 0).all() and not np.allclose(right, 2.0)


@pytest.mark.parametrize("case", ["size", "missing", "nan", "inf", "negative", "no K", "8-bit png", "integer npy"])
def test_bad_known_depth_is_one_line_naming_the_file_before_any_work(cli, tmp_path, case):
    maps = [np.full((480, 640), 1.5, np.float32) for _ in range(3)]
    if case == "size":
        maps[1] = np.full((240, 320), 1.5, np.float32)
    elif case in ("nan", "inf", "negative"):
        maps[1][10, 10] = {"nan": np.nan, "inf": np.inf, "negative": -1.0}[case]
    folder = depth_folder(tmp_path, maps)
    bad = folder / f"{FRAMES[1].name[:-len('.jpg')]}.npy"
    if case == "missing":
        bad.unlink()
    if case == "integer npy":  # millimetres in a .npy, which holds metres unless --depth-scale says otherwise
        np.save(bad, np.full((480, 640), 1500, np.uint16))
    if case == "8-bit png":
        bad.unlink()
        bad = bad.with_suffix(".png")
        cv2.imwrite(str(bad), np.full((480, 640), 15, np.uint8))
    args = [] if case == "no K" else ["--intrinsics", K_FILE]
    code, _, err = cli(["recon3d", *FRAMES[:3], "-o", tmp_path / "out" / "s.ply", "--known-depth", folder, *args])
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    named = str(folder) if case == "no K" else FRAMES[1].name[:-len(".jpg")]
    assert named in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_an_rgbd_folder_with_its_intrinsics_gives_its_depth_as_known_depth(cli, tmp_path):
    folder = rgbd_folder(tmp_path / "seq")
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "a", "--no-sfm", "--json", "-q",
                          "--save-predictions", tmp_path / "p.npz"])
    assert code == 0, err
    assert "known depth for 3 of 3 views from the RGB-D sequence's 3 depth images" in err
    with np.load(tmp_path / "p.npz") as p:
        assert np.allclose(p["depth_z"], 1.8)
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "b", "--no-sfm", "--json", "-q", "--no-depth-input",
                          "--save-predictions", tmp_path / "q.npz"])
    assert code == 0 and json.loads(out)["known_depth"] is None and "left out (--no-depth-input)" in err
    with np.load(tmp_path / "q.npz") as q:  # the folder's K still holds: only its depth is left out
        assert np.allclose(q["K_original"][:, 0, 0], 585.0)
    (folder / FRAMES[2].name.replace(".color.jpg", ".depth.png")).unlink()
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "c", "--no-sfm", "--json", "-q"])
    assert code == 0 and "known depth for 2 of 3 views" in err and f"none for {FRAMES[2].name}" in err, err


def test_recorded_depth_in_gives_a_cloud_on_the_recorded_surface(cli, tmp_path):
    """Eight 7-Scenes frames with their recorded depth: the dense cloud scores F@5cm above 0.85 against that
    depth on the recorded poses, aligned rigidly (the network alone on such frames: about 0.6)."""
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(800, 864, 8):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(KITCHEN / f"frame-{i:06d}.{kind}", folder)
    shutil.copy(KITCHEN / "camera-intrinsics.txt", folder)
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "scene", "--cameras", "json", "-q", "--json"])
    assert code == 0, err
    # metric: aligned rigidly (the 5 cm camera path of these frames would fit a scale poorly), the scale judged
    code, out, err = cli(["evaluate", "recon3d", tmp_path / "scene", "--data", folder, "--no-sensor-offset",
                          "--no-scale", "--json"])
    assert code == 0, err
    scores = json.loads(out.strip().splitlines()[-1])["rows"]["scene"]
    assert scores["f@0.05"] > 0.85, scores


@pytest.mark.parametrize("listed", [True, False], ids=["with depth.txt", "without depth.txt"])
def test_a_tum_sequence_pairs_colour_and_depth_by_time_and_reads_its_depth_scale(cli, tmp_path, listed):
    """TUM RGB-D: rgb/<time>.png and depth/<time>.png at other times, depth in 1/5000 m: each colour frame
    takes the depth frame nearest in time within 0.02 s (TUM's associate.py), read at 5000 per metre, with
    or without TUM's list files beside the folders."""
    tum = tmp_path / "rgbd_dataset_freiburg1_xyz"
    (tum / "rgb").mkdir(parents=True)
    (tum / "depth").mkdir()
    if listed:
        (tum / "depth.txt").write_text("# depth maps\n")
    colour_times, depth_times = ["1305031102.175304", "1305031102.211214", "1305031102.275326"], \
        ["1305031102.160407", "1305031102.226738", "1305031102.322800"]  # the last colour frame: 0.047 s off
    for t, frame in zip(colour_times, FRAMES):
        cv2.imwrite(str(tum / "rgb" / f"{t}.png"), cv2.imread(str(frame)))
    for t in depth_times:
        cv2.imwrite(str(tum / "depth" / f"{t}.png"), np.full((480, 640), 7500, np.uint16))
    code, out, err = cli(["recon3d", tum, "-o", tmp_path / "out", "--no-sfm", "--intrinsics", K_FILE, "--json", "-q",
                          "--save-predictions", tmp_path / "p.npz"])
    assert code == 0, err
    assert "known depth for 2 of 3 views" in err and json.loads(out)["frames"] == 3, err
    with np.load(tmp_path / "p.npz") as p:
        assert np.allclose(p["depth_z"][:2], 1.5) and not np.allclose(p["depth_z"][2], 1.5)


def test_a_png_s_65535_is_no_measurement_not_65_metres(tmp_path):
    """7-Scenes and Kinect tools write 65535 where the sensor saw nothing: unknown, as 0 is."""
    from heads.recon.known_depth import read_depth

    raw = np.full((4, 6), 1500, np.uint16)
    raw[1, 2] = 65535
    cv2.imwrite(str(tmp_path / "d.png"), raw)
    depth = read_depth(tmp_path / "d.png", (4, 6))
    assert depth[1, 2] == 0 and np.allclose(np.delete(depth.ravel(), 1 * 6 + 2), 1.5)


def test_an_unreadable_colour_frame_fails_as_itself_not_as_its_depth(cli, tmp_path):
    folder = rgbd_folder(tmp_path / "seq")
    broken = folder / FRAMES[1].name
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "a", "--no-sfm", "--json", "-q"])
    assert code == 1, err  # the scene is made from the others, and the failure said
    assert "known depth for 2 of 3 views" in err and broken.name in err and "depth.png" not in err, err
    assert json.loads(out)["frames"] == 2

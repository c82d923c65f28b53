"""Dataset layouts read the way their official releases store them (tiny synthetic folders)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from heads.datasets import EIGEN_CROP, IGNORE, find_layout, voc_palette
from pixio_cli.errors import InputError, UsageError
from pixio_cli.writers import write_image


def _img(path: Path, h: int = 8, w: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 100, np.uint8))


def _label(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), arr)


def test_nyuv2_official_layout(tmp_path):
    d = tmp_path / "official_splits" / "test" / "bathroom"
    _img(d / "rgb_00045.jpg")
    _label(d / "sync_depth_00045.png", np.full((8, 10), 2500, np.uint16))
    lay = find_layout("nyuv2", tmp_path, "val")
    assert len(lay.pairs) == 1 and lay.crop_box == EIGEN_CROP
    assert np.allclose(lay.read_target(lay.pairs[0][1]), 2.5)
    with pytest.raises(InputError, match="no image/target pairs for the train split of the nyuv2 layout"):
        find_layout("nyuv2", tmp_path, "train")


def test_kitti_split_file(tmp_path):
    _img(tmp_path / "images" / "a.png")
    _label(tmp_path / "ann" / "a.png", np.full((8, 10), 256 * 20, np.uint16))
    (tmp_path / "val.txt").write_text("images/a.png ann/a.png\n")
    lay = find_layout("kitti", tmp_path, "val")
    assert np.allclose(lay.read_target(lay.pairs[0][1]), 20.0)


def test_ade20k_zero_is_ignored_and_ids_shift(tmp_path):
    _img(tmp_path / "images" / "validation" / "ADE_val_1.jpg")
    _label(tmp_path / "annotations" / "validation" / "ADE_val_1.png", np.array([[0, 1, 150]], np.uint8))
    lay = find_layout("ade20k", tmp_path, "val")
    assert lay.read_target(lay.pairs[0][1]).tolist() == [[IGNORE, 0, 149]] and len(lay.classes) == 150


def test_voc_palette_labels(tmp_path):
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n")
    _img(tmp_path / "JPEGImages" / "2007_000033.jpg")
    ids = np.array([[0, 15, 255], [20, 1, 0]], np.uint8)
    write_image(tmp_path / "SegmentationClass" / "2007_000033.png", ids, palette=voc_palette())
    lay = find_layout("voc", tmp_path, "val")
    assert lay.read_target(lay.pairs[0][1]).tolist() == ids.tolist() and lay.classes[15] == "person"


def test_loveda_layout(tmp_path):
    base = tmp_path / "Val" / "Val" / "Rural"
    _img(base / "images_png" / "2522.png")
    _label(base / "masks_png" / "2522.png", np.array([[0, 1, 7]], np.uint8))
    lay = find_layout("loveda", tmp_path, "val")
    assert lay.read_target(lay.pairs[0][1]).tolist() == [[IGNORE, 0, 6]] and lay.classes[6] == "agriculture"


def test_camvid_and_7scenes_on_shared_data(shared_data):
    cam = find_layout("camvid", shared_data / "camvid", "val")
    assert len(cam.pairs) == 50
    t = cam.read_target(cam.pairs[0][1])
    assert t.max() <= 10 or IGNORE in t
    seven = find_layout("7scenes", shared_data / "rgbd-7scenes-redkitchen", "val")
    assert len(seven.pairs) == 50 and seven.intrinsics["fx"] == 585
    assert all(int(p.name[6:12]) >= 800 for p, _ in seven.pairs)


def _sevenscenes_scene(root: Path) -> Path:
    scene = root / "chess"
    (scene / "TrainSplit.txt").parent.mkdir(parents=True)
    (scene / "TrainSplit.txt").write_text("sequence1\nsequence3\n")
    (scene / "TestSplit.txt").write_text("sequence2\n")
    for seq in (1, 2, 3):
        folder = scene / f"seq-{seq:02d}"
        folder.mkdir()
        for i in range(2):
            cv2.imwrite(str(folder / f"frame-{i:06d}.color.png"), np.full((48, 64, 3), 40 * seq, np.uint8))
            depth = np.full((48, 64), 1500 + i, np.uint16)
            depth[0, 0] = 65535  # no measurement
            cv2.imwrite(str(folder / f"frame-{i:06d}.depth.png"), depth)
            pose = np.eye(4)
            pose[0, 3] = seq + 0.1 * i
            np.savetxt(folder / f"frame-{i:06d}.pose.txt", pose)
    return scene


def test_real_sevenscenes_layout_sequences_and_depth_pairs(tmp_path):
    from heads.sequences import SEVENSCENES_K, find_sequences

    scene = _sevenscenes_scene(tmp_path / "7scenes")
    for root in (tmp_path / "7scenes", scene):  # a folder of scenes, or one scene
        train = find_sequences("7scenes", root, "train")
        assert [s.name for s in train] == ["chess/seq-01", "chess/seq-03"]
        val = find_sequences("7scenes", root, "val")
        assert [s.name for s in val] == ["chess/seq-02"] and len(val[0].frames) == 2
    frame = val[0].frames[1]
    assert np.allclose(frame.K, SEVENSCENES_K) and frame.cam2world[0, 3] == pytest.approx(2.1)
    depth = val[0].read_depth(frame)
    assert depth[0, 0] == 0 and depth[1, 1] == pytest.approx(1.501)
    lay = find_layout("7scenes", tmp_path / "7scenes", "val")
    assert [p.parent.name for p, _ in lay.pairs] == ["seq-02", "seq-02"]
    assert lay.read_target(lay.pairs[0][1])[0, 0] == 0  # 65535 is no measurement, not 65 m
    assert lay.intrinsics["fx"] == 585 and lay.intrinsics["width"] == 64


def test_generic_rgbd_layout(tmp_path):
    import shutil

    from heads.sequences import find_sequences, require_cameras, shared_frames

    for seq in ("a", "b"):
        folder = tmp_path / "val" / seq
        for sub in ("images", "depth", "poses"):
            (folder / sub).mkdir(parents=True)
        np.savetxt(folder / "K.txt", np.array([[50.0, 0, 16], [0, 50, 12], [0, 0, 1]]))
        for i in range(3):
            cv2.imwrite(str(folder / "images" / f"{i}.jpg"), np.zeros((24, 32, 3), np.uint8))
            cv2.imwrite(str(folder / "depth" / f"{i}.png"), np.full((24, 32), 2000, np.uint16))
            np.savetxt(folder / "poses" / f"{i}.txt", np.eye(4))
    seqs = find_sequences("generic-rgbd", tmp_path, "val", depth_scale=1000)
    assert [s.name for s in seqs] == ["a", "b"] and all(len(s.frames) == 3 for s in seqs)
    assert seqs[0].read_depth(seqs[0].frames[0])[0, 0] == pytest.approx(2.0)
    with pytest.raises(UsageError, match="depth-scale"):
        find_sequences("generic-rgbd", tmp_path, "val")
    # with split folders, a split without its folder is empty: never the other split's data
    assert find_sequences("generic-rgbd", tmp_path, "train", depth_scale=1000) == []
    single = tmp_path / "single" / "train"
    shutil.copytree(tmp_path / "val" / "a", single)
    assert find_sequences("generic-rgbd", tmp_path / "single", "val", depth_scale=1000) == []
    assert len(find_sequences("generic-rgbd", tmp_path / "single", "train", depth_scale=1000)) == 1
    # without split folders the root serves both, which a trainer must refuse as a held-out split
    flat = tmp_path / "val" / "a"
    train, val = (find_sequences("generic-rgbd", flat, s, depth_scale=1000) for s in ("train", "val"))
    assert shared_frames(train, val) == 3
    assert shared_frames(train, find_sequences("generic-rgbd", tmp_path, "val", depth_scale=1000)[1:]) == 0
    # a frame without its pose is named before any work
    (tmp_path / "val" / "b" / "poses" / "1.txt").unlink()
    with pytest.raises(InputError, match="b: 1.jpg has no pose"):
        require_cameras(find_sequences("generic-rgbd", tmp_path, "val", depth_scale=1000))


def test_generic_layouts_take_split_files_and_refuse_labels_they_cannot_mean(tmp_path):
    """A <split>.txt chooses the pairs of generic layouts too; a colour label map, a label beyond the class
    list (16-bit ones included, which wrapped) and an empty class list are errors, not silent guesses."""
    root = tmp_path / "seg"
    for name in ("a", "b", "c"):
        _img(root / "images" / f"{name}.jpg")
        _label(root / "labels" / f"{name}.png", np.full((8, 10), 1, np.uint8))
    (root / "classes.txt").write_text("sky\nroad\nbike\n")
    (root / "val.txt").write_text("images/c.jpg labels/c.png\n")
    assert [p.name for p, _ in find_layout("generic-segment", root, "val").pairs] == ["c.jpg"]
    assert len(find_layout("generic-segment", root, "train").pairs) == 3  # no train.txt: every pair
    layout = find_layout("generic-segment", root, "train")
    assert (layout.read_target(root / "labels" / "a.png") == 1).all()
    _label(root / "labels" / "gray3.png", np.full((8, 10, 3), 2, np.uint8))  # grey stored as 3 channels: fine
    assert (layout.read_target(root / "labels" / "gray3.png") == 2).all()
    _label(root / "labels" / "gray4.png", np.dstack([np.full((8, 10, 3), 2, np.uint8), np.full((8, 10), 255, np.uint8)]))
    assert (layout.read_target(root / "labels" / "gray4.png") == 2).all()  # and with an alpha channel
    colour = np.zeros((8, 10, 3), np.uint8)
    colour[..., 2] = 1
    _label(root / "labels" / "colour.png", colour)
    _label(root / "labels" / "three.png", np.full((8, 10), 3, np.uint8))
    _label(root / "labels" / "wide.png", np.full((8, 10), 257, np.uint16))  # 257 would wrap to class 1
    for name, expected in (("colour.png", "colour label map"), ("three.png", "label 3, but the dataset has 3"),
                           ("wide.png", "label 257")):
        with pytest.raises(InputError, match=expected):
            layout.read_target(root / "labels" / name)
    (root / "classes.txt").write_text("\n")
    with pytest.raises(UsageError, match="lists no class names"):
        find_layout("generic-segment", root, "train")
    depth = tmp_path / "depth"
    for name in ("a", "b"):
        _img(depth / "images" / f"{name}.jpg")
        _label(depth / "depth" / f"{name}.png", np.full((8, 10), 1000, np.uint16))
    (depth / "val.txt").write_text("images/b.jpg depth/b.png\n")
    assert [p.name for p, _ in find_layout("generic-depth", depth, "val", depth_scale=1000).pairs] == ["b.jpg"]

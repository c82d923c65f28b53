"""Atomic writes, palette PNGs and the background writer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pixio_cli.writers import BackgroundWriter, atomic_path, write_image, write_npz


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.npz"
    write_npz(target, {"a": np.ones(3)})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert np.load(target)["a"].sum() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def test_atomic_path_keep_suffix_names_the_format_and_cleans_up(tmp_path):
    target = tmp_path / "scene.ply"
    with pytest.raises(RuntimeError):
        with atomic_path(target, keep_suffix=True) as tmp:
            assert tmp.name.startswith(".scene.ply.") and tmp.name.endswith(".tmp.ply")
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target, keep_suffix=True) as tmp:
        tmp.write_bytes(b"ply")
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"] and target.read_bytes() == b"ply"


def test_palette_png_keeps_exact_ids(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    palette = np.array([[i * 20, 255 - i * 20, 7] for i in range(12)], np.uint8)
    write_image(tmp_path / "l.png", labels, palette=palette)
    raw = cv2.imread(str(tmp_path / "l.png"), cv2.IMREAD_UNCHANGED)  # OpenCV expands palettes to BGR
    assert raw.shape == (3, 4, 3)
    assert tuple(raw[0, 1]) == (7, 235, 20)
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P" and (np.asarray(im) == labels).all()


def test_background_writer_surfaces_errors():
    done = []
    writer = BackgroundWriter(max_pending=2)
    writer.submit(lambda: done.append(1))

    def fail():
        raise OSError("disk full")

    writer.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert done == [1]


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    write_npz(tmp_path / "a.npz", {"a": np.ones(1)})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.npz").st_mode) == 0o666 & ~mask


def test_a_killed_run_s_hidden_temporary_file_goes_with_the_next_write(tmp_path):
    left = tmp_path / ".scene.ply.abc123.tmp.ply"  # what kill -9 mid-write leaves
    left.write_bytes(b"half")
    other = tmp_path / ".other.ply.abc123.tmp.ply"
    other.write_bytes(b"not ours")
    with atomic_path(tmp_path / "scene.ply", keep_suffix=True) as tmp:
        tmp.write_bytes(b"whole")
    assert (tmp_path / "scene.ply").read_bytes() == b"whole"
    assert not left.exists() and other.exists()

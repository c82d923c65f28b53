"""The pictures a person looks at: legends that fit at 160 px, colour maps, side by side, depth videos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from heads.dense.visualize import depth_picture, overlay_picture

from .conftest import write_rgb


def ramp_depth(h: int, w: int) -> np.ndarray:
    return np.tile(np.linspace(0.5, 5.0, w, dtype=np.float32), (h, 1))


def text_rows(legend: np.ndarray) -> list[int]:
    """Rows of a white legend strip that hold dark (text) pixels."""
    dark = (legend.max(-1) < 100).any(1)
    return list(np.flatnonzero(dark))


@pytest.mark.parametrize("w", [160, 480, 1280])
def test_the_depth_legend_keeps_the_clipped_range_at_every_size(w):
    h = w * 3 // 4
    d = ramp_depth(h, w)
    pic = depth_picture(d, lo=1.0, hi=4.0)  # both ends clipped: the legend must say so
    legend = pic[h:]
    ramp_h = int(np.argmax(legend.min(-1).min(1) == 255)) if (legend.min(-1).min(1) == 255).any() else 0
    rows = text_rows(legend[ramp_h:])
    assert rows, "no text in the legend"
    if w == 160:  # the range note goes on a line of its own: two bands of text
        gaps = np.diff(rows)
        assert (gaps > 2).any(), rows
    assert pic.shape[1] == w


def test_colour_maps():
    d = ramp_depth(60, 80)
    grey = depth_picture(d, cmap="grey")[:60]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey[:, 0].mean() > grey[:, -1].mean()  # near is bright
    inv = depth_picture(d, cmap="inverse")[:60].astype(float).mean(-1)
    assert inv[:, 0].mean() > inv[:, 40].mean() > inv[:, -1].mean()  # brightness falls with depth
    turbo = depth_picture(d)[:60]
    assert (turbo[:, 0, 0] > turbo[:, 0, 2]).all() and (turbo[:, -1, 2] > turbo[:, -1, 0]).all()  # near red, far blue


def test_side_by_side_puts_the_input_on_the_left():
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    pic = depth_picture(ramp_depth(60, 80), image=image)
    assert pic.shape[1] > 160 and np.array_equal(pic[:60, :80], image)
    assert np.array_equal(pic[:, -80:], depth_picture(ramp_depth(60, 80)))


@pytest.mark.parametrize("w", [160, 480])
def test_overlay_legend_names_never_overlap(w):
    h = w * 3 // 4
    labels = np.repeat(np.arange(11), (h * w) // 11 + 1)[: h * w].reshape(h, w)
    classes = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
               "bicyclist"]
    palette = np.random.default_rng(0).integers(0, 200, (11, 3))
    pic = overlay_picture(np.zeros((h, w, 3), np.uint8), labels, palette, classes)
    legend = pic[h:]
    dark = (legend.max(-1) < 60)  # the text (and no swatch is that dark: palette entries are < 200 but > 60 mostly)
    cols = np.flatnonzero(dark.any(0))
    assert legend.shape[0] > 0 and cols.max() < w
    # every row of names: a gap of white between the names of neighbouring columns
    for y0 in range(0, legend.shape[0], 10):
        band = dark[y0:y0 + 10]
        runs = np.flatnonzero(np.diff(np.concatenate([[0], band.any(0).astype(int), [0]])))
        assert len(runs) % 2 == 0


def test_a_depth_video_of_a_video(cli, tmp_path):
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for i in range(8):
        writer.write(cv2.imread(str(write_rgb(tmp_path / f"f{i}.png", 64, 96, seed=i))))
    writer.release()
    code, _, err = cli(["depth", video, "-o", tmp_path / "depth.mp4", "--every", "2", "--side-by-side", "-q",
                        "--workers", "0"])
    assert code == 0, err
    cap = cv2.VideoCapture(str(tmp_path / "depth.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and abs(cap.get(cv2.CAP_PROP_FPS) - 5.0) < 0.01
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape[1] > 2 * 96
    code, _, err = cli(["depth", tmp_path / "f0.png", "-o", tmp_path / "x.mp4"])
    assert code == 2 and "one input video" in err
    before = (tmp_path / "depth.mp4").read_bytes()
    code, _, err = cli(["depth", tmp_path / "depth.mp4", "-o", tmp_path / "depth.mp4"])
    assert code == 2 and "is the input video itself" in err and (tmp_path / "depth.mp4").read_bytes() == before


@pytest.mark.parametrize("when", ["end", "start"])
def test_a_depth_video_whose_writer_fails_ends_the_run(cli, tmp_path, monkeypatch, when):
    """On a full disk the video writer fails; the run hung for ever (0 % CPU) when that came after the last
    frame, the encoder waiting for an end marker it had already taken. It ends now, in one line, exit 2."""
    import errno
    import threading

    import pixio_cli.writers as writers

    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for i in range(6):
        writer.write(cv2.imread(str(write_rgb(tmp_path / f"f{i}.png", 64, 96, seed=i))))
    writer.release()

    def full(path, frames, fps):
        if when == "end":
            for _ in frames:  # every frame taken, the end marker too
                pass
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(writers, "write_video", full)
    result = []
    run = threading.Thread(target=lambda: result.append(cli(["depth", video, "-o", tmp_path / "d.mp4", "-q",
                                                              "--workers", "0"])), daemon=True)
    run.start()
    run.join(120)
    assert not run.is_alive(), "the run hangs"
    code, _, err = result[0]
    assert code == 1 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d.mp4").exists()

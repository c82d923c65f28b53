"""Sliding windows without seams: windows that disagree are blended and levelled, the seam figure says
so, and the default path is as accurate as the plain average it replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from heads.metrics import seam_ratio
from pixio_cli.sliding import sliding_window, window_borders

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def coordinates(h: int, w: int) -> torch.Tensor:
    """An 'image' whose channels are each pixel's column and row, so a window knows where it is."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([u, v, torch.zeros_like(u)])[None]


def scene(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return 2.0 + 0.002 * u + 0.001 * v + 0.1 * torch.sin(u / 23) * torch.cos(v / 31)


def windows_at_their_own_level(x: torch.Tensor) -> torch.Tensor:
    """Each window predicts the scene at a level of its own (a factor from its position): what makes a
    plain average show the window grid."""
    u, v = x[:, 0], x[:, 1]
    level = 1.0 + 0.3 * torch.sin(u[:, :1, :1] * 0.37 + v[:, :1, :1] * 0.11)
    return scene(u, v) * level


def test_windows_at_different_levels_blend_into_one_seamless_map():
    x = coordinates(480, 640)
    out = sliding_window(windows_at_their_own_level, x, 256, align_scale=True)[0]
    truth = scene(x[0, 0], x[0, 1])
    ratio = out / truth
    assert float(ratio.std() / ratio.mean()) < 1e-3  # one level for the whole map: the windows agree
    assert seam_ratio(out.numpy(), 256) < 1.5 and seam_ratio(truth.numpy(), 256) < 1.5
    plain = sliding_window(windows_at_their_own_level, x, 256)[0]  # blended, not levelled: still smooth
    steps = np.abs(np.diff(plain.numpy(), axis=1)).mean(0)
    assert steps.max() < 5 * np.median(steps)  # no line where one window's level jumps to another's


def test_the_blend_keeps_what_every_window_agrees_on_exactly():
    x = torch.rand(2, 3, 300, 420)
    out = sliding_window(lambda t: t * 2, x, 128)
    assert torch.allclose(out, x * 2, atol=1e-5)


def test_a_plain_average_of_disagreeing_windows_scores_a_seam():
    x = coordinates(480, 640)
    boxes = [(y, x0) for y in (0, 170, 224) for x0 in (0, 170, 340, 384)]
    total, count = torch.zeros(480, 640), torch.zeros(480, 640)
    for y, x0 in boxes:  # what the old default did: the windows averaged as they are
        total[y:y + 256, x0:x0 + 256] += windows_at_their_own_level(x[..., y:y + 256, x0:x0 + 256])[0]
        count[y:y + 256, x0:x0 + 256] += 1
    assert seam_ratio((total / count).numpy(), 256) > 10
    assert window_borders(640, 256) == [170, 256, 340, 384, 426, 596]


def test_default_depth_is_seamless_and_as_accurate_as_the_plain_average(cli, tmp_path):
    """The bundled depth head on held-out 7-Scenes frames: the default (tiled) path is at least as good as
    the plain average of windows was (abs_rel 0.181, d1 0.675 on frames 800-996; measured: 0.148, 0.730),
    and its seam figure is near 1 (was about 31)."""
    if not (SHARED / "rgbd-7scenes-redkitchen").exists():
        pytest.skip("shared data not present")
    code, out, err = cli(["evaluate", "depth", "--data", SHARED / "rgbd-7scenes-redkitchen", "--limit", "6",
                          "--json", "--workers", "0"])
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["seam"] < 1.5 and r["abs_rel"] < 0.2 and r["d1"] > 0.6, r


def test_evaluate_segment_on_the_test_split_reports_what_segment_writes(cli, tmp_path):
    """CamVid's test/ + testannot/ (here three val images in that layout): `evaluate --split test` scores
    exactly the label maps `pixio segment` writes for those images."""
    from heads.datasets import CAMVID_CLASSES
    from heads.metrics import ConfusionMatrix

    camvid = SHARED / "camvid"
    if not camvid.exists():
        pytest.skip("shared data not present")
    root = tmp_path / "camvid"
    (root / "test").mkdir(parents=True)
    (root / "testannot").mkdir()
    for img in sorted((camvid / "val").iterdir())[:3]:
        shutil.copy(img, root / "test" / img.name)
        shutil.copy(camvid / "valannot" / img.name, root / "testannot" / img.name)
    code, out, err = cli(["evaluate", "segment", "--data", root, "--split", "test", "--json", "--workers", "0"])
    assert code == 0, err
    reported = json.loads(out.strip().splitlines()[-1])
    assert "IoU per class" in err and "sky " in err  # per class in the human output too
    code, _, err = cli(["segment", root / "test", "-o", tmp_path / "labels", "-q", "--workers", "0"])
    assert code == 0, err
    from heads.model import load_head

    palette = np.array(load_head("segment-tiny").cfg.palette, np.int64)  # the PNGs are palette-indexed
    code_of = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(palette)}
    cm = ConfusionMatrix(len(CAMVID_CLASSES), 255)
    for img in sorted((root / "test").iterdir()):
        bgr = cv2.imread(str(tmp_path / "labels" / img.name)).astype(np.int64)
        pred = np.vectorize(code_of.get)((bgr[..., 2] << 16) | (bgr[..., 1] << 8) | bgr[..., 0])
        gt = cv2.imread(str(root / "testannot" / img.name), cv2.IMREAD_UNCHANGED).astype(np.int64)
        gt[gt == 11] = 255  # void
        cm.update(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt))
    assert abs(cm.result()["miou"] - reported["miou"]) < 1e-9 and np.isfinite(reported["seam"])
    code, _, err = cli(["evaluate", "segment", "--data", root, "--split", "test", "--dataset", "voc"])
    assert code == 2 and "no test split" in err


def test_an_image_narrower_than_a_window_is_levelled_on_its_own_pixels():
    """A 20-pixel-high image padded to the window: the padding's output does not decide the levels."""
    def two_levels(t: torch.Tensor) -> torch.Tensor:
        u = t[:, 0]
        level = torch.where(u[:, :1, :1] > 50, 1.5, 1.0)  # the second window sees the scene 1.5x deeper
        out = 2.0 * level * torch.ones_like(u)
        out[:, 20:] = 1.0  # what a head might say about the zero padding
        return out

    x = coordinates(20, 150)
    out = sliding_window(two_levels, x, 64, align_scale=True)[0]
    assert float(out.max() / out.min()) < 1.01, (out.min(), out.max())

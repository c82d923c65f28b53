"""Sliding windows without seams: windows that disagree are blended and levelled, the seam figure says
so, and the default path is as accurate as the plain average it replaced."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from heads.metrics import seam_ratio
from pixio_cli.sliding import sliding_window, window_borders

from .conftest import SHARED_DATA as SHARED


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


def test_the_default_depth_path_levels_its_windows():
    """What `pixio depth` and `evaluate depth` run (heads.dense.predict.batch_fn, tiled): windows of a head
    that each see the scene at their own level come out as one map at one level; without the levelling
    the ratio to the scene varies by tens of percent across the image."""
    from types import SimpleNamespace

    from heads.dense.predict import batch_fn

    class LevelPerWindow(torch.nn.Module):
        cfg = SimpleNamespace(task="depth", crop=256)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return windows_at_their_own_level(x)[:, None]

    x = coordinates(480, 640)
    out = batch_fn(LevelPerWindow())(x)["out"][0, 0]
    ratio = out / scene(x[0, 0], x[0, 1])
    assert float(ratio.std() / ratio.mean()) < 0.01, float(ratio.std() / ratio.mean())


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
    """The bundled depth head on six held-out 7-Scenes frames: the default (tiled) path is better than the
    plain average of windows it replaced (abs_rel 0.181, d1 0.675 on frames 800-996) and than the same
    blend without levelling each window to its neighbours (which misses both bounds here), and no line
    near a window border is much steeper than a typical one (the old blend, with its border frame: 10+)."""
    if not (SHARED / "rgbd-7scenes-redkitchen").exists():
        pytest.skip("shared data not present")
    code, out, err = cli(["evaluate", "depth", "--data", SHARED / "rgbd-7scenes-redkitchen", "--limit", "6",
                          "--json", "--workers", "0"])
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["seam"] < 4 and r["abs_rel"] < 0.135 and r["d1"] > 0.83, r


def held_out_frames(n: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """``n`` held-out 7-Scenes frames (800 on) as normalised (1, 3, 480, 640) tensors, with their depth (m)."""
    files = sorted((SHARED / "rgbd-7scenes-redkitchen").rglob("frame-*.color.*"))
    files = [f for f in files if int(f.name[6:12]) >= 800][::12][:n]
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    out = []
    for f in files:
        rgb = torch.from_numpy(cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255
        depth = cv2.imread(str(f).replace(".color.jpg", ".depth.png").replace(".color.png", ".depth.png"), -1)
        out.append((((rgb - mean) / std)[None], depth.astype(np.float32) / 1000))
    return out


def test_depth_pictures_have_no_frame_and_no_line_where_a_window_ends():
    """Look at a depth picture at 100 %: the outermost pixels are as right as the inside (no dark or bright
    frame from the head's zero padding), and the steepest line near each window border is about what a
    whole-image pass, which has no windows, has there (no straight line where a window's level ends)."""
    from heads.dense.model import load_head
    from heads.dense.predict import batch_fn

    if not (SHARED / "rgbd-7scenes-redkitchen").exists():
        pytest.skip("shared data not present")
    model = load_head("depth-tiny").float()
    tiled, whole = batch_fn(model, tile=True), batch_fn(model, tile=False)
    edge_err, inner_err = [], []
    for x, gt in held_out_frames(8):
        with torch.no_grad():
            d, w = tiled(x)["out"][0].numpy(), whole(x)["out"][0].numpy()
        assert seam_ratio(d, 256) < 1.5 * seam_ratio(w, 256)
        err = np.abs(d - gt) / np.maximum(gt, 1e-3)
        valid = (gt > 0.1) & (gt < 10)
        edge = np.zeros_like(valid)
        edge[:3], edge[-3:], edge[:, :3], edge[:, -3:] = True, True, True, True
        edge_err.append(err[valid & edge].mean())
        inner_err.append(err[valid & ~edge].mean())
    assert np.mean(edge_err) < 1.15 * np.mean(inner_err), (edge_err, inner_err)


def test_the_image_border_is_predicted_inside_what_the_head_sees():
    """A head that is wrong on the outer 3 pixels of whatever it is given (as zero padding makes it): with
    the image mirrored outwards first, no output pixel comes from those, on the image's border either."""
    from pixio_cli.sliding import reflect_border

    def wrong_at_its_border(t: torch.Tensor) -> torch.Tensor:
        out = torch.ones_like(t[:, 0])
        out[:, :3], out[:, -3:], out[:, :, :3], out[:, :, -3:] = 0.0, 0.0, 0.0, 0.0
        return out

    x = torch.rand(1, 3, 300, 420)
    assert float(sliding_window(wrong_at_its_border, x, 128).min()) == 0.0  # the frame, without mirroring
    out = reflect_border(lambda t: sliding_window(wrong_at_its_border, t, 128), x, 16)
    assert out.shape == (1, 300, 420) and float(out.min()) > 0.999
    tiny = reflect_border(lambda t: t[:, 0] * 2, torch.rand(1, 3, 5, 7), 16)  # smaller than the mirror
    assert tiny.shape == (1, 5, 7)


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
    from heads.dense.model import load_head

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


def patch_pattern(depth: np.ndarray, patch: int = 16) -> float:
    """The share of a map's fine detail (the map minus a 31-pixel box blur) that lies at the patch period and
    its first harmonics, in both directions: what a checkerboard of patch-sized squares adds."""
    r = depth - cv2.blur(depth, (31, 31))
    power = np.abs(np.fft.fft2(r)) ** 2
    h, w = depth.shape
    band = np.zeros_like(power, bool)
    for m in (1, 2, 3):
        for ky in (0, m * h // patch, -m * h // patch):
            for kx in (0, m * w // patch, -m * w // patch):
                if ky or kx:
                    band[np.ix_([(ky + o) % h for o in (-1, 0, 1)], [(kx + o) % w for o in (-1, 0, 1)])] = True
    return float(power[band].sum() / power.sum())


def test_the_bundled_depth_heads_pictures_show_little_checkerboard():
    """The 500-step head put 3.9 % of its pictures' fine detail in a patch-sized checkerboard; the bundled
    one (1500 steps) 1.4 %. A map with no such pattern (the recorded depth) scores well under either."""
    from heads.dense.model import load_head
    from heads.dense.predict import batch_fn

    if not (SHARED / "rgbd-7scenes-redkitchen").exists():
        pytest.skip("shared data not present")
    fn = batch_fn(load_head("depth-tiny").float(), tile=True)
    ours, recorded = [], []
    for x, gt in held_out_frames(8):
        with torch.no_grad():
            ours.append(patch_pattern(fn(x)["out"][0].numpy()))
        recorded.append(patch_pattern(gt))
    assert np.mean(ours) < 0.025 and np.mean(recorded) < 0.01, (ours, recorded)

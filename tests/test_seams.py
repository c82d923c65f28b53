"""Sliding windows without seams: windows that disagree are blended and levelled, the seam figure says
so, and the default path is as accurate as the plain average it replaced."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def two_window_levels(t: torch.Tensor) -> torch.Tensor:
    """A head that sees a flat scene 1.5x deeper in every window that starts past column or row 30."""
    first = t[:, :2, :1, :1].amax(1)  # the window's first column or row index, whichever is larger
    return 2.0 * torch.where(first > 30, 1.5, 1.0) * torch.ones_like(t[:, 0])


@pytest.mark.parametrize("h, w", [(64, 126), (126, 64)], ids=["side by side", "one above the other"])
def test_windows_that_overlap_by_two_pixels_are_still_levelled(h, w):
    """Two 64-pixel windows 62 apart share a band two pixels wide: enough to bring them to one level."""
    out = sliding_window(two_window_levels, coordinates(h, w), 64, stride=62, align_scale=True)[0]
    assert float(out.max() / out.min()) < 1.01, f"two levels left: {float(out.min())} and {float(out.max())}"


def test_windows_that_do_not_overlap_keep_their_own_levels():
    """Windows side by side with nothing in common (the stride is the crop): no overlap says how to level them,
    so each keeps its own, as without levelling, for every image of the batch."""
    x = coordinates(64, 128).expand(2, -1, -1, -1)
    levelled = sliding_window(two_window_levels, x, 64, stride=64, align_scale=True)
    assert torch.equal(levelled, sliding_window(two_window_levels, x, 64, stride=64))
    assert levelled.shape == (2, 64, 128) and set(levelled.unique().tolist()) == {2.0, 3.0}


def test_depths_under_a_metre_are_levelled_like_any_other():
    """A close-up (0.4-0.7 m, or a head that outputs relative depth): the windows come out at one level too."""
    x = coordinates(240, 320)
    out = sliding_window(lambda t: 0.2 * windows_at_their_own_level(t), x, 128, align_scale=True)[0]
    ratio = out / (0.2 * scene(x[0, 0], x[0, 1]))
    assert float(ratio.std() / ratio.mean()) < 1e-3, float(ratio.std() / ratio.mean())


def test_an_image_one_pixel_larger_than_a_window_has_a_window_border_one_pixel_in():
    """Two windows, at 0 and at 1: each begins or ends inside the image once; an image the size of one window
    has no border inside it."""
    assert window_borders(257, 256) == [1, 256]
    assert window_borders(256, 256) == []


@pytest.mark.parametrize("h, w, mirrored", [(40, 50, 16), (20, 5, 4), (5, 20, 4), (2, 9, 1), (9, 2, 1)])
def test_the_image_is_mirrored_as_far_as_it_allows(h, w, mirrored):
    """By the pad on every side, or one pixel less than the image's shorter side (a mirror cannot reach
    further): the head sees the image that much larger, and the output is cropped back to the image."""
    from pixio_cli.sliding import reflect_border

    def width_seen(t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t[:, 0], float(t.shape[-1] * 1000 + t.shape[-2]))

    out = reflect_border(width_seen, torch.rand(1, 3, h, w), 16)
    assert out.shape == (1, h, w)
    seen_w, seen_h = divmod(int(out[0, 0, 0]), 1000)
    assert (seen_h, seen_w) == (h + 2 * mirrored, w + 2 * mirrored), "the image was not mirrored as far as it allows"


def test_a_head_with_zero_padding_sees_the_image_continue_past_its_border():
    """A head that pads with zeros (here a 5 x 5 mean) darkens the border of an even image; mirrored first,
    the image continues past its border and the output stays even there."""
    from pixio_cli.sliding import reflect_border

    def mean_with_zero_padding(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 5, stride=1, padding=2, count_include_pad=True)[:, 0]

    x = torch.full((1, 3, 20, 30), 0.5)
    assert float(mean_with_zero_padding(x).min()) < 0.25  # the dark frame, without mirroring
    out = reflect_border(mean_with_zero_padding, x, 16)
    assert torch.allclose(out, torch.full_like(out, 0.5)), f"the border darkens: min {float(out.min())}"


def test_a_windows_own_border_effects_stay_out_of_the_blend():
    """A head far off on the outer 8 pixels of whatever it is given (its own border effects): inside the image,
    where windows overlap by 86 pixels, those pixels (the outer tenth of the overlap) carry (almost) no weight,
    so the blend shows none of it."""
    def off_at_its_border(t: torch.Tensor) -> torch.Tensor:
        out = torch.ones_like(t[:, 0])
        out[:, :8], out[:, -8:], out[:, :, :8], out[:, :, -8:] = 1000.0, 1000.0, 1000.0, 1000.0
        return out

    out = sliding_window(off_at_its_border, torch.rand(1, 3, 480, 640), 256)[0]
    out = out[8:-8, 8:-8]  # the image's own border aside (mirroring is what keeps the head's border off it)
    assert float((out - 1).abs().max()) < 0.01, f"a window's border shows through: {float(out.max())}"


def test_the_blend_stays_on_the_inputs_device():
    """Every weight the blend makes is on the input's device, so a GPU run never mixes in a CPU tensor (checked on
    PyTorch's meta device, which refuses any mix as a GPU does)."""
    x = torch.rand(2, 3, 300, 420, device="meta")
    out = sliding_window(lambda t: t[:, 0] * 2, x, 128)
    assert out.device.type == "meta" and out.shape == (2, 300, 420)


@pytest.mark.parametrize("h, w, rows, cols", [(480, 640, (0, 170, 224), (0, 170, 340, 384)),
                                             (425, 426, (0, 169), (0, 170))])
def test_windows_sit_where_the_official_code_puts_them(h, w, rows, cols):
    """256-pixel windows at the default stride of 2/3 of the crop (170), each run once: on a 480 x 640 image rows
    0, 170 and 224 (the last one ends at the border), columns 0, 170, 340 and 384; where a window at the stride
    ends at the border (426) no other is added, and none reaches past the image (425)."""
    seen = []

    def where(t: torch.Tensor) -> torch.Tensor:
        seen.extend((int(v), int(u)) for u, v in t[:, :2, 0, 0].tolist())
        return t[:, 0]

    sliding_window(where, coordinates(h, w), 256)
    assert sorted(seen) == [(y, x) for y in rows for x in cols], sorted(seen)


def test_a_large_batch_gives_each_image_what_it_gets_alone():
    """Nine images (more than max_batch // 2, so one window per call): each comes out as if run by itself."""
    x = coordinates(64, 126)
    alone = sliding_window(two_window_levels, x, 64)
    batch = sliding_window(two_window_levels, x.expand(9, -1, -1, -1), 64)
    assert torch.allclose(batch, alone.expand(9, -1, -1), atol=1e-6), "the batch changes the blend"


def test_an_image_smaller_than_a_window_comes_back_exactly():
    """Padded at the bottom and right to the window, run, and cropped back: every pixel where it was."""
    x = torch.rand(2, 3, 50, 70)
    out = sliding_window(lambda t: t * 2, x, 128)
    assert out.shape == x.shape and torch.allclose(out, x * 2, atol=1e-6)

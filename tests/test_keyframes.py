"""Keyframes of a long video (heads/recon/keyframes.py): frames that moved enough since the last one kept,
and none of those that stand still."""

from __future__ import annotations

import numpy as np

from heads.recon.keyframes import KeyframeRule, frame_motion, select_keyframes

from .test_recon3d import model_file  # noqa: F401 (the tiny point-map model, a fixture)


def texture(h: int = 240, w: int = 400, seed: int = 0) -> np.ndarray:
    """A random blocky RGB texture with corners to track."""
    import cv2

    small = np.random.default_rng(seed).integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def panning(steps: list[int], seed: int = 0) -> list[np.ndarray]:
    """Frames of a camera panning: each the 320 px window of a wider texture, shifted by ``steps`` pixels."""
    big = texture(seed=seed)
    x, out = 0, []
    for step in steps:
        x += step
        out.append(np.ascontiguousarray(big[:, x:x + 320]))
    return out


def test_motion_is_the_tracked_corners_shift_as_a_fraction_of_the_width():
    import cv2

    a, b = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in panning([0, 16]))
    assert abs(frame_motion(a, b) - 16 / 320) < 0.005
    assert frame_motion(a, a) == 0.0
    other = cv2.cvtColor(np.ascontiguousarray(texture(seed=1)[:, :320]), cv2.COLOR_RGB2GRAY)
    assert frame_motion(a, other) > 0.1  # another view altogether: tracking is lost or far off


def test_standing_frames_are_left_out_and_moving_ones_kept_at_the_rule():
    # 2 px a frame for 20 frames, then 10 frames standing still, then 2 px a frame again
    frames = panning([0] + [2] * 19 + [0] * 10 + [2] * 10)
    kept = select_keyframes(frames, KeyframeRule(motion=9 / 320))  # 9 px: every 5th frame (10 px)
    assert kept[0] == 0
    assert all(not 20 <= i < 30 for i in kept[1:]), kept  # nothing new while the camera stands still
    gaps = np.diff([i for i in kept if i < 20])
    assert set(gaps.tolist()) <= {5}, kept
    assert len(select_keyframes(frames, KeyframeRule(motion=0.0))) == len(frames)  # 0: every frame
    assert select_keyframes([None, *frames[:2]], KeyframeRule(motion=0.5)) == [0, 1]  # unreadable: kept, reported


def test_recon3d_keyframes_runs_on_the_frames_the_rule_keeps(cli, model_file, tmp_path):
    """`pixio recon3d --keyframes X` reconstructs exactly the frames select_keyframes keeps, and says how
    many of how many."""
    import json

    import cv2

    frames = panning([0] + [2] * 11 + [0] * 6)
    folder = tmp_path / "video"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    want = select_keyframes(frames, KeyframeRule(motion=0.03))
    code, out, err = cli(["recon3d", folder, "-o", tmp_path / "s.ply", "--model", model_file, "--keyframes", "0.03",
                          "--no-sfm", "--no-mask", "--edge-rtol", "0", "--json", "-q", "--workers", "0", "--precision", "fp32"])
    assert code == 0, err
    assert f"{len(want)} of {len(frames)} frames kept as keyframes" in err
    assert 2 <= len(want) < len(frames) and json.loads(out.strip().splitlines()[-1])["frames"] == len(want)

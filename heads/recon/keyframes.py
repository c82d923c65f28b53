"""Keyframes of a long video, as SLAM front ends choose them: a frame is kept when the image has moved enough
since the last frame kept (the median displacement of tracked corners), or when tracking is lost; frames
that add nothing (the camera standing still, or creeping) are left out before any model or matching runs."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class KeyframeRule:
    """When a frame is kept."""

    motion: float = 0.05  # median corner displacement since the last keyframe, as a fraction of the image width
    width: int = 320  # frames are compared at this width (grey)
    corners: int = 300  # corners tracked from each keyframe
    min_tracked: float = 0.3  # under this fraction of corners tracked, tracking is lost: a new keyframe


def frame_motion(key: np.ndarray, frame: np.ndarray, rule: KeyframeRule = KeyframeRule()) -> float:
    """Median displacement (as a fraction of the width) of ``key``'s corners tracked into ``frame`` (grey
    uint8 images of one size); infinity when too few can be tracked (another view altogether)."""
    pts = cv2.goodFeaturesToTrack(key, rule.corners, 0.01, 7)
    if pts is None or len(pts) < 10:
        return 0.0 if np.array_equal(key, frame) else float("inf")  # nothing to track: textureless
    moved, status, _ = cv2.calcOpticalFlowPyrLK(key, frame, pts, None, winSize=(21, 21), maxLevel=3)
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(frame, key, moved, None, winSize=(21, 21), maxLevel=3)
    # a corner counts as tracked when it also tracks back to where it was (forward-backward check)
    ok = (status.ravel() == 1) & (status_back.ravel() == 1) & (np.linalg.norm((back - pts).reshape(-1, 2), axis=1) < 1)
    if ok.mean() < rule.min_tracked:
        return float("inf")
    return float(np.median(np.linalg.norm((moved - pts)[ok].reshape(-1, 2), axis=1))) / key.shape[1]


def select_keyframes(frames, rule: KeyframeRule = KeyframeRule()) -> list[int]:
    """Positions of the keyframes among ``frames`` (an iterable of RGB uint8 images, or None for a frame that
    cannot be decoded, which is kept so that its error is reported): the first, then each frame that moved
    at least ``rule.motion`` from the last one kept. Reads each frame once."""
    kept: list[int] = []
    key = None
    for i, image in enumerate(frames):
        if image is None:
            kept.append(i)
            continue
        h, w = image.shape[:2]
        grey = cv2.cvtColor(cv2.resize(image, (rule.width, max(1, round(h * rule.width / w))),
                                       interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
        if key is None or grey.shape != key.shape or frame_motion(key, grey, rule) >= rule.motion:
            kept.append(i)
            key = grey
    return kept

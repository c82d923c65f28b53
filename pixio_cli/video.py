"""Reading videos: the one place OpenCV's ``VideoCapture`` is opened (frame counts, frame rates, frames)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .errors import InputError


# cv2 is imported in the functions, not at the top: a command that reads no video does not pay for it.


def capture(path: str):
    """An open ``cv2.VideoCapture`` of the video ``path`` (the caller releases it); :class:`InputError` when
    OpenCV cannot open it."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open the video")
    return cap


@contextmanager
def opened(path: str) -> Iterator:
    """:func:`capture` of ``path``, released on leaving."""
    cap = capture(path)
    try:
        yield cap
    finally:
        cap.release()


def frames_in(path: str, count_by_reading: bool = False) -> int:
    """How many frames the video holds: the container's count, or (when it gives none, or with
    ``count_by_reading``: it can be off for a short video just written) the frames read to the end."""
    import cv2

    with opened(path) as cap:
        n = 0 if count_by_reading else int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            n = 0
            while cap.grab():  # grab() skips without decoding
                n += 1
    return n


def frame_rate(path: str) -> float:
    """The video's frames per second, 0.0 where the container does not say."""
    import cv2

    with opened(path) as cap:
        return float(cap.get(cv2.CAP_PROP_FPS) or 0.0)


def decode_frame(bgr: np.ndarray) -> np.ndarray:
    """A video frame as OpenCV reads it (BGR) in RGB order, (H, W, 3) uint8."""
    import cv2

    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class FrameReader:
    """Reads frames by number, keeping the last video open so that sequential frames are cheap."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.cap = None
        self.pos = 0

    def read(self, path: str, frame: int) -> np.ndarray:
        """Frame ``frame`` (0-based) of the video ``path``, (H, W, 3) uint8 RGB."""
        if path != self.path or frame < self.pos:
            self.close()
            self.cap, self.path, self.pos = capture(path), path, 0
        while self.pos < frame:
            if not self.cap.grab():
                break
            self.pos += 1
        ok, bgr = self.cap.read()
        if not ok:
            raise InputError(f"{path}: cannot read frame {frame}")
        self.pos += 1
        return decode_frame(bgr)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
        self.cap, self.path = None, None

"""What `pixio depth` writes: per image the depth file, its picture and its point cloud; or, for one
video, a depth video streamed to its file."""

from __future__ import annotations

import io
import math
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from heads.geometry import scale_intrinsics
from pixio_cli.engine import Sample
from pixio_cli.inputs import Item
from pixio_cli import writers
from pixio_cli.writers import EmptyVideo, write_bytes, write_image

from .predict import depth_at
from .visualize import depth_picture, write_point_cloud


@dataclass
class DepthFiles:
    """What each image gives.

    Args:
        fmt: ``png16`` (16-bit PNG in millimetres) or ``npy`` (float32 metres).
        vis: also a coloured picture (``_vis.png``), coloured with ``cmap``, beside the input when ``side_by_side``.
        ply: also a coloured point cloud (``.ply``), through ``camera``.
        camera: the (fx, fy, cx, cy) of a (h, w) image, from the user's ``--fov``/``--fx`` or the head's training
            camera; None where the model predicts the camera itself.
    """

    fmt: str = "png16"
    vis: bool = False
    cmap: str = "turbo"
    side_by_side: bool = False
    ply: bool = False
    camera: Callable[[int, int], tuple[float, float, float, float]] | None = None

    @property
    def extras(self) -> list[str]:
        """The suffix of each file an image gets besides its depth file."""
        return (["_vis.png"] if self.vis else []) + ([".ply"] if self.ply else [])


def camera_from(known: dict | None, *, fov: float | None, fx: float | None
                ) -> Callable[[int, int], tuple[float, float, float, float]] | None:
    """(h, w) -> (fx, fy, cx, cy) in pixels: from ``fx`` or the horizontal ``fov`` in degrees (principal point at
    the centre), else the training camera ``known`` (keys width, height, fx, fy, cx, cy) scaled to the image;
    None when there is neither."""
    if fx is None and fov is None and not known:
        return None

    def camera(h: int, w: int) -> tuple[float, float, float, float]:
        f = w / 2 / math.tan(math.radians(fov) / 2) if fx is None and fov is not None else fx
        if f is not None:
            return f, f, w / 2, h / 2
        sx, sy = w / known["width"], h / known["height"]
        return known["fx"] * sx, known["fy"] * sy, known["cx"] * sx, known["cy"] * sy

    return camera


class DepthOutputs:
    """Writes an image's files and records it in the ledger once they are all in place.

    Args:
        dest: the destination ``-o`` names (:class:`pixio_cli.outputs.Destination`).
        files: what each image gives.
        ledger: the run ledger, or None for a single output file.
        on_record: hears of each image's record (its depth file and depth range in metres).
    """

    def __init__(self, dest, files: DepthFiles, *, ledger=None, on_record: Callable[[dict], None] | None = None
                 ) -> None:
        self.dest, self.files, self.ledger, self.on_record = dest, files, ledger, on_record

    def write(self, item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        """Writes one image's files from the engine's output ``out``, then records it."""
        files, path = self.files, self.dest.path(item, self.dest.main)
        h, w = sample.orig_hw
        d = depth_at(out["out"], (h, w))
        if files.fmt == "png16":
            write_image(path, np.clip(d * 1000 + 0.5, 0, 65535).astype(np.uint16))
        else:
            buf = io.BytesIO()
            np.save(buf, d)
            write_bytes(path, buf.getvalue())
        if files.vis or files.ply:
            image = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_LINEAR)
        if files.vis:
            write_image(self.dest.path(item, "_vis.png"),
                        depth_picture(d, cmap=files.cmap, image=image if files.side_by_side else None))
        if files.ply:
            write_point_cloud(self.dest.path(item, ".ply"), d, image, *self._camera(out, sample))
        if self.ledger is not None:
            self.ledger.record_item(item)
        if self.on_record is not None:
            self.on_record({"path": item.label, "output": str(path), "min_m": float(d.min()),
                            "median_m": float(np.median(d)), "max_m": float(d.max())})

    def _camera(self, out: dict[str, torch.Tensor], sample: Sample) -> tuple[float, float, float, float]:
        h, w = sample.orig_hw
        if self.files.camera is None:  # the camera the point-map model predicted
            K = scale_intrinsics(out["K"].numpy(), sample.image.shape[:2], (h, w))
            return K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        return self.files.camera(h, w)

    def done(self, item: Item) -> bool:
        """Whether a rerun may skip ``item``: recorded, and its files still there."""
        return (self.ledger is not None and self.ledger.done_item(item)
                and all(self.dest.path(item, t).exists() for t in [self.dest.main, *self.files.extras]))


class DepthVideo:
    """The depth pictures of one video's frames, encoded to ``output`` on a thread as they come.

    Every frame is coloured over one range (the 1st to 99th percentile of the first ``warmup`` frames), so a
    colour means the same depth throughout. Frames stream to the file: memory and disk do not grow with the
    video's length. ``add`` takes the engine's results in frame order; ``close`` ends the file.
    """

    def __init__(self, output: Path, *, fps: float, cmap: str = "turbo", side_by_side: bool = False,
                 warmup: int = 48) -> None:
        self.output, self.fps, self.cmap, self.side_by_side, self.warmup = output, fps, cmap, side_by_side, warmup
        self.frames: queue.Queue = queue.Queue(maxsize=2 * warmup)
        self.ended = threading.Event()  # the end marker has been taken off the queue
        self.written: list[int] = []
        self.failed: list[BaseException] = []
        self.thread = threading.Thread(target=self._encode, name="pixio-depth-video", daemon=True)
        self.thread.start()

    def add(self, item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        """Queues one frame's depth (at the frame's size) for the video; raises what stopped the writer."""
        if self.failed:  # the writer has stopped: no more frames to predict
            raise self.failed[0]
        h, w = sample.orig_hw
        image = cv2.resize(sample.image, (w, h)) if self.side_by_side else None
        self.frames.put((depth_at(out["out"], (h, w)), image))

    def close(self) -> None:
        """Ends the file (once every frame added is in it); what stopped the writer, if anything did, is in
        ``failed``."""
        self.frames.put(None)
        self.thread.join()

    def _take(self):
        got = self.frames.get()
        if got is None:
            self.ended.set()
        return got

    def _pictures(self) -> Iterator[np.ndarray]:
        first = []
        while len(first) < self.warmup and (got := self._take()) is not None:
            first.append(got)
        if not first:
            return
        sample = np.concatenate([d[:: max(1, d.shape[0] // 64), :: max(1, d.shape[1] // 64)].ravel() for d, _ in first])
        lo, hi = float(np.percentile(sample, 1)), float(np.percentile(sample, 99))
        for d, image in first:
            yield depth_picture(d, lo, hi=hi, cmap=self.cmap, image=image)
        if got is not None:
            while (got := self._take()) is not None:
                yield depth_picture(got[0], lo, hi=hi, cmap=self.cmap, image=got[1])

    def _encode(self) -> None:
        try:
            # through the module, looked up when the video starts (a test stands a full disk in for it)
            self.written.append(writers.write_video(self.output, self._pictures(), self.fps))
        except EmptyVideo:  # every frame failed: they are reported, and no file is made
            pass
        except BaseException as e:  # handed to the main thread
            self.failed.append(e)
            while not self.ended.is_set():  # let the producer finish, up to the end marker (once)
                self._take()

"""The views of a scene: the inputs decoded at one processing size into the workspace, with their names as
the cameras files give them, their original sizes and what is known of them (intrinsics, given cameras,
depth at the processing size)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from pixio_cli.errors import UsageError
from pixio_cli.images import resize_image

from heads.recon.chunks import KeptChunks
from heads.recon.known_cameras import read_known_cameras
from heads.recon.known_depth import read_depth
from heads.recon.workspace import active


@dataclass
class SceneInputs:
    """What the scene is made of: the inputs in order (failed ones included) and what is known of them."""

    items: list  # pixio_cli.inputs.Item
    Ks: Optional[list] = None  # one K (original pixels) per item
    depth_files: Optional[list] = None  # one known-depth file (or None) per item
    depth_scale: Optional[float] = None  # stored depth values per metre
    known_cameras: object = None  # a cameras.json or COLMAP model (Path), or heads.recon.known_cameras.GivenCameras: no mapping
    prior_K: Optional[np.ndarray] = None  # a first guess at every frame's K (original pixels), which matching fits

    def keep(self, positions: list[int]) -> "SceneInputs":
        """The inputs at ``positions`` (in order), with what is known of each."""
        pick = lambda xs: [xs[i] for i in positions] if xs is not None else None  # noqa: E731
        return SceneInputs(pick(self.items), pick(self.Ks), depth_files=pick(self.depth_files),
                           depth_scale=self.depth_scale, known_cameras=self.known_cameras, prior_K=self.prior_K)



class Views:
    """The decoded views at one processing size (``frames``, (V, H, W, 3) uint8), which inputs they are,
    their names, sizes and known cameras."""

    def __init__(self, items: list, indices: list[int], frames: np.ndarray, sizes: list, inputs: SceneInputs) -> None:
        self.indices = indices  # the views' positions among the inputs
        self.frames = frames
        self.items = [items[i] for i in indices]
        self.names = [it.label for it in self.items]
        self.sizes = sizes  # each view's original (h, w)
        self.known = [inputs.Ks[i] for i in indices] if inputs.Ks is not None else None
        self.root, self.image_names = image_names(self.items)
        self.given = None
        if inputs.known_cameras is not None:  # the user's cameras; their K goes to the network as --intrinsics would
            self.given = read_known_cameras(inputs.known_cameras, self.image_names, self.sizes)
            self.known = list(self.given.K)
        self.parts: KeptChunks = KeptChunks(None, {})  # chunks kept beside --save-predictions, set when predicting
        self.depth_report: Optional[dict] = None  # known depth given to the model as an input, when it was

    @classmethod
    def decode(cls, items: list, batches, inputs: SceneInputs) -> Optional["Views"]:
        """The views ``batches`` decode (failures left out), each written into one array of the workspace as
        it comes, so that no list of images is held; None when none could be decoded."""
        frames, sizes, ws = None, {}, active()
        for batch in batches:
            for s in batch.samples:
                if frames is None:
                    frames = ws.array("frames", (len(items),) + s.image.shape, np.uint8)
                frames[s.index] = at_size(s.image, frames.shape[1:3], items[s.index].label)
                sizes[s.index] = s.orig_hw
                ws.tick()
        if frames is None:
            return None
        indices = sorted(sizes)
        for k, i in enumerate(indices):  # decoded views to the front, in order (i >= k: nothing overwritten)
            if i != k:
                frames[k] = frames[i]
        return cls(items, indices, frames[:len(indices)], sizes=[sizes[i] for i in indices], inputs=inputs)


def at_size(image: np.ndarray, hw: tuple[int, int], label: str) -> np.ndarray:
    """A frame at the processing size ``hw`` (the first frame's): one of the same aspect (within 5 %) is
    resized to it, another refused."""

    h, w = hw
    if image.shape[:2] == (h, w):
        return image
    if abs((image.shape[1] / image.shape[0]) / (w / h) - 1) > 0.05:
        raise UsageError(f"{label} is processed at {image.shape[1]}x{image.shape[0]} but the first frame at "
                         f"{w}x{h}: the views of one scene must share an aspect ratio (within 5 %)")
    return resize_image(image, (h, w))


def image_names(items: list) -> tuple[str, list[str]]:
    """The folder the frames lie in and each frame's name relative to it, as COLMAP and the cameras
    file name images (COLMAP, given that folder, finds every one); a video's frames are <video>#frame<N>."""

    paths = [os.path.abspath(it.path) for it in items]
    root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    names = [os.path.relpath(p, root) + (f"#frame{it.frame}" if it.frame is not None else "")
             for p, it in zip(paths, items)]
    return root, names


def depth_at_size(files: list, indices: list[int], sizes: list, per_metre, hw: tuple[int, int]) -> list:
    """Each view's known depth (None where it has none) at the processing size ``hw`` (nearest: no mixing
    across edges), in metres, for a model that takes depth as an input."""


    out = []
    for i, size in zip(indices, sizes):
        f = files[i]
        out.append(None if f is None else cv2.resize(read_depth(f, size, per_metre), (hw[1], hw[0]),
                                                     interpolation=cv2.INTER_NEAREST))
    return out

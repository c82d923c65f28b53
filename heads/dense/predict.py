"""The one inference path of the dense heads, shared by `pixio depth|segment` and `pixio evaluate`.

Images are brought to the head's training scale (or ``--resize``), predicted
with sliding windows of the head's crop size blended without seams (or one
whole-image pass), and the prediction is resized to the original image. What
`pixio evaluate` measures is what `pixio depth` writes by default.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pixio_cli.engine import Engine
from pixio_cli.errors import UsageError
from pixio_cli.images import ResizePolicy
from pixio_cli.sliding import reflect_border, sliding_window

from heads.dense.model import DenseModel, load_head


def load_dense(engine: Engine, source: str, task: str) -> DenseModel:
    """A head checkpoint of ``task`` on the engine's device (for depth, also a point-map model)."""
    # here, not at the top: the one import of heads/pointmap/ from heads/dense/, made only for a point-map model
    from heads.pointmap.checkpoint import is_pointmap_source, load_pointmap, prepare_pointmap
    from heads.pointmap.depth import PointMapDepth

    if is_pointmap_source(source):
        if task != "depth":
            raise UsageError(f"{source} is a point-map model: it predicts depth, not {task}")
        model = prepare_pointmap(engine, load_pointmap(source))
        return PointMapDepth(model)  # type: ignore[return-value]
    net = load_head(source)
    if net.cfg.task != task:
        raise UsageError(f"{source} is a {net.cfg.task} head, not a {task} head")
    return engine.prepare(net)


def batch_fn(model: DenseModel, tile: bool = True) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Depth in metres or class probabilities at the input's resolution: sliding windows of the head's
    crop (stride 2/3 of it) blended without seams, each window's depth level aligned to its neighbours'
    (:func:`pixio_cli.sliding.sliding_window`), with ``tile``; else one whole-image pass. For depth, either
    way, the image is first mirrored outwards by one patch, so its borders are predicted like its inside
    (no frame); class maps are not (mirroring measured slightly worse on CamVid)."""
    seg = model.cfg.task == "segment"
    if getattr(model, "whole_image", False):
        return model.outputs  # type: ignore[attr-defined]

    def run(x: torch.Tensor) -> torch.Tensor:
        out = model(x).float()
        return out.softmax(1) if seg else out

    def windows(x: torch.Tensor) -> torch.Tensor:
        return sliding_window(run, x, model.cfg.crop, align_scale=not seg) if tile else run(x)

    pad = 0 if seg else getattr(getattr(model, "encoder", None), "patch_size", 16)

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": reflect_border(windows, x, pad)}

    return fn


def default_policy(resize: str | None, model: DenseModel) -> ResizePolicy:
    """``--resize`` when given; else the scale the head was trained at (the short side of its training
    images, at least its crop)."""
    if resize:
        return ResizePolicy.parse(resize)
    return ResizePolicy(short=max(model.cfg.crop, model.cfg.infer_short or 0))


def depth_at(depth: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """A (h, w) depth map resized (bilinear) to the original image's (H, W), float32 metres."""
    d = depth.numpy().astype(np.float32)
    if d.shape == tuple(hw):
        return d
    return cv2.resize(d, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def labels_at(probs: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """Class ids (uint8) at the original image's (H, W) from (C, h, w) probabilities (bilinear, then argmax)."""
    if probs.shape[-2:] != tuple(hw):
        probs = F.interpolate(probs[None], size=tuple(hw), mode="bilinear", align_corners=False)[0]
    return probs.argmax(0).numpy().astype(np.uint8)

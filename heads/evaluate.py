"""Evaluation with the official protocol: sliding windows over the whole image, metrics over the set."""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from pixio_cli.engine import autocast
from pixio_cli.images import read_image
from pixio_cli.sliding import sliding_window

from .datasets import IGNORE, Layout, normalise
from .metrics import ConfusionMatrix, DepthMeter
from .model import DenseModel


@torch.no_grad()
def evaluate(model: DenseModel, layout: Layout, device: torch.device, dtype: torch.dtype = torch.float32,
             progress: bool | None = None, limit: int | None = None) -> dict:
    """Depth metrics averaged per image, or mIoU from the summed confusion matrix."""
    cfg = model.cfg
    model.eval()
    if cfg.task == "depth":
        meter = DepthMeter(cfg.min_depth, cfg.max_depth)
    else:
        meter = ConfusionMatrix(cfg.n_out, IGNORE)
    pairs = layout.pairs[:limit] if limit else layout.pairs
    for img_path, target_path in tqdm(pairs, desc="evaluate", file=sys.stderr, disable=progress is False or None):
        img = read_image(img_path)
        target = torch.from_numpy(layout.read_target(target_path)).to(device)
        x = normalise(img)[None].to(device)

        def fn(w: torch.Tensor) -> torch.Tensor:
            with autocast(device, dtype):
                out = model(w)
            return out.float() if cfg.task == "depth" else out.float().softmax(1)

        pred = sliding_window(fn, x, cfg.crop)[0]
        if pred.shape[-2:] != target.shape:
            target = torch.nn.functional.interpolate(target[None, None].float(), size=pred.shape[-2:],
                                                     mode="nearest")[0, 0].to(target.dtype)
        if cfg.task == "depth":
            valid = None
            if layout.crop_box is not None:
                t, b, l, r = layout.crop_box
                valid = torch.zeros_like(target, dtype=torch.bool)
                valid[t:b, l:r] = True
            meter.update(pred, target, valid)
        else:
            meter.update(pred.argmax(0), target)
    return meter.result() if cfg.task == "depth" else meter.result(cfg.classes)


def baseline(layout_train: Layout, layout_val: Layout, task: str, min_depth: float, max_depth: float,
             n_classes: int) -> dict:
    """The trivial baselines: the training-set mean depth everywhere, or the majority class everywhere."""
    if task == "depth":
        vals = []
        for _, t in layout_train.pairs:
            d = layout_train.read_target(t)
            vals.append(d[(d > min_depth) & (d < max_depth)])
        mean = float(np.concatenate(vals).mean())
        meter = DepthMeter(min_depth, max_depth)
        for _, t in layout_val.pairs:
            gt = torch.from_numpy(layout_val.read_target(t))
            meter.update(torch.full_like(gt, mean), gt)
        return {"mean_depth": mean, **meter.result()}
    counts = np.zeros(256, np.int64)
    for _, t in layout_train.pairs:
        counts += np.bincount(layout_train.read_target(t).ravel(), minlength=256)
    counts[IGNORE] = 0
    majority = int(counts[:n_classes].argmax())
    cm = ConfusionMatrix(n_classes, IGNORE)
    for _, t in layout_val.pairs:
        gt = torch.from_numpy(layout_val.read_target(t))
        cm.update(torch.full_like(gt, majority), gt)
    return {"majority_class": majority, **cm.result(layout_train.classes)}

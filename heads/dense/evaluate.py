"""Evaluation with the official protocol: sliding windows (blended without seams), metrics over the whole
split, and the seam figure of what was predicted."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pixio_cli.engine import Engine, Sample
from pixio_cli.errors import InputError, UsageError
from pixio_cli.inputs import Item

from heads.datasets import IGNORE, Layout
from heads.metrics import ConfusionMatrix, DepthMeter, seam_ratio
from heads.dense.model import DenseModel
from heads.dense.predict import batch_fn, default_policy, depth_at, labels_at


def evaluate(model: DenseModel, layout: Layout, engine: Engine, limit: int | None = None) -> dict:
    """Depth metrics averaged per image, or mIoU from the summed confusion matrix.

    Predictions come from the same path as `pixio depth|segment` by default
    (:mod:`heads.dense.predict`): the head's training scale, sliding windows of its
    crop, resized to the original image; the target is compared at its size.
    """
    cfg = model.cfg
    if cfg.task == "segment" and layout.classes is not None and len(layout.classes) != cfg.n_out:
        raise UsageError(f"the head predicts {cfg.n_out} classes, but the dataset has {len(layout.classes)}: "
                         "evaluate it on the data (and class list) it was trained for")
    model.eval()  # the caller decides whether to freeze and cast it (the numbers are the same either way)
    meter = DepthMeter(cfg.min_depth, cfg.max_depth) if cfg.task == "depth" else ConfusionMatrix(cfg.n_out, IGNORE)
    pairs = layout.pairs[:limit] if limit else layout.pairs
    items = [Item(str(img), str(i)) for i, (img, _) in enumerate(pairs)]
    seams: list[float] = []

    def score(item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        seam = seam_ratio(out["out"].numpy(), cfg.crop)  # at the processing size, where the windows were
        if np.isfinite(seam):
            seams.append(seam)
        target = layout.read_target(pairs[int(item.key)][1])
        if target.shape != tuple(sample.orig_hw):  # two sensors: compare at the image's size
            target = cv2.resize(target, (sample.orig_hw[1], sample.orig_hw[0]), interpolation=cv2.INTER_NEAREST)
        target = torch.from_numpy(target)
        if cfg.task == "depth":
            meter.update(torch.from_numpy(depth_at(out["out"], sample.orig_hw)), target, _scored(layout, target))
        else:
            meter.update(torch.from_numpy(labels_at(out["out"], sample.orig_hw)).long(), target)

    summary = engine.run(items, default_policy(None, model), batch_fn(model, tile=True), score, desc="evaluate")
    if summary.failures:
        label, reason = summary.failures[0]
        raise InputError(f"{summary.failed} image(s) of the split cannot be read, so the metrics would leave them "
                         f"out (first: {reason}); fix or remove them")
    if cfg.task == "depth" and meter.n == 0:
        raise InputError(f"no target of the {len(pairs)} image(s) has a valid depth (between {cfg.min_depth:g} and "
                         f"{cfg.max_depth:g} m): nothing to score; check the depth scale and the targets")
    result = meter.result() if cfg.task == "depth" else meter.result(cfg.classes)
    # mean over images of the step across window borders / the median step (1.0: no seam; NaN: one window)
    result["seam"] = float(np.mean(seams)) if seams else float("nan")
    return result


def _scored(layout: Layout, target: torch.Tensor) -> torch.Tensor | None:
    """The pixels the benchmark scores: the layout's evaluation crop (KITTI's, NYUv2's), else all."""
    if layout.crop_box is None:
        return None
    t, b, l, r = layout.crop_box
    valid = torch.zeros_like(target, dtype=torch.bool)
    valid[t:b, l:r] = True
    return valid


def baseline(layout_train: Layout, layout_val: Layout, task: str, min_depth: float, max_depth: float,
             n_classes: int, limit: int | None = None, train_sample: int = 500) -> dict:
    """The trivial baselines: the training-set mean depth everywhere, or the majority class everywhere,
    scored on the same (at most ``limit``) val images as :func:`evaluate`.

    The mean or the majority is read from at most ``train_sample`` training targets, evenly spaced over the
    split, so that a large training set costs seconds, not a pass over it.
    """
    val_pairs = layout_val.pairs[:limit] if limit else layout_val.pairs
    step = max(1, -(-len(layout_train.pairs) // train_sample))
    train_pairs = layout_train.pairs[::step]
    if task == "depth":
        vals = []
        for _, t in train_pairs:
            d = layout_train.read_target(t)
            vals.append(d[(d > min_depth) & (d < max_depth)])
        if not sum(v.size for v in vals):
            raise InputError(f"no training target has a valid depth (between {min_depth:g} and {max_depth:g} m); "
                             "check the depth scale and the targets")
        mean = float(np.concatenate(vals).mean())
        meter = DepthMeter(min_depth, max_depth)
        for _, t in val_pairs:
            gt = torch.from_numpy(layout_val.read_target(t))
            meter.update(torch.full_like(gt, mean), gt, _scored(layout_val, gt))
        return {"mean_depth": mean, "train_targets": len(train_pairs), **meter.result()}
    counts = np.zeros(256, np.int64)
    for _, t in train_pairs:
        counts += np.bincount(layout_train.read_target(t).ravel(), minlength=256)
    counts[IGNORE] = 0
    majority = int(counts[:n_classes].argmax())
    cm = ConfusionMatrix(n_classes, IGNORE)
    for _, t in val_pairs:
        gt = torch.from_numpy(layout_val.read_target(t))
        cm.update(torch.full_like(gt, majority), gt)
    return {"majority_class": majority, "train_targets": len(train_pairs), **cm.result(layout_train.classes)}

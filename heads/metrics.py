"""Depth and segmentation metrics of the official protocol."""

from __future__ import annotations

import numpy as np
import torch

DEPTH_METRICS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """Metrics of one image over its valid pixels (1-D tensors of predicted and true depth, metres)."""
    pred, gt = pred.double(), gt.double()
    ratio = torch.maximum(gt / pred, pred / gt)
    diff, diff_log = pred - gt, torch.log(pred) - torch.log(gt)
    return {
        "d1": (ratio < 1.25).double().mean().item(),
        "d2": (ratio < 1.25 ** 2).double().mean().item(),
        "d3": (ratio < 1.25 ** 3).double().mean().item(),
        "abs_rel": (diff.abs() / gt).mean().item(),
        "sq_rel": (diff ** 2 / gt).mean().item(),
        "rmse": diff.pow(2).mean().sqrt().item(),
        "rmse_log": diff_log.pow(2).mean().sqrt().item(),
        "log10": (torch.log10(pred) - torch.log10(gt)).abs().mean().item(),
        "silog": (diff_log.pow(2).mean() - 0.5 * diff_log.mean() ** 2).sqrt().item(),
    }


class DepthMeter:
    """Per-image metrics over valid pixels (min_depth < gt < max_depth), averaged over images."""

    def __init__(self, min_depth: float, max_depth: float) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.sums = dict.fromkeys(DEPTH_METRICS, 0.0)
        self.n = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        mask = (gt > self.min_depth) & (gt < self.max_depth)
        if valid is not None:
            mask &= valid
        if mask.sum() == 0:
            return
        p = pred[mask].clamp(self.min_depth, self.max_depth)
        for k, v in depth_metrics(p, gt[mask]).items():
            self.sums[k] += v
        self.n += 1

    def result(self) -> dict[str, float]:
        return {k: v / max(1, self.n) for k, v in self.sums.items()} | {"images": self.n}


class ConfusionMatrix:
    """Class confusion summed over the whole set; IoU = I / (U + 1e-6), pixels at ``ignore`` skipped."""

    def __init__(self, n_classes: int, ignore: int = 255) -> None:
        self.n, self.ignore = n_classes, ignore
        self.mat = np.zeros((n_classes, n_classes), np.int64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        keep = gt != self.ignore
        idx = gt[keep].long() * self.n + pred[keep].long()
        self.mat += torch.bincount(idx.flatten().cpu(), minlength=self.n * self.n).reshape(self.n, self.n).numpy()

    def iou(self) -> np.ndarray:
        inter = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - inter
        return inter / (union + 1e-6)

    def result(self, classes: list[str] | None = None) -> dict:
        iou = self.iou()
        total = self.mat.sum()
        out = {"miou": float(iou.mean()), "pixel_acc": float(np.diag(self.mat).sum() / max(1, total))}
        names = classes or [str(i) for i in range(self.n)]
        out["iou"] = {n: float(v) for n, v in zip(names, iou)}
        return out

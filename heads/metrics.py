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
        """Adds the per-image metrics of ``pred`` against ``gt`` (metres), over valid pixels in the depth range."""
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
        """Each metric averaged over the images, and their count."""
        return {k: v / max(1, self.n) for k, v in self.sums.items()} | {"images": self.n}


class ConfusionMatrix:
    """Class confusion summed over the whole set; IoU = I / (U + 1e-6), pixels at ``ignore`` skipped."""

    def __init__(self, n_classes: int, ignore: int = 255) -> None:
        self.n, self.ignore = n_classes, ignore
        self.mat = np.zeros((n_classes, n_classes), np.int64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Counts ``pred`` against ``gt`` (class indices), leaving out ignored pixels."""
        keep = gt != self.ignore
        idx = gt[keep].long() * self.n + pred[keep].long()
        self.mat += torch.bincount(idx.flatten().cpu(), minlength=self.n * self.n).reshape(self.n, self.n).numpy()

    def iou(self) -> np.ndarray:
        """(n,) intersection over union of each class."""
        inter = np.diag(self.mat).astype(np.float64)
        union = self.mat.sum(0) + self.mat.sum(1) - inter
        return inter / (union + 1e-6)

    def result(self, classes: list[str] | None = None) -> dict:
        """mIoU, pixel accuracy and the IoU of each class (named by ``classes``)."""
        iou = self.iou()
        total = self.mat.sum()
        out = {"miou": float(iou.mean()), "pixel_acc": float(np.diag(self.mat).sum() / max(1, total))}
        names = classes or [str(i) for i in range(self.n)]
        out["iou"] = {n: float(v) for n, v in zip(names, iou)}
        return out


# ---------------------------------------------------------------------------- multi-view point maps


def relative_error(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """Mean of |pred - gt| / |gt| over valid pixels with |gt| > 0 (vectors (..., 3) or scalars (...))."""
    gt = gt[..., None] if gt.ndim == mask.ndim else gt
    pred = pred[..., None] if pred.ndim == mask.ndim else pred
    gn = np.linalg.norm(gt, axis=-1)
    keep = mask & (gn > 0)
    if not keep.any():
        return float("nan")
    return float((np.linalg.norm(pred - gt, axis=-1)[keep] / gn[keep]).mean())


def inlier_ratio(gt: np.ndarray, pred: np.ndarray, mask: np.ndarray, threshold: float = 1.03) -> float:
    """Share of valid pixels with max(|gt|/|pred|, |pred|/|gt|) < threshold (a zero prediction is an
    outlier), as MapAnything's ``thresh_inliers``."""
    gt = gt[..., None] if gt.ndim == mask.ndim else gt
    pred = pred[..., None] if pred.ndim == mask.ndim else pred
    gn, pn = np.linalg.norm(gt, axis=-1), np.linalg.norm(pred, axis=-1)
    keep = mask & (gn > 0)
    if not keep.any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(np.where(pn > 0, gn / pn, np.inf), pn / gn)
    return float((ratio[keep] < threshold).mean())


def pose_auc(rot_err: np.ndarray, trans_err: np.ndarray, max_threshold: int = 5) -> float:
    """AUC (percent) of max(rotation, translation-direction) error over 1-degree bins up to
    ``max_threshold`` degrees, as MapAnything's ``calculate_auc_np``."""
    err = np.maximum(rot_err, trans_err)
    hist, _ = np.histogram(err, bins=np.arange(max_threshold + 1))
    return float(np.mean(np.cumsum(hist / len(err))) * 100)


def ate_rmse(pred_centres: np.ndarray, gt_centres: np.ndarray) -> float:
    """RMSE of camera centres (V, 3) after a Sim(3) Umeyama alignment of the prediction to the truth."""
    from heads.geometry import umeyama

    if len(gt_centres) < 3:  # one or two cameras: the similarity aligns them exactly
        return 0.0
    s, R, t = umeyama(pred_centres, gt_centres, with_scale=True)
    aligned = s * pred_centres @ R.T + t
    return float(np.sqrt(((aligned - gt_centres) ** 2).sum(1).mean()))


def pointmap_metrics(pred: dict, gt: dict, valid: np.ndarray) -> dict[str, float]:
    """MapAnything's dense multi-view metrics of one set of views, plus AUC@30 and ATE.

    ``pred`` and ``gt`` hold ``pts3d`` (V, H, W, 3) in view 0's frame, ``pts3d_cam`` (V, H, W, 3) in
    each camera's frame and ``cam2world`` (V, 4, 4) relative to view 0; ``valid`` (V, H, W) marks
    pixels with ground truth. As the benchmark defines them: each side is divided by its own mean
    point norm over valid pixels (the points, the camera-frame points and the translations);
    points and z-depth relative error and inlier ratio at 1.03, averaged over views; pose AUC@5
    (and @30) over all view pairs from max(rotation, translation-direction) error; ``scale_rel`` =
    |s_pred - s_gt| / s_gt of the two normalisation factors (metric predictions only); ATE is the
    RMSE of the normalised camera centres after Sim(3) alignment.
    """
    from heads.geometry import mean_norm, relative_pose_errors

    views = range(len(valid))
    s_gt = mean_norm(list(gt["pts3d"]), list(valid))
    s_pr = mean_norm(list(pred["pts3d"]), list(valid))
    if s_gt <= 0 or s_pr <= 0:
        raise ValueError("no valid pixel with a non-zero point: the metrics are undefined")
    g_pts, p_pts = gt["pts3d"] / s_gt, pred["pts3d"] / s_pr
    g_z, p_z = gt["pts3d_cam"][..., 2] / s_gt, pred["pts3d_cam"][..., 2] / s_pr
    g_pose, p_pose = np.array(gt["cam2world"], np.float64), np.array(pred["cam2world"], np.float64)
    g_pose[:, :3, 3] /= s_gt
    p_pose[:, :3, 3] /= s_pr
    out = {
        "points_rel": float(np.mean([relative_error(g_pts[v], p_pts[v], valid[v]) for v in views])),
        "points_tau": 100 * float(np.mean([inlier_ratio(g_pts[v], p_pts[v], valid[v]) for v in views])),
        "depth_rel": float(np.mean([relative_error(g_z[v], p_z[v], valid[v]) for v in views])),
        "depth_tau": 100 * float(np.mean([inlier_ratio(g_z[v], p_z[v], valid[v]) for v in views])),
    }
    if len(valid) > 1:
        r_err, t_err = relative_pose_errors(p_pose, g_pose)
        out["pose_auc5"] = pose_auc(r_err, t_err, 5)
        out["pose_auc30"] = pose_auc(r_err, t_err, 30)
        out["ate"] = ate_rmse(p_pose[:, :3, 3], g_pose[:, :3, 3])
    if pred.get("metric", False):
        out["scale_rel"] = abs(s_pr - s_gt) / s_gt
    return out


def camera_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """How well camera-to-world poses (V, 4, 4) match the truth, whatever the frame and scale of each:
    ATE (mean and RMSE of the camera-centre error after a similarity alignment, in the truth's units),
    the similarity's scale (1.0: the prediction is in the truth's units), the mean error of the relative
    rotation of every pair (degrees) and pose AUC@5 / @30 over the pairs (MapAnything's)."""
    from heads.geometry import relative_pose_errors, umeyama

    s, R, t = umeyama(pred[:, :3, 3], gt[:, :3, 3], with_scale=True)
    err = np.linalg.norm(s * pred[:, :3, 3] @ R.T + t - gt[:, :3, 3], axis=1)
    rot, trans = relative_pose_errors(pred, gt)
    return {"ate_mean": float(err.mean()), "ate_rmse": float(np.sqrt((err ** 2).mean())), "scale": float(s),
            "rotation_error_deg": float(rot.mean()), "auc5": pose_auc(rot, trans, 5), "auc30": pose_auc(rot, trans, 30)}


def trivial_cameras(n: int) -> dict[str, np.ndarray]:
    """The cameras a method must beat to show skill, (n, 4, 4) each: every camera at the origin looking
    the same way, and a straight line at constant speed (the alignment picks its direction and speed)."""
    origin = np.tile(np.eye(4), (n, 1, 1))
    line = origin.copy()
    line[:, 0, 3] = np.arange(n)
    return {"origin": origin, "constant_velocity": line}


def seam_ratio(prediction: np.ndarray, crop: int, stride: int | None = None) -> float:
    """How steep the steepest line near each border of the sliding windows is, relative to a typical line.

    ``prediction``: a map (H, W), or maps (C, H, W) such as class probabilities, at the processing size
    where the windows were. A line's step is the mean absolute change between neighbouring columns (or
    rows), summed over channels. For each window border, the steepest step within one overlap (crop -
    stride) of it on either side, where a blend of windows that disagree passes from one to the next,
    over the median step of the whole map; then the mean over borders. A blend that jumps anywhere in
    that band scores high wherever the jump sits; a map with no windows scores what its own edges give
    there (compare with the whole-image pass of the same image). NaN when the map is one window."""
    from pixio_cli.sliding import window_borders

    if crop <= 0:  # no windows (a whole-image model)
        return float("nan")
    stride = stride or max(1, crop * 2 // 3)
    band = max(1, crop - stride)
    d = np.asarray(prediction, np.float64)
    d = d[None] if d.ndim == 2 else d
    cols = np.abs(np.diff(d, axis=2)).sum(0).mean(0)  # step between column c-1 and c, for c = 1..W-1
    rows = np.abs(np.diff(d, axis=1)).sum(0).mean(1)
    typical = float(np.median(np.concatenate([cols, rows])))
    steepest = [steps[max(0, b - 1 - band):b - 1 + band].max(initial=0.0)
                for steps, size in ((cols, d.shape[2]), (rows, d.shape[1])) for b in window_borders(size, crop, stride)]
    if not steepest or typical <= 0:
        return float("nan")
    return float(np.mean(steepest)) / typical

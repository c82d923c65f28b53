"""Scoring a point-map model on multi-view RGB-D sequences: view sets, their ground truth in view 0's
frame, and MapAnything's benchmark metrics averaged over the sets (``pixio evaluate pointmap``)."""

from __future__ import annotations

import numpy as np
import torch

from pixio_cli.errors import InputError

from heads.pointmap.model import PointMapModel
from heads.pointmap.predictions import Predictions, predict



def view_sets(n_frames: int, views: int, gap: int) -> list[list[int]]:
    """Indices of sets of ``views`` frames ``gap`` apart, one set after another without sharing frames."""
    return [[start + j * gap for j in range(views)] for start in range(0, n_frames - (views - 1) * gap, views * gap)]


def ground_truth(depths: list[np.ndarray], Ks: list[np.ndarray], cam2world: list[np.ndarray],
                 image_hw: list[tuple[int, int]], hw: tuple[int, int]) -> tuple[dict, np.ndarray]:
    """Ground truth of one view set at the processing size ``hw``: points in view 0's frame, camera-frame
    points, poses relative to view 0, and the valid mask (depth > 0). ``Ks`` are in the pixels of the
    images, of sizes ``image_hw`` (a depth map may be stored at another size)."""
    import cv2

    from heads.geometry import depth_to_points, relative_to_first, scale_intrinsics, transform

    h, w = hw
    rel = relative_to_first(np.stack(cam2world).astype(np.float64))
    pts_cam, pts, valid = [], [], []
    for d, K, T, size in zip(depths, Ks, rel, image_hw):
        d = cv2.resize(d, (w, h), interpolation=cv2.INTER_NEAREST) if d.shape != (h, w) else d
        cam = depth_to_points(d.astype(np.float64), scale_intrinsics(K, size, hw))
        pts_cam.append(cam)
        pts.append(transform(cam, T))
        valid.append(d > 0)
    return {"pts3d": np.stack(pts), "pts3d_cam": np.stack(pts_cam), "cam2world": rel}, np.stack(valid)


def as_evaluated(pred: Predictions) -> dict:
    """Predictions in view 0's predicted frame, as the metrics take them."""
    from heads.geometry import invert_pose, relative_to_first, transform

    T = pred.cam2world.astype(np.float64)
    to_first = invert_pose(T[0])
    pts = transform(pred.pts3d.astype(np.float64), to_first)
    cam = np.stack([transform(p, invert_pose(t)) for p, t in zip(pred.pts3d.astype(np.float64), T)])
    return {"pts3d": pts, "pts3d_cam": cam, "cam2world": relative_to_first(T), "metric": pred.metric}


def evaluate_pointmap(model: PointMapModel, sequences: list, engine, *, views: int = 4, gap: int = 5,
                      policy=None, limit: int | None = None) -> dict:
    """MapAnything's multi-view metrics (:func:`heads.metrics.pointmap_metrics`) averaged over view sets
    of every sequence, predicted as `pixio recon3d` predicts them."""
    from pixio_cli.engine import autocast
    from pixio_cli.images import ResizePolicy, load_for_model

    from heads.metrics import pointmap_metrics
    from heads.sequences import require_cameras

    import sys

    from tqdm import tqdm

    policy = policy or ResizePolicy(short=model.infer_short)
    require_cameras(sequences)
    sums: dict[str, float] = {}
    n_sets = 0
    total = sum(len(view_sets(len(seq.frames), views, gap)) for seq in sequences)
    bar = tqdm(total=min(total, limit) if limit else total, desc="evaluate pointmap", unit="set", file=sys.stderr,
               disable=None, dynamic_ncols=True)  # a bar in a terminal only
    for seq in sequences:
        for idx in view_sets(len(seq.frames), views, gap):
            if limit is not None and n_sets >= limit:
                break
            bar.update(1)
            frames = [seq.frames[i] for i in idx]
            loaded = [load_for_model(f.image, policy) for f in frames]
            images = [img for img, _ in loaded]
            with torch.inference_mode(), autocast(engine.device, engine.dtype):
                pred = predict(model, engine.to_pixels(images), [str(f.image) for f in frames],
                               [hw for _, hw in loaded])
            gt, valid = ground_truth([seq.read_depth(f) for f in frames], [f.K for f in frames],
                                     cam2world=[f.cam2world for f in frames], image_hw=[size for _, size in loaded],
                                     hw=images[0].shape[:2])
            for k, v in pointmap_metrics(as_evaluated(pred), gt, valid).items():
                sums[k] = sums.get(k, 0.0) + v
            for k, v in baseline_pose_metrics(gt, valid).items():
                sums[k] = sums.get(k, 0.0) + v
            n_sets += 1
    bar.close()
    if not n_sets:
        raise InputError(f"no set of {views} frames {gap} apart in {len(sequences)} sequence(s)")
    return {**{k: v / n_sets for k, v in sums.items()}, "sets": n_sets, "views": views, "gap": gap}


def baseline_pose_metrics(gt: dict, valid: np.ndarray) -> dict[str, float]:
    """Pose AUC@5/@30 and ATE (as :func:`heads.metrics.pointmap_metrics` defines them) of the trivial
    cameras (every one at the origin; a straight line at constant speed) on one view set: what the
    model's pose figures must beat to show skill."""
    from heads.geometry import mean_norm, relative_pose_errors
    from heads.metrics import ate_rmse, pose_auc, trivial_cameras

    if len(valid) < 2:
        return {}
    g_pose = np.array(gt["cam2world"], np.float64)
    g_pose[:, :3, 3] /= mean_norm(list(gt["pts3d"]), list(valid))
    out = {}
    for name, pose in trivial_cameras(len(valid)).items():
        r_err, t_err = relative_pose_errors(pose, g_pose)
        out[f"{name}_pose_auc5"] = pose_auc(r_err, t_err, 5)
        out[f"{name}_pose_auc30"] = pose_auc(r_err, t_err, 30)
        out[f"{name}_ate"] = ate_rmse(pose[:, :3, 3], g_pose[:, :3, 3])
    return out

"""A scene from a point-map model's predictions (:class:`heads.pointmap.predictions.Predictions`): long
sequences in chunks aligned to each other, the network's depth placed on the cameras of matching, views
fused, and the points cleaning keeps. Frames and units as the predictions'."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pixio_cli.errors import UsageError

from heads.geometry import invert_pose, ransac_umeyama, scale_intrinsics, transform
from heads.pointmap.predictions import Predictions
from heads.recon.camera_files import normalised_coordinates
from heads.recon.chunks import corresponding_pixels, points_at_pixels, transformed
from heads.recon.depth_fit import FieldFit, fit_depth_field
from heads.recon.workspace import tick


MIN_OBSERVATIONS = 20  # triangulated points a frame needs for its own depth scale (else the scene's)
MAPPED_BY = 64  # registered frames (evenly spread) whose points map the unregistered ones onto the scene


def on_cameras(pred: Predictions, sfm=None, seed: int = 0, fit: FieldFit | None = FieldFit(),
               measured_views: np.ndarray | None = None, *, in_place: bool = False) -> tuple[Predictions, dict]:
    """The network's depth on the cameras of structure from motion (:class:`heads.recon.camera_files.SfmCameras`), or
    on the network's own cameras when ``sfm`` is None.

    The reconstruction's scale is set so that its triangulated points have the
    network's depths (the median ratio over every observation: metres for a metric
    model); each registered frame's depth is then fitted to its own points (a smooth
    correction field, :func:`heads.recon.depth_fit.fit_depth_field`; with ``fit`` None one
    scale, their median ratio; with under 20 points none) and placed on its refined camera,
    through the camera's own model. Frames the reconstruction left out keep the network's
    camera and depth, mapped onto the rest by a fit over the registered frames'
    points. Frames whose depth was given (``measured_views`` (V,) bool: known depth, in metres) keep it as it
    is: it sets the reconstruction's scale and is not fitted to the points. The world is the first frame's
    camera. Returns the new predictions and
    a report (frames registered, the names of those that were not, scales). ``in_place``: the new predictions
    are written over ``pred``'s arrays (which the caller gives up), so that no copy of the scene is made.
    """
    if sfm is None:
        return _first_frame_world(pred, in_place), {"cameras": "network", "registered": 0, "unregistered": []}
    V, H, W = pred.depth_z.shape
    reg = np.flatnonzero(sfm.registered)
    if len(reg) < 2:
        return _first_frame_world(pred, in_place), {"registered": int(len(reg)),
                                                    "unregistered": list(pred.images), "cameras": "network"}
    scale, n_ratios = _reconstruction_scale(pred, sfm, reg)
    if scale is None:  # no usable points: cameras without depth agreement are no use
        return _first_frame_world(pred, in_place), {
            "registered": int(len(reg)), "unregistered": list(pred.images), "cameras": "network",
            "reason": f"{n_ratios} triangulated points with a depth from the network, too few to set the "
                      "reconstruction's scale"}

    placed = ("pts3d", "depth_z", "cam2world", "K", "K_original")  # what the cameras change; the rest is shared
    refined = pred if in_place else replace(pred, **{name: np.array(getattr(pred, name), copy=True)
                                                     for name in placed})
    unreg = [v for v in range(V) if not sfm.registered[v]]
    if unreg:  # the network's points the unregistered frames will be mapped by, kept before they are replaced
        by = reg if len(reg) <= MAPPED_BY else reg[np.linspace(0, len(reg) - 1, MAPPED_BY).round().astype(int)]
        pairs = corresponding_pixels(pred, pred, [(int(v), int(v)) for v in by], seed=seed)
        network_points = points_at_pixels(pred, list(by), pairs)
    depth_scales, residuals, tracks = np.ones(V), [], [None] * V
    rays_cache: dict[int, np.ndarray] = {}
    for v in reg:
        xy_obs, z_obs = sfm.observations[v]
        if (z_obs > 0).sum() >= MIN_OBSERVATIONS:  # the depths its tracks span, for matching to search
            tracks[v] = tuple(float(q) * scale for q in np.percentile(z_obs[z_obs > 0], [1, 99]))
        oh, ow = pred.original_hw[v]
        uv = (xy_obs + 0.5) * [W / ow, H / oh] - 0.5  # original pixels -> processing pixels
        if measured_views is not None and measured_views[v]:  # measured: the points are fitted to it, not it to them
            field, fitted = np.ones((H, W)), {}
        else:
            field, fitted = fit_depth_field(pred.depth_z[v].astype(np.float64), uv, z_obs * scale,
                                            fit or FieldFit(grid=(1, 1)))
        depth_scales[v] = float(np.median(field))  # the correction's typical size, as one scale would be
        if "residual_after" in fitted:
            residuals.append((fitted["tracks"], fitted["residual_before"], fitted["residual_after"]))
        cam = sfm.cameras[v]
        key = id(cam)
        if key not in rays_cache:
            rays_cache[key] = normalised_coordinates(cam, tuple(sfm.written_hw[v]), (H, W))
        xy = rays_cache[key]
        z = pred.depth_z[v].astype(np.float64) * field
        cam_pts = np.concatenate([xy * z[..., None], z[..., None]], -1)
        T = sfm.cam2world[v].copy()
        T[:3, 3] *= scale
        refined.pts3d[v] = transform(cam_pts, T).astype(np.float32)
        refined.depth_z[v] = z.astype(np.float32)
        refined.cam2world[v] = T.astype(np.float32)
        refined.K_original[v] = sfm.K[v].astype(np.float32)
        refined.K[v] = scale_intrinsics(sfm.K[v], tuple(pred.original_hw[v]), (H, W)).astype(np.float32)
        tick()

    if unreg:  # the network's frame mapped onto the refined one by the frames both hold
        placed_points = points_at_pixels(refined, list(by), pairs)
        ok = np.isfinite(placed_points).all(1)
        s, R, t, _ = ransac_umeyama(network_points[ok], placed_points[ok], with_scale=not pred.metric, seed=seed)
        transformed(refined, s, R, t, in_place=True, views=unreg)  # their arrays still hold the network's
    # the map from the reconstruction's (scaled) frame to the output's, taken before the output frame is made
    to_output = np.eye(4) if sfm.known else invert_pose(refined.cam2world[0].astype(np.float64))
    world = refined if sfm.known else _first_frame_world(refined, True)  # given cameras: the user's frame
    return world, {"registered": int(len(reg)), "unregistered": [pred.images[v] for v in unreg],
                   "cameras": "given" if sfm.known else "sfm",
                   "points": int(sfm.points), "reprojection_error_px": round(float(sfm.reprojection_error), 3),
                   "sfm_scale": float(scale), "depth_scales": [round(float(d), 4) for d in depth_scales],
                   "tracks": tracks,
                   "depth_fit": _fit_report(residuals),
                   "to_output": to_output.tolist()}


def _reconstruction_scale(pred: Predictions, sfm, reg: np.ndarray) -> tuple[float | None, int]:
    """Network units per reconstruction unit: the cameras' own when they are in metres, else the median ratio
    of the network's depth to the triangulated points' over the registered frames ``reg``; None when there are
    too few points. Also the number of points with a depth from the network."""
    ratios = []
    for v in reg:
        xy, z = sfm.observations[v]
        net = _depth_at(pred.depth_z[v], xy, pred.original_hw[v])
        ok = np.isfinite(net) & (net > 0) & (z > 0)
        ratios.append(net[ok] / z[ok])
        tick()
    ratios = np.concatenate(ratios) if ratios else np.zeros(0)
    if sfm.scale is not None:
        return sfm.scale, len(ratios)  # cameras in metres: the network's metres are theirs
    if len(ratios) >= MIN_OBSERVATIONS:
        return float(np.median(ratios)), len(ratios)
    if sfm.known:
        raise UsageError("--known-cameras: the cameras' unit is not said (a cameras.json in metres) and there are "
                         "no triangulated points to set it (a COLMAP model with its points3D)")
    return None, len(ratios)


def _fit_report(residuals: list[tuple[int, float, float]]) -> dict | None:
    """The median over views of their tracks and of how far (in %) their depth was from them before and
    after the fit."""
    if not residuals:
        return None
    n, before, after = np.array(residuals).T
    return {"views": len(residuals), "tracks_per_view": int(np.median(n)),
            "off_before_pct": round(100 * float(np.expm1(np.median(before))), 2),
            "off_after_pct": round(100 * float(np.expm1(np.median(after))), 2)}


def _depth_at(depth: np.ndarray, xy: np.ndarray, original_hw) -> np.ndarray:
    """The depth map (h, w) at original-image pixels ``xy`` (n, 2), nearest pixel (no mixing across edges)."""
    h, w = depth.shape
    u = np.round((xy[:, 0] + 0.5) * w / original_hw[1] - 0.5).astype(np.int64)
    v = np.round((xy[:, 1] + 0.5) * h / original_hw[0] - 0.5).astype(np.int64)
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out = np.full(len(xy), np.nan)
    out[ok] = depth[v[ok], u[ok]]
    return out


def _first_frame_world(pred: Predictions, in_place: bool = False) -> Predictions:
    """``pred`` with the first frame's camera as the world (its cam2world the identity), in its own arrays
    when ``in_place``."""
    T = invert_pose(pred.cam2world[0].astype(np.float64))
    return transformed(pred, 1.0, T[:3, :3], T[:3, 3], in_place=in_place)

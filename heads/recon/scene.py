"""A scene from a point-map model's predictions (:class:`heads.pointmap.predictions.Predictions`): long
sequences in chunks aligned to each other, the network's depth placed on the cameras of matching, views
fused, and the points cleaning keeps. Frames and units as the predictions'."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from pixio_cli.errors import UsageError

from heads.recon.depth_fit import FieldFit, fit_depth_field
from heads.geometry import scale_intrinsics
from heads.pointmap.predictions import Predictions
from heads.recon.workspace import active, each_view, tick


def read_intrinsics(path: str | Path, n_views: int) -> list[np.ndarray]:
    """``--intrinsics FILE``: one 3x3 K (text, .npy or JSON) for every view, or a JSON list of one 3x3 per
    view, in the original images' pixels."""
    import warnings

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns of an empty file: one error line instead
            if path.suffix == ".json":
                data = np.array(json.loads(path.read_text()), dtype=np.float64)
            elif path.suffix == ".npy":
                data = np.load(path, allow_pickle=False).astype(np.float64)
            else:
                data = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError, TypeError, UserWarning) as e:  # TypeError: JSON that is not a list of numbers
        raise UsageError(f"--intrinsics {path}: cannot read it as one 3x3 K or a list of them "
                         f"({str(e).splitlines()[0][:120]})") from None
    if data.shape == (3, 3):
        data = np.repeat(data[None], n_views, axis=0)
    if data.ndim != 3 or data.shape[1:] != (3, 3):
        raise UsageError(f"--intrinsics {path}: expected one 3x3 matrix or a list of 3x3 matrices, got shape "
                         f"{'x'.join(map(str, data.shape))}")
    if len(data) != n_views:
        raise UsageError(f"--intrinsics {path}: {len(data)} matrices for {n_views} images")
    if not np.isfinite(data).all():
        bad = int(np.flatnonzero(~np.isfinite(data).all(axis=(1, 2)))[0])
        raise UsageError(f"--intrinsics {path}: matrix {bad} holds a value that is not a finite number")
    bad = [i for i, k in enumerate(data) if not (k[0, 0] > 0 and k[1, 1] > 0 and np.allclose(k[2], [0, 0, 1]))]
    if bad:
        raise UsageError(f"--intrinsics {path}: matrix {bad[0]} is not a pinhole K (positive fx, fy; last row 0 0 1)")
    return list(data)


@dataclass
class Cleaning:
    """Which points of a scene are kept (each stage optional)."""

    mask: bool = True  # the model's non-ambiguous mask
    conf_percentile: float | None = None  # drop the least confident N % (over all views)
    conf_min: float | None = None  # drop confidence below this
    edge_rtol: float | None = 0.03  # drop pixels on depth discontinuities (relative jump)
    outliers: bool = False  # statistical outlier removal (Open3D)
    voxel: float | None = None  # one point per voxel of this side (scene units)
    max_points: int | None = None  # a random subset of at most this many
    seed: int = 0


def pixel_mask(pred: Predictions, c: Cleaning) -> tuple[np.ndarray, dict[str, int]]:
    """The pixels (V, H, W) the per-pixel stages keep (a finite point in front of its camera, then the
    model's mask, confidence and depth edges, as ``c`` asks) and how many each stage left."""
    from heads.recon.cleaning import depth_edges

    counts = {"pixels": int(pred.mask.size)}
    keep = active().array("keep", pred.mask.shape, bool)
    by_conf = c.conf_percentile or c.conf_min is not None
    above = None
    if c.conf_percentile:  # over all views, from every step-th pixel each way (every pixel up to 4 M of them)
        step = max(1, int(np.sqrt(pred.conf[0].size * len(pred.conf) / 4e6)))
        above = float(np.percentile(np.concatenate([v[::step, ::step].ravel() for v in pred.conf]),
                                    c.conf_percentile))
    stages = {"after_mask": c.mask, "after_confidence": by_conf, "after_edges": bool(c.edge_rtol)}
    left = dict.fromkeys((k for k, on in stages.items() if on), 0)
    for v in range(len(keep)):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        k = np.isfinite(pred.pts3d[v]).all(-1) & (pred.depth_z[v] > 0)
        if c.mask:
            k &= pred.mask[v]
            left["after_mask"] += int(k.sum())
        if above is not None:
            k &= pred.conf[v] > above
        if c.conf_min is not None:
            k &= pred.conf[v] >= c.conf_min
        if by_conf:
            left["after_confidence"] += int(k.sum())
        if c.edge_rtol:
            k &= ~depth_edges(pred.depth_z[v], c.edge_rtol)
            left["after_edges"] += int(k.sum())
        keep[v] = k
        tick()
    return keep, counts | left


def clean_points(pred: Predictions, colours: np.ndarray, c: Cleaning, keep: np.ndarray | None = None,
                 counts: dict[str, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """The kept points (N, 3), their colours (N, 3) uint8, where each came from (N, 3: view, x, y in
    the original image's pixels), and how many points each stage left. ``keep`` (V, H, W): the pixels
    to start from (default: :func:`pixel_mask`'s, whose ``counts`` then come along)."""
    from heads.recon.cleaning import statistical_inliers, voxel_representatives

    if keep is None:
        keep, counts = pixel_mask(pred, c)
    counts = dict(counts or {})
    view, y, x, points, cols = [], [], [], [], []
    for v in range(len(keep)):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        ys, xs = np.nonzero(keep[v])
        view.append(np.full(len(ys), v, np.int32))
        y.append(ys.astype(np.int32))
        x.append(xs.astype(np.int32))
        points.append(pred.pts3d[v][ys, xs])
        cols.append(colours[v][ys, xs])
        tick()
    view, y, x, cols = np.concatenate(view), np.concatenate(y), np.concatenate(x), np.concatenate(cols)
    points = np.concatenate(points).astype(np.float64)
    idx = np.arange(len(points))
    if c.outliers and len(idx) > 20:
        idx = idx[statistical_inliers(points[idx])]
        counts["after_outliers"] = len(idx)
    if c.voxel:
        idx = idx[voxel_representatives(points[idx], c.voxel)]
        counts["after_voxel"] = len(idx)
    if c.max_points and len(idx) > c.max_points:
        idx = np.sort(np.random.default_rng(c.seed).choice(idx, c.max_points, replace=False))
        counts["after_max_points"] = len(idx)
    if len(idx) < len(points):
        points, cols, view, y, x = points[idx], cols[idx], view[idx], y[idx], x[idx]
    h, w = pred.pts3d.shape[1:3]
    sy, sx = pred.original_hw[view, 0] / h, pred.original_hw[view, 1] / w
    obs = np.stack([view, (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5], 1)
    return points, cols, obs, counts


def camera_rays(pred: Predictions) -> np.ndarray:
    """Each pixel's normalised coordinates x/z, y/z (V, H, W, 2) in its camera, as its point says (through
    the camera's own model where the points were placed through one); NaN where there is no point."""
    c2w = pred.cam2world.astype(np.float64)
    rays = active().array("rays", pred.pts3d.shape[:3] + (2,), np.float32)  # a view at a time: float64 for one

    def ray(v: int) -> np.ndarray:
        cam = (pred.pts3d[v].astype(np.float64) - c2w[v, :3, 3]) @ c2w[v, :3, :3]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = cam[..., :2] / cam[..., 2:]
        out[~(cam[..., 2] > 0)] = np.nan
        return out

    for v, r in each_view(ray, len(c2w)):
        rays[v] = r
    return rays


def fuse(pred: Predictions, colours: np.ndarray, valid: np.ndarray, f=None, measured: np.ndarray | None = None,
         tracks: list | None = None, *, in_place: bool = False) -> tuple[Predictions, np.ndarray, np.ndarray, dict]:
    """The views' depths found by matching the images ``colours`` (V, H, W, 3) with the predictions' depth as
    the prior, checked against each other and averaged where they agree (:func:`heads.recon.fusion.fuse_views`
    with options ``f``), starting from the ``valid`` pixels; ``tracks``: per view the (near, far) depths of its
    tracks, or None (what matching searches). Returns the predictions with those depths and points; the pixels
    matched or confirmed (what a TSDF should average); of those, the ones to keep as points (each surface
    once); and a report: views checked, the names of those that could not be, the fraction of pixels matching
    found, and the pixels left by the check and by keeping each surface once. ``measured`` (V, H, W) bool:
    pixels whose depth was measured (known depth), which matching does not move. ``in_place``: the fused
    depths and points are written over ``pred``'s arrays (and ``valid`` narrowed), with no copy of them."""
    import cv2

    from heads.recon.fusion import Fusion, fuse_views, world_points

    f = f or Fusion()
    ws = active()
    rays = camera_rays(pred)
    if not in_place:
        valid = valid.copy()
    grays = ws.array("grays", pred.depth_z.shape, np.uint8)
    for v, c in enumerate(colours):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        ray = rays[v]
        valid[v] &= np.isfinite(ray).all(-1)
        rays[v] = np.nan_to_num(ray)
        grays[v] = cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY)
        tick()
    c2w = pred.cam2world.astype(np.float64)
    out = fuse_views(pred.depth_z, rays, cam2world=c2w, K=pred.K.astype(np.float64), valid=valid, grays=grays, f=f,
                     measured=measured, tracks=tracks)
    del grays
    fused = pred if in_place else replace(pred, depth_z=pred.depth_z.astype(np.float32, copy=True),
                                          pts3d=pred.pts3d.astype(np.float32, copy=True))
    def placed(v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(valid[v])
        d = out.depth[v][ys, xs]
        return ys, xs, d, world_points(d.astype(np.float64), rays[v][ys, xs].astype(np.float64), c2w[v])

    for v, (ys, xs, d, points) in each_view(placed, len(fused.depth_z)):  # fused where valid, predicted elsewhere
        fused.depth_z[v, ys, xs] = d
        fused.pts3d[v, ys, xs] = points
    report = {"checked": int(out.checked.sum()),
              "unchecked": [pred.images[v] for v in np.flatnonzero(~out.checked) if valid[v].any()],
              "matched": round(sum(int(m.sum()) for m in out.matched) / max(sum(int(k.sum()) for k in valid), 1), 4),
              "after_views": int(out.keep.sum()), "after_once": int(out.first.sum())}
    return fused, out.keep, out.first, report


# ---------------------------------------------------------------------------- long sequences


def chunk_ranges(n: int, size: int, overlap: int) -> list[list[int]]:
    """View indices of consecutive chunks of ``size`` views, each sharing ``overlap`` views with the one
    before; one chunk when everything fits."""
    if size < 2 or not 0 < overlap < size:
        if n <= size:
            return [list(range(n))]
        raise UsageError(f"--chunk {size} --overlap {overlap}: need chunk >= 2 and 0 < overlap < chunk")
    if n <= size:
        return [list(range(n))]
    out, start = [], 0
    while True:
        end = min(start + size, n)
        out.append(list(range(max(0, end - size), end)))
        if end == n:
            return out
        start = end - overlap


def align_to(scene: Predictions, part: Predictions, shared: list[tuple[int, int]], with_scale: bool,
             max_pairs: int = 20000, seed: int = 0) -> tuple[float, np.ndarray, np.ndarray, int]:
    """(s, R, t, pixel pairs used) mapping ``part``'s frame onto ``scene``'s from the views both hold,
    given as (view in scene, view in part): the same pixel of the same view is a correspondence
    (Umeyama inside RANSAC on the confident ones)."""
    from heads.geometry import ransac_umeyama

    idx = corresponding_pixels(scene, part, shared, max_pairs=max_pairs, seed=seed)
    a, b = _points_at(scene, [i for i, _ in shared], idx), _points_at(part, [j for _, j in shared], idx)
    s, R, t, _ = ransac_umeyama(b, a, with_scale=with_scale, seed=seed)
    return s, R, t, len(idx)


def corresponding_pixels(scene: Predictions, part: Predictions, shared: list[tuple[int, int]], *,
                         max_pairs: int = 20000, seed: int = 0) -> np.ndarray:
    """The pixels :func:`align_to` pairs, as indices into the shared views' pixels laid end to end: both
    finite, in both masks (unless they disagree), of at least the median confidence, at most ``max_pairs``
    drawn with ``seed``. Made a view at a time, with no copy of the views' points."""
    finite = np.concatenate([(np.isfinite(scene.pts3d[i]).all(-1) & np.isfinite(part.pts3d[j]).all(-1)).reshape(-1)
                             for i, j in shared])
    keep = finite & np.concatenate([(scene.mask[i] & part.mask[j]).reshape(-1) for i, j in shared])
    if keep.sum() < 100:  # the masks disagree: fall back on confidence alone
        keep = finite
    conf = np.concatenate([np.minimum(scene.conf[i], part.conf[j]).reshape(-1) for i, j in shared])
    keep &= conf >= np.median(conf[keep])
    idx = np.flatnonzero(keep)
    if len(idx) > max_pairs:
        idx = np.random.default_rng(seed).choice(idx, max_pairs, replace=False)
    return idx


def _points_at(pred: Predictions, views: list[int], idx: np.ndarray) -> np.ndarray:
    """(n, 3): the points of ``views``' pixels laid end to end, at ``idx`` (in its order)."""
    v, pixel = np.divmod(idx, pred.depth_z.shape[1] * pred.depth_z.shape[2])
    out = np.empty((len(idx), 3), pred.pts3d.dtype)
    for k, view in enumerate(views):
        out[v == k] = pred.pts3d[view].reshape(-1, 3)[pixel[v == k]]
    return out


def transformed(pred: Predictions, s: float, R: np.ndarray, t: np.ndarray, *, in_place: bool = False,
                views: list[int] | None = None) -> Predictions:
    """``pred`` with its world mapped by x -> s R x + t (depths scale by s), for every view or only ``views``;
    ``in_place``: in ``pred``'s own arrays, with no copy of the scene."""
    from heads.geometry import apply_sim3_to_poses

    out = pred if in_place else replace(pred, pts3d=pred.pts3d.astype(np.float32, copy=True),
                                        depth_z=pred.depth_z.astype(np.float32, copy=True),
                                        cam2world=pred.cam2world.astype(np.float32, copy=True))
    views = list(range(len(pred.pts3d))) if views is None else list(views)
    for v in views:  # float64 for one view at a time, not for all
        out.pts3d[v] = s * out.pts3d[v].astype(np.float64) @ R.T + t
        out.depth_z[v] = out.depth_z[v] * s
        tick()
    out.cam2world[views] = apply_sim3_to_poses(out.cam2world[views].astype(np.float64), s, R, t)
    return out


def _per_view(pred: Predictions) -> list[str]:
    return [f.name for f in fields(Predictions) if f.name not in ("images", "scale", "metric")
            and getattr(pred, f.name) is not None]


def predict_in_chunks(run, n: int, size: int, overlap: int, done: dict | None = None, on_chunk=None,
                      seed: int = 0) -> tuple[Predictions, list[dict]]:
    """One scene from ``run(view_indices) -> Predictions`` over chunks of the sequence, each aligned to the
    scene so far on its overlap (a similarity, or rigid for a metric model; RANSAC seeded by ``seed``).
    ``done`` maps chunk number -> Predictions already made, or the file :meth:`Predictions.save` kept them in
    (resuming); ``on_chunk(k, pred)`` sees each new one. The scene's arrays are made once for all ``n`` views
    (in the workspace, :mod:`heads.recon.workspace`) and filled chunk by chunk, so memory holds one chunk, not copies of the scene."""
    ranges = chunk_ranges(n, size, overlap)
    scene, report, have, ws = None, [], 0, active()
    for k, views in enumerate(ranges):
        part = done[k] if done and k in done else run(views)
        if isinstance(part, (str, Path)):
            part = Predictions.load(part)
        if on_chunk is not None and not (done and k in done):
            on_chunk(k, part)
        if scene is None:
            if len(ranges) == 1:
                return part, [{"views": [views[0], views[-1]], "scale": 1.0}]
            scene = replace(part, images=[""] * n, **{name: ws.array(name, (n,) + getattr(part, name).shape[1:],
                                                                         getattr(part, name).dtype)
                                                       for name in _per_view(part)})
            report.append({"views": [views[0], views[-1]], "scale": 1.0})
        else:  # the scene holds views 0..have-1, in order
            shared = [(i, j) for j, i in enumerate(views) if i < have]
            s, R, t, pairs = align_to(scene, part, shared, with_scale=not part.metric, seed=seed)
            part = transformed(part, s, R, t)
            report.append({"views": [views[0], views[-1]], "scale": round(float(s), 5), "pairs": pairs})
        new = [j for j, i in enumerate(views) if i >= have]
        for name in _per_view(scene):
            if getattr(part, name) is not None:  # a chunk kept by an earlier version may lack the descriptors
                getattr(scene, name)[[views[j] for j in new]] = getattr(part, name)[new]
        for j in new:
            scene.images[views[j]] = part.images[j]
        have = views[-1] + 1
        ws.release()
    return scene, report


# ---------------------------------------------------------------------------- cameras from matching


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
    from heads.geometry import invert_pose
    from heads.recon.camera_files import normalised_coordinates

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
        network_points = _points_at(pred, list(by), pairs)
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
        refined.pts3d[v] = (cam_pts @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
        refined.depth_z[v] = z.astype(np.float32)
        refined.cam2world[v] = T.astype(np.float32)
        refined.K_original[v] = sfm.K[v].astype(np.float32)
        refined.K[v] = scale_intrinsics(sfm.K[v], tuple(pred.original_hw[v]), (H, W)).astype(np.float32)
        tick()

    if unreg:  # the network's frame mapped onto the refined one by the frames both hold
        from heads.geometry import ransac_umeyama

        placed_points = _points_at(refined, list(by), pairs)
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
    from heads.geometry import invert_pose

    T = invert_pose(pred.cam2world[0].astype(np.float64))
    return transformed(pred, 1.0, T[:3, :3], T[:3, 3], in_place=in_place)

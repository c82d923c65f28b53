"""Dense geometry on ground truth: depth fitted to tracks, found by matching images (multi-view stereo),
views fused once, and the scene scores that judge it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from heads import geometry as G
from heads.geometry import to_camera, world_points
from heads.recon.depth_fit import FieldFit, bilinear_weights, fit_depth_field, sample_bilinear
from heads.pointmap.predictions import Predictions
from heads.recon.fusion import Fusion, _nearest_cameras, camera_rays, choose_neighbours, finest_view, fuse, fuse_views
from heads.recon.evaluate import cloud_scores, range_scores, similarity_with_offset, thin
from heads.recon.mvs import RayProjector, fill_from_prior, pair_depth, rectify, view_depth

from .conftest import KITCHEN

H, W = 96, 128
K = np.array([[100.0, 0, 63.5], [0, 100.0, 47.5], [0, 0, 1]])


def pinhole_rays(h: int = H, w: int = W, k: np.ndarray = K) -> np.ndarray:
    u, v = G.pixel_grid(h, w)
    return np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1]], -1)


def look_at(centre, target=(0.0, 0.0, 3.0)) -> np.ndarray:
    """A camera-to-world pose at ``centre`` looking at ``target`` (y down)."""
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.stack([x, np.cross(z, x), z], 1), centre
    return T


def wall_depth(T: np.ndarray, rays: np.ndarray, z_wall: float = 3.0) -> np.ndarray:
    """z-depth (h, w) in camera T of the wall z = z_wall (world)."""
    d = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], -1) @ T[:3, :3].T  # world direction per unit z
    return (z_wall - T[2, 3]) / d[..., 2]


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A grey pattern on the wall, from world x, y (smooth blobs at several scales, values 0-1)."""
    rng = np.random.default_rng(7)
    out = np.zeros_like(x)
    for freq in (3.0, 7.0, 17.0, 31.0):
        a, b, p, q = rng.uniform(0.5, 1.5, 4)
        out += np.sin(freq * a * x + 5 * p) * np.cos(freq * b * y + 5 * q) / np.sqrt(freq)
    return ((out - out.min()) / (out.max() - out.min())).astype(np.float32)


def wall_image(T: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """The wall's image (h, w) uint8 seen from camera T."""
    pts = world_points(wall_depth(T, rays), rays, T)
    return (texture(pts[..., 0], pts[..., 1]) * 255).round().astype(np.uint8)


# ---------------------------------------------------------------------------- depth fitted to tracks


def test_a_field_fitted_to_tracks_takes_out_a_tilt_that_one_scale_cannot():
    rng = np.random.default_rng(0)
    truth = wall_depth(look_at((0.3, 0.0, 0.0)), pinhole_rays())
    u, v = G.pixel_grid(H, W)
    tilt = np.exp(0.15 * (u / W - 0.5) - 0.1 * (v / H - 0.5) + 0.05)  # the network's depth: tilted, scaled
    net = truth * tilt
    uv = np.stack([rng.uniform(0, W - 1, 300), rng.uniform(0, H - 1, 300)], 1)
    z = np.array([truth[int(round(b)), int(round(a))] for a, b in uv]) * rng.normal(1, 0.005, 300)
    z[:30] *= 1.5  # a tenth are bad tracks
    field, report = fit_depth_field(net, uv, z)
    err = np.abs(net * field / truth - 1)
    one, _ = fit_depth_field(net, uv, z, FieldFit(grid=(1, 1)))
    err_one = np.abs(net * one / truth - 1)
    assert np.median(err) < 0.005 and np.percentile(err, 95) < 0.015, (np.median(err), np.percentile(err, 95))
    assert np.median(err_one) > 0.02, np.median(err_one)
    assert report["tracks"] == 300 and report["residual_after"] < report["residual_before"] / 3
    few, few_report = fit_depth_field(net, uv[:10], z[:10] / 1.5)  # too few tracks: left as it is
    assert np.all(few == 1) and few_report["tracks"] == 10


def test_where_a_view_has_no_tracks_its_depth_takes_the_scale_its_tracks_give():
    """Tracks only in one corner, the network's depth 1.3x too near everywhere: the far corner gets the same
    1.3 (the fit is pulled towards the view's median ratio where no track says otherwise), not 1.0."""
    rng = np.random.default_rng(0)
    net = np.full((H, W), 2.0 / 1.3)
    uv = np.stack([rng.uniform(0, W / 4, 200), rng.uniform(0, H / 4, 200)], 1)
    field, report = fit_depth_field(net, uv, np.full(200, 2.0))
    assert report["median_ratio"] == pytest.approx(1.3)
    assert abs(field[-1, -1] - 1.3) < 0.01 and abs(np.median(field) - 1.3) < 0.01, (field[-1, -1], np.median(field))


def test_bilinear_weights_share_a_pixel_among_the_grid_nodes_around_it():
    """Each pixel's 4 nodes, weighted (weights 0-1, summing to 1), give back the pixel's own place: the corner
    nodes lie on the corner pixels, and a pixel outside the image counts as the nearest one inside."""
    for (h, w), grid in (((5, 9), (3, 5)), ((2, 2), (2, 2)), ((7, 13), (4, 3))):
        uv = np.array([[0, 0], [w - 1, h - 1], [0.5, 0.25], [w - 1.5, h - 1.25], [(w - 1) / 2, (h - 1) / 3],
                       [w - 1, 0], [0, h - 1], [-3, -2], [w + 5, h + 7], [-1, h + 1], [w / 3, -0.5]], float)
        nodes, weights = bilinear_weights(uv, (h, w), grid)
        node_u = (nodes % grid[1]) * (w - 1) / (grid[1] - 1)
        node_v = (nodes // grid[1]) * (h - 1) / (grid[0] - 1)
        inside = np.stack([np.clip(uv[:, 0], 0, w - 1), np.clip(uv[:, 1], 0, h - 1)], 1)
        assert np.all(weights >= -1e-12) and np.all(weights <= 1 + 1e-12), ((h, w), grid, weights)
        assert np.allclose(weights.sum(1), 1), ((h, w), grid, weights.sum(1))
        got = np.stack([(weights * node_u).sum(1), (weights * node_v).sum(1)], 1)
        assert np.allclose(got, inside), f"{(h, w)} image, {grid} grid: nodes give {got} for pixels {inside}"


def test_bilinear_samples_of_a_linear_map_are_exact_and_nan_outside_it():
    """A map that is linear in the pixel is sampled exactly anywhere in it, its edges and corners included;
    a point off the map, however far, is NaN (not an error)."""
    for h, w in ((5, 7), (2, 2), (6, 3)):
        v, u = np.mgrid[0:h, 0:w]
        image = 2.0 * u + 3.0 * v + 1.0
        inside = np.array([[0, 0], [w - 1, h - 1], [w - 1, 0], [0, h - 1], [0.5, 0.5], [w - 1.5, h - 1.5],
                           [(w - 1) / 3, (h - 1) / 2], [w - 1, (h - 1) / 2], [(w - 1) / 2, h - 1],
                           [0, (h - 1) / 4], [(w - 1) / 4, 0]], float)
        got = sample_bilinear(image, inside)
        assert np.allclose(got, 2 * inside[:, 0] + 3 * inside[:, 1] + 1), f"{(h, w)} map: {got} at {inside}"
        outside = np.array([[-0.01, 1], [w - 0.99, 1], [1, -0.01], [1, h - 0.99], [-20, 1], [1, -20],
                            [w + 20, 1], [1, h + 20], [w + 20, h + 20], [-20, -20]], float)
        assert np.all(np.isnan(sample_bilinear(image, outside))), f"{(h, w)} map: {sample_bilinear(image, outside)}"


def _tracks(net: np.ndarray, ratio: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n tracks on a map ``net``, their depths ``ratio`` times the map's (1 % noise)."""
    h, w = net.shape
    uv = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], 1)
    return uv, sample_bilinear(net, uv) * ratio * rng.normal(1, 0.01, n)


def test_tracks_with_no_depth_or_off_the_map_are_left_out_of_the_fit():
    """Depths under 1 m are depths; a track of depth 0, negative or NaN, off the map or on a hole of it (depth 0)
    is not used, and the rest still give the view its scale."""
    rng = np.random.default_rng(3)
    net = np.full((H, W), 0.4)
    net[:10, :10] = 0  # a hole
    uv, z = _tracks(net[10:, 10:], 1.3, 100, rng)
    uv += 10
    bad_uv = np.array([[20, 20], [30, 30], [40, 40], [-5, 20], [20, H + 3], [W + 1, 5], [3, 3], [5, 6]], float)
    bad_z = np.array([0.0, -0.5, np.nan, 0.5, 0.5, 0.5, 0.5, 0.5])
    field, report = fit_depth_field(net, np.concatenate([uv, bad_uv]), np.concatenate([z, bad_z]))
    assert report["tracks"] == 100, report
    assert report["median_ratio"] == pytest.approx(1.3, rel=0.01) and abs(np.median(field) - 1.3) < 0.02, report


def test_a_view_with_no_usable_track_or_too_few_keeps_its_depth_and_says_so():
    net = np.full((H, W), 2.0)
    field, report = fit_depth_field(net, np.array([[5.0, 5.0], [-3.0, 4.0]]), np.array([np.nan, 1.0]))
    assert field.shape == (H, W) and field.dtype == np.float32 and np.all(field == 1), field
    assert report == {"tracks": 0, "median_ratio": 1.0}, report
    rng = np.random.default_rng(4)
    uv, z = _tracks(net, 1.5, 19, rng)  # one fewer than min_tracks (20)
    z[:4] *= 1.2
    few, report = fit_depth_field(net, uv, z)
    r = np.log(z / 2.0)
    assert few.shape == (H, W) and few.dtype == np.float32 and np.all(few == 1), few
    assert report["tracks"] == 19 and report["median_ratio"] == pytest.approx(np.exp(np.median(r)))
    assert report["residual_before"] == pytest.approx(np.median(np.abs(r - np.median(r)))), report
    assert report["residual_after"] == pytest.approx(np.median(np.abs(r))), report  # nothing corrected
    enough, report = fit_depth_field(net, np.concatenate([uv, uv[:1]]), np.concatenate([z, z[:1]]))  # 20
    assert report["tracks"] == 20 and abs(np.median(enough) - np.exp(np.median(r))) < 0.05, report


def test_one_scale_per_view_is_the_median_ratio_everywhere():
    rng = np.random.default_rng(5)
    net = np.full((H, W), 2.0)
    uv, z = _tracks(net, 0.8, 60, rng)
    field, report = fit_depth_field(net, uv, z, FieldFit(grid=(1, 1)))
    assert field.dtype == np.float32 and np.allclose(field, report["median_ratio"]), field
    assert report["residual_after"] == report["residual_before"] > 0, report


def test_the_fit_weighs_tracks_as_a_mean_so_giving_each_twice_changes_nothing():
    """The penalties (bending, the pull to the median) weigh the same against 100 tracks as against 200:
    the same tracks given twice fit the same field."""
    rng = np.random.default_rng(6)
    u, v = G.pixel_grid(H, W)
    net = 2.0 * np.exp(0.3 * np.sin(3 * u / W) * np.cos(2 * v / H))
    uv, z = _tracks(np.full((H, W), 2.0), 1.0, 100, rng)
    z *= rng.normal(1, 0.05, 100)
    once, _ = fit_depth_field(net, uv, z)
    twice, _ = fit_depth_field(net, np.concatenate([uv, uv]), np.concatenate([z, z]))
    assert np.allclose(once, twice, rtol=1e-5), np.abs(once / twice - 1).max()


def test_a_map_one_pixel_wide_or_high_is_sampled_along_its_one_line_and_nan_off_it():
    for h, w in ((1, 6), (6, 1), (1, 1)):
        image = np.arange(h * w, dtype=float).reshape(h, w) * 2 + 1
        along = np.array([[0, 0], [(w - 1) / 2, (h - 1) / 2], [w - 1, h - 1]], float)
        got = sample_bilinear(image, along)
        assert np.allclose(got, 2 * (along[:, 0] + along[:, 1]) + 1), f"{(h, w)} map: {got} at {along}"
        off = np.array([[w + 3, 0], [0, h + 3], [w + 3, h + 3], [-2, 0], [0, -2]], float)
        assert np.all(np.isnan(sample_bilinear(image, off))), f"{(h, w)} map: {sample_bilinear(image, off)}"


def _reference_field(net: np.ndarray, uv: np.ndarray, z: np.ndarray, fit: FieldFit) -> np.ndarray:
    """The fit as depth_fit's docstring describes it, written the plain way: a dense (tracks x nodes) design
    matrix, a penalty on every second difference along the grid's rows and columns and one pulling each node
    to the median log-ratio, Cauchy weights at ``spread`` robust standard deviations (1.4826 x the median
    absolute residual) of the last round, the data term a weighted mean."""
    gh, gw = fit.grid
    n = gh * gw
    r = np.log(z) - np.log(sample_bilinear(net, uv))
    m = np.median(r)
    nodes, weights = bilinear_weights(uv, net.shape, fit.grid)
    A = np.zeros((len(r), n))
    np.add.at(A, (np.arange(len(r))[:, None], nodes), weights)
    second = [np.diff(np.eye(k), 2, axis=0) for k in (gh, gw)]
    bend = np.vstack([np.kron(np.eye(gh), second[1]), np.kron(second[0], np.eye(gw))])
    penalty = (fit.smooth * bend.T @ bend + fit.prior * np.eye(n)) / n
    robust = np.ones(len(r))
    for _ in range(fit.iterations):
        Wt = robust / robust.sum()
        g = np.linalg.solve(A.T @ (Wt[:, None] * A) + penalty, A.T @ (Wt * r) + fit.prior * m / n)
        res = r - A @ g
        scale = max(fit.min_scale, fit.spread * 1.4826 * np.median(np.abs(res)))
        robust = 1 / (1 + (res / scale) ** 2)
    v, u = np.mgrid[0:net.shape[0], 0:net.shape[1]]
    nodes, weights = bilinear_weights(np.stack([u.ravel(), v.ravel()], 1).astype(float), net.shape, fit.grid)
    return np.exp((g[nodes] * weights).sum(1)).reshape(net.shape)


@pytest.mark.parametrize("fit", [FieldFit(), FieldFit(grid=(4, 5), spread=1.0, smooth=1.0, prior=0.5),
                                 FieldFit(grid=(3, 3), min_scale=0.2, iterations=2)],
                         ids=["default", "stiff-4x5", "3x3-wide-scale"])
def test_the_field_is_the_documented_robust_least_squares_fit(fit):
    """Against the plain dense fit above (bent depth, 20 % of the tracks off by 10-40 %): the sparse normal
    equations, the bending rows, the Cauchy weights and their scale give the same field, as float32."""
    rng = np.random.default_rng(8)
    u, v = G.pixel_grid(H, W)
    net = 2.0 * np.exp(0.3 * np.sin(3 * u / W) * np.cos(2 * v / H) + 0.2 * (u / W) ** 2)
    uv, z = _tracks(np.full((H, W), 2.0), 1.0, 150, rng)
    z[:30] *= rng.uniform(1.1, 1.4, 30) ** rng.choice([-1, 1], 30)
    field, _ = fit_depth_field(net, uv, z, fit)
    want = _reference_field(net, uv, z, fit)
    assert field.dtype == np.float32, field.dtype
    assert np.allclose(field, want, rtol=2e-6), f"largest relative difference {np.abs(field / want - 1).max():.2e}"


def test_tracks_far_too_near_are_outliers_as_much_as_tracks_far_too_far():
    """Bad tracks on the near side (a tenth, at two thirds of the depth) are weighed down as those on the far side
    are: the field stays on the good tracks' tilt."""
    rng = np.random.default_rng(1)
    truth = wall_depth(look_at((0.3, 0.0, 0.0)), pinhole_rays())
    u, v = G.pixel_grid(H, W)
    net = truth * np.exp(0.15 * (u / W - 0.5) - 0.1 * (v / H - 0.5))
    uv = np.stack([rng.uniform(0, W - 1, 300), rng.uniform(0, H - 1, 300)], 1)
    z = sample_bilinear(truth, uv) * rng.normal(1, 0.005, 300)
    z[:30] /= 1.5
    field, _ = fit_depth_field(net, uv, z)
    err = np.abs(net * field / truth - 1)
    assert np.median(err) < 0.005 and np.percentile(err, 95) < 0.014 and err.max() < 0.03, \
        (np.median(err), np.percentile(err, 95), err.max())


# ---------------------------------------------------------------------------- matching images


def stereo_view(T: np.ndarray, rays: np.ndarray, k: np.ndarray = K) -> dict:
    """A view of the wall as :func:`heads.recon.mvs.pair_depth` takes it."""
    return {"image": wall_image(T, rays), "rays": rays, "project": RayProjector(rays), "f": k[0, 0], "cam2world": T}


def test_stereo_finds_the_wall_over_the_whole_range_whatever_the_prior():
    """Three views of a textured wall 3 m away, searched from 0.5 to 20 m: the depth comes from the images
    (no prior is given), within a few tenths of a per cent wherever the pairs agree."""
    rays = pinhole_rays()
    poses = [look_at((x, 0.0, 0.0)) for x in (0.0, -0.3, 0.3)]
    truth = wall_depth(poses[0], rays)
    views = [stereo_view(T, rays) for T in poses]
    found, pairs = view_depth(views[0], views[1:], (0.5, 20.0))
    ok = np.isfinite(found)
    err = np.abs(found[ok] / truth[ok] - 1)
    assert pairs == 2 and ok.mean() > 0.6, (pairs, ok.mean())
    assert np.median(err) < 0.003 and np.percentile(err, 95) < 0.01, (np.median(err), np.percentile(err, 95))
    one = pair_depth(views[0], views[1], (0.5, 20.0))  # one pair alone: the same wall
    assert np.nanmedian(np.abs(one / truth - 1)) < 0.004
    # a neighbour straight ahead cannot be rectified (its epipole lies in the image): passed over
    ahead = stereo_view(look_at((0.0, 0.0, 0.5)), rays)
    assert pair_depth(views[0], ahead, (0.5, 20.0)) is None
    assert view_depth(views[0], [ahead], (0.5, 20.0))[1] == 0


def test_stereo_follows_a_lens_that_bends_rays():
    """Rays through a radial distortion (k1 = -0.15): the pixel each direction lands on is fitted to the rays
    to a hundredth of a pixel, and matching through them finds the wall as with a pinhole."""
    u, v = G.pixel_grid(H, W)
    xd, yd = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    x, y = xd.copy(), yd.copy()
    for _ in range(20):  # undistort: x_d = x (1 + k1 r^2)
        r2 = x * x + y * y
        x, y = xd / (1 - 0.15 * r2), yd / (1 - 0.15 * r2)
    rays = np.stack([x, y], -1)
    project = RayProjector(rays)
    pu, pv = project(rays[..., 0], rays[..., 1])
    assert project.error < 0.01 and np.abs(pu - u).max() < 0.01 and np.abs(pv - v).max() < 0.01
    poses = [look_at((x0, 0.0, 0.0)) for x0 in (0.0, 0.3)]
    truth = wall_depth(poses[0], rays)
    found = pair_depth(stereo_view(poses[0], rays), stereo_view(poses[1], rays), (0.5, 20.0))
    ok = np.isfinite(found)
    assert ok.mean() > 0.6 and np.median(np.abs(found[ok] / truth[ok] - 1)) < 0.004


def test_rectified_frames_put_the_baseline_along_the_rows():
    a, b = look_at((0.0, 0.0, 0.0)), look_at((0.3, 0.1, 0.05), target=(0.5, 0.0, 3.0))
    Ra, Rb, baseline = rectify(a, b)
    assert baseline == pytest.approx(np.linalg.norm([0.3, 0.1, 0.05]))
    for R in (Ra, Rb):
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.linalg.det(R) > 0
    # the baseline in the rectified frame runs along x: a point seen by both lies on one row
    world_to_rect = Ra @ a[:3, :3].T
    assert np.allclose(world_to_rect @ (b[:3, 3] - a[:3, 3]), [baseline, 0, 0], atol=1e-12)
    X = np.array([0.2, -0.3, 3.0])
    in_a, in_b = world_to_rect @ (X - a[:3, 3]), world_to_rect @ (X - b[:3, 3])
    assert in_a[1] / in_a[2] == pytest.approx(in_b[1] / in_b[2]) and in_a[0] / in_a[2] > in_b[0] / in_b[2]


def test_the_prior_fills_holes_at_the_scale_of_what_was_matched():
    """A prior 30 % too far and tilted, matched depth on the left two thirds: the hole on the right takes the
    prior's shape at the matched depths' scale; pixels farther than ``reach`` from any match stay empty."""
    truth = wall_depth(look_at((0.3, 0.0, 0.0)), pinhole_rays())
    u, v = G.pixel_grid(H, W)
    prior = truth * 1.3 * (1 + 0.05 * (v / H - 0.5))
    matched = np.where(u < 2 * W / 3, truth, np.nan)
    filled = fill_from_prior(matched, prior)
    hole = u >= 2 * W / 3
    assert np.array_equal(filled[~hole], truth[~hole].astype(np.float32))
    assert np.median(np.abs(filled[hole] / truth[hole] - 1)) < 0.01 < np.median(np.abs(prior[hole] / truth[hole] - 1))
    near = fill_from_prior(matched, prior, reach=0.1)
    assert np.isnan(near[:, -1]).all() and np.isfinite(near[:, int(2 * W / 3) + 5]).all()
    assert np.array_equal(fill_from_prior(np.full((H, W), np.nan), prior), prior.astype(np.float32))  # nothing matched


# ---------------------------------------------------------------------------- fusion


def fused_walls(offsets: list[float], corrupt: bool = False, far_view: bool = False):
    """Views of the wall whose depths are off by ``offsets`` (fractions); optionally a patch of view 1
    20 % off and a last view that sees something else entirely."""
    rays = pinhole_rays()
    centres = [(0.12 * i - 0.12 * (len(offsets) - 1) / 2, 0.0, 0.0) for i in range(len(offsets))]
    poses = [look_at(c) for c in centres]
    depth = np.stack([wall_depth(T, rays) * (1 + o) for T, o in zip(poses, offsets)])
    if corrupt:
        depth[1, 30:60, 40:80] *= 1.2
    if far_view:
        poses.append(look_at((0.0, 0.0, 0.0), target=(0.0, 0.0, -3.0)))  # looking the other way
        depth = np.concatenate([depth, np.full((1, H, W), 2.0)])
    V = len(poses)
    return (depth, np.repeat(rays[None], V, 0), np.stack(poses), np.repeat(K[None], V, 0),
            np.ones((V, H, W), bool))


def test_views_of_one_wall_fuse_into_one_layer_and_a_bad_patch_is_dropped():
    depth, rays, poses, Ks, valid = fused_walls([0.008, -0.008, 0.004, -0.004, 0.0], corrupt=True)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None))
    truth = np.stack([wall_depth(T, r) for T, r in zip(poses, rays)])
    assert out.checked.all()
    assert not out.keep[1, 35:55, 45:75].any()  # no other view agrees with the bad patch
    # the averaged depths are nearer the wall than the views were
    good = out.keep
    assert np.abs(out.depth / truth - 1)[good].mean() < 0.5 * np.abs(depth / truth - 1)[good].mean()
    # each part of the wall once: about one view's worth of pixels plus what the others add at the sides
    assert out.first.sum() < 1.6 * H * W < out.keep.sum()
    points = np.concatenate([world_points(out.depth[v], rays[v], poses[v])[out.first[v]] for v in range(len(depth))])
    assert np.abs(points[:, 2] - 3.0).max() < 0.03  # one layer within 1 % of the wall
    layered = np.concatenate([world_points(depth[v], rays[v], poses[v]) for v in range(len(depth))]).reshape(-1, 3)
    assert np.abs(layered[:, 2] - 3.0).max() > 0.5  # what --no-fusion would have written


def test_a_neighbours_invalid_pixels_neither_confirm_nor_contradict():
    """Pixels a view marks invalid (the model's mask, a depth edge, a region matching did not reach) hold
    depths that mean nothing: they confirm no other view's pixel, and contradict none."""
    from heads.recon.fusion import average_agreeing

    depth, rays, poses, Ks, valid = fused_walls([0.0, 0.0])
    _, count, against = average_agreeing(depth, rays, K=Ks, cam2world=poses, valid=valid, neighbours=[[1], [0]],
                                         rtol=0.02)
    assert (count[0] > 0).mean() > 0.8  # the wall, seen by both: confirmed
    valid[1] = False
    _, count, _ = average_agreeing(depth, rays, K=Ks, cam2world=poses, valid=valid, neighbours=[[1], [0]], rtol=0.02)
    assert not count[0].any(), "an invalid pixel confirmed another view's"
    far = depth.copy()
    far[1] *= 1.5  # view 1 now sees beyond view 0's points: they would be contradicted ...
    _, _, against = average_agreeing(far, rays, K=Ks, cam2world=poses, valid=valid, neighbours=[[1], [0]], rtol=0.02)
    assert not against[0].any(), "an invalid pixel contradicted another view's"  # ... were its pixels valid
    valid[1] = True
    _, _, against = average_agreeing(far, rays, K=Ks, cam2world=poses, valid=valid, neighbours=[[1], [0]], rtol=0.02)
    assert (against[0] > 0).mean() > 0.8


def test_depth_that_is_right_stays_right():
    """A perfect model (the wall's true depth, true cameras, images that agree): matching finds nearly every
    pixel again where it was, and what is kept moves by a fraction of a per cent."""
    depth, rays, poses, Ks, valid = fused_walls([0.0] * 5)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion())
    change = np.abs(out.depth / depth - 1)[out.keep]
    assert out.matched.mean() > 0.9 and out.keep.mean() > 0.9, (out.matched.mean(), out.keep.mean())
    assert np.median(change) < 0.001 and np.percentile(change, 95) < 0.01, (np.median(change),
                                                                             np.percentile(change, 95))


def test_a_video_that_returns_keeps_each_surface_once():
    """Along the wall, away (looking the other way) and back again, more views than the sequence window:
    the views on the way back are checked against those on the way out (the cameras nearest in space), so
    the wall is kept once, not once per pass."""
    offsets = [0.004, -0.004, 0.0, 0.002, -0.002, 0.0]
    depth, rays, poses, Ks, valid = fused_walls(offsets)
    away = np.stack([look_at((0.1 * i, 0.0, 0.0), target=(0.1 * i, 0.0, -3.0)) for i in range(5)])
    back = slice(None, None, -1)
    depth = np.concatenate([depth, np.full((5, H, W), 2.0), depth[back]])
    poses = np.concatenate([poses, away, poses[back]])
    V = len(poses)
    rays, Ks, valid = rays[:1].repeat(V, 0), Ks[:1].repeat(V, 0), np.ones((V, H, W), bool)
    again = slice(len(offsets) + 5, None)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None, window=2))
    assert out.first[again].sum() < 0.02 * H * W, out.first[again].sum()  # nothing the first pass holds
    assert out.first[:len(offsets)].sum() > H * W
    windowed = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None,
                          f=Fusion(stereo=None, window=2, nearest=False))
    assert windowed.first[again].sum() > H * W  # sequence neighbours alone: the wall twice


def test_fusion_in_files_gives_what_it_gives_in_memory(tmp_path):
    """The workspace that keeps a long video's arrays in files changes no number."""
    from heads.recon.workspace import Workspace

    depth, rays, poses, Ks, valid = fused_walls([0.008, -0.008, 0.004, -0.004, 0.0], corrupt=True)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    in_memory = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion())
    with Workspace(tmp_path / "work", every=1):
        in_files = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion())
        assert isinstance(in_files.depth, np.memmap) and len(list((tmp_path / "work").iterdir())) >= 4
        for name in ("depth", "keep", "first", "checked"):
            assert np.array_equal(getattr(in_memory, name), getattr(in_files, name)), name
        del in_files
    assert not (tmp_path / "work").exists()


def test_fusion_on_threads_gives_what_it_gives_on_one(monkeypatch):
    """Views fused on a pool of threads (one per core) change no number: each view's work reads the others'
    inputs, never their outputs. Two scenes: walls with a bad patch, and a video that returns (windowed)."""
    import heads.recon.workspace as workspace

    depth, rays, poses, Ks, valid = fused_walls([0.008, -0.008, 0.004, -0.004, 0.0], corrupt=True)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    runs = {}
    for cores in (1, 3):
        monkeypatch.setattr(workspace, "available_cores", lambda cores=cores: cores)
        runs[cores] = [fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=images, f=Fusion()),
                       fuse_views(np.concatenate([depth, depth[::-1]]), np.concatenate([rays, rays]),
                                  cam2world=np.concatenate([poses, poses[::-1]]), K=np.concatenate([Ks, Ks]),
                                  valid=np.concatenate([valid, valid]), grays=np.concatenate([images, images[::-1]]),
                                  f=Fusion(window=2))]
    for one, many in zip(runs[1], runs[3]):
        assert one.neighbours == many.neighbours
        for name in ("depth", "keep", "first", "checked", "matched"):
            assert np.array_equal(getattr(one, name), getattr(many, name)), name
    assert runs[1][0].matched.mean() > 0.5 and not runs[1][1].first[5:].all()  # the checks did something


def _predictions(depth: np.ndarray, rays: np.ndarray, poses: np.ndarray, Ks: np.ndarray) -> Predictions:
    """The point-map model's output for views of known depth, rays and poses."""
    V = len(depth)
    pts = np.stack([world_points(depth[v], rays[v], poses[v]) for v in range(V)])
    return Predictions(images=[f"view{v}.png" for v in range(V)], pts3d=pts.astype(np.float32),
                       depth_z=depth.astype(np.float32), conf=np.ones(depth.shape, np.float32),
                       mask=np.ones(depth.shape, bool), cam2world=poses.astype(np.float32), K=Ks.astype(np.float32),
                       K_original=Ks.astype(np.float32), original_hw=np.tile([H, W], (V, 1)), scale=1.0, metric=True)


def test_camera_rays_are_each_points_x_over_z_and_y_over_z_and_nan_where_no_point_is_ahead():
    k = np.array([[110.0, 0, 60.0], [0, 90.0, 50.0], [0, 0, 1]])  # fx != fy, cx != cy
    depth, _, poses, _, _ = fused_walls([0.0, 0.0, 0.0])
    rays = np.repeat(pinhole_rays(k=k)[None], 3, 0)
    depth = np.stack([wall_depth(T, r) for T, r in zip(poses, rays)])
    pred = _predictions(depth, rays, poses, np.repeat(k[None], 3, 0))
    pred.pts3d[0, :4, :6] = np.nan  # no point
    centre, axis = poses[1][:3, 3], poses[1][:3, 2]
    pred.pts3d[1, 0, 0] = centre - 0.5 * axis  # behind the camera
    pred.pts3d[1, 0, 1] = centre + poses[1][:3, 0]  # on the camera's plane: z = 0
    pred.pts3d[2, 5, 5] = centre  # another camera's centre: ahead of camera 2, a ray like any other
    got = camera_rays(pred)
    assert got.shape == (3, H, W, 2) and got.dtype == np.float32, (got.shape, got.dtype)
    assert np.isnan(got[0, :4, :6]).all() and np.isnan(got[1, 0, :2]).all(), (got[0, :4, :6], got[1, 0, :2])
    fine = np.isfinite(pred.pts3d).all(-1)
    fine[1, 0, :2] = False
    fine[2, 5, 5] = False
    assert np.isfinite(got[fine]).all() and np.allclose(got[fine], rays[fine], atol=2e-5), \
        np.nanmax(np.abs(got[fine] - rays[fine]))
    want = to_camera(centre[None], poses[2])[0]
    assert np.allclose(got[2, 5, 5], want[:2] / want[2], atol=1e-5), (got[2, 5, 5], want)


def test_fuse_gives_the_matched_depths_and_their_points_and_says_what_it_did():
    """Views of the textured wall whose predicted depth is off by 2-3 %: fusing them with their images brings
    the depths to the wall, the points follow the depths (on each pixel's own ray), a pixel with no point is
    left out, measured pixels keep their depth, and the report counts what was kept."""
    offsets = [0.02, -0.03, 0.025, -0.02]
    depth, rays, poses, Ks, valid = fused_walls(offsets)
    truth = np.stack([wall_depth(T, r) for T, r in zip(poses, rays)])
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    colours = np.repeat(images[..., None], 3, -1)
    pred = _predictions(depth, rays, poses, Ks)
    pred.pts3d[2, 40:44, 60:64] = np.nan  # no point: no ray, so no pixel to fuse
    measured = np.zeros(depth.shape, bool)
    measured[1, 10:20, 10:30] = True  # its depth was measured (and is 3 % off: matching must not move it)
    before = pred.depth_z.copy(), pred.pts3d.copy(), valid.copy()
    fused, keep, first, report = fuse(pred, colours, valid, measured=measured)
    assert np.array_equal(pred.depth_z, before[0]) and np.array_equal(pred.pts3d, before[1], equal_nan=True) \
        and np.array_equal(valid, before[2]), "fuse changed its inputs without in_place"
    err_before = np.abs(depth / truth - 1)[keep & ~measured]
    err_after = np.abs(fused.depth_z / truth - 1)[keep & ~measured]
    assert np.median(err_after) < 0.003 < 0.02 <= np.median(err_before), (np.median(err_after), np.median(err_before))
    assert not keep[2, 40:44, 60:64].any() and np.isnan(fused.pts3d[2, 40:44, 60:64]).all()
    assert np.array_equal(fused.depth_z[measured], depth[measured].astype(np.float32)), "measured depth moved"
    on = keep | first
    for v in range(len(depth)):
        placed = world_points(fused.depth_z[v].astype(np.float64), rays[v], poses[v])
        assert np.allclose(fused.pts3d[v][on[v]], placed[on[v]], atol=1e-4), f"view {v}: points off their depths"
    assert fused.pts3d.dtype == np.float32 and fused.depth_z.dtype == np.float32
    assert set(report) == {"checked", "unchecked", "matched", "after_views", "after_once"}, report
    assert report["checked"] == 4 and report["unchecked"] == [], report
    assert report["after_views"] == int(keep.sum()) and report["after_once"] == int(first.sum()), report
    matchable = valid.sum() - 16
    assert 0.8 < report["matched"] <= 1 and report["matched"] == round(report["matched"], 4), report
    assert report["matched"] * matchable == pytest.approx(round(report["matched"] * matchable), abs=matchable * 1e-4)

    again = _predictions(depth, rays, poses, Ks)
    again.pts3d[2, 40:44, 60:64] = np.nan
    mine = valid.copy()
    same, keep2, first2, report2 = fuse(again, colours, mine, measured=measured, in_place=True)
    assert same is again and not mine[2, 40:44, 60:64].any() and mine.sum() == valid.sum() - 16
    assert np.array_equal(same.depth_z, fused.depth_z) and np.array_equal(keep2, keep) and report2 == report


def test_the_nearest_cameras_are_those_near_in_space_that_look_the_same_way():
    ahead = [look_at((x, 0.0, 0.0), target=(x, 0.0, 3.0)) for x in (0.0, 1.0, 2.5, 4.5, 10.0)]
    back = look_at((0.5, 0.0, 0.0), target=(0.5, 0.0, -3.0))
    tilted = look_at((1.2, 0.0, 0.0), target=(1.2 + 3.0 * np.tan(np.radians(50)), 0.0, 3.0))  # 50 deg off
    got = _nearest_cameras(np.stack(ahead + [back, tilted]), 2)
    assert got.shape == (7, 2) and got.dtype == np.int64
    assert got[0].tolist() == [1, 6] and got[1].tolist() == [6, 0] and got[4].tolist() == [3, 2], got
    assert got[5].tolist() == [5, 5], "a camera no other looks along with is padded with itself"
    assert _nearest_cameras(np.stack(ahead + [back, tilted]), 2, max_angle=45.0)[0].tolist() == [1, 2]
    assert _nearest_cameras(np.stack(ahead[:2]), 3).tolist() == [[1, 0], [0, 1]], "k above the views: padded"


def test_a_view_no_other_sees_is_kept_unchecked():
    depth, rays, poses, Ks, valid = fused_walls([0.0, 0.0, 0.0], far_view=True)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None))
    assert out.checked.tolist() == [True, True, True, False]
    assert out.keep[3].all() and out.first[3].all() and out.neighbours[3] == []


def _wall_samples(centres, targets=None):
    """Cameras at ``centres`` looking at ``targets`` (default: straight ahead to the wall z = 3) and each one's
    wall points on every 8th pixel each way, as :func:`heads.recon.fusion.sample_points` gives them."""
    targets = targets or [(c[0], c[1], 3.0) for c in centres]
    poses = np.stack([look_at(c, target=t) for c, t in zip(centres, targets)])
    rays = pinhole_rays()[::8, ::8]
    return [world_points(wall_depth(T, rays), rays, T).reshape(-1, 3) for T in poses], poses


def test_neighbours_are_the_views_that_add_most_parallax_and_overlaps_those_that_see_most():
    """Six cameras before the wall (0.05 m, 0.6 m either side, 3.5 m off, and 1 m straight behind view 0), a
    view whose points only a tenth of are on the wall (the rest behind every camera) and one with no points:
    the neighbours, chosen greedily by what each adds with parallax, and the views overlapping each, most
    first, as the options say."""

    samples, poses = _wall_samples([(0.0, 0, 0), (0.05, 0, 0), (0.6, 0, 0), (-0.6, 0, 0), (3.5, 0, 0), (0.0, 0, -1.0),
                                    (0.3, 0, 0), (-0.3, 0, 0)])
    samples[6] = np.concatenate([samples[0][:10], np.tile([[0.0, 0.0, -50.0]], (90, 1))])  # 10 of 100 seen
    samples[7] = np.zeros((0, 3))
    Ks = np.repeat(K[None], len(poses), 0)
    neighbours, overlaps = choose_neighbours(samples, (H, W), K=Ks, cam2world=poses, f=Fusion())
    assert overlaps == [[5, 1, 7, 3, 6, 2], [0, 5, 6, 7, 3, 2], [5, 6, 1, 0, 7, 3, 4], [5, 7, 1, 0, 6, 2],
                        [5, 2, 6, 1, 0], [6, 3, 2, 1, 0, 7, 4], [5, 7, 3, 0], []], overlaps
    assert neighbours == [[5, 7, 2], [5, 6, 3], [5, 6, 4], [5, 7], [5, 2], [3, 2, 4, 0], [5, 7], []], neighbours
    two, _ = choose_neighbours(samples[:6], (H, W), K=Ks[:6], cam2world=poses[:6], f=Fusion(neighbours=2))
    assert two == [[5, 3], [5, 3], [5, 1], [5, 1], [5, 2], [3, 2]], two
    low, _ = choose_neighbours(samples[:6], (H, W), K=Ks[:6], cam2world=poses[:6], f=Fusion(min_angle=0.5))
    assert low == [[5, 1, 3], [0, 5], [5, 1, 4], [5, 1], [5, 2], [3, 2, 4, 0]], \
        f"{low}: with less parallax asked, the camera 5 cm away (1 degree) counts in full"
    close, close_poses = _wall_samples([(0.0, 0.0, 0.0), (0.002, 0.0, 0.0)])
    assert choose_neighbours(close, (H, W), K=Ks[:2], cam2world=close_poses, f=Fusion()) == ([[], []], [[1], [0]]), \
        "a camera 2 mm away adds under 2 % with parallax: it overlaps, but it is no neighbour"


def test_on_a_long_video_neighbours_come_from_the_frames_within_the_window():
    """Seven cameras 0.3 m apart along the wall, each seeing most of the next ones: with more than twice the
    window's views, a view's candidates are the frames within the window (the cameras nearest in space
    left out here); with fewer, every view."""
    from heads.recon.fusion import choose_neighbours

    samples, poses = _wall_samples([(0.3 * i, 0.0, 0.0) for i in range(7)])
    Ks = np.repeat(K[None], 7, 0)
    within = [[1, 2], [0, 2, 3], [1, 3, 0, 4], [2, 4, 1, 5], [3, 5, 2, 6], [4, 6, 3], [5, 4]]
    assert choose_neighbours(samples, (H, W), K=Ks, cam2world=poses, f=Fusion(window=2, nearest=False)) == (within, within)
    neighbours, overlaps = choose_neighbours(samples, (H, W), K=Ks, cam2world=poses, f=Fusion(window=3, nearest=False))
    assert neighbours == within and overlaps == [[1, 2, 3], [0, 2, 3, 4], [1, 3, 0, 4, 5], [2, 4, 1, 5, 0, 6],
                                                 [3, 5, 2, 6, 1], [4, 6, 3, 2], [5, 4, 3]], overlaps
    _, every = choose_neighbours(samples, (H, W), K=Ks, cam2world=poses, f=Fusion(window=None))
    assert every == [[1, 2, 3, 4, 5, 6], [0, 2, 3, 4, 5, 6], [1, 3, 0, 4, 5, 6], [2, 4, 1, 5, 0, 6],
                     [3, 5, 2, 6, 1, 0], [4, 6, 3, 2, 1, 0], [5, 4, 3, 2, 1, 0]], every
    _, six = choose_neighbours(samples[:6], (H, W), K=Ks[:6], cam2world=poses[:6], f=Fusion(window=3))
    assert six == [[1, 2, 3, 4, 5], [0, 2, 3, 4, 5], [1, 3, 0, 4, 5], [2, 4, 1, 5, 0], [3, 5, 2, 1, 0],
                   [4, 3, 2, 1, 0]], f"{six}: six views, a window of three: not windowed"


def test_agreement_and_contradiction_are_counted_per_neighbour_at_the_tolerance():
    """Four cameras at one place (so each pixel lands on the same pixel of the others): view 0 at 1 m, view 1
    at 2 m (exactly at the tolerance of 50 %: it agrees, and does not contradict), views 2 and 3 at 4 m (beyond
    it: each contradicts it). Counts are integers, the mean a float32 map."""
    from heads.recon.fusion import average_agreeing

    depth = np.stack([np.full((H, W), z) for z in (1.0, 2.0, 4.0, 4.0)]).astype(np.float32)
    rays, poses, Ks = pinhole_rays()[None].repeat(4, 0), np.eye(4)[None].repeat(4, 0), K[None].repeat(4, 0)
    valid = np.ones((4, H, W), bool)
    mean, count, against = average_agreeing(depth, rays, K=Ks, cam2world=poses, valid=valid,
                                            neighbours=[[1, 2, 3], [0], [], []], rtol=0.5)
    assert count.dtype == against.dtype == np.int16 and mean.dtype == np.float32, (count.dtype, mean.dtype)
    assert (count[0] == 1).all() and (against[0] == 2).all(), \
        f"view 0: {np.unique(count[0])} agreeing, {np.unique(against[0])} contradicting; want 1 and 2"
    assert np.allclose(mean[0], 1.5), "view 0's depth is not the mean of its own and view 1's"
    assert not count[1].any() and not against[1].any() and (mean[1] == 2).all(), \
        "view 1 at 2 m against view 0 at 1 m: 100 % off its 1 m (no agreement), and in front of nothing (no contradiction)"
    assert not count[2:].any() and not against[2:].any() and (mean[2:] == 4).all(), "no neighbours, no change"


def test_which_pixels_are_kept_follows_matching_confirmation_and_contradiction(monkeypatch):
    """Three views of the wall, view 2's depth 10 % too far on a patch (where it sees beyond view 0's points:
    it contradicts them, and confirms nothing), matching stood in for by marking view 0's left half found. A
    pixel is kept when ``confirm`` neighbours agree (as many as the view has, one with no matching), or when
    matching found it and no neighbour sees through it; measured pixels need nothing; what matching found is
    kept first, before a finer view's guess."""
    import heads.recon.fusion as fusion
    from heads.recon.fusion import average_agreeing

    depth, rays, poses, Ks, valid = fused_walls([0.0, 0.0, 0.0])
    depth[2, 20:70, 10:60] *= 1.1
    poses[1, 2, 3] = 0.3  # view 1 nearer the wall: it sees it finer
    depth[1] = wall_depth(poses[1], rays[1])
    calls = []

    def fake_match(depth, rays, cam2world, K, grays, valid, measured, order, tracks, s, matched, fine):
        calls.append({"measured": measured, "order": order, "tracks": tracks, "fine": fine})
        matched[0, :, :W // 2] = True

    monkeypatch.setattr(fusion, "_match_views", fake_match)
    grays = np.zeros(depth.shape, np.uint8)
    measured = np.zeros(depth.shape, bool)
    measured[2, 30:40, 20:30] = True
    fine = np.zeros((len(depth), 2 * depth.shape[1], 2 * depth.shape[2]), np.uint8)
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=grays, f=Fusion(), measured=measured,
                     tracks=["t0", "t1", "t2"], fine=fine)
    assert len(calls) == 1 and calls[0]["measured"] is measured and calls[0]["tracks"] == ["t0", "t1", "t2"], calls
    assert calls[0]["fine"] is fine, "the finer images were not what matching got"
    assert sorted(out.neighbours[0]) == [1, 2] and out.checked.all(), (out.neighbours, out.checked)
    _, count, against = average_agreeing(depth.astype(np.float32), rays.astype(np.float32), K=Ks, cam2world=poses,
                                         valid=valid, neighbours=out.neighbours, rtol=0.02)
    matched = out.matched[0]
    two, one = count[0] >= 2, count[0] == 1
    seen_through = against[0] > 0
    for what, where in (("matched, one agreeing, seen through", matched & one & seen_through),
                        ("matched, one agreeing, not seen through", matched & one & ~seen_through),
                        ("not matched, one agreeing", ~matched & one), ("two agreeing", two)):
        assert where.sum() > 20, f"the scene has no pixel {what}"
    assert np.array_equal(out.keep[0], two | (matched & ~seen_through)), \
        "view 0 keeps other than its confirmed pixels and its matched ones nobody sees through"
    assert out.keep[2, 30:40, 20:30].all(), "measured pixels need no confirmation"
    assert np.array_equal(out.keep[2] & ~measured[2], (count[2] >= 2) & ~measured[2]), "view 2: only the confirmed"
    assert out.first[0][matched & out.keep[0]].all(), "a matched pixel gave way to a guessed one"
    assert not out.first[0][~matched & out.keep[0] & (count[0] > 0)].all(), "view 1 (finer) held none of view 0's"

    calls.clear()
    none = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion())
    assert calls == [] and not none.matched.any(), "matched without images"
    assert np.array_equal(none.keep[0], count[0] >= 1), "with no matching, one neighbour's word is enough"
    assert none.depth.dtype == np.float32, none.depth.dtype
    single = fuse_views(depth.astype(np.float32), rays.astype(np.float32), cam2world=poses, K=Ks, valid=valid,
                        grays=None, f=Fusion())
    assert np.array_equal(single.depth, none.depth), "float64 depths and rays are not stored as float32"
    unmatched = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=grays, f=Fusion(stereo=None))
    assert calls == [] and np.array_equal(unmatched.keep, none.keep), "with stereo None the images are not matched"


def test_a_view_is_checked_when_it_has_neighbours_that_confirm_enough_of_it():
    """Three views of the wall, the last 20 % off (no neighbour confirms any of it), and one that sees
    nothing the others do: the first two, each confirmed by one neighbour, are checked; the view 20 % off
    is not (unless no share of confirmed pixels is asked), nor, ever, the view with no neighbour."""
    depth, rays, poses, Ks, valid = fused_walls([0.0, 0.0, 0.0], far_view=True)
    depth[2] *= 1.2
    out = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None, f=Fusion(stereo=None))
    assert out.checked.tolist() == [True, True, False, False] and out.keep[2:].all(), out.checked
    anything = fuse_views(depth, rays, cam2world=poses, K=Ks, valid=valid, grays=None,
                          f=Fusion(stereo=None, min_agreeing=0.0))
    assert anything.checked.tolist() == [True, True, True, False], anything.checked


# ---------------------------------------------------------------------------- scores


def test_scene_scores_on_clouds_with_known_distances():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (40000, 2))
    truth = thin(np.c_[xy, np.zeros(len(xy))])
    same = cloud_scores(truth, truth)
    assert same["f@0.05"] == 1.0 and same["accuracy"] == 0.0
    shifted = cloud_scores(truth + [0, 0, 0.07], truth)  # a parallel layer 7 cm off
    assert shifted["precision@0.05"] == 0.0 and shifted["recall@0.05"] == 0.0 and shifted["f@0.1"] == 1.0
    assert shifted["accuracy"] == pytest.approx(0.07, abs=1e-9)
    half = cloud_scores(truth[truth[:, 0] < 0.5], truth)  # half the surface, exactly
    assert half["precision@0.05"] == 1.0 and 0.5 < half["recall@0.05"] < 0.6


def test_range_scores_bin_both_clouds_by_their_distance_to_the_nearest_camera():
    """Two walls, 1 m and 3 m in front of a camera: the scene has the near one exactly and the far one 7 cm
    off, and misses the far wall's right half. Each band says so on its own; the open last band is empty."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.5, 0.5, (20000, 2))
    near, far = thin(np.c_[xy, np.full(len(xy), 1.0)]), thin(np.c_[xy * 3, np.full(len(xy), 3.0)])
    truth = np.concatenate([near, far])
    scene = np.concatenate([near, far[far[:, 0] < 0] + [0, 0, 0.07]])
    centres = np.array([[0.0, 0.0, -10.0], [0.05, 0.0, 0.0]])  # the first far behind: the nearest one counts
    bands = range_scores(scene, truth, centres, edges=(2.0, 5.0))
    assert [(b["from"], b["to"]) for b in bands] == [(0.0, 2.0), (2.0, 5.0), (5.0, float("inf"))]
    first, second, last = bands
    assert first["precision@0.05"] == 1.0 and first["recall@0.05"] == 1.0 and first["recall@0.02"] == 1.0
    assert second["precision@0.05"] == 0.0 and second["precision@0.02"] == 0.0
    assert second["recall@0.05"] == 0.0  # the far wall's half the scene holds is 7 cm off: none within 5 cm
    assert range_scores(scene, truth, centres, edges=(2.0,), taus=(0.1,))[1]["recall@0.1"] == pytest.approx(
        0.5, abs=0.05)  # within 10 cm: the half it holds
    assert first["points"] == pytest.approx(len(near) / len(scene)) and first["truth"] == pytest.approx(
        len(near) / len(truth))
    assert last["points"] == 0.0 and last["precision@0.05"] is None and last["recall@0.05"] is None


def test_alignment_solves_the_offset_between_two_sensors():
    rng = np.random.default_rng(3)
    truth = np.stack([G.invert_pose(G.invert_pose(look_at(rng.normal(0, 0.4, 3), rng.normal(0, 1, 3) + [0, 0, 3])))
                      for _ in range(12)])
    lever = np.array([0.03, -0.02, 0.05])  # the scene's camera in each truth camera's frame
    centres = truth[:, :3, 3] + np.einsum("nij,j->ni", truth[:, :3, :3], lever)
    R = G.rotation_from_quaternion(np.array([0.1, -0.2, 0.3, 0.9]))
    ours = (centres @ R.T) / 1.3 + [1.0, 2.0, -0.5]  # another frame, 1 / 1.3 the size
    s, R_fit, t, x = similarity_with_offset(ours, truth)
    assert s == pytest.approx(1.3, rel=1e-5) and np.allclose(x, lever, atol=1e-4)
    s_plain, *_ , x0 = similarity_with_offset(ours, truth, offset=False)
    assert np.all(x0 == 0) and abs(s_plain - 1.3) > 1e-3  # the plain similarity is biased by the offset
    # a scene in metres is aligned rigidly: its scale is judged, not fitted
    s_rigid, R_rigid, t_rigid, x1 = similarity_with_offset(centres @ R.T + [1.0, 2.0, -0.5], truth, scale=False)
    assert s_rigid == 1.0 and np.allclose(x1, lever, atol=1e-4) and np.allclose(R_rigid, R.T, atol=1e-5)
    s_short, *_ = similarity_with_offset(ours, truth, scale=False)
    assert s_short == 1.0  # even where the sizes differ: the 1.3 stays in the score


# ---------------------------------------------------------------------------- end to end on real frames


@pytest.mark.slow
def test_recon3d_on_held_out_frames_lies_on_the_recorded_surface(cli, tmp_path):
    """Frames the bundled model never saw: the fused cloud and mesh against the recorded depth, beside
    --no-fusion (the network's depth as placed), COLMAP's points, the ceiling and the flat baseline. The
    network was trained on other frames of this kitchen, so its depth is good here: matching the images
    must still be more precise than it, and far above what a constant depth or the sparse points give."""
    if not KITCHEN.exists():
        pytest.skip("shared data not present")
    frames = [KITCHEN / f"frame-{i:06d}.color.jpg" for i in range(800, 897, 12)]  # 9 frames, 1 m of motion
    scores = {}
    for name, extra in (("fused", ["--mesh"]), ("stacked", ["--no-fusion"])):
        code, out, err = cli(["recon3d", *frames, "-o", tmp_path / name, "--cameras", "colmap", "-q", *extra])
        assert code == 0, err
        code, out, err = cli(["evaluate", "recon3d", tmp_path / name, "--data", KITCHEN, "--json"])
        assert code == 0, err
        scores[name] = json.loads(out)
        assert "recorded_depth_on_cameras" in err and "constant_depth_on_cameras" in err  # the table
    fused, stacked = scores["fused"]["rows"], scores["stacked"]["rows"]
    assert scores["fused"]["frames"] == 9 and scores["fused"]["ate"] < 0.05
    assert fused["recorded_depth_on_cameras"]["f@0.05"] > 0.95  # the cameras allow it
    assert fused["scene"]["precision@0.05"] > stacked["scene"]["precision@0.05"] + 0.03, (fused["scene"],
                                                                                           stacked["scene"])
    assert fused["scene"]["f@0.05"] > 0.5 and fused["scene"]["accuracy"] < 0.06, fused["scene"]
    assert fused["mesh"]["f@0.05"] > 0.8 * fused["scene"]["f@0.05"]
    assert fused["scene"]["f@0.05"] > 2 * fused["colmap_points"]["f@0.05"]
    assert fused["scene"]["f@0.05"] > 4 * fused["constant_depth_on_cameras"]["f@0.05"]


# ---------------------------------------------------------------------------- end to end on a scene no network saw


@pytest.fixture(scope="module")
def unseen(tmp_path_factory):
    """Things on a table seen from 0.35-0.6 m (benchmarks.synthetic_scenes), 10 frames of 320 x 240: exact
    depth and cameras, and nothing like the kitchen the bundled models were trained on."""
    from benchmarks.synthetic_scenes import write_scene

    folder = tmp_path_factory.mktemp("unseen") / "object"
    write_scene("object", folder, frames=10, hw=(240, 320))
    return folder


def _scored(cli, folder, scene, *flags, scale=True):
    code, out, err = cli(["evaluate", "recon3d", scene, "--data", folder, "--dataset", "generic-rgbd",
                          "--depth-scale", "1000", "--no-sensor-offset", "--json", *([] if scale else ["--no-scale"])])
    assert code == 0, err
    return json.loads(out)["rows"]


@pytest.mark.slow
def test_on_a_scene_no_network_saw_the_geometry_comes_from_the_images(cli, tmp_path, unseen):
    """Matching the images puts the cloud on the surface (F-score within 2 cm in a scene 40 cm deep), and it
    does so as well when the network's depth is replaced by a flat plane: the prior only fills in. Before
    matching (the network's depth fitted to the tracks) this scene scored below one constant depth at 2 cm."""
    runs = {}
    for prior in ("network", "flat"):
        code, out, err = cli(["recon3d", unseen / "images", "-o", tmp_path / prior, "--cameras", "json", "-q",
                              "--depth-prior", prior, "--json"])
        assert code == 0, err
        assert json.loads(out)["fusion"]["matched"] > 0.5
        runs[prior] = _scored(cli, unseen, tmp_path / prior)
    default, flat = runs["network"], runs["flat"]
    assert default["recorded_depth_on_cameras"]["f@0.02"] > 0.95  # the cameras are right
    assert default["scene"]["f@0.02"] > 0.7 and default["scene"]["f@0.05"] > 0.9, default["scene"]
    assert default["scene"]["f@0.02"] > 3 * default["constant_depth_on_cameras"]["f@0.02"]
    assert abs(flat["scene"]["f@0.02"] - default["scene"]["f@0.02"]) < 0.05, (flat["scene"], default["scene"])


@pytest.mark.slow
def test_known_cameras_have_their_matches_triangulated_and_the_scene_takes_their_metres(cli, tmp_path, unseen):
    """The scene's own cameras given (a cameras.json in metres): the matches are triangulated from them (no
    mapping), the network's depth is fitted to those points, and the scene comes out in metres: scored
    rigidly (its scale judged, not fitted) it lies on the surface; its unit says where the metres came from."""
    K = np.loadtxt(unseen / "K.txt")
    cams = [{"image": p.name, "width": 320, "height": 240, "K": K.tolist(),
             "cam2world": np.loadtxt(unseen / "poses" / f"{p.stem}.txt").tolist()}
            for p in sorted((unseen / "images").glob("*.png"))]
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"unit": "metres", "cameras": cams}))
    code, out, err = cli(["recon3d", unseen / "images", "-o", tmp_path / "known", "--known-cameras", given,
                          "--cameras", "json", "--json", "-q"])
    assert code == 0 and "warning" not in err, err
    summary = json.loads(out)
    assert summary["cameras"]["cameras"] == "given" and summary["cameras"]["points"] > 100, summary["cameras"]
    assert summary["cameras"]["reprojection_error_px"] < 1.0 and summary["unit"] == "metres, from the given cameras"
    rows = _scored(cli, unseen, tmp_path / "known", scale=False)
    assert rows["scene"]["f@0.02"] > 0.7, rows["scene"]
    assert json.loads((tmp_path / "known" / "cameras.json").read_text())["unit"] == "metres, from the given cameras"


@pytest.mark.slow
def test_an_rgbd_sequence_with_recorded_poses_is_placed_on_them_without_matching(cli, tmp_path, unseen):
    """The generic-rgbd layout (images/, depth/, poses/, K.txt) given as a folder: its recorded poses are the
    cameras and its depth the geometry, said on the terminal; --no-known-poses matches instead."""
    code, out, err = cli(["recon3d", unseen, "-o", tmp_path / "rgbd", "--cameras", "json", "--json"])
    assert code == 0, err
    assert "recorded poses are the cameras (10 frames, metres)" in err and "--no-known-poses" in err, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["cameras"]["cameras"] == "given" and summary["seconds"]["sfm_thread"] is None  # no matching
    assert summary["unit"] == "metres, from the measured depth"
    rows = _scored(cli, unseen, tmp_path / "rgbd", scale=False)
    assert rows["scene"]["f@0.02"] > 0.9, rows["scene"]
    code, out, err = cli(["recon3d", unseen, "-o", tmp_path / "matched", "--no-known-poses", "--json", "-q"])
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["cameras"]["cameras"] == "sfm"


def test_a_flat_prior_is_one_plane_per_view_at_one_depth():
    """--depth-prior flat: every pixel at the same z, each point moved along its own ray from its camera."""
    from heads.recon.pipeline import flatten

    rng = np.random.default_rng(0)
    V = 3
    poses = np.stack([look_at((0.2 * v, 0.0, 0.0)) for v in range(V)]).astype(np.float32)
    rays = pinhole_rays()
    depth = rng.uniform(1, 4, (V, H, W)).astype(np.float32)
    pts = np.stack([world_points(depth[v], rays, poses[v]) for v in range(V)]).astype(np.float32)
    pred = type("P", (), {"depth_z": depth.copy(), "pts3d": pts.copy(), "cam2world": poses})()
    flatten(pred)
    c = float(np.median([np.median(d) for d in depth]))
    assert np.allclose(pred.depth_z, c)
    for v in range(V):
        assert np.allclose(pred.pts3d[v], world_points(np.full((H, W), c), rays, poses[v]), atol=1e-4)


def test_camera_rays_of_points_on_the_cameras_plane_are_nan_without_a_warning():
    """A point at z = 0 (1/0) or at the camera's centre (0/0) has no ray; numpy's division warnings would reach
    the user's terminal as noise."""
    import warnings

    depth, rays, _, Ks, _ = fused_walls([0.0])
    pred = _predictions(depth, rays, np.eye(4)[None], Ks)
    pred.pts3d[0, 0, 0] = (1.0, 0.0, 0.0)  # on the camera's plane
    pred.pts3d[0, 0, 1] = (0.0, 0.0, 0.0)  # at its centre
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = camera_rays(pred)
    assert np.isnan(got[0, 0, :2]).all() and np.isfinite(got[0, 1:]).all()


def test_fuse_leaves_out_the_pixels_it_was_not_given_and_names_the_views_it_could_not_check():
    depth, rays, poses, Ks, valid = fused_walls([0.02, -0.03, 0.025], far_view=True)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    pred = _predictions(depth, rays, poses, Ks)
    valid[0, 10:30, 20:50] = False  # e.g. cut by the cleaning: not to be fused, nor kept
    fused, keep, first, report = fuse(pred, np.repeat(images[..., None], 3, -1), valid)
    assert not keep[0, 10:30, 20:50].any() and not first[0, 10:30, 20:50].any(), "a pixel not given was kept"
    assert np.array_equal(fused.depth_z[0, 10:30, 20:50], depth[0, 10:30, 20:50].astype(np.float32)), \
        "a pixel not given was fused"
    assert report["unchecked"] == ["view3.png"] and report["checked"] == 3, report


def test_fuse_says_what_share_of_its_pixels_matching_found_to_four_places():
    """A view half textureless: matching finds depth on the textured half only, and the share is reported
    as it is (not rounded to 0 or 1)."""
    offsets = [0.02, -0.03, 0.025]
    depth, rays, poses, Ks, valid = fused_walls(offsets)
    images = np.stack([wall_image(T, r) for T, r in zip(poses, rays)])
    images[:, :, : W // 2] = 128  # the left half of every view is flat grey
    fused, keep, first, report = fuse(_predictions(depth, rays, poses, Ks), np.repeat(images[..., None], 3, -1), valid)
    assert 0.2 < report["matched"] < 0.8, report
    assert report["matched"] == round(report["matched"], 4) and report["matched"] != round(report["matched"], 2), \
        report


def test_the_tracks_depths_decide_where_matching_searches():
    """Predicted depth three times too far: searched about the prior, the wall is out of reach; searched
    about the tracks' depths (which found the wall), matching brings each view onto it."""
    offsets = [2.0, 2.0, 2.0]
    depth, rays, poses, Ks, valid = fused_walls(offsets)
    truth = np.stack([wall_depth(T, r) for T, r in zip(poses, rays)])
    colours = np.repeat(np.stack([wall_image(T, r) for T, r in zip(poses, rays)])[..., None], 3, -1)
    tracks = [(float(t.min()), float(t.max())) for t in truth]
    with_tracks, keep, _, _ = fuse(_predictions(depth, rays, poses, Ks), colours, valid, tracks=tracks)
    without, keep2, _, _ = fuse(_predictions(depth, rays, poses, Ks), colours, valid)
    err = np.abs(with_tracks.depth_z / truth - 1)[keep]
    assert keep.mean() > 0.5 and np.median(err) < 0.01, (keep.mean(), np.median(err))
    assert np.median(np.abs(without.depth_z / truth - 1)) > 0.1, "the prior's range reached the wall: no test"


def test_nearest_cameras_at_the_same_distance_are_taken_in_view_order():
    """Ties broken by view order, the same on every machine (numpy's default sort is not stable on CPUs with
    wide vector units)."""
    cams = [look_at((0.0, 0.0, 0.0))] + [look_at((1.0, 0.0, 0.0), target=(1.0, 0.0, 3.0)) for _ in range(8)]
    assert _nearest_cameras(np.stack(cams), 5)[0].tolist() == [1, 2, 3, 4, 5]


def test_cameras_looking_more_than_60_degrees_away_are_not_neighbours_by_default():
    tilt = [look_at((0.3 * i, 0.0, 0.0), target=(0.3 * i + 3.0 * np.tan(np.radians(a)), 0.0, 3.0))
            for i, a in enumerate([0.0, 59.0, 60.5])]
    got = _nearest_cameras(np.stack(tilt), 2)
    assert got[0].tolist() == [1, 0], f"60.5 degrees off counted as a neighbour, or 59 not: {got[0]}"


def test_a_camera_at_the_same_place_is_no_neighbour_even_for_points_a_kilometre_away():
    """Two frames from one place (a video that paused) see distant points along the same rays: no parallax,
    so the second confirms nothing; at that distance rounding puts the rays' cosine a hair above 1."""
    rng = np.random.default_rng(7)
    T = look_at((0.0, 0.0, 0.0), target=(0.0, 0.0, 1000.0))
    sample = rng.uniform(-300, 300, (2000, 3)) * [1, 1, 0] + [0, 0, 1000.0]
    a = sample - T[:3, 3]
    cos = (a * a).sum(1) / (np.linalg.norm(a, axis=1) ** 2 + 1e-12)
    assert (cos > 1).any(), "no cosine rounds above 1 here: the test needs one"
    chosen, overlaps = choose_neighbours([sample, sample], (H, W), K=np.stack([K, K]), cam2world=np.stack([T, T]))
    assert chosen == [[], []] and overlaps == [[1], [0]], (chosen, overlaps)


def _views_of_the_wall(focals: list[float]) -> tuple[np.ndarray, ...]:
    """Views of the wall from (almost) one place, view n 0.1 mm to the side per n (which tells the cameras
    apart), each with its own focal length: depth, rays, K, poses."""
    Ks = np.stack([np.array([[f, 0, 63.5], [0, f, 47.5], [0, 0, 1]]) for f in focals])
    rays = np.stack([pinhole_rays(k=k) for k in Ks])
    poses = np.stack([look_at((1e-4 * n, 0.0, 0.0), target=(1e-4 * n, 0.0, 3.0)) for n in range(len(focals))])
    depth = np.stack([wall_depth(T, r) for T, r in zip(poses, rays)])
    return depth, rays, Ks, poses


def test_matching_takes_the_finer_images_with_their_focal_length_and_pixels(monkeypatch):
    """Given the views at twice the size, each pair is matched on those images: the focal length and the pixel a
    direction lands on are the larger picture's, the rays stay the depth map's."""
    import heads.recon.fusion as fusion
    from heads.recon.mvs import Stereo

    depth, rays, Ks, poses = _views_of_the_wall([100.0, 100.0])
    poses[1, 0, 3] = 0.3  # a baseline to match across
    V, h, w = depth.shape
    grays = np.zeros((V, h, w), np.uint8)
    fine = np.zeros((V, 2 * h, 2 * w), np.uint8)
    seen = []

    def recorded(view, candidates, z_range, s):
        seen.append(view)
        return np.full((h, w), np.nan, np.float32), 0

    monkeypatch.setattr(fusion, "view_depth", recorded)
    fusion._match_views(depth.astype(np.float32), rays.astype(np.float32), cam2world=poses, K=Ks, grays=grays,
                        valid=np.ones((V, h, w), bool), measured=None, order=[[1], [0]], tracks=None, s=Stereo(),
                        matched=np.zeros((V, h, w), bool), fine=fine)
    assert len(seen) == V
    for view in seen:
        assert view["image"].shape == (2 * h, 2 * w) and view["rays"].shape == (h, w, 2)
        assert view["f"] == pytest.approx(200.0)
        u, v = view["project"](np.array([0.0]), np.array([0.0]))  # the optical axis: the principal point, doubled
        assert u[0] == pytest.approx((63.5 + 0.5) * 2 - 0.5, abs=0.01) and v[0] == pytest.approx(95.5, abs=0.01)


def test_the_views_a_pixel_is_compared_with_are_the_most_overlapping_and_with_a_window_both_near_and_far(
        monkeypatch):
    import heads.recon.fusion as fusion

    depth, rays, Ks, poses = _views_of_the_wall([100.0] * 11)
    compared: list[int] = []
    landing = fusion._landing

    def recorded(X, k, c2w, hw):
        if len(X):  # only the view under test has valid pixels
            compared.append(int(round(c2w[0, 3] / 1e-4)))
        return landing(X, k, c2w, hw)

    monkeypatch.setattr(fusion, "_landing", recorded)

    def ranked(v: int, overlapping_v: list[int], **options) -> list[int]:
        valid = np.zeros(depth.shape, bool)
        valid[v] = True
        overlapping = [[] for _ in range(len(depth))]
        overlapping[v] = overlapping_v
        compared.clear()
        finest_view(depth, rays, K=Ks, cam2world=poses, valid=valid, overlapping=overlapping, rtol=0.01, **options)
        return list(compared)

    assert ranked(0, list(range(10, 0, -1))) == [10, 9, 8, 7, 6, 5, 4, 3], "not the 8 most overlapping"
    order = [9, 7, 0, 4, 3, 10, 6, 1, 2, 8]  # for view 5; within 2 frames: 7, 4, 3, 6
    assert ranked(5, order, most=2, window=2) == [7, 4, 9, 0], "not the 2 most within the window, then 2 beyond"
    assert ranked(5, order, most=2) == [9, 7]


def test_a_coarser_view_holds_none_of_a_finer_ones_pixels_whether_matching_found_them_or_not():
    """View 0 sees the wall at 2/3 of view 1's resolution: each of view 1's pixels is its own to keep (view 0
    coming first breaks only ties), and view 0's pixels that view 1 sees are view 1's."""
    depth, rays, Ks, poses = _views_of_the_wall([100.0 / 1.5, 100.0])
    valid = np.ones(depth.shape, bool)
    for matched in (None, np.zeros(depth.shape, bool), np.ones(depth.shape, bool)):
        own = finest_view(depth, rays, K=Ks, cam2world=poses, valid=valid, overlapping=[[1], [0]], rtol=0.01,
                          matched=matched)
        assert own[1].all(), f"view 1 lost {int((~own[1]).sum())} pixels to a coarser view (matched={matched is not None and matched.any()})"
        assert not own[0, 40:56, 50:78].any(), "view 0 kept pixels view 1 sees finer"


@pytest.mark.slow
def test_evaluate_refine_moves_a_scene_on_exact_cameras_little_and_says_by_how_much(cli, tmp_path, unseen):
    """On exact cameras the path's alignment is right: refining it on the cloud (--refine) moves it little
    (measured: scale x0.9893, 1.14 deg, its points 1.7 cm on average, F@2cm 0.864 -> 0.876: ICP fits the
    cloud's own errors, so a refined score flatters a little; point-to-point ICP also stops up to 1.5 % off a
    scale, test_evaluate_refine.py), scores every row after it, and says so."""
    code, _, err = cli(["recon3d", unseen / "images", "-o", tmp_path / "s", "--cameras", "json", "-q"])
    assert code == 0, err
    args = ["evaluate", "recon3d", tmp_path / "s", "--data", unseen, "--dataset", "generic-rgbd", "--depth-scale",
            "1000", "--no-sensor-offset", "--json"]
    code, out, err = cli(args)
    plain = json.loads(out)
    assert code == 0 and plain["refined"] is None and "refined on" not in err
    code, out, err = cli([*args, "--refine"])
    refined = json.loads(out)
    assert code == 0 and "refined on the scene's geometry: scale x" in err, err
    r = refined["refined"]
    assert abs(r["scale"] - 1) < 0.015 and r["shift"] < 0.03 and r["degrees"] < 1.5, r
    assert f"its points moved {100 * r['shift']:.1f} cm on average" in err
    for row in ("scene", "recorded_depth_on_cameras", "constant_depth_on_cameras"):  # every row after the move
        assert refined["rows"][row]["accuracy"] != plain["rows"][row]["accuracy"], row
    assert plain["rows"]["scene"]["f@0.02"] - 0.02 <= refined["rows"]["scene"]["f@0.02"] \
        <= plain["rows"]["scene"]["f@0.02"] + 0.05
    assert refined["rows"]["recorded_depth_on_cameras"]["f@0.02"] > 0.9
    code, out, err = cli([*args, "--refine", "--by-range", "0.4,0.6"])  # the object lies 0.2-0.8 m away
    row = json.loads(out)["rows"]["scene"]
    bands = row["by_range"]
    assert code == 0 and [(b["from"], b["to"]) for b in bands] == [(0.0, 0.4), (0.4, 0.6), (0.6, None)]
    assert sum(b["points"] for b in bands) == pytest.approx(1.0) and sum(b["truth"] for b in bands) == pytest.approx(1.0)
    for tau in ("0.02", "0.05"):  # the bands split the row's own points, after the refinement moved them
        assert sum(b["points"] * (b[f"precision@{tau}"] or 0) for b in bands) == pytest.approx(
            row[f"precision@{tau}"], abs=1e-9)
        assert sum(b["truth"] * (b[f"recall@{tau}"] or 0) for b in bands) == pytest.approx(row[f"recall@{tau}"],
                                                                                           abs=1e-9)
    near = next(b for b in bands if b["points"] > 0.1)
    assert f"{'scene':<28s} {'0-0.4' if near['from'] == 0 else '0.4-0.6':>9s}" in err, err
    assert "by_range" not in plain["rows"]["scene"]
    code, _, err = cli([*args, "--by-range", "2,1"])
    assert code == 2 and "--by-range 2,1: expected band edges in metres, positive and ascending" in err

"""Stereo on rendered views of a textured wall with known depth and cameras (heads.recon.mvs): the rectified
frames, the sampling maps, the depth of a pair and of a view, and the prior's filling. Small images, fast."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from heads.recon import mvs
from heads.recon.mvs import (RayProjector, Stereo, _push_pull, _sampling_map, fill_from_prior, pair_depth,
                             parallax_deg, rectify, search_range, textured, view_depth)

from .test_dense import wall_depth  # the depth of the wall z = Z_WALL along each ray

H, W = 64, 96
F, CX, CY = 80.0, 47.5, 31.5
Z_WALL = 3.0


def pinhole_rays(h: int = H, w: int = W, f: float = F, cx: float = CX, cy: float = CY) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - cx) / f, (v - cy) / f], -1)


def lens_rays(k1: float, h: int = H, w: int = W) -> np.ndarray:
    """The rays of a lens with radial distortion x_d = x (1 + k1 r^2) (k1 > 0: a pincushion lens, whose image of
    a rectified frame bulges at the middle of its borders)."""
    xd = pinhole_rays(h, w)
    x = xd.copy()
    for _ in range(50):
        r2 = (x ** 2).sum(-1, keepdims=True)
        x = xd / (1 + k1 * r2)
    return x


def pose(t=(0.0, 0.0, 0.0), R: np.ndarray = np.eye(3)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def turn(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Grey levels 0-1 painted on the wall at world x, y: blobs at several scales."""
    rng = np.random.default_rng(3)
    out = np.zeros_like(x)
    for freq in (4.0, 9.0, 19.0, 37.0):
        a, b, p, q = rng.uniform(0.6, 1.4, 4)
        out += np.sin(freq * a * x + 5 * p) * np.cos(freq * b * y + 5 * q) / np.sqrt(freq)
    return np.clip(0.5 + 0.9 * out, 0, 1)


def view(T: np.ndarray, rays: np.ndarray | None = None, z_wall: float = Z_WALL) -> dict:
    """The wall seen from camera T, as :func:`pair_depth` takes a view."""
    rays = pinhole_rays() if rays is None else rays
    d = np.concatenate([np.nan_to_num(rays), np.ones(rays.shape[:2] + (1,))], -1) @ T[:3, :3].T
    points = T[:3, 3] + d * ((z_wall - T[2, 3]) / d[..., 2])[..., None]
    image = (texture(points[..., 0], points[..., 1]) * 255).round().astype(np.uint8)
    return {"image": image, "rays": rays, "project": RayProjector(rays), "f": F, "cam2world": T}


def relative_error(z: np.ndarray, truth: np.ndarray) -> np.ndarray:
    ok = np.isfinite(z)
    return np.abs(z[ok] / truth[ok] - 1)


# ---------------------------------------------------------------------------- the camera model


def test_rays_are_projected_back_onto_their_own_pixels():
    """A pinhole camera and a lens with distortion: each pixel's ray lands on that pixel, to a hundredth of a
    pixel, and ``error`` says so."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    for rays in (pinhole_rays(), lens_rays(0.2), lens_rays(-0.15)):
        project = RayProjector(rays)
        pu, pv = project(rays[..., 0], rays[..., 1])
        assert pu.shape == (H, W) and pv.shape == (H, W)
        assert np.abs(pu - u).max() < 0.01 and np.abs(pv - v).max() < 0.01, (np.abs(pu - u).max(), np.abs(pv - v).max())
        assert 0 <= project.error < 0.01, project.error


def test_the_default_fit_is_the_least_squares_polynomial_of_degree_5_on_every_second_pixel():
    """Against the fit written out: monomials x^i y^j (i + j <= 5) of the rays at even rows and columns, least
    squares on their pixels; a lens that no polynomial follows exactly tells degrees and samplings apart."""
    rays = lens_rays(0.6)
    rays[..., 0] += 0.02 * np.sin(9 * rays[..., 1])  # a little off any low degree polynomial
    v, u = np.mgrid[0:H:2, 0:W:2]
    r = rays[::2, ::2].reshape(-1, 2)
    A = np.stack([r[:, 0] ** i * r[:, 1] ** j for i in range(6) for j in range(6 - i)], -1)
    coef = np.linalg.lstsq(A, np.stack([u.ravel(), v.ravel()], 1).astype(np.float64), rcond=None)[0]
    project = RayProjector(rays)
    x, y = rays[..., 0], rays[..., 1]
    want = np.stack([x ** i * y ** j for i in range(6) for j in range(6 - i)], -1) @ coef
    pu, pv = project(x, y)
    assert np.abs(pu - want[..., 0]).max() < 1e-6 and np.abs(pv - want[..., 1]).max() < 1e-6, \
        (np.abs(pu - want[..., 0]).max(), np.abs(pv - want[..., 1]).max())
    miss = np.abs(A @ coef - np.stack([u.ravel(), v.ravel()], 1)).max()
    assert project.error == pytest.approx(miss, rel=1e-6), (project.error, miss)
    assert miss > 0.01  # the lens is one a degree-5 fit misses


def test_a_wide_angle_camera_is_fitted_as_well_as_a_narrow_one():
    """Rays out to x/z = 20 (a 175-degree view): the fit is made on coordinates scaled to about 1, so the
    high powers do not swamp it."""
    rays = pinhole_rays(f=2.0)
    project = RayProjector(rays)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    pu, pv = project(rays[..., 0], rays[..., 1])
    assert np.abs(pu - u).max() < 1e-6 and np.abs(pv - v).max() < 1e-6 and project.error < 1e-6, \
        (np.abs(pu - u).max(), np.abs(pv - v).max(), project.error)


@pytest.mark.parametrize("known, fitted", [(0, False), (50, False), (51, True), (400, True)])
def test_a_ray_map_with_50_or_fewer_known_samples_has_no_fit(known, fitted):
    """Samples are the rays at even rows and columns; with 50 or fewer of them known the fit is refused
    (``error`` infinite), with 51 it is made."""
    rays = np.full((H, W, 2), np.nan)
    full = pinhole_rays()
    v, u = np.mgrid[0:H:2, 0:W:2]
    pick = np.random.default_rng(0).permutation(v.size)[:known]
    rows, cols = v.ravel()[pick], u.ravel()[pick]
    rays[rows, cols] = full[rows, cols]
    rays[rows + 1, cols] = full[rows + 1, cols]  # odd rows are no samples: they change nothing
    project = RayProjector(rays)
    if not fitted:
        assert project.coef is None and project.error == np.inf, project.error
        return
    pu, pv = project(full[rows, cols, 0], full[rows, cols, 1])
    assert np.abs(pu - cols).max() < 1e-6 and np.abs(pv - rows).max() < 1e-6 and project.error < 1e-6


# ---------------------------------------------------------------------------- rectified frames


def mean_view_normal_to(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    z = a[:3, 2] + b[:3, 2]
    z = z - (z @ x) * x
    return z / np.linalg.norm(z)


@pytest.mark.parametrize("b", [pose((0.3, 0.1, 0.05), turn("y", 8) @ turn("x", -5)), pose((-1.0, 0.0, 0.0)),
                               pose((0.0, 0.7, 0.2), turn("z", 20)), pose((1.0, 0.0, 0.0))],
                         ids=["right-turned", "left", "below-rolled", "one-metre"])
def test_rectified_frames_turn_the_baseline_onto_the_rows(b):
    """Both rotations are proper; the rectified frame's x axis runs from a's centre to b's, its z axis is the
    two cameras' mean viewing direction made normal to the baseline; a point seen by both lies on one row."""
    a = pose((0.1, -0.2, 0.0), turn("y", -4))
    Ra, Rb, baseline = rectify(a, b)
    step = b[:3, 3] - a[:3, 3]
    assert baseline == pytest.approx(np.linalg.norm(step), rel=1e-12)
    for R in (Ra, Rb):
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.linalg.det(R) == pytest.approx(1.0)
    world_to_rect = Ra @ a[:3, :3].T
    assert np.allclose(Rb @ b[:3, :3].T, world_to_rect, atol=1e-12)
    assert np.allclose(world_to_rect[0], step / baseline, atol=1e-12)
    assert np.allclose(world_to_rect[2], mean_view_normal_to(step / baseline, a, b), atol=1e-12)
    X = np.array([0.2, -0.3, 3.0])
    in_a, in_b = world_to_rect @ (X - a[:3, 3]), world_to_rect @ (X - b[:3, 3])
    assert in_a[1] / in_a[2] == pytest.approx(in_b[1] / in_b[2]) and in_a[0] / in_a[2] > in_b[0] / in_b[2]


@pytest.mark.parametrize("degrees, rectified", [(0, False), (8, False), (10.5, True), (12, True), (90, True)])
def test_a_baseline_within_10_degrees_of_the_viewing_direction_cannot_be_rectified(degrees, rectified):
    """Baselines of 0.5 m at an angle to the cameras' common viewing direction (two cameras looking along z)."""
    a = pose()
    t = 0.5 * np.array([np.sin(np.radians(degrees)), 0.0, np.cos(np.radians(degrees))])
    got = rectify(a, pose(t))
    assert (got is not None) == rectified, (degrees, got)


def test_a_baseline_exactly_10_degrees_off_the_viewing_direction_is_rectified():
    """The limit is "within": 0.1 m at exactly 10 degrees (both sides of the test equal to the last bit) is
    rectified."""
    t = 0.1 * np.array([np.sin(np.radians(10)), 0.0, np.cos(np.radians(10))])
    z = 2 * np.array([0.0, 0.0, 1.0])
    assert np.linalg.norm(np.cross(z, t)) == np.sin(np.radians(10)) * 2 * np.linalg.norm(t)  # the tie itself
    assert rectify(pose(), pose(t)) is not None


def test_cameras_at_one_place_cannot_be_rectified():
    assert rectify(pose((1.0, 2.0, 3.0)), pose((1.0, 2.0, 3.0), turn("y", 10))) is None


# ---------------------------------------------------------------------------- sampling maps


def projected(R: np.ndarray, K_rect: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pinhole camera's pixel (F, CX, CY) that rectified pixel (u, v) shows, the camera turned by R."""
    d = np.stack([(u - K_rect[0, 2]) / K_rect[0, 0], (v - K_rect[1, 2]) / K_rect[1, 1], np.ones_like(u)], -1) @ R
    return F * d[..., 0] / d[..., 2] + CX, F * d[..., 1] / d[..., 2] + CY


@pytest.mark.parametrize("R", [np.eye(3), turn("y", 12) @ turn("x", -6) @ turn("z", 9)], ids=["straight", "turned"])
def test_the_sampling_map_holds_the_camera_pixel_each_rectified_pixel_shows(R):
    """Exactly (float32) at every 8th pixel where the camera's model is evaluated, within a fifth of a pixel
    between, over the whole rectified image (its size (w, h) and principal point differ here)."""
    K_rect = np.array([[70.0, 0, 52.25], [0, 75.0, 30.5], [0, 0, 1]])
    size = (101, 70)
    mu, mv = _sampling_map(RayProjector(pinhole_rays()), R, K_rect, size)
    assert mu.shape == (70, 101) and mv.shape == (70, 101) and mu.dtype == np.float32 and mv.dtype == np.float32
    v, u = np.mgrid[0:70, 0:101].astype(np.float64)
    want_u, want_v = projected(R, K_rect, u, v)
    assert np.abs(mu - want_u).max() < 0.2 and np.abs(mv - want_v).max() < 0.2, \
        (np.abs(mu - want_u).max(), np.abs(mv - want_v).max())
    nodes = (slice(0, None, 8), slice(0, None, 8))
    assert np.abs(mu[nodes] - want_u[nodes]).max() < 2e-3 and np.abs(mv[nodes] - want_v[nodes]).max() < 2e-3


def test_rectified_pixels_behind_the_camera_are_sent_far_off_its_image():
    """A camera turned 120 degrees from the rectified frame: directions behind it (or grazing it) map to
    -10^4, never onto its image."""
    R = turn("y", 120)
    K_rect = np.array([[40.0, 0, 50.0], [0, 40.0, 30.0], [0, 0, 1]])
    mu, mv = _sampling_map(RayProjector(pinhole_rays()), R, K_rect, (101, 61), step=4)
    v, u = np.mgrid[0:61:4, 0:101:4].astype(np.float64)
    d = np.stack([(u - 50.0) / 40.0, (v - 30.0) / 40.0, np.ones_like(u)], -1) @ R
    behind = d[..., 2] <= 1e-3
    assert behind.any() and (~behind).any()
    assert np.all(mu[::4, ::4][behind] == -1e4) and np.all(mv[::4, ::4][behind] == -1e4)
    want_u, want_v = projected(R, K_rect, u, v)
    front = ~behind
    assert np.abs(mu[::4, ::4][front] - want_u[front]).max() < 1e-2


# ---------------------------------------------------------------------------- one pair


def parallel_pair(offset=(0.3, 0.0, 0.0), rays: np.ndarray | None = None) -> tuple[dict, dict, np.ndarray]:
    """Views a (at the origin) and b (at ``offset``), both looking straight at the wall, and a's true depth."""
    a, b = view(pose(), rays), view(pose(offset), rays)
    return a, b, wall_depth(a["cam2world"], a["rays"])


def test_a_parallel_pair_finds_the_wall_where_both_see_it():
    """b 0.3 m to the right: the wall lies 8 px apart in the two (f b / z). Where b sees it (a's columns from 8
    on) the depth is found, exactly on most pixels, right up to b's first column, at every border of a; a's
    columns that b does not see stay empty; the depth comes as float32."""
    a, b, truth = parallel_pair()
    z = pair_depth(a, b, (0.5, 20.0))
    assert z.shape == (H, W) and z.dtype == np.float32, (z.shape, z.dtype)
    err = relative_error(z, truth)
    assert np.median(err) < 1e-3 and np.percentile(err, 95) < 0.01, (np.median(err), np.percentile(err, 95))
    found = np.isfinite(z)
    assert found[:, :7].mean() < 0.02, found[:, :7].sum(0)  # b sees none of these (a stray mismatch at most)
    assert found[:, 8:].mean() > 0.9 and found[:, 8].mean() > 0.2, (found[:, 8:].mean(), found[:, 8].mean())
    assert found[0, 8:].mean() > 0.2 and found[-1, 8:].mean() > 0.5 and found[:, -1].mean() > 0.1  # a's borders


def test_a_pair_finds_the_wall_with_b_on_the_left():
    """b 0.3 m to the left: the rectified frame is turned half a turn; a's right columns are the unseen ones."""
    a, b, truth = parallel_pair((-0.3, 0.0, 0.0))
    z = pair_depth(a, b, (0.5, 20.0))
    err = relative_error(z, truth)
    assert np.median(err) < 1e-3 and np.percentile(err, 95) < 0.01, (np.median(err), np.percentile(err, 95))
    found = np.isfinite(z)
    assert found[:, -7:].mean() < 0.1, found[:, -7:].sum(0)
    assert found[:, :-8].mean() > 0.9 and found[:, -9].mean() > 0.3, (found[:, :-8].mean(), found[:, -9].mean())
    assert found[0, :-8].mean() > 0.5 and found[-1, :-8].mean() > 0.5 and found[:, 0].mean() > 0.2


@pytest.mark.parametrize("offset", [(0.0, 0.3, 0.0), (0.0, -0.3, 0.0)], ids=["below", "above"])
def test_a_pair_one_above_the_other_finds_the_wall(offset):
    """A vertical baseline: the rectified rows run down a's columns; b does not see a's rows beyond its edge."""
    a, b, truth = parallel_pair(offset)
    z = pair_depth(a, b, (0.5, 20.0))
    err = relative_error(z, truth)
    assert np.median(err) < 2e-3 and np.percentile(err, 95) < 0.01, (np.median(err), np.percentile(err, 95))
    found = np.isfinite(z)
    unseen, edge = (slice(0, 7), 8) if offset[1] > 0 else (slice(H - 7, H), H - 9)  # edge: b's first or last row
    assert found[unseen].mean() < 0.2 and found.mean() > 0.8, (found[unseen].mean(), found.mean())
    assert found[edge].mean() > 0.3, found[edge].mean()


def test_turned_cameras_of_a_lens_with_distortion_find_the_wall():
    """Cameras turned towards each other (and rolled, and one ahead of the other) through a pincushion lens:
    rectifying resamples both (bilinearly: sampling the nearest pixel loses about a quarter of SGBM's sub-pixel
    accuracy here), and the depth along a's own rays comes back (within SGBM's sub-pixel bias)."""
    rays = lens_rays(0.15)
    a = view(pose((0.0, 0.0, 0.0), turn("y", 8) @ turn("z", 4)), rays)
    b = view(pose((0.5, 0.05, 0.1), turn("y", -8) @ turn("x", 3)), rays)
    truth = wall_depth(a["cam2world"], rays)
    z = pair_depth(a, b, (0.5, 20.0))
    err = relative_error(z, truth)
    assert np.median(err) < 0.0095 and np.percentile(err, 95) < 0.026, (np.median(err), np.percentile(err, 95))
    assert np.isfinite(z).mean() > 0.7, np.isfinite(z).mean()


def test_tilted_cameras_turned_off_the_baseline_find_the_wall():
    """Both cameras tilted 30 degrees down and turned 20 degrees the same way: the rectified frame looks
    square to the baseline, 20 degrees off each camera, and the tilted wall's depth changes down its rows;
    each of a's pixels takes the depth of its own ray's row and column in the rectified image."""
    R = turn("x", 30) @ turn("y", 20)
    a, b = view(pose((0.0, 0.0, 0.0), R)), view(pose((0.5, 0.0, 0.0), R))
    z = pair_depth(a, b, (0.5, 20.0))
    err = relative_error(z, wall_depth(a["cam2world"], a["rays"]))
    assert np.median(err) < 0.016 and np.percentile(err, 95) < 0.07, (np.median(err), np.percentile(err, 95))
    assert np.isfinite(z).mean() > 0.7, np.isfinite(z).mean()


def test_pixels_without_a_ray_get_no_depth():
    """A lens's unknown rays (NaN, a corner of the image) get no depth; the rest are found as with full rays."""
    a, b, truth = parallel_pair()
    rays = a["rays"].copy()
    rays[:20, -30:] = np.nan
    a = dict(a, rays=rays, project=RayProjector(rays))
    z = pair_depth(a, b, (0.5, 20.0))
    assert np.isnan(z[:20, -30:]).all()
    assert np.isfinite(z[20:, 8:]).mean() > 0.9 and np.median(relative_error(z, truth)) < 1e-3


def test_a_lens_whose_image_is_cut_by_its_frame_gets_no_depth_off_the_rectified_image():
    """Rays known inside a circle wider than the image is high (a fisheye's image cut at top and bottom): only
    the top and bottom borders hold known rays, so the rectified image is the box around them, and the pixels
    of the circle's sides beyond it get no depth (never a depth of 0)."""
    rays = pinhole_rays()
    v, u = np.mgrid[0:H, 0:W]
    rays[np.hypot(u - CX, v - CY) > 40] = np.nan
    a, b = view(pose(), rays), view(pose((-0.3, 0.0, 0.0)), rays)
    z = pair_depth(a, b, (0.5, 20.0))
    inside = np.isfinite(rays).all(-1)
    assert np.isnan(z[~inside]).all() and (z[np.isfinite(z)] > 0).all()
    outside_box = inside & (np.abs(u - CX) > np.sqrt(40 ** 2 - CY ** 2) + 1)  # beyond the border rays' box
    assert outside_box.any() and np.isnan(z[outside_box]).all()
    assert np.isfinite(z).mean() > 0.3


def test_a_pair_whose_baseline_points_into_the_view_is_not_matched():
    """b straight ahead of a (the epipole in a's image), or 30 degrees off a's axis (its direction inside a's
    field of view): no rectified pair holds a's image, even with any canvas allowed."""
    a = view(pose())
    for t in ((0.0, 0.0, 0.5), (0.25, 0.0, 0.433)):
        assert pair_depth(a, view(pose(t)), (0.5, 20.0), Stereo(max_canvas=1e9)) is None, t
    assert pair_depth(a, view(pose()), (0.5, 20.0)) is None  # no baseline


@pytest.mark.parametrize("degrees, matched", [(41, False), (46, True)])
def test_a_pair_is_not_matched_when_a_sees_within_78_degrees_of_the_baseline(degrees, matched):
    """b 41 degrees off a's axis (outside its 31-degree half field of view): a's edge reaches 80 degrees from
    the rectified axis, past where rectifying holds it (cos 0.2, 78.5 degrees): not matched, whatever canvas is
    allowed; at 46 degrees its edge stays within 76 degrees: matched."""
    t = 0.4 * np.array([np.sin(np.radians(degrees)), 0.0, np.cos(np.radians(degrees))])
    z = pair_depth(view(pose()), view(pose(t)), (0.5, 20.0), Stereo(max_canvas=1e9))
    assert (z is not None) == matched, degrees


def test_a_pair_whose_rectified_image_is_too_large_is_not_matched():
    """b at 50 degrees off a's axis, outside a's view: rectified, a's image spreads over 4 to 6 times its
    size; matched with ``max_canvas`` 6, not with 4."""
    a = view(pose())
    t = 0.4 * np.array([np.sin(np.radians(50)), 0.0, np.cos(np.radians(50))])
    b = view(pose(t))
    assert pair_depth(a, b, (0.5, 20.0), Stereo(max_canvas=4.0)) is None
    z = pair_depth(a, b, (0.5, 20.0), Stereo(max_canvas=6.0))
    assert z is not None and np.isfinite(z).any()
    a, b, _ = parallel_pair()  # rectified as it is: its canvas is exactly the view's size, which is allowed
    assert pair_depth(a, b, (0.5, 20.0), Stereo(max_canvas=1.0)) is not None


class SGBMSpy:
    """OpenCV's SGBM as pair_depth makes it, its settings and the rectified images it matches kept."""

    def __init__(self) -> None:
        self.real, self.settings, self.images = cv2.StereoSGBM_create, [], []

    def __call__(self, **settings):
        self.settings.append(settings)
        return self

    def compute(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        self.images.append((left, right))
        return self.real(**self.settings[-1]).compute(left, right)


@pytest.mark.parametrize("z_range", [(0.5, 20.0), (2.0, 3.0), (1.4, 2.9)])
def test_sgbm_searches_the_disparities_of_the_depth_range_with_the_documented_settings(monkeypatch, z_range):
    """The disparities searched run from one below the far end's (f b / far) to past the near end's, in a count
    that is the least multiple of 16 doing so; smoothness P1 = 8 block^2 and P2 = 32 block^2 (OpenCV's own
    advice for grey images), a left-right check to 1 px, speckles under 50 px or varying by more than 2 dropped,
    the 3-way mode; block and uniqueness from ``Stereo``."""
    spy = SGBMSpy()
    monkeypatch.setattr(cv2, "StereoSGBM_create", spy)
    a, b, _ = parallel_pair()
    s = Stereo(block=5, uniqueness=7)
    assert pair_depth(a, b, z_range, s) is not None
    (got,) = spy.settings
    near, far = F * 0.3 / z_range[0], F * 0.3 / z_range[1]  # disparities of the range's ends
    lowest, count = got["minDisparity"], got["numDisparities"]
    assert lowest == np.floor(far) - 1, (lowest, far)
    assert count % 16 == 0 and lowest + count >= near + 1 > lowest + count - 16, (lowest, count, near)
    assert got == dict(minDisparity=lowest, numDisparities=count, blockSize=5, P1=8 * 25, P2=32 * 25, disp12MaxDiff=1,
                       uniquenessRatio=7, speckleWindowSize=50, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)


@pytest.mark.parametrize("lens, turned", [(0.0, True), (0.15, True), (-0.1, True), (0.15, False)],
                         ids=["pinhole-turned", "pincushion-turned", "barrel-turned", "pincushion-parallel"])
def test_the_rectified_image_is_just_large_enough_for_all_of_a(monkeypatch, lens, turned):
    """The rectified image SGBM matches is the box around all of a's pixels seen from the rectified frame (one
    pixel per focal-length unit), with the columns SGBM leaves unmatched added on the left; for a lens whose
    borders bow out (the pincushion's, straight on), the middles of a's borders set it."""
    spy = SGBMSpy()
    monkeypatch.setattr(cv2, "StereoSGBM_create", spy)
    rays = lens_rays(lens) if lens else pinhole_rays()
    if turned:
        a = view(pose((0.0, 0.0, 0.0), turn("y", 8) @ turn("x", 5)), rays)
        b = view(pose((0.4, 0.1, 0.05), turn("y", -6)), rays)
    else:
        a, b, _ = parallel_pair((0.3, 0.0, 0.0), rays)
    assert pair_depth(a, b, (0.5, 20.0)) is not None
    Ra, _, _ = rectify(a["cam2world"], b["cam2world"])
    d = np.concatenate([rays, np.ones((H, W, 1))], -1).reshape(-1, 3) @ Ra.T
    u, v = F * d[:, 0] / d[:, 2], F * d[:, 1] / d[:, 2]
    width, height = int(np.ceil(u.max() - u.min())) + 1, int(np.ceil(v.max() - v.min())) + 1
    pad = spy.settings[0]["minDisparity"] + spy.settings[0]["numDisparities"]
    (left, right), = spy.images
    assert left.shape == right.shape == (height, width + pad), (left.shape, height, width, pad)
    assert left.dtype == np.uint8 and not left[:, :pad - 2].any()  # nothing of a where SGBM cannot match


@pytest.mark.parametrize("far, found", [(3.0, True), (3.2, True), (2.6, False)])
def test_a_wall_at_the_far_end_of_the_range_is_found_and_one_beyond_it_is_not(far, found):
    """The wall's disparity is 8 (f b / z); searched down to far = 3 m (7 is the lowest disparity searched) or
    3.2 m it is found; with far = 2.6 m (lowest 8) SGBM can only clamp it to the range's end: no depth."""
    a, b, truth = parallel_pair()
    z = pair_depth(a, b, (0.5, far))
    seen = np.isfinite(z[:, 8:]).mean()
    assert (seen > 0.8) if found else (seen < 0.05), (far, seen)


@pytest.mark.parametrize("z_wall, near, found", [(F * 0.3 / 13, 1.9, True), (F * 0.3 / 16, 1.8, False),
                                                 (F * 0.3 / 13, 1.2, True)])
def test_a_wall_at_the_near_end_of_the_range_is_found_and_one_before_it_is_not(z_wall, near, found):
    """Ranges reaching 100 m (lowest disparity -1): from 1.9 m or 1.8 m the highest disparity searched is 14
    (count 16); a wall of disparity 13 (1.85 m) is found, one of 16 (1.5 m) can only be clamped to 14, the
    range's end: no depth. From 1.2 m (count 32) the 13 is well inside."""
    d = round(F * 0.3 / z_wall)
    a, b = view(pose(), z_wall=z_wall), view(pose((0.3, 0.0, 0.0)), z_wall=z_wall)
    z = pair_depth(a, b, (near, 100.0))
    seen = np.isfinite(z[:, d:]).mean()
    assert (seen > 0.8) if found else (seen < 0.3), (near, seen)  # a few stray matches at most


def test_a_far_wall_of_disparity_one_is_found():
    """A wall 24 m away seen over 0.3 m: disparity 1, searched from -1 up (the range reaching 100 m)."""
    a, b = view(pose(), z_wall=24.0), view(pose((0.3, 0.0, 0.0)), z_wall=24.0)
    z = pair_depth(a, b, (0.5, 100.0))
    assert np.isfinite(z).mean() > 0.7 and np.nanmedian(np.abs(z / 24.0 - 1)) < 0.05, np.isfinite(z).mean()


# ---------------------------------------------------------------------------- texture and parallax


def test_textured_pixels_are_those_whose_5x5_neighbourhood_varies_by_the_threshold():
    """Against the standard deviation over each 5 x 5 window worked out directly (inside the image, away from
    ties), for several thresholds; a blank image is textured only for a threshold of 0."""
    rng = np.random.default_rng(4)
    image = (np.add.outer(np.arange(40), np.arange(50)) * 3 + rng.integers(0, 12, (40, 50))).astype(np.uint8)
    image[10:25, 10:30] = 90 + rng.integers(0, 4, (15, 20))
    windows = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (5, 5))
    std = windows.std(axis=(-1, -2))  # (36, 46): centred at 2..37, 2..47
    for min_std in (1.0, 2.0, 3.0, 5.0):
        got = textured(image, min_std)[2:-2, 2:-2]
        clear = np.abs(std - min_std) > 1e-3
        assert np.array_equal(got[clear], (std >= min_std)[clear]), min_std
        assert got.any() and not got.all()
    assert textured(np.zeros((20, 20), np.uint8), 0.0).all() and not textured(np.zeros((20, 20), np.uint8), 0.5).any()


def test_parallax_is_the_angle_the_baseline_makes_at_the_depth_midway():
    a = pose((1.0, 2.0, -1.0), turn("y", 30))
    b = pose((1.0, 4.0, -1.0), turn("x", -20))  # 2 m apart: at 1 m, 90 degrees
    assert parallax_deg(a, b, 1.0) == pytest.approx(90.0)
    assert parallax_deg(a, b, 2.0) == pytest.approx(2 * np.degrees(np.arctan(0.5)))
    assert parallax_deg(pose((0.3, 0, 0)), pose((0.0, 0.4, 0)), 10.0) == pytest.approx(2 * np.degrees(np.arctan(0.025)))


# ---------------------------------------------------------------------------- a view from its pairs


class FakePairs:
    """pair_depth replaced: each neighbour's depth map is given (None: the pair cannot be rectified); the calls
    are kept."""

    def __init__(self, depths: dict) -> None:
        self.depths, self.calls = depths, []

    def __call__(self, a: dict, b: dict, z_range, s):
        self.calls.append((a["name"], b["name"], z_range, s))
        return self.depths[b["name"]]


def neighbour(name: str, x: float) -> dict:
    return {"name": name, "cam2world": pose((x, 0.0, 0.0))}


def the_view(h: int = 2, w: int = 3) -> dict:
    return {"name": "a", "cam2world": pose(), "image": np.zeros((h, w), np.uint8), "rays": np.zeros((h, w, 2))}


def test_a_view_keeps_the_median_where_enough_pairs_agree(monkeypatch):
    """Three pairs, ``agree`` 2 within 2 %: a pixel all agree on, one two agree on (the third far off), one no two
    agree on, one found by a single pair, one found by none; the median of those found, float32."""
    nan = np.nan
    depths = {"b": np.array([[2.0, 3.0, 1.0], [4.0, nan, nan]], np.float32),
              "c": np.array([[2.02, 3.03, 1.5], [nan, nan, 7.0]], np.float32),
              "d": np.array([[1.99, 9.0, 2.0], [nan, nan, nan]], np.float32)}
    fake = FakePairs(depths)
    monkeypatch.setattr(mvs, "pair_depth", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing found at a pixel is no warning
        z, pairs = view_depth(the_view(), [neighbour("b", 0.3), neighbour("c", -0.3), neighbour("d", 0.35)], (1.0, 9.0))
    assert pairs == 3 and z.dtype == np.float32
    want = np.array([[2.0, 3.03, nan], [nan, nan, nan]], np.float32)
    assert np.array_equal(z, want, equal_nan=True), z
    z1, _ = view_depth(the_view(), [neighbour("b", 0.3)], (1.0, 9.0))  # one pair: all of it (agree is at most all)
    assert np.array_equal(z1, depths["b"], equal_nan=True), z1


def test_neighbours_are_taken_in_order_while_they_have_parallax_and_can_be_rectified(monkeypatch):
    """Range 1-16 m: parallax is judged at 4 m (the geometric mean). Passed over: a neighbour 0.1 m away (1.4
    degrees), one 4 m away (53 degrees), one that cannot be rectified; taken: those at 0.2 m and 2.5 m (the
    least and the most parallax allowed, set to exactly theirs), up to ``pairs`` of them; each matched over the
    view's range with its settings."""
    one = np.ones((2, 3), np.float32)
    depths = {"near": one, "far": one, "ahead": None, "low": one * 2, "high": one * 2, "more": one * 5, "last": one}
    fake = FakePairs(depths)
    monkeypatch.setattr(mvs, "pair_depth", fake)
    low, high = parallax_deg(pose(), pose((0.2, 0, 0)), 4.0), parallax_deg(pose(), pose((2.5, 0, 0)), 4.0)
    s = Stereo(pairs=3, min_angle=low, max_angle=high)
    order = [neighbour("near", 0.1), neighbour("far", 4.0), neighbour("ahead", 0.5), neighbour("low", 0.2),
             neighbour("high", 2.5), neighbour("more", 1.0), neighbour("last", 1.0)]
    z, pairs = view_depth(the_view(), order, (1.0, 16.0), s)
    assert [c[1] for c in fake.calls] == ["ahead", "low", "high", "more"], fake.calls
    assert all(c[2] == (1.0, 16.0) and c[3] is s for c in fake.calls)
    assert pairs == 3 and np.array_equal(z, one * 2), (pairs, z)


def test_with_agree_0_every_pixel_a_pair_found_is_kept_and_no_other(monkeypatch):
    nan = np.nan
    depths = {"b": np.array([[2.0, nan, nan]], np.float32), "c": np.array([[5.0, 3.0, nan]], np.float32)}
    monkeypatch.setattr(mvs, "pair_depth", FakePairs(depths))
    z, pairs = view_depth(the_view(1, 3), [neighbour("b", 0.3), neighbour("c", -0.3)], (1.0, 9.0), Stereo(agree=0))
    assert pairs == 2 and np.array_equal(z, np.array([[3.5, 3.0, nan]], np.float32), equal_nan=True), z


def test_a_view_with_no_pair_has_no_depth(monkeypatch):
    monkeypatch.setattr(mvs, "pair_depth", FakePairs({"ahead": None}))
    z, pairs = view_depth(the_view(4, 5), [neighbour("ahead", 0.5), neighbour("close", 0.01)], (1.0, 9.0))
    assert pairs == 0 and z.shape == (4, 5) and z.dtype == np.float32 and np.isnan(z).all(), (pairs, z)


def test_pairs_agree_up_to_exactly_rtol(monkeypatch):
    """Depths 1, 1 and 1.5 with rtol 0.5: 1.5 is exactly 50 % off the median 1, and agrees: all three do."""
    depths = {"b": np.ones((1, 1), np.float32), "c": np.ones((1, 1), np.float32), "d": np.full((1, 1), 1.5, np.float32)}
    monkeypatch.setattr(mvs, "pair_depth", FakePairs(depths))
    z, pairs = view_depth(the_view(1, 1), [neighbour(n, 0.3) for n in "bcd"], (1.0, 9.0), Stereo(agree=3, rtol=0.5))
    assert pairs == 3 and z[0, 0] == 1.0, z


def test_a_view_matched_for_real_agrees_with_the_wall():
    """Two real neighbours, left and right: their pairs agree on the wall."""
    a, b, truth = parallel_pair()
    c = view(pose((-0.3, 0.0, 0.0)))
    z, pairs = view_depth(a, [b, c], (0.5, 20.0))
    assert pairs == 2 and np.isfinite(z).mean() > 0.7 and np.nanmedian(np.abs(z / truth - 1)) < 1e-3


# ---------------------------------------------------------------------------- search range and prior


def test_the_range_searched_is_the_tracks_widened_by_the_margin():
    assert search_range((2.0, 5.0), np.full((4, 4), np.nan), 1.25) == (1.6, 6.25)


def test_without_tracks_the_range_is_the_priors_widened_by_twice_the_margin():
    """The prior's 1st to 99th percentile of its positive finite depths (zeros, negatives, NaN and inf left out,
    depths under 1 m kept), widened by twice the margin."""
    prior = np.concatenate([np.linspace(0.5, 8.0, 200), [0.0, 0.0, -3.0, np.nan, np.inf, 1000.0]])
    z = np.concatenate([np.linspace(0.5, 8.0, 200), [1000.0]])
    lo, hi = np.percentile(z, [1, 99])
    got = search_range(None, prior, 1.25)
    assert got == pytest.approx((lo / 2.5, hi * 2.5), rel=1e-12), (got, lo, hi)
    assert search_range(None, np.array([0.0, -1.0, np.nan]), 1.25) == (0.1, 100.0)  # nothing to go by


def test_the_prior_fills_the_holes_at_the_scale_of_what_was_matched():
    """A prior 30 % too far and tilted, matched depths (0.5-0.9 m) on the left two thirds: the matched pixels
    come back as they are, the hole on the right takes the prior's shape at their scale, float32."""
    v, u = np.mgrid[0:48, 0:80].astype(np.float64)
    truth = 0.5 + 0.4 * u / 80 + 0.1 * v / 48
    prior = truth * 1.3 * (1 + 0.05 * (v / 48 - 0.5))
    matched = np.where(u < 53, truth, np.nan)
    filled = fill_from_prior(matched, prior)
    hole = u >= 53
    assert filled.dtype == np.float32 and np.array_equal(filled[~hole], truth[~hole].astype(np.float32))
    err = np.abs(filled[hole] / truth[hole] - 1)
    assert np.median(err) < 0.01 and err.max() < 0.05, (np.median(err), err.max())


def test_matched_depths_of_zero_or_less_or_over_a_prior_of_zero_or_less_are_holes():
    """Matched zeros and negatives, and matched pixels where the prior is 0, negative or not finite, are no
    matches: the prior fills them (at the others' scale), nothing infinite or NaN comes out."""
    v, u = np.mgrid[0:32, 0:48].astype(np.float64)
    truth = 0.6 + 0.2 * u / 48
    prior = truth * 2.0
    matched = truth.copy()
    matched[5, 5], matched[6, 6], matched[20, 30] = 0.0, -1.0, np.inf
    prior[10, 10], prior[11, 11] = 0.0, -2.0
    filled = fill_from_prior(matched, prior)
    assert np.isfinite(filled[prior > 0]).all()
    for r, c in ((5, 5), (6, 6), (20, 30)):
        assert filled[r, c] == pytest.approx(truth[r, c], rel=0.01), (r, c, filled[r, c])
    assert filled[10, 10] == 0 and filled[11, 11] < 0  # the prior's own values, times a finite correction


def test_with_fewer_than_min_pixels_matched_the_prior_comes_back_as_it_is():
    """49 matched pixels: the prior as it is (float32); 50 (the least): filled at their scale."""
    prior = np.full((20, 30), 4.0)
    matched = np.full((20, 30), np.nan)
    matched.flat[:49] = 2.0
    out = fill_from_prior(matched, prior)
    assert out.dtype == np.float32 and np.array_equal(out, prior.astype(np.float32))
    matched.flat[49] = 2.0
    out = fill_from_prior(matched, prior)
    assert np.allclose(out, 2.0, rtol=1e-5), out


def test_the_prior_fills_only_pixels_within_reach_of_a_match():
    """Matches in the left 8 columns of a 64 px wide image; reach 0.25 is 16 px: filled up to 16 px (distance
    transform with a 3x3 mask) from the last match, exactly at it included, NaN beyond."""
    prior = np.full((24, 64), 3.0)
    matched = np.full((24, 64), np.nan)
    matched[:, :8] = 1.5
    dist = cv2.distanceTransform(np.isnan(matched).astype(np.uint8), cv2.DIST_L2, 3)
    reach = float(dist[0, 23]) / 64  # exactly the distance of column 23
    out = fill_from_prior(matched, prior, reach=reach)
    assert np.allclose(out[:, :24], 1.5, rtol=1e-5) and np.isnan(out[:, 24:]).all(), out[0]
    out = fill_from_prior(matched, prior, reach=0.25)
    keep = dist <= 16
    assert np.isfinite(out[keep]).all() and np.isnan(out[~keep]).all()
    assert np.allclose(fill_from_prior(matched, prior), 1.5, rtol=1e-5)  # no reach: everything


# ---------------------------------------------------------------------------- push-pull


@pytest.mark.parametrize("shape", [(40, 64), (4, 256), (9, 5), (64, 64), (3, 7)])
def test_push_pull_spreads_one_value_known_anywhere_over_the_whole_image(shape):
    """A constant known at a few pixels (or one corner pixel of a long strip) is the value everywhere, as
    float32."""
    weights = np.zeros(shape, np.float32)
    weights[0, 0] = 1
    weights[shape[0] // 2, shape[1] // 3] = 1
    values = np.where(weights > 0, 2.5, 0).astype(np.float32)
    out = _push_pull(values, weights)
    assert out.shape == shape and np.allclose(out, 2.5, rtol=1e-5), (out.min(), out.max())
    assert out.dtype == np.float32, out.dtype


def test_push_pull_keeps_what_is_known_and_fills_between_within_its_range():
    """Known values stay as they are; every filled value lies between the least and the most known, and a
    smooth ramp known on a sparse grid is filled close to the ramp."""
    rng = np.random.default_rng(2)
    shape = (48, 72)
    v, u = np.mgrid[0:48, 0:72].astype(np.float32)
    ramp = 1.0 + u / 72 + 0.5 * v / 48
    weights = (rng.uniform(size=shape) < 0.08).astype(np.float32)
    out = _push_pull(ramp * weights, weights)
    known = weights > 0
    assert np.allclose(out[known], ramp[known], rtol=1e-6)
    assert out.min() >= ramp[known].min() - 1e-5 and out.max() <= ramp[known].max() + 1e-5
    assert np.median(np.abs(out - ramp)) < 0.1, np.median(np.abs(out - ramp))


@pytest.mark.parametrize("shape", [(64, 64), (48, 72), (33, 50)])
def test_push_pull_fills_alike_from_either_side(shape):
    """Known 1 down the left edge and 3 down the right: the middle fills to 2, and the mirror image fills as
    the mirror image (a Gaussian pyramid of even size leans to one side: 1.26 in the middle, 2.74 mirrored)."""
    values, weights = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    values[:, 0], values[:, -1] = 1, 3
    weights[:, [0, -1]] = 1
    out = _push_pull(values, weights)
    mirrored = _push_pull(values[:, ::-1].copy(), weights[:, ::-1].copy())
    assert abs(float(out[:, shape[1] // 2 - 1: shape[1] // 2 + 1].mean()) - 2) < 0.1, out[shape[0] // 2]
    if shape[1] % 2 == 0 and shape[1] & (shape[1] - 1) == 0:  # a power of two: no padding, exactly mirrored
        assert np.allclose(out[:, ::-1], mirrored, atol=1e-6)


def test_push_pull_fills_a_sparsely_known_ramp_closely():
    """A ramp known at 8 % of its pixels: filled within 1 % of its range (median); the Gaussian pyramid with
    averaged weights gave 6 % (coarse levels outweighed what was known nearby)."""
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:48, 0:72].astype(np.float32)
    ramp = 0.5 + u / 72 + 0.3 * v / 48
    weights = (rng.uniform(size=ramp.shape) < 0.08).astype(np.float32)
    out = _push_pull(ramp * weights, weights)
    err = np.median(np.abs(out - ramp)[weights == 0])
    assert err < 0.013, err


def test_push_pull_fills_a_hole_smoothly():
    """A ramp with a hole 30 x 40 pixels: the fill steps from pixel to pixel about as the ramp does (bilinear
    on the way up; nearest-pixel would step by a coarse level's whole difference) and lies near the ramp."""
    v, u = np.mgrid[0:48, 0:72].astype(np.float32)
    ramp = 0.5 + u / 72 + 0.3 * v / 48
    weights = np.ones(ramp.shape, np.float32)
    weights[10:40, 20:60] = 0
    out = _push_pull(ramp * weights, weights)
    hole = out[10:40, 20:60]
    assert np.abs(np.diff(hole, axis=1)).max() < 2 / 72 and np.abs(np.diff(hole, axis=0)).max() < 2 / 72
    assert np.median(np.abs(out - ramp)[weights == 0]) < 0.03


def test_push_pull_fills_each_pixel_from_the_known_ones_nearest():
    """4 x 4, known 1 at the top-left pixel and 3 at the bottom-right: the pixels beside each lean to it (every
    level of the pyramid kept, not only the overall mean), and the other corners lie between."""
    values, weights = np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)
    values[0, 0], values[3, 3] = 1, 3
    weights[0, 0] = weights[3, 3] = 1
    out = _push_pull(values, weights)
    assert out[0, 1] < 1.5 and out[3, 2] > 2.5, out
    assert 1 < out[0, 3] < 3 and 1 < out[3, 0] < 3, out


def test_push_pull_with_nothing_known_is_zero_and_weights_count_between_0_and_1():
    assert np.array_equal(_push_pull(np.full((6, 8), 5, np.float32), np.zeros((6, 8), np.float32)),
                          np.zeros((6, 8), np.float32)), "nothing known: 0 everywhere"
    values = np.zeros((8, 8), np.float32)
    values[2, 2], values[5, 5] = 1.0, 3.0
    weights = np.zeros((8, 8), np.float32)
    weights[2, 2], weights[5, 5] = 1.0, 1.0
    plain = _push_pull(values, weights)
    heavy = weights.copy()
    heavy[2, 2] = 2.0  # counts as known, no more
    assert np.allclose(_push_pull(values, heavy), plain), "a weight above 1 counted as more than known"
    negative = weights.copy()
    negative[4, 4], values[4, 4] = -1.0, 100.0  # counts as unknown
    assert np.allclose(_push_pull(values, negative), plain), "a negative weight counted"


def test_a_pair_matched_on_images_twice_the_size_finds_the_depth_finer_on_the_same_pixels():
    """Both cameras tilted 25 degrees down at the wall (its disparity changes from row to row, by fractions of a
    pixel), b 0.3 m to the right.
    Given the same views at twice the size (``image``, ``f`` and ``project`` of the larger picture, ``rays``
    of the depth map's pixels), the depths still come on the rays' pixels, with about half the error
    (measured: median 0.86 % against 1.82 %, 90th percentile 1.8 % against 3.8 %)."""
    R = turn("x", 25.0)
    A, B = pose((0.0, 0.0, 0.0), R), pose((0.3, 0.0, 0.0), R)
    rays = pinhole_rays()
    truth = wall_depth(A, rays, Z_WALL)
    big = pinhole_rays(2 * H, 2 * W, 2 * F, (CX + 0.5) * 2 - 0.5, (CY + 0.5) * 2 - 0.5)

    def fine(T: np.ndarray) -> dict:
        return {"image": view(T, big)["image"], "rays": rays, "project": RayProjector(rays).scaled(2.0, 2.0),
                "f": 2 * F, "cam2world": T}

    coarse = pair_depth(view(A), view(B), (0.5, 20.0))
    finer = pair_depth(fine(A), fine(B), (0.5, 20.0))
    assert finer.shape == (H, W) and finer.dtype == np.float32
    both = np.isfinite(coarse) & np.isfinite(finer)
    assert both.mean() > 0.6, both.mean()
    e_coarse, e_fine = np.abs(coarse[both] / truth[both] - 1), np.abs(finer[both] / truth[both] - 1)
    assert np.median(e_fine) < 0.6 * np.median(e_coarse), (np.median(e_fine), np.median(e_coarse))
    assert np.percentile(e_fine, 90) < 0.6 * np.percentile(e_coarse, 90)


def test_the_finer_images_are_the_views_at_up_to_the_factor_and_at_most_their_own_size(tmp_path):
    """Views of 640 x 480 processed at 256 x 192: grey images at twice that (the same picture: a pixel of the
    processing frame is the mean of its 2 x 2 there), or at 1.5x when the smallest view is 384 wide; none when
    no view is larger than the processing size, or a view no longer decodes."""
    import cv2

    from heads.recon.outputs import fine_grays
    from pixio_cli.inputs import Item

    rng = np.random.default_rng(0)
    paths = []
    for n in range(2):
        image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
        cv2.imwrite(str(tmp_path / f"{n}.png"), image)
        paths.append(tmp_path / f"{n}.png")
    items = [Item(str(p), p.stem) for p in paths]
    sizes = np.array([[480, 640], [480, 640]])
    fine = fine_grays(items, (192, 256), sizes, 2.0)
    assert fine.shape == (2, 384, 512) and fine.dtype == np.uint8
    grey = cv2.cvtColor(cv2.imread(str(paths[1])), cv2.COLOR_BGR2GRAY)
    want = cv2.resize(grey, (512, 384), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(fine[1].astype(float) - want).mean() < 1.0  # view 1's picture, in order
    assert fine_grays(items, (192, 256), np.array([[480, 640], [288, 384]]), 2.0).shape == (2, 288, 384)
    assert fine_grays(items, (192, 256), np.array([[192, 256], [480, 640]]), 2.0) is None
    paths[0].write_bytes(b"not an image any more")
    assert fine_grays(items, (192, 256), sizes, 2.0) is None

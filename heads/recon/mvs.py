"""Depth from the images themselves: each view matched against a few neighbours as rectified pairs with
OpenCV's semi-global matching, over the whole depth range its tracks span; a prior fills the rest.

For a view and one neighbour, both images are resampled onto a rectified pair (:func:`rectify`: both
cameras turned so that the baseline runs along the image rows); a point then lies on the same row of
both, shifted by the disparity d = f b / z. OpenCV's SGBM finds d for every pixel (smooth over the
image, checked left-right), and the disparities become z-depths on the view's own pixels
(:func:`pair_depth`). A view is matched with up to ``pairs`` neighbours that see it with parallax and
can be rectified (a baseline pointing into the image cannot); a pixel keeps the median depth where at
least ``agree`` pairs agree within ``rtol`` (:func:`view_depth`). Where none do (no texture, occlusion,
out of range), :func:`fill_from_prior` puts the prior there (the network's depth), scaled to agree with
the matched depths around it.

Cameras whose model bends rays (lens distortion) are handled through each view's rays: the pixel a
direction lands on comes from a polynomial fitted to them (:class:`RayProjector`).

The images matched may be larger than the depth maps (``resolution``: the frames at twice their size, as
decoded; :meth:`RayProjector.scaled`): a disparity is then found in finer pixels, and the depth is still read
for each of the depth map's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Stereo:
    """How views are matched."""

    pairs: int = 4  # neighbours each view is matched with
    agree: int = 2  # pairs whose depths must agree to keep a pixel (all of them, when a view has fewer)
    rtol: float = 0.02  # two pairs' depths agree within this fraction
    block: int = 3  # side of SGBM's matched window, pixels
    margin: float = 1.25  # the depths searched: the view's tracks' 1st to 99th percentile, widened by this factor
    min_angle: float = 2.0  # degrees of parallax at the view's median depth a pair needs ...
    max_angle: float = 40.0  # ... and at most
    max_canvas: float = 2.5  # a rectified image larger than this many times the view is not matched
    uniqueness: int = 10  # SGBM: % by which the best disparity must beat the second best
    reach: float | None = 0.06  # the prior fills pixels at most this far from a matched one (fraction of the width)
    min_texture: float = 2.0  # grey levels (0-255, standard deviation over 5 x 5 pixels) a match needs to stand alone
    resolution: float = 2.0  # images matched at up to this many times the depth maps' size (at most their own)


class RayProjector:
    """The pixel a direction in a camera lands on: a polynomial in its normalised coordinates x/z, y/z, fitted
    to a view's rays (h, w, 2; NaN where unknown). ``error`` is the largest miss of the fit on those rays, in
    pixels: a camera model it cannot follow (a broken ray map) shows there."""

    def __init__(self, rays: np.ndarray, degree: int = 5, step: int = 2) -> None:
        h, w = rays.shape[:2]
        v, u = np.mgrid[0:h:step, 0:w:step]
        r = rays[::step, ::step]
        ok = np.isfinite(r).all(-1)
        self.degree = degree
        self.norm = float(np.abs(r[ok]).max()) if ok.sum() > 50 else 1.0
        if ok.sum() <= 50:
            self.coef, self.error = None, np.inf
            return
        A = self._terms(r[ok][:, 0], r[ok][:, 1])
        target = np.stack([u[ok], v[ok]], 1).astype(np.float64)
        self.coef = np.linalg.lstsq(A, target, rcond=None)[0]  # (terms, 2)
        self.error = float(np.abs(A @ self.coef - target).max())

    def _terms(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = x / self.norm, y / self.norm
        return np.stack([x ** i * y ** (k - i) for k in range(self.degree + 1) for i in range(k + 1)], -1)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (u, v) of directions with normalised coordinates ``x``, ``y`` (any shape)."""
        uv = self._terms(x.ravel(), y.ravel()) @ self.coef
        return uv[:, 0].reshape(x.shape), uv[:, 1].reshape(x.shape)

    def scaled(self, sx: float, sy: float):
        """The pixels of the same image resized by ``sx`` x ``sy`` (pixel centres kept: (u + 0.5) s - 0.5)."""
        def project(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            u, v = self(x, y)
            return (u + 0.5) * sx - 0.5, (v + 0.5) * sy - 0.5
        return project


def rectify(cam2world_a: np.ndarray, cam2world_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Rotations (3, 3) taking directions in camera a and in camera b to a common rectified frame whose x axis
    runs from a's centre to b's (so b sits to the right of a), and the baseline's length; None when the
    baseline runs along the cameras' mean viewing direction (within 10 degrees) or has no length."""
    x = cam2world_b[:3, 3] - cam2world_a[:3, 3]
    baseline = float(np.linalg.norm(x))
    z = cam2world_a[:3, 2] + cam2world_b[:3, 2]  # the mean viewing direction, made normal to the baseline
    if baseline == 0 or np.linalg.norm(np.cross(z, x)) < np.sin(np.radians(10)) * np.linalg.norm(z) * baseline:
        return None
    x = x / baseline
    z = z - (z @ x) * x
    z /= np.linalg.norm(z)
    to_rect = np.stack([x, np.cross(z, x), z])  # world -> rectified, rows are the axes
    return to_rect @ cam2world_a[:3, :3], to_rect @ cam2world_b[:3, :3], baseline


def _sampling_map(project: RayProjector, R: np.ndarray, K_rect: np.ndarray, size: tuple[int, int],
                  step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of a rectified image of ``size`` (w, h), the pixel of the camera (turned by ``R``,
    camera -> rectified) it shows: ``cv2.remap``'s maps. The camera's model is evaluated every ``step``
    pixels and interpolated between (it is smooth)."""
    w, h = size
    gv, gu = np.mgrid[0:h + step:step, 0:w + step:step].astype(np.float64)
    d = np.stack([(gu - K_rect[0, 2]) / K_rect[0, 0], (gv - K_rect[1, 2]) / K_rect[1, 1], np.ones_like(gu)], -1) @ R
    front = d[..., 2] > 1e-3
    z = np.where(front, d[..., 2], 1.0)
    mu, mv = project(d[..., 0] / z, d[..., 1] / z)
    mu, mv = np.where(front, mu, -1e4).astype(np.float32), np.where(front, mv, -1e4).astype(np.float32)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32) / step, np.arange(h, dtype=np.float32) / step)
    return cv2.remap(mu, gx, gy, cv2.INTER_LINEAR), cv2.remap(mv, gx, gy, cv2.INTER_LINEAR)


def pair_depth(a: dict, b: dict, z_range: tuple[float, float], s: Stereo = Stereo()) -> np.ndarray | None:
    """The z-depth (h, w) float32 of view ``a``'s pixels found by matching it with view ``b`` (NaN where
    none), searched between ``z_range`` (near, far); None when the pair cannot be rectified (the baseline
    points into a's image). Views are dicts of ``image`` uint8, ``rays`` (h, w, 2), ``project``
    (:class:`RayProjector`: a direction's pixel in the image), ``f`` (focal length in the image's pixels) and
    ``cam2world`` (4, 4). The image may be finer than the rays (the same picture at a larger size): the pair is
    matched at the image's size, and the depths come out on the rays' pixels."""
    h, w = a["rays"].shape[:2]
    hb, wb = b["image"].shape
    turned = rectify(a["cam2world"], b["cam2world"])
    if turned is None:
        return None
    Ra, Rb, baseline = turned
    f = a["f"]
    edge = np.concatenate([a["rays"][0], a["rays"][-1], a["rays"][:, 0], a["rays"][:, -1]])  # a's border rays
    edge = edge[np.isfinite(edge).all(1)]
    d = np.concatenate([edge, np.ones((len(edge), 1))], 1) @ Ra.T
    if not len(d) or (d[:, 2] < 0.2 * np.linalg.norm(d, axis=1)).any():
        return None  # a's image reaches towards the baseline's direction: no rectification holds it
    u, v = f * d[:, 0] / d[:, 2], f * d[:, 1] / d[:, 2]
    width, height = int(np.ceil(u.max() - u.min())) + 1, int(np.ceil(v.max() - v.min())) + 1
    if width * height > s.max_canvas * a["image"].size:
        return None
    near, far = z_range
    lowest = int(np.floor(f * baseline / far)) - 1
    count = int(np.ceil((f * baseline / near - lowest + 1) / 16)) * 16  # SGBM searches multiples of 16
    pad = max(0, lowest + count)  # SGBM leaves the first (lowest + count) columns unmatched: room on the left
    K_rect = np.array([[f, 0, pad - u.min()], [0, f, -v.min()], [0, 0, 1]])
    size = (width + pad, height)
    left = cv2.remap(a["image"], *_sampling_map(a["project"], Ra, K_rect, size), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    map_b = _sampling_map(b["project"], Rb, K_rect, size)
    right = cv2.remap(b["image"], *map_b, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    sgbm = cv2.StereoSGBM_create(minDisparity=lowest, numDisparities=count, blockSize=s.block,
                                 P1=8 * s.block ** 2, P2=32 * s.block ** 2, disp12MaxDiff=1,
                                 uniquenessRatio=s.uniqueness, speckleWindowSize=50, speckleRange=2,
                                 mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    disparity = sgbm.compute(left, right).astype(np.float32) / 16
    in_b = ((map_b[0] >= 0) & (map_b[0] <= wb - 1) & (map_b[1] >= 0) & (map_b[1] <= hb - 1)).astype(np.uint8)
    rows, cols = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    seen = cv2.remap(in_b, cols - disparity, rows, cv2.INTER_NEAREST, borderValue=0) > 0  # the match lies in b
    # the ends of the range searched hold what lies beyond it, clamped: not a match
    ok = seen & (disparity > max(lowest, 0) + 0.5) & (disparity < lowest + count - 1.5)
    z_rect = np.where(ok, f * baseline / np.where(ok, disparity, 1.0), np.nan).astype(np.float32)
    # back on a's own pixels: each pixel's ray in the rectified frame, the depth along the rectified axis
    ray = np.concatenate([np.nan_to_num(a["rays"]), np.ones((h, w, 1))], -1) @ Ra.T
    at_u = (f * ray[..., 0] / ray[..., 2] + K_rect[0, 2]).astype(np.float32)
    at_v = (f * ray[..., 1] / ray[..., 2] + K_rect[1, 2]).astype(np.float32)
    z = cv2.remap(z_rect, at_u, at_v, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    z = z / ray[..., 2].astype(np.float32)  # z along the rectified axis -> z in a's camera
    z[~np.isfinite(a["rays"]).all(-1)] = np.nan
    return z


def textured(image: np.ndarray, min_std: float) -> np.ndarray:
    """(h, w) bool: pixels whose 5 x 5 neighbourhood in ``image`` (uint8) varies by at least ``min_std`` grey
    levels (standard deviation): where a match rests on the image itself, not on the smoothness between."""
    g = image.astype(np.float32)
    mean = cv2.blur(g, (5, 5))
    return cv2.blur(g * g, (5, 5)) - mean * mean >= min_std ** 2


def parallax_deg(cam2world_a: np.ndarray, cam2world_b: np.ndarray, depth: float) -> float:
    """The angle (degrees) under which the two cameras see a point ``depth`` in front of both, midway."""
    baseline = np.linalg.norm(cam2world_b[:3, 3] - cam2world_a[:3, 3])
    return float(np.degrees(2 * np.arctan2(baseline / 2, depth)))


def view_depth(view: dict, candidates: list[dict], z_range: tuple[float, float], s: Stereo = Stereo()
               ) -> tuple[np.ndarray, int]:
    """The depth (h, w) float32 of ``view`` that its pairs with ``candidates`` (in order of preference, as
    :func:`pair_depth` takes them) agree on: the median where at least ``agree`` of them (all, with fewer
    pairs) agree within ``rtol``, NaN elsewhere; and how many pairs were matched. Candidates without enough
    parallax at the middle of ``z_range`` (geometric mean), or that cannot be rectified, are passed over."""
    middle = float(np.sqrt(z_range[0] * z_range[1]))
    depths = []
    for other in candidates:
        if len(depths) == s.pairs:
            break
        if not s.min_angle <= parallax_deg(view["cam2world"], other["cam2world"], middle) <= s.max_angle:
            continue
        z = pair_depth(view, other, z_range, s)
        if z is not None:
            depths.append(z)
    h, w = view["rays"].shape[:2]
    if not depths:
        return np.full((h, w), np.nan, np.float32), 0
    stack = np.stack(depths)
    found = np.isfinite(stack)
    with np.errstate(invalid="ignore"):
        median = np.nanmedian(np.where(found.any(0), stack, 0), 0)
        agreeing = (np.abs(stack / median - 1) <= s.rtol).sum(0)
    keep = found.any(0) & (agreeing >= min(s.agree, len(depths)))
    return np.where(keep, median, np.nan).astype(np.float32), len(depths)


def search_range(tracks: tuple[float, float] | None, prior: np.ndarray, margin: float) -> tuple[float, float]:
    """The depths (near, far) a view is searched over: the (near, far) its tracks span, widened by ``margin``
    either way; without tracks, the prior's (1st to 99th percentile of its positive depths) widened by twice
    the margin."""
    if tracks is None:
        z = prior[np.isfinite(prior) & (prior > 0)]
        if not len(z):
            return 0.1, 100.0
        tracks, margin = tuple(np.percentile(z, [1, 99])), margin * 2
    return float(tracks[0] / margin), float(tracks[1] * margin)


def fill_from_prior(matched: np.ndarray, prior: np.ndarray, reach: float | None = None, min_pixels: int = 50
                    ) -> np.ndarray:
    """A depth map (h, w): the ``matched`` depths (NaN where none) as they are, and between them the ``prior``
    times a smooth correction that interpolates the matched-to-prior ratios (normalised convolution over an
    image pyramid), so the prior's shape fills the holes at the matched depths' scale. With ``reach`` (a
    fraction of the image's width), only pixels that near a matched one are filled, the rest NaN: a region
    nothing in it was matched in (sky, a void, a blank wall's middle) is not guessed. With under
    ``min_pixels`` matched, the prior as it is."""
    ok = np.isfinite(matched) & (matched > 0) & np.isfinite(prior) & (prior > 0)
    if ok.sum() < min_pixels:
        return prior.astype(np.float32)
    ratio = np.zeros(prior.shape, np.float32)
    ratio[ok] = np.log(matched[ok] / prior[ok])
    filled = np.where(ok, matched, prior * np.exp(_push_pull(ratio, ok.astype(np.float32)))).astype(np.float32)
    if reach is not None:
        far = cv2.distanceTransform((~ok).astype(np.uint8), cv2.DIST_L2, 3) > reach * prior.shape[1]
        filled[far] = np.nan
    return filled


def _push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``values`` (h, w) known where ``weights`` is 1, spread smoothly to where it is 0 (the Lumigraph's
    push-pull, Gortler et al. 1996): pulled down a pyramid of half sizes (each coarse pixel the weighted mean
    of the pixels it covers, by area; its weight their summed weights, at most 1, so one known pixel makes it
    known), then pushed back up (bilinear), each level keeping its own mean as far as it is known. Areas treat
    both sides of an image of any size alike: a Gaussian pyramid of even size leans to one side."""
    levels = [(values.astype(np.float32), np.clip(weights, 0, 1).astype(np.float32))]
    while max(levels[-1][1].shape) > 1:
        mean, wt = levels[-1]
        h, w = wt.shape
        size = ((w + 1) // 2, (h + 1) // 2)
        total = cv2.resize(mean * wt, size, interpolation=cv2.INTER_AREA)
        weight = cv2.resize(wt, size, interpolation=cv2.INTER_AREA) * (h * w / (size[0] * size[1]))
        known = weight > 1e-6
        levels.append((np.where(known, total / np.where(known, weight, 1) * (h * w / (size[0] * size[1])), 0
                                ).astype(np.float32), np.minimum(weight, 1).astype(np.float32)))
    estimate = levels[-1][0]  # 1 x 1: the mean of everything known (0 if nothing is)
    for mean, wt in reversed(levels[:-1]):
        up = cv2.resize(estimate, (wt.shape[1], wt.shape[0]), interpolation=cv2.INTER_LINEAR)
        estimate = (wt * mean + (1 - wt) * up).astype(np.float32)
    return estimate

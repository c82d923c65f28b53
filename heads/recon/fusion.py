"""Many views' depth maps made into one surface: each pixel checked against the views that see it, its
depth refined by matching images and averaged with the depths that agree, and each surface kept once.

Plain functions on arrays, in these conventions: V z-depth maps (V, h, w) at the
processing size; ``rays`` (V, h, w, 2) the normalised coordinates x/z, y/z of
each pixel centre (through each camera's own model); ``K`` (V, 3, 3) the pinhole
part, used to project into a view; camera-to-world poses (V, 4, 4), OpenCV axes.
World points are computed per view when needed, never held for every view at
once; the maps of every view (float32 is enough to store them) are made in the
workspace entered (:mod:`heads.recon.workspace`), files for a long video, so that
memory holds the views being worked on.

The steps (:func:`fuse_views`), as COLMAP's stereo fusion checks its depth maps:

1. neighbours: for each view, the views that see most of it with parallax
   (:func:`choose_neighbours`), among the frames either side and the cameras
   nearest in space on a long video;
2. stereo: each view's depth found by matching its image with its neighbours'
   over the whole depth range its tracks span (:mod:`heads.recon.mvs`); where
   the images say nothing (no texture, occlusion) the prior depth given (the
   network's) fills in, scaled to the matched depths around it;
3. agreement: a pixel's point, projected into a neighbour, must land on a depth
   within ``rtol``; its depth becomes the mean of those that agree
   (:func:`average_agreeing`); a pixel that matching found (pairs of images
   agreed on it) is kept, a filled-in one only where a neighbour agrees;
4. once: a pixel another view sees in more detail (or as much, and earlier) is left
   out (:func:`finest_view`), so ten views of a wall give one layer of points, not ten.

:func:`fuse` runs them on a scene's placed predictions (:class:`heads.pointmap.predictions.Predictions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from heads.geometry import project, to_camera, world_points
from heads.pointmap.predictions import Predictions
from heads.recon.mvs import RayProjector, Stereo, fill_from_prior, search_range, textured, view_depth
from heads.recon.workspace import active, each_view, tick


@dataclass
class Fusion:
    """How views check, refine and merge each other's depths."""

    neighbours: int = 4  # views each view is checked against
    min_angle: float = 3.0  # degrees of parallax under which a neighbour counts for less
    sample: int = 8  # every n-th pixel (each way) of a view ranks its neighbours
    window: int | None = 32  # with more than 2 x this many views, neighbours come from within this many frames
    nearest: bool = True  # ... and from this many cameras nearest in space (within 60 degrees): a video returns
    rtol: float = 0.02  # two depths agree when they differ by at most this fraction
    confirm: int = 2  # neighbours that must agree with a pixel matching did not find (a prior's, or off texture);
    # with no matching (stereo None), one: the prior is all there is
    min_agreeing: float = 0.05  # a view whose pixels its neighbours confirm less than this is left unchecked
    stereo: Stereo | None = field(default_factory=Stereo)  # None: the depths given, not matched


def points_at(depth: np.ndarray, rays: np.ndarray, cam2world: np.ndarray, v: int, ys: np.ndarray,
              xs: np.ndarray) -> np.ndarray:
    """World points (n, 3) of view ``v``'s pixels (ys, xs), in float64 whatever the maps are stored in."""
    return world_points(depth[v, ys, xs].astype(np.float64), rays[v, ys, xs].astype(np.float64), cam2world[v])


def sample_points(depth: np.ndarray, rays: np.ndarray, cam2world: np.ndarray, valid: np.ndarray, step: int
                  ) -> list[np.ndarray]:
    """Each view's world points (n_v, 3) on every ``step``-th valid pixel each way: what ranks neighbours."""
    def sample(v: int) -> np.ndarray:
        ys, xs = np.nonzero(valid[v, ::step, ::step])
        return points_at(depth, rays, cam2world=cam2world, v=v, ys=ys * step, xs=xs * step)

    return [points for _, points in each_view(sample, len(depth))]


def _landing(X: np.ndarray, K: np.ndarray, cam2world: np.ndarray, hw: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For world points X (n, 3) seen from a view of size hw: which land in it (indices), the pixel each
    lands on (rows, columns) and the depth it has there."""
    h, w = hw
    uv, z = project(X, K, cam2world)
    with np.errstate(invalid="ignore"):
        u, r = np.rint(uv[:, 0]), np.rint(uv[:, 1])
        i = np.flatnonzero((z > 0) & (u >= 0) & (u < w) & (r >= 0) & (r < h))
    return i, r[i].astype(np.int64), u[i].astype(np.int64), z[i]


def choose_neighbours(samples: list[np.ndarray], hw: tuple[int, int], K: np.ndarray, cam2world: np.ndarray,
                      f: Fusion = Fusion()) -> tuple[list[list[int]], list[list[int]]]:
    """For each view, up to ``neighbours`` views to check it against, chosen greedily: each next one sees
    most of the view's points (``samples``, as :func:`sample_points` gives them) that fewer than two chosen
    views see yet, a point counting in full only where the parallax is at least ``min_angle`` (a view from
    the same place confirms nothing). A view that sees under 10 % of the points, or adds under 2 %, is not
    taken. Also, for each view, every view that sees at least 10 % of it, most first (parallax or not: what
    may hold the same surface). ``hw``: the views' size. With more than 2 x ``window`` views, the candidates
    are the ``window`` frames either side and the ``window`` cameras nearest in space (a video that returns
    sees its surfaces again, frames apart), so the work per view does not grow with the video."""
    V, (h, w) = len(samples), hw
    centres = cam2world[:, :3, 3]
    windowed = f.window is not None and V > 2 * f.window
    near = _nearest_cameras(cam2world, f.window) if windowed and f.nearest else np.zeros((V, 0), np.int64)

    def rank(v: int) -> tuple[list[int], list[int]]:
        sample = samples[v]
        candidates = range(V) if not windowed else \
            sorted(set(range(max(0, v - f.window), min(V, v + f.window + 1))) | set(near[v].tolist()))
        sees, worth = {}, {}
        for n in candidates:
            if n == v or not len(sample):
                continue
            i, _, _, _ = _landing(sample, K[n], cam2world[n], (h, w))
            if len(i) < 0.1 * len(sample):
                continue
            seen = np.zeros(len(sample))
            seen[i] = 1.0
            a, b = sample - centres[v], sample - centres[n]
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
            angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
            sees[n], worth[n] = seen, seen * np.minimum(1.0, angle / f.min_angle)
        overlaps = sorted(sees, key=lambda n: (-sees[n].sum(), abs(n - v)))
        covered = np.zeros(len(sample))
        chosen: list[int] = []
        while len(chosen) < f.neighbours:
            gain = {n: float((worth[n] * (covered < 2)).sum()) for n in sees if n not in chosen}
            if not gain:
                break
            best = max(gain, key=lambda n: (gain[n], -abs(n - v)))
            if gain[best] <= 0.02 * len(sample):
                break
            chosen.append(best)
            covered += sees[best]
        return chosen, overlaps

    ranked = [r for _, r in each_view(rank, V, threads=1)]  # small arrays, mostly the interpreter: threads only wait
    return [chosen for chosen, _ in ranked], [overlaps for _, overlaps in ranked]


def _nearest_cameras(cam2world: np.ndarray, k: int, max_angle: float = 60.0) -> np.ndarray:
    """For each camera, the ``k`` others nearest in space among those looking within ``max_angle`` degrees of
    its own direction (V, k) (fewer are padded with the camera itself)."""
    centres, axes = cam2world[:, :3, 3], cam2world[:, :3, 2]
    V = len(centres)
    out = np.empty((V, min(k, V)), np.int64)
    for v in range(V):
        d = np.linalg.norm(centres - centres[v], axis=1)
        d[(axes @ axes[v]) < np.cos(np.radians(max_angle))] = np.inf
        d[v] = np.inf
        best = np.argsort(d, kind="stable")[:out.shape[1]]
        out[v] = np.where(np.isfinite(d[best]), best, v)
    return out


def average_agreeing(depth: np.ndarray, rays: np.ndarray, K: np.ndarray, cam2world: np.ndarray,
                     valid: np.ndarray, neighbours: list[list[int]], rtol: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each valid pixel's depth replaced by the mean of its own and of the neighbours' that agree with it
    (their points' depths in its camera); how many neighbours agreed (V, h, w); and how many contradict it
    (V, h, w): its point lands on a valid pixel of theirs whose depth lies beyond it, so that neighbour sees
    through the place the point claims (a point in front of a surface that is seen may be hiding it instead:
    that says nothing)."""
    V, h, w = depth.shape
    ws = active()
    count = ws.array("agreeing", (V, h, w), np.int16)
    against = ws.array("contradicting", (V, h, w), np.int16)
    out = ws.array("averaged", (V, h, w), np.float32)

    def agree(v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ys, xs = np.nonzero(valid[v])
        X = points_at(depth, rays, cam2world=cam2world, v=v, ys=ys, xs=xs)
        total = depth[v, ys, xs].astype(np.float64)
        n_agree, n_against = np.zeros(len(X), np.int16), np.zeros(len(X), np.int16)
        for n in neighbours[v]:
            i, r, u, z = _landing(X, K[n], cam2world[n], (h, w))
            d = depth[n, r, u]
            seen_there = valid[n, r, u]
            n_against[i[seen_there & (z < (1 - rtol) * d)]] += 1
            ok = seen_there & (np.abs(z - d) <= rtol * d)
            i, r, u = i[ok], r[ok], u[ok]
            seen = points_at(depth, rays, cam2world=cam2world, v=n, ys=r, xs=u)
            total[i] += to_camera(seen, cam2world[v])[:, 2]
            n_agree[i] += 1
        return ys, xs, total / (1 + n_agree), n_agree, n_against

    for v, (ys, xs, mean, n_agree, n_against) in each_view(agree, V):
        out[v] = depth[v]
        out[v, ys, xs] = mean
        count[v, ys, xs] = n_agree
        against[v, ys, xs] = n_against
    return out, count, against


def finest_view(depth: np.ndarray, rays: np.ndarray, K: np.ndarray, cam2world: np.ndarray, valid: np.ndarray,
                overlapping: list[list[int]], rtol: float, most: int = 8, tie: float = 0.05,
                window: int | None = None, matched: np.ndarray | None = None) -> np.ndarray:
    """The valid pixels (V, h, w) that no other view holds at a finer resolution: a pixel is held by one
    of the ``most`` views that overlap its view most when its point lands on a valid pixel there at the
    same depth (within ``rtol``) and that pixel's footprint (depth / focal) is smaller, or the same
    within ``tie`` and the view comes first. Each surface is then kept once, from the view that sees it
    in most detail. With ``matched`` (V, h, w), a pixel whose depth matching found is held before any other
    (what the images found beats a prior's guess, whatever the footprints). With a ``window``, the ``most``
    views are taken both from the frames within ``window`` and from the others (where a video returns, its
    earlier pass), so that neither crowds out the other."""
    V, h, w = depth.shape
    own = active().array("first", valid.shape, bool)

    def coarser(v: int) -> tuple[np.ndarray, np.ndarray]:  # the pixels of v another view holds finer
        ys, xs = np.nonzero(valid[v])
        X = points_at(depth, rays, cam2world=cam2world, v=v, ys=ys, xs=xs)
        footprint = depth[v, ys, xs] / K[v, 0, 0]
        held = np.zeros(len(X), bool)
        ranked = overlapping[v][:most] if window is None else (
            [n for n in overlapping[v] if abs(n - v) <= window][:most]
            + [n for n in overlapping[v] if abs(n - v) > window][:most])
        for n in ranked:
            i, r, u, z = _landing(X, K[n], cam2world[n], (h, w))
            d = depth[n, r, u]
            ratio = (d / K[n, 0, 0]) / footprint[i]
            finer = (ratio < 1 - tie) | ((ratio <= 1 + tie) & (n < v))
            if matched is not None:  # found beats guessed; footprints decide between equals
                mine, theirs = matched[v, ys[i], xs[i]], matched[n, r, u]
                finer = (theirs & ~mine) | (finer & (theirs == mine))
            held[i[valid[n, r, u] & (np.abs(z - d) <= rtol * d) & finer]] = True
        return ys[held], xs[held]

    for v, (ys, xs) in each_view(coarser, V):
        own[v] = valid[v]
        own[v, ys, xs] = False
    return own


@dataclass
class FusedViews:
    """What :func:`fuse_views` gives: the depths found and which pixels to keep."""

    depth: np.ndarray  # (V, h, w) float32 z-depths: matched or filled in, then averaged with the neighbours that agree
    keep: np.ndarray  # (V, h, w) valid pixels matched, or that a neighbour confirms (all of an unchecked view's)
    first: np.ndarray  # (V, h, w) of those, the ones no other view holds in more detail: each surface once
    checked: np.ndarray  # (V,) whether a view's depth could be checked against other views
    neighbours: list[list[int]]
    matched: np.ndarray  # (V, h, w) valid pixels whose depth matching the images found


def fuse_views(depth: np.ndarray, rays: np.ndarray, cam2world: np.ndarray, K: np.ndarray, valid: np.ndarray,
               grays: np.ndarray | None, f: Fusion = Fusion(), measured: np.ndarray | None = None,
               tracks: list | None = None, fine: np.ndarray | None = None) -> FusedViews:
    """The steps of the module's docstring on V views; ``depth`` is the prior (the network's depth, fitted),
    ``grays`` (V, h, w) uint8 the images at the depth maps' size (None: no matching, the prior is checked
    as it is). ``tracks``: per view the (near, far) depths its tracks span (1st, 99th percentile) or None,
    which set the depths matching searches. A view with no neighbour, or whose neighbours confirm under
    ``min_agreeing`` of its pixels (cameras or depths too far off), keeps its valid pixels unchecked
    (``checked`` False). ``measured`` (V, h, w): measured depths (known depth), which matching leaves as they
    are and which need no confirmation. ``fine`` (V, H', W') uint8: the same grey images at a larger size,
    matched in their place (finer disparities; the depths still come out on the depth maps' pixels)."""
    V, ws = len(depth), active()
    depth = _copy(depth, ws.array("depth", depth.shape, np.float32))  # stored in float32; computed in float64
    rays = rays if rays.dtype == np.float32 else _copy(rays, ws.array("rays", rays.shape, np.float32))
    samples = sample_points(depth, rays, cam2world=cam2world, valid=valid, step=f.sample)
    neighbours, overlapping = choose_neighbours(samples, depth.shape[1:], K=K, cam2world=cam2world, f=f)
    del samples
    matched = ws.array("matched", valid.shape, bool)
    valid = _copy(valid, ws.array("valid", valid.shape, bool))  # narrowed by matching: pixels it does not guess
    if f.stereo is not None and grays is not None:
        _match_views(depth, rays, cam2world=cam2world, K=K, grays=grays, valid=valid, measured=measured,
                     order=[list(dict.fromkeys(n + o)) for n, o in zip(neighbours, overlapping)], tracks=tracks,
                     s=f.stereo, matched=matched, fine=fine)
    averaged, count, against = average_agreeing(depth, rays, K=K, cam2world=cam2world, valid=valid,
                                                neighbours=neighbours, rtol=f.rtol)
    checked = np.zeros(V, bool)
    keep = ws.array("keep", valid.shape, bool)
    for v in range(V):
        checked[v] = bool(neighbours[v]) and valid[v].any() and (count[v][valid[v]] > 0).mean() >= f.min_agreeing
        # as many as asked, where the view has that many neighbours to ask
        agreed = count[v] >= max(1, min(f.confirm if f.stereo is not None and grays is not None else 1,
                                        len(neighbours[v])))
        if checked[v]:
            depth[v] = averaged[v]
        # matched on texture (pairs of images agreed) stands alone unless a neighbour sees through it
        keep[v] = valid[v] & (agreed | (matched[v] & (against[v] == 0)) | ~checked[v])
        if measured is not None:  # measured depth needs no other view to confirm it
            keep[v] |= valid[v] & measured[v]
        tick()
    del averaged, count, against
    first = finest_view(depth, rays, K=K, cam2world=cam2world, valid=keep, overlapping=overlapping, rtol=f.rtol,
                        window=f.window if f.window is not None and V > 2 * f.window else None,
                        matched=matched if f.stereo is not None and grays is not None else None)
    return FusedViews(depth, keep, first=first, checked=checked, neighbours=neighbours, matched=matched)


def _match_views(depth: np.ndarray, rays: np.ndarray, cam2world: np.ndarray, K: np.ndarray, grays: np.ndarray,
                 valid: np.ndarray, measured: np.ndarray | None, order: list[list[int]], tracks: list | None, s: Stereo,
                 matched: np.ndarray, fine: np.ndarray | None = None) -> None:
    """Each view's depth found by matching it with the views ``order`` names (preferred first), in place
    in ``depth`` where ``valid`` and not ``measured``, the prior filling in where matching found nothing;
    ``matched`` marks the pixels it found; ``fine``: the images to match, at a larger size than ``grays``.
    Views whose rays no smooth camera model follows keep their prior."""
    V = len(depth)
    projectors = [p for _, p in each_view(lambda v: RayProjector(rays[v], step=4), V)]
    usable = [p.error < 0.5 for p in projectors]
    images = grays if fine is None else fine
    sy, sx = images.shape[1] / grays.shape[1], images.shape[2] / grays.shape[2]

    def view(v: int) -> dict:
        return {"image": np.asarray(images[v]), "rays": np.asarray(rays[v], np.float64),
                "project": projectors[v] if fine is None else projectors[v].scaled(sx, sy),
                "f": float(K[v, 0, 0]) * sx, "cam2world": cam2world[v]}

    def match(v: int) -> np.ndarray | None:
        if not usable[v]:
            return None
        z_range = search_range(tracks[v] if tracks is not None else None, depth[v], s.margin)
        found, _ = view_depth(view(v), [view(n) for n in order[v] if usable[n]], z_range, s)
        return found

    for v, found in each_view(match, V):  # in place: matching reads other views' images, never their depths
        if found is None:
            continue
        movable = valid[v] if measured is None else valid[v] & ~measured[v]
        here = movable & np.isfinite(found)
        matched[v] = here & textured(grays[v], s.min_texture)  # the rest needs a neighbour's word, as filled pixels
        filled = fill_from_prior(np.where(here, found, np.nan), depth[v], reach=s.reach)
        guessed = np.isfinite(filled)  # not too far from anything matched
        depth[v] = np.where(movable & guessed, filled, depth[v])
        valid[v] &= ~(movable & ~guessed)


def _copy(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``a`` copied into ``out`` a view at a time (``out``: an array of the workspace)."""
    for v in range(len(a)):
        out[v] = a[v]
        tick()
    return out


def camera_rays(pred: Predictions) -> np.ndarray:
    """Each pixel's normalised coordinates x/z, y/z (V, H, W, 2) in its camera, as its point says (through
    the camera's own model where the points were placed through one); NaN where there is no point."""
    c2w = pred.cam2world.astype(np.float64)
    rays = active().array("rays", pred.pts3d.shape[:3] + (2,), np.float32)  # a view at a time: float64 for one

    def ray(v: int) -> np.ndarray:
        cam = to_camera(pred.pts3d[v].astype(np.float64), c2w[v])
        with np.errstate(divide="ignore", invalid="ignore"):
            out = cam[..., :2] / cam[..., 2:]
        out[~(cam[..., 2] > 0)] = np.nan
        return out

    for v, r in each_view(ray, len(c2w)):
        rays[v] = r
    return rays


def fuse(pred: Predictions, colours: np.ndarray, valid: np.ndarray, f=None, measured: np.ndarray | None = None,
         tracks: list | None = None, *, fine: np.ndarray | None = None, in_place: bool = False
         ) -> tuple[Predictions, np.ndarray, np.ndarray, dict]:
    """The views' depths found by matching the images ``colours`` (V, H, W, 3) with the predictions' depth as
    the prior, checked against each other and averaged where they agree (:func:`heads.recon.fusion.fuse_views`
    with options ``f``), starting from the ``valid`` pixels; ``tracks``: per view the (near, far) depths of its
    tracks, or None (what matching searches). Returns the predictions with those depths and points; the pixels
    matched or confirmed (what a TSDF should average); of those, the ones to keep as points (each surface
    once); and a report: views checked, the names of those that could not be, the fraction of pixels matching
    found, and the pixels left by the check and by keeping each surface once. ``measured`` (V, H, W) bool:
    pixels whose depth was measured (known depth), which matching does not move. ``fine``: the views as grey
    images at a larger size (:func:`heads.recon.outputs.fine_grays`), matched in place of the colours.
    ``in_place``: the fused
    depths and points are written over ``pred``'s arrays (and ``valid`` narrowed), with no copy of them."""
    f = f or Fusion()
    ws = active()
    rays = camera_rays(pred)
    if not in_place:
        valid = valid.copy()
    grays = ws.array("grays", pred.depth_z.shape, np.uint8)
    for v, c in enumerate(colours):  # a view at a time: the views' arrays may be files (heads.recon.workspace)
        # a pixel with no point has no ray: it stays NaN (not 0, which the view's camera model would be fitted to)
        valid[v] &= np.isfinite(rays[v]).all(-1)
        grays[v] = cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY)
        tick()
    c2w = pred.cam2world.astype(np.float64)
    out = fuse_views(pred.depth_z, rays, cam2world=c2w, K=pred.K.astype(np.float64), valid=valid, grays=grays, f=f,
                     measured=measured, tracks=tracks, fine=fine)
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

"""The cleaning of a scene's pixels and points (heads/recon/cleaning.py) on small synthetic scenes whose answer is
worked out here pixel by pixel: depth edges, one point per voxel, statistical outliers, and the stages together."""

from __future__ import annotations

import numpy as np
import pytest

from heads.pointmap.predictions import Predictions
from heads.recon.cleaning import Cleaning, clean_points, depth_edges, pixel_mask, statistical_inliers, \
    voxel_representatives


def edges_by_hand(depth: np.ndarray, rtol: float) -> np.ndarray:
    """Pixel by pixel: some 8-neighbour (clamped at the border: the border pixel itself) differs from the pixel by
    more than rtol x its depth (a depth of 0 or less counts as 1e-9)."""
    h, w = depth.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            c = float(depth[y, x])
            jump = max(abs(float(depth[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]) - c)
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            out[y, x] = jump > rtol * max(c, 1e-9)
    return out


def test_depth_edges_are_the_pixels_whose_neighbour_jumps_more_than_rtol_of_their_depth():
    rng = np.random.default_rng(0)
    for scale, rtol in ((1.0, 0.03), (3.0, 0.2), (0.01, 0.03)):  # 0.01: a scene in metres a few cm across
        depth = scale * rng.choice([1.0, 1.01, 1.5, 2.0, 4.0], size=(9, 11)).astype(np.float32)
        depth[4, 5] = 0.0  # a pixel with no depth
        got = depth_edges(depth, rtol)
        want = edges_by_hand(depth, rtol)
        assert got.shape == depth.shape and got.dtype == bool
        assert (got == want).all(), f"scale {scale}, rtol {rtol}: wrong at {np.argwhere(got != want).tolist()}"


def test_each_of_the_eight_neighbours_alone_makes_an_edge():
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            depth = np.ones((5, 5))
            depth[2 + dy, 2 + dx] = 2.0
            assert depth_edges(depth, 0.5)[2, 2], f"a jump at neighbour ({dy}, {dx}) was not seen"


def test_a_flat_depth_has_no_edges_even_at_the_border():
    assert not depth_edges(np.full((6, 7), 2.5, np.float32), 0.01).any()


def test_a_jump_of_exactly_rtol_is_not_an_edge():
    depth = np.array([[1.0, 1.5]])  # 0.5 = 0.5 x 1: exactly the tolerance, not more
    assert not depth_edges(depth, 0.5).any()
    assert depth_edges(depth, 0.49)[0, 0] and not depth_edges(depth, 0.49)[0, 1]  # 0.5 > 0.49 x 1.5 is false


def test_a_tiny_positive_depth_is_measured_against_itself_not_against_one():
    depth = np.array([[0.01, 0.02]])  # a jump of 0.01: twice the tolerance of the nearer pixel
    assert depth_edges(depth, 0.5)[0, 0]


def voxels_by_hand(points: np.ndarray, voxel: float) -> list[int]:
    """The first point of each occupied voxel, in the points' order."""
    first: dict[tuple, int] = {}
    for i, p in enumerate(points):
        first.setdefault(tuple(np.floor(p / voxel).astype(np.int64).tolist()), i)
    return sorted(first.values())


def test_one_point_per_voxel_the_first_one_in_the_original_order():
    rng = np.random.default_rng(1)
    for voxel, extent in ((0.5, (3.0, 1.0, 7.0)), (2.0, (10.0, 25.0, 4.0)), (1.0, (1.5, 6.0, 2.5))):
        points = rng.uniform(-1, 1, size=(400, 3)) * np.array(extent) - 0.3  # negative coordinates too
        got = voxel_representatives(points, voxel)
        want = voxels_by_hand(points, voxel)
        assert got.tolist() == want, f"voxel {voxel}: {len(got)} kept, {len(want)} voxels occupied"


@pytest.mark.parametrize("cells", [
    [(0, 0, 0), (2 ** 62, 0, 0), (0, 1, 1)],  # the first axis spans 2^62 + 1 voxels
    [(0, 0, 0), (1, 2 ** 62, 0), (0, 1, 0), (0, 0, 1)],  # the second
    [(0, 0, 0), (1, 1, 2 ** 62), (0, 0, 3)],  # the third
    [(0, 0, 0), (1, 0, 0), (0, 2 ** 32 - 1, 2 ** 32 - 1)],
    [(0, 0, 0), (2 ** 40, 0, 0), (2 ** 40, 0, 1), (0, 0, 2 ** 15)]])  # keys past 2^53: a float64 key merges two
def test_voxels_of_a_scene_too_wide_for_one_integer_key_are_still_told_apart(cells):
    """Where the voxels' count overflows a 64-bit key, two points here would share one key modulo 2^64 (and in the
    last, one key in float64): each is still its own voxel."""
    points = np.array(cells, np.float64) + 0.5
    assert voxel_representatives(points, 1.0).tolist() == list(range(len(points)))
    twice = np.concatenate([points, points])  # the same voxels again: the first ones are kept
    assert voxel_representatives(twice, 1.0).tolist() == list(range(len(points)))


def inliers_by_hand(points: np.ndarray, neighbours: int, std_ratio: float) -> list[int]:
    """Open3D's statistical outlier removal written out: each point's mean distance to its ``neighbours`` nearest
    points (itself included), kept when below the mean of those plus ``std_ratio`` sample deviations."""
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    mean = np.sort(d, axis=1)[:, :neighbours].mean(1)
    return np.flatnonzero((mean > 0) & (mean < mean.mean() + std_ratio * mean.std(ddof=1))).tolist()


def test_statistical_inliers_keep_the_points_close_to_their_twenty_neighbours():
    """A cloud and, far from it, a tight group of exactly 20 points: each one's 20 nearest (itself included) are
    its group, so the group is kept; points straying from the cloud are not."""
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(200, 3)), rng.normal(scale=0.05, size=(20, 3)) + [30.0, 0.0, 0.0]])
    got = statistical_inliers(points).tolist()
    want = inliers_by_hand(points, 20, 2.0)
    assert got == want, f"{len(got)} kept, {len(want)} expected"
    assert set(range(200, 220)) <= set(got) and len(got) < 220
    assert want != inliers_by_hand(points, 21, 2.0) and want != inliers_by_hand(points, 20, 3.0)  # the data tells
    assert statistical_inliers(points, neighbours=8, std_ratio=1.0).tolist() == inliers_by_hand(points, 8, 1.0)
    assert statistical_inliers(points.astype(np.float32)).tolist() == want


H, W = 4, 6


def scene(V: int = 2, seed: int = 0) -> tuple[Predictions, np.ndarray]:
    """V views of H x W pixels: random points and confidences, some pixels masked out, one not finite, one at
    depth 0 and one behind the camera, a depth step in each view; and their colours."""
    rng = np.random.default_rng(seed)
    depth = np.where(np.arange(W) < 3, 1.0, 2.0)[None, None].repeat(V, 0).repeat(H, 1) * rng.uniform(1, 1.01, (V, H, W))
    depth[:, 0, 0] = 0.0
    depth[:, 0, 1] = -1.0
    depth[:, 1, 1] = 0.5  # in front of the camera, nearer than 1
    pts = rng.normal(size=(V, H, W, 3))
    pts[:, 3, 5, 1] = np.nan
    pred = Predictions(images=[f"v{v}.png" for v in range(V)], pts3d=pts.astype(np.float32),
                       depth_z=depth.astype(np.float32),
                       conf=rng.choice([1.0, 2.0, 3.0, 4.0], (V, H, W)).astype(np.float32),
                       mask=rng.uniform(size=(V, H, W)) > 0.2,
                       cam2world=np.tile(np.eye(4, dtype=np.float32), (V, 1, 1)),
                       K=np.tile(np.eye(3, dtype=np.float32), (V, 1, 1)),
                       K_original=np.tile(np.eye(3, dtype=np.float32), (V, 1, 1)),
                       original_hw=np.array([[2 * H, 3 * W], [H * 5, W // 2]] * V)[:V], scale=1.0, metric=False)
    colours = rng.integers(0, 256, (V, H, W, 3), dtype=np.uint8)
    return pred, colours


def kept_by_hand(pred: Predictions, c: Cleaning, above: float | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Pixel by pixel: finite, in front, then mask, confidence (above ``above``, at least conf_min), no edge."""
    keep = np.zeros(pred.mask.shape, bool)
    counts = {"pixels": pred.mask.size}
    for v in range(len(keep)):
        edges = edges_by_hand(pred.depth_z[v], c.edge_rtol) if c.edge_rtol else None
        for y in range(H):
            for x in range(W):
                ok = bool(np.isfinite(pred.pts3d[v, y, x]).all()) and pred.depth_z[v, y, x] > 0
                stages = {"after_mask": not c.mask or pred.mask[v, y, x],
                          "after_confidence": (above is None or pred.conf[v, y, x] > above) and
                          (c.conf_min is None or pred.conf[v, y, x] >= c.conf_min),
                          "after_edges": edges is None or not edges[y, x]}
                on = {"after_mask": c.mask, "after_confidence": above is not None or c.conf_min is not None,
                      "after_edges": edges is not None}
                for stage, passed in stages.items():
                    ok = ok and passed
                    if on[stage]:
                        counts[stage] = counts.get(stage, 0) + ok
                keep[v, y, x] = ok
    return keep, counts


@pytest.mark.parametrize("c", [Cleaning(), Cleaning(mask=False, edge_rtol=None), Cleaning(conf_min=3.0),
                               Cleaning(mask=False, conf_min=2.0, edge_rtol=0.5),
                               Cleaning(edge_rtol=None, conf_min=1.0)])
def test_pixel_mask_keeps_finite_pixels_in_front_then_applies_each_stage_asked_for(c):
    pred, _ = scene(V=3)
    keep, counts = pixel_mask(pred, c)
    want, want_counts = kept_by_hand(pred, c)
    assert keep.dtype == bool and keep.shape == pred.mask.shape
    assert (keep == want).all(), f"{c}: wrong at {np.argwhere(keep != want).tolist()}"
    assert counts == want_counts


def test_the_confidence_percentile_drops_that_share_of_all_views_pixels_and_at_the_cut():
    pred, _ = scene(V=2)
    pred.conf[:] = np.array([1.0, 2.0, 2.0, 3.0])[np.arange(H * W) % 4].reshape(H, W)  # 50th percentile: exactly 2
    c = Cleaning(mask=False, edge_rtol=None, conf_percentile=50)
    keep, counts = pixel_mask(pred, c)
    want, want_counts = kept_by_hand(pred, c, above=2.0)
    assert (keep == want).all() and counts == want_counts
    assert not keep[pred.conf <= 2].any() and keep.any()


def test_the_confidence_percentile_of_one_view():
    pred, _ = scene(V=1)
    c = Cleaning(mask=False, edge_rtol=None, conf_percentile=30)
    keep, counts = pixel_mask(pred, c)
    want, want_counts = kept_by_hand(pred, c, above=float(np.percentile(pred.conf, 30)))
    assert (keep == want).all() and counts == want_counts


def test_the_confidence_percentile_of_many_pixels_comes_from_every_second_pixel_each_way():
    """16 views of 1000 x 1000: 16 M pixels, over the 4 M looked at: every second row and column. The odd columns
    are all more confident than the even ones, so the percentile of the pixels looked at is below the whole's."""
    n, side = 16, 1000
    conf_view = np.where(np.arange(side) % 2 == 0, 1.0, 100.0)[None].repeat(side, 0).astype(np.float32)
    conf_view += np.linspace(0, 1, side * side, dtype=np.float32).reshape(side, side)
    pred = Predictions(images=[""] * n, pts3d=np.broadcast_to(np.ones(3, np.float32), (n, side, side, 3)),
                       depth_z=np.broadcast_to(np.float32(1), (n, side, side)),
                       conf=np.broadcast_to(conf_view, (n, side, side)), mask=np.broadcast_to(True, (n, side, side)),
                       cam2world=np.zeros((n, 4, 4)), K=np.zeros((n, 3, 3)),
                       K_original=np.zeros((n, 3, 3)), original_hw=np.full((n, 2), side), scale=1.0, metric=False)
    keep, counts = pixel_mask(pred, Cleaning(mask=False, edge_rtol=None, conf_percentile=75))
    above = np.percentile(conf_view[::2, ::2], 75)
    assert np.percentile(conf_view, 75) > 100 > above  # the two disagree on the odd columns' first ones
    want = (conf_view > above).sum() * n
    assert counts == {"pixels": n * side * side, "after_confidence": want} and keep.sum() == want


def test_clean_points_are_the_kept_pixels_points_colours_and_where_they_came_from():
    pred, colours = scene(V=2)
    c = Cleaning(conf_min=2.0)
    points, cols, obs, counts = clean_points(pred, colours, c)
    keep, want_counts = kept_by_hand(pred, c)
    v, y, x = np.nonzero(keep)
    assert counts == want_counts
    assert points.dtype == np.float64 and np.array_equal(points, pred.pts3d[v, y, x].astype(np.float64))
    assert cols.dtype == np.uint8 and np.array_equal(cols, colours[v, y, x])
    # the pixel centre in the original image: view 0 is 2 x taller and 3 x wider, view 1 5 x taller, half as wide
    oh, ow = pred.original_hw[v, 0], pred.original_hw[v, 1]
    centre_x = (x + 0.5) / W * ow - 0.5
    centre_y = (y + 0.5) / H * oh - 0.5
    assert np.allclose(obs, np.stack([v, centre_x, centre_y], 1)), "an observation is not its pixel's centre"
    assert obs[0].tolist() != [v[0], x[0], y[0]]


def test_clean_points_start_from_the_pixels_given_with_their_counts():
    pred, colours = scene(V=2)
    keep = np.zeros(pred.mask.shape, bool)
    keep[1, 2, 3] = keep[0, 1, 4] = True
    points, _, obs, counts = clean_points(pred, colours, Cleaning(), keep=keep, counts={"pixels": 7, "after_mask": 2})
    assert counts == {"pixels": 7, "after_mask": 2}
    assert np.array_equal(points, pred.pts3d[[0, 1], [1, 2], [4, 3]].astype(np.float64))
    assert obs[:, 0].tolist() == [0, 1]
    _, _, _, counts = clean_points(pred, colours, Cleaning(), keep=keep)
    assert counts == {}


def points_scene(n: int, seed: int = 0) -> tuple[Predictions, np.ndarray]:
    """One view of 1 x n pixels, all kept, with random points."""
    pred, _ = scene(V=1, seed=seed)
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(1, 1, n, 3)).astype(np.float32)
    pred = Predictions(images=["v"], pts3d=pts, depth_z=np.ones((1, 1, n), np.float32),
                       conf=np.ones((1, 1, n), np.float32),
                       mask=np.ones((1, 1, n), bool), cam2world=pred.cam2world, K=pred.K, K_original=pred.K_original,
                       original_hw=np.array([[1, n]]), scale=1.0, metric=False)
    return pred, rng.integers(0, 256, (1, 1, n, 3), dtype=np.uint8)


def test_outliers_are_removed_only_when_asked_and_from_more_than_twenty_points():
    for n, removed in ((20, False), (21, True)):
        pred, colours = points_scene(n)
        pred.pts3d[0, 0, 0] = 50.0  # far from the others
        points, _, _, counts = clean_points(pred, colours, Cleaning(outliers=True))
        assert ("after_outliers" in counts) == removed, (n, counts)
        assert (50.0 in points) != removed
        _, _, _, counts = clean_points(pred, colours, Cleaning(outliers=False))
        assert "after_outliers" not in counts
    pred, colours = points_scene(60)
    points, _, _, counts = clean_points(pred, colours, Cleaning(outliers=True))
    kept = inliers_by_hand(pred.pts3d[0, 0].astype(np.float64), 20, 2.0)
    assert counts["after_outliers"] == len(kept) < 60 and np.array_equal(points, pred.pts3d[0, 0, kept])


def test_clean_points_keep_one_point_per_voxel_after_the_outliers():
    pred, colours = points_scene(200)
    points, cols, obs, counts = clean_points(pred, colours, Cleaning(outliers=True, voxel=0.7))
    inliers = inliers_by_hand(pred.pts3d[0, 0].astype(np.float64), 20, 2.0)
    kept = [inliers[i] for i in voxels_by_hand(pred.pts3d[0, 0, inliers].astype(np.float64), 0.7)]
    assert counts["after_outliers"] == len(inliers) and counts["after_voxel"] == len(kept) < len(inliers)
    assert np.array_equal(points, pred.pts3d[0, 0, kept]) and np.array_equal(cols, colours[0, 0, kept])
    assert np.allclose(obs[:, 1], kept)  # 1 x n pixels at the original size: x is the pixel


def test_max_points_is_a_seeded_random_subset_in_the_original_order():
    pred, colours = points_scene(100)
    subsets = []
    for seed in (0, 0, 1):
        points, cols, obs, counts = clean_points(pred, colours, Cleaning(edge_rtol=None, max_points=90, seed=seed))
        x = obs[:, 1].round().astype(int)
        assert counts["after_max_points"] == 90 == len(set(x.tolist())), "a point was drawn twice"
        assert (np.diff(x) > 0).all(), "not in the original order"
        assert np.array_equal(points, pred.pts3d[0, 0, x]) and np.array_equal(cols, colours[0, 0, x])
        subsets.append(x.tolist())
    assert subsets[0] == subsets[1] and subsets[0] != subsets[2], "the seed does not decide the subset"
    _, _, _, counts = clean_points(pred, colours, Cleaning(edge_rtol=None, max_points=100))
    assert "after_max_points" not in counts

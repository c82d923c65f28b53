"""Long sequences in chunks (heads/recon/chunks.py) on small synthetic predictions with a known answer: the chunks'
view ranges, the pixels two chunks pair, the similarity that aligns them, the scene they make together (each
chunk moved by a known similarity, resumed from kept chunks), and the similarity applied to predictions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from heads import geometry as G
from heads.pointmap.predictions import Predictions
from heads.recon.chunks import KeptChunks, align_to, chunk_ranges, corresponding_pixels, points_at_pixels, \
    predict_in_chunks, transformed
from pixio_cli.errors import UsageError

H, W = 12, 16


def truth(n: int, seed: int = 0, descriptor: bool = True) -> Predictions:
    """n views of H x W pixels: random points, depths, confidences (all different), masks and poses."""
    rng = np.random.default_rng(seed)
    poses = np.stack([np.eye(4)] * n)
    for v in range(n):
        q = rng.normal(size=4)
        poses[v, :3, :3] = G.rotation_from_quaternion(q / np.linalg.norm(q))
        poses[v, :3, 3] = rng.normal(size=3)
    d = rng.normal(size=(n, 8)).astype(np.float32)
    return Predictions(images=[f"frame{v}.png" for v in range(n)],
                       pts3d=rng.normal(size=(n, H, W, 3)).astype(np.float32),
                       depth_z=rng.uniform(1, 3, (n, H, W)).astype(np.float32),
                       conf=rng.permutation(n * H * W).reshape(n, H, W).astype(np.float32) + 1,
                       mask=rng.uniform(size=(n, H, W)) > 0.1, cam2world=poses.astype(np.float32),
                       K=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
                       K_original=np.tile(2 * np.eye(3, dtype=np.float32), (n, 1, 1)),
                       original_hw=np.tile([2 * H, 2 * W], (n, 1)), scale=1.0, metric=False,
                       descriptor=d / np.linalg.norm(d, axis=1, keepdims=True) if descriptor else None)


def subset(pred: Predictions, views: list[int]) -> Predictions:
    return replace(pred, images=[pred.images[v] for v in views],
                   **{k: getattr(pred, k)[views] for k in ("pts3d", "depth_z", "conf", "mask", "cam2world", "K",
                                                           "K_original", "original_hw")},
                   descriptor=None if pred.descriptor is None else pred.descriptor[views])


def similarity(seed: int, scale: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    return scale, G.rotation_from_quaternion(q / np.linalg.norm(q)), rng.normal(size=3)


def inverse(s: float, R: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    return 1 / s, R.T, -(R.T @ t) / s


# ---------------------------------------------------------------------------- chunk ranges


def covers_in_order(ranges: list[list[int]], n: int, size: int, overlap: int) -> None:
    """Chunks of ``size`` consecutive views, each sharing at least ``overlap`` with the one before, the last
    ending at the last view."""
    assert all(r == list(range(r[0], r[0] + size)) for r in ranges), ranges
    assert ranges[0][0] == 0 and ranges[-1][-1] == n - 1
    assert all(len(set(a) & set(b)) >= overlap for a, b in zip(ranges, ranges[1:])), ranges


def test_chunks_share_overlap_views_and_the_last_ends_at_the_last_view():
    assert chunk_ranges(10, 4, 2) == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert chunk_ranges(9, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [5, 6, 7, 8]]  # the last moved back to 4 views
    assert chunk_ranges(5, 2, 1) == [[0, 1], [1, 2], [2, 3], [3, 4]]
    for n, size, overlap in ((30, 7, 3), (31, 5, 4), (12, 11, 1)):
        covers_in_order(chunk_ranges(n, size, overlap), n, size, overlap)


def test_a_sequence_that_fits_one_chunk_is_one_chunk_whatever_the_settings():
    assert chunk_ranges(5, 5, 2) == [[0, 1, 2, 3, 4]]
    assert chunk_ranges(3, 8, 2) == [[0, 1, 2]]
    assert chunk_ranges(4, 4, 0) == [[0, 1, 2, 3]] and chunk_ranges(4, 4, 4) == [[0, 1, 2, 3]]
    assert chunk_ranges(1, 1, 0) == [[0]]


@pytest.mark.parametrize("size, overlap", [(1, 0), (4, 0), (4, 4), (4, 5), (4, -1)])
def test_chunks_that_cannot_overlap_are_refused(size, overlap):
    with pytest.raises(UsageError, match=f"--chunk {size} --overlap {overlap}"):
        chunk_ranges(10, size, overlap)


# ---------------------------------------------------------------------------- pixels paired and their points


def by_hand(scene: Predictions, part: Predictions, shared: list[tuple[int, int]]) -> np.ndarray:
    """The pixels laid end to end over the shared views: finite in both, in both masks (unless fewer than 100
    are), at least the median of the lesser confidence of those."""
    finite = np.concatenate([np.isfinite(scene.pts3d[i]).all(-1).ravel() & np.isfinite(part.pts3d[j]).all(-1).ravel()
                             for i, j in shared])
    masks = np.concatenate([(scene.mask[i] & part.mask[j]).ravel() for i, j in shared])
    keep = finite & masks if (finite & masks).sum() >= 100 else finite
    conf = np.concatenate([np.minimum(scene.conf[i], part.conf[j]).ravel() for i, j in shared])
    return np.flatnonzero(keep & (conf >= np.median(conf[keep])))


def pair(seed: int = 0) -> tuple[Predictions, Predictions, list[tuple[int, int]]]:
    """A scene of 4 views and a chunk of 3 sharing two of them (scene views 2, 3 = chunk views 0, 1), with
    confidences of their own, masks that disagree in places and points that are not finite."""
    scene, part = truth(4, seed), truth(3, seed + 1)
    scene.pts3d[2, 0, :3] = np.nan
    part.pts3d[1, 5, 4:6, 2] = np.inf
    scene.conf[2, 1] = 10 ** 4  # confident, but not finite in the chunk... the lesser confidence counts
    part.pts3d[0, 1] = np.nan
    return scene, part, [(2, 0), (3, 1)]


def test_the_pixels_paired_are_finite_in_both_masks_and_confident():
    scene, part, shared = pair()
    idx = corresponding_pixels(scene, part, shared)
    want = by_hand(scene, part, shared)
    assert idx.tolist() == want.tolist()
    assert 100 <= len(idx) < 2 * H * W / 2


def test_the_lesser_confidence_of_the_two_counts_and_the_median_itself_is_kept():
    scene, part, shared = truth(2), truth(2, seed=1), [(0, 0), (1, 1)]
    scene.mask[:] = part.mask[:] = True
    scene.conf[:] = 5.0  # the chunk's confidence is the lesser where below 5
    part.conf[:] = np.where(np.arange(W) < W // 2, 1.0, 9.0)[None, None]  # half the pixels at 1, half at 9
    part.conf[0, 0, 0] = 5.0  # the lesser confidences: 191 at 1, 193 at 5: their median is 5
    idx = corresponding_pixels(scene, part, shared)
    assert idx.tolist() == [0] + [v * H * W + y * W + x for v in range(2) for y in range(H) for x in range(W // 2, W)]


@pytest.mark.parametrize("agree, fallback", [(99, True), (100, False), (101, False)])
def test_when_fewer_than_100_pixels_are_in_both_masks_the_masks_are_left_out(agree, fallback):
    scene, part, shared = truth(1), truth(1, seed=1), [(0, 0)]
    scene.mask[:] = True
    part.mask[:] = False
    part.mask.reshape(-1)[:agree] = True
    idx = corresponding_pixels(scene, part, shared)
    conf = np.minimum(scene.conf[0], part.conf[0]).ravel()
    pool = np.arange(H * W) if fallback else np.arange(agree)
    assert idx.tolist() == pool[conf[pool] >= np.median(conf[pool])].tolist()


def test_at_most_max_pairs_drawn_once_each_by_the_seed():
    scene, part, shared = pair()
    every = by_hand(scene, part, shared)
    assert corresponding_pixels(scene, part, shared, max_pairs=len(every)).tolist() == every.tolist()
    drawn = [corresponding_pixels(scene, part, shared, max_pairs=50, seed=s) for s in (0, 0, 1)]
    assert all(len(d) == len(set(d.tolist())) == 50 and set(d.tolist()) <= set(every.tolist()) for d in drawn)
    assert drawn[0].tolist() == drawn[1].tolist() != drawn[2].tolist()
    assert corresponding_pixels(scene, part, shared, max_pairs=50).tolist() == drawn[0].tolist()  # seed 0


def test_at_most_20000_pairs_by_default():
    n, side = 2, 160  # 51 200 pixels, 25 600 at the median or above
    big = Predictions(images=["a", "b"], pts3d=np.zeros((n, side, side, 3), np.float32),
                      depth_z=np.ones((n, side, side), np.float32),
                      conf=np.arange(n * side * side, dtype=np.float32).reshape(n, side, side),
                      mask=np.ones((n, side, side), bool),
                      cam2world=np.zeros((n, 4, 4)), K=np.zeros((n, 3, 3)), K_original=np.zeros((n, 3, 3)),
                      original_hw=np.ones((n, 2)), scale=1.0, metric=False)
    idx = corresponding_pixels(big, big, [(0, 0), (1, 1)])
    assert len(idx) == 20000 == len(set(idx.tolist()))
    assert idx.tolist() == corresponding_pixels(big, big, [(0, 0), (1, 1)], max_pairs=20000, seed=0).tolist()


def test_the_points_at_pixels_laid_end_to_end_come_from_the_views_named():
    pred = truth(3)
    idx = np.array([H * W + 5, 3, 2 * H * W - 1, W + 2, H * W + 2 * W])  # view 1's, view 0's, view 1's, ...
    got = points_at_pixels(pred, [2, 0], idx)
    want = [pred.pts3d[[2, 0][i // (H * W)], (i % (H * W)) // W, i % W] for i in idx]
    assert got.dtype == pred.pts3d.dtype and np.array_equal(got, np.array(want))


# ---------------------------------------------------------------------------- alignment


def test_a_chunk_moved_by_a_similarity_is_brought_back_by_it():
    scene, shared = truth(4), [(2, 0), (3, 1)]
    s, R, t = similarity(3, scale=1.7)
    part = transformed(subset(scene, [2, 3, 1]), *inverse(s, R, t))  # the chunk's frame: x -> (R^T (x - t)) / s
    part.pts3d[0, :2] += 5.0  # two rows the chunk got wrong: outliers
    got_s, got_R, got_t, pairs = align_to(scene, part, shared, with_scale=True)
    assert abs(got_s - s) < 1e-4 and np.allclose(got_R, R, atol=1e-4) and np.allclose(got_t, t, atol=1e-4)
    assert pairs == len(corresponding_pixels(scene, part, shared)) == len(by_hand(scene, part, shared))
    rigid = transformed(subset(scene, [2, 3, 1]), *inverse(1.0, R, t))
    got_s, got_R, got_t, _ = align_to(scene, rigid, shared, with_scale=False)
    assert got_s == 1.0 and np.allclose(got_R, R, atol=1e-4) and np.allclose(got_t, t, atol=1e-4)
    _, _, _, pairs = align_to(scene, part, shared, with_scale=True, max_pairs=60)
    assert pairs == 60


def test_alignment_is_the_same_on_every_run_and_seeded_with_0_by_default():
    rng = np.random.default_rng(4)
    scene = truth(2)
    part = transformed(scene, *inverse(*similarity(5, scale=0.6)))
    part.pts3d += rng.normal(scale=0.05, size=part.pts3d.shape).astype(np.float32)  # noisy: the fit depends on the draw
    fits = [align_to(scene, part, [(0, 0), (1, 1)], with_scale=True, max_pairs=150, seed=s) for s in (0, 0, 7)]
    default = align_to(scene, part, [(0, 0), (1, 1)], with_scale=True, max_pairs=150)
    assert fits[0][0] == fits[1][0] == default[0] != fits[2][0]
    assert np.array_equal(fits[0][1], default[1]) and np.array_equal(fits[0][2], default[2])


def test_the_seed_draws_the_pixels_and_the_ransac_both():
    """With more pixels than ``max_pairs``, the fit is RANSAC (seeded) on the pixels drawn with the same seed."""
    scene = truth(2)
    part = transformed(scene, *inverse(*similarity(16, scale=1.4)))
    part.pts3d += np.random.default_rng(5).normal(scale=0.05, size=part.pts3d.shape).astype(np.float32)
    shared = [(0, 0), (1, 1)]
    for seed in (0, 7):
        idx = corresponding_pixels(scene, part, shared, max_pairs=60, seed=seed)
        a, b = scene.pts3d[:2].reshape(-1, 3)[idx], part.pts3d[:2].reshape(-1, 3)[idx]
        s, R, t, _ = G.ransac_umeyama(b, a, with_scale=True, seed=seed)
        got = align_to(scene, part, shared, with_scale=True, max_pairs=60, seed=seed)
        assert got[0] == s and np.array_equal(got[1], R) and np.array_equal(got[2], t) and got[3] == 60, seed


def test_alignment_pairs_at_most_20000_pixels_by_default():
    n, side = 2, 160  # 51 200 pixels, 25 600 at the median confidence or above
    rng = np.random.default_rng(6)
    big = Predictions(images=["a", "b"], pts3d=rng.normal(size=(n, side, side, 3)).astype(np.float32),
                      depth_z=np.ones((n, side, side), np.float32),
                      conf=rng.permutation(n * side * side).astype(np.float32).reshape(n, side, side),
                      mask=np.ones((n, side, side), bool), cam2world=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                      K=np.zeros((n, 3, 3)), K_original=np.zeros((n, 3, 3)), original_hw=np.ones((n, 2)), scale=1.0,
                      metric=False)
    s, R, t, pairs = align_to(big, big, [(0, 0), (1, 1)], with_scale=True)
    assert pairs == 20000 and abs(s - 1) < 1e-5 and np.allclose(R, np.eye(3), atol=1e-5)


# ---------------------------------------------------------------------------- the similarity applied


def test_transformed_maps_points_depths_and_cameras_and_leaves_the_input_alone():
    pred = truth(3)
    before = {k: getattr(pred, k).copy() for k in ("pts3d", "depth_z", "cam2world")}
    s, R, t = similarity(6, scale=2.5)
    out = transformed(pred, s, R, t)
    assert all(np.array_equal(getattr(pred, k), v) for k, v in before.items()), "the input was changed"
    assert all(getattr(out, k).dtype == np.float32 for k in before)
    assert np.allclose(out.pts3d, s * np.einsum("ij,vhwj->vhwi", R, before["pts3d"]) + t, atol=1e-5)
    assert np.allclose(out.depth_z, s * before["depth_z"], atol=1e-6)
    for v in range(3):  # the camera moved with the world: its rotation turned, its centre mapped, no scale in it
        assert np.allclose(out.cam2world[v, :3, :3], R @ before["cam2world"][v, :3, :3], atol=1e-6)
        assert np.allclose(out.cam2world[v, :3, 3], s * R @ before["cam2world"][v, :3, 3] + t, atol=1e-5)
        assert np.allclose(out.cam2world[v, 3], [0, 0, 0, 1])


def test_transformed_in_place_and_of_some_views_only():
    pred = truth(3)
    before = pred.pts3d.copy(), pred.depth_z.copy(), pred.cam2world.copy()
    s, R, t = similarity(7, scale=0.5)
    out = transformed(pred, s, R, t, in_place=True, views=(2, 0))
    assert out is pred
    assert np.array_equal(pred.pts3d[1], before[0][1]) and np.array_equal(pred.depth_z[1], before[1][1])
    assert np.array_equal(pred.cam2world[1], before[2][1])
    for v in (0, 2):
        assert np.allclose(pred.pts3d[v], s * before[0][v] @ R.T + t, atol=1e-5)
        assert np.allclose(pred.depth_z[v], s * before[1][v], atol=1e-6)
        assert np.allclose(pred.cam2world[v, :3, 3], s * R @ before[2][v, :3, 3] + t, atol=1e-5)


# ---------------------------------------------------------------------------- the scene from chunks


def chunked_run(pred: Predictions, moves: dict[int, tuple], asked: list[list[int]]):
    """``run(views)``: the truth of those views, moved into a frame of their own (``moves`` by first view)."""
    def run(views):
        asked.append(list(views))
        part = subset(pred, views)
        return transformed(part, *moves[views[0]]) if views[0] in moves else part
    return run


def assert_scene_is(scene: Predictions, pred: Predictions, atol: float = 1e-4) -> None:
    assert scene.images == pred.images
    assert np.allclose(scene.pts3d, pred.pts3d, atol=atol) and np.allclose(scene.depth_z, pred.depth_z, atol=atol)
    assert np.allclose(scene.cam2world, pred.cam2world, atol=atol)
    for k in ("conf", "mask", "K", "K_original", "original_hw", "descriptor"):
        assert np.array_equal(getattr(scene, k), getattr(pred, k)), k
    for k in ("pts3d", "depth_z", "conf", "mask", "cam2world", "descriptor"):
        assert getattr(scene, k).dtype == getattr(pred, k).dtype, k


def test_chunks_each_in_a_frame_of_their_own_make_the_scene_in_the_first_ones():
    pred = truth(8)
    moves = {2: inverse(*similarity(8, scale=1 / 1.7)), 4: inverse(*similarity(9, scale=3.0))}
    asked, seen = [], []
    scene, report = predict_in_chunks(chunked_run(pred, moves, asked), 8, 4, 2,
                                      on_chunk=lambda k, part: seen.append((k, part.images)))
    assert asked == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]
    assert seen == [(k, [pred.images[v] for v in views]) for k, views in enumerate(asked)]
    assert_scene_is(scene, pred)
    shared = [by_hand(pred, subset(pred, views), [(v, j) for j, v in enumerate(views[:2])]) for views in asked[1:]]
    assert [r["views"] for r in report] == [[0, 3], [2, 5], [4, 7]] and report[0] == {"views": [0, 3], "scale": 1.0}
    assert [r["pairs"] for r in report[1:]] == [len(s) for s in shared]
    assert [abs(r["scale"] - want) < 2e-5 for r, want in zip(report[1:], (1 / 1.7, 3.0))] == [True, True], report
    assert all(r["scale"] == round(r["scale"], 5) for r in report)


def test_a_metric_models_chunks_are_aligned_without_scale():
    pred = replace(truth(6), metric=True)
    moves = {2: inverse(*similarity(10, scale=1.0))}
    scene, report = predict_in_chunks(chunked_run(pred, moves, []), 6, 4, 2)
    assert_scene_is(scene, pred)
    assert report[1]["scale"] == 1.0


def test_a_chunk_is_aligned_on_the_views_the_scene_has_even_without_the_models_mask():
    """With no mask (all False) every finite pixel of the shared views pairs; the chunk's new views are no part
    of it (they are not in the scene yet)."""
    pred = truth(6)
    pred.mask[:] = False
    moves = {2: inverse(*similarity(11, scale=2.0)), 3: inverse(*similarity(15, scale=0.8))}
    scene, report = predict_in_chunks(chunked_run(pred, moves, []), 6, 3, 1)
    assert_scene_is(scene, pred)
    assert [r["views"] for r in report] == [[0, 2], [2, 4], [3, 5]]  # the last moved back to 3 views
    assert report[1]["pairs"] == H * W // 2 and abs(report[1]["scale"] - 2.0) < 2e-5  # view 2 alone, from its median
    assert report[2]["pairs"] == H * W and abs(report[2]["scale"] - 0.8) < 2e-5  # views 3 and 4


def test_the_seed_of_the_alignment_is_0_by_default():
    pred = truth(4)
    move = inverse(*similarity(12, scale=1.3))

    def run(views):  # each chunk with noise of its own: the fit depends on RANSAC's draw
        part = transformed(subset(pred, views), *move) if views[0] else subset(pred, views)
        part.pts3d += np.random.default_rng(views[0]).normal(scale=0.05, size=part.pts3d.shape).astype(np.float32)
        return part

    scenes = [predict_in_chunks(run, 4, 3, 1, **kw)[0].pts3d for kw in ({}, {"seed": 0}, {"seed": 3})]
    assert np.array_equal(scenes[0], scenes[1]) and not np.array_equal(scenes[0], scenes[2])


def test_one_chunk_is_the_models_output_as_it_is():
    pred = truth(3)
    seen = []
    scene, report = predict_in_chunks(lambda views: pred, 3, 4, 2, on_chunk=lambda k, p: seen.append(k))
    assert scene is pred and report == [{"views": [0, 2], "scale": 1.0}] and seen == [0]


def test_a_resumed_run_takes_the_kept_chunks_and_predicts_the_others(tmp_path):
    pred = truth(8)
    moves = {2: inverse(*similarity(13, scale=2.0)), 4: inverse(*similarity(14, scale=0.5))}
    first = chunked_run(pred, moves, [])
    kept = {0: first([0, 1, 2, 3]), 1: tmp_path / "chunk-0001.npz"}
    first([2, 3, 4, 5]).save(kept[1])
    asked, seen = [], []
    scene, report = predict_in_chunks(chunked_run(pred, moves, asked), 8, 4, 2, done=kept,
                                      on_chunk=lambda k, part: seen.append(k))
    assert asked == [[4, 5, 6, 7]] and seen == [2]
    assert_scene_is(scene, pred)
    asked = []
    predict_in_chunks(chunked_run(pred, moves, asked), 8, 4, 2, done={2: first([4, 5, 6, 7])})
    assert asked == [[0, 1, 2, 3], [2, 3, 4, 5]]


def test_a_chunk_kept_without_descriptors_leaves_its_views_descriptors_empty():
    pred = truth(6)
    plain = truth(6, descriptor=False)

    def run(views):
        return subset(pred if views[0] == 0 else plain, views)

    scene, _ = predict_in_chunks(run, 6, 4, 2)
    assert np.array_equal(scene.descriptor[:4], pred.descriptor[:4]) and not scene.descriptor[4:].any()
    assert np.allclose(scene.pts3d, pred.pts3d, atol=1e-4)


# ---------------------------------------------------------------------------- chunks kept for a resumed run


def test_chunks_are_kept_beside_the_predictions_file_and_found_again_with_the_same_settings(tmp_path):
    target = tmp_path / "deep" / "er" / "preds.npz"  # its folder not made yet
    kept = KeptChunks(target, {"chunk": 4, "frames": ["a", "b"]})
    assert kept.folder == tmp_path / "deep" / "er" / "preds.npz.parts" and kept.done() == {}
    pred = truth(2)
    kept.save(0, pred)
    kept.save(12, pred)
    again = KeptChunks(target, {"frames": ["a", "b"], "chunk": 4})  # the same settings, written in another order
    found = again.done()
    assert found == {0: kept.folder / "chunk-0000.npz", 12: kept.folder / "chunk-0012.npz"}
    assert np.array_equal(Predictions.load(found[12]).pts3d, pred.pts3d)
    assert KeptChunks(target, {"chunk": 5, "frames": ["a", "b"]}).done() == {}
    again.clear()
    assert not kept.folder.exists() and again.done() == {}
    again.clear()  # nothing to remove


def test_chunks_kept_with_other_settings_are_dropped_when_a_new_one_is_kept(tmp_path):
    target = tmp_path / "preds.npz"
    old = KeptChunks(target, {"chunk": 4})
    old.save(0, truth(1))
    old.save(1, truth(1))
    new = KeptChunks(target, {"chunk": 6})
    new.save(3, truth(1))
    assert new.done() == {3: new.folder / "chunk-0003.npz"} and old.done() == {}
    assert sorted(p.name for p in new.folder.iterdir()) == ["chunk-0003.npz", "settings.json"]


def test_without_a_predictions_file_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kept = KeptChunks(None, {"chunk": 4})
    kept.save(0, truth(1))
    assert kept.folder is None and kept.done() == {} and not list(tmp_path.iterdir())
    kept.clear()

"""The network's depth placed on the cameras of matching (heads/recon/placement.py), on a synthetic ground truth:
random depth maps seen by known cameras, the network's copy of them in a world of its own (a similarity of the
truth's, with per-frame errors in depth), and matching's cameras in another (its own scale and origin) with
the true depths of a few tracked pixels. Small and fast: no images, no COLMAP run."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pycolmap
import pytest

from heads.geometry import invert_pose, rotation_from_quaternion, scale_intrinsics, transform
from heads.pointmap.predictions import Predictions
from heads.recon import placement
from heads.recon.placement import _depth_at, _first_frame_world, _fit_report, _reconstruction_scale, on_cameras
from pixio_cli.errors import UsageError

H, W = 12, 16  # the processing size of the predictions
ORIGINAL = (36, 64)  # the frames' own size: 3 original pixels a processing row, 4 a column
WRITTEN = (18, 32)  # the size of the images matching ran on (its cameras' pixels)


@dataclass
class Truth:
    """V frames of a scene: camera-to-world (V, 4, 4) in metres, z-depth (V, H, W) and K (V, 3, 3) in processing
    pixels (pixel centres at integers)."""
    cam2world: np.ndarray
    depth: np.ndarray
    K: np.ndarray

    def points(self, v: int, depth: np.ndarray | None = None) -> np.ndarray:
        """Camera-frame points (H, W, 3) of frame ``v`` at ``depth`` (its true depth by default)."""
        z = self.depth[v] if depth is None else depth
        u, w = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        xy = np.stack([(u - self.K[v, 0, 2]) / self.K[v, 0, 0], (w - self.K[v, 1, 2]) / self.K[v, 1, 1]], -1)
        return np.concatenate([xy * z[..., None], z[..., None]], -1)

    def in_first_camera(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cameras (V, 4, 4), points (V, H, W, 3) and depths (V, H, W) in frame 0's camera, lengths times s."""
        c2w = invert_pose(self.cam2world[0])[None] @ self.cam2world
        c2w[:, :3, 3] *= s
        pts = np.stack([s * transform(self.points(v), c2w_v) for v, c2w_v in enumerate(
            invert_pose(self.cam2world[0])[None] @ self.cam2world)])
        return c2w, pts, s * self.depth


def scene(V: int = 4, seed: int = 0) -> Truth:
    """V frames looking about the same way from random places, their depth random in [0.6, 2.5] m at every pixel
    (so that a pixel's neighbours tell nothing of it); frame 1 has a camera of its own, the others share one."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (V, 1, 1))
    c2w[:, :3, :3] = rotation_from_quaternion(np.concatenate([0.2 * rng.normal(size=(V, 3)), np.ones((V, 1))], 1))
    c2w[:, :3, 3] = rng.normal(size=(V, 3))
    K = np.tile(np.array([[14.0, 0, 7.3], [0, 13.0, 5.6], [0, 0, 1]]), (V, 1, 1))
    if V > 1:
        K[1] = [[18.0, 0, 8.1], [0, 17.5, 4.9], [0, 0, 1]]
    return Truth(c2w, rng.uniform(0.6, 2.5, (V, H, W)), K)


def similar(c2w: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera-to-world poses (V, 4, 4) after the world is mapped by x -> s R x + t."""
    out = c2w.copy()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ R.T + t
    return out


def random_similarity(rng: np.random.Generator, s: float) -> tuple[float, np.ndarray, np.ndarray]:
    return s, rotation_from_quaternion(rng.normal(size=4)), rng.normal(size=3)


def network(truth: Truth, s: float = 1.0, factors=None, metric: bool = False, seed: int = 1) -> Predictions:
    """The network's predictions: the true scene in a world of its own (scale ``s``), each frame's depth off by
    its factor in ``factors`` (or a map of factors (H, W)), and intrinsics of its own guess."""
    V = len(truth.depth)
    f = np.ones(V) if factors is None else factors
    depth = np.stack([truth.depth[v] * f[v] for v in range(V)])
    world = random_similarity(np.random.default_rng(seed), s)
    c2w = similar(truth.cam2world, *world)
    pts = np.stack([s * transform(truth.points(v, depth[v]), truth.cam2world[v]) @ world[1].T + world[2]
                    for v in range(V)])
    K = truth.K * [[1.1], [1.05], [1.0]]
    return Predictions(images=[f"frame{v}.png" for v in range(V)], pts3d=pts.astype(np.float32),
                       depth_z=(s * depth).astype(np.float32), conf=np.ones((V, H, W), np.float32),
                       mask=np.ones((V, H, W), bool), cam2world=c2w.astype(np.float32), K=K.astype(np.float32),
                       K_original=np.stack([scale_intrinsics(k, (H, W), ORIGINAL) for k in K]).astype(np.float32),
                       original_hw=np.array([ORIGINAL] * V), scale=1.0, metric=metric)


@dataclass
class FakeSfm:
    """What :class:`heads.recon.camera_files.SfmCameras` gives placement: registered (V,), cam2world (V, 4, 4) in
    the reconstruction's units, K (V, 3, 3) in original pixels, cameras (pycolmap's, in written pixels), per
    frame its tracked pixels (n, 2, original pixels) and their depths (n,)."""
    registered: np.ndarray
    cam2world: np.ndarray
    K: np.ndarray
    cameras: list
    observations: list
    written_hw: np.ndarray
    scale: float | None = None
    known: bool = False
    points: int = 1234
    reprojection_error: float = 0.43219


def pixel_centres(pixels: np.ndarray) -> np.ndarray:
    """Processing pixels (n, 2) as (row, column) -> the original pixels (x, y) (n, 2) of their centres."""
    return np.stack([(pixels[:, 1] + 0.5) * ORIGINAL[1] / W - 0.5, (pixels[:, 0] + 0.5) * ORIGINAL[0] / H - 0.5], 1)


def colmap_camera(K: np.ndarray) -> pycolmap.Camera:
    """A PINHOLE camera in the written images' pixels of K (processing pixels, centres at integers)."""
    sx, sy = WRITTEN[1] / W, WRITTEN[0] / H
    camera = pycolmap.Camera.create_from_model_name(1, "PINHOLE", float(K[0, 0] * sx), WRITTEN[1], WRITTEN[0])
    camera.params = [K[0, 0] * sx, K[1, 1] * sy, (K[0, 2] + 0.5) * sx, (K[1, 2] + 0.5) * sy]  # COLMAP: +0.5
    return camera


def matching(truth: Truth, registered, unit: float = 0.5, tracks=60, seed: int = 2, **fields) -> FakeSfm:
    """Matching's view of the truth: cameras in a world of its own whose metre is ``unit``, and ``tracks``
    pixels of each registered frame (a number, or one per frame) with their true depths in that unit."""
    rng = np.random.default_rng(seed)
    V = len(truth.depth)
    registered = np.array(registered, bool)
    c2w = np.where(registered[:, None, None], similar(truth.cam2world, *random_similarity(rng, unit)), np.eye(4))
    K = np.stack([scale_intrinsics(truth.K[v], (H, W), ORIGINAL) if registered[v] else np.zeros((3, 3))
                  for v in range(V)])
    shared = colmap_camera(truth.K[0])
    cameras = [None if not registered[v] else colmap_camera(truth.K[v]) if v == 1 else shared for v in range(V)]
    observations = []
    for v in range(V):
        n = tracks if np.isscalar(tracks) else tracks[v]
        flat = rng.choice(np.flatnonzero(truth.depth[v] > 0), n if registered[v] else 0, replace=False)
        pixels = np.stack(np.divmod(flat, W), 1)
        observations.append((pixel_centres(pixels), unit * truth.depth[v][pixels[:, 0], pixels[:, 1]]))
    return FakeSfm(registered, c2w, K, cameras, observations, np.array([WRITTEN] * V), **fields)


def assert_placed(out: Predictions, truth: Truth, s: float, views=None, atol: float = 1e-4) -> None:
    """``out``'s frames ``views`` (all by default) are the truth's in frame 0's camera, lengths times ``s``."""
    views = list(range(len(truth.depth))) if views is None else views
    c2w, pts, depth = truth.in_first_camera(s)
    for v in views:
        assert np.allclose(out.cam2world[v], c2w[v], atol=atol), f"frame {v}'s camera is not the true one"
        assert np.allclose(out.depth_z[v], depth[v], atol=atol), f"frame {v}'s depth is not the true one"
        assert np.allclose(out.pts3d[v], pts[v], atol=atol), f"frame {v}'s points are not the true ones"


# ---------------------------------------------------------------------------- the network's cameras


def test_without_cameras_of_matching_the_network_cameras_are_put_in_the_first_cameras_frame():
    truth = scene()
    out, report = on_cameras(network(truth, s=1.7))
    assert report == {"cameras": "network", "registered": 0, "unregistered": []}
    assert_placed(out, truth, 1.7)


def test_with_one_registered_frame_the_network_cameras_stay():
    truth = scene()
    pred = network(truth, s=1.7)
    out, report = on_cameras(pred, matching(truth, [False, True, False, False]))
    assert report == {"registered": 1, "unregistered": pred.images, "cameras": "network"}
    assert_placed(out, truth, 1.7)


def test_too_few_triangulated_points_leave_the_network_cameras_and_say_how_many():
    """19 tracks with a depth in both, and three without: one where the network has none, one on no depth of
    matching's, one outside the image."""
    truth = scene()
    truth.depth[0, 0, 0] = 0.0
    pred = network(truth, s=1.7)
    sfm = matching(truth, [True, True, False, False], tracks=[10, 9, 0, 0])
    xy, z = sfm.observations[0]
    sfm.observations[0] = (np.concatenate([xy, [[1.5, 1.5], [5.0, 5.0], [64.2, 3.0]]]),
                           np.concatenate([z, [0.7, 0.0, 1.0]]))
    out, report = on_cameras(pred, sfm)
    assert report["cameras"] == "network" and report["registered"] == 2 and report["unregistered"] == pred.images
    assert report["reason"] == ("19 triangulated points with a depth from the network, too few to set the "
                                "reconstruction's scale"), report["reason"]
    assert_placed(out, truth, 1.7)


def test_twenty_triangulated_points_are_enough_to_set_the_scale():
    truth = scene()
    out, report = on_cameras(network(truth, s=1.7), matching(truth, [True, True, False, False], tracks=[10, 10, 0, 0]))
    assert report["cameras"] == "sfm" and report["sfm_scale"] == pytest.approx(1.7 / 0.5)


# ---------------------------------------------------------------------------- depth on the cameras of matching


def test_depth_is_placed_on_the_cameras_at_the_networks_scale():
    """Per-frame errors in the network's depth (their median 1) are undone, and the whole scene takes the
    network's scale; the cameras (intrinsics too) are matching's, each frame through its own camera."""
    truth = scene()
    factors = np.array([0.7, 1.0, 1.0, 1.3])
    pred = network(truth, s=1.7, factors=factors)
    sfm = matching(truth, [True] * 4, unit=0.5)
    out, report = on_cameras(pred, sfm, fit=None)
    assert_placed(out, truth, 1.7)
    assert np.allclose(out.K, truth.K, atol=1e-4), "the intrinsics are not matching's, in processing pixels"
    assert np.allclose(out.K_original, sfm.K, atol=1e-3), "the intrinsics are not matching's, in original pixels"
    assert set(report) == {"registered", "unregistered", "cameras", "points", "reprojection_error_px", "sfm_scale",
                           "depth_scales", "tracks", "depth_fit", "to_output"}
    assert report["registered"] == 4 and report["unregistered"] == [] and report["cameras"] == "sfm"
    assert report["points"] == 1234 and report["reprojection_error_px"] == 0.432
    assert report["sfm_scale"] == pytest.approx(1.7 / 0.5)
    assert report["depth_scales"] == [round(1 / f, 4) for f in factors]
    for v, (xy, z) in enumerate(sfm.observations):  # the depths each frame's tracks span, in the output's units
        assert report["tracks"][v] == pytest.approx(tuple(np.percentile(z / 0.5 * 1.7, [1, 99])))
    assert report["depth_fit"] == {"views": 4, "tracks_per_view": 60, "off_before_pct": 0.0, "off_after_pct": 0.0}
    # the map from matching's world (at the network's scale) to the output's
    scaled = sfm.cam2world.copy()
    scaled[:, :3, 3] *= report["sfm_scale"]
    assert np.allclose(np.array(report["to_output"]) @ scaled, out.cam2world, atol=1e-4)


def test_the_scale_is_the_median_depth_ratio_over_every_track():
    """Each track counts once: one frame of 150 tracks outweighs three of 20."""
    truth = scene()
    factors = np.array([1.2, 0.9, 0.9, 0.9])
    out, report = on_cameras(network(truth, factors=factors), matching(truth, [True] * 4, tracks=[150, 20, 20, 20]),
                             fit=None)
    assert report["sfm_scale"] == pytest.approx(1.2 / 0.5)
    assert_placed(out, truth, 1.2)


def test_a_smooth_error_in_depth_is_fitted_away_by_the_default_field():
    """The network's depth off by a factor from 0.85 at the left edge to 1.15 at the right: the default fit
    corrects it across the image, which one scale per frame cannot."""
    truth = scene()
    ramp = np.exp(np.log(1.15) * np.linspace(-1, 1, W))[None, :] * np.ones((H, 1))
    pred = network(truth, factors=np.array([ramp] * 4))
    out, report = on_cameras(pred, matching(truth, [True] * 4, tracks=120))
    s = report["sfm_scale"] * 0.5
    err = np.abs(out.depth_z / (s * truth.depth) - 1)
    assert np.median(err) < 0.01 and np.percentile(err, 90) < 0.02, f"depth still off by {np.median(err):.1%}"
    assert report["depth_fit"]["off_before_pct"] > 5 and report["depth_fit"]["off_after_pct"] < 0.5, report["depth_fit"]


def test_without_a_fit_each_frame_takes_one_scale_the_median_of_its_tracks():
    """The smooth error above, with ``fit`` None: each frame's depth is scaled as a whole, by the median ratio of
    its tracks' depths to its own."""
    truth = scene()
    ramp = np.exp(np.log(1.15) * np.linspace(-1, 1, W))[None, :] * np.ones((H, 1))
    pred = network(truth, factors=np.array([ramp] * 4))
    sfm = matching(truth, [True] * 4, tracks=121)  # an odd number: the median is one track's
    out, report = on_cameras(pred, sfm, fit=None)
    for v, (xy, z) in enumerate(sfm.observations):
        pixels = np.round((xy[:, ::-1] + 0.5) * [H / ORIGINAL[0], W / ORIGINAL[1]] - 0.5).astype(int)
        ratio = np.median(z * report["sfm_scale"] / pred.depth_z[v][pixels[:, 0], pixels[:, 1]])
        assert np.allclose(out.depth_z[v], ratio * pred.depth_z[v], rtol=1e-5), f"frame {v} is not scaled as a whole"


def test_measured_views_keep_their_depth_and_set_the_scale():
    """Frame 2's depth was measured (metres): it is kept as it is, not fitted to the tracks; the others are."""
    truth = scene()
    factors = np.array([1.3, 1.3, 1.0, 1.3])
    pred = network(truth, factors=factors, metric=True)
    sfm = matching(truth, [True] * 4, tracks=[20, 20, 100, 20])
    out, report = on_cameras(pred, sfm, fit=None, measured_views=np.array([False, False, True, False]))
    assert report["sfm_scale"] == pytest.approx(1 / 0.5), "the measured frame's tracks did not set the scale"
    assert_placed(out, truth, 1.0)
    assert report["depth_scales"][2] == 1.0 and report["depth_fit"]["views"] == 3
    wrong = replace(pred, depth_z=pred.depth_z * np.array([1, 1, 1.1, 1], np.float32)[:, None, None])
    out, _ = on_cameras(wrong, sfm, fit=None, measured_views=np.array([False, False, True, False]))
    assert np.allclose(out.depth_z[2], 1.1 * truth.depth[2], atol=1e-4), "the measured depth was changed"


def test_frames_with_fewer_than_20_track_depths_report_no_span_of_them():
    """Frame 1: 20 tracks in front of the camera, and a few on or behind it; frame 2: 19 and those; frame 3:
    none. The span is of the depths in front."""
    truth = scene()
    sfm = matching(truth, [True, True, True, False], tracks=[60, 20, 19, 0], unit=0.3)
    in_front = [z for _, z in sfm.observations]
    for v in (1, 2):
        xy, z = sfm.observations[v]
        sfm.observations[v] = (np.concatenate([xy, pixel_centres(np.array([[0, 0], [1, 1], [2, 2]]))]),
                               np.concatenate([z, [0.0, -0.5, -2.0]]))
    out, report = on_cameras(network(truth), sfm, fit=None)
    assert report["tracks"][2] is None and report["tracks"][3] is None
    for v in (0, 1):
        assert report["tracks"][v] == pytest.approx(tuple(np.percentile(in_front[v] / 0.3, [1, 99])))


def test_cameras_in_metres_need_no_tracks_to_set_the_scale():
    truth = scene()
    out, report = on_cameras(network(truth, s=1.3, metric=True), matching(truth, [True] * 4, unit=1.0, tracks=5,
                                                                            scale=1.0))
    assert report["cameras"] == "sfm" and report["sfm_scale"] == 1.0
    c2w, _, _ = truth.in_first_camera(1.0)
    assert np.allclose(out.cam2world, c2w, atol=1e-4), "the cameras are not in metres"


def test_given_cameras_keep_their_frame():
    truth = scene()
    sfm = matching(truth, [True] * 4, unit=1.0, scale=1.0, known=True)
    out, report = on_cameras(network(truth, s=1.3), sfm, fit=None)
    assert report["cameras"] == "given" and report["to_output"] == np.eye(4).tolist()
    assert np.allclose(out.cam2world, sfm.cam2world, atol=1e-4), "the given cameras were moved"
    for v in range(4):
        assert np.allclose(out.pts3d[v], transform(truth.points(v), sfm.cam2world[v]), atol=1e-4)


def test_given_cameras_without_a_unit_or_tracks_are_refused():
    truth = scene()
    with pytest.raises(UsageError) as refused:
        on_cameras(network(truth), matching(truth, [True] * 4, tracks=3, known=True))
    assert str(refused.value) == ("--known-cameras: the cameras' unit is not said (a cameras.json in metres) and there "
                                  "are no triangulated points to set it (a COLMAP model with its points3D)")


def test_the_cameras_of_matching_are_left_as_they_were():
    truth = scene()
    sfm = matching(truth, [True] * 4)
    before = sfm.cam2world.copy()
    on_cameras(network(truth, s=1.7), sfm, fit=None)
    assert np.array_equal(sfm.cam2world, before)


# ---------------------------------------------------------------------------- frames matching missed


def test_frames_matching_missed_are_mapped_onto_the_others_by_their_common_points():
    truth = scene(V=5)
    pred = network(truth, s=1.7)
    out, report = on_cameras(pred, matching(truth, [True, True, False, True, False]), fit=None)
    assert report["unregistered"] == ["frame2.png", "frame4.png"]
    assert report["depth_scales"][2] == 1.0 and report["tracks"][2] is None
    assert_placed(out, truth, 1.7, atol=1e-3)


def test_the_first_frame_may_be_one_matching_missed():
    truth = scene(V=4)
    out, report = on_cameras(network(truth, s=1.7), matching(truth, [False, True, True, True]), fit=None)
    assert report["unregistered"] == ["frame0.png"]
    assert_placed(out, truth, 1.7, atol=1e-3)


def test_a_metric_models_missed_frames_keep_its_metres():
    """Cameras in metres and a network 25 % off them: a metric network's missed frame is moved, not scaled;
    any other is scaled onto the cameras."""
    truth = scene()
    for metric, expected in ((True, 1.25), (False, 1.0)):
        pred = network(truth, s=1.25, metric=metric)
        out, _ = on_cameras(pred, matching(truth, [True, True, False, True], unit=1.0, scale=1.0), fit=None)
        assert np.allclose(out.depth_z[2], expected * truth.depth[2], atol=1e-3), f"metric={metric}"


def test_points_the_camera_cannot_unproject_are_left_out_of_the_mapping():
    class Clipped:
        """A camera that has no ray for the written image's left columns (as a lens model's edge)."""

        def __init__(self, camera):
            self.camera = camera

        def cam_from_img(self, pix):
            out = np.array(self.camera.cam_from_img(pix), np.float64)
            out[pix[:, 0] < 8] = np.nan
            return out

    truth = scene(V=4)
    sfm = matching(truth, [True, True, False, True])
    clipped = Clipped(sfm.cameras[0])
    sfm.cameras = [clipped if c is sfm.cameras[0] else c for c in sfm.cameras]
    out, _ = on_cameras(network(truth, s=1.7), sfm, fit=None)
    assert_placed(out, truth, 1.7, views=[2], atol=1e-3)


def test_missed_frames_are_mapped_by_64_registered_frames_evenly_spread(monkeypatch):
    """4 registered frames: all of them map the missed one; 70: the 64 nearest to even steps from the first to
    the last."""
    seen = []
    real = placement.corresponding_pixels

    def spy(scene, part, shared, **kwargs):
        seen.append([i for i, _ in shared])
        return real(scene, part, shared, **kwargs)

    monkeypatch.setattr(placement, "corresponding_pixels", spy)
    few = scene(V=5)
    on_cameras(network(few), matching(few, [True, True, False, True, True]), fit=None)
    assert seen == [[0, 1, 3, 4]], "with up to 64 registered frames, each maps the missed ones, once"
    seen.clear()
    truth = scene(V=71)
    out, _ = on_cameras(network(truth, s=1.7), matching(truth, [True] * 70 + [False], tracks=20), fit=None)
    step = 69 / 63
    assert seen == [[int(np.floor(k * step + 0.5)) for k in range(64)]]
    assert_placed(out, truth, 1.7, views=[70], atol=1e-3)


def test_the_seed_decides_the_draws_of_the_mapping(monkeypatch):
    seeds = []
    real_pairs, real_fit = placement.corresponding_pixels, placement.ransac_umeyama

    def pairs(*args, seed=0, **kwargs):
        seeds.append(("pairs", seed))
        return real_pairs(*args, seed=seed, **kwargs)

    def fit(*args, seed=0, **kwargs):
        seeds.append(("fit", seed))
        return real_fit(*args, seed=seed, **kwargs)

    monkeypatch.setattr(placement, "corresponding_pixels", pairs)
    monkeypatch.setattr(placement, "ransac_umeyama", fit)
    truth = scene()
    on_cameras(network(truth), matching(truth, [True, True, False, True]), 7)
    assert seeds == [("pairs", 7), ("fit", 7)]
    seeds.clear()
    on_cameras(network(truth), matching(truth, [True, True, False, True]))
    assert seeds == [("pairs", 0), ("fit", 0)], "the default seed is not 0"


# ---------------------------------------------------------------------------- the input's arrays

PATHS = {  # registered frames and tracks per frame: each way on_cameras can go
    "no cameras": None, "one registered": ([False, True, False, False], 60),
    "too few points": ([True, True, False, False], 5), "on the cameras": ([True, True, False, True], 60)}


@pytest.mark.parametrize("path", list(PATHS))
def test_the_input_is_left_as_it_was_unless_given_up(path):
    truth = scene()
    pred = network(truth, s=1.7)
    kept = {name: np.array(getattr(pred, name), copy=True)
            for name in ("pts3d", "depth_z", "cam2world", "K", "K_original")}
    sfm = None if PATHS[path] is None else matching(truth, PATHS[path][0], tracks=PATHS[path][1])
    out, _ = on_cameras(pred, sfm)
    for name, a in kept.items():
        assert np.array_equal(getattr(pred, name), a), f"the input's {name} was changed"
    assert_placed(out, truth, 1.7, atol=1e-3)


@pytest.mark.parametrize("path", list(PATHS))
def test_given_up_input_arrays_are_written_over(path):
    truth = scene()
    pred = network(truth, s=1.7)
    arrays = (pred.pts3d, pred.depth_z, pred.cam2world)
    sfm = None if PATHS[path] is None else matching(truth, PATHS[path][0], tracks=PATHS[path][1])
    out, _ = on_cameras(pred, sfm, in_place=True)
    assert all(a is b for a, b in zip(arrays, (out.pts3d, out.depth_z, out.cam2world))), "the scene was copied"
    assert_placed(out, truth, 1.7, atol=1e-3)


# ---------------------------------------------------------------------------- the parts


def test_depth_at_takes_the_nearest_pixel_of_the_map():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 2, (H, W))
    pixels = np.array([[0, 0], [H - 1, W - 1], [3, 11], [7, 2], [0, W - 1], [H - 1, 0]])
    offset = np.array([[0.0, 0.0], [0.45, -0.45], [-0.45, 0.3], [0.2, 0.45], [-0.45, 0.45], [0.45, -0.45]])
    xy = pixel_centres(pixels) + offset * [ORIGINAL[1] / W, ORIGINAL[0] / H]  # under half a pixel off its centre
    assert np.array_equal(_depth_at(depth, xy, ORIGINAL), depth[pixels[:, 0], pixels[:, 1]])


def test_depth_at_is_nan_off_the_map():
    depth = np.ones((H, W))
    just_off = pixel_centres(np.array([[0, -1], [-1, 0], [H, 0], [0, W], [H, W]]))
    assert np.isnan(_depth_at(depth, just_off, ORIGINAL)).all()
    assert len(_depth_at(depth, np.zeros((0, 2)), ORIGINAL)) == 0


def test_with_no_registered_frame_there_is_no_scale():
    truth = scene()
    assert _reconstruction_scale(network(truth), matching(truth, [False] * 4), np.zeros(0, int)) == (None, 0)


def test_the_reconstruction_scale_counts_the_tracks_with_a_depth_in_both():
    """Tracks where the network has no depth (0), where matching has none (0 or behind), off the image: left out."""
    truth = scene()
    truth.depth[0, :2] = 0.0
    pred = network(truth)
    sfm = matching(truth, [True, True, False, False], tracks=[0, 30, 0, 0], unit=0.5)
    sfm.observations[0] = (np.concatenate([pixel_centres(np.array([[0, 3], [1, 5], [4, 4], [5, 5], [6, 6]])),
                                           [[-3.0, 4.0]]]), np.array([0.4, 0.4, 0.0, -0.3, 0.45, 0.5]))
    scale, n = _reconstruction_scale(pred, sfm, np.array([0, 1]))
    assert n == 31 and scale == pytest.approx(1 / 0.5)


def test_fit_report_gives_the_median_over_views():
    assert _fit_report([]) is None
    rows = [(10, np.log(1.2), np.log(1.01)), (31, np.log(1.13), np.log(1.0123456)),
            (40, np.log(1.05), np.log(1.001)), (12, np.log(1.3), np.log(1.02))]
    # the median of 4: the mean of the middle two, of the tracks (12, 31) and of the log-ratios (a geometric mean)
    expected = {"views": 4, "tracks_per_view": 21, "off_before_pct": round(100 * (np.sqrt(1.13 * 1.2) - 1), 2),
                "off_after_pct": round(100 * (np.sqrt(1.01 * 1.0123456) - 1), 2)}
    assert _fit_report(rows) == expected


def test_first_frame_world_copies_unless_in_place():
    truth = scene()
    pred = network(truth, s=1.7)
    before = pred.pts3d.copy()
    out = _first_frame_world(pred)
    assert np.array_equal(pred.pts3d, before) and out.pts3d is not pred.pts3d
    assert_placed(out, truth, 1.7)
    out = _first_frame_world(pred, in_place=True)
    assert out.pts3d is pred.pts3d
    assert_placed(out, truth, 1.7)

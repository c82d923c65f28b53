"""pixio's settings for COLMAP (heads.recon.sfm): which mapper runs on which frames, what it may refine, which
pass's cameras are kept, the loop pairs and keyframes chosen. COLMAP's own work is pycolmap's: its mapping entry
points are replaced here by recorders of what pixio passes them, so each test takes well under a second."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from heads.recon import sfm

pycolmap = pytest.importorskip("pycolmap")

K = np.array([[530.0, 0.0, 319.5], [0.0, 530.0, 239.5], [0.0, 0.0, 1.0]])


class Model:
    """A stand-in for a pycolmap Reconstruction: how many frames it registers and points it has."""

    def __init__(self, registered: int, points: int = 0, name: str = ""):
        self.registered, self.points, self.name = registered, points, name

    def num_reg_images(self) -> int:
        return self.registered

    def num_points3D(self) -> int:
        return self.points

    def __repr__(self) -> str:
        return f"Model({self.registered}, {self.points}, {self.name!r})"


class Recorder:
    """A pycolmap mapping entry point that keeps its arguments and returns ``models``."""

    def __init__(self, models):
        self.calls: list[tuple[tuple, dict]] = []
        self.models = models

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.models


# ---------------------------------------------------------------------------- what each mapper may refine


@pytest.fixture
def global_mapping(monkeypatch) -> Recorder:
    record = Recorder({0: Model(5)})
    monkeypatch.setattr(pycolmap, "global_mapping", record)
    return record


@pytest.fixture
def incremental_mapping(monkeypatch) -> Recorder:
    record = Recorder({0: Model(5)})
    monkeypatch.setattr(pycolmap, "incremental_mapping", record)
    return record


def refines(ba) -> tuple[bool, bool, bool]:
    return ba.refine_focal_length, ba.refine_principal_point, ba.refine_extra_params


@pytest.mark.parametrize("known,hold", [(True, False), (False, True), (True, True)])
def test_the_global_mapper_holds_known_or_held_intrinsics(tmp_path, global_mapping, known, hold):
    """Known K (--intrinsics) or a focal length held at its prior: GLOMAP's bundle adjustment refines no
    intrinsics (else it moves a calibration the user measured)."""
    options = sfm.SfmOptions(mapper="global", known_K=[K] * 3 if known else None)
    sfm._map(tmp_path / "database.db", tmp_path, tmp_path / "sparse0", options, hold=hold, cancel=None,
             names=["a", "b", "c"])
    (args, kwargs), = global_mapping.calls
    mapping = args[3]
    assert refines(mapping.mapper.bundle_adjustment) == (False, False, False)


def test_the_global_mapper_refines_intrinsics_found_by_matching(tmp_path, global_mapping):
    options = sfm.SfmOptions(mapper="global")
    sfm._map(tmp_path / "database.db", tmp_path, tmp_path / "sparse0", options, hold=False, cancel=None,
             names=["a", "b", "c"])
    mapping = global_mapping.calls[0][0][3]
    default = pycolmap.GlobalPipelineOptions().mapper.bundle_adjustment
    assert refines(mapping.mapper.bundle_adjustment) == refines(default) and default.refine_focal_length


def test_the_global_mapper_runs_seeded_on_one_thread_with_pixios_solver(tmp_path, global_mapping):
    """The same database maps to the same cameras on every run (a seed, one thread) and in pixio's time (a
    looser stop, conjugate gradients, long tracks left to retriangulation), on the database and folders given."""
    db, sparse = tmp_path / "database.db", tmp_path / "sparse-1"
    got = sfm._map_global(db, tmp_path, sparse, sfm.SfmOptions(seed=7), fixed=False)
    assert got is global_mapping.models
    (args, kwargs), = global_mapping.calls
    assert args[:3] == (db, tmp_path, sparse) and not kwargs
    mapping = args[3]
    assert isinstance(mapping, pycolmap.GlobalPipelineOptions)
    assert mapping.random_seed == mapping.mapper.random_seed == 7
    assert mapping.num_threads == mapping.mapper.num_threads == 1
    solver = mapping.mapper.bundle_adjustment.ceres.solver_options
    assert solver.function_tolerance == sfm.GLOBAL_BA_TOLERANCE
    assert solver.linear_solver_type == pycolmap.pyceres.LinearSolverType.ITERATIVE_SCHUR
    assert solver.preconditioner_type == pycolmap.pyceres.PreconditionerType.SCHUR_JACOBI
    assert mapping.min_model_size == 2
    assert mapping.mapper.track_max_num_views_per_track == sfm.MAX_TRACK_VIEWS


@pytest.mark.parametrize("known,hold", [(True, False), (False, True), (True, True)])
def test_the_incremental_mapper_holds_known_or_held_intrinsics(tmp_path, incremental_mapping, known, hold):
    """Known K or a held focal length: neither bundle adjustment nor registering a frame refines the focal
    length, principal point or distortion."""
    options = sfm.SfmOptions(mapper="incremental", known_K=[K] * 3 if known else None)
    sfm._map(tmp_path / "database.db", tmp_path, tmp_path / "sparse0", options, hold=hold, cancel=None,
             names=["a", "b", "c"])
    mapping = incremental_mapping.calls[0][0][3]
    assert (mapping.ba_refine_focal_length, mapping.ba_refine_principal_point, mapping.ba_refine_extra_params) \
        == (False, False, False)
    assert (mapping.mapper.abs_pose_refine_focal_length, mapping.mapper.abs_pose_refine_extra_params) == \
        (False, False)


def test_the_incremental_mapper_refines_intrinsics_found_by_matching(tmp_path, incremental_mapping):
    options = sfm.SfmOptions(mapper="incremental")
    sfm._map(tmp_path / "database.db", tmp_path, tmp_path / "sparse0", options, hold=False, cancel=None,
             names=["a", "b", "c"])
    mapping = incremental_mapping.calls[0][0][3]
    default = pycolmap.IncrementalPipelineOptions()
    for name in ("ba_refine_focal_length", "ba_refine_principal_point", "ba_refine_extra_params"):
        assert getattr(mapping, name) == getattr(default, name), name
    for name in ("abs_pose_refine_focal_length", "abs_pose_refine_extra_params"):
        assert getattr(mapping.mapper, name) == getattr(default.mapper, name), name


def test_the_incremental_mapper_runs_seeded_on_one_thread_with_pixios_start(tmp_path, incremental_mapping):
    """A seed and one thread (the same cameras each run), models of any size, 20 tries at the first pair at 8
    degrees; the cancellation passed on; every frame mapped unless keyframes are named."""
    db, sparse, cancel = tmp_path / "database.db", tmp_path / "sparse0", object()
    got = sfm._map_incremental(db, tmp_path, sparse, sfm.SfmOptions(seed=5), hold=False, cancel=cancel)
    assert got is incremental_mapping.models
    (args, kwargs), = incremental_mapping.calls
    assert args[:3] == (db, tmp_path, sparse) and kwargs == {"cancellation_token": cancel}
    mapping = args[3]
    assert isinstance(mapping, pycolmap.IncrementalPipelineOptions)
    assert mapping.random_seed == 5 and mapping.num_threads == 1 and mapping.min_model_size == 2
    assert mapping.init_num_trials == 20 and mapping.mapper.init_min_tri_angle == 8.0
    assert list(mapping.image_names) == []  # all of them
    sfm._map_incremental(db, tmp_path, sparse, sfm.SfmOptions(), hold=False, cancel=None, image_names=["b", "d"])
    assert list(incremental_mapping.calls[1][0][3].image_names) == ["b", "d"]


# ---------------------------------------------------------------------------- which mapper, which model


@pytest.fixture
def mappers(monkeypatch):
    """_map's three mappers replaced by recorders; what each saw, by name."""
    seen: dict[str, list] = {"global": [], "incremental": [], "rest": []}
    out = SimpleNamespace(seen=seen, models={0: Model(3, 10, "small"), 1: Model(4, 5, "fewer points"),
                                             2: Model(4, 8, "most")})

    def global_(db, folder, sparse, options, *, fixed):
        seen["global"].append(dict(db=db, folder=folder, sparse=sparse, options=options, fixed=fixed,
                                   files=sorted(sparse.iterdir())))
        return out.models

    def incremental(db, folder, sparse, options, *, hold, cancel, image_names=None):
        seen["incremental"].append(dict(db=db, folder=folder, sparse=sparse, options=options, hold=hold,
                                        cancel=cancel, image_names=image_names, files=sorted(sparse.iterdir())))
        return out.models

    def rest(db, rec, options, cancel):
        seen["rest"].append(dict(db=db, rec=rec, options=options, cancel=cancel))
        return Model(9, 0, "with the rest")

    monkeypatch.setattr(sfm, "_map_global", global_)
    monkeypatch.setattr(sfm, "_map_incremental", incremental)
    monkeypatch.setattr(sfm, "_register_rest", rest)
    return out


def test_map_runs_the_incremental_mapper_on_every_frame_and_keeps_the_largest_model(tmp_path, mappers):
    """Of several models, the one with the most frames, then the most points; sparse/ emptied first."""
    sparse = tmp_path / "sparse0"
    sparse.mkdir()
    (sparse / "stale.bin").write_text("an earlier pass")
    options, cancel = sfm.SfmOptions(mapper="incremental"), SimpleNamespace(is_cancelled=False)
    rec = sfm._map(tmp_path / "db", tmp_path, sparse, options, hold=True, cancel=cancel, names=["a", "b"])
    assert rec.name == "most", rec
    (call,) = mappers.seen["incremental"]
    assert call == dict(db=tmp_path / "db", folder=tmp_path, sparse=sparse, options=options, hold=True,
                        cancel=cancel, image_names=None, files=[]), call
    assert not mappers.seen["global"] and not mappers.seen["rest"]


def test_map_makes_the_sparse_folder_where_there_is_none(tmp_path, mappers):
    sparse = tmp_path / "sparse-1"
    sfm._map(tmp_path / "db", tmp_path, sparse, sfm.SfmOptions(mapper="incremental"), hold=False, cancel=None,
             names=["a"])
    assert mappers.seen["incremental"][0]["files"] == [] and sparse.is_dir()
    assert mappers.seen["incremental"][0]["hold"] is False


@pytest.mark.parametrize("known,hold,fixed", [(False, False, False), (True, False, True), (False, True, True)])
def test_map_runs_the_global_mapper_with_intrinsics_fixed_when_known_or_held(tmp_path, mappers, known, hold, fixed):
    sparse = tmp_path / "sparse0"
    sparse.mkdir()
    (sparse / "0").mkdir()  # a model of an earlier pass
    options = sfm.SfmOptions(mapper="global", known_K=[K] if known else None)
    rec = sfm._map(tmp_path / "db", tmp_path, sparse, options, hold=hold, cancel=None, names=["a"])
    assert rec.name == "most"
    (call,) = mappers.seen["global"]
    assert call == dict(db=tmp_path / "db", folder=tmp_path, sparse=sparse, options=options, fixed=fixed, files=[])
    assert not mappers.seen["incremental"] and not mappers.seen["rest"]


def test_map_of_keyframes_maps_them_and_registers_the_rest_to_the_largest_model(tmp_path, mappers, monkeypatch):
    monkeypatch.setattr(sfm, "INCREMENTAL_UP_TO", 3)
    names = [f"{i:02d}" for i in range(7)]
    options, cancel = sfm.SfmOptions(mapper="keyframes", seed=3), SimpleNamespace(is_cancelled=False)
    rec = sfm._map(tmp_path / "db", tmp_path, tmp_path / "sparse0", options, hold=False, cancel=cancel, names=names)
    assert rec.name == "with the rest"
    assert mappers.seen["incremental"][0]["image_names"] == ["00", "03", "06"]
    (rest,) = mappers.seen["rest"]
    assert rest == dict(db=tmp_path / "db", rec=mappers.models[2], options=options, cancel=cancel), rest


def test_map_gives_none_when_no_model_was_started(tmp_path, mappers):
    mappers.models = {}
    for mapper in ("incremental", "global", "keyframes"):
        assert sfm._map(tmp_path / "db", tmp_path, tmp_path / "sparse0", sfm.SfmOptions(mapper=mapper), hold=False,
                        cancel=None, names=["a", "b"]) is None, mapper
    assert not mappers.seen["rest"]


@pytest.mark.parametrize("mapper", ["incremental", "global"])
def test_map_stops_when_cancelled(tmp_path, mappers, mapper):
    cancel = SimpleNamespace(is_cancelled=True)
    with pytest.raises(KeyboardInterrupt):
        sfm._map(tmp_path / "db", tmp_path, tmp_path / "sparse0", sfm.SfmOptions(mapper=mapper), hold=False,
                 cancel=cancel, names=["a"])


# ---------------------------------------------------------------------------- keyframes, loop pairs


def strided(n: int, most: int) -> list[int]:
    """Every s-th of n frames for the smallest s that keeps at most ``most`` of them, and the last."""
    s = 1
    while len(range(0, n, s)) > most:
        s += 1
    return list(range(0, n, s)) + ([n - 1] if (n - 1) % s else [])


@pytest.mark.parametrize("most", [1, 2, 3, 7, 10])
def test_keyframes_are_every_s_th_frame_and_the_last(most):
    for n in range(1, 40):
        names = [f"f{i}" for i in range(n)]
        assert sfm.keyframe_names(names, most) == [f"f{i}" for i in strided(n, most)], (n, most)


def test_keyframes_are_at_most_incremental_up_to_by_default():
    for n in (1, sfm.INCREMENTAL_UP_TO, sfm.INCREMENTAL_UP_TO + 1, 3 * sfm.INCREMENTAL_UP_TO - 1, 1000):
        names = [str(i) for i in range(n)]
        want = [str(i) for i in strided(n, sfm.INCREMENTAL_UP_TO)]
        assert sfm.keyframe_names(names) == want, n


def brute_loop_pairs(d: np.ndarray, apart: int, per_frame: int) -> set[tuple[int, int]]:
    d = d.astype(np.float32)
    out = set()
    for i in range(len(d)):
        far = [j for j in range(len(d)) if abs(i - j) > apart]
        best = sorted(far, key=lambda j: -float(d[i] @ d[j]))[:per_frame]
        out.update((min(i, j), max(i, j)) for j in best)
    return out


def unit_rows(rng, n: int, dim: int = 8) -> np.ndarray:
    d = rng.normal(size=(n, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("n,apart,per_frame", [(300, 5, 1), (300, 20, 2), (520, 3, 3), (257, 0, 1)])
def test_loop_pairs_are_each_frames_nearest_descriptors_beyond_the_sequential_ones(n, apart, per_frame):
    """Each of n frames (more than one block of 256) with its per_frame most alike frames more than
    ``apart`` away, as pairs (i < j), sorted."""
    d = unit_rows(np.random.default_rng(n + apart), n)
    got = sfm.loop_pairs(d, apart=apart, per_frame=per_frame)
    assert got == sorted(brute_loop_pairs(d, apart, per_frame)), (n, apart, per_frame)


def test_loop_pairs_are_three_per_frame_by_default():
    d = unit_rows(np.random.default_rng(1), 60)
    assert sfm.loop_pairs(d, apart=4) == sorted(brute_loop_pairs(d, 4, sfm.LOOP_PAIRS))
    assert sfm.LOOP_PAIRS == 3


def test_loop_pairs_take_every_frame_far_enough_when_there_are_few():
    """Fewer frames far enough apart than per_frame: all of them, and no frame within ``apart`` (nor itself)."""
    d = unit_rows(np.random.default_rng(2), 9)
    for apart in (0, 2, 5, 8):
        want = [(i, j) for i in range(9) for j in range(i + 1, 9) if j - i > apart]
        assert sfm.loop_pairs(d, apart=apart, per_frame=20) == want, apart


def test_loop_pairs_of_float16_descriptors_are_those_of_their_float32_values():
    d = unit_rows(np.random.default_rng(3), 40).astype(np.float16)
    assert sfm.loop_pairs(d, apart=3, per_frame=2) == sorted(brute_loop_pairs(d, 3, 2))


def test_loop_pairs_score_each_frame_once(monkeypatch):
    """600 frames: each frame's row of similarities is searched once (600 searches, not one per frame for
    every block it falls in: the cost of a long video's loop closure)."""
    searched = []
    real = np.argpartition

    def counting(a, kth, *args, **kwargs):
        searched.append(len(a))
        return real(a, kth, *args, **kwargs)

    d = unit_rows(np.random.default_rng(4), 600)
    monkeypatch.setattr(sfm.np, "argpartition", counting)
    sfm.loop_pairs(d, apart=2, per_frame=1)
    monkeypatch.undo()
    assert len(searched) == 600 and set(searched) == {600}, (len(searched), set(searched))


def test_frames_alike_to_float32s_precision_are_a_tie_whichever_is_nearer_below_it():
    """Similarities are float32 (the network's descriptors): a frame's match among frames alike to within
    float32's rounding does not change with differences below it, in the frame's descriptor or theirs."""
    eps = 1e-12  # far below float32's resolution at 0.7
    got = []
    for a, b in ((0.6, 0.6 + eps), (0.6 + eps, 0.6)):  # frame 0 alike frames 1 and 2 to 1e-12, either nearer
        d = np.array([[1.0, 0.0], [a, 0.8], [b, 0.8]])
        got.append(sfm.loop_pairs(d, apart=0, per_frame=1))
    assert got[0] == got[1], got
    got = []
    for a, b in ((0.7, 0.7 + eps), (0.7 + eps, 0.7)):  # frames 1 and 3 (2 and 4) alike; frame 0 between
        d = np.array([[a, b], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        got.append(sfm.loop_pairs(d, apart=0, per_frame=1))
    assert got[0] == got[1], got
    assert {(1, 3), (2, 4)} <= set(got[0]) and len(got[0]) == 3, got


# ---------------------------------------------------------------------------- the database's cameras


def database(path: Path, n: int) -> Path:
    """A COLMAP database of n images, each with its own SIMPLE_RADIAL camera (f 500 + i)."""
    db = pycolmap.Database.open(path)
    try:
        for i in range(n):
            camera_id = db.write_camera(pycolmap.Camera.create_from_model_name(0, "SIMPLE_RADIAL", 500.0 + i,
                                                                               640, 480))
            db.write_image(pycolmap.Image(name=f"{i}.png", camera_id=camera_id))
    finally:
        db.close()
    return path


def cameras(path: Path) -> dict[str, object]:
    db = pycolmap.Database.open(path)
    try:
        return {im.name: db.read_camera(im.camera_id) for im in db.read_all_images()}
    finally:
        db.close()


def test_set_cameras_changes_every_images_camera_in_the_database(tmp_path):
    db = database(tmp_path / "database.db", 3)
    seen = []

    def change(camera, image):
        seen.append((image.name, camera.camera_id == image.camera_id, camera.params[0]))
        camera.params = [1000.0 + int(image.name[0]), 320.0, 240.0, 0.0]

    sfm._set_cameras(db, change)
    assert sorted(seen) == [(f"{i}.png", True, 500.0 + i) for i in range(3)], seen
    got = cameras(db)
    assert {name: c.params[0] for name, c in got.items()} == {f"{i}.png": 1000.0 + i for i in range(3)}
    sfm._set_cameras(db, sfm._held)  # the database was closed: it opens again
    assert all(c.has_prior_focal_length and c.params[0] >= 1000 for c in cameras(db).values())


def test_a_held_camera_has_its_focal_length_as_a_prior():
    camera = pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", 500.0, 640, 480)
    camera.has_prior_focal_length = False
    sfm._held(camera, None)
    assert camera.has_prior_focal_length is True and camera.params[0] == 500.0


def test_set_cameras_closes_the_database_when_a_change_fails(tmp_path, monkeypatch):
    db = database(tmp_path / "database.db", 2)
    closed = []
    real_open = pycolmap.Database.open

    def opening(path):
        base = real_open(path)
        closed.append(base)
        return base

    monkeypatch.setattr(pycolmap.Database, "open", staticmethod(opening))

    def fail(camera, image):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        sfm._set_cameras(db, fail)
    assert len(closed) == 1
    with pytest.raises(Exception):
        closed[0].num_images()  # closed


# ---------------------------------------------------------------------------- the focal length checked


@pytest.fixture
def lens(monkeypatch):
    """_checked_lens's two checks replaced: what _unfixed_focal says of each model (by name), and the model
    without distortion that _without_needless_distortion gives (None: the same model)."""
    out = SimpleNamespace(says={}, plain=None, asked=[])

    def unfixed(rec):
        out.asked.append(("unfixed", rec.name))
        return out.says[rec.name]

    def without(rec):
        out.asked.append(("without", rec.name))
        return rec if out.plain is None else out.plain

    monkeypatch.setattr(sfm, "_unfixed_focal", unfixed)
    monkeypatch.setattr(sfm, "_without_needless_distortion", without)
    return out


def test_known_intrinsics_are_not_checked(lens):
    rec = Model(5, name="fit")
    assert sfm._checked_lens(rec, sfm.SfmOptions(known_K=[K] * 5)) == (rec, None, None)
    assert lens.asked == []


def test_a_focal_length_no_lens_has_is_said_and_its_distortion_not_dropped(lens):
    rec = Model(5, name="fit")
    lens.says = {"fit": ("no lens", None)}
    assert sfm._checked_lens(rec, sfm.SfmOptions(mapper="incremental")) == (rec, "no lens", None)
    assert lens.asked == [("unfixed", "fit")]


@pytest.mark.parametrize("mapper", ["incremental", "global"])
def test_a_needless_distortion_is_dropped_and_the_model_without_it_checked(lens, mapper):
    rec, plain = Model(sfm.INCREMENTAL_UP_TO, name="fit"), Model(sfm.INCREMENTAL_UP_TO, name="plain")
    lens.says, lens.plain = {"fit": (None, "loose"), "plain": ("plain's", "plain loose")}, plain
    assert sfm._checked_lens(rec, sfm.SfmOptions(mapper=mapper)) == (plain, "plain's", "plain loose")
    assert lens.asked == [("unfixed", "fit"), ("without", "fit"), ("unfixed", "plain")]


def test_a_distortion_the_frames_need_is_kept_with_what_was_said_of_it(lens):
    rec = Model(10, name="fit")
    lens.says = {"fit": (None, "loose")}
    assert sfm._checked_lens(rec, sfm.SfmOptions(mapper="incremental")) == (rec, None, "loose")
    assert lens.asked == [("unfixed", "fit"), ("without", "fit")]


@pytest.mark.parametrize("mapper,registered", [("keyframes", 10), ("incremental", sfm.INCREMENTAL_UP_TO + 1)])
def test_keyframes_and_long_videos_keep_their_distortion_unchecked(lens, mapper, registered):
    """Refitting without distortion costs a bundle adjustment of every frame: not done past INCREMENTAL_UP_TO
    frames, nor on keyframes' models."""
    rec = Model(registered, name="fit")
    lens.says, lens.plain = {"fit": (None, "loose")}, Model(registered, name="plain")
    assert sfm._checked_lens(rec, sfm.SfmOptions(mapper=mapper)) == (rec, None, "loose")
    assert lens.asked == [("unfixed", "fit")]


# ---------------------------------------------------------------------------- which pass's cameras


@pytest.fixture
def passes(monkeypatch):
    """_run_sfm replaced: per first octave, the (model, note, loose) it gives; each call's arguments kept."""
    out = SimpleNamespace(results={}, calls=[])

    def run(folder, names, options, video, cancel, on_stage, more_pairs):
        out.calls.append(dict(folder=folder, names=names, options=options, video=video, cancel=cancel,
                              more_pairs=more_pairs))
        on_stage("matching")
        return out.results[options.first_octave]

    monkeypatch.setattr(sfm, "_run_sfm", run)
    return out


def run(tmp_path, options, **kw):
    stages: list[str] = []
    got = sfm.run_sfm(tmp_path, ["a", "b", "c"], options, on_stage=stages.append, **kw)
    return got, stages


def test_a_first_octave_given_is_the_only_pass(tmp_path, passes):
    rec = Model(1, name="doubled")
    passes.results = {-1: (rec, "note", True)}
    cancel, more = object(), (lambda names: [])
    options = sfm.SfmOptions(first_octave=-1, seed=4)
    got, stages = run(tmp_path, options, video=True, cancel=cancel, more_pairs=more)
    assert got == (rec, "note") and stages == ["matching"]
    assert passes.calls == [dict(folder=tmp_path, names=["a", "b", "c"], options=options, video=True, cancel=cancel,
                                 more_pairs=more)]


def test_the_fast_pass_is_kept_when_it_registers_every_frame_and_fixes_the_focal_length(tmp_path, passes):
    fast = Model(3, name="fast")
    passes.results = {0: (fast, None, False)}
    cancel, more = object(), (lambda names: [])
    options = sfm.SfmOptions(seed=4, mapper="global")
    got, stages = run(tmp_path, options, video=True, cancel=cancel, more_pairs=more)
    assert got == (fast, None) and stages == ["matching"]
    assert passes.calls == [dict(folder=tmp_path, names=["a", "b", "c"], options=replace(options, first_octave=0),
                                 video=True, cancel=cancel, more_pairs=more)]


@pytest.mark.parametrize("fast,fine,kept", [
    ((Model(2, name="fast"), None, False), (Model(3, name="fine"), "fine's", False), "fine"),  # a frame left out
    ((Model(3, name="fast"), "loose", True), (Model(3, name="fine"), None, False), "fine"),  # loosely fixed
    ((Model(3, name="fast"), "loose", True), (Model(2, name="fine"), None, False), "fast"),  # fewer doubled
    ((Model(2, name="fast"), None, False), (Model(1, name="fine"), None, False), "fast"),
    ((Model(2, name="fast"), None, False), (Model(2, name="fine"), None, False), "fine"),  # as many: doubled
    ((Model(2, name="fast"), None, False), (None, None, False), "fast"),
    ((None, None, False), (None, None, False), None),
    ((None, None, False), (Model(1, name="fine"), None, False), "fine"),
])
def test_the_doubled_images_run_when_the_fast_pass_falls_short_and_the_better_is_kept(tmp_path, passes, fast,
                                                                                        fine, kept):
    """The doubled images' cameras are kept where they register at least as many frames as the fast pass."""
    passes.results = {0: fast, -1: fine}
    cancel, more = object(), (lambda names: [])
    options = sfm.SfmOptions(seed=9)
    got, stages = run(tmp_path, options, video=False, cancel=cancel, more_pairs=more)
    want = {"fast": fast, "fine": fine, None: fine}[kept]
    assert got == want[:2], (got, want)
    assert stages == ["matching", "matching, again on doubled images"], stages
    assert [c["options"] for c in passes.calls] == [replace(options, first_octave=0),
                                                     replace(options, first_octave=-1)]
    assert all(c["video"] is False and c["cancel"] is cancel and c["more_pairs"] is more for c in passes.calls)
    assert all(c["folder"] == tmp_path and c["names"] == ["a", "b", "c"] for c in passes.calls)


def test_frames_are_photos_unless_said_to_be_a_video(tmp_path, passes):
    passes.results = {0: (Model(3), None, False)}
    sfm.run_sfm(tmp_path, ["a", "b", "c"], sfm.SfmOptions())
    assert passes.calls[0]["video"] is False and passes.calls[0]["more_pairs"] is None


# ---------------------------------------------------------------------------- one pass: what COLMAP is given


@pytest.fixture
def colmap(monkeypatch, tmp_path):
    """One pass (_run_sfm) with pycolmap's features, matching and pixio's mapping replaced by recorders: every
    call in order in ``events`` (name, arguments); ``models``: what each mapping gives (then a model of 3
    frames named 'mapped'); ``lens``: what the focal check says (wrong, loose)."""
    out = SimpleNamespace(events=[], models=[], lens=(None, None), stale=[])

    def record(name):
        def call(*args, **kwargs):
            out.events.append((name, args, kwargs))
        return call

    def extract(db, folder, **kwargs):
        out.stale.append(Path(db).exists())
        out.events.append(("extract", (db, folder), kwargs))

    def map_(db, folder, *, sparse, options, hold, cancel, names):
        out.events.append(("map", (db, folder), dict(sparse=sparse, options=options, hold=hold, cancel=cancel,
                                                    names=names)))
        return out.models.pop(0) if out.models else Model(3, name="mapped")

    def checked(rec, options):
        out.events.append(("checked", (rec, options), {}))
        return rec, *out.lens

    def set_cameras(db, change):
        out.events.append(("set_cameras", (db, change), {}))

    def match_pairs(db, path, pairs, **kwargs):
        out.events.append(("match_pairs", (db, path, pairs), kwargs))

    monkeypatch.setattr(pycolmap, "set_random_seed", record("seed"))
    monkeypatch.setattr(pycolmap, "extract_features", extract)
    monkeypatch.setattr(pycolmap, "match_exhaustive", record("exhaustive"))
    monkeypatch.setattr(pycolmap, "match_sequential", record("sequential"))
    monkeypatch.setattr(sfm, "_map", map_)
    monkeypatch.setattr(sfm, "_checked_lens", checked)
    monkeypatch.setattr(sfm, "_set_cameras", set_cameras)
    monkeypatch.setattr(sfm, "_match_pairs", match_pairs)
    monkeypatch.setattr(sfm, "held_focal_note", lambda rec, why: f"held {rec.name}: {why}")
    return out


def one_pass(tmp_path, options, n: int = 3, video: bool = False, more_pairs=None, cancel=None):
    names = [f"{i:06d}.png" for i in range(n)]
    stages: list[str] = []
    got = sfm._run_sfm(tmp_path, names, options=options, video=video, cancel=cancel, on_stage=stages.append,
                       more_pairs=more_pairs)
    return got, names, stages


def events(colmap, name: str) -> list[tuple[tuple, dict]]:
    return [(args, kwargs) for n, args, kwargs in colmap.events if n == name]


def params(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def test_a_pass_extracts_seeded_features_at_its_octave_on_one_thread_from_a_new_database(tmp_path, colmap):
    (tmp_path / "database.db").write_text("an earlier pass's")
    cancel = object()
    got, names, stages = one_pass(tmp_path, sfm.SfmOptions(first_octave=-1, seed=6), cancel=cancel)
    assert colmap.events[0] == ("seed", (6,), {})
    assert colmap.stale == [False]  # the earlier database was removed first
    (args, kwargs), = events(colmap, "extract")
    assert args == (tmp_path / "database.db", tmp_path)
    assert kwargs["image_names"] == names and kwargs["cancellation_token"] is cancel
    assert kwargs["device"] == pycolmap.Device.cpu
    assert kwargs["camera_mode"] == pycolmap.CameraMode.SINGLE  # one camera, its focal length fitted
    reader, extraction = kwargs["reader_options"], kwargs["extraction_options"]
    assert reader.camera_model == pycolmap.ImageReaderOptions().camera_model and reader.camera_params == ""
    assert extraction.num_threads == 1 and extraction.sift.first_octave == -1
    assert stages[0] == "SIFT features of 3 frames"
    (map_args, map_kwargs), = events(colmap, "map")
    assert map_kwargs["sparse"] == tmp_path / "sparse-1" and map_kwargs["cancel"] is cancel
    assert map_kwargs["names"] == names and map_args == (tmp_path / "database.db", tmp_path)


def test_a_pass_runs_on_the_gpu_where_pycolmap_has_cuda(tmp_path, colmap, monkeypatch):
    monkeypatch.setattr(pycolmap, "has_cuda", True)
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0))
    assert events(colmap, "extract")[0][1]["device"] == pycolmap.Device.auto
    assert events(colmap, "exhaustive")[0][1]["device"] == pycolmap.Device.auto


def test_one_known_K_for_every_frame_is_one_pinhole_camera_with_its_parameters(tmp_path, colmap):
    """COLMAP's pixels have their centres at +0.5."""
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, known_K=[K.copy() for _ in range(3)]))
    (_, kwargs), = events(colmap, "extract")
    reader = kwargs["reader_options"]
    assert reader.camera_model == "PINHOLE" and kwargs["camera_mode"] == pycolmap.CameraMode.SINGLE
    assert params(reader.camera_params) == [530.0, 530.0, 320.0, 240.0], reader.camera_params
    assert not events(colmap, "set_cameras")  # nothing to change, nothing held: the camera is fixed as given
    assert events(colmap, "map")[0][1]["hold"] is False


def test_the_known_K_of_a_single_frame_is_its_camera(tmp_path, colmap):
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, known_K=[K]), n=1)
    reader = events(colmap, "extract")[0][1]["reader_options"]
    assert reader.camera_model == "PINHOLE" and params(reader.camera_params) == [530.0, 530.0, 320.0, 240.0]


def test_known_Ks_equal_to_rounding_are_one_camera_with_the_first_frames_K(tmp_path, colmap):
    """Ks that differ by 1e-7 (written and read back): one camera, the first frame's exactly."""
    Ks = [K, K * [[1 + 1e-7], [1 + 1e-7], [1]], K * [[1 - 1e-7], [1 - 1e-7], [1]]]
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, known_K=Ks))
    (_, kwargs), = events(colmap, "extract")
    assert kwargs["camera_mode"] == pycolmap.CameraMode.SINGLE and not events(colmap, "set_cameras")
    assert params(kwargs["reader_options"].camera_params) == [530.0, 530.0, 320.0, 240.0]


def test_known_Ks_of_a_camera_each_are_set_in_the_database_per_frame(tmp_path, colmap):
    """A K per frame (a zoom): a PINHOLE camera per image, each set to its frame's K (by the image's name)."""
    Ks = [K * [[1 + 0.1 * i], [1 + 0.1 * i], [1]] for i in range(3)]
    _, names, _ = one_pass(tmp_path, sfm.SfmOptions(first_octave=0, known_K=Ks))
    (_, kwargs), = events(colmap, "extract")
    assert kwargs["reader_options"].camera_model == "PINHOLE" and kwargs["reader_options"].camera_params == ""
    assert kwargs["camera_mode"] == pycolmap.CameraMode.PER_IMAGE
    ((db, change), _), = events(colmap, "set_cameras")
    assert db == tmp_path / "database.db"
    for i in (2, 0, 1):
        camera = SimpleNamespace(params=None)
        change(camera, SimpleNamespace(name=names[i]))
        f = 530.0 * (1 + 0.1 * i)
        assert np.allclose(camera.params, [f, f, 319.5 * (1 + 0.1 * i) + 0.5, 239.5 * (1 + 0.1 * i) + 0.5]), \
            (i, camera.params)


def test_frames_of_a_camera_each_are_a_camera_each(tmp_path, colmap):
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, one_camera=False))
    assert events(colmap, "extract")[0][1]["camera_mode"] == pycolmap.CameraMode.PER_IMAGE
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, one_camera=False, known_K=[K] * 3))
    assert events(colmap, "extract")[1][1]["camera_mode"] == pycolmap.CameraMode.PER_IMAGE


def test_a_prior_K_is_the_first_guess_of_a_fitted_camera(tmp_path, colmap):
    """A K from a file beside the frames: SIMPLE_RADIAL from its fx and centre (no distortion), held as the
    prior that mapping starts from."""
    prior = np.array([[585.0, 0.0, 320.0], [0.0, 590.0, 241.0], [0.0, 0.0, 1.0]])
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, prior_K=prior))
    reader = events(colmap, "extract")[0][1]["reader_options"]
    assert reader.camera_model == "SIMPLE_RADIAL" and params(reader.camera_params) == [585.0, 320.5, 241.5, 0.0]
    ((db, change), _), = events(colmap, "set_cameras")
    assert change is sfm._held and db == tmp_path / "database.db"
    assert events(colmap, "map")[0][1]["hold"] is False  # a guess: fitted


def test_a_known_K_wins_over_a_prior(tmp_path, colmap):
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, known_K=[K] * 3, prior_K=K * [[1.2], [1.2], [1]]))
    reader = events(colmap, "extract")[0][1]["reader_options"]
    assert reader.camera_model == "PINHOLE" and params(reader.camera_params)[0] == 530.0
    assert not events(colmap, "set_cameras")


def test_two_frames_hold_the_focal_length_at_the_cameras_prior(tmp_path, colmap):
    got, _, stages = one_pass(tmp_path, sfm.SfmOptions(first_octave=0), n=2)
    ((db, change), _), = events(colmap, "set_cameras")
    assert change is sfm._held and db == tmp_path / "database.db" and events(colmap, "map")[0][1]["hold"] is True
    assert got[0].name == "mapped" and got[1:] == ("held mapped: 2 frames cannot fix a focal length", False), got
    assert not events(colmap, "checked"), "a held focal length is not checked"


@pytest.mark.parametrize("n,video,matching", [(40, False, "exhaustive"), (41, False, "sequential"),
                                              (3, True, "sequential")])
def test_matching_is_exhaustive_for_up_to_40_photos_else_sequential(tmp_path, colmap, n, video, matching):
    cancel = object()
    _, _, stages = one_pass(tmp_path, sfm.SfmOptions(first_octave=0, seed=2, overlap=3), n=n, video=video,
                            cancel=cancel)
    assert f"{matching} matching" in stages, stages
    other = {"exhaustive": "sequential", "sequential": "exhaustive"}[matching]
    (args, kwargs), = events(colmap, matching)
    assert not events(colmap, other)
    assert args == (tmp_path / "database.db",)
    assert kwargs["matching_options"].num_threads == 1
    assert kwargs["verification_options"].ransac.random_seed == 2
    assert kwargs["device"] == pycolmap.Device.cpu and kwargs["cancellation_token"] is cancel
    if matching == "sequential":
        assert kwargs["pairing_options"].overlap == 3 and kwargs["pairing_options"].quadratic_overlap is True
    else:
        assert "pairing_options" not in kwargs


@pytest.mark.parametrize("matching", ["exhaustive", "sequential"])
def test_the_matching_asked_for_is_the_matching_run(tmp_path, colmap, matching):
    one_pass(tmp_path, sfm.SfmOptions(first_octave=0, matching=matching), n=41 if matching == "exhaustive" else 3)
    assert len(events(colmap, matching)) == 1


def test_loop_pairs_are_matched_after_the_sequential_ones(tmp_path, colmap):
    cancel = object()

    def more(frames):
        return [(frames[0], frames[-1])]

    _, names, stages = one_pass(tmp_path, sfm.SfmOptions(first_octave=0, seed=8), n=3, video=True,
                                more_pairs=more, cancel=cancel)
    order = [e[0] for e in colmap.events]
    assert order.index("sequential") < order.index("match_pairs") < order.index("map"), order
    (seq_args, seq_kwargs), = events(colmap, "sequential")
    (args, kwargs), = events(colmap, "match_pairs")
    assert args == (tmp_path / "database.db", tmp_path / "loop-pairs.txt", [(names[0], names[-1])])
    assert kwargs["matcher"] is seq_kwargs["matching_options"]
    assert kwargs["verification"] is seq_kwargs["verification_options"]
    assert kwargs["device"] == pycolmap.Device.cpu and kwargs["cancel"] is cancel
    kwargs["on_stage"]("loop")
    assert stages[-1] == "loop"


def test_no_mapper_is_matching_alone(tmp_path, colmap):
    assert one_pass(tmp_path, sfm.SfmOptions(first_octave=0, mapper="none"))[0] == (None, None, False)
    assert not events(colmap, "map") and events(colmap, "exhaustive")


@pytest.mark.parametrize("n,mapper,stage", [
    (3, "incremental", "incremental mapping and bundle adjustment"),
    (250, "incremental", "incremental mapping and bundle adjustment"),
    (251, "keyframes", "incremental mapping of 126 keyframes, the other frames registered to them"),
])
def test_the_incremental_mapper_maps_up_to_250_frames_and_keyframes_more(tmp_path, colmap, n, mapper, stage):
    options = sfm.SfmOptions(first_octave=0, seed=1)
    _, _, stages = one_pass(tmp_path, options, n=n, video=True)
    assert stages[-1] == stage, stages
    assert events(colmap, "map")[0][1]["options"] == replace(options, mapper=mapper)
    assert events(colmap, "checked")[0][0][1] == replace(options, mapper=mapper)


def test_the_mapper_asked_for_is_the_mapper_run(tmp_path, colmap):
    options = sfm.SfmOptions(first_octave=0, mapper="global")
    _, _, stages = one_pass(tmp_path, options, n=300)
    assert stages[-1] == "global mapping and bundle adjustment"
    assert events(colmap, "map")[0][1]["options"] == options


def test_no_model_is_no_cameras(tmp_path, colmap):
    colmap.models = [None]
    assert one_pass(tmp_path, sfm.SfmOptions(first_octave=0))[0] == (None, None, False)
    assert not events(colmap, "checked")


def test_a_loosely_fixed_focal_length_is_kept_and_said(tmp_path, colmap):
    colmap.lens = (None, "the frames fix the focal length only loosely")
    got, _, _ = one_pass(tmp_path, sfm.SfmOptions(first_octave=0))
    assert got == (colmap.events[-1][1][0], "the frames fix the focal length only loosely: it is kept; give "
                   "--intrinsics if you know it", True), got
    assert len(events(colmap, "map")) == 1


def test_a_well_fixed_focal_length_says_nothing(tmp_path, colmap):
    got, _, _ = one_pass(tmp_path, sfm.SfmOptions(first_octave=0))
    assert got[1:] == (None, False) and got[0].name == "mapped"


@pytest.mark.parametrize("again", ["held again", None])
def test_a_focal_length_no_lens_has_is_mapped_again_held(tmp_path, colmap, again):
    colmap.lens = ("no lens has it", "loose too")
    colmap.models = [Model(3, name="mapped"), None if again is None else Model(3, name=again)]
    cancel = object()
    got, names, stages = one_pass(tmp_path, sfm.SfmOptions(first_octave=0, seed=4), cancel=cancel)
    assert stages[-1] == "mapping again, the focal length held"
    ((db, change), _), = events(colmap, "set_cameras")
    assert change is sfm._held and db == tmp_path / "database.db"
    order = [e[0] for e in colmap.events]
    assert order[-2:] == ["set_cameras", "map"], order
    first, second = events(colmap, "map")
    assert second[1] == dict(first[1], hold=True) and second[0] == first[0], (first, second)
    if again is None:
        assert got == (None, None, False)
    else:
        assert got[0].name == again and got[1:] == (f"held {again}: no lens has it", False), got

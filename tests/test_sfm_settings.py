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
    cancel = object()
    options = sfm.SfmOptions(seed=9)
    got, stages = run(tmp_path, options, video=False, cancel=cancel)
    want = {"fast": fast, "fine": fine, None: fine}[kept]
    assert got == want[:2], (got, want)
    assert stages == ["matching", "matching, again on doubled images"], stages
    assert [c["options"] for c in passes.calls] == [replace(options, first_octave=0),
                                                     replace(options, first_octave=-1)]
    assert all(c["video"] is False and c["cancel"] is cancel and c["more_pairs"] is None for c in passes.calls)

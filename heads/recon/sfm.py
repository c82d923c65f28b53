"""Cameras from the images themselves: COLMAP's features, matching and mapping (pycolmap), with pixio's
settings: which pairs are matched, which mapper runs, and whether the frames fix the focal length.

The network gives dense metric depth for every pixel but, on frames unlike its
training data, poor cameras; matching and bundle adjustment give good cameras
and a sparse set of triangulated points, up to scale. :func:`run_sfm` makes the
reconstruction; :class:`heads.recon.camera_files.SfmCameras` reads it as arrays;
:class:`heads.recon.sfm_job.SfmJob` runs it beside the network.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from heads.geometry import invert_pose, ransac_umeyama, scale_intrinsics, umeyama
from heads.recon.camera_files import SfmCameras, _colmap_params, _pycolmap
from heads.recon.focal import (_unfixed_focal, _without_needless_distortion, held_focal_note,
                               holds_focal)


MAX_SIDE = 1600  # SIFT sees images at most this large (COLMAP's own default for matching is 1600-3200)


EXHAUSTIVE_UP_TO = 40  # more frames than this are matched sequentially (780 pairs at 40)


INCREMENTAL_UP_TO = 250  # more frames than this: keyframes mapped incrementally, the rest registered to them








MAX_TRACK_VIEWS = 30  # global mapping: longer tracks are left to retriangulation (docs/recon3d.md)


GLOBAL_BA_TOLERANCE = 1e-4  # global mapping: bundle adjustment's relative cost change to stop at


MorePairs = Callable[[list[str]], list[tuple[str, str]]]  # frames' names -> more pairs of them to match

LOOP_PAIRS = 3  # with loop closure, each frame is also matched with the frames whose descriptors are nearest


@dataclass
class SfmOptions:
    """How the frames are matched and mapped."""

    matching: str = "auto"  # auto: exhaustive up to EXHAUSTIVE_UP_TO frames (and never for video), else sequential
    overlap: int = 10  # sequential matching: each frame is matched with this many after it (and at 2^k)
    # auto: incremental up to INCREMENTAL_UP_TO frames, else keyframes (incremental mapping of every s-th frame,
    # the rest registered to their points: :func:`_register_rest`); global: GLOMAP's rotation averaging and global
    # positioning, then bundle adjustment; none: matching only (the cameras are known: :meth:`SfmJob.triangulate`)
    mapper: str = "auto"
    one_camera: bool = True  # one set of intrinsics shared by every frame (frames of one camera)
    known_K: list[np.ndarray] | None = None  # per frame, in the written images' pixels: held fixed
    prior_K: np.ndarray | None = None  # every frame's first guess, in the written images' pixels: then fitted
    seed: int = 0
    # SIFT's first octave: 0 (the image as it is), -1 (doubled first, COLMAP's default: finer detail, 3x the
    # time), or None: 0, then -1 again if the first pass leaves frames out
    first_octave: int | None = None
    loop_closure: bool = False  # SfmJob: frames alike far apart in the video matched too (loop_pairs)


def run_sfm(folder: Path, names: list[str], options: SfmOptions, video: bool = False, cancel=None,
            on_stage=lambda stage: None, more_pairs: MorePairs | None = None):
    """COLMAP on the images ``names`` in ``folder``: SIFT features, matching (see :class:`SfmOptions`),
    geometric verification and mapping. Returns the reconstruction that registers the most frames, or None
    when none could be started (too few matches), and a line for the user on its focal length, or None
    (:func:`_unfixed_focal`: held at the camera's prior for fewer than ``HOLD_FOCAL_BELOW`` frames or a fit no
    lens has; kept, and said, when the frames fix it only loosely).

    With ``first_octave`` None, a fast pass on the images as they are comes first and COLMAP's
    default (each image doubled) runs only when that pass leaves a frame out or fixes the focal length
    only loosely: on room-sized scenes both give the same cameras in less time, while small objects in
    small photos need the doubled images, and a focal length a few per cent off bends the whole scene
    (docs/recon3d.md has the measurements).

    ``more_pairs`` (sequential matching only) gives, for the frames' names, more pairs of them to match: where
    the video returns (:class:`heads.recon.sfm_job.SfmJob`'s, from the network's descriptors).
    """
    if options.first_octave is not None:
        return _run_sfm(folder, names, options=options, video=video, cancel=cancel, on_stage=on_stage,
                        more_pairs=more_pairs)[:2]
    fast = _run_sfm(folder, names, options=replace(options, first_octave=0), video=video, cancel=cancel,
                    on_stage=on_stage, more_pairs=more_pairs)
    if fast[0] is not None and fast[0].num_reg_images() == len(names) and not fast[2]:
        return fast[:2]
    fine = _run_sfm(folder, names, options=replace(options, first_octave=-1), video=video, cancel=cancel,
                    on_stage=lambda stage: on_stage(f"{stage}, again on doubled images"), more_pairs=more_pairs)
    if fast[0] is None or (fine[0] is not None and fine[0].num_reg_images() >= fast[0].num_reg_images()):
        return fine[:2]
    return fast[:2]


def _run_sfm(folder: Path, names: list[str], options: SfmOptions, video: bool, cancel, on_stage,
             more_pairs: MorePairs | None):
    pycolmap = _pycolmap()

    pycolmap.set_random_seed(options.seed)
    db = folder / "database.db"
    sparse = folder / f"sparse{options.first_octave}"
    if db.exists():
        db.unlink()
    cpu = pycolmap.Device.cpu if not pycolmap.has_cuda else pycolmap.Device.auto

    reader = pycolmap.ImageReaderOptions()
    same_K = options.known_K is not None and all(np.allclose(k, options.known_K[0]) for k in options.known_K)
    if options.known_K is not None:
        reader.camera_model = "PINHOLE"
        if same_K:
            reader.camera_params = ",".join(repr(v) for v in _colmap_params(options.known_K[0]))
    elif options.prior_K is not None:  # a guess to start from (a file beside the frames): fitted like any prior
        reader.camera_model = "SIMPLE_RADIAL"
        f, cx, cy = options.prior_K[0, 0], options.prior_K[0, 2] + 0.5, options.prior_K[1, 2] + 0.5
        reader.camera_params = ",".join(repr(float(v)) for v in (f, cx, cy, 0.0))
    mode = pycolmap.CameraMode.SINGLE if (options.one_camera and (options.known_K is None or same_K)) \
        else pycolmap.CameraMode.PER_IMAGE
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1  # with more, images reach the database in another order each run: other cameras
    extraction.sift.first_octave = options.first_octave
    on_stage(f"SIFT features of {len(names)} frames")
    pycolmap.extract_features(db, folder, image_names=names, camera_mode=mode, reader_options=reader,
                              extraction_options=extraction, device=cpu, cancellation_token=cancel)
    hold = holds_focal(len(names), options)
    if options.known_K is not None and not same_K:  # one fixed camera per frame, in the database before mapping
        _set_cameras(db, lambda camera, image: setattr(
            camera, "params", _colmap_params(options.known_K[names.index(image.name)])))
    if hold or (options.prior_K is not None and options.known_K is None):  # a focal length to start from
        _set_cameras(db, _held)

    matching = options.matching
    if matching == "auto":
        matching = "sequential" if video or len(names) > EXHAUSTIVE_UP_TO else "exhaustive"
    on_stage(f"{matching} matching")
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = options.seed  # COLMAP's default (-1) draws a seed: other cameras each run
    # one thread: each verifying thread seeds its own random numbers once and takes the next pair as it comes
    # free, so on more threads a pair's RANSAC draws depend on timing (a busy machine gave other inliers)
    matcher = pycolmap.FeatureMatchingOptions()
    matcher.num_threads = 1
    if matching == "exhaustive":
        pycolmap.match_exhaustive(db, matching_options=matcher, verification_options=verification, device=cpu,
                                  cancellation_token=cancel)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = options.overlap
        pairing.quadratic_overlap = True
        pycolmap.match_sequential(db, matching_options=matcher, pairing_options=pairing,
                                  verification_options=verification, device=cpu,
                                  cancellation_token=cancel)
        if more_pairs is not None:
            _match_pairs(db, folder / "loop-pairs.txt", more_pairs(names), matcher=matcher,
                         verification=verification, device=cpu, cancel=cancel, on_stage=on_stage)

    mapper = options.mapper
    if mapper == "none":
        return None, None, False
    if mapper == "auto":
        mapper = "incremental" if len(names) <= INCREMENTAL_UP_TO else "keyframes"
    options = replace(options, mapper=mapper)
    on_stage(f"{mapper} mapping and bundle adjustment" if mapper != "keyframes" else
             f"incremental mapping of {len(keyframe_names(names))} keyframes, the other frames registered to them")
    rec = _map(db, folder, sparse=sparse, options=options, hold=hold, cancel=cancel, names=names)
    if rec is None:
        return rec, None, False
    if hold:
        return rec, held_focal_note(rec, f"{len(names)} frames cannot fix a focal length"), False
    rec, wrong, loose = _checked_lens(rec, options)
    if wrong:  # the prior is the last resort: only a fit the evidence says is wrong is given up
        on_stage("mapping again, the focal length held")
        _set_cameras(db, _held)
        rec = _map(db, folder, sparse=sparse, options=options, hold=True, cancel=cancel, names=names)
        return rec, held_focal_note(rec, wrong) if rec is not None else None, False
    return rec, f"{loose}: it is kept; give --intrinsics if you know it" if loose else None, bool(loose)


def _checked_lens(rec, options: SfmOptions) -> tuple[object, str | None, str | None]:
    """The model to keep and what its fitted camera is: (the model, why its camera is one no lens has or None,
    why its focal length is only loosely fixed or None; see :func:`_unfixed_focal`). A distortion the frames do
    not need is dropped first (:func:`_without_needless_distortion`). Known intrinsics are not checked."""
    if options.known_K is not None:
        return rec, None, None
    wrong, loose = _unfixed_focal(rec)
    if not wrong and options.mapper != "keyframes" and rec.num_reg_images() <= INCREMENTAL_UP_TO:
        plain = _without_needless_distortion(rec)
        if plain is not rec:
            return (plain, *_unfixed_focal(plain))
    return rec, wrong, loose


def triangulate_known(folder: Path, given: SfmCameras, names: list[str], written_hw: np.ndarray, cancel=None):
    """COLMAP's point triangulator on ``folder``'s matched database with the cameras ``given`` held fixed (their
    poses and pinhole K; ``names[v]``: the database's image of given's view v, at size ``written_hw[v]``):
    a reconstruction of those cameras and the points their matches make."""
    pycolmap = _pycolmap()

    db = folder / "database.db"
    rec = pycolmap.Reconstruction()
    base = pycolmap.Database.open(db)
    try:
        images = {im.name: im for im in base.read_all_images()}
        for v, name in enumerate(names):
            if name not in images:
                continue  # a frame COLMAP could not read: it keeps no points
            image, (h, w) = images[name], (int(written_hw[v][0]), int(written_hw[v][1]))
            K = scale_intrinsics(given.K[v], tuple(given.original_hw[v]), (h, w))
            camera = pycolmap.Camera.create_from_model_name(image.camera_id, "PINHOLE", float(K[0, 0]), w, h)
            camera.params = _colmap_params(K)
            base.update_camera(camera)  # the triangulator takes the database's camera models as the model's
            rec.add_camera_with_trivial_rig(camera)
            rec.add_image_with_trivial_frame(
                pycolmap.Image(name=name, camera_id=image.camera_id, image_id=image.image_id),
                pycolmap.Rigid3d(invert_pose(np.asarray(given.cam2world[v], np.float64))[:3]))
    finally:
        base.close()
    out = folder / "triangulated"
    out.mkdir(exist_ok=True)
    return pycolmap.triangulate_points(rec, db, folder, out, cancellation_token=cancel)


def _match_pairs(db: Path, path: Path, pairs: list[tuple[str, str]], *, matcher, verification, device, cancel,
                 on_stage) -> None:
    """The image pairs ``pairs`` (names) matched and verified (through a pairs file at ``path``, as COLMAP
    imports them; pairs matched already are not matched again)."""
    if not pairs:
        return
    pycolmap = _pycolmap()
    on_stage(f"matching {len(pairs)} loop pairs")
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    imported = pycolmap.ImportedPairingOptions()
    imported.match_list_path = str(path)
    pycolmap.match_image_pairs(db, matching_options=matcher, pairing_options=imported,
                               verification_options=verification, device=device,
                               cancellation_token=cancel)


def loop_pairs(descriptors: np.ndarray, apart: int, per_frame: int = LOOP_PAIRS) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of frames more than ``apart`` frames apart whose descriptors (V, D), unit length,
    are most alike: each frame with its ``per_frame`` nearest by cosine similarity. Where a video returns,
    these are the frames to match (what a vocabulary tree finds for COLMAP, here from the network's own
    features, so nothing is downloaded); matching's geometric check drops the pairs that are not."""
    V = len(descriptors)
    out: set[tuple[int, int]] = set()
    for start in range(0, V, 256):  # (256, V) similarities at a time
        sim = descriptors[start:start + 256].astype(np.float32) @ descriptors.astype(np.float32).T
        for row, i in zip(sim, range(start, min(V, start + 256))):
            row[max(0, i - apart):i + apart + 1] = -np.inf
            k = min(per_frame, int(np.isfinite(row).sum()))
            if k:
                best = np.argpartition(-row, k - 1)[:k]
                out.update((min(i, int(j)), max(i, int(j))) for j in best)
    return sorted(out)


def _set_cameras(db: Path, change) -> None:
    """``change(camera, image)`` for every image's camera in the database, before mapping."""
    base = _pycolmap().Database.open(db)
    try:
        for image in base.read_all_images():
            camera = base.read_camera(image.camera_id)
            change(camera, image)
            base.update_camera(camera)
    finally:
        base.close()


def _held(camera, image) -> None:
    camera.has_prior_focal_length = True  # else COLMAP estimates the focal length as it registers each frame


def _map(db: Path, folder: Path, sparse: Path, options: SfmOptions, hold: bool, cancel, names: list[str]):
    """COLMAP's incremental or global mapping, or keyframes (``options.mapper``) on the matched database of the
    frames ``names`` (in video order): the model that registers the most frames; the focal length held at the
    camera's prior when ``hold``."""
    shutil.rmtree(sparse, ignore_errors=True)
    sparse.mkdir()
    if options.mapper == "global":
        models = _map_global(db, folder, sparse, options, fixed=options.known_K is not None or hold)
    else:
        keys = keyframe_names(names) if options.mapper == "keyframes" else None
        models = _map_incremental(db, folder, sparse, options, hold=hold, cancel=cancel, image_names=keys)
    if cancel is not None and cancel.is_cancelled:
        raise KeyboardInterrupt
    if not models:
        return None
    rec = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))
    return _register_rest(db, rec, options, cancel) if options.mapper == "keyframes" else rec


def keyframe_names(names: list[str], most: int | None = None) -> list[str]:
    """The frames a long video is mapped on: every s-th of ``names`` (the smallest stride that keeps at most
    ``most``, INCREMENTAL_UP_TO by default) and the last."""
    stride = -(-len(names) // (most or INCREMENTAL_UP_TO))
    return names[::stride] + ([names[-1]] if (len(names) - 1) % stride else [])


def _register_rest(db: Path, rec, options: SfmOptions, cancel):
    """The frames of ``db`` that ``rec`` (the keyframes' model) lacks, registered to its points one at a time
    in video order, as COLMAP registers the next image (2D-3D RANSAC, then the pose refined; the camera and
    the registered frames held), their new points triangulated. A frame that fails is tried again once the
    frames after it are in. Returns ``rec`` with them."""
    pycolmap = _pycolmap()
    base = pycolmap.Database.open(db)
    try:
        cache = pycolmap.DatabaseCache.create(base, pycolmap.DatabaseCacheOptions())
    finally:
        base.close()
    mapper = pycolmap.IncrementalMapper(cache)
    mapper.begin_reconstruction(rec)
    registering = pycolmap.IncrementalMapperOptions()
    registering.num_threads, registering.random_seed = 1, options.seed
    # the keyframes fixed the camera: a frame's own pose is all that is fitted to it
    registering.abs_pose_refine_focal_length = registering.abs_pose_refine_extra_params = False
    triangulation = pycolmap.IncrementalTriangulatorOptions()
    left = sorted((i for i in cache.images if not rec.exists_image(i) or not rec.image(i).has_pose),
                  key=lambda i: cache.image(i).name)
    while left:
        failed = []
        for image_id in left:
            if cancel is not None and cancel.is_cancelled:
                raise KeyboardInterrupt
            if mapper.register_next_image(registering, image_id):
                mapper.triangulate_image(triangulation, image_id)
            else:
                failed.append(image_id)
        if len(failed) == len(left):
            break
        left = failed
    rec = mapper.reconstruction
    mapper.end_reconstruction(False)
    return rec


def _map_global(db: Path, folder: Path, sparse: Path, options: SfmOptions, *, fixed: bool) -> dict:
    """pycolmap's global mapping (GLOMAP), seeded like the incremental one and on one thread, so that a rerun
    gives the same cameras in the same time; ``fixed``: the cameras' intrinsics are not refined."""
    pycolmap = _pycolmap()
    from pycolmap import pyceres

    mapping = pycolmap.GlobalPipelineOptions()
    mapping.random_seed = mapping.mapper.random_seed = options.seed
    # on more threads bundle adjustment sums in another order each run, and the solver then takes another
    # path: mapping the 1000-frame walk took 154 to 318 s on 2 cores (same database, ATE 4.1 cm every time)
    mapping.num_threads = mapping.mapper.num_threads = 1
    # each bundle adjustment stops once an iteration gains under 0.01 % (COLMAP's 0.001 % spent most of the
    # retriangulation's time on the last 0.5 % of the cost: 138 s instead of 170 s on one thread, same ATE)
    solver = mapping.mapper.bundle_adjustment.ceres.solver_options
    solver.function_tolerance = GLOBAL_BA_TOLERANCE
    # conjugate gradients on the cameras (Ceres's iterative Schur, preconditioned per camera block), as COLMAP
    # chooses above 1000 frames, instead of factorising them: 108 s against 138 s on the 1000-frame walk's
    # database, ATE 4.1 cm both (the video's cameras see each other's points on every pass)
    solver.linear_solver_type = pyceres.LinearSolverType.ITERATIVE_SCHUR
    solver.preconditioner_type = pyceres.PreconditionerType.SCHUR_JACOBI
    mapping.min_model_size = 2
    # tracks seen in more frames are left out of positioning and bundle adjustment, where long videos spend
    # their time; retriangulation brings their matches back (1000 frames of 7-Scenes: half the time, same ATE)
    mapping.mapper.track_max_num_views_per_track = MAX_TRACK_VIEWS
    if fixed:
        ba = mapping.mapper.bundle_adjustment
        ba.refine_focal_length = ba.refine_principal_point = ba.refine_extra_params = False
    return pycolmap.global_mapping(db, folder, sparse, mapping)


def _map_incremental(db: Path, folder: Path, sparse: Path, options: SfmOptions, *, hold: bool, cancel,
                     image_names: list[str] | None = None) -> dict:
    """pycolmap's incremental mapping with the settings below (of the frames ``image_names``; None: all)."""
    pycolmap = _pycolmap()
    mapping = pycolmap.IncrementalPipelineOptions()
    if image_names is not None:
        mapping.image_names = image_names
    mapping.random_seed = options.seed
    mapping.num_threads = 1  # bundle adjustment over threads sums in another order each run: other cameras
    mapping.min_model_size = 2  # a model of any size: frames it leaves out keep the network's cameras
    mapping.init_num_trials = 20  # COLMAP's 200 tries at the first pair took half the mapping time here, for
    mapping.mapper.init_min_tri_angle = 8.0  # the same cameras (7-Scenes, Middlebury rings); 16 deg rejects most pairs
    if options.known_K is not None or hold:  # held: at the camera's prior, EXIF or COLMAP's
        mapping.ba_refine_focal_length = False
        mapping.ba_refine_principal_point = False
        mapping.ba_refine_extra_params = False
        mapping.mapper.abs_pose_refine_focal_length = False
        mapping.mapper.abs_pose_refine_extra_params = False
    return pycolmap.incremental_mapping(db, folder, sparse, mapping, cancellation_token=cancel)




def placed_on_given(rec, given: SfmCameras) -> SfmCameras:
    """The frames' own model ``rec`` (None: mapping found none) put in the frame of the known cameras ``given``
    (their matches triangulated, fitting loosely): the similarity that takes its camera centres onto the given
    ones (:func:`given_frame`), so the scene keeps the given frame and scale while its cameras are those the
    images fit. ``given`` stays, with a note why, where ``rec`` leaves a frame out or fits no better."""
    pycolmap = _pycolmap()

    loose = given.reprojection_error
    if rec is None:
        return replace(given, note="mapping the frames found no model")
    found = SfmCameras(rec, given.names, given.written_hw, given.original_hw)
    if not found.registered.all():
        return replace(given, note=f"mapping the frames registered {int(found.registered.sum())} of "
                                   f"{len(found.registered)}")
    if not found.reprojection_error < loose:
        return replace(given, note=f"mapping the frames fitted them no better ({found.reprojection_error:.2f} px)")
    frame = given_frame(found.cam2world, given.cam2world)
    if frame is None:
        return replace(given, note="the cameras matching finds turn against the given ones so that their path runs "
                                   "backwards: only a mirror image would put one set on the other")
    s, R, t = frame
    rec.transform(pycolmap.Sim3d(s, pycolmap.Rotation3d(R), t))
    placed = replace(given, reconstruction=rec)
    apart = np.linalg.norm(placed.cam2world[:, :3, 3] - given.cam2world[:, :3, 3], axis=1)
    return replace(placed, note=(
        f"the given cameras fit the images loosely (their matched points land {loose:.2f} px from where they were "
        f"seen): the cameras matching finds ({found.reprojection_error:.2f} px) are used, placed on the given ones "
        f"by a similarity ({np.median(apart) * 100:.1f} cm apart after it, median), so the scene keeps their frame "
        "and scale; --hold-cameras uses the given cameras as they are"))


def given_frame(found: np.ndarray, given: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(s, R, t) taking the cameras ``found`` (V, 4, 4 camera-to-world, any frame) onto ``given`` (V, 4, 4):
    the Umeyama fit of their centres where those span a plane (robust: without the cameras three times farther
    off than the median); where they lie near one line (or point), which leaves a turn about it free, R is the
    mean of the rotations that turn each found camera into its given one, and s, t the least-squares fit of the
    centres under it. None where that fit needs a scale of 0 or less (the rotations turn the path to run
    against the given one): a negative scale would mirror the scene."""
    src, dst = found[:, :3, 3], given[:, :3, 3]
    spread = np.linalg.svd(dst - dst.mean(0), compute_uv=False)
    if len(dst) >= 3 and spread[1] > 0.1 * spread[0]:
        s, R, t = umeyama(src, dst)
        # a camera the sensor got wrong is left out; the rest differ by their noise (a colour camera beside the
        # depth sensor whose poses were recorded: centres a few cm apart as the rig turns), all of them kept
        off = np.linalg.norm(s * src @ R.T + t - dst, axis=1)
        s, R, t, _ = ransac_umeyama(src, dst, threshold=3 * float(np.median(off)) + 1e-9 * spread[0])
        return s, R, t
    U, _, Vt = np.linalg.svd(np.einsum("vij,vkj->ik", given[:, :3, :3], found[:, :3, :3]))
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    turned = src @ R.T
    a, b = turned - turned.mean(0), dst - dst.mean(0)
    s = float((a * b).sum() / (a * a).sum()) if (a * a).sum() > 0 else 1.0
    if not s > 0:
        return None
    return s, R, dst.mean(0) - s * turned.mean(0)

"""Cameras from the images themselves: COLMAP's features, matching and incremental mapping (pycolmap),
and what ``pixio recon3d`` needs of the result as arrays.

The network gives dense metric depth for every pixel but, on frames unlike its
training data, poor cameras; matching and bundle adjustment give good cameras
and a sparse set of triangulated points, up to scale. :func:`run_sfm` makes the
reconstruction; :class:`SfmCameras` reads it as arrays, in our
conventions (OpenCV axes, camera-to-world, pixel centres at integers, the
original images' pixels).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from pixio_cli.errors import PixioError, RunError, UsageError

MAX_SIDE = 1600  # SIFT sees images at most this large (COLMAP's own default for matching is 1600-3200)
EXHAUSTIVE_UP_TO = 40  # more frames than this are matched sequentially (780 pairs at 40)
INCREMENTAL_UP_TO = 250  # more frames than this: keyframes mapped incrementally, the rest registered to them
HOLD_FOCAL_BELOW = 3  # frames: two cannot fix a focal length; more may not either (see _unfixed_focal)
CHECK_FOCAL_UP_TO = 40  # frames: whether they fix the focal length is checked up to this many (three more BAs)
MAX_TRACK_VIEWS = 30  # global mapping: longer tracks are left to retriangulation (docs/recon3d.md)
GLOBAL_BA_TOLERANCE = 1e-4  # global mapping: bundle adjustment's relative cost change to stop at
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
    # sequential matching only: a callable giving, for the frames' names, more pairs of them to match (where the
    # video returns: SfmJob's, from the network's descriptors); None: none
    more_pairs: object = None
    loop_closure: bool = False  # SfmJob: frames alike far apart in the video matched too (loop_pairs)


@dataclass
class SfmCameras:
    """What one pycolmap ``Reconstruction`` says of each of V frames, as arrays in our conventions (OpenCV axes,
    camera-to-world, pixel centres at integers, the frames' own pixels).

    The reconstruction is the model and the arrays are read from it (once, on first use), so they cannot drift
    apart. A frame is unregistered when the reconstruction has no posed image of its name.

    Args:
        reconstruction: the ``pycolmap.Reconstruction``, or None when no frame has a camera.
        names: (V,) the reconstruction's image name of each frame, by position in the list given to run_sfm.
        written_hw: (V, 2) the size of the images its cameras are in (the size the frames were matched at).
        original_hw: (V, 2) the frames' own size.
        error: why there is no reconstruction, when COLMAP failed.
        scale: network units per reconstruction unit when known (cameras in metres: 1.0), else None (fitted).
        known: given by the user (``--known-cameras``), not found by matching.
        note: what the user should hear of these cameras, or None: a focal length held at the camera's prior,
            and why (the frames could not fix it, or fitted one no lens has), or kept though loosely fixed;
            given rotations made exactly orthonormal.
    """

    reconstruction: object
    names: list[str]
    written_hw: np.ndarray
    original_hw: np.ndarray
    error: str | None = None
    scale: float | None = None
    known: bool = False
    note: str | None = None

    @classmethod
    def empty(cls, hw: list[tuple[int, int]], **kwargs) -> "SfmCameras":
        """No camera for any of the frames of sizes ``hw`` (fields in ``kwargs`` set otherwise)."""
        hw = np.array(hw, np.int64).reshape(-1, 2)
        return cls(**{"reconstruction": None, "names": [""] * len(hw), "written_hw": hw, "original_hw": hw,
                      **kwargs})

    @cached_property
    def _frames(self) -> dict:
        return _read_frames(self.reconstruction, self.names, self.written_hw, self.original_hw)

    @property
    def registered(self) -> np.ndarray:
        """(V,) bool."""
        return self._frames["registered"]

    @property
    def cam2world(self) -> np.ndarray:
        """(V, 4, 4) float64 in the reconstruction's units; identity where unregistered."""
        return self._frames["cam2world"]

    @property
    def K(self) -> np.ndarray:
        """(V, 3, 3) float64, the pinhole part of each camera in original pixels; zeros where unregistered."""
        return self._frames["K"]

    @property
    def cameras(self) -> list:
        """(V,) ``pycolmap.Camera`` in the written images' pixels, or None where unregistered."""
        return self._frames["cameras"]

    @property
    def observations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(V,) per frame its triangulated keypoints: pixels (n, 2) in original pixels and their depth z (n,)."""
        return self._frames["observations"]

    @property
    def points(self) -> int:
        """Triangulated points."""
        return 0 if self.reconstruction is None else int(self.reconstruction.num_points3D())

    @property
    def reprojection_error(self) -> float:
        """Mean reprojection error in the written images' pixels (NaN without points)."""
        return float(self.reconstruction.compute_mean_reprojection_error()) if self.points else float("nan")


def _read_frames(rec, names: list[str], written_hw: np.ndarray, original_hw: np.ndarray) -> dict:
    """:class:`SfmCameras`' arrays, read from ``rec`` (or None) for the frames ``names``."""
    from heads.geometry import scale_intrinsics

    V = len(names)
    out = {"registered": np.zeros(V, bool), "cam2world": np.tile(np.eye(4), (V, 1, 1)), "K": np.zeros((V, 3, 3)),
           "cameras": [None] * V, "observations": [(np.zeros((0, 2)), np.zeros(0))] * V}
    if rec is None:
        return out
    position = {name: i for i, name in enumerate(names)}
    for image in rec.images.values():
        if not image.has_pose or image.name not in position:
            continue
        i = position[image.name]
        c2w = image_cam2world(image)
        w2c = np.linalg.inv(c2w)
        xy, z = [], []
        for p2d in image.points2D:
            if p2d.has_point3D():
                xy.append(p2d.xy)
                z.append((w2c[:3, :3] @ rec.points3D[p2d.point3D_id].xyz + w2c[:3, 3])[2])
        sy, sx = original_hw[i][0] / written_hw[i][0], original_hw[i][1] / written_hw[i][1]
        xy = np.array(xy, np.float64).reshape(-1, 2) * [sx, sy] - 0.5  # COLMAP's pixels, rescaled, to ours
        out["registered"][i] = True
        out["cam2world"][i] = c2w
        out["K"][i] = scale_intrinsics(camera_K(image.camera), tuple(written_hw[i]), tuple(original_hw[i]))
        out["cameras"][i] = image.camera
        out["observations"][i] = (xy, np.array(z, np.float64))
    return out


def pinhole_view(rec, *, name: str, K: np.ndarray, hw: tuple[int, int], cam2world: np.ndarray, image_id: int) -> None:
    """Adds to ``rec`` an image ``name`` with pose ``cam2world`` (4, 4) and its own PINHOLE camera of ``K``
    (3, 3, our pixels) for an image of ``hw`` (h, w), and no keypoints."""
    pycolmap = _pycolmap()
    from heads.geometry import invert_pose

    h, w = int(hw[0]), int(hw[1])
    camera = pycolmap.Camera.create_from_model_name(len(rec.cameras) + 1, "PINHOLE", float(K[0, 0]), w, h)
    camera.params = _colmap_params(np.asarray(K, np.float64))
    rec.add_camera_with_trivial_rig(camera)
    image = pycolmap.Image(name=name, camera_id=camera.camera_id, image_id=image_id)
    rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(invert_pose(np.asarray(cam2world, np.float64))[:3]))


def _pycolmap():
    try:
        import pycolmap
    except ImportError as e:
        raise UsageError(f"cameras from the images need pycolmap ({e}); install it (pip install pycolmap) or "
                         "pass --no-sfm for the network's cameras") from None
    pycolmap.logging.minloglevel = 3  # its INFO lines would bury ours; its errors come back as exceptions or in our warning
    from pixio_cli.interrupts import sigterm_as_interrupt

    sigterm_as_interrupt()  # glog's crash handler took SIGTERM on import: a stack dump and death, not a stop
    return pycolmap


def write_frame(folder: Path, index: int, image: np.ndarray) -> tuple[str, tuple[int, int]]:
    """Frame ``index`` (RGB uint8) as a PNG that COLMAP reads, at most MAX_SIDE a side, aspect kept
    exactly; returns its name and its (h, w)."""
    import cv2

    from pixio_cli.images import resize_image

    h, w = image.shape[:2]
    s = MAX_SIDE / max(h, w)
    if s < 1:
        image = resize_image(image, (max(1, round(h * s)), max(1, round(w * s))))
    name = f"{index:06d}.png"
    # encoded in memory and written by Python: cv2.imwrite only says False on a full disk (and libpng prints)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"OpenCV cannot encode frame {index} as PNG")
    (folder / name).write_bytes(data.tobytes())
    return name, image.shape[:2]


def run_sfm(folder: Path, names: list[str], options: SfmOptions, video: bool = False, cancel=None,
            on_stage=lambda stage: None):
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
    """
    if options.first_octave is not None:
        return _run_sfm(folder, names, options=options, video=video, cancel=cancel, on_stage=on_stage)[:2]
    fast = _run_sfm(folder, names, options=replace(options, first_octave=0), video=video, cancel=cancel,
                    on_stage=on_stage)
    if fast[0] is not None and fast[0].num_reg_images() == len(names) and not fast[2]:
        return fast[:2]
    fine = _run_sfm(folder, names, options=replace(options, first_octave=-1), video=video, cancel=cancel,
                    on_stage=lambda stage: on_stage(f"{stage}, again on doubled images"))
    if fast[0] is None or (fine[0] is not None and fine[0].num_reg_images() >= fast[0].num_reg_images()):
        return fine[:2]
    return fast[:2]


def _run_sfm(folder: Path, names: list[str], options: SfmOptions, video: bool, cancel, on_stage):
    pycolmap = _pycolmap()
    import shutil

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
        if options.more_pairs is not None:
            _match_pairs(db, folder / "loop-pairs.txt", options.more_pairs(names), matcher=matcher,
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
    wrong, loose = _unfixed_focal(rec) if options.known_K is None else (None, None)
    if wrong:  # the prior is the last resort: only a fit the evidence says is wrong is given up
        on_stage("mapping again, the focal length held")
        _set_cameras(db, _held)
        rec = _map(db, folder, sparse=sparse, options=options, hold=True, cancel=cancel, names=names)
        return rec, held_focal_note(rec, wrong) if rec is not None else None, False
    return rec, f"{loose}: it is kept; give --intrinsics if you know it" if loose else None, bool(loose)


def triangulate_known(folder: Path, given: SfmCameras, names: list[str], written_hw: np.ndarray, cancel=None):
    """COLMAP's point triangulator on ``folder``'s matched database with the cameras ``given`` held fixed (their
    poses and pinhole K; ``names[v]``: the database's image of given's view v, at size ``written_hw[v]``):
    a reconstruction of those cameras and the points their matches make."""
    pycolmap = _pycolmap()
    from heads.geometry import invert_pose, scale_intrinsics

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


def _unfixed_focal(rec) -> tuple[str | None, str | None]:
    """Whether the focal length ``rec`` fitted is wrong or only loosely fixed: (why it is wrong, or None;
    why it is loose, or None).

    A fit no lens has (distortion beyond 0.3, a focal length beyond 0.4-2.5x COLMAP's prior of 1.2x the
    long side) is wrong. Up to ``CHECK_FOCAL_UP_TO`` frames, a focal length that can be 20 % off either way
    for little cost is loose: held there (distortion dropped) with everything else adjusted again, the
    mean reprojection error rises by less than a third. Loose is no evidence against the fit, which stays
    the best estimate there is (the prior is a guess about another camera): it is said, not replaced.
    """
    camera = next(iter(rec.cameras.values()))
    f, extra = camera.mean_focal_length(), np.abs(np.asarray(camera.params)[camera.extra_params_idxs()])
    fitted = f"{f:.0f} px" + (f", distortion {', '.join(f'{v:.2f}' for v in extra)}" if extra.size else "")
    if len(rec.cameras) == 1 and (not 0.4 < f / (1.2 * max(camera.width, camera.height)) < 2.5
                                  or extra.max(initial=0) > 0.3):
        return f"the fitted camera ({fitted}) is one no lens has", None
    if len(rec.cameras) != 1 or rec.num_reg_images() > CHECK_FOCAL_UP_TO:
        return None, None
    base, off = _error_held_at(rec, 1.0), min(_error_held_at(rec, 0.8), _error_held_at(rec, 1.25))
    if base > 0 and off > 1.35 * base:
        return None, None
    return None, (f"these {rec.num_reg_images()} frames fix the focal length only loosely (fitted {fitted}; 20 % "
                  f"off, the reprojection error rises x{off / base if base > 0 else float('nan'):.2f})")


def _error_held_at(rec, factor: float) -> float:
    """Mean reprojection error of ``rec`` adjusted again with its focal length held at ``factor`` x its own
    (distortion dropped unless ``factor`` is 1)."""
    pycolmap = _pycolmap()
    rec = pycolmap.Reconstruction(rec)
    if factor != 1.0:
        for camera in rec.cameras.values():
            params = np.array(camera.params)
            params[camera.focal_length_idxs()] *= factor
            params[camera.extra_params_idxs()] = 0.0
            camera.params = params
    ba = pycolmap.BundleAdjustmentOptions()
    ba.refine_focal_length = ba.refine_extra_params = ba.refine_principal_point = False
    ba.print_summary = False
    # what pycolmap.bundle_adjustment does, without its log lines (it also turns glog's level back to INFO)
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in rec.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(ba, config, rec).solve()
    rec.update_point_3d_errors()
    return float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else 0.0


def _map(db: Path, folder: Path, sparse: Path, options: SfmOptions, hold: bool, cancel, names: list[str]):
    """COLMAP's incremental or global mapping, or keyframes (``options.mapper``) on the matched database of the
    frames ``names`` (in video order): the model that registers the most frames; the focal length held at the
    camera's prior when ``hold``."""
    import shutil

    pycolmap = _pycolmap()
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


def holds_focal(n_frames: int, options: SfmOptions) -> bool:
    """Whether mapping holds the focal length (and distortion) at the camera's prior from the start: with
    fewer than ``HOLD_FOCAL_BELOW`` frames and no known intrinsics."""
    return options.known_K is None and n_frames < HOLD_FOCAL_BELOW


def held_focal_note(rec, why: str) -> str:
    """One line for the user: why and at what the reconstruction ``rec`` held its focal length."""
    camera = next(iter(rec.cameras.values()))
    default = 1.2 * max(camera.width, camera.height)  # what COLMAP assumes of a photo without EXIF
    source = ("no EXIF: COLMAP's prior, 1.2 x the long side" if abs(camera.mean_focal_length() - default) < 1e-6
              else "the photos' EXIF")
    return (f"{why}: the focal length is held at {camera.mean_focal_length():.0f} px ({source}); "
            "give --intrinsics if you know it")


def _colmap_params(K: np.ndarray) -> list[float]:
    """PINHOLE parameters of K (ours: pixel centres at integers) as COLMAP takes them (centres at +0.5)."""
    return [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5]


def image_cam2world(image) -> np.ndarray:
    """A registered pycolmap image's camera-to-world (4, 4), OpenCV axes as COLMAP's."""
    w2c = np.eye(4)
    w2c[:3] = image.cam_from_world().matrix()
    return np.linalg.inv(w2c)


def camera_K(camera) -> np.ndarray:
    """The pinhole part (3, 3) of a pycolmap camera, in our pixels (COLMAP puts pixel centres at +0.5)."""
    K = camera.calibration_matrix().astype(np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def read_colmap_model(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """A COLMAP model folder's registered images: names, K (V, 3, 3) in their cameras' pixels, camera-to-world
    (V, 4, 4), in image-name order, and its triangulated points (N, 3)."""
    pycolmap = _pycolmap()
    try:
        rec = pycolmap.Reconstruction(str(folder))
    except Exception as e:  # pycolmap's reader says why in its own words
        raise UsageError(f"{folder}: not a COLMAP model folder ({str(e).strip()[:150]})") from None
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    points = np.array([p.xyz for p in rec.points3D.values()], np.float64).reshape(-1, 3)
    return ([im.name for im in images], np.array([camera_K(im.camera) for im in images]).reshape(-1, 3, 3),
            np.array([image_cam2world(im) for im in images]).reshape(-1, 4, 4), points)


def normalised_coordinates(camera, written_hw: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """(h, w, 2) x/z, y/z in the camera frame of every pixel centre of an (h, w) grid over the image,
    through the camera's model (its distortion included)."""
    h, w = hw
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    sy, sx = written_hw[0] / h, written_hw[1] / w
    pix = np.stack([(u + 0.5) * sx, (v + 0.5) * sy], -1).reshape(-1, 2)  # COLMAP: centres at +0.5
    return np.asarray(camera.cam_from_img(pix), np.float64).reshape(h, w, 2)



def _remove_orphans() -> None:
    """Frame folders left by runs that were killed (kill -9 gives no time to clean up): those whose
    process is gone."""
    import shutil
    import tempfile

    for folder in Path(tempfile.gettempdir()).glob("pixio-sfm-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


_DISK_ERRORS = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO") if hasattr(errno, n)}


class SfmJob:
    """:func:`run_sfm` on a background thread over the inputs at their own size (decoded again, apart from
    the network's smaller copies), so matching runs while the model loads and predicts; COLMAP's calls
    release the interpreter. ``result`` waits for it; ``cancel`` stops it at COLMAP's next check."""

    def __init__(self, items: list, options: SfmOptions, video: bool = False) -> None:
        import tempfile
        import threading

        self.items, self.options, self.video = items, options, video
        _remove_orphans()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"pixio-sfm-{os.getpid()}-", ignore_cleanup_errors=True)
        self.folder = Path(self._tmp.name)
        self._token = _pycolmap().CancellationToken()
        self._out = None
        self._note: str | None = None  # on the cameras' focal length, for the user
        self._error: BaseException | None = None
        self.written: dict[int, tuple[str, tuple[int, int], tuple[int, int]]] = {}  # index -> name, written, original
        self.stage = "decoding the frames at their own size"
        self.stage_seconds: dict[str, float] = {}  # each stage's time, once it has ended: where a long video's goes
        self._stage_began = 0.0
        self._descriptors: dict[int, np.ndarray] | None = None  # input index -> the network's descriptor
        self._described = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pixio-sfm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        from pixio_cli.engine import ImageStream
        from pixio_cli.images import ResizePolicy

        from heads.geometry import scale_intrinsics

        self._stage_began = time.perf_counter()
        try:
            for sample in ImageStream(self.items, ResizePolicy(short=None, multiple=1)):
                if self._token.is_cancelled:
                    return
                if sample.error:
                    continue  # the network's pass reports it
                name, hw = write_frame(self.folder, sample.index, sample.image)
                self.written[sample.index] = (name, hw, tuple(sample.orig_hw))
            order = sorted(self.written)
            names = [self.written[i][0] for i in order]
            if len(names) < 2:
                return
            known, prior = self.options.known_K, self.options.prior_K
            opts = replace(self.options, more_pairs=self._loop_pairs if self.options.loop_closure else None,
                           one_camera=self.options.one_camera and len(
                {self.written[i][2] for i in order}) == 1, known_K=None if known is None else [
                scale_intrinsics(known[i], self.written[i][2], self.written[i][1]) for i in order],
                           prior_K=None if prior is None else scale_intrinsics(prior, self.written[order[0]][2],
                                                                                self.written[order[0]][1]))
            self._out, self._note = run_sfm(self.folder, names, options=opts, video=self.video, cancel=self._token,
                                            on_stage=self._next_stage)
        except BaseException as e:  # handed to the caller by result()
            self._error = e
        finally:
            self._next_stage(None)

    @property
    def seconds(self) -> float:
        """The thread's time so far, over the stages that have ended."""
        return sum(self.stage_seconds.values())

    def _next_stage(self, stage: str | None) -> None:
        import time

        now = time.perf_counter()
        self.stage_seconds[self.stage] = round(self.stage_seconds.get(self.stage, 0.0) + now - self._stage_began, 2)
        self.stage, self._stage_began = stage or self.stage, now

    def describe(self, indices: list[int], descriptors: np.ndarray | None) -> None:
        """The network's descriptors (V, D) of the inputs ``indices``, for loop closure (None: there are none,
        and no loop pairs are matched). Matching waits for them before mapping when asked to close loops."""
        if descriptors is not None:
            self._descriptors = {i: d for i, d in zip(indices, descriptors)}
        self._described.set()

    def _loop_pairs(self, names: list[str]) -> list[tuple[str, str]]:
        """The frames ``names`` (in matching's order) to match where the video returns (:func:`loop_pairs`),
        once the network has given its descriptors (:meth:`describe`)."""
        self.stage = "waiting for the network's descriptors to close loops"
        while not self._described.wait(0.25):
            if self._token.is_cancelled:
                raise KeyboardInterrupt
        if not self._descriptors:
            return []
        index = {self.written[i][0]: i for i in self.written}
        have = [k for k, name in enumerate(names) if index.get(name) in self._descriptors]
        pairs = loop_pairs(np.stack([self._descriptors[index[names[k]]] for k in have]), apart=self.options.overlap)
        return [(names[have[a]], names[have[b]]) for a, b in pairs]

    def result(self, indices: list[int], original_hw: list[tuple[int, int]], on_wait=lambda stage: None
               ) -> SfmCameras:
        """The cameras of the inputs ``indices`` (positions in ``items``), in that order; ``on_wait(stage)``
        hears what COLMAP is doing while the caller waits."""
        try:
            while self._thread.is_alive():
                on_wait(self.stage)
                self._thread.join(0.25)
        except BaseException:  # Ctrl-C while waiting: COLMAP stops before its folder goes
            self.cancel()
            raise
        try:
            if self._error is not None and not isinstance(self._error, (RuntimeError, ValueError, OSError)):
                raise self._error  # Ctrl-C, out of memory, or a bug: not a reason to go on
            if isinstance(self._error, OSError) and self._error.errno in _DISK_ERRORS:  # the machine, not matching
                raise RunError(f"cannot write the frames for matching in {self.folder.parent}: "
                                 f"{self._error.strerror} (set TMPDIR to a folder with room, or --no-sfm)") from None
            names = [self.written.get(i, (f"missing-{i}",))[0] for i in indices]
            hws = [self.written[i][1] if i in self.written else hw for i, hw in zip(indices, original_hw)]
            return SfmCameras(
                self._out, names, np.array(hws, np.int64).reshape(-1, 2), np.array(original_hw, np.int64).reshape(-1, 2),
                note=self._note if self._out is not None else None,
                # COLMAP failing is no reason to lose the network's scene
                error=None if self._error is None else
                f"{type(self._error).__name__}: {str(self._error).strip().splitlines()[-1][:200]}")
        finally:
            self.close()

    def triangulate(self, given: SfmCameras, indices: list[int], on_wait=lambda stage: None) -> SfmCameras:
        """The known cameras ``given`` (of the inputs ``indices``, in that order) with this job's matches
        triangulated from them (the job matched without mapping: ``mapper="none"``), so that the network's
        depth is fitted to points seen from the given poses; ``given`` as it is, said in its ``error``, when
        the frames could not be matched."""
        try:
            while self._thread.is_alive():
                on_wait(self.stage)
                self._thread.join(0.25)
            if self._error is not None and not isinstance(self._error, (RuntimeError, ValueError, OSError)):
                raise self._error
            if self._error is None and len(self.written) >= 2:
                self._next_stage("triangulating the matches from the given cameras")
                names = [self.written.get(i, (f"missing-{i}",))[0] for i in indices]
                hws = np.array([self.written[i][1] if i in self.written else (1, 1) for i in indices], np.int64)
                rec = triangulate_known(self.folder, given, names=names, written_hw=hws, cancel=self._token)
                self._next_stage(None)
                return replace(given, reconstruction=rec, names=names, written_hw=hws.reshape(-1, 2))
        except (RuntimeError, ValueError, OSError) as e:
            self._error = e
        except BaseException:
            self.cancel()
            raise
        finally:
            self.close()
        why = f"{type(self._error).__name__}: {str(self._error).strip().splitlines()[-1][:200]}" if self._error \
            else "fewer than 2 frames"
        return replace(given, error=f"no points triangulated from the given cameras ({why})")

    def cancel(self) -> None:
        """Stops matching at COLMAP's next check and removes its frames."""
        self._token.cancel()
        # global mapping takes no cancellation token: a daemon thread, not waited for beyond a few seconds
        self._thread.join(timeout=5.0)
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()


UNIT_FILE = "unit.txt"  # beside a model pixio writes: the unit of its lengths, when it is one (COLMAP ignores it)


def write_colmap(folder: Path, labels: list[str], original_hw: np.ndarray, K: np.ndarray, cam2world: np.ndarray,
                 sfm: SfmCameras | None = None, sfm_to_world: tuple[float, np.ndarray] | None = None,
                 text: bool = False, unit: str | None = None) -> None:
    """A COLMAP model of the scene in ``folder`` (binary as COLMAP writes it, or text), through pycolmap.

    Every frame is an image named by its input ``labels`` with pose ``cam2world``.
    Frames the reconstruction ``sfm`` registered keep its camera (its model, rescaled
    to the original pixels) and their keypoints, and its points come along with
    their multi-view tracks, mapped into the scene's world by ``sfm_to_world`` =
    (scale, 4x4 rigid). Every other frame gets a PINHOLE camera of its ``K`` (original
    pixels) and no points. Each file is written atomically; with ``unit`` a length (the scene's, e.g.
    ``metres``) a ``unit.txt`` beside the model says it, so the model given back as known cameras keeps it.
    """
    pycolmap = _pycolmap()
    import shutil
    import tempfile

    from heads.geometry import invert_pose

    out = pycolmap.Reconstruction()
    old = sfm.reconstruction if sfm is not None and sfm.registered.any() else None
    old_images = {im.name: im for im in old.images.values()} if old is not None else {}
    image_of: dict[int, int] = {}  # the reconstruction's image id -> ours
    cameras: dict[int, int] = {}  # the reconstruction's camera id -> ours
    for v, label in enumerate(labels):
        w2c = invert_pose(np.asarray(cam2world[v], np.float64))
        w, h = int(original_hw[v][1]), int(original_hw[v][0])
        if old is not None and sfm.registered[v]:
            src = old_images[sfm.names[v]]
            if src.camera_id not in cameras:
                got = old.cameras[src.camera_id]
                camera = pycolmap.Camera.create_from_model_name(len(out.cameras) + 1, got.model_name, 1.0,
                                                                got.width, got.height)
                camera.params = got.params
                if (camera.width, camera.height) != (w, h):
                    camera.rescale(w, h)
                out.add_camera_with_trivial_rig(camera)
                cameras[src.camera_id] = camera.camera_id
            sx, sy = w / old.cameras[src.camera_id].width, h / old.cameras[src.camera_id].height
            keypoints = np.array([p.xy for p in src.points2D], np.float64).reshape(-1, 2) * [sx, sy]
            image = pycolmap.Image(name=label, keypoints=keypoints, camera_id=cameras[src.camera_id], image_id=v + 1)
            image_of[src.image_id] = v + 1
            out.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3]))
        else:
            pinhole_view(out, name=label, K=K[v], hw=(h, w), cam2world=cam2world[v], image_id=v + 1)
    if old is not None:
        s, T = sfm_to_world
        for point in old.points3D.values():
            track = pycolmap.Track()
            for el in point.track.elements:
                if el.image_id in image_of:
                    track.add_element(image_of[el.image_id], el.point2D_idx)
            if track.length() >= 2:
                out.add_point3D(s * T[:3, :3] @ point.xyz + T[:3, 3], track, point.color)
    out.update_point_3d_errors()  # each point's reprojection error (pycolmap leaves -1 on points it is given)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".colmap-*"):  # what a killed write left: no live write shares the folder
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".colmap-") as tmp:
        (out.write_text if text else out.write_binary)(tmp)
        _check_model(Path(tmp), out, folder)  # pycolmap's writer says nothing of a full disk
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, folder / f.name)  # one rename per file: never half a file under its name
        other = ".bin" if text else ".txt"  # the folder holds this run's model only: COLMAP reads .bin first
        for name in MODEL_FILES:
            (folder / (name + other)).unlink(missing_ok=True)
    if unit in LENGTHS:
        from pixio_cli.writers import write_text

        write_text(folder / UNIT_FILE, unit + "\n")
    else:
        (folder / UNIT_FILE).unlink(missing_ok=True)


MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")  # a COLMAP model's files, without extension


def _check_model(tmp: Path, model, folder: Path) -> None:
    """An OSError unless the model written in ``tmp`` reads back with as many cameras, images and points."""
    pycolmap = _pycolmap()
    try:
        back = pycolmap.Reconstruction(str(tmp))
        whole = (back.num_cameras(), back.num_images(), back.num_points3D()) == \
            (model.num_cameras(), model.num_images(), model.num_points3D())
    except Exception:  # pycolmap's reader fails on a truncated file in its own words
        whole = False
    if not whole:
        raise OSError(errno.EIO, "the COLMAP model written is not whole (is the disk full?)", str(folder))


@dataclass
class GivenCameras:
    """Cameras known before any matching, by image name: K (3, 3) in the pixels of an image of (h, w) (None:
    the image's own size), camera-to-world (4, 4); metres per unit of length (None: not said); where they come
    from (what messages name) and how far from orthonormal the worst rotation was (made exact)."""

    cameras: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int] | None]]
    scale: float | None
    source: str
    rotation_off: float = 0.0


def read_known_cameras(given: Path | GivenCameras, names: list[str], original_hw: list[tuple[int, int]]
                       ) -> SfmCameras:
    """Cameras given for the frames ``names`` (relative to the frames' common folder, as ``pixio recon3d``
    names them): our ``cameras.json`` (its unit says whether they are in metres), a COLMAP model folder (in
    metres when pixio wrote it so, as its ``unit.txt`` says; else its points, when it has them, set the
    scale), or :class:`GivenCameras` (an RGB-D layout's recorded poses). Every frame must be in them, and
    each camera taken once."""
    from heads.geometry import scale_intrinsics

    if isinstance(given, GivenCameras):
        path, source, scale, cams = None, given.source, given.scale, given.cameras
    else:
        path = Path(given)
        source = f"--known-cameras {path}"
        if path.is_dir():
            return _known_colmap_model(path, names, original_hw)
        cams_json = read_cameras_json(path)
        scale, cams = cams_json.scale, cams_json.cameras
        given = cams_json
    matched = [_match(n, cams) for n in names]
    _require_all(source, names, matched)
    _require_one_each(source, names, matched)
    rec = _pycolmap().Reconstruction()
    for v, m in enumerate(matched):
        K, T, hw = cams[m]
        oh, ow = original_hw[v]
        h, w = hw if hw is not None else (oh, ow)
        if abs((w / h) / (ow / oh) - 1) > 0.01:
            raise UsageError(f"{source}: {m} is {w}x{h} there, but the image is {ow}x{oh} (another shape: not "
                             "this image's camera)")
        T = T.copy()
        T[:3, 3] *= scale or 1.0  # metres
        pinhole_view(rec, name=m, K=scale_intrinsics(K, (h, w), (oh, ow)), hw=(oh, ow), cam2world=T, image_id=v + 1)
    hw = np.array(original_hw, np.int64).reshape(-1, 2)
    note = (f"{source}: rotations orthonormal only to {given.rotation_off:.1e} were made exactly orthonormal"
            if given.rotation_off > 1e-6 else None)
    return SfmCameras(rec, matched, hw, hw, known=True, scale=1.0 if scale else None, note=note)


def _known_colmap_model(path: Path, names: list[str], original_hw: list[tuple[int, int]]) -> SfmCameras:
    """:func:`read_known_cameras` of a COLMAP model folder."""
    pycolmap = _pycolmap()
    source = f"--known-cameras {path}"
    try:
        rec = pycolmap.Reconstruction(str(path))
    except Exception as e:  # pycolmap's reader says why in its own words
        raise UsageError(f"{source}: not a COLMAP model folder ({str(e).strip()[:150]})") from None
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    matched = [_match(n, by_name) for n in names]
    _require_all(source, names, matched)
    _require_one_each(source, names, matched)
    hws = np.array([(by_name[m].camera.height, by_name[m].camera.width) for m in matched], np.int64)
    unit = (path / UNIT_FILE).read_text().strip().lower() if (path / UNIT_FILE).is_file() else ""
    scale = LENGTHS.get(unit)
    if scale is not None:  # in a unit of length: metres, exactly, and the points need not set it
        rec.transform(pycolmap.Sim3d(scale, pycolmap.Rotation3d(), np.zeros(3)))
    return SfmCameras(rec, matched, hws, np.array(original_hw, np.int64).reshape(-1, 2), known=True,
                      scale=None if scale is None else 1.0)


FOCAL_RANGE = (0.05, 100.0)  # focal lengths a camera may have, times its image's long side (a fisheye to 100x zoom)
LENGTHS = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0, "cm": 0.01, "centimetres": 0.01,
           "centimeters": 0.01, "mm": 0.001, "millimetres": 0.001, "millimeters": 0.001}  # metres per unit


def read_cameras_json(path: Path) -> GivenCameras:
    """A ``cameras.json`` (pixio's layout), checked: metres per unit of its translations (None where the unit
    is not said, or is pixio's 'unknown'), and per image name its K (3, 3), camera-to-world (4, 4) and
    (height, width). A :class:`UsageError` naming the file and the camera for anything else. Rotations
    orthonormal to :data:`heads.recon.known_poses.ROTATION_TOLERANCE` are made exactly so."""
    from heads.recon.known_poses import PoseError, rigid

    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--known-cameras {path}: not a cameras.json ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise UsageError(f"--known-cameras {path}: not a cameras.json of pixio's (no list 'cameras')")
    unit = str(data.get("unit", "")).strip().lower().split(",")[0].strip()  # "metres, as the network estimates them"
    if unit and unit not in LENGTHS and not unit.startswith("unknown"):
        raise UsageError(f"--known-cameras {path}: unit {data['unit']!r} is not a length (m, cm or mm)")
    scale = LENGTHS.get(unit)
    out: dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int]]] = {}
    worst = 0.0
    for i, c in enumerate(data["cameras"]):
        name = c.get("image") if isinstance(c, dict) else None
        where = f"--known-cameras {path}: camera {i}" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: 'image' must name the image file")
        if name in out:
            raise UsageError(f"{where}: a second camera for the same image")
        size = [c.get("height"), c.get("width")]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10 ** 6 for v in size):
            raise UsageError(f"{where}: 'width' and 'height' must be positive whole numbers of pixels")
        try:
            K, T = np.array(c["K"], np.float64), np.array(c["cam2world"], np.float64)
        except (KeyError, ValueError, TypeError):
            raise UsageError(f"{where}: 'K' must be a 3x3 and 'cam2world' a 4x4 matrix of numbers") from None
        if K.shape != (3, 3) or T.shape != (4, 4) or not (np.isfinite(K).all() and np.isfinite(T).all()):
            raise UsageError(f"{where}: 'K' must be a 3x3 and 'cam2world' a 4x4 matrix of finite numbers")
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
            raise UsageError(f"{where}: K is not a pinhole camera (positive fx and fy, last row 0 0 1)")
        side = max(size)
        if not all(FOCAL_RANGE[0] * side <= f <= FOCAL_RANGE[1] * side for f in (K[0, 0], K[1, 1])):
            raise UsageError(f"{where}: a focal length of {K[0, 0]:.6g} x {K[1, 1]:.6g} px is no camera's for an "
                             f"image of {size[1]}x{size[0]} (expected {FOCAL_RANGE[0]:g}-{FOCAL_RANGE[1]:g} x its "
                             "long side)")
        try:
            T, off = rigid(T, where)
        except PoseError as e:
            raise UsageError(str(e)) from None
        worst = max(worst, off)
        if np.abs(T[:3, 3]).max() > 1e6:
            raise UsageError(f"{where}: the camera is {np.abs(T[:3, 3]).max():.3g} units from the origin")
        out[name] = (K, T, (size[0], size[1]))
    return GivenCameras(out, scale, source=f"--known-cameras {path}", rotation_off=worst)


def _require_one_each(source: str, names: list[str], matched: list[str]) -> None:
    """Two frames matched to one camera (the same file name in two folders) are refused."""
    seen: dict[str, str] = {}
    for n, m in zip(names, matched):
        if m in seen:
            raise UsageError(f"{source}: {seen[m]} and {n} both take the camera of {m} (the same file "
                             "name in two folders): name the images by their path relative to the frames' folder")
        seen[m] = n


def _match(name: str, known: dict) -> str | None:
    """``name`` in ``known``, else the one entry with the same file name (cameras made from another folder)."""
    if name in known:
        return name
    same = [k for k in known if _file_key(k) == _file_key(name)]
    return same[0] if len(same) == 1 else None


def _file_key(name: str) -> str:
    """An image name without its folders: ``a/b/c.png`` -> ``c.png``, ``v/clip.mp4#frame3`` -> ``clip.mp4#frame3``."""
    path, sep, frame = name.partition("#")
    return Path(path).name + sep + frame


def _require_all(source: str, names: list[str], matched: list[str | None]) -> None:
    missing = [n for n, m in zip(names, matched) if m is None]
    if missing:
        raise UsageError(f"{source}: no camera for {len(missing)} of the {len(names)} frames (first: "
                         f"{missing[0]})")

"""Whether the frames fix the camera's focal length, and which lens model they support: checks on a mapped
COLMAP reconstruction (:mod:`heads.recon.sfm` acts on them). A focal length a few per cent off stretches
every depth triangulated from it by as much, so these decide much of the scene's geometry
(docs/recon3d.md, "Focal length").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from heads.recon.camera_files import _pycolmap

if TYPE_CHECKING:
    from heads.recon.sfm import SfmOptions

HOLD_FOCAL_BELOW = 3  # frames: two cannot fix a focal length; more may not either (see _unfixed_focal)
CHECK_FOCAL_UP_TO = 40  # frames: whether they fix the focal length is checked up to this many (three more BAs)
DISTORTION_GAIN = 0.005  # a fitted lens distortion must lower the mean reprojection error by this fraction to stay


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


def _without_needless_distortion(rec):
    """``rec`` adjusted again with its lens distortion held at 0 (focal length and all else refitted) when the
    distortion it fitted lowers the mean reprojection error by under ``DISTORTION_GAIN``; else ``rec``.

    Through a lens without distortion, a few frames let COLMAP trade a small radial distortion against the
    focal length for nothing (25 rendered frames, focal length 525 px: fitted 538.5 px with distortion 0.008,
    the error no lower than without it), and a focal length a few per cent off stretches every depth
    triangulated from it by as much. A real distortion lowers the error measurably even on few frames (the
    7-Scenes colour camera's, about -0.027: by 1.1 % on 25 frames; held at 0 on 100 frames the fit goes
    astray) and is kept."""
    if len(rec.cameras) != 1:
        return rec
    camera = next(iter(rec.cameras.values()))
    extra = camera.extra_params_idxs()
    if not len(extra) or not np.any(np.asarray(camera.params)[extra]) or not rec.num_points3D():
        return rec
    plain = _refitted(rec, drop_distortion=True, refine_focal=True)
    before = float(rec.compute_mean_reprojection_error())
    return plain if plain.compute_mean_reprojection_error() < (1 + DISTORTION_GAIN) * before else rec


def _refitted(rec, *, focal_factor: float = 1.0, drop_distortion: bool = False, refine_focal: bool = False):
    """A copy of ``rec`` whose cameras' focal lengths are ``focal_factor`` x their own and, with
    ``drop_distortion``, whose distortion is 0, bundle-adjusted (its focal length refined when asked; principal
    point and distortion held), its points' errors updated."""
    pycolmap = _pycolmap()
    rec = pycolmap.Reconstruction(rec)
    for camera in rec.cameras.values():
        params = np.array(camera.params)
        params[camera.focal_length_idxs()] *= focal_factor
        if drop_distortion:
            params[camera.extra_params_idxs()] = 0.0
        camera.params = params
    ba = pycolmap.BundleAdjustmentOptions()
    ba.refine_focal_length = refine_focal
    ba.refine_extra_params = ba.refine_principal_point = False
    ba.print_summary = False
    # what pycolmap.bundle_adjustment does, without its log lines (it also turns glog's level back to INFO)
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in rec.reg_image_ids():
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    pycolmap.create_default_bundle_adjuster(ba, config, rec).solve()
    rec.update_point_3d_errors()
    return rec


def _error_held_at(rec, factor: float) -> float:
    """Mean reprojection error of ``rec`` adjusted again with its focal length held at ``factor`` x its own
    (distortion dropped unless ``factor`` is 1)."""
    rec = _refitted(rec, focal_factor=factor, drop_distortion=factor != 1.0)
    return float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else 0.0


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

"""`pixio recon3d` cameras, geometry and time against COLMAP's own structure from motion, in one run.

On 7-Scenes red-kitchen frames the bundled model never saw (800-992, every 8th
by default: 25 frames, 1.25 m and 31 degrees of motion), against their recorded
poses:

- ``pixio recon3d`` as a user runs it (the default: COLMAP's matching and bundle
  adjustment, the network's depth fitted to them), and with ``--no-sfm`` (the
  network's cameras alone);
- pycolmap's own SfM at its defaults (SIFT, exhaustive matching, incremental
  mapping), what a user would otherwise run;
- the trivial cameras (every one at the origin; a straight line at constant speed).

Each is scored by ATE (camera centres after a similarity alignment), the
alignment's scale (1.0 = metric), the relative rotation error of every pair and
pose AUC@5/@30. The geometry is scored against the recorded depth as
``pixio evaluate recon3d`` does (:mod:`heads.recon.evaluate`): our cloud and mesh,
the cloud of ``--no-fusion`` (every view's pixels as placed), COLMAP's sparse
points, and on our cameras the recorded depth (the ceiling) and one constant
depth (the trivial baseline). Every run is a fresh process, timed end to end
with its peak memory. ``ratio`` = COLMAP's seconds / ours (above 1: we are faster).

``--middlebury DIR`` also scores an orbit set in the Middlebury multi-view
layout (``*.png`` with a ``*_par.txt`` of K, R, t per image; e.g. templeSparseRing),
where only the frames each method registers are scored (their number is given).

The same runs on scenes no network saw (``--unseen object,room``: rendered by
:mod:`benchmarks.synthetic_scenes` with exact depth and cameras), where the
geometry must come from the images; there and on the kitchen also with the
network's depth replaced by a flat plane (``--depth-prior flat``) and with the
recorded cameras given (``--known-cameras``, scored with the scale judged).

    python -m benchmarks.recon3d
    python -m benchmarks.recon3d --step 24 --unseen "" --middlebury /data/templeSparseRing
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heads.metrics import camera_metrics, trivial_cameras
from heads.recon.camera_files import image_cam2world

from .common import emit, environment, run_timed

ROOT = Path(__file__).resolve().parents[1]
KITCHEN = ROOT.parent / "shared" / "data" / "rgbd-7scenes-redkitchen"


def colmap_poses(folder: str | Path, out: str | Path, sequential: bool = False, mapper: str = "incremental"
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """pycolmap's SfM at its defaults (what a user would otherwise run) on the images in ``folder``, seeded,
    matching every pair (or, ``sequential``, each frame with the next few), mapping incrementally (or with
    ``mapper="global"``, GLOMAP's global mapper at its defaults): each registered image's
    camera-to-world, the triangulated points, and the seconds of each stage."""
    import pycolmap

    pycolmap.logging.minloglevel = 3
    pycolmap.set_random_seed(0)
    db, sparse = Path(out) / "database.db", Path(out) / "sparse"
    sparse.mkdir(parents=True)
    options = pycolmap.IncrementalPipelineOptions()
    options.random_seed = 0
    t0 = time.perf_counter()
    pycolmap.extract_features(db, folder, device=pycolmap.Device.cpu)
    t1 = time.perf_counter()
    (pycolmap.match_sequential if sequential else pycolmap.match_exhaustive)(db, device=pycolmap.Device.cpu)
    t2 = time.perf_counter()
    if mapper == "global":
        glomap = pycolmap.GlobalPipelineOptions()
        glomap.random_seed = 0
        models = pycolmap.global_mapping(db, folder, sparse, glomap)
    else:
        models = pycolmap.incremental_mapping(db, folder, sparse, options)
    t3 = time.perf_counter()
    rec = max(models.values(), key=lambda r: r.num_reg_images()) if models else None
    poses = {image.name: image_cam2world(image) for image in (rec.images.values() if rec else []) if image.has_pose}
    points = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3) if rec else np.zeros((0, 3))
    return poses, points, {"features": t1 - t0, "matching": t2 - t1, "mapping": t3 - t2}


def colmap_alone(folder: str, out: str) -> None:
    """:func:`colmap_poses` as JSON on stdout (run in its own process by :func:`main`, to be timed)."""
    poses, points, seconds = colmap_poses(folder, out)
    print(json.dumps({"seconds": seconds, "poses": {k: v.tolist() for k, v in poses.items()},
                      "points": points.tolist()}))


def colmap_our_settings(folder: str, out: str) -> None:
    """pycolmap with pixio's SfM settings (:func:`heads.recon.sfm.run_sfm`: SIFT on the images as they are first,
    one thread, 20 initial-pair trials at 8 degrees, the focal-length check), as JSON on stdout with the
    seconds of each stage, run in its own process by :func:`main` like :func:`colmap_alone`."""
    from heads.recon.sfm import SfmOptions, run_sfm

    work = Path(out) / "images"
    work.mkdir(parents=True)
    names = sorted(p.name for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    for n in names:
        (work / n).symlink_to((Path(folder) / n).resolve())
    marks: list[tuple[str, float]] = []
    rec, note = run_sfm(work, names, SfmOptions(), on_stage=lambda stage: marks.append((stage, time.perf_counter())))
    marks.append(("end", time.perf_counter()))
    seconds = {a: round(t1 - t0, 2) for (a, t0), (_, t1) in zip(marks, marks[1:])}
    poses = {im.name: image_cam2world(im).tolist() for im in (rec.images.values() if rec else []) if im.has_pose}
    print(json.dumps({"seconds": seconds, "poses": poses, "focal_note": note}))


def score(poses: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict:
    """camera_metrics over the frames with a camera, and how many they are."""
    names = [n for n in truth if n in poses]
    if len(names) < 3:
        return {"registered": len(names)}
    m = camera_metrics(np.stack([poses[n] for n in names]), np.stack([truth[n] for n in names]))
    return {"registered": len(names), **{k: round(v, 4) for k, v in m.items()}}


OURS = {  # run name: flags (the default run writes the COLMAP model, for its points, and the mesh)
    "ours": ["--cameras", "colmap", "--mesh"],
    "ours_flat": ["--depth-prior", "flat", "--cameras", "json"],  # the ablation: geometry from the images alone
    "ours_stacked": ["--no-fusion", "--cameras", "colmap"],
    "ours_no_sfm": ["--no-sfm", "--cameras", "json"],
}
REFINED = ("ours", "ours_known")  # kitchen runs also scored after the alignment is refined on their geometry
RANGES = (1.5, 2.5, 3.5)  # metres from the nearest recorded camera: the default's refined scores per band too
RIGID = ("ours_known",)  # runs whose scene is in metres from what was given: scored with its scale judged


def known_cameras_file(images: list[Path], truth: dict[str, np.ndarray], *, K: np.ndarray, hw: tuple[int, int],
                       path: Path) -> Path:
    """A cameras.json (metres) of the recorded poses ``truth`` and the layout's ``K``, for --known-cameras."""
    cams = [{"image": p.name, "width": hw[1], "height": hw[0], "K": K.tolist(), "cam2world": truth[p.name].tolist()}
            for p in images]
    path.write_text(json.dumps({"unit": "metres", "cameras": cams}))
    return path


def run_set(images: list[Path], truth: dict[str, np.ndarray], work: Path, extra: list[str], rgbd=None,
            runs: dict | None = None, offset: bool = True, refine: bool = False) -> dict:
    """Ours (default, flat prior, --no-fusion, --no-sfm, and ``runs``: more name -> flags), COLMAP alone and the
    trivial cameras on one set of frames; with ``rgbd`` (frames, depth reader) the geometry of each too
    (``offset``: solve for a sensor offset, as 7-Scenes' depth camera needs). Runs in :data:`RIGID` are also
    scored with their scale judged (``geometry_rigid``); with ``refine``, runs in :data:`REFINED` and COLMAP's
    points also after Tanks and Temples' refinement on their own geometry (``geometry_refined``; the default's
    rows also per band of :data:`RANGES`)."""
    from heads.recon.evaluate import SceneCameras, evaluate_clouds, evaluate_scene, read_scene_cameras

    folder = work / "images"
    folder.mkdir(parents=True)
    for p in images:
        (folder / p.name).symlink_to(p.resolve())
    result, geometry, rigid, refined = {"frames": len(images)}, {}, {}, {}
    for name, flags in {**OURS, **(runs or {})}.items():
        seconds, peak, out, err = run_timed([sys.executable, "-m", "pixio_cli", "recon3d", str(folder), "-o",
                                             str(work / name / "scene.ply"), "--json", "-q", *flags, *extra])
        summary = json.loads(out.strip().splitlines()[-1])
        cams = read_scene_cameras(work / name)
        poses = {Path(n).name: T for n, T in zip(cams.names, cams.cam2world)}
        unplaced = {Path(p).name for p in summary["cameras"].get("unregistered", [])}
        result[name] = {**score(poses, truth), "seconds": round(seconds, 2), "peak_memory_gib": round(peak, 2),
                        "stages": summary["seconds"], "warnings": [l for l in err.splitlines() if "warning" in l],
                        "points": summary["points"], "unit": summary["unit"],
                        "matched": (summary.get("fusion") or {}).get("matched")}
        if name == "ours":
            result[name]["registered_by_sfm"] = summary["cameras"]["registered"]
            result[name]["score_registered_only"] = score(
                {k: v for k, v in poses.items() if k not in unplaced}, truth)
        if rgbd is not None and name != "ours_no_sfm":
            geometry[name] = evaluate_scene(work / name, *rgbd, offset=offset)
            if name in RIGID:
                rigid[name] = evaluate_scene(work / name, *rgbd, offset=offset, scale=False)
            if refine and name in REFINED:
                refined[name] = evaluate_scene(work / name, *rgbd, offset=offset, refine=True,
                                               ranges=RANGES if name == "ours" else None)
    seconds, peak, out, _ = run_timed([sys.executable, "-m", "benchmarks.recon3d", "--colmap-alone", str(folder),
                                       str(work / "colmap")])
    colmap = json.loads(out.strip().splitlines()[-1])
    result["colmap"] = {**score({k: np.array(v) for k, v in colmap["poses"].items()}, truth),
                        "seconds": round(seconds, 2), "peak_memory_gib": round(peak, 2),
                        "stages": {k: round(v, 2) for k, v in colmap["seconds"].items()}}
    seconds, peak, out, _ = run_timed([sys.executable, "-m", "benchmarks.recon3d", "--colmap-our-settings",
                                       str(folder), str(work / "colmap_ours")])
    ours_settings = json.loads(out.strip().splitlines()[-1])
    result["colmap_our_settings"] = {**score({k: np.array(v) for k, v in ours_settings["poses"].items()}, truth),
                                     "seconds": round(seconds, 2), "peak_memory_gib": round(peak, 2),
                                     "stages": ours_settings["seconds"], "focal_note": ours_settings["focal_note"]}
    if rgbd is not None and len(colmap["poses"]) >= 3:
        names = sorted(colmap["poses"])
        cams = SceneCameras(names, np.zeros((len(names), 3, 3)), np.array([colmap["poses"][n] for n in names]))
        geometry["colmap"] = evaluate_clouds(cams, {"colmap_points": np.array(colmap["points"])}, *rgbd,
                                             offset=offset)
        if refine:
            refined["colmap"] = evaluate_clouds(cams, {"colmap_points": np.array(colmap["points"])}, *rgbd,
                                                offset=offset, refine=True)
    if geometry:
        result["geometry"] = geometry
    if rigid:
        result["geometry_rigid"] = rigid
    if refined:
        result["geometry_refined"] = refined
    names = sorted(truth)
    for kind, poses in trivial_cameras(len(names)).items():
        result[kind] = score(dict(zip(names, poses)), truth)
    return result


def middlebury(folder: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """Images and camera-to-world of a Middlebury multi-view set (``*_par.txt``: name, K, R, t per line)."""
    par = next(folder.rglob("*_par.txt"))
    truth = {}
    for line in par.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 22:
            w2c = np.eye(4)
            w2c[:3, :3] = np.array(f[10:19], float).reshape(3, 3)
            w2c[:3, 3] = np.array(f[19:22], float)
            truth[f[0]] = np.linalg.inv(w2c)
    images = sorted(p for p in folder.rglob("*.png") if p.name in truth)
    return images, truth


def kitchen_set(args, extra: list[str], work: Path) -> dict:
    """The 7-Scenes kitchen frames ``--first``..``--last`` every ``--step``, with their recorded poses given as
    known cameras too (7-Scenes' poses and K are its depth camera's, not the colour camera's)."""
    from heads.sequences import find_sequences

    ids = range(args.first, args.last + 1, args.step)
    images = [KITCHEN / f"frame-{i:06d}.color.jpg" for i in ids]
    truth = {p.name: np.loadtxt(KITCHEN / p.name.replace("color.jpg", "pose.txt")) for p in images}
    frames = [f for split in ("train", "val") for seq in find_sequences("7scenes", KITCHEN, split)
              for f in seq.frames if f.image.name in truth]
    reader = find_sequences("7scenes", KITCHEN, "val")[0]  # one depth format for the folder
    work.mkdir(parents=True)
    given = known_cameras_file(images, {n: _orthonormal(T) for n, T in truth.items()},
                               K=np.loadtxt(KITCHEN / "camera-intrinsics.txt"), hw=(480, 640), path=work / "recorded.json")
    return run_set(images, truth, work=work / "set", extra=extra, rgbd=(frames, reader.read_depth),
                   runs={"ours_known": ["--known-cameras", str(given), "--cameras", "json"]}, refine=True)


def unseen_set(kind: str, frames: int, extra: list[str], work: Path) -> dict:
    """A scene no network saw (:mod:`benchmarks.synthetic_scenes`), rendered with exact depth and cameras, its
    exact cameras given as known cameras too."""
    from benchmarks.synthetic_scenes import write_scene
    from heads.sequences import find_sequences

    folder = work / "data"
    write_scene(kind, folder, frames=frames)
    seq = find_sequences("generic-rgbd", folder, "val", depth_scale=1000.0)[0]
    images = [f.image for f in seq.frames]
    truth = {f.image.name: f.cam2world for f in seq.frames}
    given = known_cameras_file(images, truth, K=seq.frames[0].K, hw=(480, 640), path=work / "exact.json")
    return run_set(images, truth, work=work / "set", extra=extra, rgbd=(seq.frames, seq.read_depth), offset=False,
                   runs={"ours_known": ["--known-cameras", str(given), "--cameras", "json"]})


def _orthonormal(T: np.ndarray) -> np.ndarray:
    from heads.recon.known_poses import rigid

    return rigid(T, "pose")[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", type=int, default=800)
    ap.add_argument("--last", type=int, default=992)
    ap.add_argument("--step", type=int, default=8)
    ap.add_argument("--unseen", default="object,room", help="scenes no network saw, rendered (comma-separated; "
                    "'' for none)")
    ap.add_argument("--middlebury", type=Path, default=None)
    ap.add_argument("--colmap-alone", nargs=2, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--colmap-our-settings", nargs=2, default=None, help=argparse.SUPPRESS)
    args, extra = ap.parse_known_args()
    if args.colmap_alone:
        return colmap_alone(*args.colmap_alone)
    if args.colmap_our_settings:
        return colmap_our_settings(*args.colmap_our_settings)
    if not KITCHEN.exists():
        raise SystemExit(f"{KITCHEN} is missing: this benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory() as tmp:
        kitchen = kitchen_set(args, extra, Path(tmp) / "kitchen")
        unseen = {kind: unseen_set(kind, 25, extra, Path(tmp) / kind) for kind in filter(None, args.unseen.split(","))}
        orbit = None
        if args.middlebury:
            orbit = run_set(*middlebury(args.middlebury), Path(tmp) / "orbit", extra)
    import torch

    result = {"benchmark": "recon3d", **environment(torch.device("cpu")),
              "frames": f"7-Scenes redkitchen {args.first}-{args.last} every {args.step}",
              "kitchen": kitchen, "unseen": unseen, "orbit": orbit,
              "ours_s": kitchen["ours"]["seconds"], "reference_s": kitchen["colmap"]["seconds"],
              "ratio": round(kitchen["colmap"]["seconds"] / kitchen["ours"]["seconds"], 3),
              "ate_cm": round(100 * kitchen["ours"]["ate_mean"], 2),
              "colmap_ate_cm": round(100 * kitchen["colmap"]["ate_mean"], 2)}
    emit(result)


if __name__ == "__main__":
    main()

"""Cameras on a real long video: `pixio recon3d` against COLMAP on the 1000 frames of a 7-Scenes kitchen video
as they are and subsampled (every 2nd, every 4th frame), never a frame twice.

Each row is a fresh process, default options, timed with its peak memory; the cameras are scored against the
recorded poses: ATE (similarity of the camera centres), and the relative pose error over 100 frames of the
video (RPE: the offset and turn from each frame to the one 100 frames later, after the same similarity's
scale), which shows drift. COLMAP runs in the same invocation, alternating with pixio (sequential matching, its
global and its incremental mapper at their defaults, each stopped at ``--colmap-timeout``). Ablation rows say
what pixio's keyframe mapping buys: the same frames mapped globally (``--mapper global``, what ``auto`` did
before; ``--mappers global,incremental`` adds incremental mapping of every frame, about 15 minutes more). The trivial row is every camera at one place.

    python -m benchmarks.long_video                         # strides 4,2,1: about an hour on 2 cores
    python -m benchmarks.long_video --strides 4 --no-colmap --ablation ""   # pixio alone on 250 frames
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heads.geometry import umeyama

from .common import TimedOut, emit, environment, run_timed
from .recon3d import colmap_poses, score

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "video-7scenes-redkitchen"
RPE_FRAMES = 100  # the relative pose error's span, in the video's frames


def frame_number(name: str) -> int:
    """The video frame a file holds (7-Scenes names it frame-000123.color.jpg)."""
    return int(re.search(r"(\d+)", name).group(1))


def relative_pose_error(poses: dict[str, np.ndarray], truth: dict[str, np.ndarray], span: int = RPE_FRAMES
                        ) -> dict:
    """Mean error of the motion from each frame to the frame ``span`` video frames later, both registered:
    translation (in the truth's units, the prediction scaled by the similarity that aligns the camera
    centres) and rotation (degrees). None where no such pair is registered."""
    names = [n for n in truth if n in poses]
    if len(names) < 3:
        return {"rpe_m": None, "rpe_deg": None, "rpe_pairs": 0}
    s, _, _ = umeyama(np.stack([poses[n][:3, 3] for n in names]), np.stack([truth[n][:3, 3] for n in names]))
    at = {frame_number(n): n for n in names}
    trans, rot = [], []
    for i, a in at.items():
        b = at.get(i + span)
        if b is None:
            continue
        est = np.linalg.inv(poses[a]) @ poses[b]
        gt = np.linalg.inv(truth[a]) @ truth[b]
        trans.append(np.linalg.norm(s * est[:3, 3] - gt[:3, 3]))
        cos = (np.trace(est[:3, :3].T @ gt[:3, :3]) - 1) / 2
        rot.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    if not trans:
        return {"rpe_m": None, "rpe_deg": None, "rpe_pairs": 0}
    return {"rpe_m": round(float(np.mean(trans)), 4), "rpe_deg": round(float(np.mean(rot)), 3),
            "rpe_pairs": len(trans)}


def scored(poses: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict:
    """ATE and the rest (:func:`benchmarks.recon3d.score`) and the relative pose error."""
    return {**score(poses, truth), **relative_pose_error(poses, truth)}


def colmap_run(folder: str, out: str, mapper: str) -> None:
    """COLMAP at its defaults, sequential matching, ``mapper`` (global or incremental), as JSON on stdout."""
    poses, _, seconds = colmap_poses(folder, out, True, mapper)
    print(json.dumps({"stages": seconds, "poses": {k: v.tolist() for k, v in poses.items()}}))


def pixio_row(folder: Path, work: Path, truth: dict, flags: list[str], timeout: float | None) -> dict:
    """`pixio recon3d` on ``folder`` (cameras.json written), timed and scored."""
    out = work / "pixio"
    try:
        seconds, peak, stdout, _ = run_timed([sys.executable, "-m", "pixio_cli", "recon3d", str(folder), "-o",
                                              str(out), "--cameras", "json", "--json", "-q", *flags],
                                             timeout=timeout)
    except TimedOut as e:
        return {"stopped": str(e)}
    cams = json.loads((out / "cameras.json").read_text())["cameras"]
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2),
            **scored({c["image"]: np.array(c["cam2world"]) for c in cams}, truth),
            "stages": summary["seconds"], "sfm_stages": summary.get("sfm_stages")}


def colmap_row(folder: Path, work: Path, truth: dict, mapper: str, timeout: float | None) -> dict:
    try:
        seconds, peak, stdout, _ = run_timed([sys.executable, "-m", "benchmarks.long_video", "--colmap", str(folder),
                                              str(work / f"colmap-{mapper}"), mapper], timeout=timeout)
    except TimedOut as e:
        return {"stopped": str(e)}
    r = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2), "stages": r["stages"],
            **scored({k: np.array(v) for k, v in r["poses"].items()}, truth)}


def run(strides: list[int], with_colmap: bool, ablation: list[int], colmap_timeout: float,
        mappers: tuple[str, ...] = ("global",)) -> list[dict]:
    frames = sorted(VIDEO.glob("frame-*.color.jpg"))
    rows = []
    for k, stride in enumerate(strides):
        chosen = frames[::stride]
        truth = {p.name: np.loadtxt(p.with_name(p.name.replace("color.jpg", "pose.txt"))) for p in chosen}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "frames"
            folder.mkdir()
            for p in chosen:
                (folder / p.name).symlink_to(p.resolve())
            runs = [("pixio", lambda w: pixio_row(folder, w, truth, flags=[], timeout=None))]
            if with_colmap:  # alternating which goes first, so neither always meets a warm disk cache
                colmap = [(f"colmap_{m}", lambda w, m=m: colmap_row(folder, w, truth, mapper=m, timeout=colmap_timeout))
                          for m in ("global", "incremental")]
                runs = runs + colmap if k % 2 == 0 else colmap + runs
            if stride in ablation:
                runs += [(f"pixio_{m}", lambda w, m=m: pixio_row(folder, w, truth, flags=["--mapper", m],
                                                                 timeout=colmap_timeout))
                         for m in mappers]
            row = {"stride": stride, "frames": len(chosen)}
            for name, go in runs:
                work = Path(tmp) / name
                work.mkdir()
                row[name] = go(work)
                print(json.dumps({"stride": stride, name: row[name]}), file=sys.stderr, flush=True)
            origin = {n: np.eye(4) for n in truth}  # every camera at one place: the trivial baseline
            row["trivial_origin"] = {k: v for k, v in scored(origin, truth).items() if k in ("ate_mean", "registered")}
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strides", default="4,2,1", help="every n-th frame of the video, for each n")
    ap.add_argument("--no-colmap", action="store_true")
    ap.add_argument("--ablation", default="1", help="strides at which pixio's other mappers run too")
    ap.add_argument("--mappers", default="global",
                    help="pixio's other mappers run at the --ablation strides (global, incremental)")
    ap.add_argument("--colmap-timeout", type=float, default=900.0,
                    help="seconds a COLMAP or ablation run may take before it is stopped (and said)")
    ap.add_argument("--colmap", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.colmap:
        return colmap_run(*args.colmap)
    if not VIDEO.exists():
        raise SystemExit(f"{VIDEO} is missing: this benchmark needs ../shared/data")
    start = time.perf_counter()
    import torch

    rows = run([int(v) for v in args.strides.split(",")], not args.no_colmap,
               ablation=[int(v) for v in args.ablation.split(",") if v], colmap_timeout=args.colmap_timeout,
               mappers=tuple(m for m in args.mappers.split(",") if m))
    emit({"benchmark": "long_video", **environment(torch.device("cpu")), "video": VIDEO.name, "rows": rows,
          "seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    main()

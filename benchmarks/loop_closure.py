"""Drift where the camera returns, with and without `--loop-closure`: `pixio recon3d` on the 7-Scenes kitchen
walk (every 4th frame of the recorded sequence, default options otherwise), which comes back to where it
was: frames about 55-68 and 232-241 stand within 15 cm of each other, looking the same way. Beyond its 250
frames, the walk there and back again (identical frames on the way back).

The *loop gap* says how far the cameras drift: over every pair of frames at least 40 frames apart whose
recorded cameras stand within 15 cm and 20 degrees of each other, the mean length of the difference between
the estimated and the recorded offset from one to the other (after the similarity that best aligns all
cameras to the recorded ones, so in metres). Beside it the ATE over all frames. Beside them: COLMAP on the
same frames at its defaults (sequential matching; its global mapper beyond 250 frames, as pixio's), and the
trivial cameras (all at one place: their loop gap is the pairs' own offsets).

    python -m benchmarks.loop_closure --frames 250
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from heads.geometry import umeyama
from heads.metrics import trivial_cameras
from heads.recon.sfm import INCREMENTAL_UP_TO

from .common import emit, environment, run_timed
from .growth import there_and_back
from .recon3d import KITCHEN, score


def returns(truth: dict[str, np.ndarray], apart: int = 40, within: float = 0.15, angle: float = 20.0
            ) -> list[tuple[str, str]]:
    """Pairs of frames (names in video order) at least ``apart`` frames apart whose recorded cameras stand
    within ``within`` metres and ``angle`` degrees of each other: where the walk returns."""
    names = list(truth)
    c = np.stack([truth[n][:3, 3] for n in names])
    z = np.stack([truth[n][:3, 2] for n in names])
    near = (np.linalg.norm(c[:, None] - c[None], axis=-1) < within) & (z @ z.T > np.cos(np.radians(angle)))
    return [(names[i], names[j]) for i, j in zip(*np.nonzero(np.triu(near, apart)))]


def drift(poses: dict[str, np.ndarray], truth: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> dict:
    """Loop gap (mean error in metres of the offset between the two cameras of each pair, after aligning
    every camera to the truth) and the camera scores (ATE...)."""
    names = [n for n in truth if n in poses]
    s, R, t = umeyama(np.stack([poses[n][:3, 3] for n in names]), np.stack([truth[n][:3, 3] for n in names]))
    centre = {n: s * poses[n][:3, 3] @ R.T + t for n in names}
    gaps = [float(np.linalg.norm((centre[b] - centre[a]) - (truth[b][:3, 3] - truth[a][:3, 3])))
            for a, b in pairs if a in centre and b in centre]
    return {"loop_gap_m": round(float(np.mean(gaps)), 4) if gaps else None, "loop_pairs": len(gaps),
            **score(poses, truth)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--no-colmap", action="store_true", help="leave out COLMAP (about 6 minutes at 250 frames)")
    args = ap.parse_args()
    if not KITCHEN.exists():
        raise SystemExit(f"{KITCHEN} is missing: this benchmark needs ../shared/data")
    start = time.perf_counter()
    chosen = there_and_back(sorted(KITCHEN.glob("frame-*.color.jpg")), args.frames)
    names = [f"{i:05d}-{p.name}" for i, p in enumerate(chosen)]
    truth = {n: np.loadtxt(KITCHEN / p.name.replace("color.jpg", "pose.txt")) for n, p in zip(names, chosen)}
    pairs = returns(truth)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for n, p in zip(names, chosen):
            (folder / n).symlink_to(p.resolve())
        for run, flags in {"ours": [], "ours_loop_closure": ["--loop-closure"]}.items():
            seconds, peak, _, _ = run_timed([sys.executable, "-m", "pixio_cli", "recon3d", str(folder), "-o",
                                             str(Path(tmp) / run), "--cameras", "json", "--json", "-q", *flags])
            cams = json.loads((Path(tmp) / run / "cameras.json").read_text())["cameras"]
            rows[run] = {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2),
                         **drift({c["image"]: np.array(c["cam2world"]) for c in cams}, truth, pairs)}
            print(json.dumps({run: rows[run]}), file=sys.stderr, flush=True)
        if not args.no_colmap:
            how = "sequential" if args.frames <= INCREMENTAL_UP_TO else "global"
            seconds, peak, out, _ = run_timed([sys.executable, "-m", "benchmarks.growth", "--colmap", str(folder),
                                               str(Path(tmp) / "colmap"), how])
            poses = json.loads(out.strip().splitlines()[-1])["poses"]
            rows["colmap"] = {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2), "mapper":
                              "incremental" if how == "sequential" else "global",
                              **drift({k: np.array(v) for k, v in poses.items()}, truth, pairs)}
    origin = trivial_cameras(len(names))["origin"] + np.pad(np.random.default_rng(0).normal(size=(len(names), 3, 1))
                                                           * 1e-6, ((0, 0), (0, 1), (3, 0)))
    rows["trivial_origin"] = drift(dict(zip(names, origin)), truth, pairs)
    emit({"benchmark": "loop_closure", **environment(__import__("torch").device("cpu")), "frames": args.frames,
          "distinct_frames": len(set(chosen)), **rows, "seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    main()

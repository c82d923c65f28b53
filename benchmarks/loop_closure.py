"""Drift where the camera returns, with and without `--loop-closure`: `pixio recon3d` on the 7-Scenes walk there
and back (every 4th frame of the recorded sequence, then the same frames in reverse: a video whose camera
comes back along its path), default options otherwise.

Two numbers say how far the cameras drift. The *return gap*: the same image is seen on the way out and on the
way back, so its two cameras should be one; the mean distance between them (after the similarity that best
aligns all cameras to the recorded poses, so in metres). And the ATE against the recorded poses, over all
frames and over the way back alone. Beside them: COLMAP's global mapper on the same frames (sequential
matching, its defaults), and the trivial cameras (all at one place, whose return gap is 0 by construction
and whose ATE is the spread of the walk).

    python -m benchmarks.loop_closure --frames 500
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

from .common import emit, environment, run_timed
from .growth import there_and_back
from .recon3d import KITCHEN, score


def drift(poses: dict[str, np.ndarray], truth: dict[str, np.ndarray], source: dict[str, str]) -> dict:
    """Return gap (mean distance in metres between the cameras of one image seen twice, after aligning every
    camera to the truth) and ATE over all frames and over the second half (the way back)."""
    names = [n for n in truth if n in poses]
    s, R, t = umeyama(np.stack([poses[n][:3, 3] for n in names]), np.stack([truth[n][:3, 3] for n in names]))
    centre = {n: s * poses[n][:3, 3] @ R.T + t for n in names}
    first: dict[str, str] = {}
    gaps = []
    for n in names:  # names in video order
        if source[n] in first:
            gaps.append(float(np.linalg.norm(centre[n] - centre[first[source[n]]])))
        else:
            first[source[n]] = n
    back = names[len(names) // 2:]
    return {"return_gap_m": round(float(np.mean(gaps)), 4) if gaps else None, "returns": len(gaps),
            **score(poses, truth), "ate_way_back": score({n: poses[n] for n in back}, {n: truth[n] for n in back})
            .get("ate_mean")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--no-colmap", action="store_true", help="leave out COLMAP (about 8 minutes at 500 frames)")
    args = ap.parse_args()
    if not KITCHEN.exists():
        raise SystemExit(f"{KITCHEN} is missing: this benchmark needs ../shared/data")
    start = time.perf_counter()
    chosen = there_and_back(sorted(KITCHEN.glob("frame-*.color.jpg")), args.frames)
    names = [f"{i:05d}-{p.name}" for i, p in enumerate(chosen)]
    truth = {n: np.loadtxt(KITCHEN / p.name.replace("color.jpg", "pose.txt")) for n, p in zip(names, chosen)}
    source = {n: p.name for n, p in zip(names, chosen)}
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
                         **drift({c["image"]: np.array(c["cam2world"]) for c in cams}, truth, source)}
            print(json.dumps({run: rows[run]}), file=sys.stderr, flush=True)
        if not args.no_colmap:
            seconds, peak, out, _ = run_timed([sys.executable, "-m", "benchmarks.growth", "--colmap", str(folder),
                                               str(Path(tmp) / "colmap"), "global"])
            poses = json.loads(out.strip().splitlines()[-1])["poses"]
            rows["colmap_global"] = {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2),
                                     **drift({k: np.array(v) for k, v in poses.items()}, truth, source)}
    origin = trivial_cameras(len(names))["origin"] + np.pad(np.random.default_rng(0).normal(size=(len(names), 3, 1))
                                                           * 1e-6, ((0, 0), (0, 1), (3, 0)))
    rows["trivial_origin"] = drift(dict(zip(names, origin)), truth, source)
    emit({"benchmark": "loop_closure", **environment(__import__("torch").device("cpu")), "frames": args.frames,
          "distinct_frames": len(set(chosen)), **rows, "seconds": round(time.perf_counter() - start, 1)})


if __name__ == "__main__":
    main()

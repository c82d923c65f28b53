"""How cost grows with the work: `pixio recon3d` against COLMAP at 25 to 250 frames, and `pixio extract` against
the plain transformers script at 1x, 4x and 16x the images.

recon3d: the first N of the 250 recorded 7-Scenes frames in ``../shared`` (every 4th frame of the walk), default
options, against pycolmap's SfM at its defaults (exhaustive matching up to 50 frames, sequential beyond, as a
user would choose), each a fresh process in one invocation: wall time, peak memory and ATE against the
recorded poses. Longer sequences: ``benchmarks.long_video`` (a real 1000-frame video, no frame repeated).
extract: ``benchmarks.extract_e2e`` at the bundled encoder's size (t16), the same photos repeated.

    python -m benchmarks.growth --frames 25,50,100,250 --images 24,96,384
    python -m benchmarks.growth --frames 250 --images "" --no-colmap   # pixio alone, e.g. after a change
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import emit, environment, run_timed
from .recon3d import KITCHEN, colmap_poses, score


def colmap_growth(folder: str, out: str, how: str) -> None:
    """:func:`benchmarks.recon3d.colmap_poses` (COLMAP's defaults; ``how``: exhaustive, sequential or global, which
    is sequential matching and the global mapper) as JSON, in its own process to be timed."""
    poses, _, _ = colmap_poses(folder, out, how != "exhaustive", "global" if how == "global" else "incremental")
    print(json.dumps({"poses": {k: v.tolist() for k, v in poses.items()}}))


def there_and_back(frames: list[Path], n: int) -> list[Path]:
    """The first ``n`` frames of the recorded walk, walked there and back as often as ``n`` needs: a video
    whose camera returns to where it was (the frames at the turns are not repeated), for the drift benchmark
    (benchmarks.loop_closure)."""
    if len(frames) < 2:
        return frames[:n]
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(n)]


def recon3d_growth(counts: list[int], with_colmap: bool = True) -> list[dict]:
    frames = sorted(KITCHEN.glob("frame-*.color.jpg"))
    if max(counts) > len(frames):
        raise SystemExit(f"{KITCHEN} holds {len(frames)} frames; for longer sequences run benchmarks.long_video")
    rows = []
    for n in counts:
        chosen = frames[:n]
        names = [f"{i:05d}-{p.name}" for i, p in enumerate(chosen)]  # a video's frames: one file each
        truth = {name: np.loadtxt(KITCHEN / p.name.replace("color.jpg", "pose.txt")) for name, p in zip(names, chosen)}
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "images"
            folder.mkdir()
            for name, p in zip(names, chosen):  # colour frames only: not the RGB-D folder (known depth)
                (folder / name).symlink_to(p.resolve())
            seconds, peak, out, _ = run_timed([sys.executable, "-m", "pixio_cli", "recon3d", str(folder), "-o",
                                               str(Path(tmp) / "ours"), "--cameras", "json", "--json", "-q"])
            cams = json.loads((Path(tmp) / "ours" / "cameras.json").read_text())["cameras"]
            stage_seconds = json.loads(out.strip().splitlines()[-1])["seconds"]  # where the time went
            ours = {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2),
                    **score({c["image"]: np.array(c["cam2world"]) for c in cams}, truth), "stages": stage_seconds}
            row = {"frames": n, "distinct_frames": len(set(chosen)), "ours": ours}
            if not with_colmap:
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                continue
            how = "exhaustive" if n <= 50 else "sequential"
            seconds, peak, out, _ = run_timed([sys.executable, "-m", "benchmarks.growth", "--colmap", str(folder),
                                               str(Path(tmp) / "colmap"), how])
            poses = json.loads(out.strip().splitlines()[-1])["poses"]
            colmap = {"seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2),
                      "matching": "exhaustive" if how == "exhaustive" else "sequential",
                      "mapper": "global" if how == "global" else "incremental",
                      **score({k: np.array(v) for k, v in poses.items()}, truth)}
        rows.append({**row, "colmap": colmap})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def extract_growth(counts: list[int]) -> list[dict]:
    rows = []
    for n in counts:
        _, _, out, _ = run_timed([sys.executable, "-m", "benchmarks.extract_e2e", "--size", "t16", "--images", str(n),
                                  "--repeat", "1"])
        r = json.loads(out.strip().splitlines()[-1])
        rows.append({"images": n, "ours_s": r["ours_s"], "reference_s": r["reference_s"], "ratio": r["ratio"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="25,50,100,250")
    ap.add_argument("--images", default="24,96,384")
    ap.add_argument("--no-colmap", action="store_true", help="pixio alone (e.g. to time it again after a change)")
    ap.add_argument("--colmap", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.colmap:
        return colmap_growth(*args.colmap)
    if not KITCHEN.exists():
        raise SystemExit(f"{KITCHEN} is missing: this benchmark needs ../shared/data")
    start = time.perf_counter()
    import torch

    result = {"benchmark": "growth", **environment(torch.device("cpu")),
              "recon3d": recon3d_growth([int(v) for v in args.frames.split(",")], with_colmap=not args.no_colmap),
              "extract": extract_growth([int(v) for v in args.images.split(",") if v]),
              "seconds": round(time.perf_counter() - start, 1)}
    emit(result)


if __name__ == "__main__":
    main()

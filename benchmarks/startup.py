"""Start-up: how fast the command line answers, and where one small image's time goes.

Reference points measured in the same run: the cost of `import torch` in a
fresh process, and of importing everything `pixio extract` needs. Each command
runs ``--repeat`` times; the best time counts. ``ratio`` (extract) and
``ratio_depth`` are `import torch`'s time over the command's: 0.67 or more is
one image within 1.5x `import torch`.

    python -m benchmarks.startup
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .common import emit, environment

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "samples" / "photos" / "beagle.jpg"


def best(cmd: list[str], repeat: int, ok: tuple[int, ...] = (0,)) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
        times.append(time.perf_counter() - start)
        if rc not in ok:
            raise SystemExit(f"{' '.join(cmd)} exited {rc}")
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    py, pixio = sys.executable, [sys.executable, "-m", "pixio_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        r = {
            "help_s": best([*pixio, "--help"], args.repeat),
            "usage_error_s": best([*pixio, "extract", "--bogus"], args.repeat, ok=(2,)),
            "import_torch_s": best([py, "-c", "import torch"], args.repeat),
            "import_engine_s": best([py, "-c", "import torch, cv2, pixio_cli.engine, pixio_cli.encoder"], args.repeat),
            "extract_one_s": best([*pixio, "extract", str(PHOTO), "-o", f"{tmp}/e", "-q", "--overwrite"], args.repeat),
            "depth_one_s": best([*pixio, "depth", str(PHOTO), "-o", f"{tmp}/d.png", "-q"], args.repeat),
            "extract_one_fp32_s": best([*pixio, "extract", str(PHOTO), "-o", f"{tmp}/e32", "-q", "--overwrite",
                                        "--precision", "fp32"], args.repeat),
            "depth_one_fp32_s": best([*pixio, "depth", str(PHOTO), "-o", f"{tmp}/d32.png", "-q", "--precision", "fp32"],
                                     args.repeat),
        }
    r = {k: round(v, 3) for k, v in r.items()}
    emit({"benchmark": "startup", **environment(torch.device("cpu")), **r,
          "reference": "import torch in a fresh process",
          "ratio": round(r["import_torch_s"] / r["extract_one_s"], 3),
          "ratio_depth": round(r["import_torch_s"] / r["depth_one_s"], 3),
          "ratio_fp32": round(r["import_torch_s"] / r["extract_one_fp32_s"], 3),
          "ratio_depth_fp32": round(r["import_torch_s"] / r["depth_one_fp32_s"], 3),
          "imports_beyond_torch_s": round(r["import_engine_s"] - r["import_torch_s"], 3)})


if __name__ == "__main__":
    main()

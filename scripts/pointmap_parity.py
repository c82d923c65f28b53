"""Compare our point-map model with MapAnything's own outputs (written by ../shared/tools/mapanything_reference.py).

usage: python scripts/pointmap_parity.py REF_DIR [--intrinsics fx,fy,cx,cy] [--poses P.npy] [--depth D.npy] IMG...

Loads REF_DIR/model.safetensors (MapAnything's key layout) with pixio's loader, runs it in float32 on CPU on
the same images (read and normalised as the harness does), and prints, per output, the worst absolute
difference relative to the largest reference value; exits 1 when any exceeds 1e-3. With --intrinsics the
run with known intrinsics is compared with REF_DIR/reference_intrinsics.npz too; with --poses (N, 4, 4)
camera-to-world in metres and/or --depth (N, H, W) z-depths in metres (0 unknown), as given to the harness,
the runs with those inputs with reference_poses.npz, reference_depth.npz and reference_all.npz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heads.pointmap.cameras import intrinsics, rays_from_intrinsics  # noqa: E402
from heads.pointmap.checkpoint import load_pointmap  # noqa: E402
from pixio_cli.images import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

TOLERANCE = 1e-3


def compare(out, ref: dict) -> float:
    got = {"pts3d": out.pts3d[0], "depth_z": out.depth_z[0], "conf": out.conf[0], "cam2world": out.cam2world[0],
           "K": intrinsics(out.rays[0].numpy()), "scale": out.scale[0]}
    worst = 0.0
    for name, value in got.items():
        value = np.asarray(value, np.float64)
        rel = float(np.abs(value - ref[name]).max() / np.abs(ref[name]).max())
        worst = max(worst, rel)
        print(f"  {name:10s} {rel:.2e}")
    return worst


def main(argv: list[str]) -> int:
    ref_dir, rest = Path(argv[0]), argv[1:]
    K = poses = depth = None
    while rest and rest[0] in ("--intrinsics", "--poses", "--depth"):
        if rest[0] == "--intrinsics":
            fx, fy, cx, cy = (float(v) for v in rest[1].split(","))
            K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float32)
        elif rest[0] == "--poses":
            poses = torch.tensor(np.load(rest[1]), dtype=torch.float32)[None]
        else:
            depth = torch.tensor(np.load(rest[1]), dtype=torch.float32)[None]
        rest = rest[2:]
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    views = [((cv2.imread(p)[:, :, ::-1] / 255.0 - mean) / std).transpose(2, 0, 1) for p in rest]
    x = torch.tensor(np.stack(views)[None], dtype=torch.float32)
    model = load_pointmap(str(ref_dir / "model.safetensors"))
    with torch.no_grad():
        print("images only (worst |ours - MapAnything| / max |MapAnything|):")
        worst = compare(model(x), np.load(ref_dir / "reference.npz"))
        if K is not None:
            h, w = x.shape[-2:]
            rays = rays_from_intrinsics(K, h, w)[None, None].expand(1, x.shape[1], h, w, 3)
            print("with known intrinsics:")
            worst = max(worst, compare(model(x, rays), np.load(ref_dir / "reference_intrinsics.npz")))
            depth_ray = None if depth is None else depth * (rays / rays[..., 2:]).norm(dim=-1)
            for name, kwargs in (("poses", {"cam2world": poses}), ("depth", {"depth_ray": depth_ray}),
                                 ("all", {"cam2world": poses, "depth_ray": depth_ray})):
                if all(v is not None for v in kwargs.values()):
                    print(f"with known intrinsics and {name}:")
                    worst = max(worst, compare(model(x, rays, **kwargs), np.load(ref_dir / f"reference_{name}.npz")))
    print(f"worst {worst:.2e} (tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Our encoder against the official repository's own `PixioViT` (facebookresearch/pixio), run from its code.

The tests compare with transformers and with our transcript of the official forward; this script runs the
official module itself: it builds `PixioViT` at the b16 shape with random weights, saves its state dict as
an official `.pth`, loads that with `pixio_cli.checkpoints.load_encoder`, and compares every block's tokens
(raw and normed, fp32) on random images at the sizes the README names. The official code is read at run time
from the folder `../shared/tools/official.sh` unpacks (fetch github:facebookresearch/pixio first); nothing of
it is copied here. Writes `benchmarks/results/official-parity.json`, which docs/models.md renders.

    python scripts/official_parity.py "$(../shared/tools/official.sh)"
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "official-parity.json"
SIZES = [(256, 256), (320, 448), (160, 96)]  # (H, W)


def official_model(folder: Path, seed: int = 0) -> torch.nn.Module:
    """The official PixioViT at the b16 shape (its `pixio_vitb16` constructor's arguments), random weights
    (every parameter drawn, so that no zero-initialised token hides a difference)."""
    sys.path.insert(0, str(folder / "pixio"))
    import pixio as official  # the official repository's pixio/pixio.py

    model = official.PixioViT(img_size=256, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
                              n_cls_tokens=8, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # layer norms' scales about 1, the rest about 0
            p.copy_(torch.randn_like(p) * 0.02 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model.eval()


def compare(folder: Path) -> dict:
    from pixio_cli.checkpoints import load_encoder

    theirs = official_model(folder)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.pth"
        torch.save(theirs.state_dict(), path)
        ours = load_encoder(str(path)).eval()
    blocks = list(range(12))
    rows = []
    for h, w in SIZES:
        torch.manual_seed(1)
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            ref = theirs(x, block_ids=blocks)
            raw = ours.forward_blocks(x, blocks, norm=False)
            normed = ours.forward_blocks(x, blocks, norm=True)
        diff_raw = max(float((torch.cat([r["cls_tokens"], r["patch_tokens"]], 1) - a).abs().max())
                       for r, a in zip(ref, raw))
        diff_norm = max(float((torch.cat([r["cls_tokens_norm"], r["patch_tokens_norm"]], 1) - b).abs().max())
                        for r, b in zip(ref, normed))
        rows.append({"size": f"{h}x{w}", "max_abs_diff_raw": diff_raw, "max_abs_diff_norm": diff_norm})
    return {"shape": "b16 (768 wide, 12 blocks, 12 heads, 8 class tokens)", "precision": "fp32", "blocks": 12,
            "sizes": rows, "max_abs_diff": max(max(r["max_abs_diff_raw"], r["max_abs_diff_norm"]) for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("official", type=Path, help="the folder official.sh prints")
    args = ap.parse_args()
    if not (args.official / "pixio" / "pixio.py").exists():
        raise SystemExit(f"{args.official} holds no pixio/pixio.py: run ../shared/tools/official.sh first")
    sys.path.insert(0, str(ROOT))
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "pixio_commit": commit,
              **compare(args.official)}
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Make the bundled fp16 weight files from training outputs (how pixio_cli/weights/* were made).

    python scripts/bundle_weights.py encoder runs/tiny pixio_cli/weights/pixio-tiny.safetensors --note "..."
    python scripts/bundle_weights.py head runs/depth.safetensors pixio_cli/weights/depth-tiny-7scenes.safetensors
"""

from __future__ import annotations

import argparse
import json


from pixio_cli.checkpoints import read_checkpoint, save_safetensors
from pretrain.mae import load_mae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["encoder", "head"])
    ap.add_argument("source")
    ap.add_argument("dest")
    ap.add_argument("--note", default="", help="provenance text (command, data)")
    args = ap.parse_args()
    if args.kind == "encoder":  # a pretrain run: encoder and decoder, so curation can use it too
        mae = load_mae(args.source)
        meta = {"pixio_format": "mae", "encoder_config": mae.cfg.to_dict(), "mae_config": mae.mae_cfg.to_dict(),
                "provenance": {"note": args.note}}
        tensors = {k: v.half() for k, v in mae.state_dict().items()}
    else:  # a head checkpoint: same metadata, fp16 tensors
        ckpt = read_checkpoint(args.source)
        meta = dict(ckpt.metadata)
        meta.setdefault("provenance", {})["note"] = args.note
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in ckpt.tensors.items()}
    save_safetensors(tensors, args.dest, meta)
    size = sum(v.numel() * v.element_size() for v in tensors.values())
    print(json.dumps({"dest": args.dest, "megabytes": round(size / 2**20, 2)}))


if __name__ == "__main__":
    main()

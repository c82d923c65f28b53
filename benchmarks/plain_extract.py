"""The simplest extraction script a user could write: the reference of `benchmarks.extract_e2e`.

transformers.PixioModel in fp32, OpenCV decoding in the main process, a
256x256 resize, ImageNet normalisation, batches of 16, one ``np.savez`` per
image. Run as its own process so its start-up is timed like ours.

    python -m benchmarks.plain_extract MODEL_DIR LIST.txt OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from transformers import PixioModel


def main() -> None:
    model_dir, listing, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    model = PixioModel.from_pretrained(model_dir).eval()
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    paths = [line.strip() for line in open(listing) if line.strip()]
    for i in range(0, len(paths), 16):
        chunk = paths[i:i + 16]
        imgs = []
        for p in chunk:
            rgb = cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)
            rgb = cv2.resize(rgb, (256, 256), interpolation=cv2.INTER_AREA)
            imgs.append((rgb.astype(np.float32) / 255 - mean) / std)
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
        with torch.no_grad():
            tokens = model(pixel_values=x).last_hidden_state
        for p, t in zip(chunk, tokens.numpy()):
            np.savez(out / (Path(p).stem + ".npz"), cls_tokens=t[:8], patch_tokens=t[8:].reshape(16, 16, -1))


if __name__ == "__main__":
    main()

"""Sliding-window inference: overlapping crops, outputs averaged where they overlap."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _starts(size: int, crop: int, stride: int) -> list[int]:
    starts = list(range(0, max(1, size - crop + 1), stride))
    if starts[-1] + crop < size:
        starts.append(size - crop)  # the last window ends at the border
    return starts


def sliding_window(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, crop: int = 256,
                   stride: int | None = None, max_batch: int = 16) -> torch.Tensor:
    """Run ``fn`` on ``crop`` x ``crop`` windows of ``x`` (B, 3, H, W) and average the overlaps.

    ``fn`` maps (N, 3, crop, crop) to (N, crop, crop) or (N, C, crop, crop); the
    stride defaults to 2/3 of the crop (the official 170 for 256). Images
    smaller than a window are padded at the bottom/right and cropped back.
    """
    stride = stride or max(1, crop * 2 // 3)
    b, _, h, w = x.shape
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    hh, ww = x.shape[-2:]
    boxes = [(y, x0) for y in _starts(hh, crop, stride) for x0 in _starts(ww, crop, stride)]
    total = count = None
    for i in range(0, len(boxes), max(1, max_batch // b)):
        part = boxes[i:i + max(1, max_batch // b)]
        windows = torch.cat([x[..., y:y + crop, x0:x0 + crop] for y, x0 in part])
        outs = fn(windows)
        squeeze = outs.ndim == 3
        outs = outs.unsqueeze(1) if squeeze else outs
        if total is None:
            total = torch.zeros(b, outs.shape[1], hh, ww, device=x.device, dtype=torch.float32)
            count = torch.zeros(1, 1, hh, ww, device=x.device)
        for j, (y, x0) in enumerate(part):
            total[..., y:y + crop, x0:x0 + crop] += outs[j * b:(j + 1) * b].float()
            count[..., y:y + crop, x0:x0 + crop] += 1
    out = (total / count)[..., :h, :w]
    return out[:, 0] if squeeze else out

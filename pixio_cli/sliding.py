"""Sliding-window inference: overlapping crops blended without seams.

Each window's output is weighted by a ramp that falls towards the window's
edges inside the image (not at the image's own borders) and leaves out the
window's outermost pixels there, where a dense head's own border effects are,
so where windows overlap the blend passes smoothly from one to the next
over the whole overlap instead of jumping at a window's edge. The image's own
borders would show those border effects too (a frame a few pixels wide), so
:func:`reflect_border` lets a caller mirror the image outwards first and crop
the prediction back. With ``align_scale`` (depth), each window's depth level is first
brought into agreement with its neighbours': one log-scale per window, fitted to
the overlaps by least squares with their mean held at zero, so the scene's
overall level is the windows' average, as a plain average of the windows gives.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _starts(size: int, crop: int, stride: int) -> list[int]:
    starts = list(range(0, max(1, size - crop + 1), stride))
    if starts[-1] + crop < size:
        starts.append(size - crop)  # the last window ends at the border
    return starts


def window_borders(size: int, crop: int, stride: int | None = None) -> list[int]:
    """The positions along one side (of ``size`` pixels) where a window begins or ends inside the image:
    where a plain average of the windows can jump."""
    stride = stride or max(1, crop * 2 // 3)
    if size <= crop:
        return []
    edges = set()
    for s in _starts(size, crop, stride):
        edges.update(p for p in (s, s + crop) if 0 < p < size)
    return sorted(edges)


def _ramp(length: int, start: int, size: int, fade: int, device) -> torch.Tensor:
    """Weights along one side of a window at ``start``: 1 inside; towards an edge that lies inside the
    image, (almost) nothing over the outer tenth of ``fade`` pixels, where a window's own border effects
    sit, then a raised cosine up to 1. Another window covers that edge in full, so no pixel goes without."""
    w = torch.ones(length, device=device)
    if fade <= 0:
        return w
    skip = fade // 10  # the worst border pixels; the rest of the overlap is the cross-fade
    t = (torch.arange(fade, device=device, dtype=torch.float32) - skip + 0.5).clamp_min(0) / (fade - skip)
    rise = 1e-6 + (1 - 1e-6) * 0.5 * (1 - torch.cos(torch.pi * t))
    if start > 0:
        w[:fade] = rise
    if start + length < size:
        w[-fade:] = torch.minimum(w[-fade:], rise.flip(0))
    return w


def _log_scales(outs: list[torch.Tensor], boxes: list[tuple[int, int]], crop: int, h: int, w: int) -> torch.Tensor:
    """(B, n windows) log-scales that make overlapping windows' depths agree (mean zero per image), over
    the image's own pixels (``h`` x ``w``: not the padding of an image smaller than a window)."""
    n, b = len(boxes), outs[0].shape[0]
    rows, rhs = [], []
    for i in range(n):
        for j in range(i + 1, n):
            (yi, xi), (yj, xj) = boxes[i], boxes[j]
            y0, y1, x0, x1 = max(yi, yj), min(min(yi, yj) + crop, h), max(xi, xj), min(min(xi, xj) + crop, w)
            if y1 - y0 < 2 or x1 - x0 < 2:
                continue
            a = outs[i][:, :, y0 - yi:y1 - yi, x0 - xi:x1 - xi].clamp_min(1e-6).log()
            c = outs[j][:, :, y0 - yj:y1 - yj, x0 - xj:x1 - xj].clamp_min(1e-6).log()
            row = torch.zeros(n)
            row[i], row[j] = 1.0, -1.0
            rows.append(row)
            rhs.append((c - a).flatten(1).median(1).values)  # s_i - s_j = median log ratio, per image
    if not rows:
        return torch.zeros(b, n)
    A = torch.cat([torch.stack(rows), torch.ones(1, n)])  # the last row holds the mean at zero
    B = torch.cat([torch.stack(rhs, 1).cpu().float(), torch.zeros(b, 1)], 1)  # (b, pairs + 1)
    return torch.linalg.lstsq(A, B.T).solution.T  # (b, n)


def reflect_border(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, pad: int) -> torch.Tensor:
    """``fn`` on ``x`` (B, C, H, W) mirrored outwards by ``pad`` pixels on every side (less where the image
    is smaller), cropped back to (H, W): the image's border pixels then lie inside what ``fn`` sees, away
    from a dense head's own border effects (its zero padding)."""
    h, w = x.shape[-2:]
    p = min(pad, h - 1, w - 1)
    if p <= 0:
        return fn(x)
    out = fn(F.pad(x, (p, p, p, p), mode="reflect"))
    return out[..., p:p + h, p:p + w]


def sliding_window(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, crop: int = 256,
                   stride: int | None = None, max_batch: int = 16, align_scale: bool = False) -> torch.Tensor:
    """Run ``fn`` on ``crop`` x ``crop`` windows of ``x`` (B, 3, H, W) and blend the overlaps without
    seams (see the module). ``fn`` maps (N, 3, crop, crop) to (N, crop, crop) or (N, C, crop, crop); the
    stride defaults to 2/3 of the crop (the official 170 for 256). Images smaller than a window are
    padded at the bottom/right and cropped back."""
    stride = stride or max(1, crop * 2 // 3)
    b, _, h, w = x.shape
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    hh, ww = x.shape[-2:]
    boxes = [(y, x0) for y in _starts(hh, crop, stride) for x0 in _starts(ww, crop, stride)]
    fade = crop - stride
    align = align_scale and len(boxes) > 1
    held: list[torch.Tensor] = []  # every window's output, only to align their levels (depth: one channel)
    total = weight = None
    squeeze = False

    def blend(box: tuple[int, int], o: torch.Tensor) -> None:
        y, x0 = box
        wt = torch.outer(_ramp(crop, y, size=hh, fade=fade, device=x.device), _ramp(crop, x0, size=ww, fade=fade,
                                                                                    device=x.device))[None, None]
        total[..., y:y + crop, x0:x0 + crop] += o * wt
        weight[..., y:y + crop, x0:x0 + crop] += wt

    for i in range(0, len(boxes), max(1, max_batch // b)):
        part = boxes[i:i + max(1, max_batch // b)]
        got = fn(torch.cat([x[..., y:y + crop, x0:x0 + crop] for y, x0 in part]))
        squeeze = got.ndim == 3
        got = (got.unsqueeze(1) if squeeze else got).float()
        if total is None:
            total = torch.zeros(b, got.shape[1], hh, ww, device=x.device, dtype=torch.float32)
            weight = torch.zeros(1, 1, hh, ww, device=x.device)
        for j, box in enumerate(part):
            if align:
                held.append(got[j * b:(j + 1) * b])
            else:  # blended as they come: memory of one output, not of every window
                blend(box, got[j * b:(j + 1) * b])
    if align:
        scales = _log_scales(held, boxes, crop=crop, h=h, w=w).exp().to(x.device)  # (b, n)
        for k, (box, o) in enumerate(zip(boxes, held)):
            blend(box, o * scales[:, k].view(b, 1, 1, 1))
    out = (total / weight)[..., :h, :w]
    return out[:, 0] if squeeze else out

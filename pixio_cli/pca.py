"""Principal components of dense features as an RGB picture."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def pca_rgb(patch_tokens: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
    """First three principal components of (h, w, D) tokens as RGB uint8 at ``out_hw``.

    Each component is stretched between its 1st and 99th percentile so that a
    few outlier patches do not wash out the picture; the map is upsampled
    bicubically over the image.
    """
    h, w, d = patch_tokens.shape
    x = patch_tokens.reshape(-1, d).double()
    x = x - x.mean(0, keepdim=True)
    k = min(3, x.shape[0], d)
    # torch.linalg.svd is exact and fast enough at these sizes (a few thousand x D)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    comps = (x @ vh[:k].T).float()
    # the SVD's sign of each component is arbitrary (and the centred components sum to zero, so their sum
    # cannot choose it): turn each so its long tail, the rarer side, is bright, and the colours hold
    # between runs, precisions and images
    signs = torch.where((comps.double() ** 3).sum(0, keepdim=True) < 0, -1.0, 1.0)
    comps = comps * signs.float()
    if k < 3:
        comps = torch.cat([comps, torch.zeros(comps.shape[0], 3 - k)], 1)
    lo = torch.quantile(comps, 0.01, dim=0, keepdim=True)
    hi = torch.quantile(comps, 0.99, dim=0, keepdim=True)
    comps = ((comps - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    small = (comps.reshape(h, w, 3).numpy() * 255).astype(np.float32)
    big = cv2.resize(small, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(big + 0.5, 0, 255).astype(np.uint8)

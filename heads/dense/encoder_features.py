"""The official frozen-encoder features for dense heads."""

from __future__ import annotations

import torch

from pixio_cli.encoder import PixioEncoder


def dpt_blocks(depth: int) -> list[int]:
    """Blocks L//4*(i+1)-1 for i in 0..3 (H: 7, 15, 23, 31)."""
    return [depth // 4 * (i + 1) - 1 for i in range(4)]


def dense_features(encoder: PixioEncoder, x: torch.Tensor, blocks: list[int]) -> list[torch.Tensor]:
    """For each block: normed patch tokens concatenated with the mean normed CLS token, as (B, 2D, h, w)."""
    h, w = x.shape[-2] // encoder.patch_size, x.shape[-1] // encoder.patch_size
    n = encoder.n_cls_tokens
    out = []
    for t in encoder.forward_blocks(x, blocks, norm=True):
        patches, cls = t[:, n:], t[:, :n].mean(1, keepdim=True).expand(-1, h * w, -1)
        feat = torch.cat([patches, cls], dim=2)
        out.append(feat.transpose(1, 2).reshape(x.shape[0], -1, h, w))
    return out

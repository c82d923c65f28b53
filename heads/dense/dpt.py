"""The one DPT head (depth, segmentation, point maps), laid out as the official Pixio evaluation head.

Module names follow the official checkpoint (``projects``, ``resize_layers``,
``scratch.layer{i}_rn``, ``scratch.refinenet{i}``, ``scratch.output_conv``), so
its head weights load as they are. MapAnything's DPT feature head is the same
network with two differences, selected by ``style="mapanything"``: the deepest
level is upsampled 2x and cropped (not resized) to the next level's grid, and
that level has no (unused) skip unit; its output stage is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """ReLU-conv-ReLU-conv with a skip (no BatchNorm, as the official head)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet-style fusion: add the refined skip, refine, upsample (bilinear, align_corners), 1x1 conv."""

    def __init__(self, features: int, skip: bool = True) -> None:
        super().__init__()
        if skip:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        up = {"size": size} if size is not None else {"scale_factor": 2}
        return self.out_conv(F.interpolate(x, **up, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    """Four token maps (B, C_in, h, w) -> (B, n_out, 8h, 8w); the caller upsamples to the image.

    ``in_channels``: one width for all four maps, or one per map. ``n_out=None``
    leaves out the output convolutions and returns the fused features (B, features, 8h, 8w).
    """

    def __init__(self, in_channels: int | Sequence[int], n_out: int | None, features: int = 256,
                 out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024), style: str = "dpt") -> None:
        super().__init__()
        if style not in ("dpt", "mapanything"):
            raise ValueError(f"unknown DPT style {style!r}")
        self.crop_top = style == "mapanything"
        ins = [in_channels] * 4 if isinstance(in_channels, int) else list(in_channels)
        self.projects = nn.ModuleList(nn.Conv2d(i, c, 1) for i, c in zip(ins, out_channels))
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for i, c in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features, skip=not (self.crop_top and i == 4)))
        if n_out is not None:
            self.scratch.output_conv = nn.Sequential(
                nn.Conv2d(features, features, 3, padding=1), nn.ReLU(True), nn.Conv2d(features, n_out, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        s = self.scratch
        l1, l2, l3, l4 = (s_rn(resize(proj(f))) for f, proj, resize, s_rn in zip(
            feats, self.projects, self.resize_layers, (s.layer1_rn, s.layer2_rn, s.layer3_rn, s.layer4_rn)))
        if self.crop_top:  # the deepest grid is ceil(h/2): 2x is h or h+1
            p = s.refinenet4(l4)[:, :, : l3.shape[2], : l3.shape[3]]
        else:
            p = s.refinenet4(l4, size=l3.shape[2:])
        p = s.refinenet3(p, l3, size=l2.shape[2:])
        p = s.refinenet2(p, l2, size=l1.shape[2:])
        p = s.refinenet1(p, l1)
        return s.output_conv(p) if hasattr(s, "output_conv") else p


class LinearHead(nn.Sequential):
    """BatchNorm2d then a 1x1 conv on the last block's features (the official linear probe, same keys)."""

    def __init__(self, in_channels: int, n_out: int) -> None:
        super().__init__(nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, n_out, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(feats[-1])

"""The Pixio ViT encoder, built from pre-norm transformer blocks (:mod:`pixio_cli.vit`, timm's layout).

Parameter names follow the official checkpoints (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.{i}.*``, ``norm``), so an official ``.pth`` state
dict loads strictly and anything we train exports back to that layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import UsageError
from .vit import Block, PatchEmbed


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of a Pixio encoder. ``img_size`` is the size its position embedding was trained at."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    n_cls_tokens: int = 8
    img_size: int = 256
    in_chans: int = 3

    @property
    def grid(self) -> int:
        """Patches a side at ``img_size``."""
        return self.img_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


# Official sizes from DESIGN.md; t16 and s16 are ours (no public weights).
SIZES: dict[str, EncoderConfig] = {
    "t16": EncoderConfig(192, 12, 3),
    "s16": EncoderConfig(384, 12, 6),
    "b16": EncoderConfig(768, 12, 12),
    "l16": EncoderConfig(1024, 24, 16),
    "h16": EncoderConfig(1280, 32, 16),
    "1b16": EncoderConfig(1536, 48, 24),
    "5b16": EncoderConfig(3072, 48, 32),
}


def size_config(size: str) -> EncoderConfig:
    """Config of a named size (``b16``, ``vitb16`` and ``pixio-vitb16`` all work)."""
    key = size.lower().removeprefix("pixio-").removeprefix("pixio_").removeprefix("vit")
    if key not in SIZES:
        raise UsageError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[key]


def size_name(cfg: EncoderConfig) -> str | None:
    """Name of the preset with the width, depth and patch of ``cfg``, if any."""
    for name, preset in SIZES.items():
        if (preset.embed_dim, preset.depth, preset.patch_size) == (cfg.embed_dim, cfg.depth, cfg.patch_size):
            return name
    return None


def resize_pos_embed(patch_pos: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, G*G, D) patch position embedding to (1, H*W, D) as the official code does.

    Bicubic, align_corners=False and no antialias: timm's resampler antialiases by
    default, which changes the numbers when the grid shrinks.
    """
    n, dim = patch_pos.shape[1], patch_pos.shape[2]
    g = int(round(n ** 0.5))
    h, w = grid_hw
    if (g, g) == (h, w):
        return patch_pos
    grid = patch_pos.reshape(1, g, g, dim).permute(0, 3, 1, 2)
    # Interpolate in fp32: bicubic in bf16 drifts visibly from the official numbers.
    grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False)
    return grid.to(patch_pos.dtype).permute(0, 2, 3, 1).reshape(1, h * w, dim)


class PixioEncoder(nn.Module):
    """Pixio ViT: 8 CLS tokens with their own position embeddings, pre-norm blocks."""

    def __init__(self, cfg: EncoderConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_cls_tokens = cfg.n_cls_tokens
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, cfg.n_cls_tokens, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.n_cls_tokens + cfg.grid**2, cfg.embed_dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        rates = [drop_path * i / max(1, cfg.depth - 1) for i in range(cfg.depth)]  # linear, as timm/MAE
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, drop_path=rates[i])
            for i in range(cfg.depth))
        self.norm = norm(cfg.embed_dim)
        self.grad_checkpointing = False

    @property
    def depth(self) -> int:
        """The number of transformer blocks."""
        return len(self.blocks)

    def init_weights(self) -> None:
        """The official MAE initialisation (xavier linears, N(0, .02) tokens)."""
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens (B, H*W, D) and CLS tokens (B, n_cls, D), both with position embeddings."""
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise UsageError(f"image size {w}x{h} is not divisible by the patch size {p}")
        patch_pos = resize_pos_embed(self.pos_embed[:, self.n_cls_tokens:], (h // p, w // p))
        patches = self.patch_embed(x) + patch_pos
        cls = (self.cls_token + self.pos_embed[:, : self.n_cls_tokens]).expand(x.shape[0], -1, -1)
        return patches, cls

    def run_block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``i`` on tokens ``x`` (B, N, D); recomputed in the backward pass when gradient checkpointing is on."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.blocks[i], x, use_reentrant=False)
        return self.blocks[i](x)

    def forward_blocks(self, x: torch.Tensor, blocks: Sequence[int], norm: bool = True,
                       keep: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Tokens (B, n_cls + H*W, D) after each block in ``blocks`` (0-based, negative allowed).

        With ``norm`` the final LayerNorm is applied to each output (the official
        ``*_norm`` features); without it the raw block outputs are returned.
        Blocks after the last requested one are not run. ``keep`` (B, n_keep)
        names the only patches that go in, after the CLS tokens: the masked
        encoder of pretraining and distillation.
        """
        wanted = sorted({b % self.depth for b in blocks}) if blocks else []
        for b in blocks:
            if not -self.depth <= b < self.depth:
                raise UsageError(f"block {b} does not exist: the encoder has {self.depth} blocks (0..{self.depth - 1})")
        patches, cls = self.embed(x)
        if keep is not None:
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        t = torch.cat([cls, patches], dim=1)
        out: dict[int, torch.Tensor] = {}
        for i in range(wanted[-1] + 1 if wanted else 0):
            t = self.run_block(i, t)
            if i in wanted:
                out[i] = self.norm(t) if norm else t
        return [out[b % self.depth] for b in blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normed tokens of the last block, (B, n_cls + H*W, D)."""
        return self.forward_blocks(x, [-1], norm=True)[0]

    def split(self, tokens: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Split tokens into CLS (B, n_cls, D) and a patch map (B, H, W, D)."""
        cls = tokens[:, : self.n_cls_tokens]
        patches = tokens[:, self.n_cls_tokens:].reshape(tokens.shape[0], grid_hw[0], grid_hw[1], -1)
        return cls, patches


def set_fused_attention(model: nn.Module, device: torch.device, dtype: torch.dtype, training: bool = False,
                        compiled: bool = False) -> None:
    """Choose the attention kernel of every block in ``model`` for where and how it runs.

    PyTorch's fused attention everywhere except when training on a CPU at
    bf16/fp16, or compiled: there the backward of its CPU flash kernel is slower
    than that of two batched matmuls and a softmax (the figures are in
    docs/performance.md). Eager fp32 training keeps it. In inference the fused
    kernel is the faster and never holds the full attention matrix; fp32
    inference therefore gives the official forward's numbers.
    """
    fused = not (training and device.type == "cpu" and (dtype != torch.float32 or compiled))
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused


def build_encoder(cfg: EncoderConfig | str, **kwargs) -> PixioEncoder:
    """An encoder of a named size or config, with random (MAE-initialised) weights."""
    if isinstance(cfg, str):
        cfg = size_config(cfg)
    enc = PixioEncoder(cfg, **kwargs)
    enc.init_weights()
    return enc

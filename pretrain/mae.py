"""The Pixio masked autoencoder: block masking, a deep decoder, per-patch normalised pixel loss.

``PixioMAE`` subclasses the encoder, so encoder parameters keep their official
top-level names and the decoder adds the official ``decoder_*`` / ``mask_token``
keys: a training checkpoint reads like an official pretraining checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from pixio_cli.checkpoints import empty, load_torch_dict, read_checkpoint, require_filled
from pixio_cli.vit import Block
from pixio_cli.encoder import EncoderConfig, PixioEncoder, resize_pos_embed
from pixio_cli.errors import CheckpointError, UsageError


@dataclass
class MAEConfig:
    """Encoder shape plus the decoder and masking of pretraining (official values as defaults)."""

    encoder: EncoderConfig
    decoder_dim: int = 512
    decoder_depth: int = 32
    decoder_heads: int = 16
    mask_ratio: float = 0.75
    mask_grid: int = 4
    norm_pix_loss: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["encoder"] = self.encoder.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MAEConfig":
        d = dict(d)
        enc = EncoderConfig.from_dict(d.pop("encoder"))
        return cls(encoder=enc, **{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class MAEOutput:
    """An MAE step's loss, its per-image values, the predicted patches and the mask."""
    loss: torch.Tensor  # scalar: mean per-patch error over masked patches (the official loss)
    loss_per_image: torch.Tensor  # (B,): the same, per image
    pred: torch.Tensor  # (B, L, p*p*3) predicted (normalised) patch pixels
    mask: torch.Tensor  # (B, L): 1 where the patch was masked


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, L, p*p*3), patches row-major, pixels (p, q, c) as the official code."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: torch.Tensor, p: int, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b = x.shape[0]
    h, w = grid_hw
    x = x.reshape(b, h, w, p, p, -1)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(b, -1, h * p, w * p)


def mask_block_count(grid_hw: tuple[int, int], grid: int) -> int:
    """How many ``grid`` x ``grid``-patch blocks tile a patch grid; a usage error when they do not."""
    if grid_hw[0] % grid or grid_hw[1] % grid:
        raise UsageError(f"the {grid_hw[0]}x{grid_hw[1]} patch grid is not divisible by --mask-grid {grid}")
    return (grid_hw[0] // grid) * (grid_hw[1] // grid)


def check_masking(grid_hw: tuple[int, int], grid: int, ratio: float) -> None:
    """A usage error, before any work, when masking ``ratio`` of the blocks keeps none of them visible (the
    encoder would see nothing) or masks none."""
    n_blocks = mask_block_count(grid_hw, grid)
    keep = int(n_blocks * (1 - ratio))
    if ratio > 0 and (keep == 0 or keep == n_blocks):  # a ratio of 0 asks for no masking (distillation's default)
        what = "leaves no patch visible to the encoder" if keep == 0 else "masks no patch"
        raise UsageError(f"the {grid_hw[0]}x{grid_hw[1]} patch grid holds {n_blocks} block(s) of --mask-grid {grid}, "
                         f"and masking {ratio:.0%} of them {what}: use a smaller --mask-grid or a larger --img-size")


def block_masking(noise: torch.Tensor, grid_hw: tuple[int, int], grid: int,
                  ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mask ``ratio`` of the ``grid`` x ``grid``-patch blocks, keeping those with the lowest ``noise``.

    Returns the kept patch ids (B, n_keep * grid^2) in block order, the ids that
    restore the original order after [kept, masked] (B, L), and the mask (B, L),
    1 where masked. Pretraining and distillation share it.
    """
    h, w = grid_hw
    n_blocks = mask_block_count(grid_hw, grid)
    len_keep = int(n_blocks * (1 - ratio))
    order = torch.argsort(noise, dim=1)
    # patch ids of each grid x grid block, blocks row-major
    blocks = torch.arange(h * w, device=noise.device).view(1, h, w).unfold(1, grid, grid).unfold(2, grid, grid)
    blocks = blocks.reshape(n_blocks, grid * grid)
    keep = blocks[order[:, :len_keep]].flatten(1)
    masked = blocks[order[:, len_keep:]].flatten(1)
    ids_restore = torch.argsort(torch.cat([keep, masked], dim=1), dim=1)
    mask = torch.ones(noise.shape[0], h * w, device=noise.device)
    mask[:, : keep.shape[1]] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return keep, ids_restore, mask


class PixioMAE(PixioEncoder):
    """Encoder + decoder for pretraining; the encoder part is a plain :class:`PixioEncoder`."""

    def __init__(self, cfg: MAEConfig, drop_path: float = 0.0) -> None:
        super().__init__(cfg.encoder, drop_path=drop_path)
        self.mae_cfg = cfg
        enc, dd = cfg.encoder, cfg.decoder_dim
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(enc.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, enc.n_cls_tokens + enc.grid ** 2, dd))
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_heads, enc.mlp_ratio, qkv_bias=True)
            for _ in range(cfg.decoder_depth))
        self.decoder_norm = norm(dd)
        self.decoder_pred = nn.Linear(dd, enc.patch_size ** 2 * enc.in_chans)
        self.init_weights()

    def init_weights(self) -> None:
        """MAE's initialisation: the encoder's, then the mask token and decoder positions."""
        super().init_weights()  # xavier linears and unit norms everywhere, encoder tokens
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    # -- masking

    def block_noise(self, batch: int, grid_hw: tuple[int, int], generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform noise (B, n_blocks); the lowest values mark the kept blocks."""
        return torch.rand(batch, mask_block_count(grid_hw, self.mae_cfg.mask_grid), generator=generator,
                          device=device)

    def masking(self, noise: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Block masking as the official ``random_masking`` (see :func:`block_masking`)."""
        return block_masking(noise, grid_hw, self.mae_cfg.mask_grid, self.mae_cfg.mask_ratio)

    # -- forward

    def forward(self, imgs: torch.Tensor, noise: torch.Tensor | None = None) -> MAEOutput:  # type: ignore[override]
        """Masked reconstruction of normalised images (B, 3, H, W); ``noise`` fixes the mask."""
        p, n_cls = self.patch_size, self.n_cls_tokens
        grid_hw = (imgs.shape[-2] // p, imgs.shape[-1] // p)
        if noise is None:
            noise = self.block_noise(imgs.shape[0], grid_hw, device=imgs.device)
        keep, ids_restore, mask = self.masking(noise, grid_hw)

        x = self.forward_blocks(imgs, [-1], keep=keep)[0]

        x = self.decoder_embed(x)
        n_masked = ids_restore.shape[1] - (x.shape[1] - n_cls)
        tokens = torch.cat([x[:, n_cls:], self.mask_token.expand(x.shape[0], n_masked, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        pos = self.decoder_pos_embed
        pos = torch.cat([pos[:, :n_cls], resize_pos_embed(pos[:, n_cls:], grid_hw)], dim=1)
        x = torch.cat([x[:, :n_cls], tokens], dim=1) + pos
        for blk in self.decoder_blocks:
            x = self._checkpointed(blk, x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, n_cls:]

        per_patch = self.patch_errors(imgs, pred)
        masked = (per_patch * mask).sum(1)
        return MAEOutput(loss=masked.sum() / mask.sum(), loss_per_image=masked / mask.sum(1), pred=pred, mask=mask)

    def _checkpointed(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """The regression target: patches of the normalised image, normalised per patch."""
        t = patchify(imgs.float(), self.patch_size)
        if self.mae_cfg.norm_pix_loss:
            t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6) ** 0.5
        return t

    def patch_errors(self, imgs: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """Mean squared error of each patch (B, L), in fp32."""
        return ((pred.float() - self.target(imgs)) ** 2).mean(-1)

    def reconstruct(self, imgs: torch.Tensor, out: MAEOutput) -> torch.Tensor:
        """Predicted images in the input's (ImageNet-normalised) space, visible patches from the input.

        With the per-patch normalised loss the prediction has no mean/variance of
        its own; the target patch's statistics are used, as MAE's visualisation does.
        """
        p = self.patch_size
        target = patchify(imgs.float(), p)
        pred = out.pred.float()
        if self.mae_cfg.norm_pix_loss:
            pred = pred * (target.var(-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(-1, keepdim=True)
        m = out.mask.unsqueeze(-1)
        grid_hw = (imgs.shape[-2] // p, imgs.shape[-1] // p)
        return unpatchify(pred * m + target * (1 - m), p, grid_hw)

    # -- export

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's parameters under the official key names (no decoder)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("decoder_", "mask_token"))}


def load_mae(source: str | os.PathLike) -> PixioMAE:
    """A pretrained MAE (encoder and decoder) from a pretrain output folder, a checkpoint file or a bundled id."""
    path = os.fspath(source)
    if os.path.isdir(path):
        for name in ("checkpoint.pt", "mae.safetensors"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise CheckpointError(f"{source} has no checkpoint.pt or mae.safetensors: not a pretrain output folder")
    if path.endswith(".pt"):
        state = load_torch_dict(path, ("model", "config"), "a pixio pretrain checkpoint")
        cfg = state["config"]
        tensors, meta = state["model"], ({"mae_config": cfg["mae"]} if isinstance(cfg, dict) and "mae" in cfg else {})
    else:
        ckpt = read_checkpoint(path)
        tensors, meta = ckpt.tensors, ckpt.metadata
    if "mae_config" not in meta:
        raise CheckpointError(f"{source} carries no MAE config: it is not a pixio pretrain checkpoint")
    if not any(k.startswith("decoder_") for k in tensors):
        raise CheckpointError(f"{source} has no decoder weights: MAE losses need the pretraining decoder")
    model = empty(lambda: PixioMAE(MAEConfig.from_dict(meta["mae_config"])))
    tensors = {k.removeprefix("module.").removeprefix("_orig_mod."): v.float() for k, v in tensors.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source} does not fit its own MAE config: {str(e).splitlines()[0]}") from e
    require_filled(model, source)
    return model.eval()

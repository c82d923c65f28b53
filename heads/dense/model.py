"""An encoder plus a dense head, and the one-file head checkpoint that carries both."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pixio_cli.checkpoints import (BUNDLED, HUB_MODELS, empty, encoder_from, load_encoder, read_checkpoint,
                                   require_filled, save_safetensors)
from pixio_cli.encoder import PixioEncoder
from pixio_cli.errors import CheckpointError
from pixio_cli.model_ids import BUNDLED_HEADS, DEFAULT_HEAD, bundled_path  # noqa: F401 (DEFAULT_HEAD re-exported)

from heads.dense.dpt import DPTHead, LinearHead
from heads.dense.encoder_features import dense_features, dpt_blocks



@dataclass
class HeadConfig:
    """What a head checkpoint needs to run: head shape and task settings."""

    task: str  # "depth" or "segment"
    kind: str = "dpt"  # "dpt" or "linear"
    n_out: int = 1
    features: int = 256
    head_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    max_depth: float = 10.0
    min_depth: float = 1e-3
    classes: list[str] | None = None
    palette: list[list[int]] | None = None
    crop: int = 256  # training crop and sliding-window size
    infer_short: int | None = None  # short side of the training images: the default inference scale
    encoder_source: str | None = None  # a public id when the encoder weights are not in the file
    intrinsics: dict | None = None  # {"fx", "fy", "cx", "cy", "width", "height"} of the training camera

    @classmethod
    def from_dict(cls, d: dict) -> "HeadConfig":
        """The config saved in a checkpoint (unknown keys ignored)."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class DenseModel(nn.Module):
    """Frozen (or fine-tuned) Pixio encoder + DPT or linear head. Outputs at the input resolution:
    depth in metres (sigmoid x max_depth) or class logits."""

    def __init__(self, encoder: PixioEncoder, cfg: HeadConfig) -> None:
        super().__init__()
        self.encoder, self.cfg = encoder, cfg
        self.blocks = dpt_blocks(encoder.depth) if cfg.kind == "dpt" else [encoder.depth - 1]
        in_ch = 2 * encoder.embed_dim
        if cfg.kind == "dpt":
            self.head = DPTHead(in_ch, cfg.n_out, cfg.features, tuple(cfg.head_channels))
        elif cfg.kind == "linear":
            self.head = LinearHead(in_ch, cfg.n_out)
        else:
            raise CheckpointError(f"unknown head kind {cfg.kind!r} (dpt or linear)")
        self.finetune = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            feats = dense_features(self.encoder, x, self.blocks)
        out = F.interpolate(self.head(feats), size=x.shape[-2:], mode="bilinear", align_corners=True)
        if self.cfg.task == "depth":
            return torch.sigmoid(out[:, 0]) * self.cfg.max_depth
        return out


def save_head(model: DenseModel, path: str | os.PathLike, provenance: dict, dtype: torch.dtype = torch.float32,
              embed_encoder: bool = True) -> None:
    """One safetensors file: head weights, configs, provenance, and the encoder (or its public id)."""
    tensors = {f"head.{k}": v.to(dtype) if v.is_floating_point() else v for k, v in model.head.state_dict().items()}
    cfg = model.cfg
    if embed_encoder:
        tensors.update({f"encoder.{k}": v.to(dtype) for k, v in model.encoder.state_dict().items()})
        cfg = HeadConfig(**{**asdict(cfg), "encoder_source": None})
    meta = {"pixio_format": "head", "head_config": asdict(cfg), "encoder_config": model.encoder.cfg.to_dict(),
            "provenance": provenance}
    save_safetensors(tensors, path, meta)


def resolve_head(source: str) -> Path:
    """The file of a head checkpoint: a bundled name or a path."""
    if source in BUNDLED_HEADS:
        return bundled_path(source, "head", "with a head checkpoint made by `pixio train`")
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"no such head checkpoint: {source!r} (bundled: {', '.join(BUNDLED_HEADS)})")
    return path


def load_head(source: str) -> DenseModel:
    """A DenseModel from a head checkpoint (or a bundled head name), on CPU, in eval mode."""
    path = resolve_head(source)
    ckpt = read_checkpoint(path)
    if ckpt.metadata.get("pixio_format") != "head":
        raise CheckpointError(f"{source} is not a pixio head checkpoint (made by `pixio train`)")
    cfg = HeadConfig.from_dict(ckpt.metadata["head_config"])
    if any(k.startswith("encoder.") for k in ckpt.tensors):
        encoder = encoder_from(ckpt, source=str(path))
    elif cfg.encoder_source:
        encoder = load_encoder(cfg.encoder_source)
    else:
        raise CheckpointError(f"{source} has neither encoder weights nor an encoder id")
    model = empty(lambda: DenseModel(encoder, cfg))
    head = {k[len("head."):]: v.float() if v.is_floating_point() else v
            for k, v in ckpt.tensors.items() if k.startswith("head.")}
    try:
        model.head.load_state_dict(head, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: head weights do not fit its config: {str(e).splitlines()[0]}") from e
    require_filled(model, str(path))
    model.provenance = ckpt.metadata.get("provenance", {})  # type: ignore[attr-defined]
    return model.eval()


def is_known_id(source: str) -> bool:
    """Public or bundled encoder ids: a head can name them instead of carrying the weights."""
    return source in HUB_MODELS or source in BUNDLED

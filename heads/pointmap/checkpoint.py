"""Point-map checkpoints: MapAnything's own layout converted to ours (names, and the config its files do not
store), and loading, saving and preparing a model; :mod:`heads.pointmap.model` is the model itself."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors import safe_open

from pixio_cli.checkpoints import (FORMAT_KEY, empty, infer_config, load_encoder, read_checkpoint, require_filled,
                                   save_safetensors)
from pixio_cli.encoder import EncoderConfig, PixioEncoder
from pixio_cli.errors import CheckpointError
from pixio_cli.model_ids import BUNDLED_POINTMAPS, POINTMAP_MODELS, POINTMAP_SHORT_SIDE

from heads.pointmap.model import PointMapConfig, PointMapModel


# ---------------------------------------------------------------------------- MapAnything's checkpoint

UNUSED_PREFIXES: tuple[str, ...] = ()  # every tensor of MapAnything's checkpoint is used

_ALIASES = [  # modules MapAnything reaches under two names; the file keeps one of them
    (r"^dpt_feature_head\.", "dense_head.0."),
    (r"^dpt_regressor_head\.", "dense_head.1."),
    (r"^dense_head\.0\.scratch\.layer_rn\.(\d)\.", lambda m: f"dense_head.0.input_process.{m.group(1)}.1."),
    (r"^dense_head\.0\.scratch\.layer(\d)_rn\.", lambda m: f"dense_head.0.input_process.{int(m.group(1)) - 1}.1."),
]
_RULES = [  # MapAnything name -> ours
    (r"^encoder\.blocks\.(\d+)\.inner\.", r"encoder.blocks.\1."),  # gradient-checkpointing wrapper
    (r"^dense_head\.0\.input_process\.(\d)\.0\.0\.", r"dpt.projects.\1."),
    (r"^dense_head\.0\.input_process\.(\d)\.0\.1\.", r"dpt.resize_layers.\1."),
    (r"^dense_head\.0\.input_process\.(\d)\.1\.", lambda m: f"dpt.scratch.layer{int(m.group(1)) + 1}_rn."),
    (r"^dense_head\.0\.scratch\.", "dpt.scratch."),
    (r"^dense_head\.1\.", "regressor."),
]


def is_mapanything_layout(sd: dict) -> bool:
    """Whether a state dict is MapAnything's own layout (not ours)."""
    return "info_sharing.proj_embed.weight" in sd and any(k.startswith("dense_head.") or
                                                          k.startswith("dpt_feature_head.") for k in sd)


def from_mapanything(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """MapAnything's state dict -> (ours, the keys not used). Aliased copies must agree."""
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in sd.items():
        if key.startswith(UNUSED_PREFIXES):
            unused.append(key)
            continue
        k = key
        for pattern, repl in _ALIASES + _RULES:
            k = re.sub(pattern, repl, k)
        if k in out and not torch.equal(out[k], value):
            raise CheckpointError(f"the checkpoint holds two different tensors for {k} (one as {key})")
        out[k] = value
    return out, unused


def config_from_state_dict(sd: dict[str, torch.Tensor], patch: int) -> PointMapConfig:
    """The head shapes of a state dict in our names (MapAnything's have no stored config)."""
    try:
        dim = sd["info_sharing.norm.weight"].shape[0]
        depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("info_sharing.self_attention_blocks."))
        dpt_channels = [sd[f"dpt.projects.{i}.weight"].shape[0] for i in range(4)]
        ray_dims = [sd["ray_dirs_encoder.conv_in.weight"].shape[0]] + [
            sd[f"ray_dirs_encoder.encoder.{i}.conv1.weight"].shape[0]
            for i in range(len([k for k in sd if re.match(r"ray_dirs_encoder\.encoder\.\d+\.conv1\.weight", k)]))]
        pose_blocks = len({k.split(".")[2] for k in sd if k.startswith("pose_head.res_conv.")})
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"not a point-map model state dict (missing {e})") from None
    # MapAnything's 24 layers tap 11 and 17: the middle and three quarters
    return PointMapConfig(dim=dim, depth=depth, num_heads=max(1, dim // 64), taps=[depth // 2 - 1, depth * 3 // 4 - 1],
                          dpt_channels=dpt_channels, dpt_features=sd["dpt.scratch.layer1_rn.weight"].shape[0],
                          pose_blocks=pose_blocks, pose_dim=None if sd["pose_head.proj.weight"].shape[0] == 4 * patch * patch
                          else sd["pose_head.proj.weight"].shape[0], scale_hidden=sd["scale_head.proj.weight"].shape[0],
                          ray_dims=ray_dims, geometric_inputs="depth_encoder.conv_in.weight" in sd)


# ---------------------------------------------------------------------------- files


def prepare_pointmap(engine, model: PointMapModel) -> PointMapModel:
    """``model`` on the engine's device and precision, with MapAnything's float32 parts kept in float32."""
    model = engine.prepare(model)
    for part in model.float32_parts():
        part.float()
    return model


def load_pointmap(source: str) -> PointMapModel:
    """A point-map model from MapAnything's checkpoint (id or path) or one saved by pixio; strict:
    every tensor is used or is one of :data:`UNUSED_PREFIXES`. On CPU, float32, eval mode."""
    ckpt = read_checkpoint(source)
    sd, meta = ckpt.tensors, ckpt.metadata
    encoder = None
    if meta.get(FORMAT_KEY) == "pointmap":
        cfg = PointMapConfig.from_dict(meta["pointmap_config"])
        if meta.get("encoder_source"):  # a frozen public or bundled encoder, not stored in the file
            encoder = load_encoder(meta["encoder_source"])
        enc_cfg = EncoderConfig.from_dict(meta["encoder_config"])
    elif is_mapanything_layout(sd):
        sd, _ = from_mapanything(sd)
        enc_cfg = infer_config({k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")})
        cfg = config_from_state_dict(sd, enc_cfg.patch_size)
    else:
        raise CheckpointError(f"{ckpt.source} is not a point-map model (MapAnything's checkpoint, or one made by "
                              "`pixio train pointmap`)")
    # an encoder loaded from its own source is used as it is (not built and filled a second time)
    model = empty(lambda: PointMapModel(encoder if encoder is not None else PixioEncoder(enc_cfg), cfg))
    try:
        result = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False, assign=True)
    except RuntimeError as e:  # shapes that do not fit
        lines = [ln.strip() for ln in str(e).strip().splitlines()]
        raise CheckpointError(f"{ckpt.source} does not fit a point-map model: {' '.join(lines[:3])[:300]}") from None
    missing = [k for k in result.missing_keys if encoder is None or not k.startswith("encoder.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{ckpt.source} does not fit a point-map model: missing {missing[:3]}, "
                              f"unexpected {result.unexpected_keys[:3]}")
    require_filled(model, ckpt.source)
    model.source = str(source)
    model.metric = bool(meta.get("metric", True))
    model.infer_short = int(meta.get("infer_short", POINTMAP_SHORT_SIDE))
    model.provenance = meta.get("provenance", {})
    return model.eval()


def save_pointmap(model: PointMapModel, path, provenance: dict | None = None, dtype: torch.dtype = torch.float32,
                  metric: bool = True, encoder_source: str | None = None, infer_short: int = POINTMAP_SHORT_SIDE) -> None:
    """One safetensors file with the weights (our names) and both configs. With ``encoder_source`` (a
    public or bundled encoder id, kept frozen) the encoder's weights are left out and loaded by id."""
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()
          if not (encoder_source and k.startswith("encoder."))}
    meta = {FORMAT_KEY: "pointmap", "pointmap_config": model.cfg.to_dict(),
            "encoder_config": model.encoder.cfg.to_dict(), "metric": metric, "provenance": provenance or {},
            "encoder_source": encoder_source, "infer_short": infer_short}
    save_safetensors(sd, path, meta)


def is_pointmap_source(source: str) -> bool:
    """Whether ``--model`` names a point-map model (a public id, our file or MapAnything's), without
    reading its tensors."""
    if source in POINTMAP_MODELS or source in BUNDLED_POINTMAPS:
        return True
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, keys = f.metadata() or {}, set(f.keys())
    except Exception:  # unreadable: let the regular loader say why
        return False
    return meta.get(FORMAT_KEY) == '"pointmap"' or is_mapanything_layout(dict.fromkeys(keys))

"""The one checkpoint reader: model ids, bundled weights, official ``.pth``,
transformers folders/safetensors and our own safetensors files all end up as an
official-layout encoder state dict plus an :class:`EncoderConfig`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import torch

from .encoder import EncoderConfig, PixioEncoder, size_config, size_name
from .errors import CheckpointError
from .model_ids import BUNDLED, DEFAULT_MODEL, HUB_MODELS, WEIGHTS_DIR, resolve  # noqa: F401 (re-exported)

FORMAT_KEY = "pixio_format"
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


@dataclass
class Checkpoint:
    """A checkpoint as read from disk: tensors and the metadata that came with them."""

    tensors: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)
    source: str = ""


# ---------------------------------------------------------------------------- reading


def read_checkpoint(source: str | os.PathLike, shapes_only: bool = False) -> Checkpoint:
    """Read tensors and metadata from any accepted source. ``shapes_only`` gives tensors on the meta
    device (shape and dtype, no data read), for questions about a model's shape."""
    path = resolve(str(source))
    if path.is_dir():
        path = _pick_file_in_dir(path)
    if path.suffix == ".safetensors":
        try:
            return _read_safetensors(path, shapes_only)
        except Exception as e:
            raise CheckpointError(unreadable(path, e)) from None
    obj = load_torch(path, mmap=shapes_only)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        obj = obj["model"]
    else:
        meta = {}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors")
    cfg_json = path.parent / "config.json"
    if cfg_json.exists() and not meta:
        meta = {"hf_config": json.loads(cfg_json.read_text())}
    if shapes_only:  # the mmapped data is never touched
        obj = {k: torch.empty_like(v, device="meta") for k, v in obj.items()}
    return Checkpoint(dict(obj), meta, str(path))


def load_torch(path: str | os.PathLike, mmap: bool = False) -> object:
    """``torch.load`` of a file that may come from anywhere, so it never runs code (weights_only); an
    unreadable file is a one-line CheckpointError. ``mmap`` leaves the tensors on disk until they are used."""
    import zipfile

    try:
        # mmap needs torch.save's zip format; anything else gets torch.load's own complaint
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as e:
        raise CheckpointError(unreadable(path, e)) from None


def load_torch_dict(path: str | os.PathLike, keys: tuple[str, ...], what: str, mmap: bool = False) -> dict:
    """``load_torch`` of a file that must be a dict holding ``keys`` (one of our training checkpoints);
    anything else is a one-line CheckpointError saying it is not ``what``."""
    state = load_torch(path, mmap)
    if not isinstance(state, dict) or not all(k in state for k in keys):
        raise CheckpointError(f"{path} is not {what} (it holds no {', '.join(keys)})")
    return state


def unreadable(path: str | os.PathLike, error: Exception) -> str:
    """One line saying why a checkpoint file could not be read."""
    import pickle

    text = str(error).strip()
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in text:
        return (f"{path} holds Python objects besides tensors, and pixio never runs code from a checkpoint "
                "(torch.load weights_only=True); save it as a plain state dict or safetensors")
    # torch.load's unpickler also fails with KeyError(<first byte>) or EOFError on text and other files
    if isinstance(error, (pickle.UnpicklingError, KeyError, EOFError)) or "Weights only load failed" in text:
        return f"{path} is not a readable checkpoint (corrupt, truncated, or not a PyTorch file)"
    first = text.splitlines()[0][:200] if text else type(error).__name__
    return f"{path} is not a readable checkpoint ({first})"


def _pick_file_in_dir(path: Path) -> Path:
    for name in ("encoder.safetensors", "encoder.pth", "model.safetensors", "pytorch_model.bin"):
        if (path / name).exists():
            return path / name
    found = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth"))
    if len(found) == 1:
        return found[0]
    raise CheckpointError(f"{path} is a folder without a recognisable checkpoint "
                          "(expected encoder.safetensors, encoder.pth or model.safetensors)")


def _read_safetensors(path: Path, shapes_only: bool = False) -> Checkpoint:
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        raw_meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = _shape_of(f, k) if shapes_only else f.get_tensor(k)
    meta: dict = {}
    for k, v in raw_meta.items():
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError):
            meta[k] = v
    cfg_json = path.parent / "config.json"
    if cfg_json.exists() and "hf_config" not in meta and FORMAT_KEY not in meta:
        meta["hf_config"] = json.loads(cfg_json.read_text())
    return Checkpoint(tensors, meta, str(path))


def _shape_of(f, key: str) -> torch.Tensor:
    """A meta tensor with the shape and dtype of ``key`` in an open safetensors file; only an empty
    slice of it is read (the one place safetensors gives a torch dtype), or a 0-d tensor's one value."""
    part = f.get_slice(key)
    if not part.get_shape():
        return f.get_tensor(key).to("meta")
    return torch.empty(part.get_shape(), dtype=part[:0].dtype, device="meta")


# ---------------------------------------------------------------------------- converting

# transformers layouts (the Hub's ViT-style names and the renamed v5 in-memory names)
_HF_RULES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:norm1|layernorm_before)\.", r"blocks.\1.norm1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:norm2|layernorm_after)\.", r"blocks.\1.norm2."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:attention\.output\.dense|attention\.o_proj)\.", r"blocks.\1.attn.proj."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:mlp\.fc1|intermediate\.dense)\.", r"blocks.\1.mlp.fc1."),
    (r"^(?:encoder\.layer|layers)\.(\d+)\.(?:mlp\.fc2|output\.dense)\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
]
_HF_QKV = re.compile(
    r"^(?:encoder\.layer|layers)\.(\d+)\.attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
_QKV_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "pixio.", "backbone.")
_PRETRAIN_ONLY = ("decoder_", "mask_token")


def _is_hf_layout(sd: dict) -> bool:
    return "embeddings.cls_token" in sd


def to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map any accepted layout onto the official encoder keys; drop decoder weights."""
    sd = {_strip_wrappers(k): v for k, v in sd.items()}
    if any(k.startswith("encoder.") and not k.startswith("encoder.layer.") for k in sd):
        # our head checkpoints keep the encoder under "encoder."
        sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    if _is_hf_layout(sd):
        sd = _from_hf(sd)
    return {k: v for k, v in sd.items() if not k.startswith(_PRETRAIN_ONLY)}


def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _WRAPPER_PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], list] = {}
    for k, v in sd.items():
        m = _HF_QKV.match(k)
        if m:
            block, name = m.group(1), m.group(2) or m.group(3)
            qkv.setdefault((block, m.group(4)), [None] * 3)[_QKV_ORDER[name]] = v
            continue
        for pattern, repl in _HF_RULES:
            if re.match(pattern, k):
                out[re.sub(pattern, repl, k)] = v
                break
        # anything else (mask_token, pooler, heads) is not part of the encoder
    for (block, kind), parts in qkv.items():
        if any(p is None for p in parts):
            raise CheckpointError(f"transformers checkpoint lacks part of block {block}'s query/key/value")
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    return out


def infer_config(sd: dict[str, torch.Tensor], metadata: dict | None = None, size: str | None = None) -> EncoderConfig:
    """The encoder config of an official-layout state dict.

    Order: an explicit ``size``; the config stored with the checkpoint; a size
    preset whose shape matches. Attention heads cannot be read off the shapes,
    so an unknown shape without a stored config is an error that says so.
    """
    metadata = metadata or {}
    try:
        d = sd["cls_token"].shape[-1]
        n_cls = sd["cls_token"].shape[1]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        patch = sd["patch_embed.proj.weight"].shape[-1]
        in_chans = sd["patch_embed.proj.weight"].shape[1]
        n_patches = sd["pos_embed"].shape[1] - n_cls
        mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / d
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"not a Pixio encoder state dict (missing {e})") from e
    img_size = int(round(n_patches ** 0.5)) * patch
    shape = dict(embed_dim=d, depth=depth, patch_size=patch, mlp_ratio=mlp_ratio,
                 n_cls_tokens=n_cls, img_size=img_size, in_chans=in_chans)
    if size:
        heads = size_config(size).num_heads
    elif "encoder_config" in metadata:
        heads = EncoderConfig.from_dict(metadata["encoder_config"]).num_heads
    elif "hf_config" in metadata and "num_attention_heads" in metadata["hf_config"]:
        heads = int(metadata["hf_config"]["num_attention_heads"])
    else:
        name = size_name(EncoderConfig(d, depth, 1, patch_size=patch))
        if name is None:
            raise CheckpointError(
                f"the checkpoint's shape (width {d}, {depth} blocks) matches no known size, and it "
                "carries no config: pass --size (t16, s16, b16, l16, h16, 1b16, 5b16) to say which")
        heads = size_config(name).num_heads
    cfg = EncoderConfig(num_heads=heads, **shape)
    if size and (size_config(size).embed_dim, size_config(size).depth) != (d, depth):
        raise CheckpointError(f"--size {size} does not match the checkpoint (width {d}, {depth} blocks)")
    return cfg


def encoder_config(source: str | os.PathLike, size: str | None = None) -> EncoderConfig:
    """The shape of the encoder in a checkpoint (its tensors are not read)."""
    ckpt = read_checkpoint(source, shapes_only=True)
    return infer_config(to_official(ckpt.tensors), ckpt.metadata, size)


def load_encoder(source: str | os.PathLike, size: str | None = None) -> PixioEncoder:
    """Build an encoder from any accepted source and load its weights strictly (on CPU, fp32)."""
    return encoder_from(read_checkpoint(source), size, str(source))


def empty(build: Callable[[], ModuleT]) -> ModuleT:
    """``build()`` with its parameters and buffers on the meta device: no memory and no random
    initialisation spent on weights a checkpoint is about to replace (seconds for a large encoder on a
    small CPU). Fill it with ``load_state_dict(..., assign=True)``, then :func:`require_filled`."""
    with torch.device("meta"):
        return build()


def require_filled(module: torch.nn.Module, source: str) -> None:
    """Refuse a module built by :func:`empty` that a checkpoint left partly without weights."""
    left = [n for n, t in itertools.chain(module.named_parameters(), module.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{source} has no weights for {', '.join(left[:3])}"
                              + (f" and {len(left) - 3} more" if len(left) > 3 else ""))


def encoder_from(ckpt: Checkpoint, size: str | None = None, source: str | None = None) -> PixioEncoder:
    """The encoder of a checkpoint already read (its weights loaded strictly; CPU, fp32, eval mode)."""
    sd = to_official(ckpt.tensors)
    cfg = infer_config(sd, ckpt.metadata, size)
    enc = empty(lambda: PixioEncoder(cfg))
    sd = {k: v.float() for k, v in sd.items()}
    try:
        enc.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{ckpt.source} does not fit a Pixio encoder: {' '.join(first[:3])[:300]}") from e
    require_filled(enc, ckpt.source)
    enc.source = source or ckpt.source  # type: ignore[attr-defined]
    enc.metadata = ckpt.metadata  # type: ignore[attr-defined]
    return enc.eval()


# ---------------------------------------------------------------------------- writing


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict) -> None:
    """Write tensors with JSON metadata to ``path`` atomically."""
    from safetensors.torch import save_file

    from .writers import atomic_path

    meta = {k: json.dumps(v) for k, v in metadata.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def save_encoder(enc: PixioEncoder, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                 provenance: dict | None = None) -> None:
    """Save an encoder as our safetensors format (official key names, config inside)."""
    sd = {k: v.to(dtype) for k, v in enc.state_dict().items()}
    meta = {FORMAT_KEY: "encoder", "encoder_config": enc.cfg.to_dict(), "provenance": provenance or {}}
    save_safetensors(sd, path, meta)

"""What the benchmarks share: one set of random weights in both models, and a timer."""

from __future__ import annotations

import tempfile
import time
from typing import Callable

import torch

from pixio_cli.checkpoints import load_encoder
from pixio_cli.encoder import PixioEncoder, size_config
from pixio_cli.engine import Engine


def same_weights(size: str, engine: Engine) -> tuple[torch.nn.Module, PixioEncoder]:
    """``transformers.PixioModel`` with random weights, and our encoder read from its saved files."""
    from transformers import PixioConfig, PixioModel

    cfg = size_config(size)
    torch.manual_seed(0)
    hf = PixioModel(PixioConfig(hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth,
                                num_attention_heads=cfg.num_heads, image_size=cfg.img_size))
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_encoder(tmp)
    return engine.prepare(hf), ours


def images_per_second(fn: Callable[[torch.Tensor], object], batches: list[torch.Tensor], iters: int,
                      device: torch.device) -> float:
    """Images per second of ``fn`` over ``batches``, after a warm-up pass."""
    for b in batches[:2]:
        fn(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    for _ in range(iters):
        for b in batches:
            fn(b)
            n += b.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)

"""What ``pixio depth`` and ``pixio segment`` share: model loading, the batch function, output naming."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..engine import Engine
from ..errors import UsageError
from ..images import ResizePolicy
from ..inputs import Item
from ..sliding import sliding_window


def load_dense(engine: Engine, source: str, task: str):
    """A head checkpoint of ``task`` on the engine's device."""
    from heads.model import load_head

    net = load_head(source)
    if net.cfg.task != task:
        raise UsageError(f"{source} is a {net.cfg.task} head, not a {task} head")
    return engine.prepare(net)


def batch_fn(model, tile: bool) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """Whole-image inference, or seamless sliding windows of the head's crop size with ``tile``."""
    seg = model.cfg.task == "segment"

    def run(x: torch.Tensor) -> torch.Tensor:
        out = model(x).float()
        return out.softmax(1) if seg else out

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = sliding_window(run, x, model.cfg.crop) if tile else run(x)
        return {"out": out}

    return fn


def default_policy(resize: str | None, model) -> ResizePolicy:
    """``--resize`` when given; else the scale the head was trained at (the short side of its
    training images, at least its crop)."""
    if resize:
        return ResizePolicy.parse(resize)
    return ResizePolicy(short=max(model.cfg.crop, model.cfg.infer_short or 0))


def output_namer(output: Path, items: list[Item], suffixes: tuple[str, ...]) -> Callable[[Item, str], Path]:
    """``namer(item, tag)``: the path of an output. With one input and ``-o`` naming a file
    (one of ``suffixes``), that file; otherwise ``<out>/<key><tag>``."""
    if output.suffix.lower() in suffixes:
        if len(items) != 1:
            raise UsageError(f"-o {output} names one file but there are {len(items)} images: give a folder")
        return lambda it, tag: output if tag in suffixes else output.with_name(output.stem + tag)
    return lambda it, tag: output / f"{it.key}{tag}"

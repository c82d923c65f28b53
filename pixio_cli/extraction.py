"""What `pixio extract` computes for each image and where it keeps it.

:func:`token_features` turns a batch into the tokens asked for (chosen blocks, pooled or not);
:class:`ExtractOutputs` writes them to a feature store, draws the PCA picture, and says which
images a rerun may skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .engine import Sample
from .feature_stores import FileStore, ShardStore
from .inputs import Item
from .pca import pca_rgb
from .resume import Ledger
from .writers import write_image


@dataclass
class TokenOptions:
    """Which tokens an image gives.

    Args:
        blocks: 0-based block indices, in order.
        raw: tokens before the final LayerNorm.
        pool: ``none`` (every token), ``cls`` (the mean of the CLS tokens) or ``mean`` (of the patch tokens).
        pca: also the last block's patch grid, for the PCA picture (key ``_pca``; not written as features).
    """

    blocks: list[int]
    raw: bool = False
    pool: str = "none"
    pca: bool = False


def token_features(encoder, options: TokenOptions) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A function from a batch (B, 3, H, W) to its features.

    Returns, per key: ``features`` (B, nb, D) when pooled, else ``cls_tokens`` (B, nb, n_cls, D) and
    ``patch_tokens`` (B, nb, H/p, W/p, D), nb the number of blocks; and ``_pca`` (B, H/p, W/p, D) when asked.
    """
    n_cls, p = encoder.n_cls_tokens, encoder.patch_size

    def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        tokens = torch.stack(encoder.forward_blocks(x, options.blocks, norm=not options.raw), dim=1)
        cls, patches = tokens[:, :, :n_cls], tokens[:, :, n_cls:]
        patches = patches.reshape(*patches.shape[:2], *grid, patches.shape[-1])
        if options.pool == "cls":
            out = {"features": cls.mean(2)}
        elif options.pool == "mean":
            out = {"features": patches.mean((2, 3))}
        else:
            out = {"cls_tokens": cls, "patch_tokens": patches}
        if options.pca:
            out["_pca"] = patches[:, -1]
        return out

    return features


def open_ledger(folder: Path, settings: dict, *, overwrite: bool, shards: int | None, rank: int,
                world: int) -> Ledger:
    """The run ledger of an output folder; with ``--overwrite`` a single process starts its shards afresh."""
    if overwrite and shards and world == 1:
        for old in [*folder.glob("index*.jsonl"), *folder.glob("shard-*")]:
            old.unlink()
    return Ledger(folder, settings, overwrite=overwrite, rank=rank, world=world)


class ExtractOutputs:
    """Each image's features in a store (one file each, or shards), its PCA picture, and a JSON line.

    An image is recorded in the ledger once all its outputs are in place (a shard row: once its shard is),
    and skipped by a rerun only then.

    Args:
        dest: where ``-o`` points (None: PCA pictures only).
        fmt: ``npz`` or ``safetensors``.
        shards: images per shard, or None for a file per image.
        pooled: the features have one shape for every image (stacked in shards).
        ledger: the run ledger, or None when there is no folder to keep one in.
        pca_path: item -> the PCA picture's path, or None.
        blocks: the block indices, written beside the features.
        on_record: hears of each image's record (its outputs and the shapes written), e.g. to print it.
    """

    def __init__(self, *, dest, fmt: str | None, shards: int | None, pooled: bool, ledger: Ledger | None,
                 pca_path: Callable[[Item], Path] | None, blocks: list[int],
                 on_record: Callable[[dict], None] | None = None, rank: int = 0, world: int = 1) -> None:
        self.ledger, self.pca_path, self.blocks, self.on_record = ledger, pca_path, blocks, on_record
        self.store = None
        if dest is not None and shards:
            self.store = ShardStore(dest.folder, fmt, size=shards, stacked=pooled, on_written=self.finished,
                                    rank=rank, world=world)
        elif dest is not None:
            self.store = FileStore(dest, fmt, self.finished)

    def finished(self, done: list[Item]) -> None:
        """Records ``done`` in the ledger: their outputs are all in place."""
        if self.ledger is not None:
            for it in done:
                self.ledger.record_item(it)

    def write(self, item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
        """Writes one image's features (and PCA picture) from the engine's output ``out``."""
        record: dict = {"path": item.label}
        arrays = {k: v.numpy().astype(np.float32) for k, v in out.items() if not k.startswith("_")}
        if self.pca_path is not None:
            target = self.pca_path(item)
            write_image(target, pca_rgb(out["_pca"], sample.orig_hw))
            record["pca"] = str(target)
        if self.store is not None:
            arrays["blocks"] = np.asarray(self.blocks, np.int64)
            arrays["input_hw"] = np.asarray(sample.image.shape[:2], np.int64)
            record.update(self.store.write(item, arrays))
        else:
            self.finished([item])
        if self.on_record is not None:
            if self.store is not None:  # shapes of what was written, and only then
                record["shapes"] = {k: list(v.shape) for k, v in arrays.items() if k not in ("blocks", "input_hw")}
            self.on_record(record)

    def done(self, item: Item) -> bool:
        """Whether a rerun may skip ``item``: recorded, and its outputs still there."""
        if self.ledger is None or not self.ledger.done_item(item):
            return False
        if self.store is not None and not self.store.holds(item):
            return False
        return self.pca_path is None or self.pca_path(item).exists()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

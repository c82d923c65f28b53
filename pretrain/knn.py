"""k-NN classification of frozen features, the official Pixio protocol (after DINO).

Features: the mean of the last block's 8 CLS tokens *before* the final
LayerNorm (the official `eval_knn.py` pools ``cls_tokens``, not
``cls_tokens_norm``), L2-normalised, from the image resized to a 256 short side
and centre-cropped to 256x256. Each validation image is classified by a vote of
its k nearest training images (cosine similarity), each weighted by
exp(similarity / T) with T = 0.07; top-1 and top-5 accuracy in percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pixio_cli.errors import InputError
from pixio_cli.images import is_image


@dataclass
class LabelledSplit:
    """Image files and their class ids."""

    paths: list[str]
    labels: list[int]


def find_splits(data: Path, train_list: Path | None = None,
                val_list: Path | None = None) -> tuple[LabelledSplit, LabelledSplit, list[str]]:
    """The train and val splits and the class names.

    An ImageNet-style folder (``train/<class>/*``, ``val/<class>/*``), or two list
    files of ``path label`` lines (paths relative to the list's folder unless absolute).
    """
    if (train_list is None) != (val_list is None):
        raise InputError("give both --train-list and --val-list, or neither (then --data needs train/ and val/)")
    if train_list is not None:
        train, val = _read_list(train_list), _read_list(val_list)
    else:
        if not (data / "train").is_dir() or not (data / "val").is_dir():
            raise InputError(f"--data {data}: expected train/<class>/ and val/<class>/ folders (ImageNet layout), "
                             "or give --train-list and --val-list")
        train, val = _read_folder(data / "train"), _read_folder(data / "val")
    if not train or not val:
        raise InputError(f"--data {data}: no {'training' if not train else 'validation'} images found")
    classes = sorted({c for _, c in train})
    unknown = sorted({c for _, c in val} - set(classes))
    if unknown:
        raise InputError(f"validation classes without training images: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    as_split = lambda pairs: LabelledSplit([p for p, _ in pairs], [index[c] for _, c in pairs])  # noqa: E731
    return as_split(train), as_split(val), classes


def _read_folder(root: Path) -> list[tuple[str, str]]:
    out = []
    for cls in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        out.extend((str(p), cls.name) for p in sorted(cls.rglob("*")) if p.is_file() and is_image(p))
    return out


def _read_list(listing: Path) -> list[tuple[str, str]]:
    if not listing.is_file():
        raise InputError(f"{listing}: no such list file")
    out = []
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise InputError(f"{listing}:{n}: expected 'path label'")
        path = Path(parts[0])
        out.append((str(path if path.is_absolute() else listing.parent / path), parts[1]))
    return out


@torch.no_grad()
def knn_classify(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor, val_labels: torch.Tensor,
                 k: int, temperature: float = 0.07, n_classes: int | None = None,
                 chunk: int = 1024) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent) of the weighted k-NN vote.

    ``train``/``val`` are L2-normalised features (N, D); with k < 5, top-5 counts
    the k voted classes, as the official code does.
    """
    n_classes = n_classes or int(train_labels.max()) + 1
    k = min(k, train.shape[0])
    top1 = top5 = 0
    for start in range(0, val.shape[0], chunk):
        sims, idx = (val[start:start + chunk] @ train.T).topk(k, dim=1)
        votes = torch.zeros(sims.shape[0], n_classes, dtype=torch.float64, device=sims.device)
        votes.scatter_add_(1, train_labels[idx], (sims.double() / temperature).exp())
        ranked = votes.argsort(dim=1, descending=True, stable=True)
        hit = ranked == val_labels[start:start + chunk, None]
        top1 += int(hit[:, :1].sum())
        top5 += int(hit[:, :min(5, k)].sum())
    return 100.0 * top1 / val.shape[0], 100.0 * top5 / val.shape[0]


def pooled_features(engine, encoder, paths: list[str], folder: Path, settings: dict, overwrite: bool,
                    resolution: int = 256, normed: bool = False, desc: str = "features") -> torch.Tensor:
    """L2-normalised k-NN features of ``paths`` (N, D), through the engine, kept in ``folder``.

    ``folder`` holds shards of features with the run ledger, so an interrupted
    extraction resumes and a second evaluation of the same encoder on the same
    images reads them instead of running the model.
    """
    import json

    import numpy as np

    from pixio_cli.feature_stores import ShardStore
    from pixio_cli.images import ResizePolicy
    from pixio_cli.inputs import Item
    from pixio_cli.resume import Ledger

    policy = ResizePolicy(short=resolution, crop=resolution)
    # names the geometry's version too, so caches made by older versions are refused, not reused
    ledger = Ledger(folder, {**settings, "transform": "resize short side exactly, central square"}, overwrite)
    store = ShardStore(folder, "npz", size=4096, stacked=True,
                       on_written=lambda done: [ledger.record_item(it) for it in done])
    n = encoder.n_cls_tokens

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = encoder.forward_blocks(x, [-1], norm=normed)[0]
        return {"features": tokens[:, :n].mean(1)}

    items = [Item(p, p) for p in paths]
    try:
        summary = engine.run(items, policy, fn,
                             lambda it, s, out: store.write(it, {"features": out["features"].numpy()}),
                             desc=desc, skip=ledger.done_item)
    finally:
        store.close()
    if summary.skipped:
        import logging

        logging.getLogger("pixio").info("%s: %d of %d features read from %s", desc, summary.skipped,
                                        len(paths), folder)
    if summary.failures:
        label, reason = summary.failures[0]
        raise InputError(f"{summary.failed} image(s) cannot be read, so the accuracy would leave them out "
                         f"(first: {reason}); fix or remove them")
    where: dict[str, tuple[str, int]] = {}
    for index in sorted(folder.glob("index*.jsonl")):
        for line in index.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            where[rec["path"]] = (rec["shard"], rec["row"])  # the latest line of a path wins
    shards = {name: np.load(folder / name)["features"] for name in {s for s, _ in where.values()}}
    feats = torch.from_numpy(np.stack([shards[where[p][0]][where[p][1]] for p in paths])).float()
    return torch.nn.functional.normalize(feats, dim=1)

"""Pretraining data: folders, file lists and tar shards as one deterministic, resumable stream.

Every epoch the sources are reshuffled from (seed, epoch) and dealt out to
(rank, DataLoader worker). Each sample carries its worker's stream position, so
the training loop can record how far every worker got and a resumed run starts
each worker exactly there. Randomness per sample (crop, soft sampling) comes
from (seed, epoch, record), so it does not depend on where a run was resumed.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pixio_cli.errors import InputError, UsageError
from pixio_cli.images import decode_image, is_image, jpeg_size
from pixio_cli.inputs import collect

TAR_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


# ---------------------------------------------------------------------------- curation rules


@dataclass(frozen=True)
class CurationRules:
    """The official loader's keep rules, plus ours: a record with ``error`` is never kept."""

    min_entropy: float | None = None  # drop histogram_score <= min_entropy
    min_size: int | None = None  # drop height < min_size or width < min_size
    soft_sampling: bool = False  # drop when u > mae_loss, u ~ U[0, 1)

    @property
    def active(self) -> bool:
        """Whether any rule drops or reweights images."""
        return self.min_entropy is not None or self.min_size is not None or self.soft_sampling

    def keep(self, rec: dict | None, u: float) -> bool:
        """Keep-or-drop for one image's statistics ``rec`` and a uniform draw ``u``."""
        if rec is None or "error" in rec:
            return False
        # as the official loader: a threshold of 0 (falsy) turns its filter off
        if self.min_entropy and rec["histogram_score"] <= self.min_entropy:
            return False
        if self.min_size and (rec["height"] < self.min_size or rec["width"] < self.min_size):
            return False
        if self.soft_sampling and u > rec["mae_loss"]:
            return False
        return True


def shard_stats_path(curation: Path, shard: Path) -> Path:
    """Where the official loader looks for a shard's statistics."""
    return curation / shard.parent.name / (shard.name[: -len(".tar")] + ".json")


def read_manifest(curation: Path) -> dict[str, dict]:
    """A folder/list manifest (JSONL with a ``path`` column) keyed by absolute path."""
    path = curation if curation.suffix == ".jsonl" else curation / "manifest.jsonl"
    if not path.exists():
        raise UsageError(f"--curation {curation}: no manifest.jsonl for image folders")
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[os.path.abspath(rec["path"])] = rec
    return out


# ---------------------------------------------------------------------------- augmentation


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator,
                        scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """torchvision's RandomResizedCrop sampling, resized with OpenCV.

    Bicubic when enlarging; area averaging when shrinking, which is what PIL's
    antialiased bicubic (the official pipeline) approximates best in OpenCV.
    """
    h, w = img.shape[:2]
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if 0 < cw <= w and 0 < ch <= h:
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:  # central crop at the nearest allowed ratio
        in_r = w / h
        if in_r < ratio[0]:
            cw, ch = w, int(round(w / ratio[0]))
        elif in_r > ratio[1]:
            ch, cw = h, int(round(h * ratio[1]))
        else:
            cw, ch = w, h
        y, x = (h - ch) // 2, (w - cw) // 2
    crop = img[y:y + ch, x:x + cw]
    interp = cv2.INTER_AREA if ch * cw > size * size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def crop_decode_factor(size: tuple[int, int] | None, out: int, scale: tuple[float, float] = (0.2, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> int:
    """The JPEG reduction (8, 4, 2 or 1) at which every crop :func:`random_resized_crop` can draw from
    an image of ``size`` (H, W) still has at least ``out`` pixels on each side.

    The crop is then only ever shrunk to ``out``, as from the full decode, and a 12 MP photo headed
    for 256 px is not decoded in full. A drawn crop's sides are at least sqrt(area * scale[0] *
    ratio[0]) (give or take rounding); the fallback central crop's are at least the image's short side.
    """
    if size is None:
        return 1
    h, w = size
    smallest = min(math.sqrt(h * w * scale[0] * min(ratio[0], 1 / ratio[1])) - 1, h, w)
    return next((f for f in (8, 4, 2) if smallest / f - 1 >= out), 1)


# ---------------------------------------------------------------------------- sources


@dataclass
class Sources:
    """What ``--data`` names: loose image files and tar shards."""

    images: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)

    @classmethod
    def find(cls, specs: list[str]) -> "Sources":
        """Folders (recursive; tar shards inside count as shards), .tar files, and file lists (.txt)."""
        out = cls()
        for spec in specs:
            p = Path(spec)
            if p.suffix == ".tar" and p.is_file():
                out.shards.append(str(p))
            elif p.is_dir():
                tars = sorted(str(t) for t in p.rglob("*.tar"))
                out.shards.extend(tars)
                try:
                    out.images.extend(os.path.abspath(i.path) for i in collect([spec], videos=False))
                except InputError:
                    if not tars:  # a folder of shards has no loose images
                        raise
            elif p.suffix in (".txt", ".lst") and p.is_file():
                out.images.extend(os.path.abspath(line.strip()) for line in p.read_text().splitlines()
                                  if line.strip())
            elif p.exists() and is_image(p):
                out.images.append(os.path.abspath(p))
            else:
                raise InputError(f"--data {spec}: not a folder, .tar shard, file list or image")
        if not out.images and not out.shards:
            raise InputError(f"--data {' '.join(specs)}: no images or tar shards found")
        return out

    def count(self) -> int:
        """Number of images, reading tar headers only."""
        n = len(self.images)
        for shard in self.shards:
            with tarfile.open(shard) as tar:
                n += sum(1 for m in tar if m.isfile() and m.name.lower().endswith(TAR_IMAGE_EXTS))
        return n


@dataclass
class Sample:
    """One crop of the pretraining stream, and where the worker that made it stands."""
    image: np.ndarray  # uint8 (S, S, 3)
    worker: int
    epoch: int
    position: int  # records of this worker's stream consumed in this epoch, this one included
    failed: int  # unreadable records this worker process has met so far


class PretrainStream(IterableDataset):
    """An endless stream of augmented crops; see the module docstring for the determinism contract."""

    def __init__(self, sources: Sources, img_size: int, seed: int, rank: int = 0, world: int = 1,
                 curation: Path | None = None, rules: CurationRules = CurationRules(),
                 crop_scale: tuple[float, float] = (0.2, 1.0), start: dict | None = None,
                 rotate: int = 0) -> None:
        self.sources, self.img_size, self.seed = sources, img_size, seed
        self.rank, self.world = rank, world
        self.curation, self.rules, self.crop_scale = curation, rules, crop_scale
        self.manifest = read_manifest(curation) if curation is not None and sources.images else None
        # start: {worker: (epoch, position)} from a checkpoint: where each worker's stream resumes
        self.start = {int(k): tuple(v) for k, v in (start or {}).items()}
        self.failed = 0  # per worker process; reported through each Sample
        self.rotate = rotate  # DataLoader worker i plays the part of stream worker (i + rotate) % n

    def _records(self, epoch: int, slot: int, slots: int, skip_to: int = 0) -> Iterator[tuple[str, str | None, object]]:
        """(key, shard, payload) of this slot's share of the epoch, in a fixed order. A broken shard
        met before record `skip_to` was counted before the resume, so it is not counted again."""
        rng = np.random.default_rng([self.seed, epoch])
        images = [self.sources.images[i] for i in rng.permutation(len(self.sources.images))]
        shards = [self.sources.shards[i] for i in rng.permutation(len(self.sources.shards))]
        given = 0
        for path in images[slot::slots]:
            given += 1
            yield path, None, path
        for shard in shards[slot::slots]:
            stats = None
            if self.curation is not None:
                sp = shard_stats_path(self.curation, Path(shard))
                if not sp.exists():  # the official loader skips shards without statistics
                    continue
                stats = json.loads(sp.read_text())
            try:
                with tarfile.open(shard) as tar:
                    for member in tar:
                        if member.isfile() and member.name.lower().endswith(TAR_IMAGE_EXTS):
                            rec = stats.get(member.name) if stats is not None else None
                            if stats is not None and rec is None:
                                continue
                            given += 1
                            yield f"{shard}::{member.name}", shard, (tar, member, rec)
            except (tarfile.TarError, OSError):
                if given >= skip_to:
                    self.failed += 1

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        worker = (worker + self.rotate) % workers
        slot, slots = self.rank * workers + worker, self.world * workers
        epoch, skip_to = self.start.get(worker, (0, 0))
        while True:
            produced = False
            for position, (key, shard, payload) in enumerate(self._records(epoch, slot, slots, skip_to), start=1):
                if position <= skip_to:
                    continue
                rng = np.random.default_rng([self.seed, epoch, _stable_hash(key)])
                img = self._load(key, shard, payload, rng)
                if img is not None:
                    produced = True
                    crop = random_resized_crop(img, self.img_size, rng, self.crop_scale)
                    yield Sample(crop, worker=worker, epoch=epoch, position=position, failed=self.failed)
            if not produced and skip_to == 0:
                return  # this worker has no usable data at all
            epoch, skip_to = epoch + 1, 0

    def _load(self, key: str, shard: str | None, payload, rng: np.random.Generator) -> np.ndarray | None:
        """The record decoded (at a reduced size where no crop of it needs more), or None when the
        curation rules drop it or it cannot be read."""
        u = float(rng.random())  # drawn for every record, so the crop stream does not depend on the rules
        if shard is None:
            rec = self.manifest.get(key) if self.manifest is not None else None
            if self.manifest is not None and not self.rules.keep(rec, u):
                return None
        else:
            tar, member, rec = payload
            if (self.rules.active or rec is not None) and not self.rules.keep(rec, u):
                return None
        try:
            if shard is None:
                buf = np.fromfile(key, np.uint8)
            else:
                with tar.extractfile(member) as f:
                    buf = np.frombuffer(f.read(), np.uint8)
            return decode_image(buf, key, reduce=crop_decode_factor(jpeg_size(buf), self.img_size, self.crop_scale))
        except (InputError, OSError, tarfile.TarError):
            self.failed += 1
            return None


def _stable_hash(key: str) -> int:
    import zlib

    return zlib.crc32(key.encode())


def collate(samples: list[Sample]) -> dict:
    """A batch from one worker: uint8 images and where that worker's stream stands."""
    return {
        "images": torch.from_numpy(np.stack([s.image for s in samples])),
        "worker": samples[-1].worker,
        "epoch": samples[-1].epoch,
        "position": samples[-1].position,
        "failed": samples[-1].failed,
    }

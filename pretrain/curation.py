"""Curation statistics for Pixio's self-curation: histogram entropy, size, MAE loss, content hash.

Two stages, both resumable. Stage 1 computes raw statistics per unit of work
(a tar shard, or a chunk of loose images) into ``<out>/.raw/``; a unit whose
raw file exists is done. Stage 2 normalises the MAE loss over the whole
collection from those raw files alone (a cheap pass, no model) and writes the
outputs the pretraining loader reads: per-shard JSONs in the official layout
and ``manifest.jsonl`` for loose images. Every choice goes into ``curation.json``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pixio_cli.engine import Engine, Sample
from pixio_cli.errors import InputError, UsageError
from pixio_cli.images import ResizePolicy
from pixio_cli.inputs import Item, collect
from pixio_cli.writers import write_json, write_text

from .data import TAR_IMAGE_EXTS, shard_stats_path
from .mae import PixioMAE

VERSION = 1
ZERO = {"histogram_score": 0.0, "height": 0, "width": 0, "mae_loss": 0.0}  # what an unreadable image gets


def histogram_entropy(rgb: np.ndarray) -> float:
    """Mean over R, G, B of the Shannon entropy (bits) of the 256-bin channel histogram.

    In [0, 8]. On the 500 ImageNet photos in ../shared/data at a 256 short side:
    median 7.35 and 7 photos at or below the paper's 4.5 (at 128: 7.305 and 6), all plain product shots (a laptop
    on white, whistles on white, a strainer) or a near-black screen; flat
    images score 0, black text on white about 1.4.
    """
    total = 0.0
    for c in range(3):
        counts = np.bincount(rgb[..., c].ravel(), minlength=256).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        total += float(-(p * np.log2(p)).sum())
    return total / 3


@dataclass
class Settings:
    """The reproducible definition of a curation run (written to ``curation.json``)."""

    model: str
    model_config: dict
    resolution: int  # images resized to this short side; the MAE sees the central resolution^2 crop
    masks: int  # K masks per image; mask k comes from torch.Generator().manual_seed(seed + k)
    seed: int
    precision: str
    histogram: dict = field(default_factory=lambda: {
        "colour_space": "RGB", "bins_per_channel": 256, "log_base": 2, "reduce": "mean over channels",
        "image": "resized to the short side `resolution` (long side at most 4x), before cropping"})
    normalisation: dict = field(default_factory=lambda: {
        "method": "min-max between percentiles, clipped to [0, 1]", "low_percentile": 1.0,
        "high_percentile": 99.0, "histogram_bins": 100000})
    hash: str = "sha256 of the stored (encoded) bytes"
    version: int = VERSION


@dataclass
class Unit:
    """A piece of work with its own raw file: one tar shard, or a chunk of loose images."""

    name: str  # relative path of the raw file, without extension
    items: list[Item]
    shard: str | None = None


def find_units(specs: list[str], chunk: int = 1000) -> list[Unit]:
    """Tar shards (given or found in folders) and chunks of loose images, in a stable order."""
    import tarfile

    shards: list[Path] = []
    loose: list[str] = []
    for spec in specs:
        p = Path(spec)
        if p.suffix == ".tar" and p.is_file():
            shards.append(p)
        elif p.is_dir():
            shards.extend(sorted(p.rglob("*.tar")))
            loose.append(spec)
        else:
            loose.append(spec)
    units = []
    for shard in shards:
        try:
            with tarfile.open(shard) as tar:
                names = [m.name for m in tar if m.isfile() and m.name.lower().endswith(TAR_IMAGE_EXTS)]
        except (OSError, tarfile.TarError) as e:
            raise InputError(f"{shard}: cannot read the tar shard ({e})") from None
        items = [Item(str(shard), name, member=name) for name in names]
        units.append(Unit(f"{shard.parent.name}/{shard.name[:-len('.tar')]}", items, str(shard)))
    images: list[Item] = []
    if loose:
        try:
            images = [Item(os.path.abspath(i.path), i.key, error=i.error) for i in collect(loose, videos=False)]
        except InputError:
            if not shards:  # folders that hold only shards have no loose images
                raise
    for start in range(0, len(images), chunk):
        units.append(Unit(f"images/chunk-{start // chunk:06d}", images[start:start + chunk]))
    if not units:
        raise InputError("no images or tar shards found in the inputs")
    return units


class Curator:
    """Stage 1: raw statistics of every unit not done yet."""

    def __init__(self, mae: PixioMAE, engine: Engine, settings: Settings, out: Path) -> None:
        self.mae, self.engine, self.settings, self.out = mae, engine, settings, Path(out)
        cfg = mae.mae_cfg
        side = settings.resolution
        if side % (cfg.encoder.patch_size * cfg.mask_grid):
            raise UsageError(f"--resolution {side} must be a multiple of {cfg.encoder.patch_size * cfg.mask_grid} "
                             f"(patch {cfg.encoder.patch_size} x mask grid {cfg.mask_grid})")
        grid = (side // cfg.encoder.patch_size,) * 2
        # The same K masks for every image: the loss depends on the image alone, not on batch or order.
        self.noise = torch.cat([mae.block_noise(1, grid, generator=torch.Generator().manual_seed(settings.seed + k))
                                for k in range(settings.masks)]).to(engine.device)

    def raw_path(self, unit: Unit) -> Path:
        """Where the per-image statistics of ``unit`` are kept until the rules are applied."""
        return self.out / ".raw" / f"{unit.name}.jsonl"

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean MAE loss over the K fixed masks of the central crop of each image."""
        side = self.settings.resolution
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        crop = x[..., top:top + side, left:left + side]
        total = torch.zeros(x.shape[0], device=x.device)
        for k in range(self.settings.masks):
            total += self.mae(crop, self.noise[k:k + 1].expand(x.shape[0], -1)).loss_per_image.float()
        return {"mae_loss_raw": total / self.settings.masks}

    def run(self, units: list[Unit], is_done: Callable[[Unit], bool] | None = None,
            on_unit: Callable[[Unit], None] | None = None):
        """Compute every unit not done yet (its raw file exists and ``is_done`` agrees); ``on_unit``
        hears of each unit once its raw file is in place. Returns the engine's summary of this call."""
        pending = [u for u in units if not (self.raw_path(u).exists() and (is_done is None or is_done(u)))]
        owner = {(it.path, it.member, it.key): u for u in pending for it in u.items}
        records: dict[str, list[dict]] = {u.name: [] for u in pending}
        left = {u.name: len(u.items) for u in pending}

        def add(item: Item, rec: dict) -> None:
            unit = owner[(item.path, item.member, item.key)]
            records[unit.name].append(rec)
            left[unit.name] -= 1
            if left[unit.name] == 0:  # the unit is complete: write it in one atomic step
                lines = "".join(json.dumps(r) + "\n" for r in records.pop(unit.name))
                write_text(self.raw_path(unit), lines)
                if on_unit is not None:
                    on_unit(unit)

        def on_result(item: Item, sample: Sample, out: dict[str, torch.Tensor]) -> None:
            add(item, {"key": _record_key(item), "histogram_score": histogram_entropy(sample.image),
                       "height": int(sample.orig_hw[0]), "width": int(sample.orig_hw[1]),
                       "mae_loss_raw": float(out["mae_loss_raw"]), "sha256": sample.digest})

        def on_error(item: Item, reason: str) -> None:
            add(item, {"key": _record_key(item), "error": reason, **ZERO})

        policy = ResizePolicy(short=self.settings.resolution)
        items = [it for u in pending for it in u.items]
        summary = self.engine.run(items, policy, self.losses, on_result, desc="curate", on_error=on_error,
                                  warn_enlarged=False)  # the official statistics resize every image
        # units with no items (an empty shard) are complete at once
        for u in pending:
            if not u.items:
                write_text(self.raw_path(u), "")
                if on_unit is not None:
                    on_unit(u)
        return summary


def _record_key(item: Item) -> str:
    return item.member if item.member is not None else item.path


def read_raw(out: Path, units: list[Unit]) -> Iterator[tuple[Unit, list[dict]]]:
    """The per-image statistics of every unit, in order; every unit must have them."""
    for u in units:
        path = Path(out) / ".raw" / f"{u.name}.jsonl"
        if not path.exists():
            raise UsageError(f"{path} is missing: run the statistics stage for every input first")
        yield u, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def normalisation_bounds(out: Path, units: list[Unit], settings: Settings) -> dict:
    """Percentile bounds of the raw MAE loss over the collection, in two streaming passes (flat memory)."""
    lo = math.inf
    hi = -math.inf
    n = 0
    for _, recs in read_raw(out, units):
        for r in recs:
            if "error" not in r:
                lo, hi, n = min(lo, r["mae_loss_raw"]), max(hi, r["mae_loss_raw"]), n + 1
    if n == 0:
        return {"low": 0.0, "high": 0.0, "count": 0}
    bins = settings.normalisation["histogram_bins"]
    counts = np.zeros(bins, np.int64)
    width = (hi - lo) / bins or 1.0
    for _, recs in read_raw(out, units):
        vals = np.array([r["mae_loss_raw"] for r in recs if "error" not in r])
        if len(vals):
            counts += np.bincount(np.clip(((vals - lo) / width).astype(np.int64), 0, bins - 1), minlength=bins)
    cdf = np.cumsum(counts) / n

    def percentile(q: float) -> float:
        return float(lo + width * np.searchsorted(cdf, q / 100.0))

    return {"low": percentile(settings.normalisation["low_percentile"]),
            "high": percentile(settings.normalisation["high_percentile"]) + width, "count": n,
            "raw_min": lo, "raw_max": hi}


def normalise(out: Path, units: list[Unit], settings: Settings,
              on_error: Callable[[str, str], None] | None = None) -> dict:
    """Stage 2: write per-shard JSONs, ``manifest.jsonl`` and ``curation.json`` from the raw files;
    ``on_error(key, error)`` hears of each unreadable image on the way."""
    out = Path(out)
    bounds = normalisation_bounds(out, units, settings)
    span = bounds["high"] - bounds["low"]

    def final(r: dict) -> dict:
        rec = {k: v for k, v in r.items() if k != "key"}
        if "error" not in r:  # a collection with a single value keeps everything
            rec["mae_loss"] = float(np.clip((r["mae_loss_raw"] - bounds["low"]) / span, 0, 1)) if span > 0 else 1.0
        return rec

    manifest = []
    counts = {"images": 0, "errors": 0}
    for unit, recs in read_raw(out, units):
        counts["images"] += len(recs)
        for r in recs:
            if "error" in r:
                counts["errors"] += 1
                if on_error is not None:
                    on_error(r["key"], r["error"])
        if unit.shard is not None:
            write_json(shard_stats_path(out, Path(unit.shard)), {r["key"]: final(r) for r in recs})
        else:
            manifest.extend(json.dumps({"path": r["key"], **final(r)}) + "\n" for r in recs)
    if manifest or not any(u.shard for u in units):
        write_text(out / "manifest.jsonl", "".join(manifest))
    summary = {**asdict(settings), "normalisation_bounds": bounds, "counts": counts}
    write_json(out / "curation.json", summary)
    return summary


def iter_records(out: Path) -> Iterator[dict]:
    """Every final record of a curation output (shard JSONs and the manifest)."""
    out = Path(out)
    manifest = out / "manifest.jsonl"
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
    for path in sorted(out.glob("*/*.json")):
        if path.parent.name != ".raw":
            yield from json.loads(path.read_text()).values()

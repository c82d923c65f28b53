"""Where extracted features go: one file per image, or shards with a JSONL index.

Which outputs are finished is the run ledger's business (:mod:`pixio_cli.resume`);
the stores only write, atomically, and tell when rows are safely on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from typing import Callable

from .inputs import Item
from .outputs import Destination
from .writers import append_text, write_npz, write_safetensors_np

FORMATS = ("npz", "safetensors")


def write_arrays(path: Path, arrays: dict[str, np.ndarray], fmt: str) -> None:
    """Named arrays to ``path`` as ``fmt`` (npz or safetensors), atomically."""
    if fmt == "npz":
        write_npz(path, arrays)
    else:
        write_safetensors_np(path, arrays)


class FileStore:
    """One file per image: ``<out>/<key>.<fmt>``, or the single file ``-o`` names."""

    def __init__(self, dest: Destination, fmt: str, on_written: Callable[[list[Item]], None]) -> None:
        self.dest, self.fmt, self.on_written = dest, fmt, on_written

    def path(self, item: Item) -> Path:
        """The features file of ``item``."""
        return self.dest.path(item, self.dest.main)

    def write(self, item: Item, arrays: dict[str, np.ndarray]) -> dict:
        """Writes ``item``'s arrays to their own file; returns where they went."""
        path = self.path(item)
        write_arrays(path, arrays, self.fmt)
        self.on_written([item])
        return {"output": str(path)}

    def holds(self, item: Item) -> bool:
        """Whether the item's file is still there (a rerun redoes deleted ones)."""
        return self.path(item).exists()

    def close(self) -> None:
        pass


class ShardStore:
    """Shards of ``size`` images, ``<out>/shard-NNNNNN.<fmt>``, and ``<out>/index.jsonl``.

    Pooled features (same shape for every image) are stacked into one array per
    shard; token maps, whose grid depends on the image size, are stored per row
    as ``r<row>/<name>``. Index lines are appended only after their shard file
    is in place, so a killed run loses at most the shard it was filling. Under
    torchrun each rank writes its own ``shard-r<rank>-NNNNNN`` files and
    ``index-r<rank>.jsonl``. ``on_written`` hears of rows once their shard and
    index lines are in place.
    """

    def __init__(self, out: Path, fmt: str, size: int, stacked: bool, on_written: Callable[[list[Item]], None],
                 rank: int = 0, world: int = 1) -> None:
        self.out, self.fmt, self.size, self.stacked = Path(out), fmt, size, stacked
        self.on_written = on_written
        self.prefix = "shard-" if world == 1 else f"shard-r{rank}-"
        self.index = self.out / ("index.jsonl" if world == 1 else f"index-r{rank}.jsonl")
        own = [-1]
        for index in sorted(self.out.glob("index*.jsonl")):
            for line in index.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by a kill: its shard is redone
                    continue
                if index == self.index:
                    own.append(int(rec["shard"][len(self.prefix):].split(".")[0]))
        self.next_shard = max(own) + 1
        self.rows: list[tuple[Item, dict[str, np.ndarray]]] = []

    def write(self, item: Item, arrays: dict[str, np.ndarray]) -> dict:
        """Adds ``item``'s arrays to the shard being filled (written once it is full); returns its file and row."""
        self.rows.append((item, arrays))
        name = self._name(self.next_shard)
        info = {"output": str(self.out / name), "row": len(self.rows) - 1}
        if len(self.rows) >= self.size:
            self._flush()
        return info

    def holds(self, item: Item) -> bool:
        """Rows are recorded only once their shard is in place; shards are not looked up one by one."""
        return True

    def _name(self, n: int) -> str:
        return f"{self.prefix}{n:06d}.{self.fmt}"

    def _flush(self) -> None:
        if not self.rows:
            return
        name = self._name(self.next_shard)
        if self.stacked:
            arrays = {k: np.stack([a[k] for _, a in self.rows]) for k in self.rows[0][1]}
        else:
            arrays = {f"r{r:06d}/{k}": v for r, (_, a) in enumerate(self.rows) for k, v in a.items()}
        write_arrays(self.out / name, arrays, self.fmt)
        lines = "".join(json.dumps({"path": it.label, "key": it.key, "shard": name, "row": r}) + "\n"
                        for r, (it, _) in enumerate(self.rows))
        append_text(self.index, lines)
        self.on_written([it for it, _ in self.rows])
        self.rows, self.next_shard = [], self.next_shard + 1

    def close(self) -> None:
        self._flush()

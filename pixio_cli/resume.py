"""Resume keyed on what decides an output, not on a file's existence.

Every command that writes into a folder keeps a ledger there,
``.pixio-run.jsonl``: its first line holds the run's settings (the model's
identity and every option that changes the numbers), then one line per
finished output with the identity of the input it came from (size and
modification time of the file; the frame or tar member). A rerun skips an
output only when the settings are the same and its input has not changed. A
rerun with other settings is refused before any work, naming the options that
differ, unless ``--overwrite`` is given, which starts the ledger afresh (removing
the ledgers of runs with another number of processes) and
redoes everything. Under torchrun every rank keeps its own ledger
(``.pixio-run-r<rank>.jsonl``) and reads all of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UsageError
from .inputs import Item
from .writers import append_text, write_text

LEDGER = ".pixio-run"


def file_identity(path: str | os.PathLike) -> list | None:
    """(size, modification time in ns) of a file, or None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def item_identity(item: Item) -> list | None:
    """What identifies an input: its file's identity, plus the frame or tar member."""
    ident = file_identity(item.path)
    if ident is None:
        return None
    return ident + [item.frame if item.frame is not None else item.member]


def model_identity(source: str) -> str:
    """The model a run used: the id or path, and for files their size and modification time."""
    from .model_ids import HUB_MODELS, POINTMAP_MODELS, bundled_file

    if source in HUB_MODELS or source in POINTMAP_MODELS:
        return source
    path = bundled_file(source) or Path(source).expanduser()
    ident = file_identity(path)
    if path.is_dir():  # a transformers folder: every file in it may decide (weights of any format, config)
        ident = [[p.name, *file_identity(p)] for p in sorted(path.iterdir())
                 if p.is_file() and not p.name.startswith(".")]
    return f"{source} {json.dumps(ident)}" if ident is not None else source


def _whole(line: str) -> bool:
    """Whether a ledger line reads back (one a kill cut does not)."""
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


class Ledger:
    """The record of one output folder: the settings it was made with and what is finished."""

    def __init__(self, folder: str | os.PathLike, settings: dict, overwrite: bool = False,
                 rank: int = 0, world: int = 1, optional: dict | None = None) -> None:
        """``optional``: settings of outputs asked for only sometimes (None when not asked this time, as
        the camera of ``depth --ply``). They are compared only when both runs asked for the output; the
        first run to ask records its value."""
        self.folder = Path(folder)
        asked = {k: v for k, v in (optional or {}).items() if v is not None}
        self.settings = json.loads(json.dumps({**settings, **asked}))  # as it reads back from JSON
        self.path = self.folder / (f"{LEDGER}.jsonl" if world == 1 else f"{LEDGER}-r{rank}.jsonl")
        self.finished: dict[str, list] = {}
        if overwrite:
            self._start_afresh(world)
            return
        mine, own, cut = None, [], False
        for ledger in sorted(self.folder.glob(f"{LEDGER}*.jsonl")):
            text = ledger.read_text()
            lines = text.splitlines()
            try:
                stored = json.loads(lines[0])["settings"] if lines else None
            except (ValueError, KeyError, TypeError):
                stored = None
            if stored is None:
                raise UsageError(self._mismatch(None, {}))
            before, now = _without(stored, optional, asked), _without(self.settings, optional, stored)
            if before != now:
                raise UsageError(self._mismatch(before, now))
            if ledger == self.path:
                mine, own, cut = stored, lines, not text.endswith("\n")
            for line in lines[1:]:
                try:
                    rec = json.loads(line)
                except ValueError:  # a line cut by a kill: that output is redone
                    continue
                self.finished[rec["key"]] = rec["input"]
        self.new = mine is None
        if mine is None:
            write_text(self.path, json.dumps({"settings": self.settings}) + "\n")
        elif {**mine, **self.settings} != mine or cut:
            # an optional setting asked for the first time is recorded; a line a kill cut is dropped, so that the
            # next record starts a line of its own instead of being glued to it (and lost)
            self.settings = {**mine, **self.settings}
            records = own[1:-1] + [own[-1]] * (len(own) > 1 and (not cut or _whole(own[-1])))
            write_text(self.path, "".join(f"{line}\n" for line in [json.dumps({"settings": self.settings}), *records]))

    def _start_afresh(self, world: int) -> None:
        """This rank's ledger anew; every ledger that no rank of this run writes (another run's, with
        another number of processes) is removed, so that the next run reads only this one's."""
        this_run = {self.path} if world == 1 else {self.folder / f"{LEDGER}-r{r}.jsonl" for r in range(world)}
        for ledger in self.folder.glob(f"{LEDGER}*.jsonl"):
            if ledger not in this_run:
                ledger.unlink(missing_ok=True)  # the other ranks may be removing it too
        write_text(self.path, json.dumps({"settings": self.settings}) + "\n")
        self.new = True

    def withdraw(self) -> None:
        """Remove this ledger if this run started it and finished nothing: a run stopped before its first
        output leaves the folder as it found it, free for other settings."""
        if self.new and not self.finished:
            self.path.unlink(missing_ok=True)

    def _mismatch(self, before: dict | None, now: dict) -> str:
        if before is None:
            return (f"{self.folder} has a run ledger that cannot be read; rerun with --overwrite to redo "
                    "everything, or choose another output")
        keys = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        diff = "; ".join(f"{k}: {_short(before.get(k))} before, {_short(now.get(k))} now" for k in keys)
        return (f"{self.folder} holds outputs made with other settings ({diff}); rerun with --overwrite to "
                "replace them, or choose another output")

    def done(self, key: str, identity) -> bool:
        """Whether ``key`` was finished in this folder from an input with this identity."""
        return identity is not None and self.finished.get(key) == json.loads(json.dumps(identity))

    def record(self, key: str, identity) -> None:
        """Mark ``key`` finished (call after its outputs are in place)."""
        line = json.dumps({"key": key, "input": identity}) + "\n"
        append_text(self.path, line)  # one short line per write: a kill cuts at most this line
        self.finished[key] = json.loads(json.dumps(identity))

    def done_item(self, item: Item) -> bool:
        """Whether ``item``, unchanged since, was finished by a run with these settings."""
        return self.done(item.key, item_identity(item))

    def record_item(self, item: Item) -> None:
        """Records ``item`` as finished (its outputs are all in place)."""
        self.record(item.key, item_identity(item))


def _without(settings: dict, optional: dict | None, other: dict) -> dict:
    """``settings`` less the optional ones that ``other`` has not got (outputs only one side asked for)."""
    return {k: v for k, v in settings.items() if k not in (optional or {}) or k in other}


def _short(value) -> str:
    text = "(not set)" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."

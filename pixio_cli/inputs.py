"""Turn command-line inputs (files, folders, globs, ``-`` for stdin, videos) into work items.

One rule for every input, whatever way it came: a path that cannot be used
(missing, an unreadable video, a pattern that matches nothing) becomes an item
that fails with its reason, is reported and skipped, and the run goes on with
the rest and exits 1. Inputs that hold no images at all are an error before
any work.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Iterable, TextIO

from .errors import InputError, UsageError
from .images import IMAGE_EXTS, is_image, is_video
from .video import frames_in


@dataclass(frozen=True)
class Item:
    """One image to process: a file, frame ``frame`` of a video file, or ``member`` of a tar shard.

    ``key`` is the output name relative to the output folder, without extension.
    ``error`` is set for an input that cannot be read at all; it is reported, not run.
    """

    path: str
    key: str
    frame: int | None = None
    member: str | None = None
    error: str | None = None
    position: int = 0  # where its input came in the command line's order (see collect)

    @property
    def label(self) -> str:
        """How the input is named to the user: the path, ``path::member`` of a tar, or ``path#frameN`` of a video."""
        if self.member is not None:
            return f"{self.path}::{self.member}"
        return self.path if self.frame is None else f"{self.path}#frame{self.frame}"


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def natural_key(name: str) -> list:
    """Sort key that orders digit runs by value: frame2 < frame10 (as file browsers do)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _walk(folder: Path, videos: bool, skip: frozenset[str] = frozenset()) -> list[Path]:
    """Images (and videos) under ``folder``, in natural order; hidden files and folders are left out, and
    so are the subfolders in ``skip`` (real paths: the run's own output folder)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        if skip and root != str(folder) and os.path.realpath(root) in skip:
            dirs[:] = []
            continue
        dirs[:] = sorted((d for d in dirs if not d.startswith(".")), key=natural_key)
        for f in sorted(files, key=natural_key):
            p = Path(root) / f
            if not f.startswith(".") and (is_image(p) or (videos and is_video(p))):
                found.append(p)
    return found


def collect(specs: Iterable[str], stdin: TextIO | None = None, videos: bool = True,
            every: int = 1, outputs: Path | None = None) -> list[Item]:
    """Expand inputs into items whose output keys are unique over the whole run.

    Keys are the files' paths relative to the common parent of what was given
    (a single folder: the folder itself), without extension: ``a/ b/`` holding
    ``x.jpg`` each give ``a/x`` and ``b/x``. Two files that would still share a
    key (``x.jpg`` beside ``x.png``) keep their extension in it. Videos become
    one item per ``every``-th frame, keyed ``<video>/<frame>``. ``outputs``, the run's output folder, is
    left out where it lies inside an input folder, so a rerun does not read its own outputs back.
    """
    specs = list(specs)
    stdin = stdin if stdin is not None else sys.stdin
    files: list[Path] = []
    anchors: list[str] = []  # folders the keys are relative to: given folders, loose files' parents
    bad: list[Item] = []
    skip = frozenset([os.path.realpath(outputs)] if outputs is not None else [])
    for spec in specs:
        if spec == "-":
            for line in stdin:
                if line.strip():
                    _add_path(Path(line.strip()), line.strip(), files=files, anchors=anchors, bad=bad, videos=videos,
                              skip=skip)
            continue
        if _has_glob(spec) and not Path(spec).exists():
            matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True), key=natural_key)
            hits = [Path(m) for m in matches if Path(m).is_file()]
            if not hits:
                bad.append(Item(spec, spec, error=f"{spec}: the pattern matches no file", position=len(files)))
            for m in hits:
                _add_path(m, m.as_posix(), files=files, anchors=anchors, bad=bad, videos=videos, skip=skip)
            continue
        _add_path(Path(spec).expanduser(), spec, files=files, anchors=anchors, bad=bad, videos=videos, skip=skip)

    items = _keyed(files, anchors, every, bad)
    if every > 1 and items and all(it.frame is None for it in items):
        raise UsageError(f"--every {every} picks video frames, but no input is a video")
    if not items and not bad:
        where = " ".join(specs) if specs else "(no inputs)"
        raise InputError(f"no images found in {where} (looked for {', '.join(sorted(IMAGE_EXTS))}"
                         f"{' and videos' if videos else ''})")
    check_unique_keys(items)
    return _in_given_order(items, bad)


def _in_given_order(items: list[Item], bad: list[Item]) -> list[Item]:
    """Every item, failed ones included, in the order the inputs were given (a failed input keeps its
    place, so per-input lists such as recon3d's --intrinsics stay aligned)."""
    return sorted(items + bad, key=lambda it: (it.position, it.error is None))


def _add_path(p: Path, spec: str, files: list[Path], anchors: list[str], bad: list[Item], videos: bool,
              skip: frozenset[str] = frozenset()) -> None:
    if p.is_dir():
        anchors.append(os.path.abspath(p))
        files.extend(_walk(p, videos, skip))
    elif p.is_file() and not videos and is_video(p):
        bad.append(Item(str(p), spec, error=f"{spec}: a video; this command takes images (extract frames first)",
                        position=len(files)))
    elif p.is_file():
        anchors.append(os.path.abspath(p.parent))
        files.append(p)
    else:
        bad.append(Item(str(p), spec, error=f"{spec}: no such file or folder", position=len(files)))


def _keyed(files: list[Path], anchors: list[str], every: int, bad: list[Item]) -> list[Item]:
    if not files:
        return []
    try:
        root = Path(os.path.commonpath(anchors))
    except ValueError:  # different drives
        root = Path("/")
    seen: set[str] = set()
    unique: list[tuple[Path, PurePosixPath, int]] = []
    for i, f in enumerate(files):
        a = os.path.abspath(f)
        if a in seen:  # the same file given twice (a folder and a file in it)
            continue
        seen.add(a)
        unique.append((f, PurePosixPath(Path(a).relative_to(root).as_posix()), i))
    keys = [rel.with_suffix("").as_posix() for _, rel, _ in unique]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    items: list[Item] = []
    for (f, rel, i), key in zip(unique, keys):
        if counts[key] > 1:  # a.jpg and a.png in one folder: keep them apart
            key = f"{key}_{rel.suffix.lstrip('.').lower()}"
        if is_video(f):
            try:
                items.extend(replace(it, position=i) for it in video_items(f, key, every))
            except InputError as e:
                bad.append(Item(str(f), key, error=str(e), position=i))
        else:
            items.append(Item(str(f), key, position=i))
    return items


def check_unique_keys(items: list[Item]) -> None:
    """Refuse, before any work, two inputs that would write the same output."""
    owner: dict[str, str] = {}
    for it in items:
        if it.error is None:
            if it.key in owner and owner[it.key] != it.label:
                raise UsageError(f"{owner[it.key]} and {it.label} would both write the output '{it.key}': "
                                 "rename one, or give them in separate runs")
            owner[it.key] = it.label


def video_items(path: Path, key: str, every: int = 1) -> list[Item]:
    """One item per ``every``-th frame of a video, keyed ``<video>/<frame:06d>``."""
    n = frames_in(str(path))
    if n == 0:
        raise InputError(f"{path}: the video has no frames")
    return [Item(str(path), f"{key}/{i:06d}", i) for i in range(0, n, max(1, every))]


_DEPTH_FOLDERS = {"depth": ("rgb", "color", "colour", "image", "images")}  # TUM, ScanNet exports


def sibling(folder: Path, name: str) -> Path | None:
    """The file ``name`` in ``folder`` whatever the case of its letters (``FRAME-1.DEPTH.PNG`` for
    ``frame-1.depth.png``: layouts are recognised case-insensitively), or None. The name as it is first."""
    exact = folder / name
    if exact.exists():
        return exact
    return _listing(folder).get(name.lower())


def _listing(folder: Path) -> dict[str, Path]:
    """Lower-cased name -> path of what ``folder`` holds (empty when it cannot be read)."""
    try:
        return {p.name.lower(): p for p in folder.iterdir()}
    except OSError:
        return {}


def rgbd_depth_images(items: list[Item]) -> list[int]:
    """Positions of the items that are the depth half of an RGB-D sequence: ``x.depth.png`` beside an
    ``x.color.*`` (7-Scenes), ``x_depth.*`` beside ``x_color.*``, or any image in a ``depth/`` folder beside an
    ``rgb/`` or ``color/`` one (TUM, ScanNet exports). Their colour frames are the views; they are not."""
    out, listings = [], {}
    for i, it in enumerate(items):
        if it.frame is not None:
            continue
        path = Path(it.path)
        name = path.name.lower()
        if path.parent not in listings:
            listings[path.parent] = list(_listing(path.parent))
        for depth, colour in ((".depth.", ".color."), ("_depth.", "_color.")):
            if depth in name:
                stem = name[:name.index(depth)] + colour
                if any(n.startswith(stem) for n in listings[path.parent]):
                    out.append(i)
                    break
        else:
            siblings = _DEPTH_FOLDERS.get(path.parent.name.lower(), ())
            beside = _listing(path.parent.parent) if siblings else {}
            if any(s in beside and beside[s].is_dir() for s in siblings):
                out.append(i)
    return out

"""Turn command-line inputs (files, folders, globs, ``-`` for stdin, videos) into work items."""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, TextIO

from .errors import InputError
from .images import is_image, is_video


@dataclass(frozen=True)
class Item:
    """One image to process: a file, frame ``frame`` of a video file, or ``member`` of a tar shard.

    ``key`` is the output name relative to the output folder, without extension.
    """

    path: str
    key: str
    frame: int | None = None
    member: str | None = None

    @property
    def label(self) -> str:
        if self.member is not None:
            return f"{self.path}::{self.member}"
        return self.path if self.frame is None else f"{self.path}#frame{self.frame}"


def _has_glob(s: str) -> bool:
    return any(c in s for c in "*?[")


def _walk(folder: Path, videos: bool) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            p = Path(root) / f
            if not f.startswith(".") and (is_image(p) or (videos and is_video(p))):
                found.append(p)
    return found


def collect(specs: Iterable[str], stdin: TextIO | None = None, videos: bool = True,
            every: int = 1) -> list[Item]:
    """Expand inputs into items with output keys that mirror the input layout.

    Folders are walked recursively and keep their inner layout; loose files,
    glob matches and stdin paths are keyed relative to their common parent.
    Videos become one item per ``every``-th frame. Paths that do not exist are
    an :class:`InputError` (a typo should stop the run before it starts).
    """
    stdin = stdin if stdin is not None else sys.stdin
    rooted: list[tuple[Path, Path]] = []  # (file, folder it was found under)
    loose: list[Path] = []
    for spec in specs:
        if spec == "-":
            loose.extend(Path(line.strip()) for line in stdin if line.strip())
            continue
        if _has_glob(spec) and not Path(spec).exists():
            matches = sorted(glob.glob(os.path.expanduser(spec), recursive=True))
            if not matches:
                raise InputError(f"{spec}: the pattern matches no file")
            loose.extend(Path(m) for m in matches if Path(m).is_file())
            continue
        p = Path(spec).expanduser()
        if p.is_dir():
            rooted.extend((f, p) for f in _walk(p, videos))
        elif p.exists():
            loose.append(p)
        else:
            raise InputError(f"{spec}: no such file or folder")

    files: list[tuple[Path, PurePosixPath]] = []
    for f, root in rooted:
        files.append((f, PurePosixPath(f.relative_to(root).as_posix())))
    if loose:
        parent = _common_parent(loose)
        for f in loose:
            files.append((f, PurePosixPath(_relative(f, parent))))

    items: list[Item] = []
    seen: set[str] = set()
    keys = [rel.with_suffix("").as_posix() for _, rel in files]
    clashes = {k for k in keys if keys.count(k) > 1}
    for (f, rel), key in zip(files, keys):
        if key in clashes:  # a.jpg and a.png in one folder: keep them apart
            key = f"{key}_{rel.suffix.lstrip('.').lower()}"
        if f.as_posix() in seen:
            continue
        seen.add(f.as_posix())
        if is_video(f):
            items.extend(video_items(f, key, every))
        else:
            items.append(Item(str(f), key))
    return items


def _common_parent(paths: list[Path]) -> Path:
    parents = [os.path.abspath(p.parent) for p in paths]
    try:
        return Path(os.path.commonpath(parents))
    except ValueError:  # different drives
        return Path("/")


def _relative(f: Path, parent: Path) -> str:
    return Path(os.path.abspath(f)).relative_to(parent).as_posix()


def video_items(path: Path, key: str, every: int = 1) -> list[Item]:
    """One item per ``every``-th frame of a video, keyed ``<video>/<frame:06d>``."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"{path}: cannot open the video")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # some containers do not say: count by reading
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n == 0:
        raise InputError(f"{path}: the video has no frames")
    return [Item(str(path), f"{key}/{i:06d}", i) for i in range(0, n, max(1, every))]

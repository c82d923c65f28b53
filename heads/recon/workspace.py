"""Where a scene's per-view arrays live while it is made: in files under one folder, mapped into memory, so
that a long video's predictions, colours and fusion maps do not all stay in memory at once.

The arrays are plain numpy arrays to the code that uses them (``np.memmap``). Every few views the work loops
call :func:`tick` (the workspace entered with ``with``), which hands the pages touched so far back to the operating system
(``madvise(MADV_DONTNEED)`` on each file mapping: what was written stays in the file, and is read back from
the page cache or the disk when used again). Memory then holds the views being worked on, the model, and what
grows with the output (the points written, a few numbers per view); the files hold the rest. Without a folder
(small scenes in tests, library use) the arrays are ordinary ones in memory.
"""

from __future__ import annotations

import contextvars
import mmap
import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

import numpy as np

T = TypeVar("T")
VIEW_THREADS = 8  # each view in flight holds tens of MB of work arrays (a plane sweep's scores): memory stays bounded


class Workspace:
    """Per-view arrays in files under ``folder`` (made empty, removed by :meth:`close`), or in memory when
    ``folder`` is None. ``every``: views between two hand-backs of :meth:`tick`."""

    def __init__(self, folder: Optional[Path] = None, every: int = 8) -> None:
        self.folder = folder
        self.every = every
        self._arrays: list[np.memmap] = []
        self._ticks = 0
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # a killed run's leftovers: nothing in them is reused
            folder.mkdir(parents=True)

    def array(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """A new array of ``shape`` and ``dtype``, all zeros (a new file is: it costs nothing)."""
        if self.folder is None:
            return np.zeros(shape, dtype)
        out = np.lib.format.open_memmap(self.folder / f"{name}-{len(self._arrays)}.npy", mode="w+",
                                        dtype=np.dtype(dtype), shape=tuple(shape))
        self._arrays.append(out)
        return out

    def tick(self) -> None:
        """One view done: every ``every`` views, the mapped pages go back to the operating system."""
        self._ticks += 1
        if self._ticks % self.every == 0:
            self.release()

    def release(self) -> None:
        """The pages of every array handed back now (their contents stay in the files)."""
        for a in self._arrays:
            m = getattr(a, "_mmap", None)
            if m is not None and not m.closed:
                m.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """The files removed (arrays still referenced elsewhere keep their mapping until dropped)."""
        self._arrays.clear()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "Workspace":
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)
        self.close()


IN_MEMORY = Workspace(None)
_ACTIVE: contextvars.ContextVar[Workspace] = contextvars.ContextVar("workspace", default=IN_MEMORY)


def tick() -> None:
    """One view done, in the loops over a scene's views: the workspace entered (if any) hands its pages back
    every few views. A function of its own so that the loops need not be given the workspace."""
    _ACTIVE.get().tick()


def active() -> Workspace:
    """The workspace entered with ``with`` (in memory when none is)."""
    return _ACTIVE.get()


def each_view(work: Callable[[int], T], n: int, threads: Optional[int] = None) -> Iterator[tuple[int, T]]:
    """``(v, work(v))`` for each of ``n`` views, in order, with the views worked on by a pool of ``threads``
    (default: the cores this process may use, at most ``VIEW_THREADS``): NumPy and OpenCV let go of the
    interpreter while they compute, so a view's arithmetic runs beside another's. ``work`` must touch no other
    view's outputs. At most two views a thread are in flight, so memory holds a few views whatever ``n``; the
    workspace ticks once a view here, in the calling thread. On an error or Ctrl-C the views not begun are
    dropped."""
    threads = min(n, threads or min(available_cores(), VIEW_THREADS))
    if threads <= 1:
        for v in range(n):
            yield v, work(v)
            tick()
        return

    pool = ThreadPoolExecutor(threads, thread_name_prefix="pixio-view")
    pending: deque = deque()

    def oldest() -> tuple[int, T]:  # the first view still in flight, once it is done
        done, future = pending.popleft()
        return done, future.result()

    try:
        for v in range(n):
            pending.append((v, pool.submit(work, v)))
            if len(pending) == 2 * threads:
                yield oldest()
                tick()
        while pending:
            yield oldest()
            tick()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def available_cores() -> int:
    """The cores this process may run on (its affinity, where the system says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

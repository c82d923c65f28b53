"""One run per output: a second run into an output that another is writing is refused at once.

A run claims its output by an exclusive ``flock`` on a hidden file: in an output folder ``.pixio-lock``, beside an
output file ``.<name>.pixio-lock``. The
operating system lets go of it when the process ends, however it ends (``kill -9`` included), so a killed run
never leaves an output stuck; the file itself is removed by the run that held it. Under torchrun only rank 0
claims: the other ranks are the same run.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RunError

_HELD: list[tuple[int, Path]] = []  # (descriptor, lock file) of the claims this process holds


class OutputInUse(RunError):
    """Another run is writing the output asked for."""


def lock_file(target: Path, folder: bool) -> Path:
    """The lock file of an output: in it when it is a folder, beside it when it is a file; hidden."""
    target = Path(target)
    return target / ".pixio-lock" if folder else target.parent / f".{target.name}.pixio-lock"


def claim(target: str | os.PathLike, *, folder: bool, option: str = "-o", rank: int = 0) -> None:
    """Hold ``target`` (an output folder, or file) for this run until :func:`release_all`; an
    :class:`OutputInUse` naming the process that holds it when another run does."""
    import fcntl

    if rank != 0:
        return
    path = lock_file(Path(target), folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another"
            os.close(fd)
            raise OutputInUse(f"{option} {target} is being written by another pixio run (process {holder}): wait "
                              "for it to finish, or choose another output") from None
        try:  # the file may have been removed by the run that held it, between our open and our lock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD.append((fd, path))


def release_all() -> None:
    """Let go of every output this process claimed (the end of a command)."""
    while _HELD:
        fd, path = _HELD.pop()
        try:
            path.unlink(missing_ok=True)  # removed while still held: a run that opened it retries on a new one
        finally:
            os.close(fd)

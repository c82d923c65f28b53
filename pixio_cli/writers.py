"""Atomic file writes and a background writer so the device never waits on disk."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import queue
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import InputError, UsageError
from .video import frames_in


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_current_umask()  # what open() would give; mkstemp's own is 0o600


_LEFT: dict[Path, list[str]] = {}  # per folder, the hidden temporary files it held when first written to
_LEFT_LOCK = threading.Lock()


def _leftovers(path: Path) -> list[Path]:
    """The temporary files of ``path`` that earlier runs left. A folder is listed once per process, at its
    first write (listing it at every write would make writing n files into it cost n squared)."""
    with _LEFT_LOCK:
        folder = path.parent.resolve()
        if folder not in _LEFT:
            with os.scandir(folder) as entries:
                _LEFT[folder] = [e.name for e in entries if e.name.startswith(".") and ".tmp" in e.name]
        names = _LEFT[folder]
        mine = [n for n in names if n.startswith(f".{path.name}.")]
        for n in mine:
            names.remove(n)
    return [folder / n for n in mine]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A run killed mid-write leaves at most a hidden ``.tmp`` file, never a truncated
    output under the real name, so "output exists" means "output is complete"; the
    next write of the same output removes it.
    ``keep_suffix`` ends the temporary name with ``path``'s extension too, for
    writers that pick the format from it (Open3D).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for left in _leftovers(path):  # a killed run's, for this same output
        left.unlink(missing_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as e:  # name the output, not the hidden temporary file (a write() error names none)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except Exception as e:
        if not _write_failure(e):
            raise
        raise OSError(errno.EIO, f"could not write it ({_first_line(e)})", str(path)) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_failure(e: Exception) -> bool:
    """Whether a library's exception is its way of saying the file could not be written (torch.save's
    "enforce fail at inline_container", safetensors' SafetensorError), rather than a bug."""
    text = str(e)
    return type(e).__name__ == "SafetensorError" or (
        isinstance(e, RuntimeError) and any(s in text for s in ("inline_container", "No space left", "write failed",
                                                                "PytorchStreamWriter")))


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def check_writable(folder: str | os.PathLike, option: str) -> None:
    """Refuse, before any work, an output folder that cannot be made or written (``option``: the
    option and value it came from, for the message). Nothing is created: the nearest existing folder
    at or above it is tried with a probe file."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise UsageError(f"{option}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pixio-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{option}: cannot write in {existing} ({e.strerror or e})") from None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` to ``path`` atomically: a temporary file beside it, synced, then renamed over it."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append to a log or ledger; a failure (a full disk) names the file, which ``write`` alone does not."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically."""
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON with sorted keys to ``path``, atomically."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Named arrays as an uncompressed .npz at ``path``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def write_safetensors_np(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> None:
    """Named arrays as a .safetensors file at ``path`` (``metadata`` as strings), atomically."""
    from safetensors.numpy import save

    meta = {k: str(v) for k, v in (metadata or {}).items()}
    write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta))


class EmptyVideo(ValueError):
    """A video with no frame is not written."""


def write_video(path: str | os.PathLike, frames: Iterator[np.ndarray], fps: float) -> int:
    """RGB frames as an MP4 (OpenCV's mp4v) at the first frame's size (others padded or cut to it), written
    atomically: the file takes its name only once it reads back with every frame. Returns the number of
    frames."""
    import cv2

    path = Path(path)
    n = 0
    with atomic_path(path, keep_suffix=True) as tmp:
        writer = None
        try:
            for frame in frames:
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w - w % 2, h - h % 2))
                    if not writer.isOpened():
                        raise UsageError(f"OpenCV cannot write {path} (mp4v)")
                if frame.shape[:2] != (h, w):  # a writer drops frames of another size without a word
                    fit = np.full((h, w, 3), 255, np.uint8)
                    fit[: min(h, frame.shape[0]), : min(w, frame.shape[1])] = frame[:h, :w]
                    frame = fit
                writer.write(cv2.cvtColor(np.ascontiguousarray(frame[: h - h % 2, : w - w % 2]), cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            if writer is not None:
                writer.release()
        if n == 0:
            raise EmptyVideo(f"no frame to write to {path}")  # nothing takes the name
        try:  # counted by reading: the container's own count can be off for short videos
            back = frames_in(str(tmp), count_by_reading=True)
        except InputError:
            back = 0
        if back != n:
            raise OSError(errno.EIO, f"wrote {n} frames but {back} read back (is the disk full?)", str(path))
    return n


def write_image(path: str | os.PathLike, image: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Encode an image by the file's extension (OpenCV; RGB input) and write it atomically.

    With ``palette`` (N, 3 uint8) a 2-D uint8 label image is written as a
    palette-indexed PNG, so class ids stay exact and it still displays in colour.
    """
    import cv2

    path = Path(path)
    if palette is not None:
        data = _palette_png(image, palette)
    else:
        arr = image[..., ::-1] if image.ndim == 3 and image.shape[2] == 3 else image
        ok, enc = cv2.imencode(path.suffix or ".png", np.ascontiguousarray(arr))
        if not ok:
            raise OSError(f"OpenCV could not encode {path.suffix} for {path}")
        data = enc.tobytes()
    write_bytes(path, data)


def _palette_png(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """``labels`` (h, w) as an 8-bit palette-indexed PNG (OpenCV writes no palettes: Pillow does)."""
    import io

    from PIL import Image  # here, not at the top: only label maps need it, and it costs start-up

    pal = np.zeros((256, 3), np.uint8)  # every index a colour: ids past the palette show black, not garbage
    pal[: len(palette)] = palette[:256]
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels, np.uint8).tobytes())
    image.putpalette(pal.tobytes())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class BackgroundWriter:
    """Run write jobs on one thread, in order, with a bounded queue.

    The bound keeps memory flat when the disk is slower than the model. Errors
    raised by a job are re-raised in the caller at the next ``submit`` or at ``close``.
    """

    def __init__(self, max_pending: int = 64) -> None:
        self._q: queue.Queue = queue.Queue(max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pixio-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # surfaced in the main thread
                    self._error = e

    def submit(self, job: Callable[[], None]) -> None:
        """Queues ``job``; raises what an earlier job raised."""
        self._raise()
        self._q.put(job)

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def close(self) -> None:
        """Wait for every queued job, then re-raise the first error, if any."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._raise()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Open3D for the functions that need it: imported only when one is called (its import takes seconds and
needs the system's libusb-1.0, and most commands never use it), a missing one said as one usage error; and
its messages held back while it writes or reads a file that is checked anyway."""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from pixio_cli.errors import UsageError


def load_open3d():
    """The ``open3d`` module, or a :class:`UsageError` that says what to install."""
    try:
        import open3d as o3d  # here, not at the top: Open3D is slow to import and only some paths use it
    except ImportError as e:  # also raised when libusb-1.0 is missing
        raise UsageError(f"this needs Open3D ({e}); install open3d and the system library libusb-1.0") from None
    return o3d


_QUIET = threading.Lock()


@contextlib.contextmanager
def quiet_open3d(o3d):
    """Open3D's own warnings and its PLY library's C-level messages (hundreds of "RPly: Failed writing"
    lines on a full disk) held back: the write is checked, and a failure is said in one line."""
    level = o3d.utility.get_verbosity_level()
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    # the descriptor is the whole process's: redirected only from the main thread (never while a background
    # writer's PLY would take the progress bar and warnings of the main thread with it), one at a time
    redirect = threading.current_thread() is threading.main_thread() and _QUIET.acquire(blocking=False)
    if redirect:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
    try:
        yield
    finally:
        if redirect:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)
            _QUIET.release()
        o3d.utility.set_verbosity_level(level)

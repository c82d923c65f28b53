"""How a run is stopped: SIGTERM (a scheduler's preemption, ``kill``, ``timeout``) is the same interrupt
as Ctrl-C, so trainers save their step, writers finish the file in hand and data workers end quietly;
and a block can hold both until it is done. Kept free of torch: the CLI installs it at start-up."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM raises KeyboardInterrupt, as Ctrl-C does (main thread only: signal handlers
    live there). In a DataLoader worker, PyTorch's loop then ends quietly (exit 0), which its parent does
    not take for a failure."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so that a training step's update and its step count
    are saved together or not at all (a signal inside ``optimizer.step()`` would leave some groups
    updated), and a save is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(s, lambda signum, _frame: caught.append(signum)) for s in held]
    try:
        yield
    finally:
        for s, handler, fallback in zip(held, previous, (signal.default_int_handler, signal.SIG_DFL)):
            signal.signal(s, fallback if handler is None else handler)
    if caught:
        raise KeyboardInterrupt

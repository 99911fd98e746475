"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

A signal does not interrupt a training step half-way: the handler only raises a flag, and the
trainer looks at it between steps, where its state is consistent, writes a checkpoint there and
raises :class:`Interrupted`. A resumed run then continues exactly where the interrupted one
stopped, and ends with the same metrics as an uninterrupted run.

Signal handlers belong to the process, so the flag is process-wide by nature (the one piece of
module state in the trainer). ``escalate=True`` (an interactive ``memtasks train``) makes a
second signal stop at once, for a user who does not want to wait for the checkpoint.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal after writing its checkpoint."""


class _Flag:
    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None


_flag = _Flag()


def stop_requested() -> bool:
    """True once SIGINT or SIGTERM arrived inside :func:`deferred_interrupts`."""
    return _flag.requested


def reset() -> None:
    _flag.requested = False
    _flag.signal = None


@contextlib.contextmanager
def deferred_interrupts(escalate: bool = False) -> Iterator[None]:
    """Turn SIGINT/SIGTERM into a stop request for the duration of the block.

    Outside the main thread (where Python cannot install handlers) this does nothing, and a
    KeyboardInterrupt is handled as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _flag.requested and escalate:
            raise KeyboardInterrupt
        _flag.requested = True
        _flag.signal = signum

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def install_for_worker() -> None:
    """In a matrix worker process: signals only ever request a stop (the driver decides)."""

    def handler(signum: int, frame: Any) -> None:
        _flag.requested = True
        _flag.signal = signum

    for s in SIGNALS:
        signal.signal(s, handler)

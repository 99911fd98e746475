"""A run folder's lock and its checkpoint: the two things that make a run resumable and safe.

The lock (``flock`` on ``<run>/.lock``) is taken before anything in the folder is read or
changed and held until the run ends, so two processes never train, replace or clean the same
run. The checkpoint is written to a temporary file and renamed over ``checkpoint.pt``; a write
that fails (a full disk) removes the temporary file and leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from memtasks.core.errors import MemtasksError


class RunError(MemtasksError):
    """The run cannot start: bad config, unreadable runs dir, corrupt checkpoint. Nothing was changed."""


class RunBusy(RunError):
    """Another process holds the run folder's lock (it is training this run now)."""


class RunLock:
    """An exclusive, non-blocking lock on a run folder."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.handle: Any = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise RunBusy(f"{self.path.parent} is being trained by another process; wait for it or stop it") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to ``<path>.tmp``, then rename; on any failure the temporary file is removed."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_weights(path: Path, model: torch.nn.Module) -> None:
    """The trained model's ``state_dict`` alone (tensors on the CPU, no optimiser or RNG state):
    what ``memtasks eval`` and ``memtasks inspect`` load. Written atomically like a checkpoint."""
    save_checkpoint(path, {k: v.detach().cpu() for k, v in model.state_dict().items()})


def load_checkpoint(path: Path, device: torch.device, digest: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, validated against the config ``digest``."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or "loop" not in state or "model" not in state:
            raise ValueError("missing fields")
    except Exception as exc:
        raise RunError(
            f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc}); "
            "delete it or re-run with --force to start this run afresh"
        ) from None
    if state.get("config_digest") != digest:
        raise RunError(f"{path} belongs to a different configuration; use --force to start afresh")
    return state

"""Where and with what a run ran: the device, the code's git commit, library versions."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import memtasks
from memtasks.train.checkpoint import RunError


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RunError("--device mps was asked for but torch sees no MPS device")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit, read once per process: a long-lived matrix worker keeps the code
    it imported, so later commits must not be attributed to its runs."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions(task_version: Any) -> dict[str, Any]:
    return {
        "memtasks": memtasks.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "task": task_version,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()

"""memtasks: algorithmic memory tasks and a model zoo to benchmark on them.

Importing the package is cheap (no torch): the task registry and its helpers load on first use,
so ``memtasks --help`` and listings start fast.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_TASK_API = ("TASKS", "Batch", "Task", "get_task", "list_tasks", "register_task")
__all__ = [*_TASK_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _TASK_API:
        from memtasks import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module 'memtasks' has no attribute {name!r}")

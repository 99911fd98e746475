"""The task suite. Importing this package registers every built-in task; it does not import torch
(each task module takes it from :mod:`memtasks.core.lazy`, imported on first use)."""
from memtasks.tasks.base import TASKS, Batch, Task, get_task, list_tasks, register_task

from memtasks.tasks import (  # noqa: F401  (imported to register)
    adding,
    associative_recall,
    binary_addition,
    copy,
    delayed_xor,
    dynamic_ngrams,
    priority_sort,
    repeat_copy,
)

__all__ = ["TASKS", "Batch", "Task", "get_task", "list_tasks", "register_task"]

"""Scoring a model on a task's fixed evaluation sets."""
from __future__ import annotations

from typing import Any

import torch

from memtasks.tasks.base import Task


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    task: Task,
    size: int,
    device: torch.device | str = "cpu",
    points: dict[str, tuple[int | None, dict[str, Any]]] | None = None,
) -> dict[str, dict[str, float]]:
    """The task's metrics of ``model`` on the fixed evaluation set of ``size`` sequences at each
    point (``label -> (length, overrides)``; default: the task's own points, the training range
    and every generalisation length). The sets are the same on every machine and run."""
    model.eval()
    metrics: dict[str, dict[str, float]] = {}
    for label, (length, overrides) in (points if points is not None else task.eval_points()).items():
        batch = task.eval_batch(length, size, device=device, **overrides)
        outputs, _ = model(batch.inputs)
        metrics[label] = task.metrics(outputs.float(), batch)
    return metrics

"""Refusing sizes that cannot fit before anything is allocated.

A batch of ``B`` sequences of ``T`` steps holds its inputs, targets and mask, and a model run over
it keeps about its recurrent state at every step; at 4 bytes a float that is
``B · T · (d_in + d_out + 1 + state floats) · 4`` bytes. A length or size whose estimate exceeds
:func:`memory_limit_bytes` (half of this machine's physical memory) is refused with the limit
named, instead of dying inside an allocation minutes later.
"""
from __future__ import annotations

from typing import Any

from memtasks.core.config import ConfigError
from memtasks.core.limits import GIB, memory_limit_bytes


def batch_bytes(task: Any, batch_size: int, length: int | None, state_floats: int = 0) -> int:
    """Estimated bytes of a batch at ``length`` (None: the longest training length) and of a
    model's per-step state over it."""
    steps = task.max_steps(task.train_range[1] if length is None else length)
    return int(batch_size) * int(steps) * (task.d_in + task.d_out + 1 + int(state_floats)) * 4


def check_sample_size(task: Any, batch_size: int, length: int | None, what: str, state_floats: int = 0) -> None:
    """Raise ``ConfigError`` naming ``what`` when the estimate exceeds the limit."""
    need = batch_bytes(task, batch_size, length, state_floats)
    limit = memory_limit_bytes()
    if need > limit:
        shown = task.train_range[1] if length is None else length
        raise ConfigError(
            f"{what} {shown}: {batch_size} sequence(s) of {task.max_steps(shown):,} steps would need about "
            f"{need / GIB:,.1f} GiB, over the limit of {limit / GIB:,.1f} GiB (half of this machine's memory); "
            "use a shorter length or a smaller batch"
        )


def check_run_sizes(task: Any, batch_size: int, eval_size: int, state_floats: int) -> None:
    """What a run draws: its training batches and the evaluation set at every generalisation
    length, each with a model of ``state_floats`` floats of state per sequence."""
    check_sample_size(task, batch_size, None, "training length", state_floats)
    for length, _ in task.eval_points().values():
        if length is not None:
            check_sample_size(task, eval_size, length, "generalisation length", state_floats)

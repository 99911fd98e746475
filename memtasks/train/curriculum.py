"""Training-length schedules.

* ``none``: the task's own sampler, each sequence's length drawn from the whole training range
  (batches mix lengths, so short sequences are padded to the longest).
* ``uniform`` (default): one length per batch, drawn uniformly over the whole training range —
  the same distribution of lengths as the papers' uniform sampling, without padding waste.
* ``grow``: start with the shortest fifth of the range and widen it by another fifth each time
  the current range is solved (the running solved metric of recent training batches meets the
  task's threshold); each change is recorded in the metrics.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from memtasks.tasks.base import Batch, Task


@dataclass
class Curriculum:
    kind: str
    lo: int
    hi: int  # current upper end of the training range
    full_hi: int
    step: int
    recent: deque = field(default_factory=lambda: deque(maxlen=20))

    @classmethod
    def create(cls, kind: str, task: Task) -> "Curriculum":
        lo, hi = task.train_range
        step = max(1, (hi - lo + 1) // 5)
        start = min(hi, lo + step - 1) if kind == "grow" else hi
        return cls(kind, lo, start, hi, step)

    def sample(self, task: Task, batch_size: int, generator: torch.Generator) -> Batch:
        if self.kind == "none":
            return task.sample(batch_size, generator)
        length = int(torch.randint(self.lo, self.hi + 1, (1,), generator=generator, device=generator.device))
        return task.sample(batch_size, generator, length=length)

    def observe(self, task: Task, metrics: dict[str, float]) -> bool:
        """Feed one training batch's metrics; return True when the range widened."""
        if self.kind != "grow" or self.hi >= self.full_hi:
            return False
        self.recent.append(metrics[task.solved_metric])
        if len(self.recent) == self.recent.maxlen and sum(self.recent) / len(self.recent) < task.solved_threshold:
            self.hi = min(self.full_hi, self.hi + self.step)
            self.recent.clear()
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"hi": self.hi, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hi = state["hi"]
        self.recent.clear()
        self.recent.extend(state["recent"])

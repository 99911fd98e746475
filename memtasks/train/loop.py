"""The training loop's state: counters, the last evaluation, the best value so far and why the
loop stopped. All of it goes into the checkpoint, so a resumed run continues exactly."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoopState:
    """Mutable training-loop state; all of it goes into the checkpoint (``vars(state)``)."""

    step: int = 0
    seen: int = 0
    train_time: float = 0.0
    next_eval: int = 0
    sequences_to_solve: int | None = None
    solved_streak: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    rows: int = 0  # lines in metrics.jsonl: a resumed run keeps exactly these
    wall_time: float = 0.0  # seconds of wall time spent in this run so far, across resumes
    start_value: float | None = None  # the solved metric at the first evaluation (the untrained model)
    best: float | None = None  # the best value of the solved metric so far, and where
    best_at: int = 0
    since_best: int = 0  # evaluations since the last improvement
    stop_reason: str = "budget"

    def track_best(self, value: float, min_delta: float) -> None:
        """Follow the best value of the task's solved metric (lower is better) for the plateau stop
        and the collapse flag; an improvement must beat the best by ``min_delta`` of it."""
        if self.start_value is None:
            self.start_value = value
        if not math.isfinite(value):
            self.since_best += 1
        elif self.best is None or value < self.best - min_delta * abs(self.best):
            self.best, self.best_at, self.since_best = value, self.seen, 0
        else:
            self.since_best += 1

    def widened(self) -> None:
        """The curriculum widened its range: the run is making progress, so the plateau count
        starts again (the solved metric at the whole training range can stay flat while a
        curriculum works through its shorter lengths)."""
        self.since_best = 0

    def progress(self, total: int, loss: float, metrics: dict[str, float], solved_metric: str) -> dict[str, Any]:
        """What a progress display shows: sequences, loss, rate, ETA."""
        rate = self.seen / self.train_time if self.train_time > 0 else 0.0
        remaining = max(0, total - self.seen)
        return {
            "sequences": self.seen,
            "total": total,
            "loss": loss,
            "bit_errors": metrics.get("bit_errors"),
            "metric": metrics.get(solved_metric),
            "rate": rate,
            "eta_s": remaining / rate if rate > 0 else None,
        }

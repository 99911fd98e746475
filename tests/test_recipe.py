"""The fair-benchmark pieces of the trainer (issue 13): plateau stop, the collapse flag and the
validation set a tuning phase chooses on."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from memtasks.results import store as R
from memtasks.tasks import get_task
from memtasks.train.config import RunConfig
from memtasks.train.evaluation import _fingerprint_list, validation_batch
from memtasks.train.loop import LoopState
from memtasks.train.run_record import collapse
from memtasks.train.trainer import train


def tiny(**kw) -> RunConfig:
    fields = dict(task="copy", model="lstm", sequences=4096, batch_size=16, eval_every=256, eval_size=8,
                  task_params={"bits": 4, "max_length": 3, "generalise": (5,)}, model_params={"hidden_size": 8})
    fields.update(kw)
    return RunConfig(**fields)


def test_a_run_that_stops_improving_stops_as_plateaued(tmp_path):
    # lr 1e-9: nothing moves, so after `plateau_patience` evaluations without improvement it stops
    result = train(tiny(lr=1e-9, plateau_patience=3), tmp_path, wandb_mode="disabled")
    assert result["status"] == "ok" and result["stop_reason"] == "plateaued"
    rows = R.eval_rows(R.run_dir(tmp_path, "default", "copy", "lstm", 0))
    assert len(rows) == 1 + 3 and result["sequences_seen"] == 3 * 256 < 4096
    budget = train(tiny(lr=1e-9, seed=1), tmp_path, wandb_mode="disabled")  # without it: the whole budget
    assert budget["stop_reason"] == "budget" and budget["sequences_seen"] == 4096


def test_track_best_counts_evaluations_without_improvement():
    loop = LoopState()
    for seen, value in [(0, 10.0), (1, 5.0), (2, 4.99), (3, 4.0), (4, math.nan), (5, 4.0)]:
        loop.seen = seen
        loop.track_best(value, 0.01)
    assert loop.start_value == 10.0 and loop.best == 4.0 and loop.best_at == 3
    assert loop.since_best == 2  # NaN and an equal value are no improvement; 4.99 was not 1% better than 5


@pytest.mark.parametrize("start,best,final,collapsed", [
    (4.0, 0.0, 3.0, True),     # solved, then back near the start: a collapse
    (4.0, 0.0, 0.5, False),    # solved, then a little worse: not a collapse
    (4.0, 0.015, 3.5, True),   # near solved (within 2x the 0.01 threshold), then back
    (4.0, 1.0, 3.9, False),    # never near solved: no collapse, just not learning
    (4.0, 0.0, math.nan, True),
])
def test_collapse_flag(start, best, final, collapsed):
    task = get_task("copy")  # solved: bit_errors < 0.01
    loop = SimpleNamespace(start_value=start, best=best, best_at=100, last_eval={"train": {"bit_errors": final}})
    flag = collapse(task, loop)
    assert (flag is not None) == collapsed
    if flag:
        assert flag["best"] == best and flag["start"] == start and flag["metric"] == "bit_errors"


def test_validation_set_is_disjoint_from_every_evaluation_set():
    task = get_task("copy", bits=3, max_length=3, generalise=(5,))  # small: collisions are likely
    val = validation_batch(task, 32)
    assert val.batch_size == 32
    scored = set()
    for length, overrides in task.eval_points().values():
        scored |= set(_fingerprint_list(task.eval_batch(length, 32, **overrides)))
    raw = task.eval_batch(None, 32, seed=7919)
    assert set(_fingerprint_list(raw)) & scored, "the check needs a task where raw draws do collide"
    assert not set(_fingerprint_list(val)) & scored
    assert _fingerprint_list(val) == _fingerprint_list(validation_batch(task, 32))  # stable


def test_validate_records_validation_metrics_at_every_evaluation(tmp_path):
    train(tiny(sequences=512, validate=True), tmp_path, wandb_mode="disabled")
    rows = R.eval_rows(R.run_dir(tmp_path, "default", "copy", "lstm", 0))
    assert len(rows) == 3 and all(set(r["validation"]) == set(r["metrics"]["train"]) for r in rows)

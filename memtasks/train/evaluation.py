"""Scoring a model on a task's fixed evaluation sets: what the trainer records at every
evaluation, and the public function to score any model, a plugin or your own, from Python::

    from memtasks.tasks import get_task
    from memtasks.train.evaluation import evaluate

    task = get_task("copy")
    metrics = evaluate(model, task, lengths=[None, 50, 200])  # {"train": {...}, "50": {...}, "200": {...}}

The sets are derived from a stable hash of the task, length, size and overrides, so every model
and machine scores the same sequences; a run's record names their sha256 (``eval_hashes``).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from memtasks.core.config import ConfigError
from memtasks.tasks.base import Task
from memtasks.tasks.limits import check_sample_size

Points = dict[str, tuple[int | None, dict[str, Any]]]  # label -> (length, sample overrides)
DEFAULT_SIZE = 128  # sequences per set, as RunConfig.eval_size


def point_label(length: int | None, overrides: Mapping[str, Any]) -> str:
    """The label of an evaluation point, as run records write them: ``train`` (the training
    range), ``"50"``, ``"repeats=20"`` (an override at the training range), ``"50,repeats=20"``."""
    parts = [] if length is None else [str(length)]
    parts += [f"{key}={value}" for key, value in sorted(overrides.items())]
    return ",".join(parts) or "train"


def eval_points(
    task: Task, lengths: Iterable[int | None] | None = None, overrides: Mapping[str, Any] | None = None
) -> Points:
    """The points to score: the task's own (``lengths=None``: the training range, every
    generalisation length and override point) or ``lengths`` (None in it: the training range),
    each with the sample ``overrides`` added (e.g. ``{"repeats": 20}`` for repeat_copy).

    Raises ``ConfigError`` naming a length that is not a whole number >= 1 or an override the
    task does not take."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(task.sample_overrides))
    if unknown:
        allowed = ", ".join(task.sample_overrides) or "none"
        raise ConfigError(f"task {task.name!r} takes no sample override {', '.join(unknown)}; allowed: {allowed}")
    if lengths is None:
        base = task.eval_points()
        if not overrides:
            return base
        points = ({**own, **overrides} for _, own in base.values())
        return {point_label(length, o): (length, o) for (length, _), o in zip(base.values(), points)}
    out: Points = {}
    for length in lengths:
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ConfigError(f"evaluation length {length!r} must be a whole number >= 1 (or None: the training range)")
        out[point_label(length, overrides)] = (length, dict(overrides))
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    task: Task,
    size: int = DEFAULT_SIZE,
    device: torch.device | str = "cpu",
    points: Points | None = None,
    *,
    lengths: Iterable[int | None] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """The task's metrics of ``model`` on the fixed evaluation set of ``size`` sequences at each
    point: ``label -> {metric: value}``.

    Points: ``points`` (``label -> (length, overrides)``) if given, else :func:`eval_points` of
    ``lengths`` and ``overrides`` (default: the task's own points, as the trainer records them).
    ``model`` is any module with ``forward(x) -> (y, state)``, ``x`` ``(B, T, d_in)``. A point
    whose set would not fit in memory is refused (``ConfigError``) before anything is drawn.

    Each set is scored as one batch on ``device``, as the trainer does, so scoring a run's
    weights on its recorded device and thread count reproduces its recorded metrics exactly.
    """
    if points is None:
        points = eval_points(task, lengths, overrides)
    state_floats = model.state_size() if callable(getattr(model, "state_size", None)) else 0
    for label, (length, _) in points.items():
        what = "evaluation length" if length is not None else f"evaluation point {label!r} (the training range)"
        check_sample_size(task, size, length, what, state_floats)
    model.eval()
    metrics: dict[str, dict[str, float]] = {}
    for label, (length, point_overrides) in points.items():
        batch = task.eval_batch(length, size, device=device, **point_overrides)
        outputs, _ = model(batch.inputs)
        metrics[label] = task.metrics(outputs.float(), batch)
    return metrics


VALIDATION_SEED = 7919  # the validation set's own stream; the evaluation sets use seed 0


def validation_batch(task: Task, size: int = DEFAULT_SIZE, device: torch.device | str | None = None) -> Any:
    """The validation set: ``size`` sequences at the training lengths from their own stable seed,
    with every sequence that also occurs in an evaluation set (any point, same size) left out, so
    choosing a setting on it never sees a sequence that is later scored. Drawn as ``2 * size``
    candidates; a task too small to leave ``size`` of them is an error naming it."""
    from memtasks.tasks.base import Batch

    scored: set[bytes] = set()
    for length, overrides in task.eval_points().values():
        scored |= set(_fingerprint_list(task.eval_batch(length, size, **overrides)))
    pool = task.eval_batch(None, 2 * size, seed=VALIDATION_SEED)
    fresh = [i for i, f in enumerate(_fingerprint_list(pool)) if f not in scored][:size]
    if len(fresh) < size:
        raise ConfigError(
            f"task {task.name!r}: only {len(fresh)} of {2 * size} validation candidates are outside the "
            f"evaluation sets; use a smaller eval_size or a longer training range"
        )
    idx = torch.tensor(fresh, dtype=torch.long)
    picked = Batch(pool.inputs[idx], pool.targets[idx], pool.mask[idx], pool.lengths[idx],
                   {k: v[idx] for k, v in pool.extras.items()})
    return picked.to(device)


def _fingerprint_list(batch: Any) -> list[bytes]:
    """One byte string per sequence: its inputs and targets over its own steps."""
    out = []
    for i in range(batch.batch_size):
        steps = int(batch.extras["steps"][i]) if "steps" in batch.extras else batch.inputs.shape[1]
        out.append(batch.inputs[i, :steps].numpy().tobytes() + b"|" + batch.targets[i, :steps].numpy().tobytes())
    return out

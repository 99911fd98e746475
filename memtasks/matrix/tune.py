"""Equal tuning for every model: the ``[tune]`` phase of a matrix.

Every (task, model) of the matrix gets the same trials before its final seeds run: each value of
one grid (the learning rate for gradient-trained models; one closed-form hyper-parameter for a
model like the ESN, with as many values), at one seed, for a fixed fraction of the cell's
sequence budget, scored on a validation set that shares no sequence with the evaluation sets.
The value with the lowest validation score of the task's solved metric at the end of its trial
wins (a diverged or failed trial scores +inf; ties go to the first in grid order), and the final
seeds train with it::

    [tune]
    lr = [3e-4, 1e-3, 3e-3]     # the grid, at least 3 values
    fraction = 0.25             # of each cell's sequence budget
    seed = 0                    # the one seed the trials run at
    [tune.models.esn]           # a model without gradient steps: one hyper-parameter, as many values
    spectral_radius = [0.8, 0.95, 1.1]

Trials are ordinary runs (resumable, locked, recorded), one group per grid value
(``<group>-tune-lr0.001``, ``<group>-tune-spectral_radius0.95``); the choice is written to
``runs/<group>/<task>/<model>/tuning.json`` and every final run's ``config.json`` carries the
value it trained with.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from memtasks.core.config import ConfigError, check_float, check_int
from memtasks.train.config import RunConfig

MIN_GRID = 3


@dataclass(frozen=True)
class TuneSpec:
    lr: tuple[float, ...]
    fraction: float = 0.25
    seed: int = 0
    models: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)

    def grid(self, model: str, closed_form: bool) -> tuple[str, tuple[Any, ...]] | None:
        """``(knob, values)`` a model is tuned over: ``lr``, or its own table; None: not tuned."""
        own = self.models.get(model)
        if own:
            ((knob, values),) = own.items()
            return knob, tuple(values)
        return None if closed_form else ("lr", self.lr)


def parse_tune(data: Any, source: str) -> TuneSpec | None:
    """The ``[tune]`` table of a spec, validated; every problem names the field."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: [tune] must be a table, got {type(data).__name__}")
    allowed = ("lr", "fraction", "seed", "models")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{source}: [tune] has no key {key!r}; allowed: {', '.join(allowed)}")
    lr = _grid(data.get("lr"), f"{source}: [tune] lr")
    for v in lr:
        check_float("tune", "lr", v, 0.0, open_lo=True)
    fraction = data.get("fraction", 0.25)
    check_float("tune", "fraction", fraction, 0.0, 1.0, open_lo=True)
    seed = data.get("seed", 0)
    check_int("tune", "seed", seed, 0)
    models: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name, table in dict(data.get("models", {})).items():
        if not isinstance(table, Mapping) or len(table) != 1:
            raise ConfigError(f"{source}: [tune.models.{name}] must name exactly one hyper-parameter and its grid")
        ((knob, values),) = table.items()
        grid = _grid(values, f"{source}: [tune.models.{name}] {knob}")
        if len(grid) != len(lr):
            raise ConfigError(
                f"{source}: [tune.models.{name}] {knob} has {len(grid)} values; every model gets the same number "
                f"of trials as the learning-rate grid ({len(lr)})"
            )
        models[name] = {knob: grid}
    return TuneSpec(lr, float(fraction), seed, models)


def _grid(values: Any, where: str) -> tuple[Any, ...]:
    if not isinstance(values, list) or len(values) < MIN_GRID:
        raise ConfigError(f"{where} must be a list of at least {MIN_GRID} values, got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{where} lists a value twice: {values!r}")
    return tuple(values)


def tune_group(group: str, knob: str, value: Any) -> str:
    """The group of the trials at one grid value: ``<group>-tune-<knob><value>``."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{group}-tune-{knob}{shown}"


@dataclass(frozen=True)
class Trial:
    """One tuning run of (task, model) at one value of its grid."""

    task: str
    model: str
    knob: str
    value: Any
    config: RunConfig


def trials(cells: list[RunConfig], tune: TuneSpec) -> list[Trial]:
    """The tuning runs for the (task, model) pairs of ``cells`` (one per grid value), built from
    the pair's first cell: the tune seed, ``fraction`` of its budget, the validation set on."""
    from memtasks.models import MODELS

    out, seen = [], set()
    for cell in cells:
        if (cell.task, cell.model) in seen:
            continue
        seen.add((cell.task, cell.model))
        grid = tune.grid(cell.model, MODELS.get(cell.model).closed_form)
        if grid is None:
            continue
        knob, values = grid
        for value in values:
            changes: dict[str, Any] = {
                "seed": tune.seed,
                "group": tune_group(cell.group, knob, value),
                "sequences": max(cell.batch_size, math.ceil(tune.fraction * cell.sequences)),
                "validate": True,
            }
            if knob == "lr":
                changes["lr"] = float(value)
            else:
                changes["model_params"] = {**cell.model_params, knob: value}
            out.append(Trial(cell.task, cell.model, knob, value, dataclasses.replace(cell, **changes)))
    return out


def trial_folder(runs_dir: Path, trial: Trial) -> Path:
    from memtasks.results import store as R

    c = trial.config
    return R.run_dir(runs_dir, c.group, c.task, c.model, c.seed)


def validation_score(folder: Path, metric: str) -> float:
    """The trial's validation value of ``metric`` at its last evaluation; +inf when it diverged,
    failed or never evaluated."""
    from memtasks.results import store as R

    result = R.finished_result(folder)
    if result is None or result["status"] != "ok":
        return math.inf
    rows = [r for r in R.eval_rows(folder) if "validation" in r]
    if not rows:
        return math.inf
    value = rows[-1]["validation"].get(metric, math.inf)
    return value if math.isfinite(value) else math.inf


def choose(runs_dir: Path, all_trials: list[Trial]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (task, model): the grid, each value's validation score, and the chosen value."""
    from memtasks.tasks import get_task

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for trial in all_trials:
        key = (trial.task, trial.model)
        metric = get_task(trial.task, **trial.config.task_params).solved_metric
        entry = out.setdefault(key, {"knob": trial.knob, "metric": metric, "grid": [], "validation": [],
                                     "fraction": None, "seed": trial.config.seed,
                                     "sequences": trial.config.sequences})
        entry["grid"].append(trial.value)
        entry.setdefault("groups", []).append(trial.config.group)
        entry["validation"].append(validation_score(trial_folder(runs_dir, trial), metric))
    for entry in out.values():
        best = min(range(len(entry["grid"])), key=lambda i: (entry["validation"][i], i))
        entry["chosen"] = entry["grid"][best]
        entry["all_failed"] = all(math.isinf(v) for v in entry["validation"])
    return out


def apply(cells: list[RunConfig], choices: Mapping[tuple[str, str], Mapping[str, Any]]) -> list[RunConfig]:
    """The final cells, each with its (task, model)'s chosen value."""
    out = []
    for cell in cells:
        choice = choices.get((cell.task, cell.model))
        if choice is None:
            out.append(cell)
        elif choice["knob"] == "lr":
            out.append(dataclasses.replace(cell, lr=float(choice["chosen"])))
        else:
            out.append(dataclasses.replace(cell, model_params={**cell.model_params, choice["knob"]: choice["chosen"]}))
    return out


def write_choices(runs_dir: Path, group: str, choices: Mapping[tuple[str, str], Mapping[str, Any]], tune: TuneSpec) -> None:
    """``runs/<group>/<task>/<model>/tuning.json``: which value was chosen from which validation scores."""
    from memtasks.results import store as R

    for (task, model), entry in choices.items():
        doc = {**entry, "fraction": tune.fraction,
               "validation": [v if math.isfinite(v) else None for v in entry["validation"]]}
        R.write_text_atomic(Path(runs_dir) / group / task / model / "tuning.json", json.dumps(doc, indent=2) + "\n")

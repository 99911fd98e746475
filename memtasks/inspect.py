"""Look inside a trained run: rebuild its model from the record, score it at any length, and
draw what its memory did.

* :func:`load_run` rebuilds a finished run's task and model from ``config.json`` (the same
  architecture, budget sizing included, on the path that actually ran: ``ran_with``) and loads
  its trained weights, ``weights.pt``. Every way this can fail (no such folder, an unfinished or
  failed run, a record older than ``weights.pt``, a model whose plugin is not loaded, weights
  that do not fit) is an :class:`InspectError` that says what to do.
* :func:`evaluate_run` scores it with :func:`memtasks.train.evaluation.evaluate` and returns an
  evaluation record; :func:`write_eval` writes it to ``<run>/evals/<name>.json`` (never
  ``result.json``). With the record's own points and set size it reproduces the record's final
  metrics exactly, and says so (``record.reproduced``).

Drawing what the memory did is :mod:`memtasks.memory_figure`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from memtasks.core.config import ConfigError, ConfigKeyError, parse_typed, unknown_key_message
from memtasks.core.errors import MemtasksError
from memtasks.models import MemoryModel
from memtasks.models.base import MODELS
from memtasks.results import store as R
from memtasks.tasks import TASKS, get_task
from memtasks.tasks.base import Task
from memtasks.train.config import RunConfig
from memtasks.train.evaluation import Points, eval_points, evaluate

WEIGHTS_FILE = "weights.pt"  # as memtasks.train.trainer.WEIGHTS_FILE: the trainer writes it, we read it
EVALS_DIR = "evals"
EVAL_SCHEMA_VERSION = 1
TRACE_STATE_FACTOR = 4  # a trace keeps a few state-sized arrays per step: the size check counts them


class InspectError(MemtasksError):
    """A run folder that cannot be evaluated or drawn; the message says why and what to do."""


@dataclass
class TrainedRun:
    """A finished run rebuilt from its record, its trained weights loaded, ready to score or draw."""

    folder: Path
    config: RunConfig  # what was trained
    task: Task  # the task as trained, or with the parameters asked for (``with_task_params``)
    model: MemoryModel  # in eval mode, on ``device``
    result: dict[str, Any]  # result.json
    device: torch.device
    weights_sha256: str
    task_params: dict[str, Any] = dataclasses.field(default_factory=dict)  # changed from the record's

    @property
    def name(self) -> str:
        return f"{self.config.task}/{self.config.model}/seed-{self.config.seed}"


# --- loading ------------------------------------------------------------------------------------
def check_run_folder(folder: Path | str) -> Path:
    """The cheap checks of :func:`load_run` (no model is built): a run folder with a finished
    record and trained weights."""
    if str(folder) == "":
        raise InspectError("'': an empty name is not a run folder; give one like runs/<group>/<task>/<model>/seed-<k>")
    folder = Path(folder)
    if folder.is_file():
        raise InspectError(f"{folder}: is a file, not a folder; give its run folder, {folder.parent}")
    if not folder.is_dir():
        raise InspectError(f"{folder}: no such run folder; give one like runs/<group>/<task>/<model>/seed-<k>")
    if not (folder / "config.json").is_file():
        raise InspectError(f"{folder}: not a run folder (no config.json); give one like runs/<group>/<task>/<model>/seed-<k>")
    result = R.finished_result(folder)  # a corrupt record is a RecordError naming the file
    if result is None:
        if (folder / "result.json").exists():
            raise InspectError(f"{folder}: the run failed, so it has no trained weights; train it again with --force")
        raise InspectError(
            f"{folder}: the run is unfinished (no result.json yet); finish it first (the same memtasks train or "
            "matrix command resumes it)"
        )
    if not (folder / WEIGHTS_FILE).is_file():
        raise InspectError(
            f"{folder}: no trained weights ({WEIGHTS_FILE}): the record was written before runs kept them; "
            "train it again with --force to get them"
        )
    return folder


def load_run(folder: Path | str, device: str | torch.device | None = None) -> TrainedRun:
    """Rebuild the finished run in ``folder`` and load its trained weights.

    ``device``: where to run it; default the device the run trained on when this machine has it,
    else the CPU. The model takes the path that actually ran (``config.json``'s ``ran_with``:
    a run that trained without the C kernels is evaluated without them), so its metrics are
    those of the record.
    """
    from memtasks.train.build import make_model, make_task

    folder = check_run_folder(folder)
    result = R.finished_result(folder)
    assert result is not None
    recorded, config = _read_config(folder / "config.json")
    if config.model not in MODELS:
        raise InspectError(
            f"{folder}: model {config.model!r} is not installed; load the plugin that registers it with "
            "--plugin FILE_OR_MODULE, or install its package"
        )
    if config.task not in TASKS:
        raise InspectError(
            f"{folder}: task {config.task!r} is not installed; load the plugin that registers it with "
            "--plugin FILE_OR_MODULE, or install its package"
        )
    ran_with = recorded.get("ran_with") or {}
    fields = {f.name for f in dataclasses.fields(MODELS.get(config.model).config_cls)}
    model_config = config
    if ran_with.get("cpu_kernel") is False and "cpu_kernel" in fields:  # it trained on the PyTorch path
        model_config = dataclasses.replace(config, model_params={**config.model_params, "cpu_kernel": False})
    task = make_task(config)
    model = make_model(model_config, task)
    path = folder / WEIGHTS_FILE
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InspectError(f"{path}: unreadable weights ({type(exc).__name__}); train the run again with --force") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InspectError(
            f"{path}: the weights do not fit the model rebuilt from config.json ({first[1].strip() if len(first) > 1 else first[0]}); "
            f"the model's code changed since the run: train it again with --force"
        ) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    dev = _pick(device, recorded.get("device"))
    return TrainedRun(folder, config, task, model.to(dev).eval(), result, dev, digest)


def _read_config(path: Path) -> tuple[dict[str, Any], RunConfig]:
    """config.json and the RunConfig it records."""
    try:
        recorded = json.loads(path.read_text())
        return recorded, RunConfig.from_dict(recorded["run"])
    except (ValueError, KeyError, TypeError) as exc:  # ConfigError is a ValueError
        raise InspectError(f"{path}: not a valid memtasks run config ({exc})") from None


def _pick(device: str | torch.device | None, recorded: str | None) -> torch.device:
    from memtasks.train.provenance import pick_device

    if device is not None:
        return pick_device(str(device))
    kind = torch.device(recorded).type if recorded else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    return torch.device(recorded) if recorded and available.get(kind, False) else torch.device("cpu")


def parse_task_sets(task: Task, assignments: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set task.<name>=value`` strings as ``(task parameters, sample overrides)``: a name the
    task samples with (``task.repeats=20`` for repeat_copy) is a sample override, a field of
    the task a parameter; anything else is refused with the names allowed."""
    params: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    cls = type(task)
    fields = [f.name for f in dataclasses.fields(cls)]
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.startswith("task.") or not key[5:]:
            raise ConfigError(f"--set {item!r}: expected task.<parameter>=value (a parameter or sample override of {task.name!r})")
        name = key[5:]
        if name in task.sample_overrides:
            overrides[name] = _literal(raw)
        elif name in fields:
            params[name] = parse_typed(typing.get_type_hints(cls)[name], raw, f"{task.name} task parameter {name}")
        else:
            raise ConfigKeyError(unknown_key_message(name, fields + list(task.sample_overrides), f"{task.name} task parameter"))
    return params, overrides


def _literal(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def with_task_params(run: TrainedRun, params: Mapping[str, Any]) -> TrainedRun:
    """``run`` with its task rebuilt with ``params`` changed (the model stays as trained)."""
    if not params:
        return run
    merged = {**run.config.task_params, **params}
    try:
        task = get_task(run.config.task, **merged)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, MemtasksError):
            raise
        raise ConfigError(f"task {run.config.task!r}: {exc}") from None
    if (task.d_in, task.d_out) != (run.task.d_in, run.task.d_out):
        changed = ", ".join(f"task.{k}={v}" for k, v in params.items())
        raise ConfigError(
            f"{changed} gives {task.name!r} d_in={task.d_in}, d_out={task.d_out}, but the trained model takes "
            f"d_in={run.task.d_in}, d_out={run.task.d_out}; change only parameters that keep the input and output widths"
        )
    return dataclasses.replace(run, task=task, task_params={**run.task_params, **params})


# --- evaluation ------------------------------------------------------------------------------------
def evaluate_run(
    run: TrainedRun,
    lengths: Iterable[int | None] | None = None,
    overrides: Mapping[str, Any] | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Score ``run`` at ``lengths`` (default: the record's evaluation points) with ``overrides``
    on fixed sets of ``size`` sequences (default: the run's ``eval_size``); the evaluation record.

    ``record.reproduced`` says whether the metrics equal result.json's ``final`` exactly at
    every point both have (None where none is comparable: other sets or another task)."""
    from memtasks.train.provenance import git_commit, versions

    size = run.config.eval_size if size is None else size
    points = eval_points(run.task, None if lengths is None else list(lengths), overrides)
    metrics = evaluate(run.model, run.task, size, run.device, points)
    return {
        "schema_version": EVAL_SCHEMA_VERSION,
        "task": run.config.task,
        "model": run.config.model,
        "seed": run.config.seed,
        "group": run.config.group,
        "task_params": run.task.params(),
        "changed_task_params": dict(run.task_params),
        "size": size,
        "device": str(run.device),
        "threads": torch.get_num_threads(),
        "weights_sha256": run.weights_sha256,
        "versions": versions(run.task.version),
        "git_commit": git_commit(),
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "points": {
            label: {
                "length": length,
                "overrides": dict(point_overrides),
                "eval_hash": run.task.eval_hash(length, size, **point_overrides),
                "metrics": metrics[label],
            }
            for label, (length, point_overrides) in points.items()
        },
        "record": _compare(run, points, metrics, size),
    }


def _compare(run: TrainedRun, points: Points, metrics: dict[str, dict[str, float]], size: int) -> dict[str, Any]:
    final = run.result.get("final") or {}
    comparable = [] if run.task_params or size != run.config.eval_size else [label for label in points if label in final]
    differ = [label for label in comparable if final[label] != metrics[label]]
    return {
        "status": run.result.get("status"),
        "compared": comparable,
        "differ": differ,
        "reproduced": (not differ) if comparable else None,
    }


def eval_name(
    lengths: Sequence[int | None] | None, overrides: Mapping[str, Any], params: Mapping[str, Any], size: int | None
) -> str:
    """The file name of an evaluation, from what was asked: ``record.json`` for the record's own
    points, else e.g. ``length-50-200_repeats-20_size-256.json``."""
    parts = []
    if lengths is not None:
        parts.append("length-" + "-".join("train" if n is None else str(n) for n in lengths))
    parts += [f"{k}-{v}" for k, v in sorted({**params, **overrides}.items())]
    if size is not None:
        parts.append(f"size-{size}")
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "-", "_".join(parts)).strip("-") or "record"
    if len(name) > 100:
        name = "custom-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name + ".json"


def write_eval(run: TrainedRun, record: dict[str, Any], name: str) -> Path:
    """Write ``record`` atomically to ``<run>/evals/<name>``; result.json is never touched."""
    path = run.folder / EVALS_DIR / name
    R.write_json_atomic(path, record)
    return path


# --- traces and figures -----------------------------------------------------------------------------

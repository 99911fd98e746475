"""What a run writes about itself: the resolved configuration (``config.json``) and its result
(``result.json``, whose fields :class:`memtasks.results.schema.RunResult` defines), and reading
back the configuration a run folder holds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from memtasks.models import MemoryModel
from memtasks.results.schema import SCHEMA_VERSION
from memtasks.tasks.base import Task
from memtasks.train.build import jsonable
from memtasks.train.checkpoint import RunError
from memtasks.train.config import RunConfig
from memtasks.train.provenance import device_name, git_commit, versions


def build_result(
    config: RunConfig,
    task: Task,
    model: MemoryModel,
    loop: Any,
    status: str,
    error: str | None = None,
    diverged_at: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The result record of a run whose training loop ended in ``loop`` (its last evaluation,
    counters and times); ``wall_time_s`` and ``finished_at`` are filled in when it is written."""
    trainable, total = model.param_counts()
    final = loop.last_eval
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "task": config.task,
        "model": config.model,
        "seed": config.seed,
        "group": config.group,
        "final": final,
        "sequences_seen": loop.seen,
        "sequences_to_solve": loop.sequences_to_solve,
        "solved": bool(final) and task.is_solved(final["train"]),
        "stopped_early": loop.stopped_early,
        "trainable_params": trainable,
        "total_params": total,
        "state_size": model.state_size(),
        "wall_time_s": 0.0,
        "train_time_s": round(loop.train_time, 3),
        "throughput": round(loop.seen / loop.train_time, 2) if loop.train_time > 0 else 0.0,
        "error": error,
        "diverged_at": diverged_at,
        "budget": model.budget_info,
        "stop_reason": status if status in ("diverged", "failed") else getattr(loop, "stop_reason", "budget"),
        "collapse": collapse(task, loop) if final else None,
    }


COLLAPSE_NEAR = 2.0  # "near solved": the best value was within this factor of the solved threshold
COLLAPSE_BACK = 0.5  # "fell back": the final value lost this share of the way from the start to the best


def collapse(task: Task, loop: Any) -> dict[str, Any] | None:
    """The run was solved or near it (best solved-metric value at most COLLAPSE_NEAR times the
    threshold) and fell back toward where it started: the final value gave back more than
    COLLAPSE_BACK of the way from the first evaluation to the best one. None otherwise."""
    best, start = getattr(loop, "best", None), getattr(loop, "start_value", None)
    if best is None or start is None or not start > best:
        return None
    final = loop.last_eval["train"][task.solved_metric]
    near = best <= COLLAPSE_NEAR * task.solved_threshold
    if near and (not final <= best + COLLAPSE_BACK * (start - best)):  # NaN counts as fallen back
        return {"metric": task.solved_metric, "best": best, "best_at": loop.best_at, "final": final, "start": start}
    return None


def resolved_config(
    config: RunConfig, task: Task, model: MemoryModel, device: torch.device, ran_with: dict[str, Any]
) -> dict[str, Any]:
    """``config.json``: the RunConfig and everything it resolved to (optimiser settings, the task's
    and model's full parameters, versions, eval-set hashes, device, commit, what actually ran)."""
    eval_hashes = {
        label: task.eval_hash(length, config.eval_size, **overrides)
        for label, (length, overrides) in task.eval_points().items()
    }
    return {
        "run": config.to_dict(),
        "optim": config.optim(),
        "task_params": task.params(),
        "model_config": jsonable(vars(model.config)) if hasattr(model.config, "__dict__") else str(model.config),
        "budget": model.budget_info,
        "versions": versions(task.version),
        "eval_hashes": eval_hashes,
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "ran_with": ran_with,
    }


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples become lists), so stored and new values compare alike."""
    return json.loads(json.dumps(value, default=str))


def _model_fields(config: RunConfig, values: dict[str, Any]) -> dict[str, Any]:
    """The model hyper-parameters that define the run: every field of the model's config, less
    the size knob when a parameter budget chooses it, the fields the trainer derives from the
    task or the seed (``task_hints``) and those that only choose how it computes. A field absent from ``values`` (a record older than the
    field) reads as what such records trained with (``IMPLICIT_BEFORE_FIELD``), else None."""
    import dataclasses

    from memtasks.models import MODELS
    from memtasks.models.base import EXECUTION_FIELDS, IMPLICIT_BEFORE_FIELD

    cls = MODELS.get(config.model)
    skip = set(cls.task_hints) | set(EXECUTION_FIELDS) | ({cls.size_knob} if config.param_budget is not None else set())
    names = [f.name for f in dataclasses.fields(cls.config_cls) if f.name not in skip]
    return {name: _plain(values[name] if name in values else IMPLICIT_BEFORE_FIELD.get(name)) for name in names}


def run_identity(config: RunConfig) -> dict[str, Any]:
    """Everything that defines what a run trains: its RunConfig's identity (optimiser settings
    resolved) and its model's full hyper-parameters, defaults filled in."""
    import dataclasses

    from memtasks.models import model_config

    from memtasks.tasks import get_task

    ident = _plain(config.identity())
    ident.pop("model_params")  # compared resolved, as model_config
    task = get_task(config.task, **config.task_params)
    ident["task_params"] = _plain(task.params())  # resolved: a changed task default is a different run
    ident["task_version"] = task.version
    ident["model_config"] = _model_fields(config, dataclasses.asdict(model_config(config.model, **config.model_params)))
    return ident


def stored_identity(folder: Path) -> dict[str, Any] | None:
    """:func:`run_identity` of the run recorded in ``folder``, from what its config.json says it
    trained with; None when the folder holds no config.json."""
    path = folder / "config.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        run = dict(data["run"])
        run.setdefault("recipe", "family")  # records from before recipes trained with the family's defaults
        config = RunConfig.from_dict(run)
        from memtasks.tasks import get_task

        ident = _plain(config.identity())
        ident.pop("model_params")
        recorded = data.get("task_params") if isinstance(data.get("task_params"), dict) else {}
        task = get_task(config.task, **config.task_params)
        implicit = task.implicit_before_field
        ident["task_params"] = {k: _plain(recorded[k] if k in recorded else implicit.get(k, v)) for k, v in _plain(task.params()).items()}
        ident["task_version"] = str((data.get("versions") or {}).get("task", "1"))
        if isinstance(data.get("optim"), dict):
            ident["optim"] = _plain(data["optim"])  # what it actually trained with
        stored_model = data.get("model_config")
        ident["model_config"] = _model_fields(config, stored_model if isinstance(stored_model, dict) else {})
        return ident
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: not a valid memtasks run config ({exc}); re-run with --force to replace it") from None


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``field: old -> new`` for every field that differs (nested tables as ``table.field``)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key in ("optim", "model_config", "task_params"):
            prefix = {"model_config": "model", "task_params": "task"}.get(key, key)
            diffs += [f"{prefix}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    return "; ".join(diffs) or "no field differs"

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
    }


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


def stored_config(folder: Path) -> RunConfig | None:
    """The RunConfig recorded in ``folder/config.json``, or None when there is none."""
    path = folder / "config.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        return RunConfig.from_dict(data["run"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{path}: not a valid memtasks run config ({exc}); re-run with --force to replace it") from None


def config_differences(old: RunConfig, new: RunConfig) -> str:
    """``field: old -> new`` for every identity field that differs."""
    a, b = old.identity(), new.identity()
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return "; ".join(diffs) or "no field differs"



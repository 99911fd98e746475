"""Expand a matrix, skip finished cells, run the rest, and summarise."""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import memtasks
from memtasks.matrix.executor import CellOutcome, LocalExecutor, RayExecutor
from memtasks.matrix.spec import MatrixSpec, SpecError, expand
from memtasks.results import store as R
from memtasks.train import interrupt
from memtasks.train.checkpoint import RunError
from memtasks.train.config import RunConfig
from memtasks.train.run_record import identity_differences, run_identity, stored_identity


@dataclass
class MatrixReport:
    outcomes: list[CellOutcome]
    skipped: int
    wall_s: float
    workers: int
    not_started: list[RunConfig] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def busy(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "busy"]

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "diverged": 0, "failed": 0}
        for o in self.outcomes:
            key = {"busy": "held by another process", "interrupted": "interrupted"}.get(o.status, o.status)
            counts[key] = counts.get(key, 0) + 1
        counts["skipped (already finished)"] = self.skipped
        if self.not_started:
            counts["not started"] = len(self.not_started)
        return counts

    def utilisation(self) -> float | None:
        """CPU seconds the cells used / (wall seconds × workers): 1.0 keeps every worker busy.
        ``workers``: the local pool's processes, or the cells a Ray cluster ran at once (its CPUs,
        or GPUs when cells ask for one), each capped by the number of cells run."""
        if not self.outcomes or self.wall_s <= 0:
            return None
        return sum(o.cpu_seconds for o in self.outcomes) / (self.wall_s * self.workers)


@dataclass
class MatrixPlan:
    """The cells of a matrix invocation and what each needs: to run, or nothing (finished)."""

    cells: list[RunConfig]
    todo: list[RunConfig]
    finished: list[RunConfig]
    force: bool = False
    sets: list[str] = field(default_factory=list)

    def states(self) -> list[tuple[RunConfig, str]]:
        done = {id(c) for c in self.finished}
        return [(c, "finished" if id(c) in done else ("force" if self.force else "to run")) for c in self.cells]


def plan_matrix(
    spec: MatrixSpec,
    runs_dir: Path,
    tasks: list[str] | None = None,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    group: str | None = None,
    force: bool = False,
) -> MatrixPlan:
    """Expand the spec (each cell once) and decide each cell's fate from its record on disk.

    A record of another configuration, or one that cannot be read, is never counted as the
    cell's result: without ``force`` that is a ``SpecError`` listing the cells, what differs and
    what to do; with ``force`` those cells are trained again."""
    return plan_cells(expand(spec, tasks, models, seeds, sets, group), runs_dir, force, sets)


def plan_cells(cells: list[RunConfig], runs_dir: Path, force: bool = False, sets: list[str] | None = None) -> MatrixPlan:
    """:func:`plan_matrix` for cells given one by one (a tuning phase's trials or its final cells)."""
    todo, finished, problems = [], [], []
    for cfg in cells:
        folder = R.run_dir(runs_dir, cfg.group, cfg.task, cfg.model, cfg.seed)
        if force:
            todo.append(cfg)
            continue
        try:
            stored, mine = stored_identity(folder), run_identity(cfg)
            if stored is not None and stored != mine:
                problems.append(f"{folder} holds another configuration ({identity_differences(stored, mine)})")
                continue
            done = R.finished_result(folder)
        except (RunError, R.RecordError) as exc:
            problems.append(str(exc))
            continue
        (finished if done is not None else todo).append(cfg)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise SpecError(
            f"{len(problems)} cell(s) have records this matrix cannot use: {shown}. "
            "Use another --group for a new configuration, or --force (narrowed with --tasks/--models/--seeds) "
            "to train those cells again"
        )
    return MatrixPlan(cells, todo, finished, force, list(sets or []))


def write_matrix_meta(spec: MatrixSpec, group: str, runs_dir: Path, sets: list[str]) -> None:
    meta = {
        "preset": spec.name,
        "source": spec.source,
        "spec": spec.to_dict(),
        "overrides": sets,
        "versions": {"memtasks": memtasks.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    path = Path(runs_dir) / group / "matrix.json"
    R.write_json_atomic(path, meta)


def run_matrix(
    plan: MatrixPlan,
    spec: MatrixSpec,
    runs_dir: Path,
    executor: LocalExecutor | RayExecutor,
    wandb_mode: str | None = None,
    plugins: tuple[str, ...] = (),
    echo: Callable[[str], None] = lambda line: None,
) -> MatrixReport:
    """Run the plan's cells (most expensive first), telling ``echo`` about progress (a line per
    finished cell). SIGINT/SIGTERM: no new cell starts, the running ones write checkpoints and
    stop; the report says ``interrupted``."""
    todo = sorted(plan.todo, key=estimated_cost, reverse=True)
    skipped = len(plan.finished)
    group = plan.cells[0].group if plan.cells else spec.group
    write_matrix_meta(spec, group, runs_dir, plan.sets)
    workers = executor.plan() if isinstance(executor, LocalExecutor) else 0
    n = min(workers, len(todo))
    where = "" if not todo else (f" on {n} worker{'s' if n != 1 else ''}" if workers else " on Ray")
    echo(f"matrix {spec.name}: {len(plan.cells)} cells, {skipped} already finished, {len(todo)} to run{where}")
    started = time.monotonic()
    done_count = 0
    failed = 0

    def on_done(outcome: CellOutcome, running: int) -> None:
        nonlocal done_count, failed
        done_count += 1
        failed += outcome.status == "failed"
        elapsed = time.monotonic() - started
        left = len(todo) - done_count
        eta = elapsed / done_count * left if done_count else 0.0
        note = f" ({outcome.error.splitlines()[0]})" if outcome.status in ("failed", "busy") and outcome.error else ""
        echo(
            f"[{done_count}/{len(todo)}] {outcome.label}: {outcome.status} in {outcome.seconds:.1f}s{note} | "
            f"done {done_count}, running {running}, failed {failed}, eta {eta:.0f}s"
        )

    outcomes: list[CellOutcome] = []
    with interrupt.deferred_interrupts(escalate=True):
        if todo:
            outcomes = executor.run(todo, Path(runs_dir), wandb_mode, plugins, on_done, force=plan.force,
                                    stop=interrupt.stop_requested)
        stopped = interrupt.stop_requested()
        interrupt.reset()
    ran = {id(o.config) for o in outcomes}
    not_started = [c for c in todo if id(c) not in ran] if stopped else []
    slots = workers or getattr(executor, "slots", 0)  # Ray: what the cluster ran at once, read before it shut down
    n_workers = max(1, min(slots, len(todo)))
    return MatrixReport(outcomes, skipped, time.monotonic() - started, n_workers, not_started, stopped)


def estimated_cost(config: Any) -> float:
    """Sequences × steps of the longest training sequence × the model's relative cost per step."""
    from memtasks.tasks import get_task
    from memtasks.models import MODELS

    task = get_task(config.task, **config.task_params)
    cost = getattr(MODELS.get(config.model), "relative_cost", 1.0)
    return config.sequences * task.max_steps(task.train_range[1]) * cost


def visible_gpus() -> list[int]:
    if not torch.cuda.is_available():
        return []
    return list(range(torch.cuda.device_count()))


def summary_json(report: MatrixReport) -> str:
    return json.dumps(
        {
            "counts": report.counts(),
            "wall_s": round(report.wall_s, 1),
            "workers": report.workers,
            "utilisation": report.utilisation(),
            "failed": [{"cell": o.label, "error": o.error} for o in report.failed],
        },
        indent=2,
    )

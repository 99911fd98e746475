"""Expand a matrix, skip finished cells, run the rest, and summarise."""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import memtasks
from memtasks.matrix.executor import CellOutcome, LocalExecutor, RayExecutor, finished_status
from memtasks.matrix.spec import MatrixSpec, expand
from memtasks.train import record as R


@dataclass
class MatrixReport:
    outcomes: list[CellOutcome]
    skipped: int
    wall_s: float
    workers: int

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "diverged": 0, "failed": 0}
        for o in self.outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        counts["skipped (already finished)"] = self.skipped
        return counts

    def utilisation(self) -> float | None:
        """CPU seconds the cells used / (wall seconds × workers): 1.0 keeps every worker busy."""
        if not self.outcomes or self.wall_s <= 0:
            return None
        return sum(o.cpu_seconds for o in self.outcomes) / (self.wall_s * self.workers)


def write_matrix_meta(spec: MatrixSpec, group: str, runs_dir: Path) -> None:
    meta = {
        "preset": spec.name,
        "source": spec.source,
        "spec": spec.to_dict(),
        "versions": {"memtasks": memtasks.__version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    path = Path(runs_dir) / group / "matrix.json"
    R.write_json_atomic(path, meta)


def run_matrix(
    spec: MatrixSpec,
    runs_dir: Path,
    executor: LocalExecutor | RayExecutor,
    tasks: list[str] | None = None,
    models: list[str] | None = None,
    seeds: list[int] | None = None,
    sets: list[str] | None = None,
    group: str | None = None,
    wandb_mode: str | None = None,
    plugins: tuple[str, ...] = (),
    echo: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> MatrixReport:
    cells = expand(spec, tasks, models, seeds, sets, group)
    todo = sorted((c for c in cells if finished_status(c, runs_dir) is None), key=estimated_cost, reverse=True)
    skipped = len(cells) - len(todo)
    write_matrix_meta(spec, group or spec.group, runs_dir)
    workers = executor.plan() if isinstance(executor, LocalExecutor) else 0
    echo(
        f"matrix {spec.name}: {len(cells)} cells, {skipped} already finished, {len(todo)} to run"
        + (f" on {min(workers, max(1, len(todo)))} workers" if workers else " on Ray")
    )
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
        note = f" ({outcome.error.splitlines()[0]})" if outcome.status == "failed" and outcome.error else ""
        echo(
            f"[{done_count}/{len(todo)}] {outcome.label}: {outcome.status} in {outcome.seconds:.1f}s{note} | "
            f"done {done_count}, running {running}, failed {failed}, eta {eta:.0f}s"
        )

    outcomes = executor.run(todo, Path(runs_dir), wandb_mode, plugins, on_done) if todo else []
    n_workers = min(workers, max(1, len(todo))) if workers else max(1, int(_ray_cpus()))
    return MatrixReport(outcomes, skipped, time.monotonic() - started, n_workers)


def estimated_cost(config: Any) -> float:
    """Sequences × steps of the longest training sequence × the model's relative cost per step."""
    from memtasks.tasks import get_task
    from memtasks.models import MODELS

    task = get_task(config.task, **config.task_params)
    cost = getattr(MODELS.get(config.model), "relative_cost", 1.0)
    return config.sequences * task.max_steps(task.train_range[1]) * cost


def _ray_cpus() -> float:
    try:
        import ray

        return ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else 1
    except ImportError:
        return 1


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

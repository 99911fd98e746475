"""What the Ray executor reports while a matrix runs: cells running (at most what the cluster runs
at once, not every submitted cell) and the workers its utilisation is measured against (the
cluster's CPUs or GPUs, read before Ray shuts down). A stand-in ``ray`` module plays the cluster,
so no Ray is needed; tests/test_matrix.py runs a real one (``-m ray``)."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from memtasks.matrix.executor import RayExecutor, ray_slots, running_cells
from memtasks.matrix.runner import plan_matrix, run_matrix
from memtasks.matrix.spec import parse_spec


def test_slots_and_running_arithmetic() -> None:
    assert ray_slots({"CPU": 2.0}, per_gpu=False) == 2
    assert ray_slots({"CPU": 16.0, "GPU": 4.0}, per_gpu=True) == 4
    assert ray_slots({"CPU": 2.5}, per_gpu=False) == 2  # a fraction of a CPU runs no further cell
    assert ray_slots({}, per_gpu=False) == 1  # a cluster reporting nothing still ran the cells
    assert [running_cells(p, 2) for p in (5, 2, 1, 0)] == [2, 2, 1, 0]


class FakeRay(types.ModuleType):
    """The slice of Ray that :meth:`RayExecutor.run` uses: a cluster of fixed ``resources`` whose
    cells finish one per ``wait``, each having used one CPU second."""

    def __init__(self, resources: dict[str, float]) -> None:
        super().__init__("ray")
        self.resources = resources
        self.initialized = False
        self.remote_options: dict[str, Any] = {}
        self.exceptions = types.SimpleNamespace(TaskCancelledError=type("TaskCancelledError", (Exception,), {}))

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **_: Any) -> None:
        self.initialized = True

    def shutdown(self) -> None:
        self.initialized = False

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources) if self.initialized else {}

    def remote(self, **options: Any) -> Any:
        self.remote_options = options
        return lambda fn: types.SimpleNamespace(remote=lambda *args: object())

    def wait(self, refs: list, num_returns: int, timeout: float) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: object) -> dict[str, Any]:
        return {"status": "ok", "error": None, "seconds": 1.0, "cpu_seconds": 1.0, "result": None, "files": {}}

    def cancel(self, ref: object) -> None:
        pass


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resources: dict[str, float], cells: int):
    fake = FakeRay(resources)
    monkeypatch.setitem(sys.modules, "ray", fake)
    spec = parse_spec({"seeds": list(range(cells)), "tasks": {"copy": {}}, "models": {"lstm": {}}}, default_name="t")
    plan = plan_matrix(spec, tmp_path)
    lines: list[str] = []
    executor = RayExecutor()
    report = run_matrix(plan, spec, tmp_path, executor, "disabled", echo=lines.append)
    running = [int(m.group(1)) for line in lines if (m := re.search(r"running (\d+),", line))]
    return fake, executor, report, running, lines


def test_ray_progress_counts_what_the_cluster_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, executor, report, running, lines = _run(tmp_path, monkeypatch, {"CPU": 2.0}, cells=6)
    assert not fake.initialized, "the executor shut down the Ray it started"
    assert fake.remote_options == {"num_cpus": 1}
    assert running == [2, 2, 2, 2, 1, 0]  # was the pending count: 5, 4, 3, 2, 1, 0
    assert executor.slots == 2 and report.workers == 2  # was 1: the CPUs were read after shutdown
    assert len(report.outcomes) == 6
    assert lines[0].endswith("6 cells, 0 already finished, 6 to run on Ray")


def test_ray_progress_on_gpus_and_fewer_cells_than_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, executor, report, running, lines = _run(tmp_path, monkeypatch, {"CPU": 32.0, "GPU": 4.0}, cells=3)
    assert fake.remote_options == {"num_gpus": 1, "num_cpus": 0}
    assert executor.slots == 4
    assert running == [2, 1, 0]
    assert report.workers == 3  # utilisation is measured against the cells that could run, not idle GPUs


def test_header_with_nothing_to_run_names_no_workers(tmp_path: Path) -> None:
    from memtasks.matrix.executor import LocalExecutor
    from memtasks.matrix.runner import MatrixPlan

    spec = parse_spec({"seeds": [0], "tasks": {"copy": {}}, "models": {"lstm": {}}}, default_name="t")
    cells = plan_matrix(spec, tmp_path).cells
    lines: list[str] = []
    report = run_matrix(MatrixPlan(cells, [], cells), spec, tmp_path, LocalExecutor(workers=2), "disabled", echo=lines.append)
    assert lines == ["matrix t: 1 cells, 1 already finished, 0 to run"]
    assert report.workers == 1 and report.utilisation() is None

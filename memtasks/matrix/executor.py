"""Running the cells of a matrix: a local process pool, or a Ray cluster.

Every cell is an independent ``memtasks train`` run, so interrupting the matrix loses no
finished run (its result.json is written atomically) and re-running it skips finished cells
and resumes unfinished ones from their checkpoints. A failing or diverging cell never stops
the others.

Ray: each cell is a Ray task asking for one GPU when the cluster has GPUs, else one CPU. The
task trains into the same ``runs_dir`` path on its node (on a shared filesystem this is where
checkpoints live, so mid-way cells resume there) and returns the record files' contents; the
driver writes them under its ``runs_dir``. A cluster therefore needs no shared filesystem for
results, and resume works either way: the driver skips cells whose result.json it holds.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from memtasks.results import store as R
from memtasks.train.config import RunConfig

RECORD_FILES = ("config.json", "metrics.jsonl", "result.json")


@dataclass
class CellOutcome:
    config: RunConfig
    status: str  # ok | diverged | failed | busy (held by another process) | interrupted
    error: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    result: dict[str, Any] | None = None

    @classmethod
    def from_output(cls, config: RunConfig, out: dict[str, Any]) -> "CellOutcome":
        """From the dict :func:`run_cell` returns."""
        return cls(config, out["status"], out["error"], out["seconds"], out["cpu_seconds"], out["result"])

    @property
    def label(self) -> str:
        c = self.config
        return f"{c.task}/{c.model}/seed-{c.seed}"


def run_cell(
    config_json: str, runs_dir: str, wandb_mode: str | None, plugins: tuple[str, ...], force: bool = False
) -> dict[str, Any]:
    """Train one cell in this process; never raises (errors become a ``failed`` outcome, a run
    that another process holds becomes ``busy``, a stop request ``interrupted``)."""
    t0, c0 = time.monotonic(), time.process_time()
    config = RunConfig.from_json(config_json)
    result = None
    try:
        from memtasks.core.registry import load_plugin
        from memtasks.train.checkpoint import RunBusy
        from memtasks.train.interrupt import Interrupted
        from memtasks.train.trainer import train

        for spec in plugins:
            load_plugin(spec)
        try:
            result = train(config, runs_dir, wandb_mode=wandb_mode, force=force)
            status, error = result["status"], result.get("error")
        except RunBusy as exc:
            status, error = "busy", str(exc)
        except Interrupted as exc:
            status, error = "interrupted", str(exc)
    except Exception as exc:  # a cell that cannot even start is reported, the matrix goes on
        status, error = "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    return {
        "status": status,
        "error": error,
        "seconds": time.monotonic() - t0,
        "cpu_seconds": time.process_time() - c0,
        "result": result,
    }


def _die_with_parent(parent: int | None) -> None:
    """Linux: end this worker when the driver dies, whatever signal killed it, so a killed matrix
    leaves no orphan training the same run folder as the next invocation. The parent may have
    died before the request was made; then the worker's parent is already another process."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def _init_worker(threads: int, gpu_queue: Any, parent: int | None = None) -> None:
    _die_with_parent(parent)  # first: importing torch takes seconds, and a driver may die meanwhile
    import torch

    from memtasks.train.interrupt import install_for_worker

    install_for_worker()  # Ctrl-C or SIGTERM: finish the step, write a checkpoint, report interrupted
    torch.set_num_threads(threads)
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


@dataclass
class LocalExecutor:
    """A pool of worker processes: by default one per CPU core with one torch thread each, or
    ``workers_per_gpu`` per visible GPU (one recurrent run rarely fills a GPU).

    Cells are handed out one per free worker, so a stop request (``stop()`` returning True: the
    driver got Ctrl-C or SIGTERM) starts no new cell; the running ones are asked to stop too
    (SIGTERM), write their checkpoints and report ``interrupted``."""

    workers: int | None = None
    workers_per_gpu: int = 1
    gpus: list[int] = field(default_factory=list)

    def plan(self) -> int:
        if self.workers:
            return self.workers
        if self.gpus:
            return len(self.gpus) * self.workers_per_gpu
        return os.cpu_count() or 1

    def gpu_queue(self, ctx: Any, workers: int) -> Any:
        """The GPU index each of ``workers`` workers takes at start-up (round robin over the GPUs,
        so ``workers_per_gpu`` workers share each), or None on a CPU-only machine."""
        if not self.gpus:
            return None
        queue = ctx.Queue()
        for i in range(workers):
            queue.put(self.gpus[i % len(self.gpus)])
        return queue

    def run(
        self,
        cells: list[RunConfig],
        runs_dir: Path,
        wandb_mode: str | None,
        plugins: tuple[str, ...],
        on_done: Callable[[CellOutcome, int], None],
        force: bool = False,
        stop: Callable[[], bool] = lambda: False,
    ) -> list[CellOutcome]:
        n = min(self.plan(), max(1, len(cells)))
        ctx = mp.get_context("spawn")
        gpu_queue = self.gpu_queue(ctx, n)
        outcomes: list[CellOutcome] = []
        queue = list(reversed(cells))  # pop() takes them in the given order
        pool = cf.ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(1, gpu_queue, os.getpid()))
        running: dict[cf.Future, RunConfig] = {}
        signalled = False
        try:
            while queue or running:
                while queue and len(running) < n and not stop():
                    cfg = queue.pop()
                    running[pool.submit(run_cell, cfg.to_json(), str(runs_dir), wandb_mode, plugins, force)] = cfg
                if not running:
                    break
                if stop() and not signalled:
                    signalled = True
                    _signal_workers(pool)
                done, _ = cf.wait(running, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    cfg = running.pop(fut)
                    try:
                        outcome = CellOutcome.from_output(cfg, fut.result())
                    except Exception as exc:  # the worker process itself died
                        outcome = CellOutcome(cfg, "failed", f"worker died: {type(exc).__name__}: {exc}")
                    outcomes.append(outcome)
                    on_done(outcome, len(running))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return outcomes


def _signal_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Ask every worker to stop after its current step (a terminal's Ctrl-C reached them
    already; a SIGTERM to the driver alone did not)."""
    import signal

    for pid in list(getattr(pool, "_processes", {}) or {}):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def _ray_cell(
    config_json: str, runs_dir: str, wandb_mode: str | None, plugins: tuple[str, ...], force: bool = False
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    out = run_cell(config_json, runs_dir, wandb_mode, plugins, force)
    config = RunConfig.from_json(config_json)
    folder = R.run_dir(runs_dir, config.group, config.task, config.model, config.seed)
    out["files"] = {name: (folder / name).read_text() for name in RECORD_FILES if (folder / name).exists()}
    out["node"] = os.uname().nodename
    return out


def ray_slots(resources: Mapping[str, float], per_gpu: bool) -> int:
    """How many cells a cluster with these total ``resources`` (``ray.cluster_resources()``) runs at
    once: one per whole GPU when every cell asks for a GPU, else one per whole CPU (never below 1)."""
    return max(1, int(resources.get("GPU" if per_gpu else "CPU", 0)))


def running_cells(pending: int, slots: int) -> int:
    """Cells running now: Ray holds every submitted cell as pending, but runs ``slots`` at a time."""
    return max(0, min(pending, slots))


@dataclass
class RayExecutor:
    """Cells as Ray tasks on a cluster (``address``: ``auto``, ``host:port`` or None for a local one).

    Clusters with and without Ray's token authentication both work: see :meth:`connect`.
    ``slots`` is what :meth:`run` found the cluster can run at once (GPUs, else CPUs), read again
    as each cell finishes so a cluster that grows or shrinks is reported as it is; 0 before a run.
    """

    address: str | None = None
    slots: int = field(default=0, init=False)

    def connect(self, ray: Any) -> None:
        """``ray.init`` this driver, sending Ray's authentication token whenever one is at hand.

        ``ray start`` turns token authentication on when a token exists (``RAY_AUTH_TOKEN``,
        the file ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``), but a driver given an
        explicit ``host:port`` sends none unless ``RAY_AUTH_MODE=token``, so such a cluster
        refused it. A driver that sends a token also connects to a cluster without
        authentication, so it sends one whenever one exists; ``RAY_AUTH_MODE`` set by the user
        is left as it is. Rays older than token authentication connect as before.
        """
        from memtasks.core.errors import MemtasksError

        if self.address not in (None, "auto"):  # for these Ray handles authentication itself
            try:
                from ray._private.authentication.authentication_token_setup import (
                    maybe_enable_token_auth_if_token_available,
                )
            except ImportError:
                pass
            else:
                maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        try:
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False)
        except ConnectionError as exc:
            raise MemtasksError(
                f"cannot connect to the Ray cluster at {self.address} ({exc}); check that it runs "
                "(`ray status --address ...`) and, if it uses token authentication, give this machine "
                "its token: RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file> (`ray get-auth-token` on the head)"
            ) from None

    def run(
        self,
        cells: list[RunConfig],
        runs_dir: Path,
        wandb_mode: str | None,
        plugins: tuple[str, ...],
        on_done: Callable[[CellOutcome, int], None],
        force: bool = False,
        stop: Callable[[], bool] = lambda: False,
    ) -> list[CellOutcome]:
        """As :meth:`LocalExecutor.run`; once ``stop()`` is true the cells not finished are
        cancelled: one that never started gets no outcome, a running one reports what it returns."""
        from memtasks.core.errors import MemtasksError

        try:
            import ray
        except ImportError:
            raise MemtasksError("the Ray executor needs the ray extra: pip install 'memtasks[ray]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            self.connect(ray)
        try:
            resources = ray.cluster_resources()
            per_gpu = resources.get("GPU", 0) >= 1
            self.slots = ray_slots(resources, per_gpu)
            remote = ray.remote(num_gpus=1, num_cpus=0)(_ray_cell) if per_gpu else ray.remote(num_cpus=1)(_ray_cell)
            # plugin files must be readable on the nodes: pass absolute paths
            plugins = tuple(str(Path(p).resolve()) if Path(p).exists() else p for p in plugins)
            pending = {
                remote.remote(c.to_json(), str(runs_dir.resolve()), wandb_mode, plugins, force): c for c in cells
            }
            outcomes = []
            cancelled = False
            while pending:
                if stop() and not cancelled:
                    cancelled = True
                    for ref in pending:
                        ray.cancel(ref)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in done:
                    cfg = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                        self._write_files(cfg, runs_dir, out.get("files", {}))
                        outcome = CellOutcome.from_output(cfg, out)
                    except ray.exceptions.TaskCancelledError:
                        continue  # never ran to the end: the runner lists it as not started
                    except Exception as exc:
                        outcome = CellOutcome(cfg, "failed", f"ray task failed: {type(exc).__name__}: {exc}")
                    outcomes.append(outcome)
                    self.slots = ray_slots(ray.cluster_resources(), per_gpu)
                    on_done(outcome, running_cells(len(pending), self.slots))
            return outcomes
        finally:
            if started_here:
                ray.shutdown()

    @staticmethod
    def _write_files(cfg: RunConfig, runs_dir: Path, files: dict[str, str]) -> None:
        folder = R.run_dir(runs_dir, cfg.group, cfg.task, cfg.model, cfg.seed)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "metrics.jsonl"):  # result.json last: it marks the cell finished
            if name in files:
                R.write_text_atomic(folder / name, files[name])
        if "result.json" in files:
            R.write_text_atomic(folder / "result.json", files["result.json"])

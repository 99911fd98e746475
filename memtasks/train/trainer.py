"""Train one run (task × model × seed) to its budget and write its record.

The loop: sample a batch (curriculum) → forward → masked loss → backward → divergence check →
clip → optimiser step → the model's ``after_optimizer_step`` hook. Every ``eval_every``
sequences (and at 0 and at the end) the model is scored on the task's fixed evaluation sets at
the training lengths and every generalisation point, and a row is appended to metrics.jsonl.
Checkpoints are written every ``checkpoint_every_s`` seconds and at the end; re-running the
same config resumes from the checkpoint and reaches the same result as an uninterrupted run.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import memtasks
from memtasks.core.registry import RegistryError
from memtasks.core.seeds import stable_seed
from memtasks.tasks import get_task
from memtasks.tasks.base import Task
from memtasks.train import record as R
from memtasks.train.config import RunConfig
from memtasks.train.curriculum import Curriculum
from memtasks.models import MemoryModel, build_model
from memtasks.models.base import MODELS

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


class RunError(ValueError):
    """The run cannot start: bad config, unreadable runs dir, corrupt checkpoint. Nothing was changed."""


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RunError("--device mps was asked for but torch sees no MPS device")
    return torch.device(name)


def make_task(config: RunConfig) -> Task:
    try:
        return get_task(config.task, **config.task_params)
    except (RegistryError, TypeError, ValueError) as exc:
        raise RunError(str(exc)) from None


def make_model(config: RunConfig, task: Task) -> MemoryModel:
    """Build the model deterministically from the run's seed (the global RNG is restored after)."""
    try:
        cls = MODELS.get(config.model)
    except RegistryError as exc:
        raise RunError(str(exc)) from None
    hparams = dict(config.model_params)
    if "t_max" in cls.task_hints and "t_max" not in hparams:
        hparams["t_max"] = task.max_steps(task.train_range[1])
    if "seed" in cls.task_hints and "seed" not in hparams:
        hparams["seed"] = config.seed  # e.g. the ESN's reservoir differs per run seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed("init", config.seed, config.model))
        try:
            return build_model(config.model, task.d_in, task.d_out, param_budget=config.param_budget, **hparams)
        except (TypeError, ValueError) as exc:
            raise RunError(str(exc)) from None


def make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = config.optim()
    params = [p for p in model.parameters() if p.requires_grad]
    if o["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=o["lr"])
    if o["optimizer"] == "rmsprop":
        # The NTM/DNC papers' RMSProp: decay 0.95 with momentum.
        return torch.optim.RMSprop(params, lr=o["lr"], alpha=0.95, momentum=o["momentum"], eps=1e-8)
    return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"])


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit, read once per process: a long-lived matrix worker keeps the code
    it imported, so later commits must not be attributed to its runs."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class _Loop:
    """Mutable training-loop state; all of it goes into the checkpoint."""

    step: int = 0
    seen: int = 0
    train_time: float = 0.0
    next_eval: int = 0
    sequences_to_solve: int | None = None
    solved_streak: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    rows: int = 0  # lines in metrics.jsonl: a resumed run keeps exactly these
    wall_time: float = 0.0  # seconds of wall time spent in this run so far, across resumes


class Trainer:
    """One run. Use :func:`train` unless you need the pieces."""

    def __init__(
        self,
        config: RunConfig,
        runs_dir: str | Path = "runs",
        wandb_mode: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.runs_dir = Path(runs_dir)
        self.dir = R.run_dir(runs_dir, config.group, config.task, config.model, config.seed)
        self.wandb_mode = wandb_mode
        self.progress = progress
        self.task = make_task(config)
        self.device = pick_device(config.device)

    # --- paths ---------------------------------------------------------------------------
    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    def finished(self) -> dict[str, Any] | None:
        """The existing final result (status ok or diverged) of this run, or None."""
        if not self.result_path.exists():
            return None
        result = R.read_result(self.result_path)
        if result["status"] == "failed":
            return None  # a failed run is retried; ok and diverged runs are final
        return result

    def _check_same_config(self) -> None:
        """A folder that holds a run of another configuration is never silently mixed in."""
        stored = self._stored_config()
        if stored is not None and stored.identity() != self.config.identity():
            raise RunError(
                f"{self.dir} holds a run of a different configuration; "
                "use --force to replace it or another --group"
            )

    def _stored_config(self) -> RunConfig | None:
        path = self.dir / "config.json"
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return RunConfig.from_dict(data["run"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RunError(f"{path}: not a valid memtasks run config ({exc})") from None

    # --- main ----------------------------------------------------------------------------
    def run(self, force: bool = False) -> dict[str, Any]:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create runs dir {self.runs_dir}: {exc.strerror or exc}") from None
        if not os.access(self.runs_dir, os.W_OK):
            raise RunError(f"runs dir {self.runs_dir} is not writable")
        if force:
            for name in ("result.json", "checkpoint.pt", "metrics.jsonl", "config.json"):
                (self.dir / name).unlink(missing_ok=True)
        else:
            self._check_same_config()
            done = self.finished()
            if done is not None:
                return done

        self.dir.mkdir(parents=True, exist_ok=True)
        with _RunLock(self.dir):
            return self._run_locked()

    def _run_locked(self) -> dict[str, Any]:
        if self.device.type == "cpu":
            torch.set_num_threads(self.config.threads)
        model = make_model(self.config, self.task).to(self.device)
        checkpoint = self._load_checkpoint()  # validated before anything is written
        self._write_config(model)

        from memtasks.train.wandb_log import WandbRun

        wb = WandbRun.start(self.config, self.dir, self.wandb_mode, resume=checkpoint is not None)
        started = self._wall_mark = time.monotonic()
        try:
            if model.closed_form:
                result = self._fit_closed_form(model, wb)
            else:
                result = self._train(model, checkpoint, wb)
        except Exception as exc:  # a failed run is recorded, never lost
            log.exception("run %s failed", self.dir)
            result = self._result(model, _Loop(), "failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        result["wall_time_s"] = round(time.monotonic() - started, 3)
        result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        R.write_json_atomic(self.result_path, result)
        wb.finish(result, model, self.task, self.device)
        return result

    # --- gradient training -------------------------------------------------------------
    def _train(self, model: MemoryModel, checkpoint: dict[str, Any] | None, wb: Any) -> dict[str, Any]:
        cfg = self.config
        optimizer = make_optimizer(cfg, model)
        o = cfg.optim()
        gen = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        gen.manual_seed(stable_seed("train", cfg.seed, cfg.task))
        curriculum = Curriculum.create(cfg.curriculum, self.task)
        loop = _Loop()
        forward = model
        if cfg.compile:
            forward = _try_compile(model)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            gen.set_state(checkpoint["generator"].cpu())  # generator states are CPU byte tensors on every device
            curriculum.load_state_dict(checkpoint["curriculum"])
            loop = _Loop(**checkpoint["loop"])
            self._truncate_metrics(loop.rows)
        else:
            self.metrics_path.unlink(missing_ok=True)
            self.metrics_path.touch()

        params = [p for p in model.parameters() if p.requires_grad]
        last_ckpt = time.monotonic()
        last_progress = 0.0
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16 and self.device.type == "cuda")
        recent_loss: float = float("nan")
        recent_metrics: dict[str, float] = {}
        while True:
            if loop.seen >= loop.next_eval or loop.seen >= cfg.sequences:
                self._evaluate(model, loop, curriculum, wb)
                loop.next_eval = (loop.seen // cfg.eval_every + 1) * cfg.eval_every
                if self.task.is_solved(loop.last_eval["train"]):
                    loop.sequences_to_solve = loop.sequences_to_solve if loop.sequences_to_solve is not None else loop.seen
                    loop.solved_streak += 1
                else:
                    loop.solved_streak = 0
                if cfg.early_stop and loop.solved_streak >= cfg.patience and loop.seen < cfg.sequences:
                    loop.stopped_early = True
                    break
            if loop.seen >= cfg.sequences:
                break
            t0 = time.perf_counter()
            batch = curriculum.sample(self.task, cfg.batch_size, gen).to(self.device)
            model.train()
            with autocast:
                outputs, _ = forward(batch.inputs)
            loss = self.task.loss_fn(outputs.float(), batch)
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                return self._diverged(model, loop, "loss", loss_value)
            loss.backward()
            gnorm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            if not math.isfinite(gnorm.item()):
                return self._diverged(model, loop, "gradient", gnorm.item())
            if o["clip_value"] is not None:
                torch.nn.utils.clip_grad_value_(params, o["clip_value"])
            if o["clip_norm"] is not None:
                torch.nn.utils.clip_grads_with_norm_(params, o["clip_norm"], gnorm)
            optimizer.step()
            model.after_optimizer_step()
            loop.step += 1
            loop.seen += batch.batch_size
            loop.train_time += time.perf_counter() - t0
            recent_loss = loss_value
            if curriculum.kind == "grow" or time.monotonic() - last_progress > 1.0:
                recent_metrics = self.task.metrics(outputs.detach().float(), batch)
                if curriculum.observe(self.task, recent_metrics):
                    self._append(loop, {"event": "curriculum", "sequences": loop.seen, "range": [curriculum.lo, curriculum.hi]})
            if self.progress is not None and time.monotonic() - last_progress > 1.0:
                last_progress = time.monotonic()
                self._report(loop, recent_loss, recent_metrics)
            if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                self._save_checkpoint(model, optimizer, gen, curriculum, loop)
                last_ckpt = time.monotonic()
        self._save_checkpoint(model, optimizer, gen, curriculum, loop)
        return self._result(model, loop, "ok")

    def _report(self, loop: _Loop, loss: float, metrics: dict[str, float]) -> None:
        rate = loop.seen / loop.train_time if loop.train_time > 0 else 0.0
        remaining = max(0, self.config.sequences - loop.seen)
        self.progress(  # type: ignore[misc]
            {
                "sequences": loop.seen,
                "total": self.config.sequences,
                "loss": loss,
                "bit_errors": metrics.get("bit_errors"),
                "metric": metrics.get(self.task.solved_metric),
                "rate": rate,
                "eta_s": remaining / rate if rate > 0 else None,
            }
        )

    def _diverged(self, model: MemoryModel, loop: _Loop, what: str, value: float) -> dict[str, Any]:
        log.warning("run %s diverged: %s is %s at step %d", self.dir, what, value, loop.step)
        return self._result(
            model,
            loop,
            "diverged",
            error=f"non-finite {what} ({value}) at step {loop.step}",
            diverged_at={"step": loop.step, "sequences": loop.seen},
        )

    @torch.no_grad()
    def _evaluate(self, model: MemoryModel, loop: _Loop, curriculum: Curriculum, wb: Any) -> None:
        model.eval()
        metrics: dict[str, dict[str, float]] = {}
        for label, (length, overrides) in self.task.eval_points().items():
            batch = self.task.eval_batch(length, self.config.eval_size, device=self.device, **overrides)
            outputs, _ = model(batch.inputs)
            metrics[label] = self.task.metrics(outputs.float(), batch)
        loop.last_eval = metrics
        now = time.monotonic()
        loop.wall_time += now - self._wall_mark
        self._wall_mark = now
        row = {
            "sequences": loop.seen,
            "step": loop.step,
            "train_time_s": round(loop.train_time, 3),
            "wall_time_s": round(loop.wall_time, 3),
            "curriculum": [curriculum.lo, curriculum.hi],
            "metrics": metrics,
        }
        self._append(loop, row)
        wb.log_eval(row)
        if self.progress is not None:
            self.progress({"event": "eval", **row})

    # --- closed-form training (ESN) ----------------------------------------------------
    def _fit_closed_form(self, model: MemoryModel, wb: Any) -> dict[str, Any]:
        cfg = self.config
        gen = torch.Generator().manual_seed(stable_seed("train", cfg.seed, cfg.task))
        curriculum = Curriculum.create(cfg.curriculum, self.task)
        n_batches = max(1, math.ceil(cfg.sequences / cfg.batch_size))
        self.metrics_path.unlink(missing_ok=True)
        self.metrics_path.touch()

        def batches():
            for _ in range(n_batches):
                b = curriculum.sample(self.task, cfg.batch_size, gen).to(self.device)
                yield b.inputs, b.targets, b.mask

        val = self.task.sample(cfg.eval_size, torch.Generator().manual_seed(stable_seed("val", cfg.seed)), device=self.device)
        t0 = time.perf_counter()
        info = model.fit(batches(), (val.inputs, val.targets, val.mask), self.task.loss)
        loop = _Loop(step=n_batches, seen=n_batches * cfg.batch_size, train_time=time.perf_counter() - t0)
        self._evaluate(model, loop, curriculum, wb)
        if self.task.is_solved(loop.last_eval["train"]):
            loop.sequences_to_solve = loop.seen
        result = self._result(model, loop, "ok")
        result["fit"] = {k: v for k, v in info.items() if isinstance(v, (int, float, str))}
        return result

    # --- record ------------------------------------------------------------------------
    def _result(
        self,
        model: MemoryModel,
        loop: _Loop,
        status: str,
        error: str | None = None,
        diverged_at: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        trainable, total = model.param_counts()
        final = loop.last_eval
        return {
            "schema_version": R.SCHEMA_VERSION,
            "status": status,
            "task": self.config.task,
            "model": self.config.model,
            "seed": self.config.seed,
            "group": self.config.group,
            "final": final,
            "sequences_seen": loop.seen,
            "sequences_to_solve": loop.sequences_to_solve,
            "solved": bool(final) and self.task.is_solved(final["train"]),
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

    def _write_config(self, model: MemoryModel) -> None:
        eval_hashes = {
            label: self.task.eval_hash(length, self.config.eval_size, **overrides)
            for label, (length, overrides) in self.task.eval_points().items()
        }
        data = {
            "run": self.config.to_dict(),
            "optim": self.config.optim(),
            "task_params": self.task.params(),
            "model_config": _jsonable(vars(model.config)) if hasattr(model.config, "__dict__") else str(model.config),
            "budget": model.budget_info,
            "versions": {
                "memtasks": memtasks.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "task": self.task.version,
            },
            "eval_hashes": eval_hashes,
            "git_commit": git_commit(),
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
        R.write_json_atomic(self.dir / "config.json", data)

    # --- checkpoints ---------------------------------------------------------------------
    def _save_checkpoint(self, model, optimizer, gen, curriculum, loop: _Loop) -> None:
        now = time.monotonic()
        loop.wall_time += now - self._wall_mark
        self._wall_mark = now
        state = {
            "config_digest": self.config.digest(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "curriculum": curriculum.state_dict(),
            "loop": vars(loop).copy(),
        }
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def _load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        try:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
            if not isinstance(state, dict) or "loop" not in state or "model" not in state:
                raise ValueError("missing fields")
        except Exception as exc:
            raise RunError(
                f"{self.checkpoint_path}: corrupt checkpoint ({type(exc).__name__}: {exc}); "
                "delete it or re-run with --force to start this run afresh"
            ) from None
        if state.get("config_digest") != self.config.digest():
            raise RunError(
                f"{self.checkpoint_path} belongs to a different configuration; use --force to start afresh"
            )
        return state

    def _append(self, loop: _Loop, row: dict[str, Any]) -> None:
        R.append_jsonl(self.metrics_path, row)
        loop.rows += 1

    def _truncate_metrics(self, keep: int) -> None:
        """Keep the rows the checkpoint knew of: the resumed run writes the later ones again."""
        rows = R.read_jsonl(self.metrics_path)[:keep]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        os.replace(tmp, self.metrics_path)


class _RunLock:
    """An exclusive lock on a run folder: two processes never train the same run at once."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.handle: Any = None

    def __enter__(self) -> "_RunLock":
        import fcntl

        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise RunError(f"{self.path.parent} is being trained by another process; wait for it or stop it") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _try_compile(model: torch.nn.Module) -> Any:
    try:
        return torch.compile(model, dynamic=False)
    except Exception as exc:  # compile is optional; eager is always correct
        log.warning("torch.compile unavailable (%s); running eager", exc)
        return model


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def train(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    force: bool = False,
    wandb_mode: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run; never raises for a failed run."""
    return Trainer(config, runs_dir, wandb_mode, progress).run(force=force)

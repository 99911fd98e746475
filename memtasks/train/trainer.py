"""Train one run (task × model × seed) to its budget and write its record.

The loop: sample a batch (curriculum) → forward → masked loss → backward → divergence check →
clip → optimiser step → the model's ``after_optimizer_step`` hook. Every ``eval_every``
sequences (and at 0 and at the end) the model is scored on the task's fixed evaluation sets at
the training lengths and every generalisation point, and a row is appended to metrics.jsonl.
Checkpoints are written every ``checkpoint_every_s`` seconds, at the end, and when a signal
(Ctrl-C, SIGTERM) stops the run between two steps; re-running the same config resumes from the
checkpoint and reaches the same result as an uninterrupted run.

Everything in the run folder is touched only under the folder's lock (``checkpoint.RunLock``):
a second process, ``--force`` included, never changes a run that another one is training.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from memtasks.core.errors import MemtasksError
from memtasks.core.seeds import stable_seed
from memtasks.models import MemoryModel
from memtasks.tasks.limits import check_run_sizes
from memtasks.train import interrupt
from memtasks.results import store as R
from memtasks.results.schema import RunResult
from memtasks.train.build import closed_form_data, make_model, make_optimizer, make_task, probe_contract
from memtasks.train.checkpoint import RunBusy, RunError, RunLock, load_checkpoint, save_checkpoint, save_weights
from memtasks.train.config import RunConfig
from memtasks.train.curriculum import Curriculum
from memtasks.train.evaluation import evaluate, validation_batch
from memtasks.train.loop import LoopState
from memtasks.train.provenance import pick_device
from memtasks.train.run_record import build_result, identity_differences, resolved_config, run_identity, stored_identity

__all__ = ["RunBusy", "RunError", "Trainer", "make_model", "make_optimizer", "make_task", "train"]

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
WEIGHTS_FILE = "weights.pt"
RECORD_FILES = ("result.json", "checkpoint.pt", "metrics.jsonl", "config.json", WEIGHTS_FILE)


class Trainer:
    """One run. Use :func:`train` unless you need the pieces.

    After :meth:`run`, ``reused`` says whether the result was an earlier finished record
    returned as it was (not trained again)."""

    def __init__(
        self,
        config: RunConfig,
        runs_dir: str | Path = "runs",
        wandb_mode: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        if str(runs_dir) == "":  # Path("") would be the current folder
            raise RunError("--runs-dir is empty; give the folder of run records (default: runs)")
        self.config = config
        self.runs_dir = Path(runs_dir)
        self.dir = R.run_dir(runs_dir, config.group, config.task, config.model, config.seed)
        self.wandb_mode = wandb_mode
        self.progress = progress
        self.task = make_task(config)
        self.device = pick_device(config.device)
        self.reused = False
        self.ran_with: dict[str, Any] = {}
        self._validation: Any = None

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
        try:
            return R.finished_result(self.dir)  # a failed run is retried; ok and diverged runs are final
        except R.RecordError as exc:
            raise RunError(
                f"{exc}; the record cannot be trusted: train this run again with --force "
                "(memtasks matrix: --force with --tasks/--models/--seeds naming the cell)"
            ) from None

    def _check_same_config(self) -> None:
        """A folder that holds a run of another configuration is never silently mixed in."""
        stored, mine = stored_identity(self.dir), run_identity(self.config)
        if stored is not None and stored != mine:
            changed = identity_differences(stored, mine)
            raise RunError(
                f"{self.dir} holds a run of a different configuration ({changed}); "
                "use --force to replace it or another --group"
            )

    # --- main ----------------------------------------------------------------------------
    def run(self, force: bool = False) -> dict[str, Any]:
        """Train (or resume, or return the finished result of) this run."""
        if self.device.type == "cpu":
            torch.set_num_threads(self.config.threads)
        # everything a wrong input can break is built and checked before the run folder exists
        model = make_model(self.config, self.task).to(self.device)
        check_run_sizes(self.task, self.config.batch_size, self.config.eval_size, model.state_size())
        self._prepare_runs_dir()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create run folder {self.dir}: {exc.strerror or exc}") from None
        with RunLock(self.dir):  # before anything in the folder is read or changed
            if force:
                for name in RECORD_FILES:
                    (self.dir / name).unlink(missing_ok=True)
                shutil.rmtree(self.dir / "wandb", ignore_errors=True)  # the replaced run's W&B log goes too
            else:
                self._check_same_config()
                done = self.finished()
                if done is not None:
                    self.reused = True
                    return done
            return self._run_locked(model, fresh=force)

    def _prepare_runs_dir(self) -> None:
        if self.runs_dir.exists() and not self.runs_dir.is_dir():
            raise RunError(f"runs dir {self.runs_dir} is a file, not a folder; give a folder with --runs-dir")
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create runs dir {self.runs_dir}: {exc.strerror or exc}") from None
        probe = self.runs_dir / f".write-test-{id(self)}"
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise RunError(f"runs dir {self.runs_dir} is not writable ({exc.strerror or exc})") from None

    def _run_locked(self, model: MemoryModel, fresh: bool = False) -> dict[str, Any]:
        checkpoint = load_checkpoint(self.checkpoint_path, self.device, self.config.digest())  # before anything is written
        if checkpoint is not None:
            self._check_metrics_rows(checkpoint["loop"]["rows"])
        self.ran_with = self._ran_with(model)
        try:
            resolved = self._write_config(model)  # draws the evaluation sets to hash them
        except (MemtasksError, OSError):
            raise
        except Exception as exc:  # a plugin task's own code
            raise RunError(f"task {self.config.task!r} failed while drawing its evaluation sets: {type(exc).__name__}: {exc}") from None

        from memtasks.train.wandb_log import WandbRun

        wb = WandbRun.start(self.config, self.dir, self.wandb_mode, resume=checkpoint is not None, fresh_id=fresh, resolved=resolved)
        started = self._wall_mark = time.monotonic()
        try:
            probe_contract(model, self.task, self.device)  # a plugin's broken contract is a recorded failure
            if model.closed_form:
                result = self._fit_closed_form(model, wb)
            else:
                result = self._train(model, checkpoint, wb)
        except interrupt.Interrupted:
            wb.abandon()
            raise
        except Exception as exc:  # a failed run is recorded, never lost
            log.error("run %s failed: %s: %s", self.dir, type(exc).__name__, exc)
            log.debug("traceback of the failed run", exc_info=True)
            result = self._result(model, LoopState(), "failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        result["wall_time_s"] = round(time.monotonic() - started, 3)
        result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result = RunResult.from_dict(result, self.result_path).to_dict()  # the schema checks the record at birth
        if result["status"] != "failed":
            save_weights(self.dir / WEIGHTS_FILE, model)  # before result.json, which marks the run finished
        R.write_json_atomic(self.result_path, result)
        wb.finish(result, model, self.task, self.device)
        return result


    def _ran_with(self, model: MemoryModel) -> dict[str, Any]:
        """What actually runs, where it differs from what was asked (recorded in config.json)."""
        cfg = self.config
        bf16 = cfg.bf16 and self.device.type == "cuda"
        if cfg.bf16 and not bf16:
            log.warning("bf16 autocast runs on CUDA only; this run trains in float32 on %s", self.device)
        return {"bf16": bf16, "compile": cfg.compile, **model.ran_with(self.device)}

    # --- gradient training -------------------------------------------------------------
    def _train(self, model: MemoryModel, checkpoint: dict[str, Any] | None, wb: Any) -> dict[str, Any]:
        cfg = self.config
        optimizer = make_optimizer(cfg, model)
        o = cfg.optim()
        # Training data is drawn on the CPU and moved, so a CPU and a GPU run of one seed see the
        # same sequences.
        gen = torch.Generator().manual_seed(stable_seed("train", cfg.seed, cfg.task))
        curriculum = Curriculum.create(cfg.curriculum, self.task)
        loop = LoopState()
        forward = model
        if cfg.compile:
            forward = _try_compile(model)
            self.ran_with["compile"] = forward is not model
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            gen.set_state(checkpoint["generator"].cpu())
            curriculum.load_state_dict(checkpoint["curriculum"])
            loop = LoopState(**checkpoint["loop"])
            self._truncate_metrics(loop.rows)
        else:
            self.metrics_path.unlink(missing_ok=True)
            self.metrics_path.touch()

        def save() -> None:
            self._save_checkpoint(model, optimizer, gen, curriculum, loop)

        params = [p for p in model.parameters() if p.requires_grad]
        last_ckpt = time.monotonic()
        last_progress = 0.0
        autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.ran_with["bf16"])
        recent_loss: float = float("nan")
        recent_metrics: dict[str, float] = {}
        while True:
            if interrupt.stop_requested():  # between two steps: the state is consistent here
                save()
                raise interrupt.Interrupted(f"{self.dir}: stopped by a signal; checkpoint written")
            if loop.seen >= loop.next_eval or loop.seen >= cfg.sequences:
                self._evaluate(model, loop, curriculum, wb)
                loop.next_eval = (loop.seen // cfg.eval_every + 1) * cfg.eval_every
                if self.task.is_solved(loop.last_eval["train"]):
                    loop.sequences_to_solve = loop.sequences_to_solve if loop.sequences_to_solve is not None else loop.seen
                    loop.solved_streak += 1
                else:
                    loop.solved_streak = 0
                loop.track_best(loop.last_eval["train"][self.task.solved_metric], cfg.plateau_min_delta)
                if cfg.early_stop and loop.solved_streak >= cfg.patience and loop.seen < cfg.sequences:
                    loop.stopped_early = True
                    loop.stop_reason = "solved"
                    break
                if (cfg.plateau_patience is not None and loop.since_best >= cfg.plateau_patience
                        and loop.seen < cfg.sequences and loop.solved_streak == 0):
                    loop.stop_reason = "plateaued"
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
                    loop.widened()
                    self._append(loop, {"event": "curriculum", "sequences": loop.seen, "range": [curriculum.lo, curriculum.hi]})
            if time.monotonic() - last_progress > 1.0:
                last_progress = time.monotonic()
                wb.log_train({"sequences": loop.seen, "step": loop.step, "loss": loss_value,
                              "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(gnorm)})
                if self.progress is not None:
                    self.progress(loop.progress(cfg.sequences, recent_loss, recent_metrics, self.task.solved_metric))
            if time.monotonic() - last_ckpt > cfg.checkpoint_every_s:
                save()
                last_ckpt = time.monotonic()
        save()
        return self._result(model, loop, "ok")

    def _diverged(self, model: MemoryModel, loop: LoopState, what: str, value: float) -> dict[str, Any]:
        log.warning("run %s diverged: %s is %s at step %d", self.dir, what, value, loop.step)
        return self._result(
            model,
            loop,
            "diverged",
            error=f"non-finite {what} ({value}) at step {loop.step}",
            diverged_at={"step": loop.step, "sequences": loop.seen},
        )

    def _evaluate(self, model: MemoryModel, loop: LoopState, curriculum: Curriculum, wb: Any) -> None:
        loop.last_eval = evaluate(model, self.task, self.config.eval_size, self.device)
        now = time.monotonic()
        loop.wall_time += now - self._wall_mark
        self._wall_mark = now
        row = {
            "sequences": loop.seen,
            "step": loop.step,
            "train_time_s": round(loop.train_time, 3),
            "wall_time_s": round(loop.wall_time, 3),
            "curriculum": [curriculum.lo, curriculum.hi],
            "metrics": loop.last_eval,
        }
        if self.config.validate:
            row["validation"] = self._validate(model)
        self._append(loop, row)
        wb.log_eval(row)
        if self.progress is not None:
            self.progress({"event": "eval", **row})

    @torch.no_grad()
    def _validate(self, model: MemoryModel) -> dict[str, float]:
        """The task's metrics on the validation set (training lengths, disjoint from every
        evaluation set): what a tuning phase chooses settings by."""
        if self._validation is None:
            self._validation = validation_batch(self.task, self.config.eval_size, self.device)
        outputs, _ = model(self._validation.inputs)
        return self.task.metrics(outputs.float(), self._validation)

    # --- closed-form training (ESN) ----------------------------------------------------
    def _fit_closed_form(self, model: MemoryModel, wb: Any) -> dict[str, Any]:
        cfg = self.config
        self.metrics_path.unlink(missing_ok=True)
        self.metrics_path.touch()
        batches, val, n_batches = closed_form_data(cfg, self.task, self.device)
        curriculum = Curriculum.create(cfg.curriculum, self.task)
        t0 = time.perf_counter()
        info = model.fit(batches, val, self.task.loss)
        loop = LoopState(step=n_batches, seen=n_batches * cfg.batch_size, train_time=time.perf_counter() - t0)
        self._evaluate(model, loop, curriculum, wb)
        if self.task.is_solved(loop.last_eval["train"]):
            loop.sequences_to_solve = loop.seen
        result = self._result(model, loop, "ok")
        result["fit"] = {k: v for k, v in info.items() if isinstance(v, (int, float, str))}
        return result

    def _result(self, model: MemoryModel, loop: LoopState, status: str, error: str | None = None,
                diverged_at: dict[str, int] | None = None) -> dict[str, Any]:
        return build_result(self.config, self.task, model, loop, status, error, diverged_at)

    def _write_config(self, model: MemoryModel) -> dict[str, Any]:
        data = resolved_config(self.config, self.task, model, self.device, self.ran_with)
        R.write_json_atomic(self.dir / "config.json", data)
        return data

    # --- checkpoints ---------------------------------------------------------------------
    def _save_checkpoint(self, model, optimizer, gen, curriculum, loop: LoopState) -> None:
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
        save_checkpoint(self.checkpoint_path, state)

    def _append(self, loop: LoopState, row: dict[str, Any]) -> None:
        R.append_jsonl(self.metrics_path, row)
        loop.rows += 1

    def _check_metrics_rows(self, expected: int) -> None:
        """A resume needs every row the checkpoint knew of; a metrics file that lost some
        (edited, truncated, restored from an older copy) would leave holes in the record."""
        have = len(R.read_jsonl(self.metrics_path))
        if have < expected:
            raise RunError(
                f"{self.metrics_path} has {have} rows but its checkpoint expects {expected}: rows were lost, "
                "so a resumed record would have holes; train this run again with --force"
            )

    def _truncate_metrics(self, keep: int) -> None:
        """Keep the rows the checkpoint knew of: the resumed run writes the later ones again."""
        rows = R.read_jsonl(self.metrics_path)[:keep]
        R.write_text_atomic(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _try_compile(model: torch.nn.Module) -> Any:
    try:
        return torch.compile(model, dynamic=False)
    except Exception as exc:  # compile is optional; eager is always correct
        log.warning("torch.compile unavailable (%s); running eager", exc)
        return model


def train(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    force: bool = False,
    wandb_mode: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one run; never raises for a failed run."""
    return Trainer(config, runs_dir, wandb_mode, progress).run(force=force)

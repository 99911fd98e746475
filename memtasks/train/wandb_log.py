"""Weights & Biases logging of one run, built from the same rows as the run record.

Mode: ``--wandb`` if given, else the ``WANDB_MODE`` environment variable, else ``offline``
(no account or network needed; ``wandb sync <run dir>/wandb/offline-run-*`` uploads later).

What a W&B user finds in a run:

- **grouping**: group ``<group>/<task>/<model>``, job type ``train``, name
  ``<task>/<model>/seed-<k>``, tags task and model. W&B's own grouping therefore shows one
  model on one task across its seeds, never an average over different models.
- **config**: the resolved configuration the trainer writes to ``config.json`` (``run``: the
  RunConfig; ``optim``: every optimiser setting in use, family defaults filled in;
  ``task_params``; ``model_config``: the model's full hyper-parameters; ``budget``;
  ``versions``; ``eval_hashes``; ``git_commit``; ``device``/``device_name``/``threads``: what
  the run actually used), and at the end ``model_size`` (trainable and total parameters,
  state size).
- **history**, against the step metric ``sequences``: ``train/loss``, ``train/lr``,
  ``train/grad_norm``, ``train/step`` as training goes (:meth:`WandbRun.log_train`), and
  ``eval/<label>/<metric>`` at every evaluation (:meth:`WandbRun.log_eval`).
- **at the end**: the summary (status, sequences seen and to solve, sizes, wall time,
  throughput, ``final/<label>/<metric>``), the table ``eval/by_length`` (one row per evaluation
  point with its length), one chart ``curves/<metric>`` per metric with a line per evaluation
  point (the learning curves, from ``metrics.jsonl``), and ``example``: the figure of
  ``memtasks inspect`` (inputs, targets, outputs and what the memory did) for one sequence.

Online mode is bounded. W&B gets ``ONLINE_TIMEOUT_S`` seconds (its ``init_timeout``) to reach
the server; the SDK adds at most a 10 s grace if its service does not answer, so the attempt
ends within ``ONLINE_TIMEOUT_S + 10`` s (measured: about 21 s against a closed port with a key
set; at once without a key). The run then logs offline under the same run id: the failed
attempt's folder is removed and W&B's service is restarted (``wandb.teardown()``), since the
service keeps the failed run's id and would refuse it ("run ID ... is in use"); this also
finishes any other W&B run of the process. After a failure the process skips online attempts
for ``ONLINE_RETRY_AFTER_S`` seconds, so a matrix worker pays the wait once, not per cell.

Run ids: ``<group>-<task>-<model>-s<seed>-<config digest>``, recorded in
``<run dir>/wandb/memtasks-run-id``. A resumed run continues the recorded id. A run that starts
from scratch in a folder that already had a W&B run (``--force``, ``fresh_id=True``, or a
restart before the first checkpoint) gets a new random suffix, so ``wandb sync`` never merges
two runs into one.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from memtasks.results import store as R

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
ONLINE_TIMEOUT_S = 20.0  # wandb's init_timeout for the online attempt
ONLINE_RETRY_AFTER_S = 600.0  # after a failed online attempt, this process logs offline this long
PROJECT = "memtasks"
JOB_TYPE = "train"
ID_FILE = "memtasks-run-id"  # under <run dir>/wandb/
_SETTINGS = dict(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)

_online_blocked_until = 0.0  # monotonic time before which online attempts are skipped


def resolve_mode(mode: str | None) -> str:
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ValueError(f"wandb mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


def run_id(config: Any, run_dir: Path, resume: bool, fresh_id: bool) -> str:
    """The W&B run id of this start: the recorded one to resume, else the base id for a first
    run, else (``fresh_id``, or a folder that had a W&B run) the base id with a new suffix."""
    base = re.sub(r"[^A-Za-z0-9_-]", "-", f"{config.group}-{config.task}-{config.model}-s{config.seed}-{config.digest()[:8]}")
    path = Path(run_dir) / "wandb" / ID_FILE
    previous = (path.read_text().strip() if path.exists() else "") or None
    if previous is not None and resume and not fresh_id:
        return previous
    if previous is None and not fresh_id:
        return base
    new = previous
    while new in (previous, base):
        new = f"{base}-{secrets.token_hex(4)}"
    return new


class WandbRun:
    """A thin wrapper that is a no-op when W&B is disabled."""

    def __init__(self, run: Any, run_dir: Path | None = None) -> None:
        self.run = run
        self.run_dir = run_dir

    @classmethod
    def start(
        cls,
        config: Any,
        run_dir: Path,
        mode: str | None,
        resume: bool = False,
        fresh_id: bool = False,
        resolved: dict[str, Any] | None = None,
    ) -> "WandbRun":
        """Start (or resume) the W&B run of ``config`` in ``run_dir``.

        ``resolved`` is what the trainer writes to config.json; without it the W&B config holds
        the RunConfig and the resolved optimiser settings only. ``fresh_id`` (``--force``) gives
        the run a new id even where one was recorded.
        """
        mode = resolve_mode(mode)
        if mode == "disabled":
            return cls(None)
        import wandb

        run_dir = Path(run_dir)
        rid = run_id(config, run_dir, resume, fresh_id)
        kwargs = dict(
            project=PROJECT,
            group=f"{config.group}/{config.task}/{config.model}",
            job_type=JOB_TYPE,
            tags=[config.task, config.model],
            name=f"{config.task}/{config.model}/seed-{config.seed}",
            config=resolved if resolved is not None else {"run": config.to_dict(), "optim": config.optim()},
            dir=str(run_dir),
            id=rid,
            resume="allow" if resume else None,
            reinit="finish_previous",
        )
        run = None
        if mode == "online":
            run = _try_online(kwargs, run_dir)
        if run is None:
            run = wandb.init(mode="offline", settings=wandb.Settings(**_SETTINGS), **kwargs)
        R.write_text_atomic(run_dir / "wandb" / ID_FILE, rid + "\n")
        run.define_metric("sequences")
        run.define_metric("*", step_metric="sequences")
        return cls(run, run_dir)

    def log_train(self, row: dict[str, Any]) -> None:
        """One training row: ``{"sequences", "step", "loss", "lr", "grad_norm"}`` as ``train/*``."""
        if self.run is None:
            return
        data = {f"train/{key}": value for key, value in row.items() if key != "sequences"}
        self.run.log({"sequences": row["sequences"], **data})

    def log_eval(self, row: dict[str, Any]) -> None:
        if self.run is None:
            return
        data: dict[str, Any] = {"sequences": row["sequences"], "train_time_s": row["train_time_s"]}
        for label, metrics in row["metrics"].items():
            for name, value in metrics.items():
                data[f"eval/{label}/{name}"] = value
        self.run.log(data)

    def abandon(self) -> None:
        """Close the run of an interrupted training, marked preempted: a resume continues it."""
        if self.run is None:
            return
        try:
            self.run.mark_preempting()
            self.run.finish(exit_code=1)
        except Exception as exc:  # the interruption, not W&B, is what the user must see
            log.warning("W&B could not close the interrupted run: %s", exc)

    def finish(self, result: dict[str, Any], model: torch.nn.Module, task: Any, device: torch.device) -> None:
        if self.run is None:
            return
        try:
            for key in ("status", "sequences_seen", "sequences_to_solve", "solved", "trainable_params",
                        "total_params", "state_size", "wall_time_s", "throughput"):
                self.run.summary[key] = result.get(key)
            self.run.config.update(
                {"model_size": {k: result.get(k) for k in ("trainable_params", "total_params", "state_size")}},
                allow_val_change=True,
            )
            final = result.get("final") or {}
            for label, metrics in final.items():
                for name, value in metrics.items():
                    self.run.summary[f"final/{label}/{name}"] = value
            charts: dict[str, Any] = {}
            if final:
                charts["eval/by_length"] = _length_table(final, task)
            if self.run_dir is not None:
                charts.update(_curves(R.eval_rows(self.run_dir)))
            if result.get("status") == "ok":
                charts["example"] = _example_image(model, task, device)
            if charts:
                self.run.log(charts)
        except Exception as exc:  # logging must never lose a finished run
            log.warning("W&B logging at the end of the run failed: %s", exc)
        finally:
            self.run.finish()


def _try_online(kwargs: dict[str, Any], run_dir: Path) -> Any:
    """The online run, or None when the server cannot be reached (within the documented bound)."""
    global _online_blocked_until
    import wandb

    if time.monotonic() < _online_blocked_until:
        log.warning("W&B online failed earlier in this process; logging offline")
        return None
    folder = run_dir / "wandb"
    before = set(folder.glob("run-*")) if folder.exists() else set()
    try:
        return wandb.init(mode="online", settings=wandb.Settings(init_timeout=ONLINE_TIMEOUT_S, **_SETTINGS), **kwargs)
    except Exception as exc:
        log.warning("W&B online init failed (%s); logging offline instead", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    _online_blocked_until = time.monotonic() + ONLINE_RETRY_AFTER_S
    wandb.teardown()  # the service holds the failed run's id: a fresh one accepts it offline
    for path in set(folder.glob("run-*")) - before if folder.exists() else ():
        shutil.rmtree(path, ignore_errors=True)  # the failed attempt: `wandb sync` must not find it
    return None


def _length_table(final: dict[str, dict[str, float]], task: Any) -> Any:
    """The final evaluation as a table: one row per evaluation point, with its length."""
    import wandb

    points = task.eval_points()
    names = sorted({name for metrics in final.values() for name in metrics})
    table = wandb.Table(columns=["eval", "length", *names])
    for label, metrics in final.items():
        length = points.get(label, (None, {}))[0]
        table.add_data(label, length, *(metrics.get(name) for name in names))
    return table


def _curves(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One line chart per metric, a line per evaluation point, against sequences."""
    import wandb

    evals = [r for r in rows if "metrics" in r]
    if not evals:
        return {}
    labels = list(evals[-1]["metrics"])
    names = sorted({name for r in evals for metrics in r["metrics"].values() for name in metrics})
    xs = [r["sequences"] for r in evals]
    charts = {}
    for name in names:
        ys = [[r["metrics"].get(label, {}).get(name) for r in evals] for label in labels]
        charts[f"curves/{name}"] = wandb.plot.line_series(
            xs=xs, ys=ys, keys=labels, title=f"{name} by evaluation length", xname="sequences"
        )
    return charts


def _example_image(model: torch.nn.Module, task: Any, device: torch.device) -> Any:
    """The figure of ``memtasks inspect`` for the first sequence of a fixed evaluation batch at
    the training lengths: inputs, targets, outputs and what the model's memory did (its
    ``trace``), rendered to PNG here (the Figure is pyplot-free)."""
    import io

    import wandb
    from PIL import Image

    from memtasks.memory_figure import inspect_figure

    batch = task.eval_batch(None, size=8, seed=1, device=device)
    fig = inspect_figure(model, task, batch, 0, title=f"{task.name}: {model.registry_name}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    return wandb.Image(Image.open(buffer))

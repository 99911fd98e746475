"""Weights & Biases logging of one run, built from the same rows as the run record.

Mode: ``--wandb`` if given, else the ``WANDB_MODE`` environment variable, else ``offline``
(no account or network needed; ``wandb sync <run dir>/wandb/offline-run-*`` uploads later).
Online mode that cannot reach the server within ``ONLINE_TIMEOUT_S`` falls back to offline
with a warning; it never hangs a run.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
ONLINE_TIMEOUT_S = 20.0
PROJECT = "memtasks"


def resolve_mode(mode: str | None) -> str:
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "dryrun":
        mode = "offline"
    if mode not in MODES:
        raise ValueError(f"wandb mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


class WandbRun:
    """A thin wrapper that is a no-op when W&B is disabled."""

    def __init__(self, run: Any) -> None:
        self.run = run

    @classmethod
    def start(cls, config: Any, run_dir: Path, mode: str | None, resume: bool = False) -> "WandbRun":
        mode = resolve_mode(mode)
        if mode == "disabled":
            return cls(None)
        import wandb

        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{config.group}-{config.task}-{config.model}-s{config.seed}-{config.digest()[:8]}")
        kwargs = dict(
            project=PROJECT,
            group=config.group,
            job_type=config.task,
            tags=[config.task, config.model],
            name=f"{config.task}/{config.model}/seed-{config.seed}",
            config=config.to_dict(),
            dir=str(run_dir),
            id=run_id,
            resume="allow" if resume else None,
            reinit="finish_previous",
        )
        settings = dict(silent=True, console="off", x_disable_stats=True, x_disable_meta=True)
        try:
            run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=ONLINE_TIMEOUT_S, **settings), **kwargs)
        except Exception as exc:
            if mode != "online":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", exc)
            run = wandb.init(mode="offline", settings=wandb.Settings(**settings), **kwargs)
        run.define_metric("sequences")
        run.define_metric("*", step_metric="sequences")
        return cls(run)

    def log_eval(self, row: dict[str, Any]) -> None:
        if self.run is None:
            return
        data: dict[str, Any] = {"sequences": row["sequences"], "train_time_s": row["train_time_s"]}
        for label, metrics in row["metrics"].items():
            for name, value in metrics.items():
                data[f"eval/{label}/{name}"] = value
        self.run.log(data)

    def finish(self, result: dict[str, Any], model: torch.nn.Module, task: Any, device: torch.device) -> None:
        if self.run is None:
            return
        try:
            for key in ("status", "sequences_seen", "sequences_to_solve", "solved", "trainable_params",
                        "total_params", "state_size", "wall_time_s", "throughput"):
                self.run.summary[key] = result.get(key)
            for label, metrics in (result.get("final") or {}).items():
                for name, value in metrics.items():
                    self.run.summary[f"final/{label}/{name}"] = value
            if result.get("status") == "ok":
                self.run.log({"example": _example_image(model, task, device)})
        except Exception as exc:  # logging must never lose a finished run
            log.warning("W&B logging at the end of the run failed: %s", exc)
        finally:
            self.run.finish()


def _example_image(model: torch.nn.Module, task: Any, device: torch.device) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import wandb

    from memtasks.viz import plot_example

    batch = task.eval_batch(None, size=8, seed=1, device=device)
    with torch.no_grad():
        model.eval()
        outputs, _ = model(batch.inputs[:1])
    if task.loss == "bce":
        outputs = torch.sigmoid(outputs)
    fig = plot_example(batch, 0, outputs[0].float().cpu(), title=f"{task.name}: {model.registry_name}")
    image = wandb.Image(fig)
    plt.close(fig)
    return image

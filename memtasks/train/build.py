"""From a ``RunConfig`` to the objects a run trains: the task, the model (checked against the
model contract by a one-step probe before any training) and the optimiser."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch

from memtasks.core.errors import MemtasksError
from memtasks.core.seeds import stable_seed
from memtasks.models import MemoryModel, build_model
from memtasks.models.base import MODELS
from memtasks.tasks import get_task
from memtasks.tasks.base import Task
from memtasks.train.checkpoint import RunError
from memtasks.train.config import RunConfig


def make_task(config: RunConfig) -> Task:
    try:
        return get_task(config.task, **config.task_params)
    except MemtasksError as exc:
        raise RunError(str(exc)) from None
    except (TypeError, ValueError) as exc:  # a plugin task's own validation
        raise RunError(f"task {config.task!r}: {exc}") from None


def make_model(config: RunConfig, task: Task) -> MemoryModel:
    """Build the model deterministically from the run's seed (the global RNG is restored after)."""
    try:
        cls = MODELS.get(config.model)
    except MemtasksError as exc:
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
        except MemtasksError as exc:
            raise RunError(str(exc)) from None
        except (TypeError, ValueError) as exc:  # a plugin model's own validation
            raise RunError(f"model {config.model!r}: {exc}") from None
        except RuntimeError as exc:
            if "alloc" in str(exc).lower():  # an allocation no check could foresee
                raise RunError(f"model {config.model!r} does not fit in memory: {exc}") from None
            raise RunError(f"model {config.model!r} failed to build (its own code): {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # a plugin model's constructor
            raise RunError(f"model {config.model!r} failed to build (its own code): {type(exc).__name__}: {exc}") from None


def probe_contract(model: MemoryModel, task: Task, device: torch.device) -> None:
    """Run two sequences of two steps through ``model`` and check what the contract requires:
    ``forward(x) -> (y, state)`` with ``y`` of shape ``(B, T, d_out)``. A model that breaks it
    fails here with its name and the rule, not deep inside the loss."""
    name = model.registry_name
    x = torch.zeros(2, 2, task.d_in, device=device)
    want = (2, 2, task.d_out)
    rule = f"forward(x) must return (y, state) with y of shape (B, T, d_out) = {want}"
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise RunError(f"model {name!r} failed on a probe input of shape {tuple(x.shape)}: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = f"a {type(out).__name__}" + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise RunError(f"model {name!r} breaks the model contract: {rule}; it returned {got}")
    y = out[0]
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        got = f"shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else f"a {type(y).__name__}"
        raise RunError(f"model {name!r} breaks the model contract: {rule}; y has {got}")


def make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = config.optim()
    params = [p for p in model.parameters() if p.requires_grad]
    if o["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=o["lr"])
    if o["optimizer"] == "rmsprop":
        # The NTM/DNC papers' RMSProp: decay 0.95 with momentum.
        return torch.optim.RMSprop(params, lr=o["lr"], alpha=0.95, momentum=o["momentum"], eps=1e-8)
    return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"])


def closed_form_data(
    config: RunConfig, task: Task, device: torch.device
) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], tuple[torch.Tensor, ...], int]:
    """What a closed-form model (the ESN) is fitted on: ``config.sequences`` training sequences
    as batches of ``(inputs, targets, mask)`` from the run's curriculum (the same data a gradient
    run draws), a validation batch of its own seed, and the number of batches."""
    from memtasks.train.curriculum import Curriculum

    gen = torch.Generator().manual_seed(stable_seed("train", config.seed, config.task))
    curriculum = Curriculum.create(config.curriculum, task)
    n_batches = max(1, math.ceil(config.sequences / config.batch_size))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for _ in range(n_batches):
            b = curriculum.sample(task, config.batch_size, gen).to(device)
            yield b.inputs, b.targets, b.mask

    val = task.sample(config.eval_size, torch.Generator().manual_seed(stable_seed("val", config.seed)), device=device)
    return batches(), (val.inputs, val.targets, val.mask), n_batches


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

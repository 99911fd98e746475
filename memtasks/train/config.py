"""``RunConfig``: everything that defines one training run, and the per-family defaults.

A run is one task × one model × one seed. The config serialises to and from JSON exactly
(``RunConfig.from_json(cfg.to_json()) == cfg``) and rejects unknown keys by name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

from memtasks.core.config import ConfigError, ConfigKeyError, check_choice, check_float, check_int, check_keys, parse_typed, unknown_key_message

OPTIMIZERS = ("adam", "rmsprop", "sgd")
CURRICULA = ("none", "uniform", "grow")
DEVICES = ("auto", "cpu", "cuda", "mps")

RECIPES = ("standard", "family")
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
# The benchmark's one training recipe for every gradient-trained model: Adam with the global
# gradient norm clipped at 1; the learning rate is the one knob a matrix tunes ([tune]).
STANDARD_RECIPE: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "clip_value": None, "clip_norm": 1.0}
# recipe = "family": what a family declares (``MemoryModel.optimizer_defaults``, e.g. its paper's
# settings), over these generic values.
GENERIC_DEFAULTS: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "clip_value": None, "clip_norm": None}


def family_defaults(model: str) -> dict[str, Any]:
    """The optimiser settings a ``recipe = "family"`` run of ``model`` uses where it sets none."""
    from memtasks.models import MODELS

    declared = dict(getattr(MODELS.get(model), "optimizer_defaults", {}) or {})
    unknown = set(declared) - set(GENERIC_DEFAULTS)
    if unknown:
        raise ConfigError(f"model {model!r} declares unknown optimizer_defaults {sorted(unknown)}; "
                          f"allowed: {', '.join(GENERIC_DEFAULTS)}")
    return {**GENERIC_DEFAULTS, **declared}


def _freeze(value: Any) -> Any:
    """Lists (as JSON gives them back) become tuples so configs compare and hash alike."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class RunConfig:
    """One run. Optimiser fields left as None take the run's recipe's value (``optim``)."""

    task: str
    model: str
    seed: int = 0
    task_params: Mapping[str, Any] = field(default_factory=dict)  # overrides of the task's fields
    model_params: Mapping[str, Any] = field(default_factory=dict)  # the model config's fields
    param_budget: int | None = None  # size the model to this many trainable parameters
    group: str = "default"  # runs/<group>/...; the W&B group
    sequences: int = 200_000  # training budget, in sequences (the papers' x-axis)
    batch_size: int = 32
    optimizer: str | None = None  # adam | rmsprop | sgd
    lr: float | None = None
    momentum: float | None = None  # RMSProp/SGD momentum
    clip_value: float | None = None  # element-wise gradient clipping to [-v, v]
    clip_norm: float | None = None  # global gradient-norm clipping
    recipe: str = "standard"  # standard: STANDARD_RECIPE for every model; family: the family's own defaults
    curriculum: str = "uniform"  # none | uniform | grow (see memtasks.train.curriculum)
    eval_every: int = 5_000  # sequences between evaluations
    eval_size: int = 128  # sequences per evaluation set (one set per length)
    early_stop: bool = True  # stop once solved for `patience` consecutive evaluations
    patience: int = 3
    # stop as plateaued after this many evaluations in a row without improving the best value of
    # the task's solved metric (at the training lengths) by more than plateau_min_delta of it;
    # None: never
    plateau_patience: int | None = None
    plateau_min_delta: float = 0.01
    validate: bool = False  # also score a validation set (its own seed, training lengths) at every evaluation
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 1  # torch threads on CPU
    bf16: bool = False  # bf16 autocast (GPU only)
    compile: bool = False  # torch.compile the model
    checkpoint_every_s: float = 120.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_params", {k: _freeze(v) for k, v in dict(self.task_params).items()})
        object.__setattr__(self, "model_params", {k: _freeze(v) for k, v in dict(self.model_params).items()})
        for name in ("task", "model", "group"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"RunConfig.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not GROUP_NAME.match(self.group):
            raise ConfigError(
                f"RunConfig.group={self.group!r} must be one plain folder name (letters, digits and _ . + = -, "
                "starting with a letter or digit; no '/' or '..'): runs/<group>/<task>/<model>/seed-<k>"
            )
        check_int("RunConfig", "seed", self.seed, 0)
        if self.param_budget is not None:
            check_int("RunConfig", "param_budget", self.param_budget, 1)
        check_int("RunConfig", "sequences", self.sequences, 0)
        check_int("RunConfig", "batch_size", self.batch_size, 1)
        if self.optimizer is not None:
            check_choice("RunConfig", "optimizer", self.optimizer, OPTIMIZERS)
        if self.lr is not None:
            check_float("RunConfig", "lr", self.lr, 0.0, open_lo=True)
        if self.momentum is not None:
            check_float("RunConfig", "momentum", self.momentum, 0.0, 0.999999)
        for name in ("clip_value", "clip_norm"):
            if getattr(self, name) is not None:
                check_float("RunConfig", name, getattr(self, name), 0.0, open_lo=True)
        check_choice("RunConfig", "recipe", self.recipe, RECIPES)
        check_choice("RunConfig", "curriculum", self.curriculum, CURRICULA)
        check_int("RunConfig", "eval_every", self.eval_every, 1)
        check_int("RunConfig", "eval_size", self.eval_size, 1)
        check_int("RunConfig", "patience", self.patience, 1)
        if self.plateau_patience is not None:
            check_int("RunConfig", "plateau_patience", self.plateau_patience, 1)
        check_float("RunConfig", "plateau_min_delta", self.plateau_min_delta, 0.0, 1.0)
        check_choice("RunConfig", "device", self.device, DEVICES)
        check_int("RunConfig", "threads", self.threads, 1, 1024)
        check_float("RunConfig", "checkpoint_every_s", self.checkpoint_every_s, 0.0, open_lo=True)
        for name in ("early_stop", "validate", "bf16", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"RunConfig.{name} must be true or false, got {getattr(self, name)!r}")

    # --- resolved settings ------------------------------------------------------------
    def optim(self) -> dict[str, Any]:
        """The optimiser settings this run trains with: its own, over its recipe's."""
        out = dict(STANDARD_RECIPE) if self.recipe == "standard" else family_defaults(self.model)
        for key in ("optimizer", "lr", "momentum", "clip_value", "clip_norm"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunConfig":
        check_keys(cls, data, "RunConfig")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def identity(self) -> dict[str, Any]:
        """What defines what is trained (not where or how fast), with the optimiser settings it
        resolves to: resume and the matrix check these."""
        d = self.to_dict()
        for key in ("device", "threads", "checkpoint_every_s"):
            d.pop(key)
        d["optim"] = self.optim()
        return d

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def with_sets(self, assignments: list[str]) -> "RunConfig":
        """Apply ``--set key=value`` strings: RunConfig fields, ``task.<param>`` or ``model.<param>``."""
        from memtasks.tasks import TASKS
        from memtasks.models import MODELS

        updates: dict[str, Any] = {}
        task_params = dict(self.task_params)
        model_params = dict(self.model_params)
        own = [f.name for f in dataclasses.fields(self) if f.name not in ("task_params", "model_params")]
        seen: dict[str, str] = {}
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            key, raw = item.split("=", 1)
            key = key.strip()
            if key in seen and seen[key] != raw:
                raise ConfigError(f"--set {key} is given twice, as {seen[key]!r} and {raw!r}; give it once")
            seen[key] = raw
            if key.startswith("task."):
                cls = TASKS.get(self.task)
                sub = key[5:]
                task_params[sub] = _parse_field(cls, sub, raw, f"{self.task} task parameter")
            elif key.startswith("model."):
                cls = MODELS.get(self.model).config_cls
                sub = key[6:]
                model_params[sub] = _parse_field(cls, sub, raw, f"{self.model} hyper-parameter")
            elif key in own:
                updates[key] = _parse_field(RunConfig, key, raw, "RunConfig")
            else:
                raise ConfigKeyError(unknown_key_message(key, own + ["task.<param>", "model.<param>"], "--set"))
        return dataclasses.replace(self, task_params=task_params, model_params=model_params, **updates)


def _parse_field(cls: type, key: str, raw: str, what: str) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise ConfigKeyError(unknown_key_message(key, names, what))
    return parse_typed(typing.get_type_hints(cls)[key], raw, f"{what} {key}")

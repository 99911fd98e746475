"""The task contract: a frozen dataclass of parameters that samples batches.

REQUIRED of a task subclass
    * be a ``@dataclass(frozen=True)`` subclass of :class:`Task`, registered with
      ``@register_task("name")``; its fields are its parameters, each with a default;
    * ``d_in`` / ``d_out`` properties, ``train_range`` (inclusive ``(lo, hi)`` of the
      ``length`` parameter), and a ``generalise`` field (or a ``generalisation_lengths``
      property) naming the lengths evaluated for generalisation;
    * ``_generate(lengths, generator, **overrides) -> Batch`` that builds the batch for the
      given per-sequence lengths, drawing every random number from ``generator`` on
      ``generator.device`` with no per-sequence Python loop;
    * ``max_steps(length) -> int``: the number of time steps of a sequence of that length;
    * ``validate()``: raise ``ConfigError`` (a ``ValueError``) naming the field, value and allowed range;
    * a docstring with a worked example (inputs, targets, scored steps).

OPTIONAL
    * ``loss`` ("bce" on bits, default, or "mse"), ``version``, ``solved_metric`` and
      ``solved_threshold`` class attributes;
    * ``metrics(outputs, batch)`` to add task-specific metrics (``dynamic_ngrams``);
    * ``sample_overrides``: the names of keyword overrides ``sample`` accepts, and
      ``generalisation_overrides``: ``(key, value)`` pairs evaluated at the training lengths
      as extra generalisation points (repeat_copy: ``(("repeats", 20),)``).

OPTIONAL, read by tables and figures only (none changes sampling)
    * ``length_label``: what the ``length`` parameter counts, for axes ("items K");
    * ``paper_budget`` / ``paper_source``: the training sequences of the paper that introduced
      the task, and where that number comes from (None when it could not be sourced);
    * ``reference``: a :class:`Reference` predictor the task's ``metrics`` score on the same
      sequences (``dynamic_ngrams``: the Bayes-optimal cost);
    * ``chance_level(metric, length)``: the score of a predictor that ignores its inputs;
    * ``_moments_at(length, **overrides)``: the target moments at one length, from which
      ``chance_cost`` gives the cost of the best input-independent predictor in closed form
      (:mod:`memtasks.tasks.chance`; without it, the moments are estimated from a sample);
    * ``reference_levels(batch)``: named reference predictors' costs on a batch, shown as
      reference rows (``dynamic_ngrams``: adaptive counters of 0..order-1 context bits).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from memtasks import metrics as M
from memtasks.core.config import ConfigError, check_int, check_keys
from memtasks.core.lazy import torch
from memtasks.core.registry import Registry, RegistryError
from memtasks.core.seeds import stable_seed
from memtasks.tasks import chance
from memtasks.tasks.chance import TargetMoments


@dataclass
class Batch:
    """One batch of sequences, batch first.

    Attributes:
        inputs: float32 ``(B, T, d_in)``.
        targets: float32 ``(B, T, d_out)``.
        mask: bool ``(B, T)``, True where the step is scored. Padding is never scored.
        lengths: int64 ``(B,)``, each sequence's ``length`` parameter (see the task).
        extras: task-specific tensors (e.g. ``steps``: each sequence's true number of steps).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str | None) -> "Batch":
        if device is None:
            return self
        return Batch(
            self.inputs.to(device),
            self.targets.to(device),
            self.mask.to(device),
            self.lengths.to(device),
            {k: v.to(device) for k, v in self.extras.items()},
        )

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    def content_hash(self) -> str:
        """sha256 of the batch's tensors' bytes: identifies an evaluation set across machines."""
        h = hashlib.sha256()
        for t in (self.inputs, self.targets, self.mask, self.lengths, *(self.extras[k] for k in sorted(self.extras))):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()


# The training budget of the NTM paper's tasks. Approximate (≈): its learning-curve figures for
# copy, repeat copy, associative recall, dynamic N-grams and priority sort run to roughly 1M
# training sequences (x-axis in thousands), read off the axes.
NTM_PAPER_BUDGET = 1_000_000
NTM_PAPER_SOURCE = "Graves et al. 2014 (NTM), learning-curve figures: up to ≈1M training sequences"


@dataclass(frozen=True)
class Reference:
    """A reference predictor that the task's ``metrics`` score on the same sequences as the model.

    Attributes:
        name: how tables and figures call it ("Bayes-optimal").
        metric: the metric holding its cost (``bayes_cost``).
        excess: the metric holding the model's cost minus the reference's (``excess_bits``).
    """

    name: str
    metric: str
    excess: str


@dataclass(frozen=True)
class Task:
    """Base class of every task; see the module docstring for the contract."""

    loss: ClassVar[str] = "bce"
    version: ClassVar[str] = "1"
    # fields added after records were made, and the value those records implicitly used
    implicit_before_field: ClassVar[dict[str, Any]] = {}
    solved_metric: ClassVar[str] = "bit_errors"
    solved_threshold: ClassVar[float] = 0.01
    sample_overrides: ClassVar[tuple[str, ...]] = ()
    generalisation_overrides: ClassVar[tuple[tuple[str, Any], ...]] = ()
    length_label: ClassVar[str] = "length"
    paper_budget: ClassVar[int | None] = None
    paper_source: ClassVar[str] = ""
    reference: ClassVar[Reference | None] = None
    registry_name: ClassVar[str]

    def __post_init__(self) -> None:
        owner = getattr(type(self), "registry_name", type(self).__name__)
        gen = getattr(self, "generalise", ())
        if not isinstance(gen, (tuple, list)):  # validate() iterates it; an int or a table would not say so
            raise ConfigError(f"{owner}.generalise must be a list of integers, got {gen!r}")
        self.validate()
        lo, hi = self.train_range
        if not 1 <= lo <= hi:
            raise ConfigError(f"{owner}: training range must satisfy 1 <= lo <= hi, got ({lo}, {hi})")
        lengths = list(self.generalisation_lengths)
        repeated = sorted({n for n in lengths if lengths.count(n) > 1}, key=str)
        if repeated:  # each length is one evaluation point; a repeat would be evaluated once, silently
            raise ConfigError(
                f"{owner}.generalise lists {', '.join(map(str, repeated))} more than once; give each length once"
            )

    # --- declarations --------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).registry_name

    @property
    def d_in(self) -> int:
        raise NotImplementedError

    @property
    def d_out(self) -> int:
        raise NotImplementedError

    @property
    def train_range(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def generalisation_lengths(self) -> tuple[int, ...]:
        """The lengths evaluated for generalisation: the task's ``generalise`` field by convention."""
        return tuple(getattr(self, "generalise", ()))

    def max_steps(self, length: int) -> int:
        raise NotImplementedError

    def validate(self) -> None:
        """Check every field; raise ``ConfigError`` naming the field, value and allowed range."""

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator, **overrides: Any) -> Batch:
        raise NotImplementedError

    # --- sampling ------------------------------------------------------------------
    def sample(
        self,
        batch_size: int,
        generator: torch.Generator,
        length: int | None = None,
        device: torch.device | str | None = None,
        **overrides: Any,
    ) -> Batch:
        """Draw a batch. Pure: all randomness comes from ``generator``.

        Args:
            batch_size: number of sequences B >= 1.
            generator: the only source of randomness; tensors are drawn on its device.
            length: None draws each sequence's length uniformly from ``train_range``;
                an int fixes it for the whole batch.
            device: where the batch ends up (default: the generator's device).
            overrides: other generalisation axes named in ``sample_overrides``.
        """
        check_int(self.name, "batch_size", batch_size, 1)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{self.name}.sample needs a torch.Generator, got {type(generator).__name__}")
        for key in overrides:
            if key not in self.sample_overrides:
                allowed = ", ".join(self.sample_overrides) or "none"
                raise TypeError(f"{self.name}.sample got unknown override {key!r}; allowed: {allowed}")
        gdev = generator.device
        if length is None:
            lo, hi = self.train_range
            lengths = torch.randint(lo, hi + 1, (batch_size,), generator=generator, device=gdev)
        else:
            check_int(self.name, "length", length, 1)
            lengths = torch.full((batch_size,), length, dtype=torch.long, device=gdev)
        batch = self._generate(lengths, generator, **overrides)
        return batch.to(device)

    def eval_batch(
        self,
        length: int | None,
        size: int = 256,
        seed: int = 0,
        device: torch.device | str | None = None,
        **overrides: Any,
    ) -> Batch:
        """The fixed evaluation set at ``length`` (None: the training range) and ``overrides``.

        Derived from a stable hash of the task's parameters, version, length, size, seed and
        overrides, so every model and machine sees the same sequences.
        """
        return _eval_batch_cached(self, length, size, seed, tuple(sorted(overrides.items()))).to(device)

    def eval_hash(self, length: int | None, size: int = 256, seed: int = 0, **overrides: Any) -> str:
        return _eval_batch_cached(self, length, size, seed, tuple(sorted(overrides.items()))).content_hash()

    def eval_points(self) -> dict[str, tuple[int | None, dict[str, Any]]]:
        """Every evaluation point as ``label -> (length, overrides)``.

        ``"train"`` is the training range; generalisation lengths are labelled by the number;
        override points as ``"key=value"``.
        """
        points: dict[str, tuple[int | None, dict[str, Any]]] = {"train": (None, {})}
        for n in self.generalisation_lengths:
            points[str(n)] = (n, {})
        for key, value in self.generalisation_overrides:
            points[f"{key}={value}"] = (None, {key: value})
        return points

    def stable_seed(self, *parts: Any) -> int:
        """A 63-bit seed from a sha256 of this task's identity and ``parts`` (never Python's hash())."""
        return stable_seed(self.name, self.version, self.seed_params(), *parts)

    # --- metrics -------------------------------------------------------------------
    def metrics(self, outputs: torch.Tensor, batch: Batch) -> dict[str, float]:
        """Scores of ``outputs`` (logits for bce, values for mse) against ``batch`` on scored steps."""
        if self.loss == "bce":
            return M.bce_metrics(outputs, batch.targets, batch.mask)
        return M.mse_metrics(outputs, batch.targets, batch.mask)

    def loss_fn(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The training loss: mean over scored steps (bce per bit, or mse)."""
        if self.loss == "bce":
            return M.masked_bce(outputs, batch.targets, batch.mask)
        return M.masked_mse(outputs, batch.targets, batch.mask)

    def is_solved(self, metrics: dict[str, float]) -> bool:
        return metrics[self.solved_metric] < self.solved_threshold

    def chance_level(self, metric: str, length: int | None = None) -> float | None:
        """``metric`` of a predictor that ignores its inputs, at ``length`` (None: the training range).

        bce: every scored bit guessed with probability 1/2, so ``cost`` = scored bits per sequence
        (one bit each), ``bit_errors`` = half of them, ``seq_accuracy`` = mean of 2^-bits; mse:
        always the mean target, so ``mse`` = the targets' variance. Estimated on the fixed
        evaluation set at ``length``; None for a metric it does not cover.
        """
        batch = self.eval_batch(length)
        scored = batch.mask.unsqueeze(-1).expand_as(batch.targets)  # (B, T, d_out)
        if self.loss == "bce":
            bits = scored.sum(dim=(1, 2)).double()  # (B,)
            levels = {"cost": self.chance_cost(length, batch), "bit_errors": bits.mean() / 2,
                      "seq_accuracy": torch.exp2(-bits).mean()}
            return float(levels[metric]) if metric in levels else None
        y = batch.targets[scored].double()
        return float(((y - y.mean()) ** 2).mean()) if metric == "mse" and y.numel() else None

    # --- chance: the best input-independent predictor (memtasks.tasks.chance) ---------
    def _moments_at(self, length: int, **overrides: Any) -> TargetMoments | None:
        """The target moments at one ``length`` in closed form; None (the default): estimate them."""
        return None

    def target_moments(self, length: int | None = None, **overrides: Any) -> TargetMoments:
        """Per step and output channel: P(scored), E[scored·y], E[scored·y²] at ``length``.

        None: the training range, each length equally likely (as ``sample`` draws them). A task
        without ``_moments_at`` gets an estimate from 2048 sequences of a fixed sample.
        """
        return _moments_cached(self, length, tuple(sorted(overrides.items())))

    def chance_prediction(self, length: int | None = None, **overrides: Any) -> torch.Tensor:
        """``(T, d_out)`` the best input-independent prediction: the mean target where scored."""
        return chance.prediction(self.target_moments(length, **overrides))

    def chance_cost(self, length: int | None = None, batch: Batch | None = None, **overrides: Any) -> float:
        """The primary cost (bce: ``cost``, bits per sequence; mse: ``mse``) of the best predictor
        that ignores its inputs (one output per step and channel) at ``length`` and ``overrides``.

        ``batch`` None: its expected cost over the task's distribution; a batch (the evaluation
        set of that point): its cost on those sequences, as a model's is measured.
        """
        moments = self.target_moments(length, **overrides)
        if batch is None:
            return chance.expected_cost(moments, self.loss)
        return chance.cost_on(chance.prediction(moments), batch.targets, batch.mask, self.loss)

    def reference_levels(self, batch: Batch) -> list[tuple[str, float]]:
        """``(name, cost)`` of reference predictors scored on ``batch``, for reference rows; none here."""
        return []

    # --- description ---------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def seed_params(self) -> dict[str, Any]:
        """The parameters that derive the evaluation sets' seeds: ``params()`` less any field still
        at the value every record made before it existed used (``implicit_before_field``), so
        adding a field to a task leaves its existing evaluation sets exactly as they were."""
        implicit = self.implicit_before_field
        return {k: v for k, v in self.params().items() if not (k in implicit and implicit[k] == v)}

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params().items())
        lo, hi = self.train_range
        gen = ",".join(map(str, self.generalisation_lengths))
        return (
            f"{self.name:<20} d_in={self.d_in:<3} d_out={self.d_out:<3} loss={self.loss:<4} "
            f"length {lo}-{hi} (generalise {gen})  [{params}]"
        )


@lru_cache(maxsize=64)
def _eval_batch_cached(
    task: Task, length: int | None, size: int, seed: int, overrides: tuple[tuple[str, Any], ...]
) -> Batch:
    parts: tuple[Any, ...] = ("eval", length, size, seed)
    if overrides:
        parts += (list(overrides),)
    g = torch.Generator().manual_seed(task.stable_seed(*parts))
    return task.sample(size, g, length=length, **dict(overrides))


@lru_cache(maxsize=64)
def _moments_cached(task: Task, length: int | None, overrides: tuple[tuple[str, Any], ...]) -> TargetMoments:
    lo, hi = task.train_range
    lengths = range(lo, hi + 1) if length is None else [length]
    parts = [task._moments_at(n, **dict(overrides)) for n in lengths]
    if all(p is not None for p in parts):
        return chance.mixture(parts)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(task.stable_seed("chance", length, list(overrides)))
    batch = task.sample(2048, g, length=length, **dict(overrides))
    return chance.empirical(batch.targets, batch.mask)


_REQUIRED = ("d_in", "d_out", "train_range", "max_steps", "_generate")


def _check_task_class(cls: type) -> None:
    """The task contract, checked once at registration so a plugin task that breaks it is named
    when it is loaded, not by a ``NotImplementedError`` deep inside sampling."""
    missing = [m for m in _REQUIRED if getattr(cls, m) is getattr(Task, m)]
    if missing:
        raise RegistryError(
            f"task class {cls.__qualname__} must implement {', '.join(missing)} (see memtasks.tasks.base)"
        )
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise RegistryError(f"task class {cls.__qualname__} must be a @dataclass(frozen=True)")
    no_default = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if no_default:
        raise RegistryError(
            f"task class {cls.__qualname__}: field(s) {', '.join(no_default)} have no default; "
            "give every task parameter a default"
        )


TASKS: Registry[Task] = Registry("task", Task, "memtasks.tasks", check=_check_task_class)
register_task = TASKS.register


def get_task(name: str, **overrides: Any) -> Task:
    """Build the registered task ``name`` with parameter ``overrides``.

    Unknown names suggest the nearest; unknown override keys raise ``TypeError`` naming them.
    """
    cls = TASKS.get(name)
    check_keys(cls, overrides, f"{name} task parameter")
    try:
        return cls(**overrides)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a plugin task's own validation: still the user's input
        raise ConfigError(f"task {name!r}: {exc}") from None


def list_tasks() -> list[str]:
    return TASKS.names()

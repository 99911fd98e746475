"""The model contract, the model registry and parameter-budget sizing.

Every model maps inputs ``x`` of shape ``(B, T, d_in)`` to outputs ``y`` of shape
``(B, T, d_out)`` (logits for ``bce`` tasks, raw values for ``mse`` tasks) while threading
an explicit recurrent state.

REQUIRED
    * subclass :class:`MemoryModel` and register with ``@register_model("name", config=Cfg)``
      where ``Cfg`` is a frozen dataclass of hyper-parameters, each with a default;
    * ``__init__(self, d_in, d_out, config)``; call ``super().__init__(d_in, d_out, config)``;
    * ``initial_state(batch_size, device) -> state``: a tensor or a NamedTuple of tensors,
      batch first. Everything that changes over time (hidden units, an NTM's or DNC's
      memory matrix, read weightings, usage, links) lives here, never on ``self``;
    * ``forward(x, state=None) -> (y, state)``: ``state=None`` means ``initial_state``.
      Always returns the pair; running ``x[:, :k]`` then ``x[:, k:]`` with the returned
      state equals running ``x`` at once. ``forward`` never modifies attributes, parameters
      or buffers.

OPTIONAL
    * ``size_knob``: the config field a parameter budget resizes (default ``hidden_size``;
      None: the family cannot be resized);
    * ``task_hints``: config fields the trainer fills from the task when the user left them
      at their default (``"t_max"``: the number of steps of the longest training sequence);
    * ``after_optimizer_step()``: called by the trainer after each optimiser step (IndRNN
      clips its recurrent weights there);
    * ``ran_with(device) -> dict``: what actually runs where it can differ from the config (a
      fast path that is unavailable), recorded by the trainer;
    * ``closed_form = True`` with ``fit(train, val, loss) -> dict``: the model is trained in
      closed form (the echo state network's ridge readout) instead of by gradient steps;
    * ``count_params(d_in, d_out, config)``: a cheap trainable-parameter count, used by the
      budget search (the default builds the model on the meta device);
    * ``optimizer_defaults``: the optimiser settings (``optimizer``, ``lr``, ``momentum``,
      ``clip_value``) this family trains with where a run sets none, e.g. its paper's; what it
      leaves out is the generic Adam 1e-3 without clipping (``memtasks.train.config``);
    * ``relative_cost``: rough training cost per step relative to an LSTM of the same size;
      the matrix starts expensive cells first so no core idles at the end.
    * ``trace(x, state=None) -> (y, state, arrays)``: ``forward``'s ``y`` and state, unchanged,
      and ``arrays``, a dict of named tensors ``(B, T, ...)`` saying what the memory did at every
      step (an NTM's read and write weightings, a DNC's usage, an LSTM's cell state), in the order
      ``memtasks inspect`` draws them, one panel per name (per index of a third axis: heads,
      layers). The default returns no arrays, so a model without its own ``trace`` is drawn as
      inputs, targets and outputs only.

Every model reports ``param_counts() -> (trainable, total)`` and ``state_size()``, the number
of floats of recurrent state per sequence.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from memtasks.core.config import ConfigError, check_float, check_int, from_dict
from memtasks.core.limits import GIB, memory_limit_bytes
from memtasks.core.registry import Registry, RegistryError

State = Any  # a tensor or a NamedTuple of tensors, batch first
BUDGET_TOLERANCE = 0.05  # a parameter budget is met when the count is within 5% of it
BYTES_PER_TRAINED_PARAM = 16  # float32 weight, gradient and two Adam moments


class MemoryModel(nn.Module):
    """Base class of every model; see the module docstring for the contract."""

    config_cls: ClassVar[type]
    registry_name: ClassVar[str]
    size_knob: ClassVar[str | None] = "hidden_size"
    task_hints: ClassVar[tuple[str, ...]] = ()
    closed_form: ClassVar[bool] = False
    relative_cost: ClassVar[float] = 1.0
    optimizer_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, d_in: int, d_out: int, config: Any) -> None:
        super().__init__()
        check_int(type(self).__name__, "d_in", d_in, 1)
        check_int(type(self).__name__, "d_out", d_out, 1)
        self.d_in = d_in
        self.d_out = d_out
        self.config = config
        self.budget_info: dict[str, Any] | None = None

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:  # (B,T,d_in)
        raise NotImplementedError

    def after_optimizer_step(self) -> None:
        """OPTIONAL hook run after each optimiser step."""

    def ran_with(self, device: torch.device) -> dict[str, Any]:
        """OPTIONAL: how this model actually runs on ``device`` where that can differ from its
        config (e.g. ``{"cpu_kernel": False}`` when the C kernels could not be built); the
        trainer records it in config.json as ``ran_with``."""
        return {}

    def trace(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """OPTIONAL: ``forward(x, state)`` and named arrays ``(B, T, ...)`` of what the memory did
        (see the module docstring); this default has none."""
        y, state = self(x, state)
        return y, state, {}

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts; buffers such as a frozen reservoir count as total."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters()) + sum(b.numel() for b in self.buffers())
        return trainable, total

    def state_size(self) -> int:
        """Floats of recurrent state per sequence."""
        state = self.initial_state(1, torch.device("meta"))  # counted, not allocated
        return sum(t.numel() for t in _tensors(state))

    @classmethod
    def count_params(cls, d_in: int, d_out: int, config: Any) -> int:
        with torch.device("meta"):
            model = cls(d_in, d_out, config)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    @classmethod
    def memory_floats(cls, d_in: int, d_out: int, config: Any) -> tuple[int, int]:
        """OPTIONAL: ``(trainable parameters, other floats)`` of a model and one sequence's state,
        without allocating it (the default builds it on the meta device; a family that cannot be
        built there says so with its own count). ``(0, 0)`` when it cannot be told."""
        try:
            with torch.device("meta"):
                model = cls(d_in, d_out, config)
                state = model.initial_state(1, torch.device("meta"))
        except Exception:  # a plugin that cannot be built on the meta device is not checked here
            return 0, 0
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        other = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        other += sum(b.numel() for b in model.buffers()) + sum(t.numel() for t in _tensors(state))
        return trainable, other

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"model {self.registry_name!r} expects inputs (B, T, {self.d_in}), got {tuple(x.shape)}"
            )


def check_state_shapes(model: str, parts: Iterable[tuple[str, torch.Tensor, tuple[int, ...]]]) -> None:
    """Raise a ValueError naming the first ``(name, tensor, shape)`` whose tensor is not of that shape.

    For models whose fast paths trust the state's shapes (a C kernel reads raw buffers; ``copy_``
    into a preallocated buffer would broadcast a wrong shape silently)."""
    for name, tensor, shape in parts:
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"model {model!r}: state.{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")


def autograd_records(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether autograd records a call on ``tensors`` (None entries skipped), so that a backward can
    follow. For a model's hand-written autograd function, which keeps records for its backward only
    then: inside the function's ``forward``, ``ctx.needs_input_grad`` is true for the weights under
    ``torch.no_grad()`` as well, so the model has to ask before the call (the NTM's and DNC's kernels)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def check_forget_bias(model: str, value: Any) -> None:
    """A controller's ``forget_bias``: a finite number, or ``"uniform"`` (the uniform initialisation
    of the other biases, PyTorch's default and what records from before the field used)."""
    if value != "uniform":
        check_float(model, "forget_bias", value)


# What a record written before a config field existed trained with, per field: the recorded run
# is compared with a new one as if it had set this value.
IMPLICIT_BEFORE_FIELD: dict[str, Any] = {"forget_bias": "uniform"}
# Config fields that choose how a model computes, not what: the same numbers to rounding either
# way (the NTM's and DNC's C kernels), so a run's identity leaves them out.
EXECUTION_FIELDS: tuple[str, ...] = ("cpu_kernel",)


def stacked_zeros(config: Any, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The zero state ``(B, num_layers, hidden_size)`` of a stack of recurrent cells, for any
    family whose config has those two fields (rnn, lstm's h and c, gru, gru1-3, indrnn)."""
    return torch.zeros(batch_size, config.num_layers, config.hidden_size, device=device)


def trace_stacked_layers(model: Any, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``trace`` for a stack of layers ``model.layers`` (each ``layer(seq (T, B, m), h (B, n)) ->
    (outputs (T, B, n), h_T)``, state ``(B, num_layers, n)``): ``forward``'s ``y`` and final state,
    and ``hidden``, h_t of every layer after every step ``(B, T, num_layers, n)``, from running the
    layers again with the same operations."""
    y, final = model(x, state)
    if state is None:
        state = model.initial_state(x.shape[0], x.device).to(x.dtype)
    seq, outs = x.transpose(0, 1), []  # (T, B, d_in)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            seq, _ = layer(seq, state[:, i])
            outs.append(seq)  # (T, B, n)
    return y, final, {"hidden": torch.stack(outs, dim=2).transpose(0, 1)}


def _tensors(state: State) -> Iterable[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        yield state
    elif isinstance(state, (tuple, list)):
        for s in state:
            yield from _tensors(s)
    elif state is not None:
        raise TypeError(f"state must be a tensor or a (Named)tuple of tensors, got {type(state).__name__}")


def _check_model_class(cls: type) -> None:
    for method in ("forward", "initial_state"):
        if getattr(cls, method) is getattr(MemoryModel, method):
            raise RegistryError(f"model class {cls.__qualname__} must implement {method}() (see models.base)")
    cfg = getattr(cls, "config_cls", None)
    if cfg is None or not dataclasses.is_dataclass(cfg) or not cfg.__dataclass_params__.frozen:
        raise RegistryError(f"model class {cls.__qualname__} needs a frozen dataclass config, got {cfg!r}")
    knob = cls.size_knob
    if knob is not None and knob not in {f.name for f in dataclasses.fields(cfg)}:
        raise RegistryError(f"model class {cls.__qualname__}: size_knob {knob!r} is not a field of {cfg.__name__}")
    if cls.closed_form and not callable(getattr(cls, "fit", None)):
        raise RegistryError(f"model class {cls.__qualname__} is closed_form but has no fit()")


MODELS: Registry[MemoryModel] = Registry("model", MemoryModel, "memtasks.models", check=_check_model_class)


def register_model(name: str, config: type) -> Any:
    """Class decorator: register a :class:`MemoryModel` subclass under ``name`` with its config class."""

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, MemoryModel)):
            raise RegistryError(f"cannot register {cls!r} as model {name!r}: it must subclass models.MemoryModel")
        cls.config_cls = config  # type: ignore[attr-defined]
        return MODELS.register(name)(cls)

    return decorator


def list_models() -> list[str]:
    return MODELS.names()


def model_config(name: str, **hparams: Any) -> Any:
    """The config of model ``name`` with ``hparams``; unknown keys raise ``TypeError`` naming them."""
    cls = MODELS.get(name)
    return from_dict(cls.config_cls, hparams, f"{name} hyper-parameter")


def build_model(name: str, d_in: int, d_out: int, param_budget: int | None = None, **hparams: Any) -> MemoryModel:
    """Build model ``name`` for ``d_in`` inputs and ``d_out`` outputs.

    With ``param_budget``, the family's ``size_knob`` is chosen so the trainable parameter
    count lands as close to the budget as the family allows (within 5% where possible); the
    choice is recorded in ``model.budget_info``.
    """
    cls = MODELS.get(name)
    config = model_config(name, **hparams)
    info = None
    if param_budget is not None:
        check_int(name, "param_budget", param_budget, 1)
        knob = cls.size_knob
        if knob is None:
            raise ConfigError(f"model {name!r} has no size knob, so it cannot be sized to a parameter budget")
        if knob in hparams:
            raise ConfigError(f"give either param_budget or {knob} for model {name!r}, not both")
        value, count, neighbours = _fit_budget(cls, d_in, d_out, config, knob, param_budget)
        if abs(count - param_budget) > BUDGET_TOLERANCE * param_budget:
            options = " or ".join(f"{c:,} ({knob}={v})" for v, c in neighbours)
            raise ConfigError(
                f"param_budget={param_budget:,} cannot be met within {BUDGET_TOLERANCE:.0%} by model {name!r}; "
                f"the nearest achievable counts are {options}"
            )
        if count * BYTES_PER_TRAINED_PARAM > memory_limit_bytes():
            raise ConfigError(
                f"param_budget={param_budget:,}: {count:,} trainable parameters of model {name!r} need about "
                f"{count * BYTES_PER_TRAINED_PARAM / GIB:,.1f} GiB to train (weights, gradients, optimiser state), "
                f"over the limit of {memory_limit_bytes() / GIB:,.1f} GiB (half of this machine's memory)"
            )
        config = dataclasses.replace(config, **{knob: value})
        info = {
            "param_budget": param_budget,
            "knob": knob,
            "value": value,
            "trainable_params": count,
            "relative_error": (count - param_budget) / param_budget,
        }
    _check_fits(cls, name, d_in, d_out, config)
    model = cls(d_in, d_out, config)
    model.budget_info = info
    return model


def _check_fits(cls: Any, name: str, d_in: int, d_out: int, config: Any) -> None:
    """Refuse, before anything is allocated, a model whose weights, gradients, optimiser state,
    buffers and the state of one sequence need more than the memory limit."""
    trainable, other = cls.memory_floats(d_in, d_out, config)
    need = trainable * BYTES_PER_TRAINED_PARAM + 4 * other
    if need > memory_limit_bytes():
        knob = cls.size_knob
        sizes = ", ".join(f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                          if f.name == knob or f.name.endswith(("_size", "_slots", "_width", "_heads", "layers")))
        raise ConfigError(
            f"model {name!r} ({sizes}) needs about {need / GIB:,.1f} GiB ({trainable:,} trainable parameters, "
            f"{other:,} other floats), over the limit of {memory_limit_bytes() / GIB:,.1f} GiB "
            "(half of this machine's memory); choose a smaller model"
        )


def _fit_budget(
    cls: Any, d_in: int, d_out: int, config: Any, knob: str, budget: int
) -> tuple[int, int, list[tuple[int, int]]]:
    """The knob value whose count is nearest ``budget``, its count, and the (value, count) pairs
    on either side of the budget."""
    def count(v: int) -> int:
        return cls.count_params(d_in, d_out, dataclasses.replace(config, **{knob: v}))

    lo, hi = 1, 1
    while count(hi) < budget and hi < 1 << 20:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # smallest value whose count reaches the budget lies in (lo, hi]
        mid = (lo + hi) // 2
        if count(mid) >= budget:
            hi = mid
        else:
            lo = mid
    best = min((lo, hi), key=lambda v: (abs(count(v) - budget), v))
    return best, count(best), [(v, count(v)) for v in sorted({lo, hi})]

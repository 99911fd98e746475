"""The Differentiable Neural Computer (Graves et al. 2016, Nature), registered as ``dnc``.

An LSTM controller reads the input and the previous read vectors, emits an interface
vector ξ_t that drives one write head and R read heads over an N×W memory, and the output
combines the controller state with the new read vectors:

    gates_t = W_x x_t + W_rh [r_{t−1}; h_{t−1}] + b      (i, f, o, g order)
    c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g)               h_t = σ(o) ⊙ tanh(c_t)
    ξ_t = W_ξ h_t + b_ξ                                  (cut up in ``interface.py``)
    memory step t (``memory.py``): u_t, a_t, c^w_t, w^w_t, M_t, L_t, p_t, f_t, b_t, c^r_t, w^r_t, r_t
    y_t = W_y [h_t; r_t] + b_y

Two implementations of the same equations, chosen per call:

* float32 on CPU (the benchmark's setting), when the C kernels of ``cpu_kernel.py`` can be
  built: :class:`models.dnc.sequence.KernelSequence`, the whole recurrence as one autograd
  function with backpropagation through time written out (about 4.5x the sequences per second
  of the autograd version at batch 32, N = 128, T = 41, one thread);
* otherwise (GPU, float64, ``cpu_kernel=False``, no compiler): PyTorch operators per step
  (``step.py``, ``memory.py``), differentiated by autograd.

Both compute W_x x_t + b for all steps in one matmul before the loop and the readout in one
matmul after it. ``tests/test_dnc.py`` checks that they agree (outputs and gradients) with each
other and with a step loop written from the equations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from memtasks.core.config import check_int
from memtasks.models.base import MemoryModel, autograd_records, check_forget_bias, check_state_shapes, register_model
from memtasks.models.dnc.cpu_kernel import kernel_for
from memtasks.models.dnc.interface import interface_size
from memtasks.models.dnc.sequence import KernelSequence
from memtasks.models.dnc.step import memory_step_torch


@dataclass(frozen=True)
class DNCConfig:
    hidden_size: int = 100  # units of the LSTM controller
    memory_slots: int = 128  # N, the number of memory rows
    memory_width: int = 20  # W, the width of a memory row
    read_heads: int = 1  # R
    write_heads: int = 1  # must be 1: the paper's DNC has exactly one write head
    cpu_kernel: bool = True  # float32 on CPU: use the C kernels when they build (same numbers to rounding)
    forget_bias: float | str = 1.0  # forget-gate bias at initialisation (Gers et al. 2000; Jozefowicz et al. 2015); "uniform": like the other biases

    def __post_init__(self) -> None:
        check_int("dnc", "hidden_size", self.hidden_size, 1)
        check_forget_bias("dnc", self.forget_bias)
        check_int("dnc", "memory_slots", self.memory_slots, 1, 65_536)
        check_int("dnc", "memory_width", self.memory_width, 1)
        check_int("dnc", "read_heads", self.read_heads, 1, 64)
        check_int("dnc", "write_heads", self.write_heads)
        if self.write_heads != 1:
            raise ValueError(
                f"dnc.write_heads={self.write_heads!r} is not supported: the DNC of Graves et al. (2016) has "
                "exactly one write head (its usage, precedence and temporal link matrix are defined for a single "
                "write weighting); use write_heads=1"
            )
        if not isinstance(self.cpu_kernel, bool):
            raise ValueError(f"dnc.cpu_kernel must be true or false, got {self.cpu_kernel!r}")


class DNCState(NamedTuple):
    """Everything that changes over time, batch first."""

    h: torch.Tensor  # (B, H) controller hidden state
    c: torch.Tensor  # (B, H) controller cell
    memory: torch.Tensor  # (B, N, W) M_t
    usage: torch.Tensor  # (B, N) u_t
    link: torch.Tensor  # (B, N, N) L_t, zero diagonal
    precedence: torch.Tensor  # (B, N) p_t
    write_weighting: torch.Tensor  # (B, N) w^w_t
    read_weightings: torch.Tensor  # (B, R, N) w^r_t
    read_vectors: torch.Tensor  # (B, R, W) r_t


@register_model("dnc", config=DNCConfig)
class DNC(MemoryModel):
    """Differentiable Neural Computer with an LSTM controller, one write head and R read heads."""

    # Graves et al. 2016, Methods: RMSProp, momentum 0.9, lr 1e-4. At batch 32, lr 1e-3 solved copy
    # in 8k sequences (two seeds) against 40-52k at 1e-4 and 18k with Adam 3e-3.
    optimizer_defaults = {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.9, "clip_value": 10.0}
    relative_cost = 3.5  # per step, against an LSTM of the same size, for scheduling only (bench models, lengths 1-20: 0.20-0.34x lstm)

    def __init__(self, d_in: int, d_out: int, config: DNCConfig) -> None:
        super().__init__(d_in, d_out, config)
        H, W, R = config.hidden_size, config.memory_width, config.read_heads
        self.input_proj = nn.Linear(d_in, 4 * H)  # W_x and the gate bias b
        self.recurrent_weight = nn.Parameter(torch.empty(4 * H, R * W + H))  # W_rh on [r_{t-1}; h_{t-1}]
        self.interface = nn.Linear(H, interface_size(W, R))
        self.readout = nn.Linear(H + R * W, d_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.config.hidden_size)  # nn.LSTM's initialisation
        for weight in (self.input_proj.weight, self.input_proj.bias, self.recurrent_weight):
            nn.init.uniform_(weight, -bound, bound)
        if self.config.forget_bias != "uniform":
            H = self.config.hidden_size
            with torch.no_grad():
                self.input_proj.bias[H : 2 * H] = self.config.forget_bias  # gate order (i, f, o, g)

    @classmethod
    def count_params(cls, d_in: int, d_out: int, config: DNCConfig) -> int:
        H, W, R = config.hidden_size, config.memory_width, config.read_heads
        controller = 4 * H * (d_in + 1) + 4 * H * (R * W + H)
        return controller + (H + 1) * interface_size(W, R) + (H + R * W + 1) * d_out

    def ran_with(self, device: torch.device) -> dict[str, Any]:
        """Whether the C kernels run for float32 inputs on ``device`` (they may be unavailable:
        no compiler, a GPU, several write heads)."""
        probe = torch.empty(1, 1, self.d_in, device=device)
        return {"cpu_kernel": bool(self.config.cpu_kernel) and kernel_for(probe, self.config.cpu_kernel) is not None}

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> DNCState:
        return self._zero_state(batch_size, device, link=True)

    def _zero_state(self, batch_size: int, device: torch.device | str | None, link: bool) -> DNCState:
        """The all-zero state; ``link=False`` leaves out the (B, N, N) link matrix (None): the C kernels
        start from zeros without reading 2 MB of them (batch 32, N = 128)."""
        cfg = self.config
        B, H, N, W, R = batch_size, cfg.hidden_size, cfg.memory_slots, cfg.memory_width, cfg.read_heads
        dtype = self.recurrent_weight.dtype
        z = lambda *shape: torch.zeros(*shape, device=device, dtype=dtype)  # noqa: E731
        L = z(B, N, N) if link else None
        return DNCState(z(B, H), z(B, H), z(B, N, W), z(B, N), L, z(B, N), z(B, N), z(B, R, N), z(B, R, W))

    def forward(self, x: torch.Tensor, state: DNCState | None = None) -> tuple[torch.Tensor, DNCState]:
        """x ``(B, T, d_in)`` -> y ``(B, T, d_out)`` and the state after the last step."""
        self.check_input(x)
        B, T, _ = x.shape
        lib = kernel_for(x, self.config.cpu_kernel) if T else None
        if lib is not None:
            if state is None:  # the zero state, but the kernels start L_0 from zeros without a (B, N, N) tensor
                state = self._zero_state(B, x.device, link=False)
                link0 = None
            else:
                state = self._check_state(state, B)
                link0 = state.link
            inputs = (
                x, self.input_proj.weight, self.input_proj.bias, self.recurrent_weight, self.interface.weight,
                self.interface.bias, self.readout.weight, self.readout.bias, *state[:4], link0, *state[5:],
            )  # fmt: skip
            # a backward can follow only where autograd records: else the kernels keep one step, not every step
            y, *final = KernelSequence.apply(lib, autograd_records(inputs), *inputs)  # (B, T, d_out), final state
            return y, DNCState(*final)
        state = self._check_state(self.initial_state(B, x.device) if state is None else state, B)
        if T == 0:
            return x.new_zeros(B, 0, self.d_out), state
        return self._forward_torch(self.input_proj(x), state)  # W_x x_t + b for every step in one matmul

    def _check_state(self, state: DNCState, batch_size: int) -> DNCState:
        """The state as a DNCState, every tensor of the shape ``initial_state`` gives (the C kernels trust them)."""
        state = DNCState(*state)
        cfg = self.config
        H, N, W, R = cfg.hidden_size, cfg.memory_slots, cfg.memory_width, cfg.read_heads
        shapes = ((H,), (H,), (N, W), (N,), (N, N), (N,), (N,), (R, N), (R, W))
        check_state_shapes("dnc", ((n, t, (batch_size, *s)) for n, t, s in zip(DNCState._fields, state, shapes)))
        return state

    def _forward_torch(self, x_proj: torch.Tensor, state: DNCState) -> tuple[torch.Tensor, DNCState]:
        """The same recurrence from PyTorch operators, differentiated by autograd (GPU, float64, no C compiler)."""
        H = self.config.hidden_size
        h, c, memory, usage, link, precedence, w_write, w_read, reads = state
        hs: list[torch.Tensor] = []
        rs: list[torch.Tensor] = []
        recurrent_t = self.recurrent_weight.t()
        for x_t in x_proj.unbind(1):
            gates = torch.addmm(x_t, torch.cat([reads.flatten(1), h], dim=1), recurrent_t)  # (B, 4H)
            sig = torch.sigmoid(gates[:, : 3 * H])
            i, f, o = sig.chunk(3, dim=1)
            c = torch.addcmul(f * c, i, torch.tanh(gates[:, 3 * H :]))
            h = o * torch.tanh(c)
            memory, usage, link, precedence, w_write, w_read, reads = memory_step_torch(
                self.interface(h), memory, usage, link, precedence, w_write, w_read
            )
            hs.append(h)
            rs.append(reads.flatten(1))
        y = self.readout(torch.cat([torch.stack(hs, 1), torch.stack(rs, 1)], dim=-1))  # (B, T, d_out)
        return y, DNCState(h, c, memory, usage, link, precedence, w_write, w_read, reads)

    def trace(self, x: torch.Tensor, state: DNCState | None = None) -> tuple[torch.Tensor, DNCState, dict[str, torch.Tensor]]:
        """``forward``, and what the memory did at every step (OPTIONAL in the contract; drawn by
        ``memtasks inspect``). Every array is ``(B, T, ...)``:

        * ``write_weighting`` ``(B, T, N)``: w^w_t = g^w_t [g^a_t a_t + (1 − g^a_t) c^w_t], non-negative, sum ≤ 1;
        * ``read_weightings`` ``(B, T, R, N)``: w^r_t, non-negative, sum ≤ 1;
        * ``usage`` ``(B, T, N)``: u_t in [0, 1];
        * ``allocation`` ``(B, T, N)``: the allocation weighting a_t, non-negative, sum ≤ 1;
        * ``read_modes`` ``(B, T, R, 3)``: π_t, each head's mix of (backward, content, forward), a distribution.

        ``y`` and the final state are ``forward``'s own, on whichever path it takes. The C kernels
        keep none of these, so the arrays always come from the PyTorch operators of ``memory.py``
        (:meth:`trace_torch`): the same equations, equal to the kernels' to float32 rounding.
        """
        y, final = self(x, state)
        with torch.no_grad():
            _, _, arrays = self.trace_torch(x, state)
        return y, final, arrays

    def trace_torch(
        self, x: torch.Tensor, state: DNCState | None = None
    ) -> tuple[torch.Tensor, DNCState, dict[str, torch.Tensor]]:
        """``(y, state, arrays)`` from the PyTorch operators, step by step as ``step.py`` composes
        them, keeping the intermediates of :meth:`trace`; ``y`` and the state are ``forward``'s
        wherever ``forward`` runs those operators (``cpu_kernel=False``, a GPU, float64)."""
        self.check_input(x)
        B, T, _ = x.shape
        state = self._check_state(self.initial_state(B, x.device) if state is None else state, B)
        cfg = self.config
        H, N, R = cfg.hidden_size, cfg.memory_slots, cfg.read_heads
        h, c, memory, usage, link, precedence, w_write, w_read, reads = state
        names = ("write_weighting", "read_weightings", "usage", "allocation", "read_modes")
        kept: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        hs: list[torch.Tensor] = []
        rs: list[torch.Tensor] = []
        recurrent_t = self.recurrent_weight.t()
        for x_t in self.input_proj(x).unbind(1):
            gates = torch.addmm(x_t, torch.cat([reads.flatten(1), h], dim=1), recurrent_t)  # (B, 4H)
            i, f, o = torch.sigmoid(gates[:, : 3 * H]).chunk(3, dim=1)
            c = torch.addcmul(f * c, i, torch.tanh(gates[:, 3 * H :]))
            h = o * torch.tanh(c)
            extra: dict[str, torch.Tensor] = {}
            memory, usage, link, precedence, w_write, w_read, reads = memory_step_torch(
                self.interface(h), memory, usage, link, precedence, w_write, w_read, keep=extra
            )
            for name, value in zip(names, (w_write, w_read, usage, extra["allocation"], extra["read_modes"])):
                kept[name].append(value)
            hs.append(h)
            rs.append(reads.flatten(1))
        final = DNCState(h, c, memory, usage, link, precedence, w_write, w_read, reads)
        if T == 0:
            shapes = {"write_weighting": (N,), "read_weightings": (R, N), "usage": (N,), "allocation": (N,), "read_modes": (R, 3)}
            return x.new_zeros(B, 0, self.d_out), final, {name: x.new_zeros(B, 0, *shapes[name]) for name in names}
        y = self.readout(torch.cat([torch.stack(hs, 1), torch.stack(rs, 1)], dim=-1))  # (B, T, d_out)
        return y, final, {name: torch.stack(values, dim=1) for name, values in kept.items()}

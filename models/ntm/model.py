"""The registered ``ntm`` model: parameters, state and the contract (Graves et al. 2014).

The equations live in ``memory.py`` (addressing, read, write), ``controller.py`` (the cell)
and ``sequence.py`` (one step, and the order of operations within it); their backward
passes in ``vjp.py`` and ``bptt.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from memtasks.core.config import check_choice, check_float, check_int
from memtasks.models.base import MemoryModel, autograd_records, check_forget_bias, check_state_shapes, register_model
from memtasks.models.ntm import cpu_kernel
from memtasks.models.ntm.bptt import NTMLoop
from memtasks.models.ntm.kernel_sequence import kernel_forward
from memtasks.models.ntm.sequence import Dims, input_projection, run_forward


@dataclass(frozen=True)
class NTMConfig:
    hidden_size: int = 100  # controller units
    controller: str = "lstm"  # "lstm" or "feedforward" (one tanh layer)
    memory_slots: int = 128  # N
    memory_width: int = 20  # M
    read_heads: int = 1  # R
    write_heads: int = 1  # W
    shift_range: int = 1  # shifts over -shift_range..shift_range
    memory_init: str = "constant"  # "constant" (Collier & Beel 2018: fastest), "learned" or "random"
    memory_init_value: float = 1e-6  # the constant of memory_init="constant"
    add_activation: str = "tanh"  # of the add vector a_t: "tanh" (bounded) or "linear" (unbounded)
    cpu_kernel: bool = True  # float32 on CPU, one write head: the heads in C when they build (same numbers to rounding)
    forget_bias: float | str = 1.0  # forget-gate bias at initialisation (Gers et al. 2000; Jozefowicz et al. 2015); "uniform": like the other biases

    def __post_init__(self) -> None:
        check_int("ntm", "hidden_size", self.hidden_size, 1)
        check_forget_bias("ntm", self.forget_bias)
        check_choice("ntm", "controller", self.controller, ("lstm", "feedforward"))
        check_int("ntm", "memory_slots", self.memory_slots, 1)
        check_int("ntm", "memory_width", self.memory_width, 1)
        check_int("ntm", "read_heads", self.read_heads, 1, 64)
        check_int("ntm", "write_heads", self.write_heads, 1, 64)
        # distinct offsets modulo N, else two shifts would land on the same slot
        check_int("ntm", "shift_range", self.shift_range, 0, (self.memory_slots - 1) // 2)
        check_choice("ntm", "memory_init", self.memory_init, ("constant", "learned", "random"))
        check_float("ntm", "memory_init_value", self.memory_init_value, 0.0, 1.0)
        check_choice("ntm", "add_activation", self.add_activation, ("tanh", "linear"))
        if not isinstance(self.cpu_kernel, bool):
            raise ValueError(f"ntm.cpu_kernel must be true or false, got {self.cpu_kernel!r}")


class ControllerState(NamedTuple):
    h: torch.Tensor  # (B, hidden_size); (B, 0) for the feedforward controller
    c: torch.Tensor  # (B, hidden_size); (B, 0) for the feedforward controller


class NTMState(NamedTuple):
    controller: ControllerState
    memory: torch.Tensor  # (B, N, M), a transposed view of the loop's (B, M, N) buffer
    read_weights: torch.Tensor  # (B, R, N)
    write_weights: torch.Tensor  # (B, W, N)
    reads: torch.Tensor  # (B, R, M), the read vectors r_t fed to the controller at t + 1


@register_model("ntm", config=NTMConfig)
class NTM(MemoryModel):
    """Neural Turing Machine: a controller reading and writing an ``N × M`` memory through
    content- and location-addressed heads (Graves et al. 2014, §3).

    Per step: ``[x_t; r_{t-1}]`` drives the controller; one linear layer maps ``h_t`` to every
    head's key ``k``, strength ``β``, gate ``g``, shift ``s``, sharpening ``γ`` (and a write
    head's erase ``e`` and add ``a``); all heads address ``M_{t-1}``; the read heads read it,
    then the write heads erase and add; the output is ``y_t = W_y [h_t; r_t] + b_y`` (logits).

    Initial state: controller zeros; memory ``memory_init`` ("constant": every cell
    ``memory_init_value``; "random": a fixed draw from a normal of std 0.5 clipped to ±1,
    made at construction; "learned": a parameter initialised like "random"); every head's
    weighting focused on slot 0 (one-hot); read vectors ``r_0`` a learned bias, initially 0.

    State (:class:`NTMState`): controller ``(h, c)`` ``(B, hidden_size)`` each (``(B, 0)`` for
    the feedforward controller), ``memory`` ``(B, N, M)``, ``read_weights`` ``(B, R, N)``,
    ``write_weights`` ``(B, W, N)``, ``reads`` ``(B, R, M)``.

    Training runs a hand-written backward pass through time (``bptt.py``), about twice as
    fast on CPU as autograd through the same vectorised operations; in float32 on a CPU with a
    C compiler, the heads of each step run as one C call each way (``cpu_kernel.py``,
    ``kernel_sequence.py``), the same equations to float32 rounding.
    """

    # Graves et al. 2014: RMSProp, momentum 0.9, lr 1e-4, gradients clipped to [-10, 10], batch 1.
    # At batch 32, Adam 3e-3 with the same clipping solved copy (lengths 1-20) in 16k sequences
    # where RMSProp 1e-3 took 26k and RMSProp 3e-4 (batch 16) had not at 40k (docs/performance.md,
    # "Time to solve"); the `paper` preset keeps the paper's settings.
    optimizer_defaults = {"optimizer": "adam", "lr": 3e-3, "momentum": 0.0, "clip_value": 10.0}
    relative_cost = 3.5  # per step, against an LSTM of the same size (bench models, lengths 1-20: 0.26-0.36x lstm)

    config: NTMConfig

    def __init__(self, d_in: int, d_out: int, config: NTMConfig) -> None:
        super().__init__(d_in, d_out, config)
        cfg = config
        hid, m, n = cfg.hidden_size, cfg.memory_width, cfg.memory_slots
        self.dims = Dims(
            hidden=hid,
            read_heads=cfg.read_heads,
            write_heads=cfg.write_heads,
            width=m,
            shifts=2 * cfg.shift_range + 1,
            lstm=cfg.controller == "lstm",
            tanh_add=cfg.add_activation == "tanh",
        )
        gates = self.dims.gate_size
        reads = cfg.read_heads * m
        n_params = self.dims.head_params
        bound = 1.0 / math.sqrt(hid)  # nn.LSTM's initialisation
        self.w_x = nn.Parameter(torch.empty(gates, d_in).uniform_(-bound, bound))
        self.w_r = nn.Parameter(torch.empty(gates, reads).uniform_(-bound, bound))
        self.w_h = nn.Parameter(torch.empty(gates, hid).uniform_(-bound, bound)) if self.dims.lstm else None
        self.bias = nn.Parameter(torch.empty(gates).uniform_(-bound, bound))
        if self.dims.lstm and cfg.forget_bias != "uniform":
            with torch.no_grad():
                self.bias[hid : 2 * hid] = cfg.forget_bias  # gate order (i, f, o, g)
        self.w_p = nn.Parameter(torch.empty(n_params, hid).uniform_(-bound, bound))  # nn.Linear's bound
        self.b_p = nn.Parameter(torch.empty(n_params).uniform_(-bound, bound))
        out_bound = 1.0 / math.sqrt(hid + reads)
        self.w_y = nn.Parameter(torch.empty(d_out, hid + reads).uniform_(-out_bound, out_bound))
        self.b_y = nn.Parameter(torch.empty(d_out).uniform_(-out_bound, out_bound))
        self.read_init = nn.Parameter(torch.zeros(cfg.read_heads, m))
        self.memory_init: torch.Tensor | None
        if cfg.memory_init == "constant":
            self.memory_init = None
        else:
            init = torch.empty(n, m).normal_(0.0, 0.5).clamp_(-1.0, 1.0)
            if cfg.memory_init == "learned":
                self.memory_init = nn.Parameter(init)
            else:
                self.register_buffer("memory_init", init)

    @classmethod
    def count_params(cls, d_in: int, d_out: int, config: NTMConfig) -> int:
        hid, m = config.hidden_size, config.memory_width
        lstm = config.controller == "lstm"
        dims = Dims(hid, config.read_heads, config.write_heads, m, 2 * config.shift_range + 1, lstm, True)
        gates, reads, n_params = dims.gate_size, config.read_heads * m, dims.head_params
        count = gates * (d_in + reads + 1) + (gates * hid if lstm else 0)
        count += n_params * (hid + 1) + d_out * (hid + reads + 1) + reads
        if config.memory_init == "learned":
            count += config.memory_slots * m
        return count

    def ran_with(self, device: torch.device) -> dict[str, Any]:
        """Whether the C kernels run for float32 inputs on ``device`` (they may be unavailable:
        no compiler, a GPU, several write heads)."""
        probe = torch.empty(1, 1, self.d_in, device=device)
        return {"cpu_kernel": bool(self.config.cpu_kernel) and cpu_kernel.kernel_for(probe, self.config.write_heads) is not None}

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> NTMState:
        cfg = self.config
        ref = self.w_x
        device = ref.device if device is None else torch.device(device)
        opts = {"dtype": ref.dtype, "device": device}
        b, n, m = batch_size, cfg.memory_slots, cfg.memory_width
        width = cfg.hidden_size if self.dims.lstm else 0
        if self.memory_init is None:  # (B, N, M), laid out as the loop's (B, M, N)
            memory = torch.full((b, m, n), cfg.memory_init_value, **opts).transpose(1, 2)
        else:
            memory = self.memory_init.to(device).expand(b, n, m)
        weights = torch.zeros(b, self.dims.heads, n, **opts)
        weights[:, :, 0] = 1.0
        return NTMState(
            ControllerState(torch.zeros(b, width, **opts), torch.zeros(b, width, **opts)),
            memory,
            weights[:, : cfg.read_heads],
            weights[:, cfg.read_heads :],
            self.read_init.to(device).expand(b, cfg.read_heads, m),
        )

    def forward(self, x: torch.Tensor, state: NTMState | None = None) -> tuple[torch.Tensor, NTMState]:
        """``x``: ``(B, T, d_in)`` -> logits ``(B, T, d_out)`` and the state after step T."""
        self.check_input(x)
        b, steps = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(b, x.device)
        if steps == 0:
            return x.new_zeros(b, 0, self.d_out), state
        cfg = self.config
        width = cfg.hidden_size if self.dims.lstm else 0
        n, m, n_r, n_w = cfg.memory_slots, cfg.memory_width, cfg.read_heads, cfg.write_heads
        check_state_shapes("ntm", (
            ("controller.h", state.controller.h, (b, width)), ("controller.c", state.controller.c, (b, width)),
            ("memory", state.memory, (b, n, m)), ("read_weights", state.read_weights, (b, n_r, n)),
            ("write_weights", state.write_weights, (b, n_w, n)), ("reads", state.reads, (b, n_r, m)),
        ))  # fmt: skip
        n_h = self.config.hidden_size
        h0 = state.controller.h if self.dims.lstm else x.new_zeros(b, n_h)
        z0 = torch.cat((h0, state.reads.reshape(b, -1)), dim=1)  # z_0 = [h_0; r_0]
        w0 = torch.cat((state.read_weights, state.write_weights), dim=1)  # (B, A, N)
        if self.dims.lstm:
            w_z = torch.cat((self.w_h, self.w_r), dim=1)
        else:  # a feedforward controller ignores h_{t-1}
            w_z = torch.cat((self.w_r.new_zeros(self.w_r.shape[0], n_h), self.w_r), dim=1)
        mem0 = state.memory.transpose(1, 2).contiguous()  # the loop holds the memory as (B, M, N)
        args = (z0, state.controller.c, mem0, w0, w_z, self.w_p, self.b_p)
        inputs = (x, self.w_x, self.bias)
        lib = cpu_kernel.kernel_for(x, self.config.write_heads) if self.config.cpu_kernel else None
        if autograd_records(inputs + args):
            zs, h, c, r, memory, w = NTMLoop.apply(lib, self.dims, *inputs, *args)
        else:
            xp = input_projection(*inputs)[0]  # (T, B, G): W_x x_t + b, all steps
            if lib is not None:
                zs, h, c, r, memory, w = kernel_forward(lib, self.dims, xp, *args, keep=None)
            else:
                zs, h, c, r, memory, w = run_forward(self.dims, xp, *args, saved=None)
        y = F.linear(zs.transpose(0, 1), self.w_y, self.b_y)  # (B, T, d_out): W_y [h_t; r_t] + b_y
        n_r = self.config.read_heads
        return y, NTMState(ControllerState(h, c), memory.transpose(1, 2), w[:, :n_r], w[:, n_r:], r)

    def trace(self, x: torch.Tensor, state: NTMState | None = None) -> tuple[torch.Tensor, NTMState, dict[str, torch.Tensor]]:
        """``forward``, and what the heads did at every step (OPTIONAL in the contract; drawn by
        ``memtasks inspect``). Every array is ``(B, T, ...)``:

        * ``write_weights`` ``(B, T, W, N)``: w^W_t, each row a distribution over the N slots;
        * ``read_weights`` ``(B, T, R, N)``: w^R_t, each row a distribution over the N slots;
        * ``add`` ``(B, T, W, M)``: a_t; ``erase`` ``(B, T, W, M)``: e_t, in [0, 1];
        * ``reads`` ``(B, T, R, M)``: the read vectors r_t.

        ``y`` and the final state are ``forward``'s own, on whichever path it takes. The C kernels
        keep no weightings, so the arrays always come from the PyTorch loop of ``sequence.py``
        (:meth:`trace_torch`): the same equations, equal to the kernels' to float32 rounding.
        """
        y, final = self(x, state)
        with torch.no_grad():
            _, arrays = self.trace_torch(x, state)
        return y, final, arrays

    def trace_torch(self, x: torch.Tensor, state: NTMState | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(y, arrays)`` of :meth:`trace` from the PyTorch loop of ``sequence.py`` with every
        intermediate kept; its ``y`` is ``forward``'s wherever ``forward`` runs that loop
        (``cpu_kernel=False``, a GPU, float64)."""
        from memtasks.models.ntm.sequence import Saved

        self.check_input(x)
        b, steps = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(b, x.device)
        cfg = self.config
        n_h, n_r, n_w, n, m = cfg.hidden_size, cfg.read_heads, cfg.write_heads, cfg.memory_slots, cfg.memory_width
        if steps == 0:
            zeros = lambda *shape: x.new_zeros(b, 0, *shape)  # noqa: E731
            return zeros(self.d_out), {"write_weights": zeros(n_w, n), "read_weights": zeros(n_r, n),
                                       "add": zeros(n_w, m), "erase": zeros(n_w, m), "reads": zeros(n_r, m)}
        h0 = state.controller.h if self.dims.lstm else x.new_zeros(b, n_h)
        z0 = torch.cat((h0, state.reads.reshape(b, -1)), dim=1)  # z_0 = [h_0; r_0]
        w0 = torch.cat((state.read_weights, state.write_weights), dim=1)  # (B, A, N)
        if self.dims.lstm:
            w_z = torch.cat((self.w_h, self.w_r), dim=1)
        else:
            w_z = torch.cat((self.w_r.new_zeros(self.w_r.shape[0], n_h), self.w_r), dim=1)
        mem0 = state.memory.transpose(1, 2).contiguous()  # (B, M, N), as the loop holds it
        saved = Saved()
        xp = input_projection(x, self.w_x, self.bias)[0]  # (T, B, G)
        out = run_forward(self.dims, xp, z0, state.controller.c, mem0, w0, w_z, self.w_p, self.b_p, saved=saved)
        y = F.linear(out.zs.transpose(0, 1), self.w_y, self.b_y)  # (B, T, d_out)
        w = torch.stack(saved["w_prev"][1:], dim=1)  # (B, T, A, N): w_1..w_T
        per_head = lambda key: saved.stack(key).transpose(0, 1).unflatten(-1, (n_w, m))  # noqa: E731  (B, T, W, M)
        return y, {
            "write_weights": w[:, :, n_r:],
            "read_weights": w[:, :, :n_r],
            "add": per_head("a"),
            "erase": per_head("e"),
            "reads": out.zs[..., n_h:].transpose(0, 1).unflatten(-1, (n_r, m)),  # (B, T, R, M)
        }

"""The independently recurrent neural network, ``indrnn`` (Li et al. 2018).

Each unit of a layer sees only its own past state, through one recurrent weight:
    h_t = ReLU(W x_t + u ⊙ h_{t-1} + b)
with W (n, m), u (n,), b (n,); layers are stacked (the input of layer l > 1 is h_t of layer
l - 1) and a linear readout y_t = W_y h_t + b_y of the top layer is applied at every step.
The paper's 2-layer, 128-unit network of its adding-problem experiments is the default;
the batch normalisation it adds in deeper stacks is left out.

Recurrent weights: by the paper's backpropagation-through-time analysis the gradient that
one unit carries across T steps scales as u^T, so keeping it within [ε, γ] needs
|u| ∈ [ε^{1/T}, γ^{1/T}]. With γ = 2 and T = ``t_max`` (a task hint: the trainer fills it with
the number of steps of the task's longest training sequence):
    * u of every layer is initialised uniformly in [0, 2^{1/T}], the paper's default range;
    * u of the last layer, with ``long_memory_init`` (default), in [2^{-1/T}, 2^{1/T}]: the
      paper starts the last layer near 1 for tasks answered at the end of the sequence, so
      that it can carry information across all T steps; our memory tasks answer after a
      delay of up to about T steps, so the same reasoning holds. ε = 1/2 is our choice: it
      makes the range symmetric around 1 in log scale (a factor between 1/2 and 2 over T);
    * after every optimiser step |u| is clipped to ``u_max`` (default 2^{1/T}).
``u_max``, when given, replaces 2^{1/T} in the initial ranges as well. W takes ``nn.Linear``'s
default initialisation and b starts at 0, so ReLU units start without an offset.

Speed: W x_t + b is computed for all steps in one matmul; the loop then holds two
elementwise operations per layer and step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from memtasks.core.config import check_float, check_int
from memtasks.models.base import MemoryModel, register_model, stacked_zeros, trace_stacked_layers


@dataclass(frozen=True)
class IndRNNConfig:
    hidden_size: int = 128  # units per layer (n)
    num_layers: int = 2
    t_max: int = 1000  # steps of the longest training sequence; sets the bounds on u (a task hint)
    u_max: float | None = None  # bound on |u| after every optimiser step; None: 2^(1/t_max)
    long_memory_init: bool = True  # last layer's u ~ U(2^(-1/T), 2^(1/T)) instead of U(0, 2^(1/T))

    def __post_init__(self) -> None:
        check_int("indrnn", "hidden_size", self.hidden_size, 1)
        check_int("indrnn", "num_layers", self.num_layers, 1, 64)
        check_int("indrnn", "t_max", self.t_max, 1)
        if self.u_max is not None:
            check_float("indrnn", "u_max", self.u_max, 0.0, open_lo=True)
        if not isinstance(self.long_memory_init, bool):
            raise ValueError(f"indrnn.long_memory_init must be true or false, got {self.long_memory_init!r}")

    @property
    def u_bound(self) -> float:
        """The bound on |u|: ``u_max`` if given, else 2^(1/t_max)."""
        return self.u_max if self.u_max is not None else 2.0 ** (1.0 / self.t_max)


class IndRNNLayer(nn.Module):
    """One IndRNN layer: ``weight_ih`` W (n, m), ``bias`` b (n,), ``weight_hh`` u (n,)."""

    def __init__(self, input_size: int, hidden_size: int, u_low: float, u_high: float) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size))
        nn.init.kaiming_uniform_(self.weight_ih, a=math.sqrt(5))  # nn.Linear's default
        nn.init.uniform_(self.weight_hh, u_low, u_high)

    def forward(self, seq: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the layer over ``seq`` (T, B, m) from ``h`` (B, n); return outputs (T, B, n) and h_T."""
        xw = F.linear(seq, self.weight_ih, self.bias)  # (T, B, n)
        u = self.weight_hh
        outs: list[torch.Tensor] = []
        for xw_t in xw.unbind(0):
            h = torch.addcmul(xw_t, u, h).relu_()
            outs.append(h)
        return torch.stack(outs), h


@register_model("indrnn", config=IndRNNConfig)
class IndRNN(MemoryModel):
    """Stacked IndRNN layers with ReLU and a linear readout; state (B, num_layers, n)."""

    task_hints = ("t_max",)
    optimizer_defaults = {"optimizer": "adam", "lr": 2e-4}  # Li et al. 2018, adding problem

    def __init__(self, d_in: int, d_out: int, config: IndRNNConfig) -> None:
        super().__init__(d_in, d_out, config)
        n, L, high = config.hidden_size, config.num_layers, config.u_bound
        low_last = min(2.0 ** (-1.0 / config.t_max), high) if config.long_memory_init else 0.0
        self.layers = nn.ModuleList(
            IndRNNLayer(d_in if i == 0 else n, n, low_last if i == L - 1 else 0.0, high) for i in range(L)
        )
        self.readout = nn.Linear(n, d_out)

    @classmethod
    def count_params(cls, d_in: int, d_out: int, config: IndRNNConfig) -> int:
        n = config.hidden_size
        return n * (d_in + 2) + (config.num_layers - 1) * n * (n + 2) + (n + 1) * d_out

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return stacked_zeros(self.config, batch_size, device)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, d_in), ``state`` (B, num_layers, n) -> ``y`` (B, T, d_out), state."""
        self.check_input(x)
        if state is None:
            state = self.initial_state(x.shape[0], x.device).to(x.dtype)
        seq = x.transpose(0, 1)  # (T, B, d_in)
        finals = []
        for i, layer in enumerate(self.layers):
            seq, h = layer(seq, state[:, i])
            finals.append(h)
        return self.readout(seq.transpose(0, 1)), torch.stack(finals, dim=1)

    def trace(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``forward``, and ``hidden``: h_t of every layer after every step, ``(B, T, num_layers, n)``
        (OPTIONAL in the contract). ``y`` and the final state are ``forward``'s own; the layers are
        run again, with the same operations, to keep their outputs."""
        return trace_stacked_layers(self, x, state)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Clip every recurrent weight to |u| ≤ ``u_max`` (2^(1/t_max) by default)."""
        bound = self.config.u_bound
        for layer in self.layers:
            layer.weight_hh.clamp_(-bound, bound)

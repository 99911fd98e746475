"""The fused PyTorch recurrent families: ``rnn`` (Elman), ``lstm`` and ``gru``.

Each stacks ``num_layers`` cuDNN/oneDNN-fused layers and a linear readout
``y_t = W_y h_t + b_y`` applied at every step.

Elman RNN (Elman 1990):      h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  φ = tanh (or relu)

LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000):
    i_t = σ(W_ii x_t + W_hi h_{t-1} + b_i)      f_t = σ(W_if x_t + W_hf h_{t-1} + b_f)
    g_t = tanh(W_ig x_t + W_hg h_{t-1} + b_g)   o_t = σ(W_io x_t + W_ho h_{t-1} + b_o)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t             h_t = o_t ⊙ tanh(c_t)

GRU (Cho et al. 2014) as PyTorch implements it, the *reset-after* form with two bias
vectors per gate (one on the input path, one on the recurrent path):
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
The reset gate multiplies the already-projected W_hn h_{t-1} + b_hn, not h_{t-1} itself as in
Cho et al.; the gate variants in ``gru_variants.py`` use the paper's reset-before form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from memtasks.core.config import check_choice, check_int
from memtasks.models.base import MemoryModel, check_forget_bias, State, register_model, stacked_zeros


@dataclass(frozen=True)
class RNNConfig:
    hidden_size: int = 100  # units per layer
    num_layers: int = 1
    nonlinearity: str = "tanh"  # "tanh" or "relu"

    def __post_init__(self) -> None:
        check_int("rnn", "hidden_size", self.hidden_size, 1)
        check_int("rnn", "num_layers", self.num_layers, 1, 16)
        check_choice("rnn", "nonlinearity", self.nonlinearity, ("tanh", "relu"))


@dataclass(frozen=True)
class LSTMConfig:
    hidden_size: int = 100  # units per layer; the NTM paper's LSTM baselines use 3x256
    num_layers: int = 1
    # The forget gate's bias at initialisation, so f ≈ σ(1) ≈ 0.73 and the cell keeps its content
    # from the start (Gers et al. 2000; Jozefowicz et al. 2015; TensorFlow's and Keras's default).
    # "uniform" keeps PyTorch's uniform initialisation (f ≈ 0.5: the cell state halves every step).
    forget_bias: float | str = 1.0

    def __post_init__(self) -> None:
        check_int("lstm", "hidden_size", self.hidden_size, 1)
        check_int("lstm", "num_layers", self.num_layers, 1, 16)
        check_forget_bias("lstm", self.forget_bias)


@dataclass(frozen=True)
class GRUConfig:
    hidden_size: int = 100
    num_layers: int = 1

    def __post_init__(self) -> None:
        check_int("gru", "hidden_size", self.hidden_size, 1)
        check_int("gru", "num_layers", self.num_layers, 1, 16)


class LSTMState(NamedTuple):
    h: torch.Tensor  # (B, num_layers, hidden_size)
    c: torch.Tensor  # (B, num_layers, hidden_size)


class _Fused(MemoryModel):
    """Shared plumbing: a fused ``nn.RNNBase`` core plus a linear readout. State is batch first."""

    core: nn.RNNBase

    def __init__(self, d_in: int, d_out: int, config: RNNConfig | LSTMConfig | GRUConfig) -> None:
        super().__init__(d_in, d_out, config)
        self.core = self._make_core(d_in, config)
        self.readout = nn.Linear(config.hidden_size, d_out)

    def _make_core(self, d_in: int, config: object) -> nn.RNNBase:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return stacked_zeros(self.config, batch_size, device)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        h, h_n = self.core(x, state.transpose(0, 1).contiguous())  # core state is layer first
        return self.readout(h), h_n.transpose(0, 1)

    def trace(self, x: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State, dict[str, torch.Tensor]]:
        """``forward``, and the state over time (OPTIONAL in the contract): ``hidden`` h_t of every
        layer ``(B, T, num_layers, hidden_size)`` and, for the LSTM, ``cell`` c_t of the same shape.

        ``y`` and the final state are ``forward``'s own; the arrays come from the same fused core
        run one step at a time (equal to the fused run to rounding)."""
        y, final = self(x, state)
        carry = self._core_state(self.initial_state(x.shape[0], x.device) if state is None else state)
        names = ("hidden", "cell") if isinstance(carry, tuple) else ("hidden",)
        steps: list[tuple[torch.Tensor, ...]] = []
        with torch.no_grad():
            for t in range(x.shape[1]):
                _, carry = self.core(x[:, t : t + 1], carry)
                steps.append(tuple(p.transpose(0, 1) for p in (carry if isinstance(carry, tuple) else (carry,))))
        empty = x.new_zeros(x.shape[0], 0, self.config.num_layers, self.config.hidden_size)
        return y, final, {  # each (B, T, num_layers, hidden_size)
            name: torch.stack([step[i] for step in steps], dim=1) if steps else empty for i, name in enumerate(names)
        }

    def _core_state(self, state: State) -> State:
        """The state as the fused core takes it: layer first."""
        return state.transpose(0, 1).contiguous()  # type: ignore[union-attr]


@register_model("rnn", config=RNNConfig)
class ElmanRNN(_Fused):
    """Elman RNN (fused ``nn.RNN``), tanh by default, relu as an option."""

    def _make_core(self, d_in: int, config: RNNConfig) -> nn.RNNBase:
        return nn.RNN(d_in, config.hidden_size, config.num_layers, nonlinearity=config.nonlinearity, batch_first=True)


@register_model("gru", config=GRUConfig)
class GRU(_Fused):
    """GRU (fused ``nn.GRU``): PyTorch's reset-after form with two bias vectors per gate."""

    def _make_core(self, d_in: int, config: GRUConfig) -> nn.RNNBase:
        return nn.GRU(d_in, config.hidden_size, config.num_layers, batch_first=True)


@register_model("lstm", config=LSTMConfig)
class LSTM(_Fused):
    """LSTM with forget gate (fused ``nn.LSTM``); state ``LSTMState(h, c)``."""

    def _make_core(self, d_in: int, config: LSTMConfig) -> nn.RNNBase:
        core = nn.LSTM(d_in, config.hidden_size, config.num_layers, batch_first=True)
        if config.forget_bias != "uniform":
            H = config.hidden_size
            with torch.no_grad():
                for layer in range(config.num_layers):  # gate order (i, f, g, o); b_ih + b_hh is the bias
                    getattr(core, f"bias_ih_l{layer}")[H : 2 * H] = config.forget_bias
                    getattr(core, f"bias_hh_l{layer}")[H : 2 * H] = 0.0
        return core

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> LSTMState:
        return LSTMState(*(stacked_zeros(self.config, batch_size, device) for _ in range(2)))

    def forward(self, x: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        self.check_input(x)
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        hc = (state.h.transpose(0, 1).contiguous(), state.c.transpose(0, 1).contiguous())
        out, (h_n, c_n) = self.core(x, hc)
        return self.readout(out), LSTMState(h_n.transpose(0, 1), c_n.transpose(0, 1))

    def _core_state(self, state: State) -> State:
        return tuple(part.transpose(0, 1).contiguous() for part in state)  # type: ignore[union-attr]

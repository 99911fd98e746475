"""The GRU of Dey & Salem 2017 and its gate variants: ``gru0``, ``gru1``, ``gru2``, ``gru3``.

All four share the GRU's candidate state and interpolation in the paper's *reset-before*
form with one bias vector per gate (not PyTorch's reset-after form of ``recurrent.gru``):
    h̃_t = tanh(W_h x_t + U_h (r_t ⊙ h_{t-1}) + b_h)
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t
and differ from the standard GRU, whose gates are
    z_t = σ(W_z x_t + U_z h_{t-1} + b_z),   r_t = σ(W_r x_t + U_r h_{t-1} + b_r),
only in what drives the update gate z_t and the reset gate r_t:
    GRU0:  the standard gates above (the paper's baseline, in the same form and code path)
    GRU1:  z_t = σ(U_z h_{t-1} + b_z),   r_t = σ(U_r h_{t-1} + b_r)   (no input)
    GRU2:  z_t = σ(U_z h_{t-1}),         r_t = σ(U_r h_{t-1})         (no input, no bias)
    GRU3:  z_t = σ(b_z),                 r_t = σ(b_r)                 (bias only: constant gates)
With m inputs and n units a layer has (the paper's counts)
    GRU0: 3(n² + nm + n),   GRU1: GRU0 - 2nm,   GRU2: GRU1 - 2n,   GRU3: GRU0 - 2(nm + n²)
parameters; layers after the first have m = n. A linear readout y_t = W_y h_t + b_y of the
top layer is applied at every step. Initialisation follows ``nn.GRU`` (every weight and bias
uniform in ±1/√n), so the variants and the ``gru`` baseline start from the same scale.

Speed: the input projection W_h x_t + b_h is computed for all steps in one matmul before the
time loop; the two gates share one recurrent matmul [U_z; U_r] h_{t-1} (+ [b_z; b_r]); GRU3's
constant reset gate is folded into the recurrent weight once, U_h (r ⊙ h) = (U_h diag(r)) h,
so its loop holds one matmul; the interpolation is one ``lerp``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
import torch.nn.functional as F

from memtasks.core.config import check_int
from memtasks.models.base import MemoryModel, register_model, stacked_zeros, trace_stacked_layers


@dataclass(frozen=True)
class GRUVariantConfig:
    hidden_size: int = 100  # units per layer (n)
    num_layers: int = 1

    family: ClassVar[str] = "gru_variant"  # the model name used in error messages

    def __post_init__(self) -> None:
        check_int(self.family, "hidden_size", self.hidden_size, 1)
        check_int(self.family, "num_layers", self.num_layers, 1, 16)


@dataclass(frozen=True)
class GRU0Config(GRUVariantConfig):
    family: ClassVar[str] = "gru0"


@dataclass(frozen=True)
class GRU1Config(GRUVariantConfig):
    family: ClassVar[str] = "gru1"


@dataclass(frozen=True)
class GRU2Config(GRUVariantConfig):
    family: ClassVar[str] = "gru2"


@dataclass(frozen=True)
class GRU3Config(GRUVariantConfig):
    family: ClassVar[str] = "gru3"


class VariantGRULayer(nn.Module):
    """One layer of a gate-variant GRU.

    Parameters (n units, m inputs): ``weight_ih`` W_h (n, m), ``weight_hh`` U_h (n, n),
    ``bias`` b_h (n,); ``gate_weight_hh`` [U_z; U_r] (2n, n) when the gates read h_{t-1}
    (GRU0, GRU1, GRU2); ``gate_bias`` [b_z; b_r] (2n,) when they have a bias (GRU0, GRU1, GRU3);
    ``gate_weight_ih`` [W_z; W_r] (2n, m) when they read x_t (GRU0).
    """

    def __init__(
        self, input_size: int, hidden_size: int, gate_hidden: bool, gate_bias: bool, gate_input: bool = False
    ) -> None:
        super().__init__()
        n, m = hidden_size, input_size
        self.weight_ih = nn.Parameter(torch.empty(n, m))
        self.weight_hh = nn.Parameter(torch.empty(n, n))
        self.bias = nn.Parameter(torch.empty(n))
        self.gate_weight_hh = nn.Parameter(torch.empty(2 * n, n)) if gate_hidden else None
        self.gate_bias = nn.Parameter(torch.empty(2 * n)) if gate_bias else None
        # registered last, so the variants without it draw the same initial weights as before
        self.gate_weight_ih = nn.Parameter(torch.empty(2 * n, m)) if gate_input else None
        bound = 1.0 / math.sqrt(n)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, seq: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the layer over ``seq`` (T, B, m) from ``h`` (B, n); return outputs (T, B, n) and h_T."""
        xh = F.linear(seq, self.weight_ih, self.bias)  # (T, B, n): W_h x_t + b_h for every step
        outs: list[torch.Tensor] = []
        if self.gate_weight_hh is None:  # GRU3: z and r are constants
            assert self.gate_bias is not None
            z, r = torch.sigmoid(self.gate_bias).chunk(2)
            u_h = (self.weight_hh * r).t()  # (U_h diag(r))ᵀ, (n, n)
            z = z.expand_as(h)
            for xh_t in xh.unbind(0):
                h = torch.lerp(h, torch.addmm(xh_t, h, u_h).tanh_(), z)
                outs.append(h)
            return torch.stack(outs), h
        u_zr = self.gate_weight_hh.t()  # (n, 2n)
        u_h = self.weight_hh.t()  # (n, n)
        b_zr = self.gate_bias
        if self.gate_weight_ih is not None:  # GRU0: W_z x_t + W_r x_t (+ b) for every step at once
            xg = F.linear(seq, self.gate_weight_ih, b_zr)  # (T, B, 2n)
            for xh_t, xg_t in zip(xh.unbind(0), xg.unbind(0)):
                zr = torch.addmm(xg_t, h, u_zr).sigmoid_()  # (B, 2n)
                z, r = zr.chunk(2, dim=1)
                h = torch.lerp(h, torch.addmm(xh_t, r * h, u_h).tanh_(), z)
                outs.append(h)
            return torch.stack(outs), h
        for xh_t in xh.unbind(0):
            zr = (torch.mm(h, u_zr) if b_zr is None else torch.addmm(b_zr, h, u_zr)).sigmoid_()  # (B, 2n)
            z, r = zr.chunk(2, dim=1)
            h = torch.lerp(h, torch.addmm(xh_t, r * h, u_h).tanh_(), z)
            outs.append(h)
        return torch.stack(outs), h


class _GateVariantGRU(MemoryModel):
    """Shared plumbing of the three variants: stacked layers and a readout. State (B, num_layers, n)."""

    optimizer_defaults = {"optimizer": "rmsprop", "lr": 1e-3}  # Dey & Salem 2017 trained them with RMSProp

    gate_hidden: ClassVar[bool]
    gate_bias: ClassVar[bool]
    gate_input: ClassVar[bool] = False

    def __init__(self, d_in: int, d_out: int, config: GRUVariantConfig) -> None:
        super().__init__(d_in, d_out, config)
        n = config.hidden_size
        self.layers = nn.ModuleList(
            VariantGRULayer(d_in if i == 0 else n, n, self.gate_hidden, self.gate_bias, self.gate_input)
            for i in range(config.num_layers)
        )
        self.readout = nn.Linear(n, d_out)

    @classmethod
    def cell_params(cls, input_size: int, hidden_size: int) -> int:
        """Parameters of one layer, as counted in the paper."""
        n, m = hidden_size, input_size
        gates = (2 * n * n if cls.gate_hidden else 0) + (2 * n if cls.gate_bias else 0) + (2 * n * m if cls.gate_input else 0)
        return n * m + n * n + n + gates

    @classmethod
    def count_params(cls, d_in: int, d_out: int, config: GRUVariantConfig) -> int:
        n = config.hidden_size
        cells = cls.cell_params(d_in, n) + (config.num_layers - 1) * cls.cell_params(n, n)
        return cells + (n + 1) * d_out

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return stacked_zeros(self.config, batch_size, device)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, d_in), ``state`` (B, num_layers, n) -> ``y`` (B, T, d_out), state."""
        self.check_input(x)
        if state is None:
            state = self.initial_state(x.shape[0], x.device).to(x.dtype)
        seq = x.transpose(0, 1)  # (T, B, d_in): the loop runs over time
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


@register_model("gru0", config=GRU0Config)
class GRU0(_GateVariantGRU):
    """GRU0: the standard GRU in the paper's reset-before form, z_t = σ(W_z x_t + U_z h_{t-1} + b_z)."""

    gate_hidden = True
    gate_bias = True
    gate_input = True


@register_model("gru1", config=GRU1Config)
class GRU1(_GateVariantGRU):
    """GRU1: gates from the previous state and a bias, z_t = σ(U_z h_{t-1} + b_z)."""

    gate_hidden = True
    gate_bias = True


@register_model("gru2", config=GRU2Config)
class GRU2(_GateVariantGRU):
    """GRU2: gates from the previous state only, z_t = σ(U_z h_{t-1})."""

    gate_hidden = True
    gate_bias = False


@register_model("gru3", config=GRU3Config)
class GRU3(_GateVariantGRU):
    """GRU3: gates from the bias only, z_t = σ(b_z): constant (learned) gates."""

    gate_hidden = False
    gate_bias = True

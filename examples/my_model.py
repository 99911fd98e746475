"""A complete model plugin: a minimal gated recurrent unit (MGU, Zhou et al. 2016).

Use it without touching memtasks:

    memtasks train --task copy --model mgu --plugin examples/my_model.py
    memtasks matrix smoke --models lstm mgu --plugin examples/my_model.py   # needs [models.mgu] in the spec

Equations (one forget gate f shared as update and reset):
    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
    h̃_t = tanh(W_h x_t + U_h (f_t ⊙ h_{t-1}) + b_h)
    h_t = (1 - f_t) ⊙ h_{t-1} + f_t ⊙ h̃_t
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memtasks.models import MemoryModel, register_model


@dataclass(frozen=True)
class MGUConfig:
    hidden_size: int = 100  # the size knob a parameter budget resizes

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"mgu.hidden_size={self.hidden_size} is out of range; allowed: [1, inf]")


@register_model("mgu", config=MGUConfig)
class MGU(MemoryModel):
    def __init__(self, d_in: int, d_out: int, config: MGUConfig) -> None:
        super().__init__(d_in, d_out, config)
        n = config.hidden_size
        self.w_x = nn.Linear(d_in, 2 * n)  # W_f, W_h for all steps at once
        self.u_f = nn.Linear(n, n, bias=False)
        self.u_h = nn.Linear(n, n, bias=False)
        self.readout = nn.Linear(n, d_out)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(batch_size, self.config.hidden_size, device=device)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)  # (B, T, d_in)
        h = self.initial_state(x.shape[0], x.device) if state is None else state
        xf, xh = self.w_x(x).chunk(2, dim=-1)  # input projections hoisted out of the loop
        outs = []
        for xf_t, xh_t in zip(xf.unbind(1), xh.unbind(1)):
            f = torch.sigmoid(xf_t + self.u_f(h))
            h_tilde = torch.tanh(xh_t + self.u_h(f * h))
            h = (1 - f) * h + f * h_tilde
            outs.append(h)
        return self.readout(torch.stack(outs, dim=1)), h

"""The NTM controller's cell on pre-activations: forward, and its backward in two halves.

The caller forms the pre-activations ``G_t = W_x x_t + b + W_z z_{t-1}`` with fused matrix
products, so the cells here only do the element-wise work. Gate order along ``G`` is
``[i | f | o | g]``: the three sigmoid gates first, so one ``sigmoid`` covers them.

LSTM (Hochreiter & Schmidhuber 1997, forget gate of Gers et al. 2000):
    i, f, o = σ(G_i), σ(G_f), σ(G_o)     g = tanh(G_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g            h_t = o ⊙ tanh(c_t)
Feedforward (one layer, no recurrent state):
    h_t = tanh(G_t)

Backward, split so that everything element-wise that needs no incoming gradient is computed
once for all steps (:func:`lstm_coefficients`) and the per-step part is three operations
(:func:`lstm_cell_backward`):
    c̄ = c̄_t + h̄ ⊙ o ⊙ (1 - tanh² c_t)                 (c̄_t from step t+1)
    Ḡ = [c̄, c̄, h̄, c̄] ⊙ [g σ'(i), c_{t-1} σ'(f), tanh(c_t) σ'(o), i (1 - g²)],  σ' = σ (1 - σ)
    c̄_{t-1} = c̄ ⊙ f
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class LSTMCoefficients(NamedTuple):
    """Per-step factors of the LSTM backward, stacked over steps ``(T, B, ·)``."""

    gates: torch.Tensor  # (T, B, 4H): [g σ'(i), c_{t-1} σ'(f), tanh(c_t) σ'(o), i (1 - g²)]
    o_dtanh: torch.Tensor  # (T, B, H): o ⊙ (1 - tanh² c_t)
    f: torch.Tensor  # (T, B, H): the forget gate


def lstm_cell(
    gates: torch.Tensor, c_prev: torch.Tensor, h_out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h_t, c_t, σ([G_i, G_f, G_o]), g, tanh c_t)`` from ``gates`` ``(B, 4H)`` and ``c_{t-1}`` ``(B, H)``.

    ``h_t`` is written into ``h_out`` when given.
    """
    n = c_prev.shape[1]
    g_sig, g_tanh = torch.split_with_sizes(gates, (3 * n, n), dim=1)
    sig, g = g_sig.sigmoid(), g_tanh.tanh()
    i, f, o = torch.split_with_sizes(sig, (n, n, n), dim=1)
    c = torch.addcmul(f * c_prev, i, g)
    tanh_c = c.tanh()
    return torch.mul(o, tanh_c, out=h_out) if h_out is not None else o * tanh_c, c, sig, g, tanh_c


def lstm_coefficients(
    sig: torch.Tensor, g: torch.Tensor, tanh_c: torch.Tensor, c_prev: torch.Tensor, h: torch.Tensor
) -> LSTMCoefficients:
    """The backward's element-wise factors for all steps at once; inputs stacked ``(T, B, ·)``."""
    n = g.shape[-1]
    i, f, o = sig.split(n, dim=-1)
    one = sig.new_ones(())
    coef = torch.empty(*sig.shape[:-1], 4 * n, dtype=sig.dtype, device=sig.device)
    d_sig = torch.addcmul(sig, sig, sig, value=-1.0)  # σ' = σ - σ²
    torch.mul(torch.cat((g, c_prev, tanh_c), dim=-1), d_sig, out=coef[..., : 3 * n])
    torch.mul(i, torch.addcmul(one, g, g, value=-1.0), out=coef[..., 3 * n :])
    return LSTMCoefficients(coef, torch.addcmul(o, h, tanh_c, value=-1.0), f)  # o - h tanh c = o (1 - tanh² c)


def lstm_cell_backward(
    grad_h: torch.Tensor,
    grad_c: torch.Tensor,
    gates_coef: torch.Tensor,
    o_dtanh: torch.Tensor,
    f: torch.Tensor,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Ḡ, c̄_{t-1})`` from ``h̄_t``, ``c̄_t`` (from step t+1) and step t's coefficients; ``Ḡ`` into ``out``."""
    g_cell = torch.addcmul(grad_c, grad_h, o_dtanh)
    grad_gates = torch.mul(torch.cat((g_cell, g_cell, grad_h, g_cell), dim=1), gates_coef, out=out)
    return grad_gates, g_cell * f


def feedforward_cell(gates: torch.Tensor, h_out: torch.Tensor | None = None) -> torch.Tensor:
    """``h_t = tanh(G_t)``, written into ``h_out`` when given."""
    return torch.tanh(gates, out=h_out) if h_out is not None else torch.tanh(gates)


def feedforward_coefficients(h: torch.Tensor) -> torch.Tensor:
    """``1 - h²`` (tanh'), stacked over steps; the backward is ``Ḡ = h̄ ⊙ (1 - h²)``."""
    return torch.addcmul(h.new_ones(()), h, h, value=-1.0)

"""Chance: the best predictor that ignores its inputs, in closed form from each task's layout.

An *input-independent* predictor emits the same output for every sequence at step ``t`` and
output channel ``c`` (a probability for bit tasks, a value for ``mse`` tasks); it may know the
step and the evaluation point (the length), nothing of the sequence's content. Per step and
channel it only needs three moments of the task's distribution, each ``(T, d_out)`` float64
(:class:`TargetMoments`, ``s`` the scored indicator, ``y`` the target)::

    a = P(s),   m1 = E[s·y],   m2 = E[s·y²]

The best such predictor is ``p = m1 / a`` (the mean target where scored), and its expected cost

    bce (bits per sequence):  sum over t, c of  a · H2(m1 / a),    H2 the binary entropy in bits
    mse (per scored element): sum over t, c of (m2 − m1² / a),  over  sum over t, c of a

(the mse's ratio of sums is the limit of the metric's batch ratio). Tasks give the moments at
one length (``Task._moments_at``); a length range is the uniform mixture of its lengths.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from memtasks.core.lazy import torch
from memtasks.metrics import LN2

EPS = 1e-12  # keeps log2 finite where a deterministic target meets its own prediction


class TargetMoments(NamedTuple):
    """Per step and output channel, each ``(T, d_out)`` float64: P(scored), E[scored·y], E[scored·y²]."""

    scored: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor


def zeros(steps: int, channels: int) -> TargetMoments:
    """All-zero moments of ``steps`` x ``channels`` (nothing scored), to fill in place."""
    return TargetMoments(*(torch.zeros(steps, channels, dtype=torch.float64) for _ in range(3)))


def uniform_bits(steps: int, channels: int, rows: slice | Sequence[int], prob: float = 0.5) -> TargetMoments:
    """Moments of a layout whose ``rows`` are scored on every channel with bits that are 1 with ``prob``."""
    m = zeros(steps, channels)
    m.scored[rows] = 1.0
    m.first[rows] = prob
    m.second[rows] = prob  # y² = y for bits
    return m


def mixture(parts: Sequence[TargetMoments], weights: Sequence[float] | None = None) -> TargetMoments:
    """The moments of a mixture (default: uniform) of layouts, padded with unscored steps to the longest."""
    steps = max(p.scored.shape[0] for p in parts)
    weights = list(weights) if weights is not None else [1.0 / len(parts)] * len(parts)
    out = zeros(steps, parts[0].scored.shape[1])
    for part, w in zip(parts, weights):
        n = part.scored.shape[0]
        for total, value in zip(out, part):
            total[:n] += w * value
    return out


def empirical(targets: torch.Tensor, mask: torch.Tensor) -> TargetMoments:
    """The moments of a sample: ``targets`` ``(B, T, d_out)``, ``mask`` ``(B, T)``."""
    s = mask.unsqueeze(-1).expand_as(targets).double()
    y = targets.double()
    return TargetMoments(s.mean(0), (s * y).mean(0), (s * y * y).mean(0))


def prediction(m: TargetMoments, fill: float = 0.5) -> torch.Tensor:
    """``(T, d_out)`` the best input-independent prediction ``m1 / a``; ``fill`` where never scored."""
    return torch.where(m.scored > 0, m.first / m.scored.clamp_min(EPS), torch.full_like(m.scored, fill))


def expected_cost(m: TargetMoments, loss: str) -> float:
    """The best input-independent predictor's expected cost (module docstring)."""
    a = m.scored
    if loss == "mse":
        total = float(a.sum())
        return float((m.second - m.first**2 / a.clamp_min(EPS)).clamp_min(0).sum()) / total if total else float("nan")
    p = prediction(m).clamp(0.0, 1.0)
    h = -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)) / LN2  # binary entropy in bits
    return float((a * h).sum())


def cost_on(pred: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, loss: str) -> float:
    """The cost of the fixed prediction ``pred`` ``(T', d_out)`` on a batch, as the task's metric scores it.

    bce: bits per sequence (the ``cost`` metric); mse: mean over scored elements (``mse``). Steps
    beyond ``pred``'s length are predicted as its fill (0.5), which never happens for the
    prediction of the same evaluation point.
    """
    T = targets.shape[1]
    if pred.shape[0] < T:
        pred = torch.cat([pred, torch.full((T - pred.shape[0], pred.shape[1]), 0.5, dtype=pred.dtype)])
    p = pred[:T].unsqueeze(0).to(targets.device)  # (1, T, d_out)
    y = targets.double()
    s = mask.unsqueeze(-1).expand_as(targets).double()
    if loss == "mse":
        return float((s * (y - p) ** 2).sum() / s.sum().clamp_min(1.0))
    p = p.clamp(EPS, 1 - EPS)
    bits = -(y * torch.log2(p) + (1 - y) * torch.log2(1 - p))
    return float((s * bits).sum(dim=(1, 2)).mean())

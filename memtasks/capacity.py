"""Linear short-term memory capacity of a reservoir (Jaeger 2002, "Short term memory in echo state
networks", GMD Report 152), measured on any registered closed-form model with ``reservoir_states``.

Drive the reservoir with one long i.i.d. scalar input u(n) ~ U(-a, a), discard a washout, and for
every delay k = 1 … K fit a linear readout y_k(n) = w_k · [1; x(n)] that tries to output u(n − k).
The delay-k memory function is the squared correlation between y_k and its target on held-out
steps, and the capacity is their sum:

    MC_k = cov²(y_k(n), u(n − k)) / (var(y_k(n)) · var(u(n)))        MC = Σ_{k=1..K} MC_k

Jaeger's theorem: for i.i.d. input, MC ≤ N, the number of reservoir units (equality needs a
linear reservoir; tanh units lose some of it). Worked example (``memtasks capacity --sizes 50``):
a 50-unit reservoir gives MC_1 ≈ 1 (it recalls the last input almost perfectly), MC_k then falls
towards 0 as k grows, and the sum stays below 50.

All readouts are fitted at once by ridge regression (``models.esn.ridge_readout``) on the training
steps; the correlations are taken on separate test steps of the same run, so an over-fitted
readout cannot inflate MC. Every random draw goes through an explicit ``torch.Generator``.
"""
from __future__ import annotations

from typing import Any

import torch

from memtasks.models import build_model
from memtasks.models.esn import ridge_readout


def memory_function(
    states: torch.Tensor, inputs: torch.Tensor, max_delay: int, train_steps: int, ridge: float
) -> torch.Tensor:
    """MC_k for k = 1 … ``max_delay`` from reservoir ``states`` (T, N) driven by ``inputs`` (T,).

    Steps ``max_delay`` … ``max_delay + train_steps`` fit the readouts, the rest test them
    (the caller has already dropped the washout). Returns a float64 tensor of ``max_delay`` values.
    """
    T = states.shape[0]
    if T - max_delay - train_steps < 2:
        raise ValueError(f"capacity: {T} steps leave no test steps after {max_delay} delays and {train_steps} training steps")
    x = torch.cat([torch.ones(T, 1, dtype=torch.float64), states.double()], dim=1)  # [1; x(n)]
    u = inputs.double()
    # column k-1 of the targets is u(n - k), for the steps n >= max_delay
    n = torch.arange(max_delay, T)
    targets = torch.stack([u[n - k] for k in range(1, max_delay + 1)], dim=1)  # (T - K, K)
    rows = x[max_delay:]
    fit_rows, test_rows = rows[:train_steps], rows[train_steps:]
    fit_targets, test_targets = targets[:train_steps], targets[train_steps:]
    w = ridge_readout(fit_rows.t() @ fit_rows, fit_targets.t() @ fit_rows, ridge)  # (K, 1 + N)
    y = test_rows @ w.t()  # (S, K)
    yc, tc = y - y.mean(0), test_targets - test_targets.mean(0)
    cov = (yc * tc).mean(0)
    return (cov * cov / (yc.pow(2).mean(0) * tc.pow(2).mean(0)).clamp_min(1e-300)).clamp(0.0, 1.0)


def memory_capacity(
    reservoir_size: int,
    seed: int = 0,
    model: str = "esn",
    max_delay: int | None = None,
    input_range: float = 0.5,
    washout: int = 200,
    train_steps: int | None = None,
    test_steps: int = 10_000,
    ridge: float = 1e-8,
    **hparams: Any,
) -> dict[str, Any]:
    """MC of one reservoir of ``reservoir_size`` units (seeded by ``seed``), as a result row.

    ``max_delay`` defaults to 2N (past N no delay can be remembered if MC ≤ N holds, and the sum
    shows it); ``train_steps`` to max(2000, 10 (N + 1)) so every readout is well determined.
    """
    K = max_delay or 2 * reservoir_size
    S = train_steps or max(2000, 10 * (reservoir_size + 1))
    net = build_model(model, 1, 1, reservoir_size=reservoir_size, seed=seed, **hparams)
    if not hasattr(net, "reservoir_states"):
        raise ValueError(f"capacity: model {model!r} has no reservoir_states(); it needs a reservoir")
    g = torch.Generator().manual_seed(10_000 + seed)
    total = washout + K + S + test_steps
    u = (torch.rand(total, generator=g, dtype=torch.float64) * 2 - 1) * input_range
    with torch.no_grad():
        states, _ = net.reservoir_states(u.float().view(1, total, 1))
    mc_k = memory_function(states[0, washout:], u[washout:], K, S, ridge)
    return {
        "model": model,
        "reservoir_size": reservoir_size,
        "seed": seed,
        "memory_capacity": round(float(mc_k.sum()), 3),
        "capacity_per_unit": round(float(mc_k.sum()) / reservoir_size, 4),
        "mc_delay_1": round(float(mc_k[0]), 4),
        "delays_above_half": int((mc_k > 0.5).sum()),
        "max_delay": K,
        "input_range": input_range,
        "train_steps": S,
        "test_steps": test_steps,
        "memory_function": [round(float(v), 5) for v in mc_k],
    }

"""The echo state network, ``esn`` (Jaeger 2001), trained in closed form.

A fixed random leaky-tanh reservoir of N units (Lukoševičius 2012, "A practical guide to
applying echo state networks", its eqs. 2-4) with input u(n) ∈ R^{d_in}:
    x̃(n) = tanh(W_in [1; u(n)] + W x(n-1))
    x(n)  = (1 - α) x(n-1) + α x̃(n)
    y(n)  = W_out [1; u(n); x(n)]
W (N, N) and W_in (N, 1 + d_in) are random buffers that never change; only W_out is
trained, by ridge regression over the extended states [1; u(n); x(n)] of the scored steps:
    W_out = Y Xᵀ (X Xᵀ + β I)⁻¹
with X Xᵀ and Y Xᵀ summed batch by batch (the guide's advice for large data sets) and β
picked from ``ridge_grid`` by the task's own loss on held-out data (``fit``).

For ``bce`` tasks y(n) are logits, fitted to z = c (2y - 1), c = ``bce_target_logit``.
Jaeger (2001) trains a readout with an output non-linearity f on f⁻¹(teacher); σ⁻¹ of a
hard 0/1 bit is ∓∞, so the targets are clipped to ±c. c = 4 is σ⁻¹(0.982): far enough out
that a fitted logit decides the bit with a small loss, close enough that the least squares
do not chase extreme values. β is then chosen on the true bce, not on the regression error.

Defaults, with the section of the practical guide they come from:
    * ``reservoir_size`` N = 500 ("Size of the reservoir": bigger is better, within the
      budget); it is the size knob, so a parameter budget sets it;
    * ``connectivity`` = 10 incoming connections per unit whatever N ("Sparsity of the
      reservoir": a small fixed number of connections per unit, about 10); the non-zero
      weights are uniform in [-1, 1] ("Distribution of non-zero elements");
    * ``spectral_radius`` ρ(W) = 0.95, set exactly from ``torch.linalg.eigvals`` ("Spectral
      radius": ρ < 1 keeps the echo state property in practice, and a ρ close to 1 suits
      tasks that need a long history of the input, as memory tasks do);
    * ``input_scaling`` a = 1: W_in uniform in [-a, a], bias column included ("Input
      scaling"); our inputs are bits, so a = 1 drives tanh units into their non-linear range;
    * ``leak_rate`` α = 1, the non-leaky ESN of Jaeger (2001) ("Leaking rate": α should match
      the time scale of u(n) and y(n), and our tasks present a new symbol at every step);
    * ``ridge_grid`` β ∈ {1e-8, 1e-7, ..., 1e1}, a logarithmic grid searched on validation
      data ("Regularization").
There is no washout ("Initial transient"): every sequence starts from x(0) = 0 and the task
decides which steps are scored. The reservoir is drawn from a ``torch.Generator`` seeded with
``seed`` (never the global RNG) and runs in float32; the regression sums are float64 (on the
CPU when the device has no float64). Building W costs one dense eigen-decomposition, O(N³):
about 0.1 s at N = 500, minutes at N ≈ 6000.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn
import torch.nn.functional as F

from memtasks.core.config import check_choice, check_float, check_int
from memtasks.models.base import MemoryModel, register_model

FLOAT32_MAX = 3.4e38  # the reservoir runs in float32: a larger scale is inf
Scored = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (inputs, targets, mask) of a batch
_RIDGE_GRID = tuple(10.0**k for k in range(-8, 2))  # 1e-8, 1e-7, ..., 1e1


@dataclass(frozen=True)
class ESNConfig:
    reservoir_size: int = 500  # N reservoir units (the size knob)
    connectivity: int = 10  # incoming connections per reservoir unit (capped at N)
    spectral_radius: float = 0.95  # ρ(W) after rescaling
    input_scaling: float = 1.0  # W_in ~ U(-a, a), bias column included
    leak_rate: float = 1.0  # α in (0, 1]; 1 is the non-leaky ESN
    ridge_grid: tuple[float, ...] = _RIDGE_GRID  # β candidates, chosen on validation data
    bce_target_logit: float = 4.0  # bce tasks: logits are regressed on ±c for bits 1/0
    seed: int = 0  # seeds the reservoir's own generator

    def __post_init__(self) -> None:
        check_int("esn", "reservoir_size", self.reservoir_size, 1)
        check_int("esn", "connectivity", self.connectivity, 1)
        check_float("esn", "spectral_radius", self.spectral_radius, 0.0, FLOAT32_MAX, open_lo=True)
        check_float("esn", "input_scaling", self.input_scaling, 0.0, FLOAT32_MAX)
        check_float("esn", "leak_rate", self.leak_rate, 0.0, 1.0, open_lo=True)
        if not isinstance(self.ridge_grid, (tuple, list)) or not self.ridge_grid:
            raise ValueError(f"esn.ridge_grid must be a non-empty tuple of numbers, got {self.ridge_grid!r}")
        object.__setattr__(self, "ridge_grid", tuple(self.ridge_grid))  # a list from a preset file
        for beta in self.ridge_grid:
            check_float("esn", "ridge_grid", beta, 0.0, open_lo=True)
        check_float("esn", "bce_target_logit", self.bce_target_logit, 0.0, open_lo=True)
        check_int("esn", "seed", self.seed, 0)


def make_reservoir(config: ESNConfig, d_in: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``(W, W_in)`` from the CPU generator ``g``: W (N, N) sparse with ρ(W) =
    ``spectral_radius``, W_in (N, 1 + d_in). Built in float64; returned in float32.
    """
    n, k = config.reservoir_size, min(config.connectivity, config.reservoir_size)
    cpu = torch.device("cpu")
    sources = torch.rand(n, n, generator=g, device=cpu).topk(k, dim=1).indices  # (N, k) random distinct columns
    values = torch.rand(n, k, generator=g, device=cpu, dtype=torch.float64) * 2 - 1
    w = torch.zeros(n, n, dtype=torch.float64, device=cpu).scatter_(1, sources, values)
    rho = torch.linalg.eigvals(w).abs().max().item()
    if rho < 1e-12:
        raise RuntimeError(f"esn: the drawn reservoir is nilpotent (ρ(W)=0); use another seed than {config.seed}")
    w *= config.spectral_radius / rho
    w_in = (torch.rand(n, 1 + d_in, generator=g, device=cpu, dtype=torch.float64) * 2 - 1) * config.input_scaling
    return w.float(), w_in.float()


def ridge_readout(xtx: torch.Tensor, ztx: torch.Tensor, beta: float) -> torch.Tensor:
    """W_out = Z Xᵀ (X Xᵀ + β I)⁻¹ from the sums ``xtx`` = X Xᵀ (D, D) and ``ztx`` = Z Xᵀ (d_out, D).

    Solved by Cholesky (X Xᵀ + β I is symmetric positive definite); falls back to least
    squares if rounding makes the factorisation fail. Returns (d_out, D) in ``xtx``'s dtype.
    """
    a = xtx + beta * torch.eye(xtx.shape[0], dtype=xtx.dtype, device=xtx.device)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        return torch.cholesky_solve(ztx.t(), chol).t()
    return torch.linalg.lstsq(a, ztx.t()).solution.t()


@register_model("esn", config=ESNConfig)
class ESN(MemoryModel):
    """Echo state network: frozen reservoir, ridge-regression readout; state x(n) (B, N)."""

    size_knob = "reservoir_size"
    closed_form = True
    task_hints = ("seed",)  # the trainer seeds the reservoir with the run seed

    def __init__(self, d_in: int, d_out: int, config: ESNConfig) -> None:
        super().__init__(d_in, d_out, config)
        g = torch.Generator(device="cpu").manual_seed(config.seed)
        w, w_in = make_reservoir(config, d_in, g)
        self.register_buffer("weight_hh", w)  # W (N, N)
        self.register_buffer("weight_ih", w_in)  # W_in (N, 1 + d_in), column 0 for the bias
        # W_out = [bias | weights for u | weights for x], fitted by fit(). Until then it is drawn
        # like nn.Linear's, U(±1/√fan_in), but from the seeded generator, not the global RNG.
        fan_in = d_in + config.reservoir_size
        bound = 1.0 / math.sqrt(fan_in)
        self.readout = nn.utils.skip_init(nn.Linear, fan_in, d_out)
        with torch.no_grad():
            self.readout.weight.copy_((torch.rand(d_out, fan_in, generator=g) * 2 - 1) * bound)
            self.readout.bias.copy_((torch.rand(d_out, generator=g) * 2 - 1) * bound)

    @classmethod
    def count_params(cls, d_in: int, d_out: int, config: ESNConfig) -> int:
        return (1 + d_in + config.reservoir_size) * d_out

    @classmethod
    def memory_floats(cls, d_in: int, d_out: int, config: ESNConfig) -> tuple[int, int]:
        """Building W takes a dense N x N float64 matrix, a few copies of it in the eigen-decomposition."""
        n = config.reservoir_size
        return cls.count_params(d_in, d_out, config), 8 * n * n + n * (1 + d_in) + n

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(batch_size, self.config.reservoir_size, device=device)

    def reservoir_states(
        self, u: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the reservoir over inputs ``u`` (B, T, d_in) from ``state`` (B, N).

        Returns every state x(1..T) (B, T, N) and the last one (B, N), in float32.
        """
        self.check_input(u)
        u = u.float()
        x = self.initial_state(u.shape[0], u.device) if state is None else state.float()
        drive = F.linear(u.transpose(0, 1), self.weight_ih[:, 1:], self.weight_ih[:, 0])  # (T, B, N): W_in [1; u]
        w_t = self.weight_hh.t()
        alpha = self.config.leak_rate
        xs: list[torch.Tensor] = []
        for drive_n in drive.unbind(0):
            x_new = torch.addmm(drive_n, x, w_t).tanh_()
            x = x_new if alpha == 1.0 else torch.lerp(x, x_new, alpha)
            xs.append(x)
        return torch.stack(xs, dim=1), x

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, d_in) are the inputs u(n); ``state`` (B, N) -> ``y`` (B, T, d_out), state."""
        states, last = self.reservoir_states(x, state)
        w, b = self.readout.weight, self.readout.bias
        y = F.linear(states, w[:, self.d_in :], b) + F.linear(x.float(), w[:, : self.d_in])
        return y, last

    def trace(
        self, x: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``forward``, and what the network did (OPTIONAL in the contract): ``reservoir``, the
        states x(n) ``(B, T, N)``, and ``readout``, the readout's output W_out [1; u(n); x(n)]
        ``(B, T, d_out)`` (logits for bce tasks). ``y`` and the final state are ``forward``'s own."""
        y, final = self(x, state)
        with torch.no_grad():
            states, _ = self.reservoir_states(x, state)
        return y, final, {"reservoir": states, "readout": y.detach()}

    @torch.no_grad()
    def extended_states(
        self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows [1; u(n); x(n)] (S, 1 + d_in + N) and targets (S, d_out) of the scored steps
        of ``inputs`` (B, T, d_in), ``targets`` (B, T, d_out) and ``mask`` (B, T), True where scored."""
        dev = self.weight_hh.device
        u, mask = inputs.to(dev).float(), mask.to(dev)
        states, _ = self.reservoir_states(u)
        rows = torch.cat([torch.ones(int(mask.sum()), 1, device=dev), u[mask], states[mask]], dim=1)
        return rows, targets.to(dev).float()[mask]

    @torch.no_grad()
    def fit(self, train: Iterable[Scored], val: Scored, loss: str) -> dict[str, Any]:
        """Fit W_out by ridge regression on ``train``'s scored steps; choose β by ``val``'s ``loss``.

        ``train`` yields and ``val`` is a triple ``(inputs, targets, mask)`` of tensors as in
        :meth:`extended_states`; ``loss`` is ``"bce"`` (outputs are logits) or ``"mse"``.

        X Xᵀ and Z Xᵀ are accumulated batch by batch (memory does not grow with the number
        of batches). Returns ``{"ridge": β, "val_loss": loss at β, "states": rows fitted}``.
        """
        check_choice("esn", "loss", loss, ("bce", "mse"))
        dev = self.weight_hh.device
        acc = dev if dev.type not in ("mps", "meta") else torch.device("cpu")  # float64 accumulators
        d = 1 + self.d_in + self.config.reservoir_size
        xtx = torch.zeros(d, d, dtype=torch.float64, device=acc)
        ztx = torch.zeros(self.d_out, d, dtype=torch.float64, device=acc)
        count = 0
        for inputs, targets, mask in train:
            rows, targets = self.extended_states(inputs, targets, mask)
            rows64 = rows.to(acc, torch.float64)
            xtx += rows64.t() @ rows64
            ztx += self._regression_target(targets, loss).to(acc, torch.float64).t() @ rows64
            count += rows.shape[0]
        if count == 0:
            raise ValueError("esn.fit: the training batches have no scored steps")
        val_rows, val_targets = self.extended_states(*val)
        if val_rows.shape[0] == 0:
            raise ValueError("esn.fit: the validation batch has no scored steps")
        best: tuple[float, float, torch.Tensor] | None = None
        for beta in self.config.ridge_grid:
            w_out = ridge_readout(xtx, ztx, beta).to(dev, torch.float32)  # (d_out, D)
            val_loss = self._loss(val_rows @ w_out.t(), val_targets, loss)
            if best is None or _better(val_loss, best[1]):
                best = (beta, val_loss, w_out)
        assert best is not None
        beta, val_loss, w_out = best
        self.readout.bias.copy_(w_out[:, 0])
        self.readout.weight.copy_(w_out[:, 1:])
        return {"ridge": beta, "val_loss": val_loss, "states": count}

    def _regression_target(self, targets: torch.Tensor, loss: str) -> torch.Tensor:
        if loss == "bce":
            return self.config.bce_target_logit * (2 * targets - 1)
        return targets

    @staticmethod
    def _loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> float:
        """The mean loss per scored element over rows (S, d_out), as the tasks define it."""
        if loss == "bce":
            return float(F.binary_cross_entropy_with_logits(outputs.float(), targets.float()))
        return float(F.mse_loss(outputs.float(), targets.float()))


def _better(a: float, b: float) -> bool:
    """a beats b: finite and smaller (a non-finite loss never wins over a finite one)."""
    return math.isfinite(a) and (not math.isfinite(b) or a < b)

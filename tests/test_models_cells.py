"""The hand-written recurrent cells: GRU gate variants, IndRNN and the echo state network.

Each fast implementation is checked against a plain per-step loop written from the paper's
equations, and the closed-form ESN readout against an independent least-squares solve.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import memtasks.models as models
from memtasks.tasks.base import Batch
from memtasks.models.base import _fit_budget
from memtasks.models.esn import ESN, ESNConfig, ridge_readout

GRU_VARIANTS = ("gru0", "gru1", "gru2", "gru3")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bits(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=_gen(seed)).float()


# --- parameter counts ------------------------------------------------------------------------

def _paper_count(name: str, m: int, n: int) -> int:
    gru1 = 3 * (n * n + n * m + n) - 2 * n * m
    return {"gru0": 3 * (n * n + n * m + n), "gru1": gru1, "gru2": gru1 - 2 * n,
            "gru3": 3 * (n * n + n * m + n) - 2 * (n * m + n * n)}[name]


@pytest.mark.parametrize("name", GRU_VARIANTS)
@pytest.mark.parametrize("m, n", [(9, 100), (3, 7), (1, 1)])
def test_gru_variant_cell_counts_match_paper(name: str, m: int, n: int) -> None:
    model = models.build_model(name, m, 2, hidden_size=n, num_layers=2)
    assert sum(p.numel() for p in model.layers[0].parameters()) == _paper_count(name, m, n)
    assert sum(p.numel() for p in model.layers[1].parameters()) == _paper_count(name, n, n)
    expected = _paper_count(name, m, n) + _paper_count(name, n, n) + (n + 1) * 2
    assert model.param_counts()[0] == expected
    assert type(model).count_params(m, 2, model.config) == expected


def test_indrnn_count_params_is_exact() -> None:
    model = models.build_model("indrnn", 5, 3, hidden_size=11, num_layers=3)
    assert type(model).count_params(5, 3, model.config) == model.param_counts()[0]


@pytest.mark.parametrize("name", (*GRU_VARIANTS, "indrnn"))
def test_budget_within_five_percent(name: str) -> None:
    model = models.build_model(name, 9, 8, param_budget=50000)
    info = model.budget_info
    assert abs(info["relative_error"]) <= 0.05
    assert model.param_counts()[0] == info["trainable_params"]


def test_esn_budget_within_five_percent() -> None:
    # Building the N = 6240 reservoir that 50k parameters buy takes minutes of eigvals, so the
    # build is checked at 5k and the 50k choice through the same search, analytically.
    model = models.build_model("esn", 9, 8, param_budget=5000)
    assert abs(model.budget_info["relative_error"]) <= 0.05
    assert model.param_counts()[0] == model.budget_info["trainable_params"]
    size, count, _ = _fit_budget(ESN, 9, 8, ESNConfig(), "reservoir_size", 50000)
    assert abs(count - 50000) <= 2500 and count == (1 + 9 + size) * 8


# --- naive references ------------------------------------------------------------------------

def _naive_gru_variant(model: models.MemoryModel, x: torch.Tensor, state: torch.Tensor):
    """Per-step loop straight from Dey & Salem's equations."""
    name, n = model.registry_name, model.config.hidden_size
    hs = list(state.unbind(1))
    ys = []
    for t in range(x.shape[1]):
        inp = x[:, t]
        for i, layer in enumerate(model.layers):
            h = hs[i]
            if name == "gru3":
                z = torch.sigmoid(layer.gate_bias[:n])
                r = torch.sigmoid(layer.gate_bias[n:])
            else:
                uz, ur = layer.gate_weight_hh[:n], layer.gate_weight_hh[n:]
                bz = layer.gate_bias[:n] if name in ("gru0", "gru1") else 0.0
                br = layer.gate_bias[n:] if name in ("gru0", "gru1") else 0.0
                wz = inp @ layer.gate_weight_ih[:n].T if name == "gru0" else 0.0  # GRU0's gates read x_t
                wr = inp @ layer.gate_weight_ih[n:].T if name == "gru0" else 0.0
                z = torch.sigmoid(wz + h @ uz.T + bz)
                r = torch.sigmoid(wr + h @ ur.T + br)
            h_cand = torch.tanh(inp @ layer.weight_ih.T + (r * h) @ layer.weight_hh.T + layer.bias)
            hs[i] = (1 - z) * h + z * h_cand
            inp = hs[i]
        ys.append(inp @ model.readout.weight.T + model.readout.bias)
    return torch.stack(ys, 1), torch.stack(hs, 1)


def _naive_indrnn(model: models.MemoryModel, x: torch.Tensor, state: torch.Tensor):
    """Per-step loop of h_t = ReLU(W x_t + u ⊙ h_{t-1} + b)."""
    hs = list(state.unbind(1))
    ys = []
    for t in range(x.shape[1]):
        inp = x[:, t]
        for i, layer in enumerate(model.layers):
            hs[i] = torch.relu(inp @ layer.weight_ih.T + layer.weight_hh * hs[i] + layer.bias)
            inp = hs[i]
        ys.append(inp @ model.readout.weight.T + model.readout.bias)
    return torch.stack(ys, 1), torch.stack(hs, 1)


@pytest.mark.parametrize("name", (*GRU_VARIANTS, "indrnn"))
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fast_forward_matches_naive_loop(name: str, dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    model = models.build_model(name, 4, 3, hidden_size=6, num_layers=2).to(dtype)
    if name == "indrnn":  # give some units a negative u, and start some pre-activations below 0
        with torch.no_grad():
            model.layers[0].weight_hh.uniform_(-1.0, 1.0)
            model.layers[0].bias.uniform_(-0.5, 0.5)
    naive = _naive_indrnn if name == "indrnn" else _naive_gru_variant
    x = torch.randn(5, 7, 4, generator=_gen(1), dtype=dtype).requires_grad_()
    h0 = (0.5 * torch.randn(5, 2, 6, generator=_gen(2), dtype=dtype)).abs().requires_grad_()
    wy = torch.randn(5, 7, 3, generator=_gen(3), dtype=dtype)
    wh = torch.randn(5, 2, 6, generator=_gen(4), dtype=dtype)
    leaves = [x, h0, *model.parameters()]

    results = []
    for run in (model.forward, lambda a, b: naive(model, a, b)):
        y, h = run(x, h0)
        grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), leaves)
        results.append((y, h, grads))
    (y1, h1, g1), (y2, h2, g2) = results
    torch.testing.assert_close(y1, y2, rtol=tol, atol=tol)
    torch.testing.assert_close(h1, h2, rtol=tol, atol=tol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# --- the state contract ----------------------------------------------------------------------

@pytest.mark.parametrize("name", (*GRU_VARIANTS, "indrnn", "esn"))
def test_split_sequence_equals_whole(name: str) -> None:
    torch.manual_seed(0)
    size = {"reservoir_size": 50} if name == "esn" else {"hidden_size": 8}
    model = models.build_model(name, 3, 2, **size)
    x = torch.randn(4, 9, 3, generator=_gen(5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    y, s = model(x)
    y1, s1 = model(x[:, :4])
    y2, s2 = model(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, s, rtol=1e-5, atol=1e-5)
    assert y.shape == (4, 9, 2)
    for k, v in model.state_dict().items():  # forward mutates nothing
        assert torch.equal(v, before[k]), k


# --- IndRNN ----------------------------------------------------------------------------------

def test_indrnn_initialisation_ranges() -> None:
    t_max = 20
    model = models.build_model("indrnn", 3, 2, hidden_size=500, num_layers=3, t_max=t_max)
    high, low = 2 ** (1 / t_max), 2 ** (-1 / t_max)
    for layer in model.layers[:-1]:
        u = layer.weight_hh
        assert u.min() >= 0 and u.max() <= high and u.min() < low  # U(0, 2^(1/T))
    u = model.layers[-1].weight_hh
    assert u.min() >= low and u.max() <= high  # U(2^(-1/T), 2^(1/T))


@pytest.mark.parametrize("u_max", [None, 0.5])
def test_indrnn_clip_holds_after_optimizer_steps(u_max: float | None) -> None:
    torch.manual_seed(0)
    t_max = 10
    model = models.build_model("indrnn", 3, 2, hidden_size=16, t_max=t_max, u_max=u_max)
    bound = 2 ** (1 / t_max) if u_max is None else u_max
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    x = torch.rand(8, 12, 3, generator=_gen(6))
    for step in range(4):
        y, _ = model(x)
        loss = -y.sum() if step % 2 == 0 else y.sum()  # push u hard both ways
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_optimizer_step()
        for layer in model.layers:
            assert layer.weight_hh.abs().max().item() <= bound
    assert any((layer.weight_hh.abs() == bound).any() for layer in model.layers)  # the clip was active


def test_indrnn_declares_t_max_hint() -> None:
    assert models.MODELS.get("indrnn").task_hints == ("t_max",)


# --- ESN -------------------------------------------------------------------------------------

def _echo_batch(batch: int, steps: int, bits: int, seed: int) -> Batch:
    """y(t) = u(t-1): a one-step-delayed echo of random bits; step 0 is not scored."""
    u = _bits((batch, steps, bits), seed)
    targets = torch.zeros_like(u)
    targets[:, 1:] = u[:, :-1]
    mask = torch.ones(batch, steps, dtype=torch.bool)
    mask[:, 0] = False
    return Batch(u, targets, mask, torch.full((batch,), steps))


def _scored(b: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return b.inputs, b.targets, b.mask


@pytest.mark.parametrize("rho", [0.8, 1.1])
def test_esn_spectral_radius_is_exact(rho: float) -> None:
    model = models.build_model("esn", 3, 2, reservoir_size=150, spectral_radius=rho, seed=3)
    w = model.weight_hh.double()
    assert abs(torch.linalg.eigvals(w).abs().max().item() - rho) < 1e-4
    assert ((w != 0).sum(1) == model.config.connectivity).all()  # 10 incoming connections per unit


def test_esn_only_readout_trainable_and_seeded() -> None:
    rng = torch.random.get_rng_state()
    a = models.build_model("esn", 3, 2, reservoir_size=40)
    b = models.build_model("esn", 3, 2, reservoir_size=40)
    c = models.build_model("esn", 3, 2, reservoir_size=40, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng)  # the global RNG is never touched
    assert [n for n, p in a.named_parameters() if p.requires_grad] == ["readout.weight", "readout.bias"]
    assert {n for n, _ in a.named_buffers()} == {"weight_hh", "weight_ih"}
    assert a.param_counts()[0] == (1 + 3 + 40) * 2 == ESN.count_params(3, 2, a.config)
    assert torch.equal(a.weight_hh, b.weight_hh) and not torch.equal(a.weight_hh, c.weight_hh)
    w_in = a.weight_ih
    assert w_in.shape == (40, 4) and w_in.abs().max() <= a.config.input_scaling


def test_ridge_readout_matches_lstsq() -> None:
    g = _gen(7)
    X = torch.randn(300, 12, generator=g, dtype=torch.float64)
    Z = torch.randn(300, 3, generator=g, dtype=torch.float64)
    for beta in (1e-3, 1.0, 30.0):  # the augmented system [X; √β I] w = [Z; 0]
        aug_x = torch.cat([X, math.sqrt(beta) * torch.eye(12, dtype=X.dtype)])
        aug_z = torch.cat([Z, torch.zeros(12, 3, dtype=Z.dtype)])
        expected = torch.linalg.lstsq(aug_x, aug_z).solution.T
        torch.testing.assert_close(ridge_readout(X.T @ X, Z.T @ X, beta), expected, rtol=1e-9, atol=1e-9)
    plain = torch.linalg.lstsq(X, Z).solution.T  # β → 0
    torch.testing.assert_close(ridge_readout(X.T @ X, Z.T @ X, 1e-12), plain, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_esn_fit_equals_lstsq_on_collected_states(loss: str) -> None:
    beta = 1e-2
    model = models.build_model("esn", 2, 2, reservoir_size=60, ridge_grid=(beta,))
    train = [_echo_batch(16, 10, 2, seed) for seed in (10, 11, 12)]
    result = model.fit((_scored(b) for b in train), _scored(_echo_batch(16, 10, 2, 13)), loss)
    rows, targets = zip(*(model.extended_states(*_scored(b)) for b in train))
    X, Y = torch.cat(rows).double(), torch.cat(targets).double()
    Z = 4.0 * (2 * Y - 1) if loss == "bce" else Y
    d = X.shape[1]
    aug_x = torch.cat([X, math.sqrt(beta) * torch.eye(d, dtype=X.dtype)])
    aug_z = torch.cat([Z, torch.zeros(d, 2, dtype=Z.dtype)])
    w = torch.linalg.lstsq(aug_x, aug_z).solution.T.float()
    torch.testing.assert_close(model.readout.bias, w[:, 0], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(model.readout.weight, w[:, 1:], rtol=1e-3, atol=1e-4)
    assert result["states"] == X.shape[0] == 3 * 16 * 9
    assert result["ridge"] == beta


def test_esn_fit_picks_best_beta_and_solves_delayed_echo() -> None:
    model = models.build_model("esn", 3, 3, reservoir_size=100)
    train = (_scored(_echo_batch(32, 20, 3, seed)) for seed in range(4))  # a generator: read once
    val = _echo_batch(32, 20, 3, 100)
    result = model.fit(train, _scored(val), "bce")
    assert result["ridge"] in model.config.ridge_grid
    y, _ = model(val.inputs)
    assert result["val_loss"] == pytest.approx(F.binary_cross_entropy_with_logits(
        y[val.mask], val.targets[val.mask]).item(), rel=1e-4)
    test = _echo_batch(64, 30, 3, 200)
    y, _ = model(test.inputs)
    errors = ((y > 0).float() != test.targets)[test.mask].float().mean().item()
    assert errors < 0.01

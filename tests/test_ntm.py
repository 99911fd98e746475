"""The Neural Turing Machine: memory operations, their hand-written backward passes, and the model.

Every memory operation gets exact small cases and a check against a plain Python loop over
batch, heads and slots; every backward pass is checked against autograd of the forward; the
whole model (forward and gradients) against a step loop written here from the equations.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import memtasks
import memtasks.models as models
from memtasks.models.ntm import NTM, NTMConfig, NTMState
from memtasks.models.ntm import cpu_kernel as ntm_kernel
from memtasks.models.ntm import memory as mem
from memtasks.models.ntm import vjp
from memtasks.models.ntm.controller import lstm_cell, lstm_cell_backward, lstm_coefficients

D = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(*shape: int, seed: int = 0, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=_gen(seed), dtype=D) * (hi - lo) + lo


def _simplex(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(*shape, generator=_gen(seed), dtype=D), dim=-1)


# --- naive references: loops over batch, heads and slots ---------------------------------


def naive_cosine(keys: torch.Tensor, memory: torch.Tensor, eps: float = mem.COSINE_EPS) -> torch.Tensor:
    b, h, n = keys.shape[0], keys.shape[1], memory.shape[1]
    out = torch.zeros(b, h, n, dtype=keys.dtype)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                k, row = keys[bi, hi], memory[bi, i]
                dot = sum(float(k[j]) * float(row[j]) for j in range(k.shape[0]))
                nk = math.sqrt(sum(float(v) ** 2 for v in k))
                nm = math.sqrt(sum(float(v) ** 2 for v in row))
                out[bi, hi, i] = dot / (max(nk, eps) * max(nm, eps))
    return out


def naive_softmax(v: list[float]) -> list[float]:
    top = max(v)
    e = [math.exp(x - top) for x in v]
    return [x / sum(e) for x in e]


def naive_content(keys: torch.Tensor, beta: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    sim = naive_cosine(keys, memory)
    out = torch.zeros_like(sim)
    for bi in range(sim.shape[0]):
        for hi in range(sim.shape[1]):
            out[bi, hi] = torch.tensor(naive_softmax([float(beta[bi, hi]) * float(s) for s in sim[bi, hi]]), dtype=D)
    return out


def naive_shift(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """w̃(i) = Σ_j w(j) s(i - j), s given on offsets -R..R (zero elsewhere)."""
    b, h, n = w.shape
    r = s.shape[-1] // 2
    out = torch.zeros_like(w)
    for bi in range(b):
        for hi in range(h):
            for i in range(n):
                total = 0.0
                for j in range(n):
                    off = (i - j) % n
                    off = off - n if off > n // 2 else off  # signed offset in (-n/2, n/2]
                    if -r <= off <= r:
                        total += float(w[bi, hi, j]) * float(s[bi, hi, off + r])
                out[bi, hi, i] = total
    return out


def naive_sharpen(w: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(w)
    for bi in range(w.shape[0]):
        for hi in range(w.shape[1]):
            powered = [float(v) ** float(gamma[bi, hi]) for v in w[bi, hi]]
            out[bi, hi] = torch.tensor([p / sum(powered) for p in powered], dtype=D)
    return out


def naive_read(memory: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    b, r, n, m = w.shape[0], w.shape[1], memory.shape[1], memory.shape[2]
    out = torch.zeros(b, r, m, dtype=D)
    for bi in range(b):
        for hi in range(r):
            for j in range(m):
                out[bi, hi, j] = sum(float(w[bi, hi, i]) * float(memory[bi, i, j]) for i in range(n))
    return out


def naive_write(memory: torch.Tensor, w: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Erase of every head, then add of every head, slot by slot."""
    out = memory.clone()
    b, heads, n, m = w.shape[0], w.shape[1], memory.shape[1], memory.shape[2]
    for bi in range(b):
        for hi in range(heads):
            for i in range(n):
                for j in range(m):
                    out[bi, i, j] = out[bi, i, j] * (1 - float(w[bi, hi, i]) * float(erase[bi, hi, j]))
        for hi in range(heads):
            for i in range(n):
                for j in range(m):
                    out[bi, i, j] = out[bi, i, j] + float(w[bi, hi, i]) * float(add[bi, hi, j])
    return out


# --- exact small cases --------------------------------------------------------------------


def test_content_addressing_focuses_on_the_matching_row():
    memory = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]], dtype=D)
    keys = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, -1.0]]], dtype=D)  # matches row 1; opposes row 2
    w = mem.content_weighting(keys, torch.tensor([[100.0, 100.0]], dtype=D), memory)
    assert w[0, 0].argmax() == 1 and w[0, 0, 1] > 0.999
    assert w[0, 1, 2] < 1e-30  # cosine -1 is the least similar row
    uniform = mem.content_weighting(keys, torch.zeros(1, 2, dtype=D), memory)
    torch.testing.assert_close(uniform, torch.full_like(uniform, 0.25))


def test_zero_key_and_zero_memory_row_are_finite():
    memory = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=D, requires_grad=True)
    keys = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]], dtype=D, requires_grad=True)
    beta = torch.tensor([[5.0, 5.0]], dtype=D, requires_grad=True)
    w = mem.content_weighting(keys, beta, memory)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[0, 0], torch.full((3,), 1 / 3, dtype=D))  # zero key: no preference
    assert w[0, 1].argmax() == 1
    w.pow(2).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (memory, keys, beta))
    assert torch.isfinite(mem.address(
        keys, beta, torch.full((1, 2), 0.5, dtype=D), torch.full((1, 2, 3), 1 / 3, dtype=D),
        torch.full((1, 2), 30.0, dtype=D), torch.zeros(1, 2, 3, dtype=D), memory
    )).all()


def test_shift_one_hot_plus_one_rotates_by_one():
    w = _simplex(2, 3, 7)
    s = torch.zeros(2, 3, 3, dtype=D)
    s[..., 2] = 1.0  # offsets (-1, 0, +1): all mass on +1
    torch.testing.assert_close(mem.shift(w, s), torch.roll(w, 1, dims=-1))
    s = torch.zeros(2, 3, 5, dtype=D)
    s[..., 0] = 1.0  # offsets -2..2: all mass on -2
    torch.testing.assert_close(mem.shift(w, s), torch.roll(w, -2, dims=-1))
    s = torch.zeros(2, 3, 3, dtype=D)
    s[..., 1] = 1.0
    torch.testing.assert_close(mem.shift(w, s), w)


def test_sharpening():
    w = torch.tensor([[[0.1, 0.5, 0.3, 0.1]]], dtype=D)
    torch.testing.assert_close(mem.sharpen(w, torch.ones(1, 1, dtype=D)), w)
    sharp = mem.sharpen(w, torch.full((1, 1), 50.0, dtype=D))
    assert sharp[0, 0, 1] > 1 - 1e-10
    torch.testing.assert_close(mem.sharpen(w, torch.full((1, 1), 2.0, dtype=D)), w**2 / (w**2).sum())
    zero = torch.tensor([[[0.0, 0.7, 0.3, 0.0]]], dtype=D, requires_grad=True)
    out = mem.sharpen(zero, torch.full((1, 1), 3.0, dtype=D))
    assert torch.isfinite(out).all() and out[0, 0, 0] < 1e-40
    out[0, 0, 1].backward()
    assert torch.isfinite(zero.grad).all()


def test_erase_and_add_on_a_hand_made_memory():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], dtype=D)
    w = torch.tensor([[[0.5, 0.0, 1.0]]], dtype=D)
    erase = torch.tensor([[[1.0, 0.5]]], dtype=D)
    add = torch.tensor([[[10.0, -2.0]]], dtype=D)
    expected = torch.tensor(
        [[[1 * 0.5 + 5, 2 * 0.75 - 1], [3.0, 4.0], [5 * 0 + 10, 6 * 0.5 - 2]]], dtype=D
    )
    torch.testing.assert_close(mem.write(memory, w, erase, add), expected)
    torch.testing.assert_close(mem.read(expected, w), torch.tensor([[[0.5 * 5.5 + 10.0, 0.5 * 0.5 + 1.0]]], dtype=D))
    # two heads: both erases (they multiply), then both adds
    w2 = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=D)
    e2 = torch.tensor([[[0.5, 0.0], [0.5, 1.0]]], dtype=D)
    a2 = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]], dtype=D)
    out = mem.write(memory, w2, e2, a2)
    torch.testing.assert_close(out[0, 0], torch.tensor([1 * 0.25 + 3, 2 * 0.0 + 1], dtype=D))
    torch.testing.assert_close(out[0, 1:], memory[0, 1:])


# --- vectorised against loops ---------------------------------------------------------------


def test_ops_equal_naive_loops():
    b, h, n, m = 2, 3, 7, 4
    keys, memory = _rand(b, h, m, seed=1), _rand(b, n, m, seed=2)
    memory[1, 3] = 0.0  # a zero row
    keys[0, 2] = 0.0  # a zero key
    beta = _rand(b, h, seed=3, lo=0.0, hi=5.0)
    torch.testing.assert_close(mem.cosine_similarity(keys, memory), naive_cosine(keys, memory))
    torch.testing.assert_close(mem.content_weighting(keys, beta, memory), naive_content(keys, beta, memory))
    w_c, w_prev, gate = _simplex(b, h, n, seed=4), _simplex(b, h, n, seed=5), _rand(b, h, seed=6, lo=0, hi=1)
    naive_interp = torch.stack(
        [torch.stack([gate[i, j] * w_c[i, j] + (1 - gate[i, j]) * w_prev[i, j] for j in range(h)]) for i in range(b)]
    )
    torch.testing.assert_close(mem.interpolate(w_c, w_prev, gate), naive_interp)
    for shifts in (1, 3, 5):
        s = _simplex(b, h, shifts, seed=7)
        torch.testing.assert_close(mem.shift(w_c, s), naive_shift(w_c, s))
    gamma = _rand(b, h, seed=8, lo=1.0, hi=6.0)
    torch.testing.assert_close(mem.sharpen(w_c, gamma), naive_sharpen(w_c, gamma))
    w = _simplex(b, 2, n, seed=9)
    torch.testing.assert_close(mem.read(memory, w), naive_read(memory, w))
    for heads in (1, 3):
        ww = _simplex(b, heads, n, seed=10)
        e, a = _rand(b, heads, m, seed=11, lo=0, hi=1), _rand(b, heads, m, seed=12)
        torch.testing.assert_close(mem.write(memory, ww, e, a), naive_write(memory, ww, e, a))


# --- hand-written backward passes against autograd -----------------------------------------


def _autograd(fn, inputs, grad_out):
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return torch.autograd.grad(out, leaves, grad_out)


@pytest.mark.parametrize("zero_rows", [False, True])
def test_content_backward_matches_autograd(zero_rows):
    b, h, n, m = 2, 3, 6, 4
    keys, memory, beta = _rand(b, h, m, seed=1), _rand(b, n, m, seed=2), _rand(b, h, seed=3, lo=0, hi=4)
    if zero_rows:
        keys[1, 0] = 0.0
        memory[0, 2] = 0.0
    g = _rand(b, h, n, seed=4)
    got = vjp.content_weighting_backward(g, keys, beta, memory)
    for got_i, want_i in zip(got, _autograd(mem.content_weighting, (keys, beta, memory), g)):
        torch.testing.assert_close(got_i, want_i)


def test_addressing_backwards_match_autograd():
    b, h, n = 2, 3, 7
    w_c, w_prev, gate = _simplex(b, h, n, seed=1), _simplex(b, h, n, seed=2), _rand(b, h, seed=3, lo=0, hi=1)
    g = _rand(b, h, n, seed=4)
    for got, want in zip(vjp.interpolate_backward(g, w_c, w_prev, gate), _autograd(mem.interpolate, (w_c, w_prev, gate), g)):
        torch.testing.assert_close(got, want)
    for shifts in (1, 3, 5):
        s = _simplex(b, h, shifts, seed=5)
        for got, want in zip(vjp.shift_backward(g, w_c, s), _autograd(mem.shift, (w_c, s), g)):
            torch.testing.assert_close(got, want)
    w_t = w_c.clone()
    w_t[0, 0, 3] = 0.0  # a clamped entry
    gamma = _rand(b, h, seed=6, lo=1, hi=5)
    for got, want in zip(vjp.sharpen_backward(g, w_t, gamma), _autograd(mem.sharpen, (w_t, gamma), g)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("heads", [1, 2, 3])
def test_read_write_backwards_match_autograd(heads):
    b, n, m = 2, 5, 3
    memory, w = _rand(b, n, m, seed=1), _simplex(b, heads, n, seed=2)
    erase, add = _rand(b, heads, m, seed=3, lo=0, hi=1), _rand(b, heads, m, seed=4)
    erase[0, 0, 1] = 1.0  # a factor 1 - w e may reach 0 only if w = 1 too; make it exact
    w[0, 0] = 0.0
    w[0, 0, 2] = 1.0
    g = _rand(b, n, m, seed=5)
    got = vjp.write_backward(g, memory, w, erase, add)
    for got_i, want_i in zip(got, _autograd(mem.write, (memory, w, erase, add), g)):
        torch.testing.assert_close(got_i, want_i)
    g_r = _rand(b, heads, m, seed=6)
    got = vjp.read_backward(g_r, w, memory)
    for got_i, want_i in zip(got, _autograd(lambda ww, mm: mem.read(mm, ww), (w, memory), g_r)):
        torch.testing.assert_close(got_i, want_i)


def test_lstm_cell_backward_matches_autograd():
    b, h = 3, 4
    gates, c_prev = _rand(b, 4 * h, seed=1, lo=-2, hi=2), _rand(b, h, seed=2)
    g_h, g_c = _rand(b, h, seed=3), _rand(b, h, seed=4)
    out, c, sig, g, tanh_c = lstm_cell(gates, c_prev)
    coef = lstm_coefficients(*(x.unsqueeze(0) for x in (sig, g, tanh_c, c_prev, out)))
    got = lstm_cell_backward(g_h, g_c, coef.gates[0], coef.o_dtanh[0], coef.f[0])
    leaves = [gates.clone().requires_grad_(), c_prev.clone().requires_grad_()]
    h2, c2, *_ = lstm_cell(*leaves)
    want = torch.autograd.grad((h2 * g_h).sum() + (c2 * g_c).sum(), leaves)
    for got_i, want_i in zip(got, want):
        torch.testing.assert_close(got_i, want_i)


# --- the whole model against a reference step loop ------------------------------------------


def reference_ntm(model: NTM, x: torch.Tensor, return_state: bool = False):
    """A straightforward NTM written from the equations, with the model's parameters.

    Heads are handled one at a time, the shift by torch.roll per offset, sharpening in the
    paper's power form, the LSTM gates by name.
    """
    cfg = model.config
    b, steps, _ = x.shape
    hid, m = cfg.hidden_size, cfg.memory_width
    n_r, n_w, rng = cfg.read_heads, cfg.write_heads, cfg.shift_range
    heads = n_r + n_w
    state = model.initial_state(b)
    h, c = state.controller
    memory = state.memory
    w_prev = [state.read_weights[:, i] for i in range(n_r)] + [state.write_weights[:, i] for i in range(n_w)]
    reads = [state.reads[:, i] for i in range(n_r)]
    sizes = [heads * m, 3 * heads, heads * (2 * rng + 1), n_w * m, n_w * m]  # keys, (β̂, γ̂, ĝ) per head, ŝ, ê, â
    ys = []
    for t in range(steps):
        pre = torch.cat([x[:, t]] + reads, -1) @ torch.cat((model.w_x, model.w_r), 1).T + model.bias
        if cfg.controller == "lstm":
            pre = pre + h @ model.w_h.T
            i_g, f_g, o_g = (torch.sigmoid(pre[:, k * hid : (k + 1) * hid]) for k in range(3))
            c = f_g * c + i_g * torch.tanh(pre[:, 3 * hid :])
            out = o_g * torch.tanh(c)
            h = out
        else:
            out = torch.tanh(pre)
        p = out @ model.w_p.T + model.b_p
        keys, scalars, shift_hat, erase_hat, add_hat = torch.split(p, sizes, dim=1)
        beta_hat, gamma_hat, gate_hat = scalars[:, 0::3], scalars[:, 1::3], scalars[:, 2::3]
        ws = []
        for k in range(heads):
            key = keys[:, k * m : (k + 1) * m]
            beta = F.softplus(beta_hat[:, k : k + 1])
            dots = (memory * key.unsqueeze(1)).sum(-1)
            norms = key.norm(dim=-1, keepdim=True).clamp_min(1e-8) * memory.norm(dim=-1).clamp_min(1e-8)
            w_c = torch.softmax(beta * dots / norms, dim=-1)
            g = torch.sigmoid(gate_hat[:, k : k + 1])
            w_g = g * w_c + (1 - g) * w_prev[k]
            s = torch.softmax(shift_hat[:, k * (2 * rng + 1) : (k + 1) * (2 * rng + 1)], dim=-1)
            w_s = sum(s[:, j : j + 1] * torch.roll(w_g, j - rng, dims=-1) for j in range(2 * rng + 1))
            gamma = 1 + F.softplus(gamma_hat[:, k : k + 1])
            powered = w_s**gamma
            ws.append(powered / powered.sum(-1, keepdim=True))
        reads = [(ws[k].unsqueeze(-1) * memory).sum(1) for k in range(n_r)]
        keep = torch.ones_like(memory)
        added = torch.zeros_like(memory)
        for k in range(n_w):
            wk = ws[n_r + k].unsqueeze(-1)
            e = torch.sigmoid(erase_hat[:, k * m : (k + 1) * m]).unsqueeze(1)
            a = add_hat[:, k * m : (k + 1) * m]
            a = torch.tanh(a) if cfg.add_activation == "tanh" else a
            keep = keep * (1 - wk * e)
            added = added + wk * a.unsqueeze(1)
        memory = memory * keep + added
        w_prev = ws
        ys.append(torch.cat([out] + reads, -1) @ model.w_y.T + model.b_y)
    if return_state:
        final = {"memory": memory, "reads": torch.stack(reads, 1), "c": c, "read_weights": torch.stack(ws[:n_r], 1)}
        return torch.stack(ys, 1), final
    return torch.stack(ys, 1)


SMALL = {"hidden_size": 12, "memory_slots": 9, "memory_width": 5}
CONFIGS = [
    {},
    {"read_heads": 2, "write_heads": 2, "shift_range": 2},
    {"controller": "feedforward", "add_activation": "linear"},
    {"memory_init": "learned", "read_heads": 2},
    {"memory_init": "random", "shift_range": 0},
]


def _small_model(seed: int = 0, **overrides) -> NTM:
    torch.manual_seed(seed)
    model = models.build_model("ntm", 4, 3, **{**SMALL, **overrides}).to(D)
    with torch.no_grad():  # nonzero read bias, so its gradient path is exercised too
        model.read_init.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_fused_forward_and_gradients_equal_reference(overrides):
    model = _small_model(**overrides)
    x = torch.randn(3, 8, 4, generator=_gen(1), dtype=D, requires_grad=True)
    weights = torch.randn(3, 8, 3, generator=_gen(2), dtype=D)
    y, _ = model(x)
    y_ref = reference_ntm(model, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    params = [p for p in model.parameters()]
    got = torch.autograd.grad((y * weights).sum(), [x] + params)
    want = torch.autograd.grad((y_ref * weights).sum(), [x] + params)
    for name, g1, g2 in zip(["x"] + [n for n, _ in model.named_parameters()], got, want):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5, msg=lambda s: f"gradient of {name}: {s}")


def test_gradients_through_the_final_state_equal_reference():
    model = _small_model(read_heads=2)
    x = torch.randn(2, 5, 4, generator=_gen(1), dtype=D)
    _, state = model(x)
    _, ref = reference_ntm(model, x, return_state=True)
    assert set(ref) == {"memory", "reads", "c", "read_weights"}

    def loss(st: dict) -> torch.Tensor:
        return st["memory"].pow(2).sum() + st["reads"].sum() + st["c"].sum() + st["read_weights"][..., 1].sum()

    mine = {"memory": state.memory, "reads": state.reads, "c": state.controller.c, "read_weights": state.read_weights}
    for k in ref:
        torch.testing.assert_close(mine[k], ref[k])
    params = [p for name, p in model.named_parameters() if name not in ("w_y", "b_y")]  # not the readout
    for g1, g2 in zip(torch.autograd.grad(loss(mine), params), torch.autograd.grad(loss(ref), params)):
        torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


# --- the C kernel path (float32 on CPU, one write head) against the reference and the PyTorch path ---

needs_kernel = pytest.mark.skipif(ntm_kernel.LIBRARY.load() is None, reason="no C compiler: the kernels cannot be built")
KERNEL_CONFIGS = [c for c in CONFIGS if c.get("write_heads", 1) == 1] + [{"read_heads": 3, "shift_range": 2}]


def _pair(**overrides) -> tuple[NTM, NTM]:
    """The same float32 NTM twice: the C kernel path and the PyTorch path."""
    fast = _small_model(**overrides).float()
    slow = models.build_model("ntm", 4, 3, cpu_kernel=False, **{**SMALL, **overrides})
    slow.load_state_dict(fast.state_dict())
    return fast, slow


@needs_kernel
@pytest.mark.parametrize("overrides", KERNEL_CONFIGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_kernel_forward_and_gradients_equal_reference(overrides, monkeypatch):
    fast, _ = _pair(**overrides)
    used = []
    real = ntm_kernel.kernel_for
    monkeypatch.setattr(ntm_kernel, "kernel_for", lambda *a: used.append(1) or real(*a))
    reference = fast.double()  # the reference loop in float64, with the same parameters
    x64 = torch.randn(3, 11, 4, generator=_gen(1), dtype=torch.float64)
    weights = torch.randn(3, 11, 3, generator=_gen(2), dtype=torch.float64)
    y_ref = reference_ntm(reference, x64.requires_grad_())
    want = torch.autograd.grad((y_ref * weights).sum(), [x64] + list(reference.parameters()))
    fast = reference.float()
    x = x64.detach().float().requires_grad_()
    y, _ = fast(x)
    assert used and ntm_kernel.kernel_for(x, fast.config.write_heads) is not None
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5)
    got = torch.autograd.grad((y * weights.float()).sum(), [x] + list(fast.parameters()))
    names = ["x"] + [n for n, _ in fast.named_parameters()]
    for name, g1, g2 in zip(names, got, want):
        scale = max(1.0, g2.abs().max().item())
        err = (g1.double() - g2).abs().max().item()
        assert err <= 2e-5 * scale, f"gradient of {name}: max error {err:.2e} (scale {scale:.2g})"


@needs_kernel
@pytest.mark.parametrize("overrides", [{}, {"read_heads": 2, "controller": "feedforward", "add_activation": "linear"}])
def test_kernel_state_gradients_equal_torch_path(overrides):
    """Gradients through every part of the final state and into the initial one, kernel vs PyTorch path."""
    results = []
    for model in _pair(memory_init="learned", **overrides):
        x = torch.randn(2, 9, 4, generator=_gen(5))
        state = model.initial_state(2)
        w0 = state.read_weights.clone().requires_grad_()
        y, final = model(x, state._replace(read_weights=w0))
        loss = (y.pow(2).sum() + final.memory.pow(2).sum() + final.reads.sum() + final.read_weights[..., 2].sum()
                + final.write_weights[..., 1].sum() + final.controller.c.sum() + final.controller.h.sum())
        params = [w0] + list(model.parameters())
        results.append((y.detach(), final, torch.autograd.grad(loss, params)))
    (y1, s1, g1), (y2, s2, g2) = results
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s1.memory, s2.memory, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_kernel_graphs_alive_together_keep_their_own_buffers():
    """A training forward's records are views of a pooled arena (kernel_sequence.POOL), reused only once the
    graph that leased it is gone: three graphs alive at once (more than the pool's two arenas), with an
    evaluation forward between them, then their backwards in another order, give the PyTorch path's gradients."""
    fast, slow = _pair(read_heads=2)
    xs = [torch.randn(2, steps, 4, generator=_gen(30 + steps)) for steps in (6, 9, 5)]
    losses = []
    for x in xs:
        y, final = fast(x)
        with torch.no_grad():
            fast(x[:, :2])
        losses.append(y.pow(2).sum() + final.memory.pow(2).sum())
    for i in (1, 2, 0):
        got = torch.autograd.grad(losses[i], list(fast.parameters()))
        y, final = slow(xs[i])
        want = torch.autograd.grad(y.pow(2).sum() + final.memory.pow(2).sum(), list(slow.parameters()))
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_kernel
def test_kernel_no_grad_forward_equals_training_forward():
    fast, _ = _pair(read_heads=2)
    x = torch.randn(2, 7, 4, generator=_gen(4))
    y, s = fast(x)
    with torch.no_grad():
        y2, s2 = fast(x)
    torch.testing.assert_close(y, y2, rtol=0, atol=0)
    for a, b in zip(s, s2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_state_of_the_wrong_shape_is_refused_on_both_paths():
    for model in _pair():
        state = model.initial_state(2)
        with pytest.raises(ValueError, match="memory"):
            model(torch.randn(2, 3, 4), state._replace(memory=state.memory[:, :, :1]))
        with pytest.raises(ValueError, match="state.read_weights"):
            model(torch.randn(2, 3, 4), state._replace(read_weights=state.read_weights[:1]))


def test_kernel_applies_only_where_it_is_exact():
    x32, x64 = torch.zeros(1, 1, 4), torch.zeros(1, 1, 4, dtype=torch.float64)
    assert ntm_kernel.kernel_for(x64, 1) is None  # float64: the PyTorch path
    assert ntm_kernel.kernel_for(x32, 2) is None  # two write heads: the PyTorch path
    with pytest.raises(ValueError, match="cpu_kernel"):
        models.model_config("ntm", cpu_kernel="yes")


def test_missing_compiler_falls_back_to_torch(monkeypatch):
    def fail(compiler):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(ntm_kernel.LIBRARY, "_state", {})
    monkeypatch.setattr(ntm_kernel.LIBRARY, "_build", fail)
    assert ntm_kernel.LIBRARY.load() is None
    model = models.build_model("ntm", 4, 3, **SMALL)
    y, _ = model(torch.randn(2, 3, 4))
    y.sum().backward()
    assert y.shape == (2, 3, 3) and model.w_p.grad is not None


# --- the contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, {"controller": "feedforward"}])
def test_chunked_forward_equals_whole(overrides):
    model = _small_model(**overrides)
    x = torch.randn(2, 9, 4, generator=_gen(3), dtype=D)
    y, state = model(x)
    y1, s1 = model(x[:, :4])
    y2, s2 = model(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y)
    for a, b in zip(models.base._tensors(state), models.base._tensors(s2)):
        torch.testing.assert_close(a, b)
    # gradients flow across the chunk boundary
    g_whole = torch.autograd.grad(y.sum(), list(model.parameters()))
    y1, s1 = model(x[:, :4])
    y2, _ = model(x[:, 4:], s1)
    g_chunks = torch.autograd.grad(y1.sum() + y2.sum(), list(model.parameters()))
    for a, b in zip(g_whole, g_chunks):
        torch.testing.assert_close(a, b)


def test_forward_leaves_the_module_unchanged_and_memory_is_state():
    model = _small_model(memory_init="random")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = dict(vars(model))
    x = torch.randn(2, 6, 4, generator=_gen(4), dtype=D)
    y, state = model(x)
    y.sum().backward()
    with torch.no_grad():
        model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert set(vars(model)) == set(attrs)
    assert isinstance(state, NTMState)
    assert state.memory.shape == (2, 9, 5) and state.read_weights.shape == (2, 1, 9)
    assert state.write_weights.shape == (2, 1, 9) and state.reads.shape == (2, 1, 5)
    assert not torch.allclose(state.memory, model.initial_state(2).memory)
    assert model.state_size() == 2 * 12 + 9 * 5 + 9 + 9 + 5
    y0, _ = model(x[:, :0])
    assert y0.shape == (2, 0, 3)


def test_no_grad_forward_equals_training_forward():
    model = _small_model(read_heads=2, write_heads=2)
    x = torch.randn(2, 6, 4, generator=_gen(4), dtype=D)
    y, s = model(x)
    with torch.no_grad():
        y2, s2 = model(x)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(s.memory, s2.memory)


def test_config_validation_and_budget():
    with pytest.raises(TypeError, match="memory_slot"):
        models.model_config("ntm", memory_slot=4)
    for bad in ({"controller": "gru"}, {"shift_range": 64}, {"memory_init": "zeros"}, {"read_heads": 0},
                {"memory_width": 0}, {"add_activation": "relu"}):
        with pytest.raises(ValueError):
            NTMConfig(**bad)
    for overrides in CONFIGS:
        cfg = NTMConfig(**{**SMALL, **overrides})
        model = NTM(9, 8, cfg)
        assert NTM.count_params(9, 8, cfg) == model.param_counts()[0]
    model = models.build_model("ntm", 9, 8, param_budget=60_000)
    assert abs(model.budget_info["relative_error"]) < 0.05
    assert model.budget_info["knob"] == "hidden_size"


def test_two_models_share_no_storage():
    a, b = models.build_model("ntm", 9, 8), models.build_model("ntm", 9, 8, memory_init="learned")
    ptrs = {p.data_ptr() for p in a.parameters()}
    assert not ptrs & {p.data_ptr() for p in b.parameters()}


# --- learning ---------------------------------------------------------------------------------


def test_learns_short_copy():
    torch.manual_seed(0)
    task = memtasks.get_task("copy", max_length=3)
    model = models.build_model("ntm", task.d_in, task.d_out, hidden_size=64, memory_slots=16, memory_width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = _gen(0)
    eval_batch = task.sample(64, _gen(123))

    def eval_loss() -> float:
        with torch.no_grad():
            return task.loss_fn(model(eval_batch.inputs)[0], eval_batch).item()

    start = eval_loss()
    for _ in range(300):
        batch = task.sample(32, g)
        loss = task.loss_fn(model(batch.inputs)[0], batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = eval_loss()
    assert end < 0.5 * start, (start, end)

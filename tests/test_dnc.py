"""The DNC: each memory operation against a plain loop and hand-made cases, and both fast paths
(the C kernels of ``models/dnc/kernel.c`` and the PyTorch operators) against a DNC step loop
written here from the equations of Graves et al. (2016, Methods), outputs and gradients.

The references below share no code with ``models/dnc``; they loop over batch, heads and slots.
"""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import memtasks
import memtasks.models as models
from memtasks.models.dnc import cpu_kernel
from memtasks.models.dnc.sequence import CHECKPOINT
from memtasks.models.dnc import memory as mem
from memtasks.models.dnc.interface import interface_size, split_interface
from memtasks.models.dnc.model import DNCState

EPS = 1e-6  # the smoothed norm of the model's documentation: |x| = sqrt(sum x^2 + EPS)
B, N, W, R = 2, 6, 3, 2

needs_kernel = pytest.mark.skipif(cpu_kernel.load() is None, reason="no C compiler: the kernels cannot be built")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def weighting(*shape: int, g: torch.Generator, total: float = 1.0) -> torch.Tensor:
    """Random nonnegative weightings over the last axis, each summing to at most ``total``."""
    w = torch.softmax(2.0 * torch.randn(*shape, generator=g, dtype=torch.float64), -1)
    return w * total * torch.rand(*shape[:-1], 1, generator=g, dtype=torch.float64)


def link_matrix(b: int, n: int, g: torch.Generator) -> torch.Tensor:
    link = torch.rand(b, n, n, generator=g, dtype=torch.float64) / n
    link.diagonal(dim1=1, dim2=2).zero_()
    return link


# --- naive references ------------------------------------------------------------------------


def naive_content(memory, keys, strengths):
    out = torch.zeros(keys.shape[0], keys.shape[1], memory.shape[1], dtype=memory.dtype)
    for b in range(keys.shape[0]):
        for h in range(keys.shape[1]):
            k = keys[b, h].tolist()
            nk = math.sqrt(sum(x * x for x in k) + EPS)
            scores = []
            for i in range(memory.shape[1]):
                row = memory[b, i].tolist()
                cos = sum(x * y for x, y in zip(k, row)) / (nk * math.sqrt(sum(x * x for x in row) + EPS))
                scores.append(float(strengths[b, h]) * cos)
            top = max(scores)
            z = sum(math.exp(s - top) for s in scores)
            for i, s in enumerate(scores):
                out[b, h, i] = math.exp(s - top) / z
    return out


def naive_retention(free_gates, read_weightings):
    out = torch.ones(read_weightings.shape[0], read_weightings.shape[2], dtype=read_weightings.dtype)
    for b in range(out.shape[0]):
        for i in range(out.shape[1]):
            for h in range(read_weightings.shape[1]):
                out[b, i] *= 1 - float(free_gates[b, h]) * float(read_weightings[b, h, i])
    return out


def naive_usage(usage, w_write, psi):
    out = torch.empty_like(usage)
    for b in range(usage.shape[0]):
        for i in range(usage.shape[1]):
            u, w = float(usage[b, i]), float(w_write[b, i])
            out[b, i] = (u + w - u * w) * float(psi[b, i])
    return out


def naive_allocation(usage):
    """The paper's loop: walk the free list (slots by usage, least used first; ties by index)."""
    out = torch.zeros_like(usage)
    for b in range(usage.shape[0]):
        u = usage[b].tolist()
        free_list = sorted(range(len(u)), key=lambda i: (u[i], i))
        product = 1.0
        for slot in free_list:
            out[b, slot] = (1 - u[slot]) * product
            product *= u[slot]
    return out


def naive_write_weighting(allocation, write_content, g_a, g_w):
    out = torch.empty_like(allocation)
    for b in range(out.shape[0]):
        for i in range(out.shape[1]):
            ga, gw = float(g_a[b, 0]), float(g_w[b, 0])
            out[b, i] = gw * (ga * float(allocation[b, i]) + (1 - ga) * float(write_content[b, i]))
    return out


def naive_write_memory(memory, w, erase, vector):
    out = torch.empty_like(memory)
    for b in range(memory.shape[0]):
        for i in range(memory.shape[1]):
            for k in range(memory.shape[2]):
                wi = float(w[b, i])
                out[b, i, k] = float(memory[b, i, k]) * (1 - wi * float(erase[b, k])) + wi * float(vector[b, k])
    return out


def naive_precedence(p, w):
    out = torch.empty_like(p)
    for b in range(p.shape[0]):
        total = sum(w[b].tolist())
        for i in range(p.shape[1]):
            out[b, i] = (1 - total) * float(p[b, i]) + float(w[b, i])
    return out


def naive_link(link, w, p):
    out = torch.zeros_like(link)
    for b in range(link.shape[0]):
        for i in range(link.shape[1]):
            for j in range(link.shape[2]):
                if i != j:
                    wi, wj = float(w[b, i]), float(w[b, j])
                    out[b, i, j] = (1 - wi - wj) * float(link[b, i, j]) + wi * float(p[b, j])
    return out


def naive_directional(link, read_weightings):
    fwd = torch.zeros_like(read_weightings)
    bwd = torch.zeros_like(read_weightings)
    for b in range(link.shape[0]):
        for h in range(read_weightings.shape[1]):
            for i in range(link.shape[1]):
                for j in range(link.shape[2]):
                    fwd[b, h, i] += link[b, i, j] * read_weightings[b, h, j]
                    bwd[b, h, j] += read_weightings[b, h, i] * link[b, i, j]
    return fwd, bwd


def naive_read_weighting(bwd, content, fwd, modes):
    out = torch.empty_like(content)
    for b in range(out.shape[0]):
        for h in range(out.shape[1]):
            for i in range(out.shape[2]):
                pi = modes[b, h].tolist()
                out[b, h, i] = pi[0] * float(bwd[b, h, i]) + pi[1] * float(content[b, h, i]) + pi[2] * float(fwd[b, h, i])
    return out


def naive_read(memory, read_weightings):
    out = torch.zeros(memory.shape[0], read_weightings.shape[1], memory.shape[2], dtype=memory.dtype)
    for b in range(memory.shape[0]):
        for h in range(read_weightings.shape[1]):
            for k in range(memory.shape[2]):
                out[b, h, k] = sum(float(read_weightings[b, h, i]) * float(memory[b, i, k]) for i in range(memory.shape[1]))
    return out


# --- vectorised == naive ------------------------------------------------------------------------


def test_content_weighting_matches_loop():
    g = gen(0)
    memory = torch.randn(B, N, W, generator=g, dtype=torch.float64)
    memory[0, 2] = 0.0  # an empty row: the smoothed norm keeps it finite
    keys = torch.randn(B, R, W, generator=g, dtype=torch.float64)
    strengths = 1 + 5 * torch.rand(B, R, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mem.content_weighting(memory, keys, strengths), naive_content(memory, keys, strengths))


def test_retention_and_usage_match_loop():
    g = gen(1)
    free = torch.rand(B, R, generator=g, dtype=torch.float64)
    w_read = weighting(B, R, N, g=g)
    usage = torch.rand(B, N, generator=g, dtype=torch.float64)
    w_write = weighting(B, N, g=g)
    psi = mem.retention(free, w_read)
    torch.testing.assert_close(psi, naive_retention(free, w_read))
    torch.testing.assert_close(mem.update_usage(usage, w_write, psi), naive_usage(usage, w_write, psi))


@pytest.mark.parametrize("seed", range(4))
def test_allocation_matches_free_list_loop(seed):
    g = gen(10 + seed)
    usage = torch.rand(3, 9, generator=g, dtype=torch.float64)
    usage[0, 3] = usage[0, 5] = 0.0  # ties, and zeros: the cumulative product must cope
    usage[1, :4] = 0.25
    torch.testing.assert_close(mem.allocation_weighting(usage), naive_allocation(usage))


def test_allocation_hand_made():
    usage = torch.tensor([[0.5, 0.2, 0.9], [0.5, 0.0, 1.0]], dtype=torch.float64)
    expected = torch.tensor([[0.5 * 0.2, 0.8, 0.1 * 0.2 * 0.5], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(mem.allocation_weighting(usage), expected)
    # all free (the initial state): everything goes to the first slot
    torch.testing.assert_close(mem.allocation_weighting(torch.zeros(1, 4)), torch.tensor([[1.0, 0, 0, 0]]))


def test_write_weighting_memory_and_precedence_match_loop():
    g = gen(2)
    alloc, content = weighting(B, N, g=g), weighting(B, N, g=g)
    g_a, g_w = torch.rand(B, 1, generator=g, dtype=torch.float64), torch.rand(B, 1, generator=g, dtype=torch.float64)
    ww = mem.write_weighting(alloc, content, g_a, g_w)
    torch.testing.assert_close(ww, naive_write_weighting(alloc, content, g_a, g_w))
    memory = torch.randn(B, N, W, generator=g, dtype=torch.float64)
    erase, vector = torch.rand(B, W, generator=g, dtype=torch.float64), torch.randn(B, W, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mem.write_memory(memory, ww, erase, vector), naive_write_memory(memory, ww, erase, vector))
    p = weighting(B, N, g=g)
    torch.testing.assert_close(mem.update_precedence(p, ww), naive_precedence(p, ww))


def test_link_and_directional_weightings_match_loop():
    g = gen(3)
    link, w, p = link_matrix(B, N, g), weighting(B, N, g=g), weighting(B, N, g=g)
    new = mem.update_link(link, w, p)
    torch.testing.assert_close(new, naive_link(link, w, p))
    w_read = weighting(B, R, N, g=g)
    fwd, bwd = mem.directional_weightings(new, w_read)
    nf, nb = naive_directional(new, w_read)
    torch.testing.assert_close(fwd, nf)
    torch.testing.assert_close(bwd, nb)


def test_read_weighting_and_read_match_loop():
    g = gen(4)
    bwd, content, fwd = weighting(B, R, N, g=g), weighting(B, R, N, g=g), weighting(B, R, N, g=g)
    modes = torch.softmax(torch.randn(B, R, 3, generator=g, dtype=torch.float64), -1)
    wr = mem.read_weighting(bwd, content, fwd, modes)
    torch.testing.assert_close(wr, naive_read_weighting(bwd, content, fwd, modes))
    memory = torch.randn(B, N, W, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mem.read_memory(memory, wr), naive_read(memory, wr))


# --- exact small cases and invariants -----------------------------------------------------------


def test_content_weighting_focuses_on_the_matching_row():
    g = gen(5)
    memory = torch.randn(3, 10, 8, generator=g)
    keys = 3.0 * memory[torch.arange(3), torch.tensor([4, 0, 9])].unsqueeze(1)  # cosine ignores the scale
    c = mem.content_weighting(memory, keys, torch.full((3, 1), 50.0))
    assert c.argmax(-1).squeeze(1).tolist() == [4, 0, 9]
    assert (c.max(-1).values > 0.9).all()
    torch.testing.assert_close(c.sum(-1), torch.ones(3, 1))


def test_erase_and_write_on_a_hand_made_memory():
    memory = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    w = torch.tensor([[1.0, 0.0, 0.5]])
    erase, vector = torch.tensor([[1.0, 0.5]]), torch.tensor([[10.0, 20.0]])
    # row 0: fully erased then written; row 1: untouched; row 2: half the erase, half the write
    expected = torch.tensor([[[10.0, 21.0], [3.0, 4.0], [7.5, 14.5]]])
    torch.testing.assert_close(mem.write_memory(memory, w, erase, vector), expected)


def test_usage_link_and_precedence_invariants_over_random_steps():
    g = gen(6)
    b, n = 4, 12
    usage = torch.zeros(b, n, dtype=torch.float64)
    link = torch.zeros(b, n, n, dtype=torch.float64)
    prec = torch.zeros(b, n, dtype=torch.float64)
    w_write = torch.zeros(b, n, dtype=torch.float64)
    w_read = torch.zeros(b, R, n, dtype=torch.float64)
    for step in range(40):
        sharp = 1.0 + 10.0 * (step % 3)  # alternate diffuse and near one-hot weightings
        free = torch.rand(b, R, generator=g, dtype=torch.float64)
        usage = mem.update_usage(usage, w_write, mem.retention(free, w_read))
        assert ((usage >= 0) & (usage <= 1)).all()
        alloc = mem.allocation_weighting(usage)
        assert (alloc >= 0).all() and (alloc.sum(-1) <= 1 + 1e-12).all()
        content = torch.softmax(sharp * torch.randn(b, n, generator=g, dtype=torch.float64), -1)
        gates = torch.rand(b, 2, generator=g, dtype=torch.float64)
        w_write = mem.write_weighting(alloc, content, gates[:, :1], gates[:, 1:])
        link = mem.update_link(link, w_write, prec)
        prec = mem.update_precedence(prec, w_write)
        assert (link.diagonal(dim1=1, dim2=2) == 0).all()
        assert (link >= 0).all()
        assert (link.sum(1) <= 1 + 1e-6).all() and (link.sum(2) <= 1 + 1e-6).all()
        assert (prec >= 0).all() and (prec.sum(-1) <= 1 + 1e-6).all()
        w_read = torch.softmax(sharp * torch.randn(b, R, n, generator=g, dtype=torch.float64), -1)


def test_interface_layout():
    assert interface_size(W, R) == R * W + 3 * W + 5 * R + 3
    xi = torch.randn(B, interface_size(W, R))
    it = split_interface(xi, W, R)
    assert it.keys.shape == (B, 1 + R, W) and it.read_modes.shape == (B, R, 3)
    assert (it.strengths >= 1).all()
    for gate in (it.erase, it.free_gates, it.allocation_gate, it.write_gate):
        assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(it.read_modes.sum(-1), torch.ones(B, R))


# --- the whole model against a reference step loop ----------------------------------------------


def oneplus(x):
    return 1 + F.softplus(x)


def reference_forward(model, x, state):
    """The DNC step by step from the paper's equations, in float64, with ``model``'s parameters."""
    cfg = model.config
    H, n, w_, r_ = cfg.hidden_size, cfg.memory_slots, cfg.memory_width, cfg.read_heads
    P = {k: v.double() for k, v in model.named_parameters()}
    h, c, memory, usage, link, prec, w_write, w_read, reads = (t.double() for t in state)
    b = x.shape[0]
    off_diagonal = 1 - torch.eye(n, dtype=torch.float64)

    def norm(v):
        return (v.pow(2).sum(-1) + EPS).sqrt()

    def content(memory, key, beta):  # key (b, W), beta (b, 1) -> (b, N)
        cos = (memory @ key.unsqueeze(-1)).squeeze(-1) / (norm(memory) * norm(key).unsqueeze(-1))
        return torch.softmax(beta * cos, -1)

    ys = []
    for t in range(x.shape[1]):
        gates = x[:, t].double() @ P["input_proj.weight"].T + P["input_proj.bias"]
        gates = gates + torch.cat([reads.reshape(b, -1), h], 1) @ P["recurrent_weight"].T
        i, f, o, g = gates.split(H, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        xi = h @ P["interface.weight"].T + P["interface.bias"]
        sizes = [w_, r_ * w_, 1, r_, w_, r_, 1, 1, w_, 3 * r_]
        k_w, k_r, beta_w, beta_r, e, free, g_a, g_w, v, pi = xi.split(sizes, 1)
        k_r, beta_w, beta_r = k_r.reshape(b, r_, w_), oneplus(beta_w), oneplus(beta_r)
        e, free, g_a, g_w = torch.sigmoid(e), torch.sigmoid(free), torch.sigmoid(g_a), torch.sigmoid(g_w)
        pi = torch.softmax(pi.reshape(b, r_, 3), -1)

        psi = torch.ones(b, n, dtype=torch.float64)
        for head in range(r_):
            psi = psi * (1 - free[:, head : head + 1] * w_read[:, head])
        usage = (usage + w_write - usage * w_write) * psi
        alloc = []
        for bb in range(b):  # the free list, walked in Python
            u = usage[bb]
            order = sorted(range(n), key=lambda j: (float(u[j].detach()), j))
            a = [None] * n
            product = torch.ones((), dtype=torch.float64)
            for j in order:
                a[j] = (1 - u[j]) * product
                product = product * u[j]
            alloc.append(torch.stack(a))
        alloc = torch.stack(alloc)
        w_write = g_w * (g_a * alloc + (1 - g_a) * content(memory, k_w, beta_w))
        memory = memory * (1 - w_write.unsqueeze(2) * e.unsqueeze(1)) + w_write.unsqueeze(2) * v.unsqueeze(1)
        link = ((1 - w_write.unsqueeze(2) - w_write.unsqueeze(1)) * link + w_write.unsqueeze(2) * prec.unsqueeze(1))
        link = link * off_diagonal
        prec = (1 - w_write.sum(1, keepdim=True)) * prec + w_write
        new_read = []
        for head in range(r_):
            fwd = (link @ w_read[:, head].unsqueeze(-1)).squeeze(-1)
            bwd = (w_read[:, head].unsqueeze(1) @ link).squeeze(1)
            c_r = content(memory, k_r[:, head], beta_r[:, head : head + 1])
            new_read.append(pi[:, head, 0:1] * bwd + pi[:, head, 1:2] * c_r + pi[:, head, 2:3] * fwd)
        w_read = torch.stack(new_read, 1)
        reads = w_read @ memory
        out = torch.cat([h, reads.reshape(b, -1)], 1) @ P["readout.weight"].T + P["readout.bias"]
        ys.append(out)
    return torch.stack(ys, 1), (h, c, memory, usage, link, prec, w_write, w_read, reads)


def random_state(model, b, g, dtype=torch.float32):
    """A random valid state: well-separated usages, so no sort order hangs on a rounding error."""
    cfg = model.config
    H, n, w_, r_ = cfg.hidden_size, cfg.memory_slots, cfg.memory_width, cfg.read_heads
    state = DNCState(
        0.5 * torch.randn(b, H, generator=g, dtype=torch.float64),
        0.5 * torch.randn(b, H, generator=g, dtype=torch.float64),
        torch.randn(b, n, w_, generator=g, dtype=torch.float64),
        torch.rand(b, n, generator=g, dtype=torch.float64),
        link_matrix(b, n, g),
        weighting(b, n, g=g),
        weighting(b, n, g=g),
        weighting(b, r_, n, g=g),
        torch.randn(b, r_, w_, generator=g, dtype=torch.float64),
    )
    return DNCState(*(t.to(dtype) for t in state))


def run_with_grads(forward, model, x, state, weights):
    """Forward, a loss over outputs and final state, backward: (outputs, state, param grads, state grads)."""
    model.zero_grad()
    state = [t.clone().requires_grad_() for t in state]
    y, final = forward(model, x, DNCState(*state))
    loss = (y * weights[0]).sum() + sum((s * wt).sum() for s, wt in zip(final, weights[1:]))
    loss.backward()
    return [y, *final], [p.grad for p in model.parameters()], [s.grad for s in state]


def model_forward(model, x, state):
    return model(x, state)


def assert_matches(actual, expected, what):
    for i, (a, e) in enumerate(zip(actual, expected)):
        scale = max(1.0, e.abs().max().item())
        err = (a.detach().double() - e.detach().double()).abs().max().item()
        assert err <= 1e-5 * scale, f"{what}[{i}]: max error {err:.2e} (scale {scale:.2g})"


@pytest.mark.parametrize("path", ["kernel", "torch"])
@pytest.mark.parametrize("read_heads", [1, 2])
def test_fast_paths_match_the_reference_loop(path, read_heads):
    if path == "kernel" and cpu_kernel.load() is None:
        pytest.skip("no C compiler: the kernels cannot be built")
    torch.manual_seed(0)
    hp = dict(hidden_size=20, memory_slots=12, memory_width=5, read_heads=read_heads, cpu_kernel=path == "kernel")
    model = models.build_model("dnc", 5, 3, **hp)
    g = gen(20 + read_heads)
    x = torch.randn(3, 6, 5, generator=g)
    state = random_state(model, 3, g)
    y_ref, final_ref = reference_forward(model, x, state)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (y_ref, *final_ref)]

    outs, p_grads, s_grads = run_with_grads(model_forward, model, x, state, [w.float() for w in weights])
    ref_outs, ref_p_grads, ref_s_grads = run_with_grads(reference_forward, model, x, state, weights)
    assert_matches(outs, ref_outs, "outputs and final state")
    assert_matches(p_grads, ref_p_grads, "parameter gradients")
    assert_matches(s_grads, ref_s_grads, "initial-state gradients")


def kernel_and_torch(seed: int, **hp):
    """The same DNC (9 inputs, 8 outputs) twice: on the C kernels and on the PyTorch operators."""
    torch.manual_seed(seed)
    fast = models.build_model("dnc", 9, 8, **hp)
    slow = models.build_model("dnc", 9, 8, cpu_kernel=False, **hp)
    slow.load_state_dict(fast.state_dict())
    return fast, slow


@needs_kernel
def test_kernel_matches_torch_path_over_many_steps():
    """Longer than a checkpoint segment of the kernel path (sequence.CHECKPOINT), at the default sizes' shape ratios."""
    fast, slow = kernel_and_torch(1, hidden_size=32, memory_slots=32, memory_width=8)
    g = gen(7)
    steps = CHECKPOINT + 3
    x = torch.randn(4, steps, 9, generator=g)
    state = random_state(fast, 4, g)
    weights = [torch.randn(t.shape, generator=g) for t in (torch.empty(4, steps, 8), *state)]
    a = run_with_grads(model_forward, fast, x, state, weights)
    b = run_with_grads(model_forward, slow, x, state, weights)
    for what, got, want in zip(("outputs", "parameter gradients", "state gradients"), a, b):
        assert_matches(got, want, what)


@needs_kernel
def test_kernel_backward_twice_and_partial_state_gradients():
    """retain_graph gives the same gradients twice; an initial state with only some parts requiring grad."""
    fast, slow = kernel_and_torch(6, hidden_size=16, memory_slots=10, memory_width=4)
    g = gen(11)
    x = torch.randn(2, 9, 9, generator=g)
    state = random_state(fast, 2, g)
    grads = []
    for model in (fast, slow):
        link = state.link.clone().requires_grad_()
        y, _ = model(x, state._replace(link=link))
        loss = y.pow(2).sum()
        first = torch.autograd.grad(loss, [link, *model.parameters()], retain_graph=True)
        second = torch.autograd.grad(loss, [link, *model.parameters()])
        for a, b in zip(first, second):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        grads.append(first)
    assert_matches(grads[0], grads[1], "gradients")


@needs_kernel
@pytest.mark.parametrize("steps", [1, CHECKPOINT - 1, CHECKPOINT, CHECKPOINT + 1, 2 * CHECKPOINT, 2 * CHECKPOINT + 1])
def test_kernel_matches_torch_path_at_every_checkpoint_phase(steps):
    """Sequence lengths below, at and past multiples of sequence.CHECKPOINT (the segments the backward
    recomputes). From a random state with well-separated usages: from the all-zero state, whose usages
    tie, one rounding difference between two float32 implementations can flip the allocation order."""
    fast, slow = kernel_and_torch(12, hidden_size=16, memory_slots=10, memory_width=4, read_heads=2)
    g = gen(30 + steps)
    x = torch.randn(3, steps, 9, generator=g)
    state = random_state(fast, 3, g)
    weights = [torch.randn(t.shape, generator=g) for t in (torch.empty(3, steps, 8), *state)]
    a = run_with_grads(model_forward, fast, x, state, weights)
    b = run_with_grads(model_forward, slow, x, state, weights)
    for what, got, want in zip(("outputs", "parameter gradients", "state gradients"), a, b):
        assert_matches(got, want, what)


@needs_kernel
@pytest.mark.parametrize("slots, heads", [(10, 2), (16, 1)])
def test_kernel_zero_state_without_a_link_tensor(slots, heads):
    """With no state given, the kernels start L_0 from zeros of their own (no (B, N, N) tensor is made or
    read) and skip step 1's link step, forward and backward (L_1 = 0 written, not computed): outputs,
    final state and every gradient, input's included, equal those from an explicit zero state bit for
    bit, over several checkpoint segments, and the input's gradient equals the PyTorch path's. Two read
    heads and N = 10 take the plain loops; one head and N = 16 the vector ones."""
    fast, slow = kernel_and_torch(21, hidden_size=16, memory_slots=slots, memory_width=4, read_heads=heads)
    x = torch.randn(3, 9, 9, generator=gen(22))
    runs = []
    for model, state in ((fast, None), (fast, fast.initial_state(3)), (slow, None)):
        model.zero_grad()
        xg = x.clone().requires_grad_()
        y, final = model(xg, state)
        (y.pow(2).sum() + final.link.sum() + final.memory.sum()).backward()
        runs.append(([y, *final], [xg.grad, *(p.grad for p in model.parameters())]))
    (outs, grads), (outs_explicit, grads_explicit), (_, grads_torch) = runs
    for a, b in zip(outs + grads, outs_explicit + grads_explicit):
        assert torch.equal(a, b)
    assert_matches(grads[:1], grads_torch[:1], "input gradient")


@needs_kernel
def test_kernel_zero_state_is_a_constant():
    """With ``link0`` None the other state tensors only give the zero state's shapes, and the kernels
    skip step 1's link step (its only nonzero gradient would go to p_0): the function returns no
    gradient for those tensors even where they ask for one, and the weights' gradients are those of
    the model's own zero-state call."""
    from memtasks.models.dnc.sequence import KernelSequence

    model = models.build_model("dnc", 9, 8, hidden_size=16, memory_slots=16, memory_width=4)
    x = torch.randn(2, 5, 9, generator=gen(3))
    state = [None if t is None else t.requires_grad_() for t in model._zero_state(2, None, link=False)]
    weights = (model.input_proj.weight, model.input_proj.bias, model.recurrent_weight, model.interface.weight,
               model.interface.bias, model.readout.weight, model.readout.bias)  # fmt: skip
    y, *_ = KernelSequence.apply(cpu_kernel.load(), True, x, *weights, *state)
    y.pow(2).sum().backward()
    assert all(t.grad is None for t in state if t is not None)
    grads = [w.grad.clone() for w in weights]
    model.zero_grad()
    model(x)[0].pow(2).sum().backward()
    for got, want in zip(grads, (w.grad for w in weights)):
        assert torch.equal(got, want)


@needs_kernel
@pytest.mark.parametrize("hidden", [17, 16])
def test_kernel_batch_elements_are_independent(hidden):
    """Forward and backward run the batch two elements in lockstep (the last alone when the batch is odd):
    every element's state is the same, bit for bit, in a batch of one and in a batch of seven (first or
    second of a pair, or the odd one), and so are its state gradients. Hidden size 17 gives the
    controller's matrix-vector products row counts that are not multiples of their blocks of 8 and 4
    rows (and 4H = 68 sends the backward's W_rh product down its fallback); with 16 both backward
    products are dot products over the transposed weights. The sequence crosses a checkpoint of the link
    matrices and memories."""
    torch.manual_seed(13)
    model = models.build_model("dnc", 9, 8, hidden_size=hidden, memory_slots=12, memory_width=4)
    g = gen(14)
    x = torch.randn(7, CHECKPOINT + 3, 9, generator=g)
    state = random_state(model, 7, g)
    _, whole = model(x, state)
    link = state.link.clone().requires_grad_()
    _, final = model(x, state._replace(link=link))
    (final.h.sum() + final.memory.pow(2).sum() + final.link.sum()).backward()
    for b in range(7):
        sl = slice(b, b + 1)
        _, alone = model(x[sl], DNCState(*(s[sl] for s in state)))
        for name, a, c in zip(DNCState._fields, whole, alone):
            assert torch.equal(a[sl], c), (b, name)
        link_b = state.link[sl].clone().requires_grad_()
        _, final_b = model(x[sl], DNCState(*(s[sl] for s in state))._replace(link=link_b))
        (final_b.h.sum() + final_b.memory.pow(2).sum() + final_b.link.sum()).backward()
        assert torch.equal(link.grad[sl], link_b.grad), b


@needs_kernel
def test_kernel_graphs_alive_together_keep_their_own_buffers():
    """The kernel path's internal buffers come from a pool of arenas (models/arena.py), reused only once
    the graph that leased one is gone: three graphs alive at once (more than the pool holds), with an
    evaluation forward between them, then their backwards in another order, give the PyTorch path's
    gradients."""
    fast, slow = kernel_and_torch(21, hidden_size=16, memory_slots=10, memory_width=4)
    g = gen(22)
    xs = [torch.randn(3, steps, 9, generator=g) for steps in (6, 9, 5)]
    states = [random_state(fast, 3, g) for _ in xs]
    losses = []
    for x, state in zip(xs, states):
        y, final = fast(x, state)
        with torch.no_grad():
            fast(x[:, :2], state)
        losses.append(y.pow(2).sum() + final.memory.pow(2).sum())
    for i in (1, 2, 0):
        got = torch.autograd.grad(losses[i], list(fast.parameters()))
        y, final = slow(xs[i], states[i])
        want = torch.autograd.grad(y.pow(2).sum() + final.memory.pow(2).sum(), list(slow.parameters()))
        assert_matches(got, want, f"parameter gradients of graph {i}")


@needs_kernel
def test_sequence_kernel_allocation_failure_is_a_memory_error_naming_the_kernel():
    lib = cpu_kernel.load()
    scratch = torch.zeros(16)
    ptr = scratch.data_ptr()
    names = [name for name, _ in cpu_kernel.Buffers._fields_[5:]]
    buf = cpu_kernel.Buffers(B=0, N=1 << 40, W=1, R=1, H=1, **{name: ptr for name in names})
    pointers = {name: ptr for name, _ in cpu_kernel.Sequence._fields_[3:]}
    seq = cpu_kernel.Sequence(T=1, K=4, train=1, **pointers)
    with pytest.raises(MemoryError, match=r"dnc C kernel dnc_sequence_forward: out of memory"):
        lib.dnc_sequence_forward(buf, seq)
    grads = cpu_kernel.SequenceGrad()
    with pytest.raises(MemoryError, match=r"dnc C kernel dnc_sequence_backward: out of memory"):
        lib.dnc_sequence_backward(buf, seq, grads)


@needs_kernel
def test_kernel_forward_without_autograd_keeps_one_step(monkeypatch):
    """Under torch.no_grad() the weights still require grad (inside the autograd function
    ctx.needs_input_grad says so too), so the model says whether a backward can follow: without one
    the kernels' per-step records hold one step, not T (an evaluation at 241 steps and batch 128 had
    made ≈300 MB of records and 180k page faults per forward). With autograd recording, all T."""
    from memtasks.models.dnc import sequence

    model = models.build_model("dnc", 9, 8, hidden_size=16, memory_slots=16, memory_width=4)
    shapes = []
    lease = sequence.POOL.lease
    monkeypatch.setattr(sequence.POOL, "lease", lambda s: shapes.append(s) or lease(s))
    x = torch.randn(2, 7, 9, generator=gen(30))
    with torch.no_grad():
        y_eval, _ = model(x)
    y, _ = model(x)
    (_, z_eval, *_), (_, z_train, *_) = shapes  # z_t = [r_{t-1}; h_{t-1}; x_t] per kept step
    assert z_eval[0] == 1 and z_train[0] == 7
    assert torch.equal(y_eval, y)
    y.sum().backward()  # the training forward's records serve a backward
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cpu", [True, False])
def test_chunked_forward_equals_whole_and_module_is_unchanged(cpu):
    torch.manual_seed(2)
    model = models.build_model("dnc", 9, 8, hidden_size=24, memory_slots=16, memory_width=6, cpu_kernel=cpu)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 10, 9, generator=gen(8))
    y, state = model(x)
    y1, s1 = model(x[:, :4])
    y2, s2 = model(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-6, rtol=1e-5)
    for a, b in zip(s2, state):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the kernel path keeps less without a backward to come: same numbers
        y_eval, s_eval = model(x)
    torch.testing.assert_close(y_eval, y, atol=0, rtol=0)
    for a, b in zip(s_eval, state):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"forward changed {k}"
    assert model(x[:, :0])[0].shape == (3, 0, 8)


def test_state_invariants_after_a_forward():
    torch.manual_seed(3)
    model = models.build_model("dnc", 9, 8, hidden_size=24, memory_slots=16, memory_width=6, read_heads=2)
    _, s = model(torch.randn(4, 15, 9, generator=gen(9)))
    assert ((s.usage >= 0) & (s.usage <= 1)).all()
    assert (s.link.diagonal(dim1=1, dim2=2) == 0).all()
    assert (s.link.sum(1) <= 1 + 1e-6).all() and (s.link.sum(2) <= 1 + 1e-6).all()
    assert (s.precedence.sum(-1) <= 1 + 1e-6).all()
    assert (s.read_weightings >= 0).all() and (s.read_weightings.sum(-1) <= 1 + 1e-5).all()


def test_float64_runs_the_torch_path():
    torch.manual_seed(4)
    model = models.build_model("dnc", 9, 8, hidden_size=16, memory_slots=8, memory_width=4).double()
    y, state = model(torch.randn(2, 5, 9, dtype=torch.float64))
    assert y.dtype == torch.float64 and state.link.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    torch.manual_seed(5)
    model = models.build_model("dnc", 9, 8, hidden_size=24, memory_slots=16, memory_width=6, cpu_kernel=False)
    x = torch.randn(3, 7, 9)
    y, _ = model(x)
    y_gpu, state = model.cuda()(x.cuda())
    assert state.link.is_cuda
    torch.testing.assert_close(y_gpu.cpu(), y, atol=1e-5, rtol=1e-4)


def test_missing_compiler_falls_back_to_torch(monkeypatch, caplog):
    def fail(compiler):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpu_kernel.LIBRARY, "_state", {})
    monkeypatch.setattr(cpu_kernel.LIBRARY, "_build", fail)
    with caplog.at_level(logging.WARNING):
        assert cpu_kernel.load() is None
    if shutil_which_compiler():
        assert "PyTorch operators" in caplog.text
    model = models.build_model("dnc", 9, 8, hidden_size=16, memory_slots=8, memory_width=4)
    assert model(torch.randn(2, 3, 9))[0].shape == (2, 3, 8)


def shutil_which_compiler() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("cc", "gcc", "clang"))


# --- learning, sizing, configuration ------------------------------------------------------------


def test_learns_short_copies():
    torch.manual_seed(0)
    model = models.build_model("dnc", 9, 8)
    task = memtasks.get_task("copy", max_length=3)
    g = gen(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        batch = task.sample(16, g)
        y, _ = model(batch.inputs)
        loss = F.binary_cross_entropy_with_logits(y[batch.mask], batch.targets[batch.mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    start, end = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert end < 0.75 * start, f"loss went from {start:.3f} to {end:.3f}"


def test_parameter_budget_and_analytic_count():
    model = models.build_model("dnc", 9, 8, param_budget=50_000)
    info = model.budget_info
    assert info["knob"] == "hidden_size" and abs(info["relative_error"]) < 0.05
    for hp in ({}, {"hidden_size": 7, "read_heads": 3, "memory_width": 5}):
        m = models.build_model("dnc", 9, 8, **hp)
        assert type(m).count_params(9, 8, m.config) == m.param_counts()[0]


def test_wrong_state_shape_is_refused():
    model = models.build_model("dnc", 9, 8, hidden_size=16, memory_slots=8, memory_width=4)
    state = model.initial_state(2)
    with pytest.raises(ValueError, match="state.link"):
        model(torch.randn(2, 3, 9), state._replace(link=torch.zeros(2, 7, 7)))


def test_config_validation():
    with pytest.raises(ValueError, match="exactly one write head"):
        models.model_config("dnc", write_heads=2)
    with pytest.raises(ValueError, match="memory_slots"):
        models.model_config("dnc", memory_slots=0)
    with pytest.raises(ValueError, match="cpu_kernel"):
        models.model_config("dnc", cpu_kernel="yes")
    with pytest.raises(TypeError, match="read_heads"):
        models.model_config("dnc", read_head=2)

"""The NTM's time loop (forward); its hand-written backward pass through time is ``bptt.py``.

One step, for ``A = R + W`` heads (read heads first), all addressing the memory ``M_{t-1}``:

    G_t = W_x x_t + b + W_z z_{t-1},  z_{t-1} = [h_{t-1}; r_{t-1}]     controller pre-activations
    h_t = cell(G_t)                                                  ``controller.py``
    p_t = W_p h_t + b_p                                              every head's parameters at once
    w_t = address(k, β, g, s, γ, w_{t-1}, M_{t-1})                   all A heads, ``memory.address``
    r_t = w^R_t M_{t-1}                                              the R read heads
    M_t = write(M_{t-1}, w^W_t, e_t, a_t)                            the W write heads, ``memory.write``

Reads see the memory before this step's writes, so every head addresses the same matrix in
one batched pass. ``W_x x_t + b`` for all steps is one product before the loop, the readout
``W_y z_t + b_y`` one product after it (by the caller, under autograd); a feedforward
controller ignores ``h_{t-1}`` (``W_z``'s first block is zero). Layout of ``p_t``::

    [ k: A·M | (β̂, γ̂, ĝ): A·3 | ŝ: A·S | ê: W·M | â: W·M ]
    β = softplus(β̂), γ = 1 + softplus(γ̂), g = σ(ĝ), s = softmax(ŝ) over offsets -R..R,
    e = σ(ê), a = tanh(â) (or â)

Inside the loop the memory is held transposed, ``(B, M, N)``: the element-wise memory
operations then broadcast the weights along the contiguous dimension of N = 128 slots and
the erase/add vectors as outer products, instead of broadcasting along M = 20, which ran 2-3
times faster per operation on the CPUs we measured. The state and every docstring keep the
paper's ``(B, N, M)``.

Allocation: transient memory-sized tensors reuse a few buffers allocated once per call, and
the saved history (``M_0..M_T``, ``keep_1..keep_T``) is one block. A fresh 320 KiB tensor per
step would page-fault on every 4 KiB page it touches, each time (about 1 µs per page in a
virtual machine, as much as the arithmetic on it).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from memtasks.models.ntm import memory as mem
from memtasks.models.ntm.controller import feedforward_cell, lstm_cell
from memtasks.models.ntm.memory import COSINE_EPS, SHARPEN_EPS


class Dims(NamedTuple):
    """Static sizes of one NTM."""

    hidden: int
    read_heads: int  # R
    write_heads: int  # W
    width: int  # M
    shifts: int  # S = 2 · shift_range + 1
    lstm: bool  # LSTM controller (else feedforward)
    tanh_add: bool  # a = tanh(â) (else a = â)

    @property
    def heads(self) -> int:
        return self.read_heads + self.write_heads

    @property
    def z_size(self) -> int:
        """Width of ``z_t = [h_t; r_t]``."""
        return self.hidden + self.read_heads * self.width

    @property
    def gate_size(self) -> int:
        return (4 if self.lstm else 1) * self.hidden

    @property
    def param_split(self) -> tuple[int, int, int, int, int]:
        """Block sizes of ``p_t``: keys, scalars, shifts, erase, add."""
        a, w, m = self.heads, self.write_heads, self.width
        return (a * m, 3 * a, a * self.shifts, w * m, w * m)

    @property
    def head_params(self) -> int:
        return sum(self.param_split)


class LoopOut(NamedTuple):
    zs: torch.Tensor  # (T, B, z_size): z_1..z_T
    h: torch.Tensor  # (B, hidden), or (B, 0) for the feedforward controller
    c: torch.Tensor  # (B, hidden), or (B, 0)
    r: torch.Tensor  # (B, R, M)
    memory: torch.Tensor  # (B, M, N): transposed, see the module docstring
    w: torch.Tensor  # (B, A, N)


class Saved:
    """Per-step intermediates kept for the backward: lists indexed by step."""

    def __init__(self) -> None:
        self.lists: dict[str, list[torch.Tensor]] = {}

    def add(self, **tensors: torch.Tensor) -> None:
        for k, v in tensors.items():
            self.lists.setdefault(k, []).append(v)

    def __getitem__(self, key: str) -> list[torch.Tensor]:
        return self.lists[key]

    def stack(self, key: str) -> torch.Tensor:
        return torch.stack(self.lists[key])


def taps(padded: torch.Tensor, weights: tuple[torch.Tensor, ...], n: int, reverse: bool) -> torch.Tensor:
    """``Σ_m weights[m] ⊙ padded[..., start_m : start_m + n]`` with ``start_m = m`` or ``2R - m``
    (``reverse``): ``memory.shift`` and the data half of ``vjp.shift_backward``."""
    last = len(weights) - 1
    out = None
    for m, wt in enumerate(weights):
        start = last - m if reverse else m
        window = padded[..., start : start + n]
        out = window * wt if out is None else out.addcmul_(window, wt)
    assert out is not None
    return out


def run_forward(
    dims: Dims,
    xp: torch.Tensor,
    z0: torch.Tensor,
    c: torch.Tensor,
    memory: torch.Tensor,
    w: torch.Tensor,
    w_z: torch.Tensor,
    w_p: torch.Tensor,
    b_p: torch.Tensor,
    saved: Saved | None,
) -> LoopOut:
    """Run the loop over ``xp`` ``(T, B, G)`` = ``W_x x_t + b`` from ``z_0`` ``(B, z_size)``,
    ``c_0``, ``M_0ᵀ`` ``(B, M, N)`` and ``w_0`` ``(B, A, N)``; record intermediates in ``saved``."""
    steps, b = xp.shape[0], xp.shape[1]
    n_h, n_a, n_r, n_w, m, n_s = dims.hidden, dims.heads, dims.read_heads, dims.write_heads, dims.width, dims.shifts
    rng = n_s // 2
    n = memory.shape[2]
    zs = xp.new_empty(steps + 1, b, dims.z_size)
    zs[0].copy_(z0)
    z_list, h_list = zs.unbind(0), zs[..., :n_h].unbind(0)
    r_list = zs[..., n_h:].unflatten(-1, (n_r, m)).unbind(0)
    w_zt, w_pt = w_z.t(), w_p.t()
    ones = xp.new_ones(1, m)
    one = xp.new_ones(1, 1, 1)
    split = dims.param_split
    # memory-sized tensors live in buffers allocated once per call (see "Allocation" above):
    # the history M_0..M_T and keep_1..keep_T when saving, else a ring of two memories
    if saved is not None:
        hist = xp.new_empty(2 * steps + 1, b, m, n)
        hist[0].copy_(memory)
        memory = hist[0]
        mem_out, keep_out = hist[1 : steps + 1].unbind(0), hist[steps + 1 :].unbind(0)
    else:
        ring = xp.new_empty(3, b, m, n).unbind(0)
        mem_out, keep_out = [ring[(t + 1) & 1] for t in range(steps)], [ring[2]] * steps
    ws_sq, ws_aw = xp.new_empty(2, b, m, n).unbind(0)
    for t, xp_t in enumerate(xp.unbind(0)):
        gates = torch.addmm(xp_t, z_list[t], w_zt)
        if dims.lstm:
            c_prev = c
            h, c, sig, gt, tc = lstm_cell(gates, c, h_out=h_list[t + 1])
        else:
            h = feedforward_cell(gates, h_out=h_list[t + 1])
        p = torch.addmm(b_p, h, w_pt)  # (B, P)
        keys, scal, shr, e, a = torch.split_with_sizes(p, split, dim=1)
        keys = keys.view(b, n_a, m)
        scal = scal.view(b, n_a, 3)
        beta, gm1 = torch.split_with_sizes(F.softplus(scal[..., :2]), (1, 1), dim=-1)  # β, γ - 1: (B, A, 1)
        gate = scal[..., 2:].sigmoid()  # (B, A, 1)
        s = shr.view(b, n_a, n_s).softmax(dim=-1)
        e = e.sigmoid()
        a = a.tanh() if dims.tanh_add else a
        # content weighting: K = (k · M(i)) ρ σ_i, with ρ = 1/max(‖k‖, ε), σ_i = 1/max(‖M(i)‖, ε)
        rho = torch.linalg.vector_norm(keys, dim=-1, keepdim=True).clamp_min_(COSINE_EPS).reciprocal_()  # (B, A, 1)
        sq_norms = torch.matmul(ones, torch.mul(memory, memory, out=ws_sq))  # (B, 1, N)
        sigma = sq_norms.clamp_min_(COSINE_EPS * COSINE_EPS).rsqrt_()
        sim = torch.bmm(keys, memory).mul_(rho).mul_(sigma)  # (B, A, N)
        w_c = torch.softmax(sim * beta, dim=-1)
        w_g = torch.lerp(w, w_c, gate)
        # shift: w̃(i) = Σ_k s(k) w^g(i - k) = Σ_m s_m padded[i + 2R - m]
        padded = mem.circular_pad(w_g, rng)
        w_s = taps(padded, s.view(b, n_a, n_s, 1).unbind(2), n, reverse=True)
        clamped = w_s.clamp_min_(SHARPEN_EPS)
        log_w = clamped.log()
        w_prev, w = w, torch.softmax(torch.addcmul(log_w, log_w, gm1), dim=-1)  # γ log w̃ = (1 + (γ-1)) log w̃
        w_r, w_w = torch.split_with_sizes(w, (n_r, n_w), dim=1)
        r_list[t + 1].copy_(torch.bmm(w_r, memory.transpose(1, 2)))
        if saved is not None:
            saved.add(
                p=p, keys=keys, beta=beta, gm1=gm1, gate=gate, s=s, e=e, a=a, rho=rho, sigma=sigma, sim=sim,
                w_c=w_c, w_prev=w_prev, padded=padded, clamped=clamped, log_w=log_w, memory=memory,
            )
            if dims.lstm:
                saved.add(c=c_prev, sig=sig, gt=gt, tc=tc)
        if n_w == 1:  # M_t = M ⊙ keep + a wᵀ, keep = 1 - e wᵀ (transposed: outer products along N)
            keep = torch.baddbmm(one, e.view(b, m, 1), w_w, alpha=-1.0, out=keep_out[t])  # (B, M, N)
            memory = torch.addcmul(torch.mul(a.view(b, m, 1), w_w, out=ws_aw), memory, keep, out=mem_out[t])
        else:
            new = mem.write(memory.transpose(1, 2), w_w, e.view(b, n_w, m), a.view(b, n_w, m))
            memory, keep = new.transpose(1, 2).contiguous(), None
        if saved is not None:
            saved.add(keep=keep)
    if saved is not None:
        saved.add(w_prev=w)  # w_T, read by the last step's backward
    if dims.lstm:
        h_out = zs[-1, :, :n_h].clone()
    else:
        h_out, c = zs.new_zeros(b, 0), zs.new_zeros(b, 0)
    if saved is not None:
        memory = memory.clone()  # the state must not pin the whole history
    return LoopOut(zs[1:], h_out, c, r_list[-1].clone(), memory, w.clone())


def start_of_backward(dims: Dims, zs: torch.Tensor, grads: LoopOut) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(∂z_1..T, ∂z_T, ∂c_T)`` from the gradients of the loop's outputs, to start backpropagation
    through time; ``zs`` is ``z_0..z_T``. Unused outputs' gradients arrive as None (the autograd
    node does not materialise zeros)."""
    steps, b, n_h = zs.shape[0] - 1, zs.shape[1], dims.hidden
    g_zs = grads.zs if grads.zs is not None else zs.new_zeros(steps, b, dims.z_size)
    g_z = g_zs[-1].clone()
    if dims.lstm and grads.h is not None:
        g_z[:, :n_h] += grads.h
    if grads.r is not None:
        g_z[:, n_h:] += grads.r.flatten(1)
    g_c = grads.c if grads.c is not None or not dims.lstm else zs.new_zeros(b, n_h)
    return g_zs, g_z, g_c


def input_projection(x: torch.Tensor, w_x: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W_x x_t + b`` for all steps as one product: ``x`` ``(B, T, d_in)`` -> ``(T, B, G)``, and ``x`` as ``(T·B, d_in)``."""
    flat = x.transpose(0, 1).reshape(-1, x.shape[-1])
    return torch.addmm(bias, flat, w_x.t()).view(x.shape[1], x.shape[0], -1), flat

"""The NTM's time loop over the C kernels of ``kernel.c`` (float32 on CPU, one write head).

The same recurrence as ``sequence.py`` / ``bptt.py``, with each step's heads (addressing, reads,
write) in one C call each way; the controller stays in PyTorch:

forward, per step t
    G_t = (W_x x_t + b) + W_z z_{t-1}          one ``addmm``
    h_t = cell(G_t)                            ``controller.py``, written into z_t
    p_t = W_p h_t + b_p                        one ``addmm``
    heads                                      ``ntm_heads_forward``: w_t, r_t (into z_t), M_t
backward, per step t = T-1 … 0
    ∂p_t, ∂M_{t-1}, ∂w_{t-1}                   ``ntm_heads_backward`` (∂M updated in place)
    ∂h_t = ∂z_t[h] + ∂p_t W_p;  ∂G_t, ∂c_{t-1}  ``controller.lstm_cell_backward``
    ∂z_{t-1} = ∂(outputs) + ∂G_t W_z
then every weight gradient as one product over all steps, as in ``bptt.py``.

Buffers are time-major; without a backward to come (evaluation) the memory and weightings live in
two alternating slots instead of a history. A training forward's records (memories, weightings,
head parameters, saved floats) and the backward's dLoss/dgates and dLoss/dparams are views of one
pooled arena (:data:`POOL`, ``models/arena.py``), held until the graph is gone: as fresh tensors
(≈14 MB of memories alone at batch 32, T = 41) they were fresh pages, a page fault each 4 KB, whenever
the allocator had unmapped the last ones, which depended on what else ran in the process. The kernels see
them through one :class:`cpu_kernel.Buffers`, made once per forward, and take slot numbers into
them; gradients, made in the backward, are passed per call.
"""
from __future__ import annotations

import ctypes
from typing import Any

import torch

from memtasks.models.arena import ArenaPool
from memtasks.models.ntm import cpu_kernel
from memtasks.models.ntm.controller import (
    feedforward_cell,
    feedforward_coefficients,
    lstm_cell,
    lstm_cell_backward,
    lstm_coefficients,
)
from memtasks.models.ntm.sequence import Dims, LoopOut, start_of_backward

POOL = ArenaPool()


def kernel_forward(
    lib: ctypes.CDLL,
    dims: Dims,
    xp: torch.Tensor,
    z0: torch.Tensor,
    c: torch.Tensor,
    mem0: torch.Tensor,
    w0: torch.Tensor,
    w_z: torch.Tensor,
    w_p: torch.Tensor,
    b_p: torch.Tensor,
    keep: dict[str, Any] | None,
) -> LoopOut:
    """Run the loop over ``xp`` ``(T, B, G)``; with ``keep`` (a dict), record what the backward needs."""
    steps, b = xp.shape[0], xp.shape[1]
    n_h, n_r, m, n_s, n_p = dims.hidden, dims.read_heads, dims.width, dims.shifts, dims.head_params
    n_a, n = dims.heads, mem0.shape[2]
    zsz = dims.z_size
    new = xp.new_empty
    hist = keep is not None
    slots = steps + 1 if hist else 2
    zs = new(steps + 1, b, zsz)  # zs[1:] is an output: not in the arena
    zs[0].copy_(z0)
    if hist:  # what only the backward reads, and the backward's own buffers, in one pooled arena
        lease = POOL.lease(
            [(slots, b, m, n), (slots, b, n_a, n), (steps, b, n_p), (steps, b, cpu_kernel.saved_size(lib, n, m, n_r, n_s)),
             (steps, b, dims.gate_size), (steps, b, n_p)]
        )  # fmt: skip
        mems, ws, ps, sv = lease.views[:4]
    else:
        mems, ws, ps, sv = new(slots, b, m, n), new(slots, b, n_a, n), new(1, b, n_p), None
    mems[0].copy_(mem0)
    ws[0].copy_(w0)
    lstm_saved: dict[str, list[torch.Tensor]] = {"c": [], "sig": [], "gt": [], "tc": []}
    w_zt, w_pt = w_z.t(), w_p.t()
    buf = cpu_kernel.Buffers(
        B=b, N=n, M=m, R=n_r, S=n_s, P=n_p, tanh_add=int(dims.tanh_add), Z=zsz, H=n_h,
        p=ps.data_ptr(), mem=mems.data_ptr(), w=ws.data_ptr(), z=zs.data_ptr(), sv=None if sv is None else sv.data_ptr(),
    )  # fmt: skip
    fwd = lib.ntm_heads_forward
    for t in range(steps):
        a_, b_ = (t, t + 1) if hist else (t & 1, (t + 1) & 1)
        gates = torch.addmm(xp[t], zs[t], w_zt)
        h_out = zs[t + 1, :, :n_h]
        if dims.lstm:
            c_prev = c
            _, c, sig, gt, tc = lstm_cell(gates, c, h_out=h_out)
            if hist:
                for key, value in zip(("c", "sig", "gt", "tc"), (c_prev, sig, gt, tc)):
                    lstm_saved[key].append(value)
        else:
            feedforward_cell(gates, h_out=h_out)
        k = t if hist else 0
        torch.addmm(b_p, h_out, w_pt, out=ps[k])
        fwd(buf, t, k, a_, b_)
    last = steps if hist else steps & 1
    if keep is not None:
        # buf points into the others; the lease keeps the arena from other calls until keep is dropped
        keep.update(zs=zs, mems=mems, ws=ws, ps=ps, sv=sv, lstm=lstm_saved, buf=buf, lease=lease)
    h_out = zs[-1, :, :n_h].clone() if dims.lstm else zs.new_zeros(b, 0)
    c_out = c if dims.lstm else zs.new_zeros(b, 0)
    r = zs[-1, :, n_h:].unflatten(-1, (n_r, m)).clone()
    return LoopOut(zs[1:], h_out, c_out, r, mems[last].clone(), ws[last].clone())


def kernel_backward(
    lib: ctypes.CDLL, dims: Dims, keep: dict[str, Any], grads: LoopOut, w_z: torch.Tensor, w_p: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """Backpropagation through time over what :func:`kernel_forward` kept; returns what
    ``bptt.run_backward`` returns, ``(x̄p, z̄_0, c̄_0, M̄_0, w̄_0, W̄_z, W̄_p, b̄_p)``."""
    zs, mems, buf = keep["zs"], keep["mems"], keep["buf"]
    steps, b = zs.shape[0] - 1, zs.shape[1]
    n_h, m, n_p = dims.hidden, dims.width, dims.head_params
    n_a, n = dims.heads, mems.shape[3]
    new = zs.new_empty
    hs = zs[1:, :, :n_h]
    if dims.lstm:
        lk = keep["lstm"]
        coef = lstm_coefficients(*(torch.stack(lk[k]) for k in ("sig", "gt", "tc", "c")), hs)
        xd, o_dtanh, f = coef.gates.unbind(0), coef.o_dtanh.unbind(0), coef.f.unbind(0)
    else:
        dh = feedforward_coefficients(hs).unbind(0)
    g_gates, g_params = keep["lease"].views[4:]
    g_zs, g_z, g_c = start_of_backward(dims, zs, grads)
    # ∂M and ∂w are updated in place in one buffer each, after the first step (never the caller's)
    g_mem_in = None if grads.memory is None else grads.memory.contiguous()
    g_w_in = None if grads.w is None else grads.w.contiguous()
    g_mem, g_w = new(b, m, n), new(b, n_a, n)
    bwd = lib.ntm_heads_backward
    w_zt = w_z
    for t in range(steps - 1, -1, -1):
        g_z = g_z.contiguous()
        bwd(
            buf, t, None if g_mem_in is None else g_mem_in.data_ptr(), None if g_w_in is None else g_w_in.data_ptr(),
            g_z.data_ptr(), g_params[t].data_ptr(), g_mem.data_ptr(), g_w.data_ptr(),
        )  # fmt: skip
        g_mem_in, g_w_in = g_mem, g_w
        g_h = torch.addmm(g_z[:, :n_h], g_params[t], w_p)
        if dims.lstm:
            g_g, g_c = lstm_cell_backward(g_h, g_c, xd[t], o_dtanh[t], f[t], out=g_gates[t])
        else:
            g_g = torch.mul(g_h, dh[t], out=g_gates[t])
        g_z = torch.addmm(g_zs[t - 1], g_g, w_zt) if t > 0 else g_g.mm(w_zt)
    flat_g = g_gates.flatten(0, 1)
    flat_p = g_params.flatten(0, 1)
    g_w_z = flat_g.t().mm(zs[:-1].flatten(0, 1))
    g_w_p = flat_p.t().mm(hs.flatten(0, 1))
    return g_gates, g_z, g_c, g_mem, g_w, g_w_z, g_w_p, flat_p.sum(0)

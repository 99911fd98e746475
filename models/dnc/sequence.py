"""The whole DNC recurrence as one autograd function over the C kernels (float32 on CPU).

Autograd would record ~25 nodes per time step for the controller and the memory; at batch 32
their bookkeeping costs more than their arithmetic. :class:`KernelSequence` instead runs the
forward loop without autograd, keeping what the backward needs in time-major buffers, and runs
backpropagation through time by hand:

forward, per step t
    z_t = [r_{t−1}; h_{t−1}]                 (kept for the weight gradient)
    gates_t = (W_x x_t + b) + W_rh z_t        one ``addmm``; W_x x_t + b comes in precomputed
    h_t, c_t = LSTM(gates_t, c_{t−1})         C kernel ``dnc_lstm_forward``
    ξ_t = W_ξ h_t + b_ξ                        one ``addmm``
    memory step                               C kernel ``dnc_step_forward``
backward, per step t = T−1 … 0
    ∂ξ_t, ∂(memory state)_{t−1}               C kernel ``dnc_step_backward``
    ∂h_t = ∂h (from z_{t+1}) + ∂y-side + ∂ξ_t W_ξ
    ∂gates_t, ∂c_{t−1}                        C kernel ``dnc_lstm_backward``
    ∂z_t = ∂gates_t W_rh  →  ∂r_{t−1}, ∂h_{t−1}
then the weight gradients in three matmuls over all steps at once:
    ∂W_rh = Σ_t ∂gates_tᵀ z_t,   ∂W_ξ = Σ_t ∂ξ_tᵀ h_t,   ∂b_ξ = Σ_t ∂ξ_t,   ∂(W_x x_t + b) = ∂gates_t.

Link matrices: the forward keeps only every ``CHECKPOINT``-th L_t (and the last); the others live
in two scratch buffers, and the backward recomputes each segment from its checkpoint
(``dnc_link_update``) just before it needs it. That stores a quarter of the 2 MB-per-step
matrices (at T = 241, the longest copy evaluation, 120 MB instead of 480 MB) for one extra
cache-resident pass per step.

The equations are those of ``model.py`` / ``memory.py``; ``tests/test_dnc.py`` checks outputs and
all gradients against the autograd implementation. Buffers are time-major; the memory is kept
slot-minor, ``(B, W, N)``, inside (the kernel's loops over slots are then contiguous). The
kernels see them through one :class:`cpu_kernel.Buffers`, made once per forward, and take slot
numbers into them; gradients, made in the backward, are passed per call.
"""
from __future__ import annotations

import ctypes
from typing import Any

import torch

from memtasks.models.dnc import cpu_kernel

CHECKPOINT = 4  # keep every 4th link matrix: a segment of 4 (8 MB at B = 32, N = 128) stays in cache


class KernelSequence(torch.autograd.Function):
    """(W_x x + b, W_rh, W_ξ, b_ξ, initial state) -> (h_1..T, r_1..T, final state).

    Inputs: ``x_proj`` ``(B, T, 4H)``; ``w_rh`` ``(4H, R·W + H)``; ``w_xi`` ``(S, H)``; ``b_xi``
    ``(S,)``; the state as in :class:`models.dnc.model.DNCState` (memory ``(B, N, W)``).
    Outputs: ``hs`` ``(T, B, H)``, ``rs`` ``(T, B, R, W)`` and the nine final state tensors.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lib: ctypes.CDLL,
        x_proj: torch.Tensor,
        w_rh: torch.Tensor,
        w_xi: torch.Tensor,
        b_xi: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        memory0: torch.Tensor,
        usage0: torch.Tensor,
        link0: torch.Tensor,
        precedence0: torch.Tensor,
        w_write0: torch.Tensor,
        w_read0: torch.Tensor,
        reads0: torch.Tensor,
    ) -> Any:
        B, T, G = x_proj.shape  # T >= 1
        H = h0.shape[1]
        _, R, N = w_read0.shape
        W = reads0.shape[2]
        S = w_xi.shape[0]
        RW = R * W
        new = x_proj.new_empty
        # without a backward to come (evaluation), per-step buffers hold one step and state buffers two
        train = any(ctx.needs_input_grad)
        TS, TT = (T, T + 1) if train else (1, 2)
        xp = x_proj.transpose(0, 1).contiguous()  # (T, B, 4H)
        z = new(TS, B, RW + H)  # controller inputs [r_{t-1}; h_{t-1}]
        acts = new(TS, B, G)  # activated gates
        xis = new(TS, B, S)
        saved = new(TS, B, cpu_kernel.saved_size(lib, N, R))
        orders = torch.empty(TS, B, N, dtype=torch.int32)
        cs = new(TT, B, H)
        mems = new(TT, B, W, N)
        usages, precs, w_writes = new(TT, B, N), new(TT, B, N), new(TT, B, N)
        w_reads = new(TT, B, R, N)
        hs = new(T, B, H)  # outputs: every step
        reads = new(T + 1, B, R, W)
        # L_t: every CHECKPOINT-th one (and the last) is kept; the others are updated in place in one
        # scratch buffer that stays in cache, and the backward recomputes them segment by segment from
        # the kept ones
        links: list[torch.Tensor | None] = [link0.contiguous()] + [None] * T
        scratch = torch.empty_like(links[0]) if T > 1 else None
        cs[0] = c0
        mems[0] = memory0.transpose(1, 2)
        usages[0], precs[0], w_writes[0], w_reads[0], reads[0] = usage0, precedence0, w_write0, w_read0, reads0

        buf = cpu_kernel.Buffers(
            B=B, N=N, W=W, R=R, H=H, xi=xis.data_ptr(), sv=saved.data_ptr(), order=orders.data_ptr(),
            act=acts.data_ptr(), c=cs.data_ptr(), h=hs.data_ptr(), mem=mems.data_ptr(), usage=usages.data_ptr(),
            prec=precs.data_ptr(), ww=w_writes.data_ptr(), wr=w_reads.data_ptr(), reads=reads.data_ptr(),
        )  # fmt: skip
        step_fwd, lstm_fwd = lib.dnc_step_forward, lib.dnc_lstm_forward
        w_rh_t, w_xi_t = w_rh.t(), w_xi.t()
        h_prev = h0
        for t in range(T):
            k, a, b = (t, t, t + 1) if train else (0, t % 2, (t + 1) % 2)  # per-step slot, state slots t and t+1
            z[k, :, :RW] = reads[t].view(B, RW)
            z[k, :, RW:] = h_prev
            gates = torch.addmm(xp[t], z[k], w_rh_t)
            lstm_fwd(buf, t, k, a, b, gates.data_ptr())
            torch.addmm(b_xi, hs[t], w_xi_t, out=xis[k])
            keep = (train and (t + 1) % CHECKPOINT == 0) or t + 1 == T
            links[t + 1] = torch.empty_like(links[0]) if keep else scratch  # in place when links[t] is too
            step_fwd(buf, t, k, a, b, links[t].data_ptr(), links[t + 1].data_ptr())
            h_prev = hs[t]
            if (t + 1) % CHECKPOINT != 1 and t > 0:
                links[t] = None  # a scratch buffer: recomputed in the backward

        ctx.lib, ctx.buf = lib, buf  # buf points into ctx.buffers, hs and links, all kept below
        ctx.set_materialize_grads(False)
        ctx.dims = (B, T, H, N, W, R, S)
        # L_T is an output and the backward never reads it: holding it here would make a reference cycle
        # (output -> grad_fn -> ctx -> output) that keeps every buffer alive until the garbage collector runs
        ctx.buffers = (z, acts, cs, xis, mems, usages, precs, w_writes, w_reads, saved, orders, links[1:T])
        ctx.save_for_backward(w_rh, w_xi, links[0], hs)  # inputs and outputs: autograd checks their versions
        last = T if train else T % 2
        final = (
            hs[T - 1].clone(),
            cs[last].clone(),
            mems[last].transpose(1, 2).clone(),
            usages[last].clone(),
            links[T],
            precs[last].clone(),
            w_writes[last].clone(),
            w_reads[last].clone(),
            reads[T].clone(),
        )
        return (hs, reads[1:], *final)

    @staticmethod
    def backward(ctx: Any, g_hs: Any, g_rs: Any, *g_final: Any) -> Any:  # type: ignore[override]
        lib = ctx.lib
        B, T, H, N, W, R, S = ctx.dims
        RW = R * W
        z, kept = ctx.buffers[0], ctx.buffers[-1]  # the others are read through ctx.buf
        w_rh, w_xi, link0, hs = ctx.saved_tensors
        links = [link0, *kept, None]  # a copy: the backward may run again (retain_graph)
        new = hs.new_empty
        g_h, g_c, g_mem, g_use, g_link, g_prec, g_ww, g_wr, g_r = (
            None if g is None else g.contiguous() for g in g_final
        )
        if g_mem is not None:
            g_mem = g_mem.transpose(1, 2).contiguous()  # slot-minor, as the kernel keeps it
        if g_h is None:
            g_h = hs.new_zeros(B, H)
        g_xis = new(T, B, S)
        g_gates = new(T, B, 4 * H)
        need_link0 = ctx.needs_input_grad[9]
        buf, step_bwd, lstm_bwd = ctx.buf, lib.dnc_step_backward, lib.dnc_lstm_backward
        ptr, grad = _ptr, cpu_kernel.StateGrad
        segment: list[torch.Tensor] = []
        g_link_buffer: torch.Tensor | None = None
        for t in reversed(range(T)):
            if links[t] is None:  # recompute this segment's L's from its checkpoint
                start = t - t % CHECKPOINT
                while len(segment) < t - start:
                    segment.append(torch.empty_like(links[start]))
                for k in range(start + 1, t + 1):
                    src = links[start] if k == start + 1 else segment[k - start - 2]
                    lib.dnc_link_update(buf, k, src.data_ptr(), segment[k - start - 1].data_ptr())
                    links[k] = segment[k - start - 1]
            g_read = g_r
            if g_rs is not None:
                g_read = g_rs[t] if g_read is None else g_read + g_rs[t]
            if g_read is not None:
                g_read = g_read.contiguous()
            g_mem_p, g_use_p, g_prec_p, g_ww_p = new(B, W, N), new(B, N), new(B, N), new(B, N)
            g_wr_p = new(B, R, N)
            if t > 0 or need_link0:  # ∂L_{t-1}, in place over ∂L_t after the first step (never over g_final's)
                if g_link_buffer is None:
                    g_link_buffer = new(B, N, N)
                g_link_p = g_link_buffer
            else:
                g_link_p = None
            step_bwd(
                buf, t, links[t].data_ptr(),
                grad(ptr(g_mem), ptr(g_use), ptr(g_link), ptr(g_prec), ptr(g_ww), ptr(g_wr)),
                ptr(g_read), g_xis[t].data_ptr(),
                grad(ptr(g_mem_p), ptr(g_use_p), ptr(g_link_p), ptr(g_prec_p), ptr(g_ww_p), ptr(g_wr_p)),
            )  # fmt: skip
            links[t + 1] = None
            g_mem, g_use, g_link, g_prec, g_ww, g_wr = g_mem_p, g_use_p, g_link_p, g_prec_p, g_ww_p, g_wr_p
            gh_t = g_h if g_hs is None else g_h + g_hs[t]
            gh_t = torch.addmm(gh_t, g_xis[t], w_xi)  # + ∂ξ_t W_ξ
            g_c_p = new(B, H)
            lstm_bwd(buf, t, gh_t.data_ptr(), ptr(g_c), g_gates[t].data_ptr(), g_c_p.data_ptr())
            g_c = g_c_p
            g_z = torch.mm(g_gates[t], w_rh)  # (B, RW + H)
            g_r = g_z[:, :RW].reshape(B, R, W)
            g_h = g_z[:, RW:]
        flat_gates = g_gates.view(T * B, 4 * H)
        flat_xis = g_xis.view(T * B, S)
        g_w_rh = flat_gates.t().mm(z.view(T * B, RW + H))
        g_w_xi = flat_xis.t().mm(hs.view(T * B, H))
        g_b_xi = flat_xis.sum(0)
        g_mem0 = None if g_mem is None else g_mem.transpose(1, 2)
        return (
            None,
            g_gates.transpose(0, 1),
            g_w_rh,
            g_w_xi,
            g_b_xi,
            g_h,
            g_c,
            g_mem0,
            g_use,
            g_link,
            g_prec,
            g_ww,
            g_wr,
            g_r,
        )


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()

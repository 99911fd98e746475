"""The whole DNC recurrence as one autograd function over the C kernels (float32 on CPU).

Autograd would record ~25 nodes per time step for the controller and the memory; at batch 32
their bookkeeping costs more than their arithmetic. :class:`KernelSequence` instead runs the
forward without autograd, keeping what the backward needs in time-major buffers, and runs
backpropagation through time by hand, both in one C call each (``kernel.c``), one batch element
at a time through every step:

forward, per element, per step t
    z_t = [r_{t−1}; h_{t−1}; x_t]            (kept for the weight gradient)
    gates_t = b + [W_rh W_x] z_t              one product: W_x x_t rides along with W_rh z_t
    h_t, c_t = LSTM(gates_t, c_{t−1})
    ξ_t = W_ξ h_t + b_ξ
    memory step
backward, per element, per step t = T−1 … 0
    ∂ξ_t, ∂(memory state)_{t−1}               the exact gradient of the memory step
    ∂h_t = ∂h (from z_{t+1}) + ∂y-side + W_ξᵀ ∂ξ_t
    ∂gates_t, ∂c_{t−1}                        the LSTM cell's gradient
    [∂r_{t−1}; ∂h_{t−1}] = W_rhᵀ ∂gates_t
then the weight gradients in two matmuls over all elements and steps at once:
    [∂W_rh ∂W_x] = Σ_t ∂gates_tᵀ z_t,   ∂W_ξ = Σ_t ∂ξ_tᵀ h_t,   ∂b = Σ_t ∂gates_t,   ∂b_ξ = Σ_t ∂ξ_t.
(W_x x_t + b as a matmul over all steps before the loop, as the NTM does, took 0.2 ms at lengths
1-20 and a 1 MB buffer written and read back; inside the step it is 9 more rows of the product.)

Why per element: the batch elements are independent until those sums, and the step is bound by
where its link matrices live. Step by step over the batch, the batch's 2 MB of link matrices went
through the shared cache (or DRAM) once a step each way; element by element (two at a time, in
lockstep), their link matrices, gradients and recomputed segments (64 KB each at N = 128) and the
controller's weights stay in the core's own cache for the whole sequence.

Link matrices and memories: a training forward keeps only every ``CHECKPOINT``-th L_t and M_t (and
the last) and updates one element's L and M in cache in between; the backward recomputes each segment
from its checkpoints, per element, just before it needs it. That stores a sixth of the 64 KB
(L) and 10 KB (M) per element and step for one extra in-cache pass per step: what the step waited for
was memory traffic, not arithmetic. The other per-step records (saved floats, gates, weightings) are
stored every step, the saved floats with streaming stores from a cached copy. (Forward and backward run
two elements in lockstep so that their controller products share each weight row's load; see ``kernel.c``.)

Buffers: everything but the outputs (the per-step records, checkpoints, transposed weights,
dLoss/dξ and dLoss/dgates) is a view of one pooled arena (:class:`models.arena.ArenaPool`), reused
once the graph that leased it is gone.

The equations are those of ``model.py`` / ``memory.py``; ``tests/test_dnc.py`` checks outputs and
all gradients against a float64 reference loop and the autograd implementation. Buffers are
time-major; the memory is kept slot-minor, ``(B, W, N)``, inside (the kernel's loops over slots
are then contiguous). The kernels see them through one :class:`cpu_kernel.Buffers` and one
:class:`cpu_kernel.Sequence`, made once per forward; gradients, made in the backward, through one
:class:`cpu_kernel.SequenceGrad`.
"""
from __future__ import annotations

import ctypes
from typing import Any

import torch

from memtasks.models.arena import ArenaPool
from memtasks.models.dnc import cpu_kernel

# keep every 6th link matrix and memory: the backward's two elements in lockstep each recompute a segment
# (5 x 74 KB at N = 128, W = 20), next to their link gradients and the controller's weights in a 1 MiB L2.
# With the pairing, the training step against 4 / 5 / 8 (docs/bench/dnc_kernel_ab.py --checkpoint-a K
# --checkpoint-b 6, the same kernel.c twice; lengths 1-20, length 20): 0.994, 0.976 / 0.983, 0.967 /
# 1.008, 0.993. Against 8 that is within the noise of the measurement.
CHECKPOINT = 6

# A forward's internal buffers (all but its outputs: the per-step records, the checkpoints, the transposed
# weights, dLoss/dxi and dLoss/dgates) are views of one arena of this pool (models/arena.py). A training
# step at lengths 1-20, alone in a process, took 28.8-29.3 ms with fresh buffers and 20.6-21.0 ms with
# the pool (a quarter of the page faults; docs/performance.md, issue 16).
POOL = ArenaPool()


class KernelSequence(torch.autograd.Function):
    """(train, x, W_x, b, W_rh, W_ξ, b_ξ, W_y, b_y, initial state) -> (y_1..T, final state).

    ``train``: whether a backward can follow (autograd records the call). The caller says so: inside
    ``forward`` ``ctx.needs_input_grad`` is true for the weights under ``torch.no_grad()`` as well.
    Without one, the per-step records hold one step, not all of them (and no checkpoints are kept).

    Inputs: ``x`` ``(B, T, d_in)``; ``w_x`` ``(4H, d_in)``; ``b_x`` ``(4H,)``; ``w_rh`` ``(4H, R·W + H)``;
    ``w_xi`` ``(S, H)``; ``b_xi`` ``(S,)``; the readout ``w_y`` ``(d_out, H + R·W)``, ``b_y`` ``(d_out,)``;
    the state as in :class:`models.dnc.model.DNCState` (memory ``(B, N, W)``), except that ``link0``
    may be None: then the whole initial state is zero, a constant, and the other state tensors only give
    its shapes (their buffers' first slots are zeroed, not copied; the kernels start each element's link
    matrix from zeros instead of reading a 2 MB zero tensor, and skip step 1's link step, whose L_1 and
    directional weightings are exact zeros). No gradient flows to those tensors then: the backward
    returns None for them.
    Outputs: ``y`` ``(B, T, d_out)``, y_t = W_y [h_t; r_t] + b_y, and the nine final state tensors.
    (The readout is here, not a ``Linear`` after the function, so that h_t and r_t stay in the arena:
    no concatenation forward, no copies of their gradients backward.)
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lib: ctypes.CDLL,
        train: bool,
        x: torch.Tensor,
        w_x: torch.Tensor,
        b_x: torch.Tensor,
        w_rh: torch.Tensor,
        w_xi: torch.Tensor,
        b_xi: torch.Tensor,
        w_y: torch.Tensor,
        b_y: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        memory0: torch.Tensor,
        usage0: torch.Tensor,
        link0: torch.Tensor | None,
        precedence0: torch.Tensor,
        w_write0: torch.Tensor,
        w_read0: torch.Tensor,
        reads0: torch.Tensor,
    ) -> Any:
        B, T, D = x.shape  # T >= 1
        G = w_x.shape[0]
        H = h0.shape[1]
        _, R, N = w_read0.shape
        W = reads0.shape[2]
        S = w_xi.shape[0]
        RW = R * W
        # without a backward to come (evaluation), per-step buffers hold one step and state buffers two
        TS, TT = (T, T + 1) if train else (1, 2)
        # what only the kernels and this function's backward read: views of one pooled arena (POOL)
        n_ckpt = max((T - 1) // CHECKPOINT, 1) if train else 1
        SV = cpu_kernel.saved_size(lib, N, R)
        shapes = (
            (T, B, D), (TS, B, RW + H + D), (TS, B, G), (TS, B, S), (TS, B, SV), (TS, B, N), (TT, B, H),
            (TT, B, W, N), (TT, B, N), (TT, B, N), (TT, B, N), (TT, B, R, N), (n_ckpt, B, N, N),
            (RW + H + D, G), (H, S), (T if train else 0, B, S), (T if train else 0, B, G), (T, B, H), (T + 1, B, R, W),
        )  # fmt: skip
        lease = POOL.lease(shapes)
        (xs, z, acts, xis, saved, orders, cs, mems, usages, precs, w_writes, w_reads, checkpoints, w_rh_t, w_xi_t,
         g_xis, g_gates, hs, reads) = lease.views  # fmt: skip
        orders = orders.view(torch.int32)  # allocation orders phi_t (int32, the size of a float)
        xs.copy_(x.transpose(0, 1))  # time-major: the kernel appends x_t to z_t, W_x to W_rh
        state0 = (cs[0], mems[0], usages[0], precs[0], w_writes[0], w_reads[0], reads[0])
        if link0 is None:  # the zero state
            for buf in state0:
                buf.zero_()
        else:
            values = (c0, memory0.transpose(1, 2), usage0, precedence0, w_write0, w_read0, reads0)
            for buf, value in zip(state0, values):
                buf.copy_(value)
        # L_t for t = CHECKPOINT, 2 CHECKPOINT, ... < T (the backward recomputes the others), and L_T
        link0 = None if link0 is None else link0.contiguous()
        link_last = x.new_empty(B, N, N)
        w_rh_t[: RW + H].copy_(w_rh.t())  # [W_rh W_x] transposed
        w_rh_t[RW + H :].copy_(w_x.t())
        w_xi_t.copy_(w_xi.t())
        weights = (w_rh.contiguous(), w_rh_t, w_xi.contiguous(), w_xi_t)
        b_x, b_xi = b_x.contiguous(), b_xi.contiguous()
        h0 = h0.new_zeros(B, H) if link0 is None else h0.contiguous()

        buf = cpu_kernel.Buffers(
            B=B, N=N, W=W, R=R, H=H, xi=xis.data_ptr(), sv=saved.data_ptr(), order=orders.data_ptr(),
            act=acts.data_ptr(), c=cs.data_ptr(), h=hs.data_ptr(), mem=mems.data_ptr(), usage=usages.data_ptr(),
            prec=precs.data_ptr(), ww=w_writes.data_ptr(), wr=w_reads.data_ptr(), reads=reads.data_ptr(),
        )  # fmt: skip
        seq = cpu_kernel.Sequence(
            T=T, K=CHECKPOINT, train=int(train), D=D, x=xs.data_ptr(), b_x=b_x.data_ptr(), w_rh=weights[0].data_ptr(),
            w_rh_t=weights[1].data_ptr(), w_xi=weights[2].data_ptr(), w_xi_t=weights[3].data_ptr(),
            b_xi=b_xi.data_ptr(), h0=h0.data_ptr(), z=z.data_ptr(), link0=_ptr(link0),
            ckpt=checkpoints.data_ptr(), link_last=link_last.data_ptr(),
        )  # fmt: skip
        lib.dnc_sequence_forward(buf, seq)

        # buf and seq point into ctx.buffers (the arena's views) and link0, all kept below; seq's x, b_x,
        # b_xi and h0 and its link_last are not read by the backward
        ctx.lib, ctx.buf, ctx.seq = lib, buf, seq
        ctx.set_materialize_grads(False)
        ctx.dims = (B, T, H, N, W, R, S)
        ctx.train = train
        # the readout over every step: y = [hs rs] W_yᵀ + b_y, time-major, as two products (no concatenation)
        hs_flat, rs_flat = hs.view(T * B, H), reads[1:].view(T * B, RW)
        y = torch.addmm(b_y, hs_flat, w_y[:, :H].t()).addmm_(rs_flat, w_y[:, H:].t())
        # L_T is an output and the backward never reads it: holding it here would make a reference cycle
        # (output -> grad_fn -> ctx -> output) that keeps every buffer alive until the garbage collector runs
        ctx.buffers = (z, acts, cs, xis, mems, usages, precs, w_writes, w_reads, saved, orders, checkpoints, weights, hs, reads)
        ctx.g_xis, ctx.g_gates, ctx.lease = g_xis, g_gates, lease  # the lease keeps the arena until ctx goes
        ctx.save_for_backward(w_x, w_rh, w_xi, w_y, link0)  # inputs: autograd checks their versions
        last = T if train else T % 2
        final = (
            hs[T - 1].clone(),
            cs[last].clone(),
            mems[last].transpose(1, 2).clone(),
            usages[last].clone(),
            link_last,
            precs[last].clone(),
            w_writes[last].clone(),
            w_reads[last].clone(),
            reads[T].clone(),
        )
        return (y.view(T, B, -1).transpose(0, 1).contiguous(), *final)

    @staticmethod
    def backward(ctx: Any, g_y: Any, *g_final: Any) -> Any:  # type: ignore[override]
        if not ctx.train:
            raise RuntimeError("dnc KernelSequence: called with train=False, it kept no records for a backward")
        B, T, H, N, W, R, S = ctx.dims
        z, hs, reads = ctx.buffers[0], ctx.buffers[-2], ctx.buffers[-1]
        w_x, _, _, w_y, link0 = ctx.saved_tensors  # unpacked for autograd's version check
        new = hs.new_empty
        hs_flat, rs_flat = hs.view(T * B, H), reads[1:].reshape(T * B, R * W)
        g_hs = g_rs = g_w_y = g_b_y = None
        if g_y is not None:  # the readout's gradient: dh_t, dr_t from the outputs, dW_y, db_y
            g_y = g_y.transpose(0, 1).reshape(T * B, -1)  # time-major, like hs and rs
            g_hs, g_rs = g_y.mm(w_y[:, :H]), g_y.mm(w_y[:, H:])
            g_w_y = torch.cat([g_y.t().mm(hs_flat), g_y.t().mm(rs_flat)], dim=1)
            g_b_y = g_y.sum(0)
        g_h, g_c, g_mem, g_use, g_link, g_prec, g_ww, g_wr, g_r = (
            None if g is None else g.contiguous() for g in g_final
        )
        if g_mem is not None:
            g_mem = g_mem.transpose(1, 2).contiguous()  # slot-minor, as the kernel keeps it
        g_xis, g_gates = ctx.g_xis, ctx.g_gates  # dLoss/dxi_t and dgates_t into the arena: only read here
        g_h0, g_c0, g_r0 = new(B, H), new(B, H), new(B, R, W)
        g_mem0, g_use0, g_prec0, g_ww0, g_wr0 = new(B, W, N), new(B, N), new(B, N), new(B, N), new(B, R, N)
        g_link0 = new(B, N, N) if ctx.needs_input_grad[14] else None
        grad, ptr = cpu_kernel.StateGrad, _ptr
        grads = cpu_kernel.SequenceGrad(
            hs=ptr(g_hs), rs=ptr(g_rs), h=ptr(g_h), c=ptr(g_c), r=ptr(g_r),
            last=grad(ptr(g_mem), ptr(g_use), ptr(g_link), ptr(g_prec), ptr(g_ww), ptr(g_wr)),
            gates=ptr(g_gates), xi=ptr(g_xis), h0=ptr(g_h0), c0=ptr(g_c0), r0=ptr(g_r0),
            first=grad(ptr(g_mem0), ptr(g_use0), ptr(g_link0), ptr(g_prec0), ptr(g_ww0), ptr(g_wr0)),
        )  # fmt: skip
        ctx.lib.dnc_sequence_backward(ctx.buf, ctx.seq, grads)
        flat_gates = g_gates.view(T * B, 4 * H)
        flat_xis = g_xis.view(T * B, S)
        # [dW_rh dW_x], z_t = [r_{t-1}; h_{t-1}; x_t]; in this orientation MKL takes 0.78 ms, not 0.85 (T·B = 660)
        g_w_rhx = z.view(T * B, -1).t().mm(flat_gates).t()
        Z = R * W + H
        g_w_rh, g_w_x = g_w_rhx[:, :Z], g_w_rhx[:, Z:]
        g_b_x = flat_gates.sum(0)
        g_x = flat_gates.mm(w_x).view(T, B, -1).transpose(0, 1) if ctx.needs_input_grad[2] else None
        g_w_xi = flat_xis.t().mm(hs_flat)
        g_b_xi = flat_xis.sum(0)
        # from the zero state (link0 None) the state tensors only gave shapes: no gradient for them (the
        # kernel leaves the link step's part out of dLoss/dp_0 there)
        g_state = (g_h0, g_c0, g_mem0.transpose(1, 2), g_use0, g_link0, g_prec0, g_ww0, g_wr0, g_r0)
        return (
            None,
            None,
            g_x,
            g_w_x,
            g_b_x,
            g_w_rh,
            g_w_xi,
            g_b_xi,
            g_w_y,
            g_b_y,
            *(g_state if link0 is not None else (None,) * len(g_state)),
        )


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()

"""Backpropagation through time for the loop of ``sequence.py``, written by hand.

Why by hand: at these sizes (B = 32, N = 128, M = 20) every tensor operation costs a few
microseconds of dispatch and autograd bookkeeping, more than its arithmetic. This backward
needs about half the operations autograd would record, batches every element-wise
derivative (σ', tanh', masks) over all steps before its loop, and forms each weight gradient
once, as one product over all steps (``Σ_t Ḡ_tᵀ z_{t-1}``). Its per-operation equations are
those of ``vjp.py`` (and ``controller.lstm_cell_backward``), where each is written out and
tested alone; here they are fused over a step and reordered.
"""
from __future__ import annotations

import ctypes
from typing import Any

import torch

from memtasks.models.ntm import memory as mem
from memtasks.models.ntm import vjp
from memtasks.models.ntm.controller import feedforward_coefficients, lstm_cell_backward, lstm_coefficients
from memtasks.models.ntm.kernel_sequence import kernel_backward, kernel_forward
from memtasks.models.ntm.memory import COSINE_EPS, SHARPEN_EPS
from memtasks.models.ntm.sequence import Dims, LoopOut, Saved, input_projection, run_forward, start_of_backward, taps


def _precompute(dims: Dims, saved: Saved, zs: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every element-wise derivative the backward needs, for all steps at once, split by step."""
    n_h, n_w = dims.hidden, dims.write_heads
    out: dict[str, torch.Tensor] = {}
    one = zs.new_ones(())
    hs = zs[1:, :, :n_h]  # (T, B, H)
    if dims.lstm:
        coef = lstm_coefficients(saved.stack("sig"), saved.stack("gt"), saved.stack("tc"), saved.stack("c"), hs)
        out.update(xd=coef.gates, o_dtanh=coef.o_dtanh, f=coef.f)
    else:
        out["dh"] = feedforward_coefficients(hs)
    # activation derivatives along p_t; the erase block's sign matches write backward below
    p = saved.stack("p")
    d_p = torch.ones_like(p)
    n_k, n_sc, n_sh, n_e, _ = dims.param_split
    scal = d_p[..., n_k : n_k + n_sc].unflatten(-1, (dims.heads, 3))
    torch.sigmoid(p[..., n_k : n_k + n_sc].unflatten(-1, (dims.heads, 3))[..., :2], out=scal[..., :2])  # softplus'
    gate = saved.stack("gate")
    torch.addcmul(gate, gate, gate, value=-1.0, out=scal[..., 2:])
    o_e = n_k + n_sc + n_sh
    e = saved.stack("e")
    d_e = torch.addcmul(e, e, e, value=-1.0)
    torch.mul(d_e, -1.0 if n_w == 1 else 1.0, out=d_p[..., o_e : o_e + n_e])
    if dims.tanh_add:
        a = saved.stack("a")
        torch.addcmul(one, a, a, value=-1.0, out=d_p[..., o_e + n_e :])
    out["d_p"] = d_p
    if n_w == 1:  # [-e ‖ a] as (B, 1, 2M)
        out["ea"] = torch.cat((-e, saved.stack("a")), dim=-1).unsqueeze(-2)
    # content: ρ σ_i, and ρ², σ_i² where the norm is not clamped (0 where it is)
    rho, sigma = saved.stack("rho"), saved.stack("sigma")  # (T, B, A, 1), (T, B, 1, N)
    rho_max = torch.tensor(COSINE_EPS, dtype=zs.dtype).reciprocal().item()
    sigma_max = torch.tensor(COSINE_EPS * COSINE_EPS, dtype=zs.dtype).rsqrt().item()
    out["rho_sigma"] = rho * sigma
    out["rho2"] = (rho * rho).masked_fill_(rho >= rho_max, 0.0)
    out["sigma2"] = (sigma * sigma).masked_fill_(sigma >= sigma_max, 0.0)  # (T, B, 1, N)
    # sharpening: 1 / w̃ where w̃ > ε, else 0
    clamped = saved.stack("clamped")
    out["inv_w"] = clamped.reciprocal().masked_fill_(clamped <= SHARPEN_EPS, 0.0)
    w_all = saved.stack("w_prev")  # w_0..w_T
    out["dw"] = saved.stack("w_c") - w_all[:-1]
    return {k: list(v.unbind(0)) for k, v in out.items()}


def run_backward(
    dims: Dims, saved: Saved, zs: torch.Tensor, grads: LoopOut, w_z: torch.Tensor, w_p: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """Backpropagation through time; ``zs`` is ``z_0..z_T`` and ``grads`` holds ∂L/∂ of every output.

    Returns ``(x̄p, z̄_0, c̄_0, M̄_0, w̄_0, W̄_z, W̄_p, b̄_p)``; ``x̄p`` ``(T, B, G)`` is ∂L/∂G.
    """
    n_h, n_a, n_r, n_w, m, n_s = dims.hidden, dims.heads, dims.read_heads, dims.write_heads, dims.width, dims.shifts
    rng = n_s // 2
    steps, b = zs.shape[0] - 1, zs.shape[1]
    n = saved["memory"][0].shape[2]
    dt = zs.dtype
    pre = _precompute(dims, saved, zs)
    g_gates = zs.new_empty(steps, b, dims.gate_size)
    g_params = zs.new_empty(steps, b, dims.head_params)
    gg_list, gp_list = g_gates.unbind(0), g_params.unbind(0)
    g_zs, g_z, g_c = start_of_backward(dims, zs, grads)
    g_w_next = grads.w
    # [ḡ ⊙ M_{t-1} ; ḡ] (transposed, like the memory) with ḡ = ∂L/∂M_t, in two alternating buffers
    pong = zs.new_empty(2, b, 2 * m, n)
    halves = list(zip(pong.unbind(0), pong[:, :, :m].unbind(0), pong[:, :, m:].unbind(0)))  # (both, left, right)
    ws_mem = zs.new_empty(b, m, n)
    both, both_l, both_r = halves[0]
    if grads.memory is not None:
        both_r.copy_(grads.memory)
    else:
        both_r.zero_()
    for t in range(steps - 1, -1, -1):
        memory, w = saved["memory"][t], saved["w_prev"][t + 1]
        w_r, w_w = torch.split_with_sizes(w, (n_r, n_w), dim=1)
        g_h, g_r = torch.split_with_sizes(g_z, (n_h, n_r * m), dim=1)
        g_r = g_r.view(b, n_r, m)
        # write and read (vjp.write_backward, vjp.read_backward)
        if n_w == 1:
            torch.mul(both_r, memory, out=both_l)
            g_ea = torch.bmm(w_w, both.transpose(1, 2))  # (B, 1, 2M) = [-ē ‖ ā]
            g_ww = torch.bmm(pre["ea"][t], both)  # (B, 1, N)
        else:
            e, a = saved["e"][t].view(b, n_w, m), saved["a"][t].view(b, n_w, m)
            g_keep, g_ww, g_e, g_a = vjp.write_backward(both_r.transpose(1, 2), memory.transpose(1, 2), w_w, e, a)
            g_ea = torch.cat((g_e.flatten(1), g_a.flatten(1)), dim=1)
        g_w = torch.cat((torch.bmm(g_r, memory), g_ww), dim=1)
        if g_w_next is not None:
            g_w.add_(g_w_next)
        # sharpening (vjp.sharpen_backward)
        g_l = torch._softmax_backward_data(g_w, w, -1, dt)
        g_gm1 = torch.linalg.vecdot(g_l, saved["log_w"][t])
        g_ws = torch.addcmul(g_l, g_l, saved["gm1"][t]).mul_(pre["inv_w"][t])
        # shift (vjp.shift_backward): s̄(k) = Σ_i ḡ(i) w^g(i - k), w̄^g(j) = Σ_k s(k) ḡ(j + k)
        padded = saved["padded"][t]
        g_s = torch.stack([torch.linalg.vecdot(g_ws, padded[..., 2 * rng - k : 2 * rng - k + n]) for k in range(n_s)], -1)
        s = saved["s"][t]
        g_wg = taps(mem.circular_pad(g_ws, rng), s.view(b, n_a, n_s, 1).unbind(2), n, reverse=False)
        g_s = torch._softmax_backward_data(g_s, s, -1, dt)
        # interpolation (vjp.interpolate_backward)
        g_wc = g_wg * saved["gate"][t]
        g_w_next = g_wg - g_wc
        g_gate = torch.linalg.vecdot(g_wg, pre["dw"][t])
        # content weighting (vjp.content_weighting_backward)
        sim, keys = saved["sim"][t], saved["keys"][t]
        g_z_c = torch._softmax_backward_data(g_wc, saved["w_c"][t], -1, dt)
        g_beta = torch.linalg.vecdot(g_z_c, sim)
        g_sim = g_z_c.mul_(saved["beta"][t])
        u = g_sim * sim
        coef_k = u.sum(-1, keepdim=True).mul_(pre["rho2"][t])  # (B, A, 1)
        coef_m = u.sum(1, keepdim=True).mul_(pre["sigma2"][t])  # (B, 1, N)
        g_dots = g_sim.mul_(pre["rho_sigma"][t])  # ∂L/∂(k · M(i))
        g_keys = torch.bmm(g_dots, memory.transpose(1, 2)).addcmul_(keys, coef_k, value=-1.0)
        # ∂L/∂M_{t-1}: the read and content terms in one product, then the σ and write terms
        lhs = torch.cat((g_r.transpose(1, 2), keys.transpose(1, 2)), dim=2)  # (B, M, R + A)
        g_mem = torch.bmm(lhs, torch.cat((w_r, g_dots), dim=1), out=ws_mem).addcmul_(memory, coef_m, value=-1.0)
        both, both_l, both_r_next = halves[(steps - t) & 1]
        if n_w == 1:
            torch.addcmul(g_mem, both_r, saved["keep"][t], out=both_r_next)  # + ḡ ⊙ (1 - e wᵀ)
        else:
            torch.add(g_mem, g_keep.transpose(1, 2), out=both_r_next)
        both_r = both_r_next
        # raw head parameters p_t
        g_scal = torch.stack((g_beta, g_gm1, g_gate), dim=-1)
        g_p = torch.cat((g_keys.view(b, -1), g_scal.view(b, -1), g_s.view(b, -1), g_ea.view(b, -1)), dim=1)
        g_p = torch.mul(g_p, pre["d_p"][t], out=gp_list[t])
        g_h = torch.addmm(g_h, g_p, w_p)
        # controller
        if dims.lstm:
            g_g, g_c = lstm_cell_backward(g_h, g_c, pre["xd"][t], pre["o_dtanh"][t], pre["f"][t], out=gg_list[t])
        else:
            g_g = torch.mul(g_h, pre["dh"][t], out=gg_list[t])
        g_z = torch.addmm(g_zs[t - 1], g_g, w_z) if t > 0 else g_g.mm(w_z)
    flat_g = g_gates.flatten(0, 1)
    flat_p = g_params.flatten(0, 1)
    g_w_z = flat_g.t().mm(zs[:-1].flatten(0, 1))
    g_w_p = flat_p.t().mm(zs[1:, :, :n_h].flatten(0, 1))
    return g_gates, g_z, g_c, both_r.clone(), g_w_next, g_w_z, g_w_p, flat_p.sum(0)


class NTMLoop(torch.autograd.Function):
    """The input projection and the loop as one autograd node with a hand-written backward:
    :func:`run_forward` / :func:`run_backward`, or with ``lib`` (the C kernels of ``kernel.c``,
    loaded by ``cpu_kernel.py``) ``kernel_sequence.kernel_forward`` / ``kernel_backward``. The input
    weights' gradient is ``(Xᵀ Ḡ)ᵀ``: BLAS is several times faster at it than at ``Ḡᵀ X`` for a
    narrow ``X`` (d_in = 9 columns, T·B rows)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lib: ctypes.CDLL | None,
        dims: Dims,
        x: torch.Tensor,
        w_x: torch.Tensor,
        bias: torch.Tensor,
        z0: torch.Tensor,
        c0: torch.Tensor,
        mem0: torch.Tensor,
        w0: torch.Tensor,
        w_z: torch.Tensor,
        w_p: torch.Tensor,
        b_p: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)
        xp, x_flat = input_projection(x, w_x, bias)
        if lib is None:
            saved = Saved()
            out = run_forward(dims, xp, z0, c0, mem0, w0, w_z, w_p, b_p, saved)
            ctx.saved = (saved, out.zs._base)
        else:
            keep: dict[str, Any] = {}
            out = kernel_forward(lib, dims, xp, z0, c0, mem0, w0, w_z, w_p, b_p, keep)
            ctx.saved = keep
        ctx.lib, ctx.dims, ctx.x_shape = lib, dims, x.shape
        ctx.save_for_backward(x_flat, w_x, w_z, w_p)
        return tuple(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x_flat, w_x, w_z, w_p = ctx.saved_tensors
        if ctx.lib is None:
            saved, zs = ctx.saved
            g = run_backward(ctx.dims, saved, zs, LoopOut(*grads), w_z, w_p)
        else:
            g = kernel_backward(ctx.lib, ctx.dims, ctx.saved, LoopOut(*grads), w_z, w_p)
        g_xp, g_z0, g_c0, g_mem0, g_w0, g_w_z, g_w_p, g_b_p = g
        flat_g = g_xp.flatten(0, 1)  # (T·B, G)
        g_w_x = x_flat.t().mm(flat_g).t()
        g_b = flat_g.sum(0)
        g_x = None
        if ctx.needs_input_grad[2]:
            b, steps = ctx.x_shape[0], ctx.x_shape[1]
            g_x = flat_g.mm(w_x).view(steps, b, -1).transpose(0, 1)
        ctx.saved = None  # after the last read of g_xp: on the kernel path a view of the forward's pooled arena
        g_c0 = g_c0 if ctx.dims.lstm else None
        return None, None, g_x, g_w_x, g_b, g_z0, g_c0, g_mem0, g_w0, g_w_z, g_w_p, g_b_p

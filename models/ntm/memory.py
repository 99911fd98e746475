"""NTM addressing and memory access as pure, batched functions (Graves et al. 2014, §3).

Notation: ``B`` batch, ``H`` heads addressed together, ``N`` memory slots, ``M`` slot width,
``S = 2R+1`` allowed shifts for a shift range ``R`` (offsets ``-R..R`` in that order).
Every function works on all heads of all sequences at once; none loops over batch, heads or
slots, none mutates its arguments, and every one is differentiable by autograd. They are the
reference: the model's loop (``sequence.py``) computes the same equations fused over a step,
with the memory held transposed, and ``vjp.py`` / ``bptt.py`` differentiate them by hand.

Addressing, per head, from the previous weighting ``w_{t-1}`` and a memory ``M`` (the model
addresses and reads ``M_{t-1}``, the memory before the step's write; see ``sequence.py``):
    w^c_t  = softmax(β_t K[k_t, M_t(i)])                          content      (eq. 5, 6)
    w^g_t  = g_t w^c_t + (1 - g_t) w_{t-1}                       interpolation (eq. 7)
    w̃_t(i) = Σ_j w^g_t(j) s_t(i - j)   (indices modulo N)         shift         (eq. 8)
    w_t(i) = w̃_t(i)^γ_t / Σ_j w̃_t(j)^γ_t                          sharpening    (eq. 9)
Access:
    r_t = Σ_i w_t(i) M_t(i)                                        read          (eq. 2)
    M̃_t(i) = M_{t-1}(i) [1 - w_t(i) e_t],  M_t(i) = M̃_t(i) + w_t(i) a_t    write (eq. 3, 4)
"""
from __future__ import annotations

import torch

COSINE_EPS = 1e-8  # norms below this are clamped, so a zero key or slot gives similarity 0
SHARPEN_EPS = 1e-16  # w̃ is clamped here before the log: finite at w̃ = 0, exact above


def inverse_norm(v: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """``1 / max(‖v‖, ε)`` over the last dimension: ``(..., M) -> (...)``."""
    return v.norm(dim=-1).clamp_min(eps).reciprocal()


def cosine_similarity(keys: torch.Tensor, memory: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """``K[k, M(i)] = k·M(i) / (max(‖k‖, ε) max(‖M(i)‖, ε))``, every head against every slot.

    Eq. 6 with its norms clamped at ``ε``: a zero key or a zero slot gives similarity 0
    (never NaN); above ``ε`` it is exactly the cosine.

    Args:
        keys: ``(B, H, M)``.
        memory: ``(B, N, M)``.
    Returns:
        ``(B, H, N)``.
    """
    dots = torch.bmm(keys, memory.transpose(1, 2))  # (B, H, N)
    return dots * inverse_norm(keys, eps).unsqueeze(-1) * inverse_norm(memory, eps).unsqueeze(1)


def content_weighting(
    keys: torch.Tensor, strengths: torch.Tensor, memory: torch.Tensor, eps: float = COSINE_EPS
) -> torch.Tensor:
    """``w^c(i) = exp(β K[k, M(i)]) / Σ_j exp(β K[k, M(j)])`` (eq. 5).

    Args:
        keys: ``(B, H, M)``; strengths ``β``: ``(B, H)``, ``β ≥ 0``; memory: ``(B, N, M)``.
    Returns:
        ``(B, H, N)``, each row a distribution over slots.
    """
    return torch.softmax(strengths.unsqueeze(-1) * cosine_similarity(keys, memory, eps), dim=-1)


def interpolate(w_content: torch.Tensor, w_prev: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``w^g = g w^c + (1 - g) w_{t-1}`` (eq. 7); ``w_content``, ``w_prev``: ``(B, H, N)``, gate ``g``: ``(B, H)``."""
    return torch.lerp(w_prev, w_content, gate.unsqueeze(-1))


def circular_pad(x: torch.Tensor, r: int) -> torch.Tensor:
    """Pad the last dimension circularly by ``r`` on each side: ``out[j] = x[(j - r) mod N]``."""
    n = x.shape[-1]
    return torch.cat((x[..., n - r :], x, x[..., :r]), dim=-1) if r else x


def shift(w: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Circular convolution ``w̃(i) = Σ_j w(j) s(i - j)``, indices modulo N (eq. 8).

    ``s`` is non-zero only on offsets ``k = -R..R``, so ``w̃(i) = Σ_k s(k) w(i - k)``: with ``w``
    padded circularly by R, each offset is one slice of the padded tensor, weighted and summed
    for all batches and heads at once (S batched multiply-adds, no per-sample convolution).
    ``s = one-hot(+1)`` moves every weight one slot forward.

    Args:
        w: ``(B, H, N)``; shifts ``s``: ``(B, H, S)`` over offsets ``-R..R``, ``S = 2R + 1 ≤ N``.
    Returns:
        ``(B, H, N)``.
    """
    n, s = w.shape[-1], shifts.shape[-1]
    r = s // 2
    padded = circular_pad(w, r)  # padded[i + R - k] = w(i - k)
    out = padded[..., 2 * r : 2 * r + n] * shifts[..., :1]
    for m in range(1, s):  # offset k = m - R sits at start R - k = 2R - m
        out = out.addcmul_(padded[..., 2 * r - m : 2 * r - m + n], shifts[..., m : m + 1])
    return out


def sharpen(w: torch.Tensor, gamma: torch.Tensor, eps: float = SHARPEN_EPS) -> torch.Tensor:
    """``w(i) = w̃(i)^γ / Σ_j w̃(j)^γ`` (eq. 9), computed as ``softmax_i(γ log max(w̃(i), ε))``.

    The log-space form never overflows or divides by zero, even where ``w̃`` underflows
    to 0 or ``γ`` is large; it equals the power form wherever ``w̃ ≥ ε``.

    Args:
        w: ``(B, H, N)``, non-negative; gamma ``γ``: ``(B, H)``, ``γ ≥ 1``.
    """
    return torch.softmax(gamma.unsqueeze(-1) * w.clamp_min(eps).log(), dim=-1)


def address(
    keys: torch.Tensor,
    strengths: torch.Tensor,
    gate: torch.Tensor,
    shifts: torch.Tensor,
    gamma: torch.Tensor,
    w_prev: torch.Tensor,
    memory: torch.Tensor,
) -> torch.Tensor:
    """The whole addressing pipeline (Fig. 2): content, interpolation, shift, sharpening.

    Args:
        keys ``k``: ``(B, H, M)``; strengths ``β``, gate ``g``, gamma ``γ``: ``(B, H)``;
        shifts ``s``: ``(B, H, S)``; w_prev ``w_{t-1}``: ``(B, H, N)``; memory ``M_t``: ``(B, N, M)``.
    Returns:
        ``w_t``: ``(B, H, N)``.
    """
    w_c = content_weighting(keys, strengths, memory)
    return sharpen(shift(interpolate(w_c, w_prev, gate), shifts), gamma)


def read(memory: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``r = Σ_i w(i) M(i)`` (eq. 2); memory ``(B, N, M)``, w ``(B, R, N)`` -> ``(B, R, M)``."""
    return torch.bmm(w, memory)


def write(memory: torch.Tensor, w: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """Erase then add (eq. 3, 4), all heads' erases before all heads' adds.

        M̃_t(i) = M_{t-1}(i) ∏_h [1 - w^h_t(i) e^h_t]
        M_t(i) = M̃_t(i) + Σ_h w^h_t(i) a^h_t

    With one head this is exactly eq. 3-4. Erases commute (they multiply), so with several
    heads the only ordering choice is erase-all-then-add-all, as Graves et al. suggest.

    Args:
        memory: ``(B, N, M)``; w: ``(B, W, N)``; erase ``e`` (in [0, 1]) and add ``a``: ``(B, W, M)``.
    Returns:
        the new memory ``(B, N, M)``.
    """
    w_t = w.transpose(1, 2)  # (B, N, W)
    if w.shape[1] == 1:
        keep = 1.0 - torch.bmm(w_t, erase)  # (B, N, M)
    else:
        keep = (1.0 - w_t.unsqueeze(-1) * erase.unsqueeze(1)).prod(dim=2)  # (B, N, W, M) -> (B, N, M)
    return torch.addcmul(torch.bmm(w_t, add), memory, keep)

"""Hand-derived backward passes (vector-Jacobian products) of the operations in ``memory.py``.

Each ``*_backward`` takes the gradient ``ḡ`` of the operation's output and the operation's
inputs, and returns the gradients of the inputs. They are the derivations, one operation at
a time, each tested against autograd; ``bptt.py`` and the C kernel (``kernel.c``) run the same
equations fused over a whole step, on intermediates kept from the forward. Shapes as in
``memory.py``: ``B`` batch, ``H`` heads, ``N`` slots, ``M`` width, ``S = 2R + 1`` shifts.

Why this module stays in the library: ``bptt.py`` calls :func:`write_backward` itself (the
write with more than one write head), and the other functions are the written-out derivations
that ``bptt.py``'s fused backward cites step by step (``kernel.c`` follows ``bptt.py`` term by
term). ``tests/test_ntm.py`` checks each against autograd alone, so that a wrong term shows up
in the operation that has it rather than somewhere in a whole step's gradient.
"""
from __future__ import annotations

import torch

from memtasks.models.ntm.memory import COSINE_EPS, SHARPEN_EPS, circular_pad


def softmax_backward(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = softmax(x)`` over the last dimension: ``x̄ = y ⊙ (ḡ - Σ_j ḡ_j y_j)``."""
    return torch._softmax_backward_data(grad, y, -1, y.dtype)


def content_weighting_backward(
    grad: torch.Tensor, keys: torch.Tensor, strengths: torch.Tensor, memory: torch.Tensor, eps: float = COSINE_EPS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(k̄, β̄, M̄)`` for ``w^c = softmax(β K)``, ``K(h, i) = (k_h · M(i)) ρ_h σ_i`` with
    ``ρ_h = 1 / max(‖k_h‖, ε)`` and ``σ_i = 1 / max(‖M(i)‖, ε)``.

    With ``z = β K``, ``K̄ = β z̄`` and ``u = K̄ ⊙ K``:
        z̄ = w^c ⊙ (ḡ - Σ_i ḡ w^c),     β̄_h = Σ_i z̄(h, i) K(h, i)
        k̄_h  = Σ_i K̄(h, i) ρ_h σ_i M(i)  -  [‖k_h‖ > ε] ρ_h² (Σ_i u(h, i)) k_h
        M̄(i) = Σ_h K̄(h, i) ρ_h σ_i k_h  -  [‖M(i)‖ > ε] σ_i² (Σ_h u(h, i)) M(i)
    The second terms come from ``∂ρ/∂k = -ρ³ k`` and ``∂σ_i/∂M(i) = -σ_i³ M(i)`` where the norm
    is above ``ε``; a clamped norm is a constant.
    """
    key_norm, mem_norm = keys.norm(dim=-1), memory.norm(dim=-1)
    rho, sigma = key_norm.clamp_min(eps).reciprocal(), mem_norm.clamp_min(eps).reciprocal()
    sim = torch.bmm(keys, memory.transpose(1, 2)) * rho.unsqueeze(-1) * sigma.unsqueeze(1)
    w = torch.softmax(strengths.unsqueeze(-1) * sim, dim=-1)
    g_z = softmax_backward(grad, w)
    g_strengths = torch.linalg.vecdot(g_z, sim)
    g_sim = g_z * strengths.unsqueeze(-1)
    u = g_sim * sim
    coef_k = torch.where(key_norm > eps, rho * rho * u.sum(-1), 0.0)  # (B, H)
    coef_m = torch.where(mem_norm > eps, sigma * sigma * u.sum(1), 0.0)  # (B, N)
    g_dots = g_sim * rho.unsqueeze(-1) * sigma.unsqueeze(1)  # ∂L/∂(k_h · M(i))
    g_keys = torch.bmm(g_dots, memory) - coef_k.unsqueeze(-1) * keys
    g_memory = torch.bmm(g_dots.transpose(1, 2), keys) - coef_m.unsqueeze(-1) * memory
    return g_keys, g_strengths, g_memory


def interpolate_backward(
    grad: torch.Tensor, w_content: torch.Tensor, w_prev: torch.Tensor, gate: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w̄^c, w̄_{t-1}, ḡ_g)`` for ``w^g = g w^c + (1 - g) w_{t-1}``; gate ``(B, H)``:

        w̄^c = g ḡ,   w̄_{t-1} = (1 - g) ḡ,   ḡ_g = Σ_i ḡ(i) (w^c(i) - w_{t-1}(i))
    """
    g_content = grad * gate.unsqueeze(-1)
    return g_content, grad - g_content, torch.linalg.vecdot(grad, w_content - w_prev)


def shift_backward(grad: torch.Tensor, w: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w̄, s̄)`` for ``w̃(i) = Σ_k s(k) w(i - k)``, offsets ``k = -R..R``:

        s̄(k) = Σ_i ḡ(i) w(i - k)        w̄(j) = Σ_k s(k) ḡ(j + k)
    The second is the circular correlation, the adjoint of eq. 8: the same padded slices, with
    the offsets read the other way.
    """
    n, s = w.shape[-1], shifts.shape[-1]
    r = s // 2
    padded = circular_pad(w, r)  # padded[i + R - k] = w(i - k)
    g_shifts = torch.stack([torch.linalg.vecdot(grad, padded[..., 2 * r - m : 2 * r - m + n]) for m in range(s)], -1)
    g_padded = circular_pad(grad, r)  # g_padded[j + R + k] = ḡ(j + k)
    g_w = g_padded[..., :n] * shifts[..., :1]
    for m in range(1, s):
        g_w = g_w.addcmul_(g_padded[..., m : m + n], shifts[..., m : m + 1])
    return g_w, g_shifts


def sharpen_backward(
    grad: torch.Tensor, w_tilde: torch.Tensor, gamma: torch.Tensor, eps: float = SHARPEN_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w̃̄, γ̄)`` for ``w = softmax(γ ℓ)``, ``ℓ = log max(w̃, ε)``; gamma ``(B, H)``:

        ℓ̄ = w ⊙ (ḡ - Σ_i ḡ w),   γ̄ = Σ_i ℓ̄(i) ℓ(i),   w̃̄(i) = γ ℓ̄(i) / w̃(i) where w̃(i) > ε, else 0
    """
    clamped = w_tilde.clamp_min(eps)
    log_w = clamped.log()
    w = torch.softmax(gamma.unsqueeze(-1) * log_w, dim=-1)
    g_logits = softmax_backward(grad, w)
    g_gamma = torch.linalg.vecdot(g_logits, log_w)
    g_w = torch.where(w_tilde > eps, gamma.unsqueeze(-1) * g_logits / clamped, 0.0)
    return g_w, g_gamma


def read_backward(grad: torch.Tensor, w: torch.Tensor, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w̄, M̄)`` for ``r = w M`` (``(B, R, N) @ (B, N, M)``): ``w̄ = ḡ Mᵀ``, ``M̄ = wᵀ ḡ``."""
    return torch.bmm(grad, memory.transpose(1, 2)), torch.bmm(w.transpose(1, 2), grad)


def write_backward(
    grad: torch.Tensor, memory: torch.Tensor, w: torch.Tensor, erase: torch.Tensor, add: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(M̄_{t-1}, w̄, ē, ā)`` for ``M_t = M_{t-1} ⊙ Π_h F_h + Σ_h w_h a_hᵀ``, ``F_h = 1 - w_h e_hᵀ``:

        M̄_{t-1} = ḡ ⊙ Π_h F_h,            F̄_h = ḡ ⊙ M_{t-1} ⊙ Π_{h' ≠ h} F_h'
        w̄_h(i) = Σ_j ḡ(i, j) a_h(j) - F̄_h(i, j) e_h(j)
        ē_h(j) = -Σ_i F̄_h(i, j) w_h(i),    ā_h(j) = Σ_i w_h(i) ḡ(i, j)
    ``Π_{h' ≠ h}`` is the product of an exclusive prefix and an exclusive suffix product, so no
    factor is ever divided out (``F_h`` may be 0). Shapes: ``grad``, ``memory`` ``(B, N, M)``,
    ``w`` ``(B, W, N)``, ``erase``, ``add`` ``(B, W, M)``.
    """
    factors = 1.0 - w.unsqueeze(-1) * erase.unsqueeze(2)  # (B, W, N, M)
    ones = torch.ones_like(factors[:, :1])
    before = torch.cat((ones, factors[:, :-1]), dim=1).cumprod(dim=1)  # Π_{h' < h}
    after = torch.cat((factors[:, 1:], ones), dim=1).flip(1).cumprod(dim=1).flip(1)  # Π_{h' > h}
    keep = before[:, -1] * factors[:, -1]
    g_factors = (grad * memory).unsqueeze(1) * before * after  # (B, W, N, M)
    g_w = torch.bmm(add, grad.transpose(1, 2)) - (g_factors * erase.unsqueeze(2)).sum(-1)
    g_erase = -(g_factors * w.unsqueeze(-1)).sum(2)
    return grad * keep, g_w, g_erase, torch.bmm(w, grad)

"""The DNC's memory operations as pure functions (Graves et al. 2016, Nature, Methods).

Notation follows the paper: N memory slots of width W, R read heads, one write head.
``M`` is the memory ``(B, N, W)``, ``u`` the usage ``(B, N)``, ``L`` the temporal link
matrix ``(B, N, N)``, ``p`` the precedence ``(B, N)``, ``w^w`` the write weighting
``(B, N)``, ``w^r`` the read weightings ``(B, R, N)``. Every function is batch first,
vectorised over batch and heads, and free of side effects; the naive loops they are
checked against live in ``tests/test_dnc.py``.

These are the readable definitions, composed by ``step.py`` into the model's implementation
on GPUs and wherever the C kernels of ``cpu_kernel.py`` are not used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6  # keeps the cosine similarity finite (and differentiable) for all-zero rows and keys


def oneplus(x: torch.Tensor) -> torch.Tensor:
    """oneplus(x) = 1 + log(1 + e^x), the paper's map onto [1, inf) for key strengths."""
    return 1.0 + F.softplus(x)


def smooth_norm(x: torch.Tensor) -> torch.Tensor:
    """‖x‖_ε = sqrt(Σ_k x[k]² + ε) over the last dimension: a norm with a gradient at 0."""
    return (x * x).sum(-1).add(EPS).sqrt()


def content_weighting(
    memory: torch.Tensor, keys: torch.Tensor, strengths: torch.Tensor, memory_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """Content-based addressing C(M, k, β)[i] = exp(β D(k, M[i])) / Σ_j exp(β D(k, M[j])).

    D(u, v) = u·v / (‖u‖_ε ‖v‖_ε) is the cosine similarity, with the smoothed norm
    ``smooth_norm`` so that an all-zero memory (the initial state) gives a uniform weighting.

    Args:
        memory: ``M`` ``(B, N, W)``.
        keys: ``k`` ``(B, H, W)``, one per head.
        strengths: ``β`` ``(B, H)``, each >= 1.
        memory_norms: ``‖M[i]‖_ε`` ``(B, N)`` if already known (the model reuses them).
    Returns:
        ``(B, H, N)``, each row summing to 1.
    """
    if memory_norms is None:
        memory_norms = smooth_norm(memory)
    dots = torch.bmm(keys, memory.transpose(1, 2))  # (B, H, N)
    similarity = dots / (smooth_norm(keys).unsqueeze(-1) * memory_norms.unsqueeze(1))
    return torch.softmax(strengths.unsqueeze(-1) * similarity, dim=-1)


def retention(free_gates: torch.Tensor, read_weightings: torch.Tensor) -> torch.Tensor:
    """Memory retention ψ_t = Π_{i=1..R} (1 − f^i_t w^{r,i}_{t−1}).

    Args:
        free_gates: ``f_t`` ``(B, R)`` in [0, 1].
        read_weightings: ``w^r_{t−1}`` ``(B, R, N)``.
    Returns:
        ``ψ_t`` ``(B, N)``.
    """
    return torch.prod(1.0 - free_gates.unsqueeze(-1) * read_weightings, dim=1)


def update_usage(usage: torch.Tensor, write_weighting: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """Usage u_t = (u_{t−1} + w^w_{t−1} − u_{t−1} ⊙ w^w_{t−1}) ⊙ ψ_t.

    Args:
        usage: ``u_{t−1}`` ``(B, N)``.
        write_weighting: the previous step's ``w^w_{t−1}`` ``(B, N)``.
        psi: ``ψ_t`` ``(B, N)`` from :func:`retention`.
    """
    return (usage + write_weighting - usage * write_weighting) * psi


def allocation_weighting(usage: torch.Tensor) -> torch.Tensor:
    """Allocation a_t[φ_t[j]] = (1 − u_t[φ_t[j]]) Π_{i<j} u_t[φ_t[i]].

    ``φ_t`` is the free list: the slot indices sorted by usage, least used first, ties broken
    by slot index (so the all-zero initial usage allocates slot 0 first). Vectorised
    as one sort, an exclusive cumulative product and a scatter back to slot order. As in the
    paper, no gradient flows through the sort order itself, only through the usages.

    Args:
        usage: ``u_t`` ``(B, N)`` in [0, 1].
    Returns:
        ``a_t`` ``(B, N)``, summing to at most 1.
    """
    sorted_usage, phi = torch.sort(usage, dim=-1, stable=True)  # (B, N) ascending; ties by slot index
    prod_before = torch.cumprod(sorted_usage, dim=-1)  # Π_{i<=j}
    prod_before = torch.cat([torch.ones_like(prod_before[:, :1]), prod_before[:, :-1]], dim=-1)  # Π_{i<j}
    sorted_alloc = (1.0 - sorted_usage) * prod_before
    return torch.zeros_like(usage).scatter(-1, phi, sorted_alloc)


def write_weighting(
    allocation: torch.Tensor, write_content: torch.Tensor, allocation_gate: torch.Tensor, write_gate: torch.Tensor
) -> torch.Tensor:
    """Write weighting w^w_t = g^w_t [g^a_t a_t + (1 − g^a_t) c^w_t].

    Args:
        allocation: ``a_t`` ``(B, N)``.
        write_content: ``c^w_t = C(M_{t−1}, k^w_t, β^w_t)`` ``(B, N)``.
        allocation_gate: ``g^a_t`` ``(B, 1)``.
        write_gate: ``g^w_t`` ``(B, 1)``.
    """
    return write_gate * (allocation_gate * allocation + (1.0 - allocation_gate) * write_content)


def write_memory(
    memory: torch.Tensor, write_weighting: torch.Tensor, erase: torch.Tensor, write_vector: torch.Tensor
) -> torch.Tensor:
    """Erase then add: M_t = M_{t−1} ⊙ (E − w^w_t e_tᵀ) + w^w_t v_tᵀ (E is all ones).

    Args:
        memory: ``M_{t−1}`` ``(B, N, W)``.
        write_weighting: ``w^w_t`` ``(B, N)``.
        erase: ``e_t`` ``(B, W)`` in [0, 1].
        write_vector: ``v_t`` ``(B, W)``.
    """
    w = write_weighting.unsqueeze(-1)  # (B, N, 1)
    return memory * (1.0 - w * erase.unsqueeze(1)) + w * write_vector.unsqueeze(1)


def update_precedence(precedence: torch.Tensor, write_weighting: torch.Tensor) -> torch.Tensor:
    """Precedence p_t = (1 − Σ_i w^w_t[i]) p_{t−1} + w^w_t, with p_0 = 0.

    Args:
        precedence: ``p_{t−1}`` ``(B, N)``.
        write_weighting: ``w^w_t`` ``(B, N)``.
    """
    return (1.0 - write_weighting.sum(-1, keepdim=True)) * precedence + write_weighting


def update_link(link: torch.Tensor, write_weighting: torch.Tensor, precedence: torch.Tensor) -> torch.Tensor:
    """Temporal links L_t[i, j] = (1 − w^w_t[i] − w^w_t[j]) L_{t−1}[i, j] + w^w_t[i] p_{t−1}[j].

    with L_t[i, i] = 0 and L_0 = 0. ``L_t[i, j]`` is the degree to which slot i was written
    right after slot j.

    Args:
        link: ``L_{t−1}`` ``(B, N, N)``.
        write_weighting: ``w^w_t`` ``(B, N)``.
        precedence: the *previous* precedence ``p_{t−1}`` ``(B, N)``.
    """
    w_i = write_weighting.unsqueeze(2)  # (B, N, 1)
    new = torch.lerp(link, precedence.unsqueeze(1), w_i)  # (1 − w_i) L + w_i p_j: no decay matrix is built
    new = torch.addcmul(new, write_weighting.unsqueeze(1), link, value=-1.0)  # − w_j L
    off_diagonal = 1.0 - torch.eye(link.shape[-1], dtype=link.dtype, device=link.device)
    return new * off_diagonal  # only w_i p_i lands on the diagonal, as L_{t−1} has none


def directional_weightings(link: torch.Tensor, read_weightings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward f^i_t = L_t w^{r,i}_{t−1} and backward b^i_t = L_tᵀ w^{r,i}_{t−1} weightings.

    Args:
        link: ``L_t`` ``(B, N, N)``.
        read_weightings: ``w^r_{t−1}`` ``(B, R, N)``.
    Returns:
        ``(f_t, b_t)``, each ``(B, R, N)``.
    """
    forward = torch.bmm(read_weightings, link.transpose(1, 2))  # f[r, i] = Σ_j L[i, j] w[r, j]
    backward = torch.bmm(read_weightings, link)  # b[r, j] = Σ_i w[r, i] L[i, j]
    return forward, backward


def read_weighting(
    backward: torch.Tensor, content: torch.Tensor, forward: torch.Tensor, read_modes: torch.Tensor
) -> torch.Tensor:
    """Read weightings w^{r,i}_t = π^i_t[1] b^i_t + π^i_t[2] c^{r,i}_t + π^i_t[3] f^i_t.

    Args:
        backward, content, forward: ``b_t``, ``c^r_t = C(M_t, k^r_t, β^r_t)``, ``f_t``, each ``(B, R, N)``.
        read_modes: ``π_t`` ``(B, R, 3)``, a softmax over (backward, content, forward).
    """
    modes = read_modes.unsqueeze(-1)  # (B, R, 3, 1)
    return modes[:, :, 0] * backward + modes[:, :, 1] * content + modes[:, :, 2] * forward


def read_memory(memory: torch.Tensor, read_weightings: torch.Tensor) -> torch.Tensor:
    """Read vectors r^i_t = M_tᵀ w^{r,i}_t.

    Args:
        memory: ``M_t`` ``(B, N, W)``.
        read_weightings: ``w^r_t`` ``(B, R, N)``.
    Returns:
        ``(B, R, W)``.
    """
    return torch.bmm(read_weightings, memory)

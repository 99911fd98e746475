"""One memory step of the DNC from PyTorch operators: the model's path wherever the C kernels
are not used (GPU, float64, no C compiler, ``cpu_kernel=False``), and the reference they are
tested against.

The order is the paper's (Methods): usage u_t, allocation a_t, write content c^w_t, write
weighting w^w_t, memory M_t, link L_t, directional weightings f_t and b_t, precedence p_t, read
content c^r_t, read weightings w^r_t, read vectors r_t.
"""
from __future__ import annotations

import torch

from memtasks.models.dnc import memory as mem
from memtasks.models.dnc.interface import split_interface

Step = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def memory_step_torch(
    xi: torch.Tensor,
    memory: torch.Tensor,
    usage: torch.Tensor,
    link: torch.Tensor,
    precedence: torch.Tensor,
    w_write: torch.Tensor,
    w_read: torch.Tensor,
    keep: dict[str, torch.Tensor] | None = None,
) -> Step:
    """The memory step, differentiated by autograd.

    ``keep``, when given, receives the intermediates a figure shows: the allocation weighting
    a_t ``(B, N)`` and the read modes π_t ``(B, R, 3)``.

    Args:
        xi: ξ_t ``(B, S)``, the raw interface vector (``interface.py``).
        memory: M_{t−1} ``(B, N, W)``; usage: u_{t−1} ``(B, N)``; link: L_{t−1} ``(B, N, N)``;
        precedence: p_{t−1} ``(B, N)``; w_write: w^w_{t−1} ``(B, N)``; w_read: w^r_{t−1} ``(B, R, N)``.
    Returns:
        M_t, u_t, L_t, p_t, w^w_t, w^r_t, and the read vectors r_t ``(B, R, W)``.
    """
    R, W = w_read.shape[1], memory.shape[2]
    it = split_interface(xi, W, R)
    usage = mem.update_usage(usage, w_write, mem.retention(it.free_gates, w_read))
    allocation = mem.allocation_weighting(usage)
    write_content = mem.content_weighting(memory, it.keys[:, :1], it.strengths[:, :1]).squeeze(1)
    w_write = mem.write_weighting(allocation, write_content, it.allocation_gate, it.write_gate)
    memory = mem.write_memory(memory, w_write, it.erase, it.write_vector)
    new_link = mem.update_link(link, w_write, precedence)
    forward, backward = mem.directional_weightings(new_link, w_read)
    precedence = mem.update_precedence(precedence, w_write)
    read_content = mem.content_weighting(memory, it.keys[:, 1:], it.strengths[:, 1:])
    w_read = mem.read_weighting(backward, read_content, forward, it.read_modes)
    if keep is not None:
        keep["allocation"], keep["read_modes"] = allocation, it.read_modes
    return memory, usage, new_link, precedence, w_write, w_read, mem.read_memory(memory, w_read)

"""The interface vector ξ_t: how the controller's output is cut into the memory's controls.

One linear layer maps the controller's hidden state h_t to ξ_t; the pieces are slices of it,
each passed through the paper's nonlinearity (Graves et al. 2016, Methods, "Interface
parameters"). The slices are laid out so that every piece that shares a nonlinearity is
contiguous, so each nonlinearity is one call per step:

====================  ======  ===============  ==========================
piece                 size    nonlinearity     meaning
====================  ======  ===============  ==========================
k^w_t                 W       none             write key
k^{r,i}_t             R·W     none             read keys
β^w_t                 1       oneplus          write strength
β^{r,i}_t             R       oneplus          read strengths
e_t                   W       σ                erase vector
f^i_t                 R       σ                free gates
g^a_t                 1       σ                allocation gate
g^w_t                 1       σ                write gate
v_t                   W       none             write vector
π^i_t                 3·R     softmax over 3   read modes (backward, content, forward)
====================  ======  ===============  ==========================
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from memtasks.models.dnc.memory import oneplus


class Interface(NamedTuple):
    """The memory controls of one step, batch first."""

    keys: torch.Tensor  # (B, 1 + R, W): the write key, then the R read keys
    strengths: torch.Tensor  # (B, 1 + R): β^w, then the β^{r,i}; each >= 1
    erase: torch.Tensor  # (B, W) in [0, 1]
    free_gates: torch.Tensor  # (B, R) in [0, 1]
    allocation_gate: torch.Tensor  # (B, 1) in [0, 1]
    write_gate: torch.Tensor  # (B, 1) in [0, 1]
    write_vector: torch.Tensor  # (B, W)
    read_modes: torch.Tensor  # (B, R, 3): softmax over (backward, content, forward)


def interface_size(width: int, read_heads: int) -> int:
    """Length of ξ_t: R·W + 3W + 5R + 3."""
    return read_heads * width + 3 * width + 5 * read_heads + 3


def split_interface(xi: torch.Tensor, width: int, read_heads: int) -> Interface:
    """Cut ξ_t ``(B, interface_size)`` into an :class:`Interface`, applying each nonlinearity."""
    W, R = width, read_heads
    B = xi.shape[0]
    a = (1 + R) * W  # end of the keys
    b = a + 1 + R  # end of the strengths
    c = b + W + R + 2  # end of the sigmoid block
    d = c + W  # end of the write vector
    gates = torch.sigmoid(xi[:, b:c])
    return Interface(
        keys=xi[:, :a].view(B, 1 + R, W),
        strengths=oneplus(xi[:, a:b]),
        erase=gates[:, :W],
        free_gates=gates[:, W : W + R],
        allocation_gate=gates[:, W + R : W + R + 1],
        write_gate=gates[:, W + R + 1 :],
        write_vector=xi[:, c:d],
        read_modes=torch.softmax(xi[:, d:].view(B, R, 3), dim=-1),
    )

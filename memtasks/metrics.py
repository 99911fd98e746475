"""Pure metric functions over scored steps. Every function averages over the batch.

For ``bce`` tasks the model emits logits ``z`` for target bits ``y`` and, per sequence,
    cost        = sum over scored steps and channels of  -[y log2 σ(z) + (1-y) log2(1-σ(z))]   (bits)
    bit_errors  = sum over scored steps and channels of  [ (σ(z) > 0.5) != y ]
    seq_accuracy = share of sequences with zero bit errors.
For ``mse`` tasks: ``mse`` is the mean over scored elements of (output - target)².
"""
from __future__ import annotations

import math

from memtasks.core.lazy import LazyModule, torch

F = LazyModule("torch.nn.functional")  # imported on first use, as torch

LN2 = math.log(2.0)


def _scored(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.unsqueeze(-1).to(like.dtype).expand_as(like)


def per_sequence_cost_bits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` summed binary cross-entropy in bits over each sequence's scored steps."""
    logits = logits.float()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") / LN2
    return (ce * _scored(mask, ce)).sum(dim=(1, 2))


def per_sequence_bit_errors(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` number of wrong bits (logit > 0 means 1) over each sequence's scored steps."""
    wrong = ((logits.float() > 0).to(targets.dtype) != targets).to(torch.float32)
    return (wrong * _scored(mask, wrong)).sum(dim=(1, 2))


def bce_metrics(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``cost`` (bits/sequence), ``bit_errors`` (per sequence) and ``seq_accuracy``."""
    with torch.no_grad():
        cost = per_sequence_cost_bits(logits, targets, mask)
        errors = per_sequence_bit_errors(logits, targets, mask)
        return {
            "cost": cost.mean().item(),
            "bit_errors": errors.mean().item(),
            "seq_accuracy": (errors == 0).float().mean().item(),
        }


def mse_metrics(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        return {"mse": masked_mse(outputs, targets, mask).item()}


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy (nats) per scored bit: the training loss of bce tasks."""
    ce = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    w = _scored(mask, ce)
    return (ce * w).sum() / w.sum().clamp_min(1.0)


def masked_mse(outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per scored element: the training loss of mse tasks."""
    se = (outputs.float() - targets) ** 2
    w = _scored(mask, se)
    return (se * w).sum() / w.sum().clamp_min(1.0)

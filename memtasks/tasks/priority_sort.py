"""The priority sort task (Graves et al. 2014, §4.5)."""
from __future__ import annotations

from dataclasses import dataclass

from memtasks.core.config import ConfigError, check_int
from memtasks.core.lazy import torch
from memtasks.tasks import chance
from memtasks.tasks.base import NTM_PAPER_BUDGET, NTM_PAPER_SOURCE, Batch, Task, register_task

_MAX = 100_000


def n_outputs(n_inputs: int | torch.Tensor) -> int | torch.Tensor:
    """K = floor(4N/5): how many of the N inputs are written back."""
    return (4 * n_inputs) // 5


def priority_order(priorities: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Input indices by descending priority; ties keep input order; padding last.

    Args:
        priorities: ``(n, N)`` float.
        lengths: ``(n,)`` int64, the number of real inputs per row.
    Returns:
        ``(n, N)`` int64 indices.
    """
    valid = torch.arange(priorities.shape[1], device=priorities.device).unsqueeze(0) < lengths.unsqueeze(1)
    key = priorities.masked_fill(~valid, float("-inf"))
    return torch.sort(key, dim=1, descending=True, stable=True).indices


@register_task("priority_sort")
@dataclass(frozen=True)
class PrioritySort(Task):
    """Read N random bit vectors, each with a scalar priority, then write the highest-priority ones.

    Layout for N inputs (B = ``bits``; d_in = B+2, d_out = B), with K = floor(4N/5):
      * steps 0..N-1: a random B-bit vector on channels 0..B-1 and its priority, uniform in
        [-1, 1], on channel B;
      * step N: the delimiter, channel B+1 = 1;
      * steps N+1..N+K: zero input; the targets are the K highest-priority vectors, highest
        first (equal priorities keep input order). Only these are scored.
    A batch is right-padded with zeros, and padding is never scored. ``length`` is N.

    Worked example (bits=2, N=5, so K=4), time runs left to right::

        step      0   1   2   3   4   5   6   7   8   9
        in ch0    1   1   0   0   1   0   0   0   0   0
        in ch1    0   1   1   0   1   0   0   0   0   0
        in ch2   .2 -.7  .9 -.1  .5   0   0   0   0   0     <- priority
        in ch3    0   0   0   0   0   1   0   0   0   0     <- delimiter
        tgt ch0   0   0   0   0   0   0   0   1   1   0     (inputs 2, 4, 0, 3)
        tgt ch1   0   0   0   0   0   0   1   1   0   0
        scored    .   .   .   .   .   .   *   *   *   *

    Attributes:
        bits: data bits per vector (B).
        min_inputs, max_inputs: the training range of N (at least 2, so that K >= 1).
        generalise: the input counts N evaluated for length generalisation.
    """

    length_label = "input vectors N"
    paper_budget = NTM_PAPER_BUDGET
    paper_source = NTM_PAPER_SOURCE

    bits: int = 8
    min_inputs: int = 20
    max_inputs: int = 20
    generalise: tuple[int, ...] = (30, 40)

    def validate(self) -> None:
        check_int("priority_sort", "bits", self.bits, 1, 1024)
        check_int("priority_sort", "min_inputs", self.min_inputs, 2, _MAX)
        check_int("priority_sort", "max_inputs", self.max_inputs, self.min_inputs, _MAX)
        for n in self.generalise:
            check_int("priority_sort", "generalise", n, 2, _MAX)

    @property
    def d_in(self) -> int:
        return self.bits + 2

    @property
    def d_out(self) -> int:
        return self.bits

    @property
    def train_range(self) -> tuple[int, int]:
        return (self.min_inputs, self.max_inputs)

    def max_steps(self, length: int) -> int:
        return length + 1 + int(n_outputs(length))

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator) -> Batch:
        dev = generator.device
        n = lengths.shape[0]
        nb = self.bits
        N = int(lengths.max())
        n_min = int(lengths.min())
        if n_min < 2:
            raise ConfigError(f"priority_sort.length={n_min} is out of range; allowed: [2, {_MAX}]")
        k = n_outputs(lengths)  # (n,)
        K = int(n_outputs(N))
        T = N + 1 + K  # N + 1 + floor(4N/5) grows with N, so the longest row sets T

        valid = torch.arange(N, device=dev).unsqueeze(0) < lengths.unsqueeze(1)  # (n, N)
        data = torch.randint(0, 2, (n, N, nb), generator=generator, device=dev).float()
        data = data * valid.unsqueeze(-1)
        prio = (torch.rand(n, N, generator=generator, device=dev) * 2.0 - 1.0) * valid

        rows = torch.arange(n, device=dev)
        inputs = torch.zeros(n, T, self.d_in, device=dev)
        inputs[:, :N, :nb] = data
        inputs[:, :N, nb] = prio
        inputs[rows, lengths, nb + 1] = 1.0

        order = priority_order(prio, lengths)[:, :K]  # (n, K)
        top = data.gather(1, order.unsqueeze(-1).expand(n, K, nb))  # (n, K, B)
        j = torch.arange(K, device=dev).unsqueeze(0)
        top = top * (j < k.unsqueeze(1)).unsqueeze(-1)
        targets = torch.zeros(n, T, self.d_out, device=dev)
        # row b's answer j sits at N_b+1+j <= N+K = T-1; steps past K_b receive zeros
        targets[rows.unsqueeze(1), lengths.unsqueeze(1) + 1 + j] = top
        t = torch.arange(T, device=dev).unsqueeze(0)
        mask = (t > lengths.unsqueeze(1)) & (t <= (lengths + k).unsqueeze(1))
        return Batch(inputs, targets, mask, lengths, {"steps": lengths + 1 + k})

    def _moments_at(self, length: int) -> chance.TargetMoments:
        """Steps N+1..N+K carry the chosen vectors, whose bits are fair coins whatever the priorities."""
        k = int(n_outputs(length))
        return chance.uniform_bits(length + 1 + k, self.bits, slice(length + 1, length + 1 + k))

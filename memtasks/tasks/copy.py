"""The copy task (Graves et al. 2014, §4.1)."""
from __future__ import annotations

from dataclasses import dataclass

from memtasks.core.config import check_int
from memtasks.core.lazy import torch
from memtasks.tasks import chance
from memtasks.tasks.base import NTM_PAPER_BUDGET, NTM_PAPER_SOURCE, Batch, Task, register_task


@register_task("copy")
@dataclass(frozen=True)
class Copy(Task):
    """Read a sequence of random bit vectors, then write it back after a delimiter.

    Layout for a sequence of length L (B = ``bits`` data channels, d_in = B+1, d_out = B):
      * steps 0..L-1: a random B-bit vector on channels 0..B-1;
      * step L: the delimiter, channel B = 1;
      * steps L+1..2L: zero input; the targets are the L vectors in order. Only these are scored.
    A batch is right-padded with zeros to the longest sequence; padding is never scored.

    Worked example (bits=2, L=2), time runs left to right::

        step      0  1  2  3  4
        in ch0    1  0  0  0  0
        in ch1    0  1  0  0  0
        in ch2    0  0  1  0  0      <- delimiter
        tgt ch0   0  0  0  1  0
        tgt ch1   0  0  0  0  1
        scored    .  .  .  *  *

    Attributes:
        bits: data bits per vector (B).
        min_length, max_length: the training range of L.
        generalise: the lengths L evaluated for length generalisation.
    """

    length_label = "sequence length L (vectors)"
    paper_budget = NTM_PAPER_BUDGET
    paper_source = NTM_PAPER_SOURCE

    bits: int = 8
    min_length: int = 1
    max_length: int = 20
    generalise: tuple[int, ...] = (30, 50, 100, 120)

    def validate(self) -> None:
        check_int("copy", "bits", self.bits, 1, 1024)
        check_int("copy", "min_length", self.min_length, 1, 100_000)
        check_int("copy", "max_length", self.max_length, self.min_length, 100_000)
        for n in self.generalise:
            check_int("copy", "generalise", n, 1, 100_000)

    @property
    def d_in(self) -> int:
        return self.bits + 1

    @property
    def d_out(self) -> int:
        return self.bits

    @property
    def train_range(self) -> tuple[int, int]:
        return (self.min_length, self.max_length)

    def max_steps(self, length: int) -> int:
        return 2 * length + 1

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator) -> Batch:
        dev = generator.device
        B = lengths.shape[0]
        L = int(lengths.max())
        T = 2 * L + 1
        data = torch.randint(0, 2, (B, L, self.bits), generator=generator, device=dev).float()
        pos = torch.arange(L, device=dev)
        valid = pos.unsqueeze(0) < lengths.unsqueeze(1)  # (B, L)
        data = data * valid.unsqueeze(-1)

        inputs = torch.zeros(B, T, self.d_in, device=dev)
        inputs[:, :L, : self.bits] = data
        inputs[torch.arange(B, device=dev), lengths, self.bits] = 1.0

        # answer step for item i of sequence b is L_b + 1 + i: scatter the data there
        targets = torch.zeros(B, T, self.d_out, device=dev)
        steps = (lengths.unsqueeze(1) + 1 + pos.unsqueeze(0)).clamp_max(T - 1)  # (B, L)
        idx = steps.unsqueeze(-1).expand(B, L, self.bits)
        targets.scatter_add_(1, idx, data)  # padded items carry zeros, adding nothing
        t = torch.arange(T, device=dev).unsqueeze(0)
        mask = (t > lengths.unsqueeze(1)) & (t <= 2 * lengths.unsqueeze(1))
        return Batch(inputs, targets, mask, lengths, {"steps": 2 * lengths + 1})

    def _moments_at(self, length: int) -> chance.TargetMoments:
        """Steps L+1..2L carry uniform random bits on every channel: chance pays 1 bit each."""
        return chance.uniform_bits(2 * length + 1, self.bits, slice(length + 1, 2 * length + 1))

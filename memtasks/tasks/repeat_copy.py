"""The repeat copy task (Graves et al. 2014, §4.2)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from memtasks.core.config import check_int
from memtasks.core.lazy import torch
from memtasks.tasks import chance
from memtasks.tasks.base import NTM_PAPER_BUDGET, NTM_PAPER_SOURCE, Batch, Task, register_task

_MAX = 100_000


@register_task("repeat_copy")
@dataclass(frozen=True)
class RepeatCopy(Task):
    """Read a sequence of random bit vectors and a repeat count R, then write the sequence R times.

    Layout for a sequence of length L with R repeats (B = ``bits``; d_in = B+2, d_out = B+1):
      * steps 0..L-1: a random B-bit vector on channels 0..B-1;
      * step L: the delimiter, channel B = 1;
      * step L+1: the repeat count on channel B+1, normalised by the *training* range
        ``[min_repeats, max_repeats]`` as ``(R - mean) / std`` with the discrete-uniform
        ``mean = (a+b)/2`` and ``std = sqrt(((b-a+1)^2 - 1)/12)`` (std 1 when a == b);
        the same statistics are used for every R, so R beyond the range gives values the
        network never saw in training;
      * steps L+2..L+1+R·L: zero input; the targets are the L vectors, R times over;
      * step L+2+R·L: the target is the end marker alone, channel B = 1.
    All R·L+1 answer steps are scored; nothing else is. A batch is right-padded with zeros to
    its longest sequence, and padding is never scored. ``length`` is L; R is drawn uniformly
    from the training range per sequence unless ``sample(..., repeats=R)`` fixes it.

    Worked example (bits=2, L=2, R=2, default repeat range 1..10: mean 5.5, std 2.87, so
    r = (2 - 5.5)/2.87 = -1.22), time runs left to right::

        step      0  1  2  3  4  5  6  7  8
        in ch0    1  0  0  0  0  0  0  0  0
        in ch1    0  1  0  0  0  0  0  0  0
        in ch2    0  0  1  0  0  0  0  0  0      <- delimiter
        in ch3    0  0  0  r  0  0  0  0  0      <- repeat count, normalised
        tgt ch0   0  0  0  0  1  0  1  0  0
        tgt ch1   0  0  0  0  0  1  0  1  0
        tgt ch2   0  0  0  0  0  0  0  0  1      <- end marker
        scored    .  .  .  .  *  *  *  *  *

    Attributes:
        bits: data bits per vector (B).
        min_length, max_length: the training range of L.
        min_repeats, max_repeats: the training range of R.
        generalise: the lengths L evaluated for length generalisation (with training R).
    """

    length_label = "sequence length L (vectors)"
    paper_budget = NTM_PAPER_BUDGET
    paper_source = NTM_PAPER_SOURCE

    sample_overrides: ClassVar[tuple[str, ...]] = ("repeats",)
    generalisation_overrides: ClassVar[tuple[tuple[str, Any], ...]] = (("repeats", 20),)

    bits: int = 8
    min_length: int = 1
    max_length: int = 10
    min_repeats: int = 1
    max_repeats: int = 10
    generalise: tuple[int, ...] = (20,)

    def validate(self) -> None:
        check_int("repeat_copy", "bits", self.bits, 1, 1024)
        check_int("repeat_copy", "min_length", self.min_length, 1, _MAX)
        check_int("repeat_copy", "max_length", self.max_length, self.min_length, _MAX)
        check_int("repeat_copy", "min_repeats", self.min_repeats, 1, _MAX)
        check_int("repeat_copy", "max_repeats", self.max_repeats, self.min_repeats, _MAX)
        for n in self.generalise:
            check_int("repeat_copy", "generalise", n, 1, _MAX)

    @property
    def d_in(self) -> int:
        return self.bits + 2

    @property
    def d_out(self) -> int:
        return self.bits + 1

    @property
    def train_range(self) -> tuple[int, int]:
        return (self.min_length, self.max_length)

    def max_steps(self, length: int) -> int:
        return (self.max_repeats + 1) * length + 3

    def repeat_stats(self) -> tuple[float, float]:
        """``(mean, std)`` of R uniform on the training range: the normalisation of channel B+1."""
        a, b = self.min_repeats, self.max_repeats
        if a == b:
            return float(a), 1.0
        return (a + b) / 2.0, math.sqrt(((b - a + 1) ** 2 - 1) / 12.0)

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator, repeats: int | None = None) -> Batch:
        dev = generator.device
        n = lengths.shape[0]
        nb = self.bits
        if repeats is None:
            reps = torch.randint(self.min_repeats, self.max_repeats + 1, (n,), generator=generator, device=dev)
        else:
            check_int("repeat_copy", "repeats", repeats, 1, _MAX)
            reps = torch.full((n,), repeats, dtype=torch.long, device=dev)
        L = int(lengths.max())
        steps = (reps + 1) * lengths + 3  # (n,)
        T = int(steps.max())

        data = torch.randint(0, 2, (n, L, nb), generator=generator, device=dev).float()
        valid = torch.arange(L, device=dev).unsqueeze(0) < lengths.unsqueeze(1)  # (n, L)
        data = data * valid.unsqueeze(-1)

        mean, std = self.repeat_stats()
        rows = torch.arange(n, device=dev)
        inputs = torch.zeros(n, T, self.d_in, device=dev)
        inputs[:, :L, :nb] = data
        inputs[rows, lengths, nb] = 1.0
        inputs[rows, lengths + 1, nb + 1] = (reps.float() - mean) / std

        # Targets are rows of a table: the n·L data vectors (extended by a zero end channel),
        # then a zero row and the end-marker row. Answer step j < R·L of sequence b sits at
        # L_b+2+j and repeats data vector j mod L_b; step L_b+2+R·L_b is the end marker.
        rel = torch.arange(T, device=dev).unsqueeze(0) - (lengths + 2).unsqueeze(1)  # (n, T)
        n_ans = (reps * lengths).unsqueeze(1)  # (n, 1)
        data_row = rows.unsqueeze(1) * L + torch.remainder(rel.clamp_min(0), lengths.unsqueeze(1))
        zero_row, end_row = n * L, n * L + 1
        src = torch.where(rel == n_ans, end_row, zero_row)
        src = torch.where((rel >= 0) & (rel < n_ans), data_row, src)  # (n, T) rows of the table
        table = torch.zeros(n * L + 2, self.d_out, device=dev)
        table[: n * L, :nb] = data.view(n * L, nb)
        table[end_row, nb] = 1.0
        targets = table.index_select(0, src.view(-1)).view(n, T, self.d_out)
        mask = (rel >= 0) & (rel <= n_ans)
        return Batch(inputs, targets, mask, lengths, {"steps": steps, "repeats": reps})

    def _moments_at(self, length: int, repeats: int | None = None) -> chance.TargetMoments:
        """Data steps carry uniform bits and a sure 0 on the end channel; the end step carries zeros
        and a sure 1 there. Mixed over R (uniform on the training range, or ``repeats``), the step
        where the end marker falls is uncertain, so chance pays for the end channel too."""
        reps = range(self.min_repeats, self.max_repeats + 1) if repeats is None else [repeats]
        parts = []
        for r in reps:
            start, end = length + 2, length + 2 + r * length  # answer steps start..end; end: the marker
            m = chance.uniform_bits(end + 1, self.d_out, slice(start, end))
            m.first[start:end, self.bits] = m.second[start:end, self.bits] = 0.0
            m.scored[end] = 1.0
            m.first[end, self.bits] = m.second[end, self.bits] = 1.0
            parts.append(m)
        return chance.mixture(parts)

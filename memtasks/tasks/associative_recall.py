"""The associative recall task (Graves et al. 2014, §4.3)."""
from __future__ import annotations

from dataclasses import dataclass

from memtasks.core.config import ConfigError, check_int
from memtasks.core.lazy import torch
from memtasks.tasks import chance
from memtasks.tasks.base import NTM_PAPER_BUDGET, NTM_PAPER_SOURCE, Batch, Task, register_task

_MAX = 100_000
_CHUNK = 62  # random bits per int64 code (randint's exclusive bound 2**62 fits in int64)


@register_task("associative_recall")
@dataclass(frozen=True)
class AssociativeRecall(Task):
    """Read a list of distinct items, then, given one of them, recall the item that followed it.

    An item is ``item_size`` random B-bit vectors (B = ``bits``; d_in = B+2, d_out = B).
    Layout for a sequence of K items, with S = ``item_size``:
      * for each item i < K, S+1 steps starting at i·(S+1): the item delimiter (channel B = 1),
        then the item's S vectors on channels 0..B-1;
      * at Q = K·(S+1): the query delimiter (channel B+1 = 1), the S vectors of a query item q
        drawn uniformly from items 0..K-2, and the query delimiter again;
      * steps Q+S+2..Q+2S+1: zero input; the targets are the S vectors of item q+1. Only these
        are scored.
    The K items of a sequence are distinct, so the answer is unambiguous. A sequence has
    (K+2)·(S+1) steps; a batch is right-padded with zeros, and padding is never scored.
    ``length`` is K.

    Worked example (bits=2, item_size=2, K=3, query item 1, so the answer is item 2),
    time runs left to right::

        step      0  1  2  3  4  5  6  7  8  9 10 11 12 13 14
        in ch0    0  1  0  0  1  0  0  0  1  0  1  0  0  0  0
        in ch1    0  0  1  0  1  0  0  1  1  0  1  0  0  0  0
        in ch2    1  0  0  1  0  0  1  0  0  0  0  0  0  0  0    <- item delimiter
        in ch3    0  0  0  0  0  0  0  0  0  1  0  0  1  0  0    <- query delimiter
        tgt ch0   0  0  0  0  0  0  0  0  0  0  0  0  0  0  1
        tgt ch1   0  0  0  0  0  0  0  0  0  0  0  0  0  1  1
        scored    .  .  .  .  .  .  .  .  .  .  .  .  .  *  *

    Attributes:
        bits: bits per vector (B).
        item_size: vectors per item (S).
        min_items, max_items: the training range of K (K >= 2, so that some item has a successor).
        generalise: the item counts K evaluated for length generalisation.
    """

    length_label = "items K"
    paper_budget = NTM_PAPER_BUDGET
    paper_source = NTM_PAPER_SOURCE

    bits: int = 6
    item_size: int = 3
    min_items: int = 2
    max_items: int = 6
    generalise: tuple[int, ...] = (12, 15, 20)

    def validate(self) -> None:
        check_int("associative_recall", "bits", self.bits, 1, 1024)
        check_int("associative_recall", "item_size", self.item_size, 1, 1024)
        check_int("associative_recall", "min_items", self.min_items, 2, _MAX)
        check_int("associative_recall", "max_items", self.max_items, self.min_items, _MAX)
        for n in self.generalise:
            check_int("associative_recall", "generalise", n, 2, _MAX)
        self._check_capacity("max_items", self.max_items)
        for n in self.generalise:
            self._check_capacity("generalise", n)

    def _check_capacity(self, what: str, k: int) -> None:
        """K distinct items need K <= 2**(bits·item_size) possible items."""
        n_bits = self.bits * self.item_size
        if n_bits < 63 and k > 2**n_bits:
            raise ConfigError(
                f"associative_recall.{what}={k} is out of range: bits={self.bits} x item_size="
                f"{self.item_size} allow only {2**n_bits} distinct items; allowed: [2, {2**n_bits}]"
            )

    @property
    def d_in(self) -> int:
        return self.bits + 2

    @property
    def d_out(self) -> int:
        return self.bits

    @property
    def train_range(self) -> tuple[int, int]:
        return (self.min_items, self.max_items)

    def max_steps(self, length: int) -> int:
        return (length + 2) * (self.item_size + 1)

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator) -> Batch:
        dev = generator.device
        n = lengths.shape[0]
        nb, S = self.bits, self.item_size
        K = int(lengths.max())
        k_min = int(lengths.min())
        if k_min < 2:
            raise ConfigError(f"associative_recall.length={k_min} is out of range; allowed: [2, {_MAX}]")
        self._check_capacity("length", K)

        valid = torch.arange(K, device=dev).unsqueeze(0) < lengths.unsqueeze(1)  # (n, K)
        codes = _distinct_codes(n, K, S * nb, valid, generator)  # (n, K, C)
        items = _unpack(codes, S * nb).view(n, K, S, nb) * valid.view(n, K, 1, 1)  # (n, K, S, B)

        T = (K + 2) * (S + 1)
        inputs = torch.zeros(n, T, self.d_in, device=dev)
        block = torch.zeros(n, K, S + 1, self.d_in, device=dev)
        block[:, :, 0, nb] = valid.float()
        block[:, :, 1:, :nb] = items
        inputs[:, : K * (S + 1)] = block.view(n, K * (S + 1), self.d_in)

        # q uniform on 0..K_b-2 (float64 keeps the bias below 2**-50)
        u = torch.rand(n, generator=generator, device=dev, dtype=torch.float64)
        q = (u * (lengths - 1)).long().clamp_max(lengths - 2)  # (n,)
        rows = torch.arange(n, device=dev)
        query = torch.zeros(n, S + 2, self.d_in, device=dev)
        query[:, 0, nb + 1] = 1.0
        query[:, 1 : S + 1, :nb] = items[rows, q]
        query[:, S + 1, nb + 1] = 1.0
        start = (lengths * (S + 1)).unsqueeze(1)  # (n, 1): the query delimiter's step
        r = rows.unsqueeze(1)
        inputs[r, start + torch.arange(S + 2, device=dev)] = query  # overwrites zero padding items

        answer_steps = start + S + 2 + torch.arange(S, device=dev)  # (n, S)
        targets = torch.zeros(n, T, self.d_out, device=dev)
        targets[r, answer_steps] = items[rows, q + 1]
        mask = torch.zeros(n, T, dtype=torch.bool, device=dev)
        mask[r, answer_steps] = True
        return Batch(inputs, targets, mask, lengths, {"steps": (lengths + 2) * (S + 1)})

    def _moments_at(self, length: int) -> chance.TargetMoments:
        """The answer's S vectors: each bit of an item drawn uniformly among distinct items is a
        fair coin on its own (flipping a bit in every item maps distinct tuples onto distinct
        tuples), so chance pays 1 bit per answer bit."""
        S = self.item_size
        first = length * (S + 1) + S + 2
        return chance.uniform_bits(self.max_steps(length), self.bits, slice(first, first + S))


def _draw_codes(shape: tuple[int, ...], n_bits: int, generator: torch.Generator) -> torch.Tensor:
    """``shape + (C,)`` int64 codes of ``n_bits`` uniform random bits, 62 bits per code.

    Code c holds bits 62c..62c+61; the last code holds the remaining ``n_bits mod 62`` bits.
    """
    dev = generator.device
    full, rest = divmod(n_bits, _CHUNK)
    parts = []
    if full:
        parts.append(torch.randint(0, 2**_CHUNK, (*shape, full), generator=generator, device=dev))
    if rest:
        parts.append(torch.randint(0, 2**rest, (*shape, 1), generator=generator, device=dev))
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


def _unpack(codes: torch.Tensor, n_bits: int) -> torch.Tensor:
    """``(..., C)`` codes -> ``(..., n_bits)`` float 0/1, bit i of code c at position 62c+i."""
    shifts = torch.arange(_CHUNK, device=codes.device)
    bits = (codes.unsqueeze(-1) >> shifts) & 1  # (..., C, 62)
    return bits.flatten(-2)[..., :n_bits].float()


def _distinct_codes(
    n: int, K: int, n_bits: int, valid: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``(n, K, C)`` random items as codes, the valid ones distinct within each row.

    Every valid item equal to an earlier item of its row is re-drawn until none is. The
    result is uniform over tuples of distinct items: the procedure commutes with every
    relabelling of the 2**n_bits patterns, which maps any such tuple onto any other.

    Args:
        valid: ``(n, K)`` bool, a prefix per row; padding items may repeat.
    """
    codes = _draw_codes((n, K), n_bits, generator)
    earlier = torch.ones(K, K, dtype=torch.bool, device=codes.device).tril(-1)  # [i, j]: j < i
    while True:
        same = (codes.unsqueeze(2) == codes.unsqueeze(1)).all(-1)  # (n, K, K)
        dup = (same & earlier).any(-1) & valid  # (n, K)
        count = int(dup.sum())
        if count == 0:
            return codes
        codes[dup] = _draw_codes((count,), n_bits, generator)

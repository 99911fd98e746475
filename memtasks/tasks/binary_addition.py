"""Binary addition, as in the Chomsky-hierarchy benchmark (Delétang et al. 2023)."""
from __future__ import annotations

from dataclasses import dataclass

from memtasks.core.config import ConfigError, check_choice, check_int
from memtasks.core.lazy import torch
from memtasks.tasks import chance
from memtasks.tasks.base import Batch, Task, register_task

MODES = ("sequential", "online")


def ripple_carry_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The bits of a + b, least significant first.

    Args:
        a, b: ``(B, n)`` int64 bits, least significant first.
    Returns:
        ``(B, n + 1)`` int64 bits of the sum; the last is the final carry.
    """
    B, n = a.shape
    out = torch.empty(B, n + 1, dtype=torch.long, device=a.device)
    carry = torch.zeros(B, dtype=torch.long, device=a.device)
    for k in range(n):  # the carry chain is sequential in k; every op is over the batch
        s = a[:, k] + b[:, k] + carry
        out[:, k] = s & 1
        carry = s >> 1
    out[:, n] = carry
    return out


def _take(values: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``values[b, index[b, t]]`` where ``valid``, else 0; ``values`` (B, N), ``index`` (B, T)."""
    idx = index.clamp(0, values.shape[1] - 1)
    return values.gather(1, idx) * valid


@register_task("binary_addition")
@dataclass(frozen=True)
class BinaryAddition(Task):
    """Add two n-bit binary numbers, least significant bit first.

    Operands a and b are uniform over [0, 2^n) (leading zeros allowed) and are kept as bit
    tensors, so n is not limited by machine integers. The answer a + b has n + 1 bits.
    d_in = 2, d_out = 1, bce.

    ``mode="sequential"`` (read both, then write; T = 3n + 3 steps):
      * steps 0..n-1: the bits of a on channel 0; step n: channel 1 = 1 (separator);
      * steps n+1..2n: the bits of b on channel 0; step 2n+1: channel 1 = 1 (go);
      * steps 2n+2..3n+2: zero input; the targets are the n+1 bits of a + b. Only these are scored.

    ``mode="online"`` (write while reading; T = n + 1 steps):
      * step t < n: (a_t, b_t) on channels 0, 1; step n: (0, 0);
      * the target at every step t = 0..n is bit t of a + b, and every step is scored.

    A batch is right-padded with zeros to its longest sequence; padding is never scored.

    Worked example, sequential, n = 2, a = 3 (bits 1 1), b = 1 (bits 1 0), a + b = 4 (bits 0 0 1)::

        step      0  1  2  3  4  5  6  7  8
        in ch0    1  1  0  1  0  0  0  0  0
        in ch1    0  0  1  0  0  1  0  0  0      <- separator, go
        tgt ch0   0  0  0  0  0  0  0  0  1
        scored    .  .  .  .  .  .  *  *  *

    The same sum, online::

        step      0  1  2
        in ch0    1  1  0
        in ch1    1  0  0
        tgt ch0   0  0  1
        scored    *  *  *

    Attributes:
        mode: "sequential" or "online".
        min_bits, max_bits: the training range of n, the bits per operand.
        generalise: the values of n evaluated for length generalisation.
    """

    length_label = "bits per operand n"

    mode: str = "sequential"
    min_bits: int = 1
    max_bits: int = 20
    generalise: tuple[int, ...] = (40, 100)

    def validate(self) -> None:
        check_choice(self.name, "mode", self.mode, MODES)
        check_int(self.name, "min_bits", self.min_bits, 1, 100_000)
        check_int(self.name, "max_bits", self.max_bits, self.min_bits, 100_000)
        if not isinstance(self.generalise, tuple):
            raise ConfigError(f"{self.name}.generalise must be a tuple of integers, got {self.generalise!r}")
        for n in self.generalise:
            check_int(self.name, "generalise", n, 1, 100_000)

    @property
    def d_in(self) -> int:
        return 2

    @property
    def d_out(self) -> int:
        return 1

    @property
    def train_range(self) -> tuple[int, int]:
        return (self.min_bits, self.max_bits)

    def max_steps(self, length: int) -> int:
        return 3 * length + 3 if self.mode == "sequential" else length + 1

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator) -> Batch:
        dev = generator.device
        B = lengths.shape[0]
        N = int(lengths.max())
        n = lengths.unsqueeze(1)  # (B, 1)
        valid = torch.arange(N, device=dev).unsqueeze(0) < n  # (B, N)
        a = torch.randint(0, 2, (B, N), generator=generator, device=dev) * valid
        b = torch.randint(0, 2, (B, N), generator=generator, device=dev) * valid
        # bits past a sequence's n are zero, so its sum bits past n are zero too
        total = ripple_carry_add(a, b)  # (B, N+1)

        T = self.max_steps(N)
        t = torch.arange(T, device=dev).unsqueeze(0)  # (1, T)
        inputs = torch.zeros(B, T, 2, device=dev)
        if self.mode == "sequential":
            b_at = t - n - 1  # index of the bit of b read at step t
            s_at = t - 2 * n - 2  # index of the bit of the sum written at step t
            inputs[:, :, 0] = _take(a, t.expand(B, T), t < n) + _take(b, b_at, (b_at >= 0) & (b_at < n))
            inputs[:, :, 1] = ((t == n) | (t == 2 * n + 1)).float()
            mask = (s_at >= 0) & (s_at <= n)
            target = _take(total, s_at, mask)
            steps = 3 * lengths + 3
        else:
            inputs[:, :N, 0] = a.float()
            inputs[:, :N, 1] = b.float()
            mask = t <= n
            target = total * mask
            steps = lengths + 1
        return Batch(inputs, target.float().unsqueeze(-1), mask, lengths, {"steps": steps})

    def _moments_at(self, length: int) -> chance.TargetMoments:
        """Sum bits 0..n-1 are fair coins (a_k is); the final carry is 1 when a + b >= 2^n, which
        (2^n − 1)·2^n / 2 of the 4^n pairs meet: probability 1/2 − 2^−(n+1)."""
        first = 2 * length + 2 if self.mode == "sequential" else 0
        m = chance.uniform_bits(self.max_steps(length), 1, slice(first, first + length + 1))
        carry = 0.5 - 0.5 ** (length + 1)
        m.first[first + length] = m.second[first + length] = carry
        return m


@register_task("binary_addition_online")
@dataclass(frozen=True)
class OnlineBinaryAddition(BinaryAddition):
    """Binary addition written while it is read: ``binary_addition`` with ``mode="online"``.

    The regular control beside the sequential task: the sum bit at step t needs only the carry,
    one bit of state, so every recurrent model should learn it, and a model that fails the
    sequential task but learns this one fails on memory, not on addition. Its own name gives it
    its own rows in a matrix and on the leaderboard next to ``binary_addition``. The encoding is
    ``binary_addition``'s online one (see there; T = n + 1 steps, every step scored).

    Worked example, n = 3, a = 5 (bits 1 0 1), b = 3 (bits 1 1 0), a + b = 8 (bits 0 0 0 1)::

        step      0  1  2  3
        in ch0    1  0  1  0      <- a, least significant bit first
        in ch1    1  1  0  0      <- b
        tgt ch0   0  0  0  1      <- carry 1, 1, 1, then the final carry
        scored    *  *  *  *

    Attributes:
        mode: always "online" (``binary_addition`` is the sequential task).
        min_bits, max_bits, generalise: as in ``binary_addition``.
    """

    mode: str = "online"

    def validate(self) -> None:
        if self.mode != "online":
            raise ConfigError(
                f"{self.name}.mode must be 'online', got {self.mode!r}; "
                "the sequential task is binary_addition"
            )
        super().validate()

"""The long-delay XOR problem (Hochreiter & Schmidhuber 1997; Martens & Sutskever 2011).

Also home of the two-marker layout shared with the adding problem (:mod:`memtasks.tasks.adding`):
``draw_marker_layout`` draws each sequence's true length and its two marked steps, and
``marker_batch`` lays out the three input channels, the single target and the mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from memtasks.core.config import ConfigError, check_int
from memtasks.core.lazy import torch
from memtasks.tasks import chance
from memtasks.tasks.base import Batch, Task, register_task

FIRST_MARK_END = 10  # marker_windows="fixed": the first marker lies in [0, FIRST_MARK_END)
MIN_BASE_LENGTH = 2 * FIRST_MARK_END + 2  # smallest T0 with floor(T0 / 2) > FIRST_MARK_END
MIN_SCALED_LENGTH = 10  # marker_windows="scaled": smallest T0 with floor(T/2) > floor(T/10) >= 1
WINDOWS = ("fixed", "scaled")


def min_length_for(windows: str) -> int:
    return MIN_BASE_LENGTH if windows == "fixed" else MIN_SCALED_LENGTH


class MarkerLayout(NamedTuple):
    """Per-sequence layout of a two-marker task, each ``(B,)`` int64.

    Attributes:
        steps: the true number of steps T, uniform in [T0, floor(1.1 T0)].
        first: the first marked step i, uniform in [0, 10) ("fixed") or [0, floor(T/10)) ("scaled").
        second: the second marked step j, uniform in [10, floor(T/2)) or [floor(T/10), floor(T/2)).
    """

    steps: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor


def longest_steps(base_length: int) -> int:
    """floor(1.1 T0), in integer arithmetic so that no rounding of 1.1 can creep in."""
    return (11 * base_length) // 10


def _uniform_int(lo: torch.Tensor, hi: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer uniform in [lo, hi) per element; lo < hi elementwise, ``(B,)`` int64."""
    u = torch.rand(lo.shape, generator=generator, device=generator.device, dtype=torch.float64)
    span = hi - lo
    return lo + torch.minimum((u * span).floor().long(), span - 1)


def draw_marker_layout(
    base_lengths: torch.Tensor, generator: torch.Generator, owner: str, windows: str = "fixed"
) -> MarkerLayout:
    """Draw T, i and j for each sequence of base length T0 = ``base_lengths`` ``(B,)``.

    ``windows="fixed"`` (Hochreiter & Schmidhuber 1997): i in [0, 10), j in [10, floor(T/2)), so
    T0 >= 22. ``windows="scaled"``: the first window is the first tenth of the sequence, i in
    [0, floor(T/10)), j in [floor(T/10), floor(T/2)), so short delays exist (T0 >= 10) and a
    length curriculum can start small; at T = 100 the two encodings draw from the same windows.
    Raises ``ConfigError`` naming ``owner`` when some T0 is too short for the windows.
    """
    shortest = int(base_lengths.min())
    if shortest < min_length_for(windows):
        where = f"[{FIRST_MARK_END}, floor(T/2))" if windows == "fixed" else "[floor(T/10), floor(T/2))"
        raise ConfigError(
            f"{owner}: length (base length T0)={shortest} is too short; the second marker lies in "
            f"{where}, which needs T0 >= {min_length_for(windows)}"
        )
    steps = _uniform_int(base_lengths, (11 * base_lengths) // 10 + 1, generator)
    first_end = torch.full_like(steps, FIRST_MARK_END) if windows == "fixed" else steps // 10
    first = _uniform_int(torch.zeros_like(steps), first_end, generator)
    second = _uniform_int(first_end, steps // 2, generator)
    return MarkerLayout(steps, first, second)


def marked_values(values: torch.Tensor, layout: MarkerLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """The two marked entries of ``values`` ``(B, T)``, each ``(B,)``."""
    a = values.gather(1, layout.first.unsqueeze(1)).squeeze(1)
    b = values.gather(1, layout.second.unsqueeze(1)).squeeze(1)
    return a, b


def marker_batch(
    values: torch.Tensor, answer: torch.Tensor, layout: MarkerLayout, base_lengths: torch.Tensor
) -> Batch:
    """Build the batch of a two-marker task.

    Args:
        values: ``(B, T_max)`` the data on channel 0; entries past each sequence's end are zeroed.
        answer: ``(B,)`` the target at each sequence's last step T-1, the only scored step.
        layout: from :func:`draw_marker_layout`.
        base_lengths: ``(B,)`` T0, stored as the batch's ``lengths``.
    """
    dev = values.device
    B, T = values.shape
    rows = torch.arange(B, device=dev)
    t = torch.arange(T, device=dev).unsqueeze(0)  # (1, T)
    valid = t < layout.steps.unsqueeze(1)  # (B, T)
    last = layout.steps - 1

    inputs = torch.zeros(B, T, 3, device=dev)
    inputs[:, :, 0] = values * valid
    inputs[rows, layout.first, 1] = 1.0
    inputs[rows, layout.second, 1] = 1.0
    inputs[rows, last, 2] = 1.0

    targets = torch.zeros(B, T, 1, device=dev)
    targets[rows, last, 0] = answer.float()
    mask = t == last.unsqueeze(1)
    return Batch(inputs, targets, mask, base_lengths, {"steps": layout.steps})


@dataclass(frozen=True)
class MarkedPairTask(Task):
    """Shared declarations of the two-marker tasks (``delayed_xor``, ``adding``).

    A subclass sets the defaults of ``base_length`` and ``generalise`` and implements
    ``_channel_values`` (what channel 0 carries) and ``_answer`` (the target from the two marked
    values). Not registered itself.
    """

    length_label = "base length T0 (steps)"
    # records made before these fields existed used the fixed windows and no curriculum start
    implicit_before_field: ClassVar[dict[str, Any]] = {"min_length": None, "marker_windows": "fixed"}

    base_length: int = 50
    generalise: tuple[int, ...] = ()
    min_length: int | None = None  # the shortest T0 trained on (a curriculum's start); None: base_length
    marker_windows: str = "fixed"  # "fixed" ([0, 10) and [10, T/2)) or "scaled" ([0, T/10) and [T/10, T/2))

    @property
    def version(self) -> str:  # type: ignore[override]
        """The encoding: "1" with the fixed marker windows, "2" with the scaled ones."""
        return "1" if self.marker_windows == "fixed" else "2"

    def validate(self) -> None:
        from memtasks.core.config import check_choice

        check_choice(self.name, "marker_windows", self.marker_windows, WINDOWS)
        validate_marker_lengths(self.name, self.base_length, self.generalise, min_length_for(self.marker_windows))
        if self.min_length is not None:
            check_int(self.name, "min_length", self.min_length, min_length_for(self.marker_windows), self.base_length)

    @property
    def d_in(self) -> int:
        return 3

    @property
    def d_out(self) -> int:
        return 1

    @property
    def train_range(self) -> tuple[int, int]:
        return (self.min_length or self.base_length, self.base_length)

    def max_steps(self, length: int) -> int:
        return longest_steps(length)

    def _channel_values(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _answer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _generate(self, lengths: torch.Tensor, generator: torch.Generator) -> Batch:
        layout = draw_marker_layout(lengths, generator, self.name, self.marker_windows)
        values = self._channel_values((lengths.shape[0], int(layout.steps.max())), generator)  # (B, T)
        a, b = marked_values(values, layout)
        return marker_batch(values, self._answer(a, b), layout, lengths)

    def _answer_moments(self) -> tuple[float, float]:
        """E[y] and E[y²] of the answer (the same at every length)."""
        raise NotImplementedError

    def _moments_at(self, length: int) -> chance.TargetMoments:
        """One scored step, the last (T − 1), with T uniform in [T0, floor(1.1 T0)]."""
        mean, square = self._answer_moments()
        longest = longest_steps(length)
        m = chance.zeros(longest, 1)
        p = 1.0 / (longest - length + 1)
        m.scored[length - 1 :] = p
        m.first[length - 1 :] = p * mean
        m.second[length - 1 :] = p * square
        return m


@register_task("delayed_xor")
@dataclass(frozen=True)
class DelayedXor(MarkedPairTask):
    """Output the XOR of two marked bits of a long random bit stream, at its last step.

    Each sequence of base length T0 has its own number of steps T, uniform in
    [T0, floor(1.1 T0)], so that the answer step cannot be found by counting. d_in = 3, d_out = 1:
      * channel 0: a random bit at every step;
      * channel 1: 1 at two steps, i uniform in [0, floor(T/10)) and j uniform in
        [floor(T/10), floor(T/2)) (encoding version 2, ``marker_windows="scaled"``: short
        delays exist, so ``min_length`` and the ``grow`` curriculum can start at T0 = 10;
        ``marker_windows="fixed"`` is version 1's i in [0, 10), j in [10, floor(T/2)), T0 >= 22);
      * channel 2: 1 at the last step T-1, which asks for the answer;
      * target at step T-1: bit_i XOR bit_j. Only that step is scored (bce).
    The model must hold one bit across at least T/2 steps of distractors. A batch is right-padded
    with zeros to its longest sequence; ``extras["steps"]`` holds each T, ``lengths`` each T0.

    Worked example with the marker ranges shrunk to i in [0, 2), j in [2, floor(T/2)) and T = 6
    (the real task has i in [0, floor(T/10)), j in [floor(T/10), floor(T/2)) and T0 >= 10); here
    i = 1, j = 2::

        step      0  1  2  3  4  5
        in ch0    1  1  0  1  0  1
        in ch1    0  1  1  0  0  0      <- markers at i=1, j=2
        in ch2    0  0  0  0  0  1      <- answer now
        tgt ch0   0  0  0  0  0  1      <- 1 XOR 0
        scored    .  .  .  .  .  *

    Attributes:
        base_length: T0, the (longest) training length (the ``length`` parameter).
        generalise: the base lengths evaluated for length generalisation.
        min_length: the shortest training T0 (None: base_length only); with it the ``grow``
            curriculum starts at the shortest fifth of [min_length, base_length].
        marker_windows: "scaled" (version 2, default) or "fixed" (version 1).
    """

    base_length: int = 50
    generalise: tuple[int, ...] = (100, 200, 500, 1000)
    marker_windows: str = "scaled"

    def _channel_values(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator, device=generator.device).float()

    def _answer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a != b).float()  # XOR of two 0/1 values

    def _answer_moments(self) -> tuple[float, float]:
        """The XOR of two fair coins is a fair coin: chance pays 1 bit."""
        return 0.5, 0.5


def validate_marker_lengths(
    owner: str, base_length: int, generalise: tuple[int, ...], shortest: int = MIN_BASE_LENGTH
) -> None:
    """The field checks shared by the two-marker tasks."""
    check_int(owner, "base_length", base_length, shortest, 1_000_000)
    if not isinstance(generalise, tuple):
        raise ConfigError(f"{owner}.generalise must be a tuple of integers, got {generalise!r}")
    for n in generalise:
        check_int(owner, "generalise", n, shortest, 1_000_000)

"""The adding problem (Hochreiter & Schmidhuber 1997; Li et al. 2018, IndRNN)."""
from __future__ import annotations

from dataclasses import dataclass

from memtasks.core.lazy import torch
from memtasks.tasks.base import register_task
from memtasks.tasks.delayed_xor import MarkedPairTask


@register_task("adding")
@dataclass(frozen=True)
class Adding(MarkedPairTask):
    """Output the sum of two marked real numbers of a long random stream, at its last step.

    The layout is that of ``delayed_xor`` with real values: each sequence of base length T0 has
    T steps, T uniform in [T0, floor(1.1 T0)]; d_in = 3, d_out = 1:
      * channel 0: a value uniform in [0, 1) at every step;
      * channel 1: 1 at two steps, i uniform in [0, 10) and j uniform in [10, floor(T/2));
      * channel 2: 1 at the last step T-1, which asks for the answer;
      * target at step T-1: x_i + x_j. Only that step is scored, by squared error (``mse``).
    A batch is right-padded with zeros; ``extras["steps"]`` holds each T, ``lengths`` each T0.

    Solved means mse < 0.01. The baseline that ignores the input and always answers the mean
    sum 1 scores Var(x_i + x_j) = 2/12 ≈ 0.167, and one that keeps only one of the two values
    scores Var(x) = 1/12 ≈ 0.083; below 0.01 a model must have found and kept both.

    Worked example with the marker ranges shrunk to i in [0, 2), j in [2, floor(T/2)) and T = 6
    (the real task has i in [0, 10), j in [10, floor(T/2)) and T0 >= 22); here i = 0, j = 2::

        step      0    1    2    3    4    5
        in ch0    0.3  0.9  0.5  0.1  0.7  0.2
        in ch1    1    0    1    0    0    0      <- markers at i=0, j=2
        in ch2    0    0    0    0    0    1      <- answer now
        tgt ch0   0    0    0    0    0    0.8    <- 0.3 + 0.5
        scored    .    .    .    .    .    *

    Attributes:
        base_length: T0, the training length (the ``length`` parameter); T0 >= 22.
        generalise: the base lengths evaluated for length generalisation.
    """

    loss = "mse"
    solved_metric = "mse"
    solved_threshold = 0.01

    base_length: int = 100
    generalise: tuple[int, ...] = (200, 500, 1000, 5000)

    def _channel_values(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=generator.device)

    def _answer(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def chance_level(self, metric: str, length: int | None = None) -> float | None:
        """Always answering the mean sum 1 scores Var(x_i + x_j) = 2/12 at every length."""
        return 2 / 12 if metric == "mse" else None

    def _answer_moments(self) -> tuple[float, float]:
        """x_i + x_j: mean 1, second moment Var + mean² = 2/12 + 1."""
        return 1.0, 2 / 12 + 1.0

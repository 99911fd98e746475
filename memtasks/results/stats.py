"""The statistics of the leaderboard, as pure functions of numbers (no records, no tables).

Definitions (``runs/README.md`` repeats them for readers of the tables):

* **Interval**: the 95% Student-t interval of the mean over seeds, mean ± t(0.975, n−1)·s/√n,
  s the sample standard deviation (n−1). One seed has no interval.
* **At chance**: a model *is at chance* when its interval's upper end (the mean itself with one
  seed) is at least (1 − :data:`AT_CHANCE_MARGIN`) × chance, so it has not clearly removed even 1%
  of the chance cost, and none of its seeds solved the task. A model worse than chance is at
  chance too. (A model that solves some seeds and sits at chance in others has a wide interval
  reaching chance, but it has shown that it learns the task: it is not at chance, and its wide
  interval still keeps it from ranking above models it does not clearly beat.)
* **Shared rank**: a model's rank is 1 + the number of models that *clearly beat* it. ``a``
  clearly beats ``b`` when ``a``'s interval lies wholly below ``b``'s (upper(a) < lower(b)) and
  not both are at chance. Models whose intervals overlap therefore share a rank, and two models
  at chance never rank against each other. A model with fewer than two finished seeds has no
  interval and no rank; it beats no one and no one beats it.
* **AULC** (area under the learning curve): the mean cost over training, i.e. the trapezoid area
  under cost(sequences) from the first evaluation to the budget (the last value carried to the
  budget, as for a run that stopped early), divided by that span; divided again by chance, so 1
  is a run at chance throughout and 0 a run perfect from the first evaluation.
* **Still improving**: over the seeds that ran to the end of their budget (not stopped early),
  the cost fell in the last third of training (from the last evaluation at or before 2/3 of the
  final sequence count to the final evaluation) by more, on average, than both the spread of the
  final cost over those seeds (its sample std; none with one seed) and :data:`IMPROVING_SHARE`
  of the mean cost at 2/3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

AT_CHANCE_MARGIN = 0.01  # a model must remove more than this share of chance cost to be off chance
IMPROVING_SHARE = 0.05  # a late fall smaller than this share of the cost is not "still improving"

# t(0.975, df) for df = 1..30, the two-sided 95% quantiles of Student's t (standard tables).
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1).

    Tabulated up to 30; beyond, the Cornish–Fisher expansion in 1/df (error below 1e-4 there).
    """
    if df < 1:
        raise ValueError(f"t975: degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values and its 95% t-interval (``half`` NaN, no interval, when n < 2)."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.half)


def interval(values: Sequence[float]) -> Interval:
    """The mean and 95% t-interval of the finite ``values`` (NaNs are left out)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), 0)
    if n == 1:
        return Interval(float(v[0]), float("nan"), 1)
    return Interval(float(v.mean()), t975(n - 1) * float(v.std(ddof=1)) / math.sqrt(n), n)


def half_width(std: float, n: int) -> float:
    """t(0.975, n−1)·std/√n, NaN for n < 2: the half-width from a sample std over ``n`` seeds."""
    return t975(n - 1) * std / math.sqrt(n) if n >= 2 and np.isfinite(std) else float("nan")


def at_chance(iv: Interval, chance: float | None, solved: int = 0) -> bool | None:
    """Whether ``iv`` has not clearly removed AT_CHANCE_MARGIN of ``chance`` and no seed solved the
    task (``solved``: how many did); None: no chance or no mean."""
    if chance is None or not np.isfinite(chance) or not np.isfinite(iv.mean):
        return None
    top = iv.high if iv.has_interval else iv.mean
    return bool(top >= (1 - AT_CHANCE_MARGIN) * chance and solved == 0)


def shared_ranks(intervals: Sequence[Interval], chance_flags: Sequence[bool | None]) -> list[float]:
    """Per model: 1 + the number of models that clearly beat it (module docstring); NaN without an interval."""
    ranks = []
    for b, (ib, cb) in enumerate(zip(intervals, chance_flags)):
        if not ib.has_interval:
            ranks.append(float("nan"))
            continue
        beaten_by = sum(
            1 for a, (ia, ca) in enumerate(zip(intervals, chance_flags))
            if a != b and ia.has_interval and ia.high < ib.low and not (ca and cb)
        )
        ranks.append(float(1 + beaten_by))
    return ranks


@dataclass(frozen=True)
class Curve:
    """One run's learning curve, summarised: ``auc`` the mean cost over training (not yet divided
    by chance), ``at_two_thirds`` the cost at the last evaluation at or before 2/3 of the final
    sequence count, ``final`` the last evaluation's cost, ``evals`` how many evaluations."""

    auc: float
    at_two_thirds: float
    final: float
    evals: int


def curve_summary(sequences: Sequence[float], costs: Sequence[float], budget: float | None = None) -> Curve:
    """Summarise one run's curve (evaluations in order of ``sequences``; NaN costs left out).

    ``budget``: the sequences the run was planned for; the last cost is carried to it (a run that
    stopped early). None or NaN: the last evaluation ends the curve.
    """
    pts = sorted((float(s), float(c)) for s, c in zip(sequences, costs) if np.isfinite(c))
    nan = float("nan")
    if not pts:
        return Curve(nan, nan, nan, 0)
    s = np.array([p[0] for p in pts])
    c = np.array([p[1] for p in pts])
    end = max(s[-1], budget) if budget is not None and np.isfinite(budget) else s[-1]
    if end > s[-1]:
        s, c = np.append(s, end), np.append(c, c[-1])
    span = s[-1] - s[0]
    auc = float(np.sum((c[1:] + c[:-1]) / 2 * np.diff(s)) / span) if span > 0 else float(c[-1])
    last = pts[-1][0]
    cut = pts[0][0] + 2 / 3 * (last - pts[0][0])
    two_thirds = [cost for seq, cost in pts if seq <= cut + 1e-9][-1]
    return Curve(auc, float(two_thirds), pts[-1][1], len(pts))


def still_improving(at_two_thirds: Sequence[float], finals: Sequence[float]) -> bool | None:
    """The flag of the module docstring over the seeds given (those that ran to the end); None if none."""
    pairs = [(a, f) for a, f in zip(at_two_thirds, finals) if np.isfinite(a) and np.isfinite(f)]
    if not pairs:
        return None
    a = np.array([p[0] for p in pairs])
    f = np.array([p[1] for p in pairs])
    spread = float(f.std(ddof=1)) if len(f) > 1 else 0.0
    drop = float((a - f).mean())
    return bool(drop > max(spread, IMPROVING_SHARE * float(a.mean())))


def median_with_never(values: Sequence[float]) -> float:
    """Median over all runs, a NaN (never happened) counting as infinity."""
    arr = np.where(np.isnan(np.asarray(values, dtype=float)), np.inf, np.asarray(values, dtype=float))
    return float(np.median(arr)) if len(arr) else float("inf")

"""Table cells: numbers to text, and tables built from one column list.

Rendering only, shared by the leaderboard and ``compare`` (:mod:`memtasks.results.markdown`).
Each table's headers and cells come from one list of :class:`Column`, so a column cannot lose
its header or shift its cells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tabulate import tabulate

DASH = "—"
# Display names of metrics, in the order compare's table lists them; other metrics follow by name.
METRIC_NAMES = {"cost": "cost (bits/seq)", "mse": "mse", "seq_accuracy": "seq accuracy", "bit_errors": "bit errors",
                "excess_bits": "excess bits", "bayes_cost": "Bayes cost (bits/seq)"}


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def fmt(v: float | None) -> str:
    """A number to about three significant digits; scientific notation only below 1e-3."""
    if missing(v):
        return DASH
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 1e-3:
        return f"{v:#.3g}"  # '#' keeps trailing zeros: 0.500, not 0.5
    return f"{v:.2e}"


def pct(v: float | None) -> str:
    return DASH if missing(v) else f"{100 * v:.1f}%"


def pm(mean: float, half: float, n: int | None = None) -> str:
    """``mean ± half`` (a std or an interval's half-width); the mean alone when ``half`` is NaN,
    marked ``(n=1)`` when ``n`` says there was one seed."""
    if missing(mean):
        return DASH
    if missing(half):
        return f"{fmt(mean)} (n=1)" if n == 1 else fmt(mean)
    return f"{fmt(mean)} ± {fmt(half)}"


def pm_pct(mean: float, half: float, n: int | None = None) -> str:
    if missing(mean):
        return DASH
    if missing(half):
        return f"{pct(mean)} (n=1)" if n == 1 else pct(mean)
    return f"{100 * mean:.1f} ± {100 * half:.1f}%"


def count(v: float) -> str:
    """A whole number with thousands separators (rounded); — for NaN."""
    return DASH if missing(v) else f"{v:,.0f}"


def params(lo: int, hi: int) -> str:
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


@dataclass(frozen=True)
class Column:
    """One column of a table: its header, its cell for a row, and its cell for a reference row."""

    header: str
    cell: Callable[[Mapping[str, Any]], str]
    reference: Callable[[Mapping[str, Any]], str] = lambda r: DASH


def table(columns: list[Column], rows: list[Mapping[str, Any]], references: Sequence[Mapping[str, Any]] = ()) -> str:
    """A GitHub Markdown table: the reference rows first, then ``rows``."""
    cells = [[c.reference(r) for c in columns] for r in references]
    cells += [[c.cell(r) for c in columns] for r in rows]
    return tabulate(cells, headers=[c.header for c in columns], tablefmt="github", disable_numparse=True)

"""Figures of aggregated results: learning curves and length generalisation, per task.

Rendering only. Figures are :class:`matplotlib.figure.Figure` objects on the Agg canvas (the
one headless choice, made here; pyplot and its global backend are never touched), saved as PNG,
PDF or SVG by the file's suffix.

* Curves are the median over seeds with a min–max band. A seed that stopped early (solved)
  keeps its last value to the right of its last evaluation.
* A model fitted in closed form (the ESN) has one evaluation: it is drawn as its points and a
  dashed level line at their median, not as a curve.
* Reference lines: *chance* (a predictor that ignores its inputs, from the task's
  ``chance_level``) and the task's reference predictor (``dynamic_ngrams``: Bayes-optimal),
  measured on the same sequences as the models.
* The y axis is logarithmic when the values span at least a factor :data:`LOG_SPAN`, else
  linear with plain numbers. Values above :data:`CLIP_FACTOR` × chance (an exploded run) are
  drawn at that ceiling with an upward triangle, and the axes say so.
* The x axis of generalisation figures is named by the task (``length_label``: items K, …).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from memtasks.results.aggregate import eval_labels, reference_of, task_class
from memtasks.results.errors import RecordError, ResultsError
from memtasks.results.cells import METRIC_NAMES, fmt
from memtasks.results.store import eval_rows, task_instance

FORMATS = (".png", ".pdf", ".svg")
MARKERS = "osD^v<>px*"
LOG_SPAN = 20.0  # a log axis only when the data span at least this factor (else ticks like 1.07x10^0)
CLIP_FACTOR = 100.0  # values above this many times chance are clipped (drawn at the ceiling)
SIZE = (6.4, 4.0)


def new_figure() -> tuple[Figure, Any]:
    """A figure with one axes, on the Agg canvas (no pyplot, no global backend)."""
    fig = Figure(figsize=SIZE)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: Path | str) -> Path:
    """Write ``fig`` as PNG, PDF or SVG, chosen by ``path``'s suffix."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ResultsError(f"{path}: cannot tell the figure format from the suffix {path.suffix or '(none)'!r}; "
                           f"use one of {', '.join(FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# --- reference levels ------------------------------------------------------------------------------
def _chance(tdf: pd.DataFrame, metric: str, length: int | None) -> float | None:
    """The task's chance level of ``metric`` at ``length`` (None: training range), or None if unknown."""
    task = task_instance(str(tdf["task"].iloc[0]), str(tdf["task_params"].iloc[0]))
    if task is None:
        return None
    try:
        level = task.chance_level(metric, length)
    except Exception:  # a plugin's task whose chance level cannot be computed: draw no line
        return None
    return None if level is None or not np.isfinite(level) else float(level)


def _reference(tdf: pd.DataFrame, metric: str) -> tuple[str, float] | None:
    """(name, mean value) of the task's reference predictor at the training lengths, if any."""
    ref = reference_of(str(tdf["task"].iloc[0]))
    col = f"train/{ref.metric}" if ref is not None else ""
    if ref is None or metric not in ("cost",) or col not in tdf or not tdf[col].notna().any():
        return None
    return ref.name, float(tdf.loc[tdf["status"] == "ok", col].mean())


def _levels(ax: Any, chance: float | None, reference: tuple[str, float] | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="0.35", ls=":", lw=1.2, label="chance (ignores the input)")
    if reference is not None:
        ax.axhline(reference[1], color="black", ls="-.", lw=1.2, label=f"{reference[0]} (reference)")


# --- axes --------------------------------------------------------------------------------------------
def _clip(values: np.ndarray, ceiling: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``values`` with everything above ``ceiling`` set to it, and where that happened."""
    if ceiling is None:
        return values, np.zeros(values.shape, dtype=bool)
    over = np.nan_to_num(values, nan=-np.inf) > ceiling
    return np.where(over, ceiling, values), over


def _y_scale(ax: Any, values: list[float]) -> None:
    v = np.asarray([x for x in values if np.isfinite(x)])
    if len(v) and v.min() > 0 and v.max() / v.min() >= LOG_SPAN:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)


def _finish(fig: Figure, ax: Any, title: str, clipped: float | None, ceiling: float | None) -> Figure:
    if clipped is not None and ceiling is not None:  # the legend explains the triangles
        ax.plot([], [], ls="", marker="^", color="0.3",
                label=f"clipped at {fmt(ceiling)} = {CLIP_FACTOR:g}× chance (largest {clipped:.3g})")
    ax.set_title(f"{title}\n(median over seeds, min–max band)", fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _entry_label(entry: str, n: int, closed_form: bool) -> str:
    return f"{entry} (n={n}, closed-form fit)" if closed_form else f"{entry} (n={n})"


# --- learning curves -------------------------------------------------------------------------------
def _curve(folder: Path, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        rows = eval_rows(folder)
    except RecordError:  # an unreadable metrics file: this seed has no curve
        return None
    pts = [(r["sequences"], r["metrics"]["train"][metric]) for r in rows if metric in r.get("metrics", {}).get("train", {})]
    if not pts:
        return None
    xs, ys = zip(*sorted(pts))
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _band(curves: list[tuple[np.ndarray, np.ndarray, bool]]) -> tuple[np.ndarray, ...]:
    """Median, min and max over seeds on the union of their x values (linear interpolation)."""
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    stack = np.full((len(curves), len(grid)), np.nan)
    for i, (xs, ys, hold) in enumerate(curves):
        inside = (grid >= xs[0]) & (grid <= (np.inf if hold else xs[-1]))
        stack[i, inside] = np.interp(grid[inside], xs, ys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns where no seed covers x
        return grid, np.nanmedian(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def learning_figure(task: str, tdf: pd.DataFrame, entries: list[str], primary: str) -> Figure | None:
    """The primary metric at the training lengths against training sequences, one line per entry."""
    chance = _chance(tdf, primary, None)
    ceiling = CLIP_FACTOR * chance if chance else None
    fig, ax = new_figure()
    drawn: list[float] = []
    largest_clipped: float | None = None
    for entry in entries:
        runs = tdf[tdf["entry"] == entry]
        curves = []
        for path, status in zip(runs["path"], runs["status"]):
            c = _curve(Path(path).parent, primary)
            if c is not None:
                curves.append((c[0], c[1], status == "ok"))
        if not curves:
            continue
        closed = bool(runs["closed_form"].fillna(False).astype(bool).all())
        label = _entry_label(entry, len(curves), closed)
        if all(len(c[0]) == 1 for c in curves):  # one evaluation per seed: a level, not a curve
            xs, ys = np.concatenate([c[0] for c in curves]), np.concatenate([c[1] for c in curves])
            level, _ = _clip(np.asarray([np.median(ys)]), ceiling)
            (points,) = ax.plot(xs, _clip(ys, ceiling)[0], ls="", marker="o")
            ax.axhline(level[0], ls="--", lw=1.5, color=points.get_color(), label=label)
            drawn += [*ys, level[0]]
            over = _clip(ys, ceiling)[1]
        else:
            x, med, lo, hi = _band(curves)
            med, over = _clip(med, ceiling)
            (line,) = ax.plot(x, med, label=label)
            ax.fill_between(x, _clip(lo, ceiling)[0], _clip(hi, ceiling)[0], color=line.get_color(), alpha=0.2, lw=0)
            ax.plot(x[over], med[over], ls="", marker="^", color=line.get_color())
            drawn += [*med, *lo]
            ys = np.concatenate([c[1] for c in curves])
        if over.any():
            largest_clipped = max(largest_clipped or -np.inf, float(np.nanmax(ys)))
    if not ax.lines:  # no run has a metrics file with this metric
        return None
    reference = _reference(tdf, primary)
    _levels(ax, chance, reference)
    _y_scale(ax, [*drawn, *(x for x in (chance, reference and reference[1]) if x)])
    ax.set_xlabel("training sequences")
    ax.set_ylabel(f"{METRIC_NAMES[primary]} at training lengths")
    return _finish(fig, ax, f"{task}: learning curves", largest_clipped, ceiling)


# --- generalisation ------------------------------------------------------------------------------
def generalisation_figure(task: str, tdf: pd.DataFrame, entries: list[str], primary: str) -> Figure | None:
    """Sequence accuracy (or mse) against length; the training range shaded, chance dotted."""
    lengths = [lab for lab in eval_labels(tdf) if lab.isdigit()]
    if not lengths:
        return None
    lo, hi = float(tdf["train_lo"].min()), float(tdf["train_hi"].max())
    known = not np.isnan(lo)  # a plugin's task that is not loaded: no training range to draw
    metric = "mse" if primary == "mse" else "seq_accuracy"
    scale = 100.0 if metric == "seq_accuracy" else 1.0
    # The training-range evaluation set mixes lengths; it sits at the middle of the range.
    xs = np.asarray(([(lo + hi) / 2] if known else []) + [float(x) for x in lengths])
    cols = [f"{lab}/{metric}" for lab in (["train"] if known else []) + lengths]
    points: list[int | None] = ([None] if known else []) + [int(x) for x in lengths]
    chance = [_chance(tdf, metric, n) for n in points]
    chance_ok = all(c is not None for c in chance)
    ceiling = CLIP_FACTOR * max(chance) if metric == "mse" and chance_ok and max(chance) > 0 else None  # type: ignore[type-var]
    fig, ax = new_figure()
    if known:
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.85", label="training range")
    drawn: list[float] = []
    largest_clipped: float | None = None
    for i, entry in enumerate(entries):
        ok = tdf[(tdf["entry"] == entry) & (tdf["status"] == "ok")]
        values = ok.reindex(columns=cols).to_numpy(dtype=float)
        if values.size == 0 or np.isnan(values).all():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a point no finished seed has
            med, lo_, hi_ = (scale * f(values, axis=0) for f in (np.nanmedian, np.nanmin, np.nanmax))
        clipped, over = _clip(med, ceiling)
        closed = bool(ok["closed_form"].fillna(False).astype(bool).all())
        (line,) = ax.plot(xs, clipped, marker=MARKERS[i % len(MARKERS)], label=_entry_label(entry, len(ok), closed))
        ax.fill_between(xs, _clip(lo_, ceiling)[0], _clip(hi_, ceiling)[0], color=line.get_color(), alpha=0.2, lw=0)
        ax.plot(xs[over], clipped[over], ls="", marker="^", ms=9, color=line.get_color())
        if over.any():
            largest_clipped = max(largest_clipped or -np.inf, float(np.nanmax(hi_)))
        drawn += [*clipped, *_clip(lo_, ceiling)[0]]
    if not any(line.get_label() and not line.get_label().startswith("_") for line in ax.lines):
        return None
    if chance_ok:
        ax.plot(xs, scale * np.asarray(chance, dtype=float), color="0.35", ls=":", lw=1.2, label="chance (ignores the input)")
    if metric == "mse":
        _y_scale(ax, [*drawn, *(c for c in chance if c)])  # type: ignore[misc]
    cls = task_class(task)
    ax.set_xlabel(cls.length_label if cls is not None else "length")
    ax.set_ylabel("sequence accuracy (%)" if metric == "seq_accuracy" else "mse")
    if xs.max() / max(xs.min(), 1.0) > LOG_SPAN:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    return _finish(fig, ax, f"{task}: generalisation", largest_clipped, ceiling)


FIGURES: dict[str, Callable[[str, pd.DataFrame, list[str], str], Figure | None]] = {
    "learning": learning_figure,
    "generalisation": generalisation_figure,
}

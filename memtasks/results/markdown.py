"""Markdown rendering of aggregated results: the leaderboard and ``compare``'s tables.

Rendering only: the numbers come from :mod:`memtasks.results.aggregate`. Each table's headers
and cells come from one column list, so a column cannot lose its header or shift its cells.
Deterministic: the same records give the same bytes (no clock is read; the date shown is the
latest ``finished_at`` among the records).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
from tabulate import tabulate

from memtasks.results.aggregate import (
    budget_note, groups_of, overall, paper_budget, reference_of, summarise, with_entries,
)
from memtasks.results.store import label_key

DASH = "—"
TITLE = "# memtasks leaderboard"
HOW_SEEDS = (
    "**How seeds are aggregated.** *mean ± std* columns are the mean and sample standard deviation "
    "(n−1; omitted for one seed) over the seeds that finished (status `ok`); *best* columns are the single "
    "best seed (lowest cost or mse at the training lengths; its seed number in brackets) and its accuracy. "
    "Generalisation columns are means over finished seeds. *solved* is the number of seeds solved at the end "
    "of training out of all seeds. *median seqs to solve* is over all seeds, one that never met the solved "
    "criterion counting as infinitely many (— when half or more never did). *seq/s* is the mean training "
    "throughput of the finished seeds. Rows are sorted by the mean cost (or mse) at the training lengths, best first."
)
OVERALL_NOTE = (
    "*mean rank*: the mean over the tasks a model ran of its rank on each (1 = lowest mean cost or mse at "
    "the training lengths; ties share the average rank; a model with no finished seed on a task ranks last). "
    "A model *solves a task* when at least half of its seeds solved it."
)
# Display names of metrics, in the order compare's table lists them; other metrics follow by name.
METRIC_NAMES = {"cost": "cost (bits/seq)", "mse": "mse", "seq_accuracy": "seq accuracy", "bit_errors": "bit errors",
                "excess_bits": "excess bits", "bayes_cost": "Bayes cost (bits/seq)"}


# --- numbers ---------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    """A number to about three significant digits; scientific notation only below 1e-3."""
    if v is None or np.isnan(v):
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


def pct(v: float) -> str:
    return DASH if np.isnan(v) else f"{100 * v:.1f}%"


def pm(mean: float, std: float) -> str:
    """``mean ± std``; the mean alone for one seed (std NaN)."""
    if np.isnan(mean):
        return DASH
    return fmt(mean) if np.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def pm_pct(mean: float, std: float) -> str:
    if np.isnan(mean):
        return DASH
    return pct(mean) if np.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f}%"


def params(lo: int, hi: int) -> str:
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _table(columns: list["Column"], rows: list[Mapping[str, Any]], reference: bool = False) -> str:
    cells = [[c.reference for c in columns]] if reference else []
    cells += [[c.cell(r) for c in columns] for r in rows]
    return tabulate(cells, headers=[c.header for c in columns], tablefmt="github", disable_numparse=True)


@dataclass(frozen=True)
class Column:
    """One column of a table: its header, its cell for a row, and its cell in the reference row."""

    header: str
    cell: Callable[[Mapping[str, Any]], str]
    reference: str = DASH


# --- the leaderboard ---------------------------------------------------------------------------
def _distinct(df: pd.DataFrame, col: str) -> str:
    values = sorted({str(v) for v in df[col].dropna()})
    return ", ".join(values) if values else "unknown"


def _facts(df: pd.DataFrame, presets: Mapping[str, str]) -> list[str]:
    groups = ", ".join(f"`{g}`" + (f" (preset `{presets[g]}`)" if g in presets else "") for g in groups_of(df))
    hw = df.assign(hw=[f"{d} ({n})" if isinstance(n, str) else str(d) for d, n in zip(df["device"], df["device_name"])])
    hardware = ", ".join(f"{k}: {v} runs" for k, v in sorted(hw.groupby("hw").size().items()))
    finished = df["finished_at"].dropna()
    date = f"{max(finished)} (latest `finished_at` among the records)" if len(finished) else "unknown (no `finished_at` in the records)"
    commits = sorted({str(c)[:10] for c in df["git_commit"].dropna()})
    below, unsourced = [], []
    for task, tdf in df.groupby("task", sort=True):
        paper = paper_budget(str(task))
        if paper is None:
            unsourced.append(str(task))
        elif budget_note(str(task), float(tdf["budget"].min())):
            below.append(f"{task} ({int(tdf['budget'].min()):,} vs ≈{paper[0]:,})")
    return [
        f"- **Runs:** {len(df)} records; {df['task'].nunique()} tasks × {df['model'].nunique()} models; groups {groups}",
        f"- **Hardware:** {hardware}",
        f"- **Versions:** memtasks {_distinct(df, 'memtasks_version')}; torch {_distinct(df, 'torch_version')}; "
        f"python {_distinct(df, 'python_version')}; git {', '.join(commits) or 'unknown'}",
        f"- **Date:** {date}",
        f"- **Budgets below the papers' (≈):** {'; '.join(below) if below else 'none'}"
        + (f"; no paper budget recorded for {', '.join(unsourced)}" if unsourced else ""),
    ]


def _task_columns(task: str, agg: pd.DataFrame) -> list[Column]:
    primary = agg["primary"].iloc[0]
    unit = "mse" if primary == "mse" else "cost (bits/seq)"
    labels = sorted((c[3:] for c in agg.columns if c.startswith("at:") and agg[c].notna().any()), key=label_key)
    ref = reference_of(task)
    has_ref = ref is not None and "excess_mean" in agg and agg["excess_mean"].notna().any()
    ref_value = fmt(float(agg["reference_value"].mean())) if has_ref else DASH

    def best(r: Mapping[str, Any]) -> str:
        return DASH if pd.isna(r["best_seed"]) else f"{fmt(r['best_primary'])} (s{int(r['best_seed'])})"

    def to_solve(r: Mapping[str, Any]) -> str:
        return DASH if np.isinf(r["median_to_solve"]) else f"{r['median_to_solve']:,.0f}"

    cols = [
        Column("model", lambda r: r["entry"], f"*{ref.name}* (reference)" if has_ref else DASH),
        Column("params", lambda r: params(r["params_min"], r["params_max"])),
        Column(f"{unit} mean ± std", lambda r: pm(r["primary_mean"], r["primary_std"]), ref_value),
        Column(f"{unit} best (seed)", best),
    ]
    if primary == "cost":
        cols += [Column("seq acc mean ± std", lambda r: pm_pct(r.get("acc_mean", np.nan), r.get("acc_std", np.nan))),
                 Column("seq acc best", lambda r: pct(r.get("best_acc", np.nan)))]
    if has_ref:
        excess = ref.excess.replace("_", " ")
        cols.append(Column(f"{excess} mean ± std", lambda r: pm(r.get("excess_mean", np.nan), r.get("excess_std", np.nan)), "0"))
    point, show = ("mse", fmt) if primary == "mse" else ("acc", pct)
    cols += [Column(f"{point} @ {label}", lambda r, k=f"at:{label}": show(r[k])) for label in labels]
    cols += [Column("solved", lambda r: f"{r['solved']}/{r['runs']}"),
             Column("median seqs to solve", to_solve),
             Column("seq/s", lambda r: fmt(r["throughput"]))]
    if bool((agg["diverged"] + agg["failed"]).any()):
        cols.append(Column("not ok", lambda r: ", ".join(f"{r[s]} {s}" for s in ("diverged", "failed") if r[s]) or ""))
    return cols


def _range(tdf: pd.DataFrame) -> str:
    lo, hi = tdf["train_lo"].min(), tdf["train_hi"].max()
    if np.isnan(lo):
        return "training lengths unknown"
    return f"training length {int(lo)}" if lo == hi else f"training lengths {int(lo)}–{int(hi)}"


def _budget(tdf: pd.DataFrame) -> str:
    b = tdf["budget"].dropna()
    return "unknown" if not len(b) else params(int(b.min()), int(b.max()))


def _task_section(task: str, tdf: pd.DataFrame, agg: pd.DataFrame, h: str) -> list[str]:
    seeds = ", ".join(str(int(n)) for n in sorted(tdf.groupby("entry").size().unique()))
    lines = [f"{h} {task}", "", f"{_range(tdf)}; seeds per model: {seeds}; budget {_budget(tdf)} sequences.", ""]
    note = budget_note(task, float(tdf["budget"].min()))
    if note:
        lines += [f"> Note: {note}.", ""]
    columns = _task_columns(task, agg)
    has_ref = columns[0].reference != DASH
    return lines + [_table(columns, agg.to_dict("records"), reference=has_ref), ""]


def _overall_section(agg: pd.DataFrame, h: str) -> list[str]:
    tasks = sorted(agg["task"].unique())
    columns = [Column("model", lambda r: r["entry"]),
               Column("mean rank", lambda r: f"{r['mean_rank']:.2f}"),
               Column("tasks solved", lambda r: f"{r['tasks_solved']}/{r['tasks_run']}")]
    columns += [Column(f"rank: {t}", lambda r, k=f"rank:{t}": DASH if np.isnan(r[k]) else f"{r[k]:g}") for t in tasks]
    return [f"{h} Overall", "", OVERALL_NOTE, "", _table(columns, overall(agg).to_dict("records")), ""]


def _sections(df: pd.DataFrame, h: str) -> list[str]:
    df = with_entries(df)
    agg = summarise(df)
    lines: list[str] = []
    for task in sorted(agg["task"].unique()):
        lines += _task_section(task, df[df["task"] == task], agg[agg["task"] == task], h)
    return lines + _overall_section(agg, h)


def leaderboard_markdown(df: pd.DataFrame, presets: Mapping[str, str] | None = None) -> str:
    """The leaderboard of ``df`` (:func:`~memtasks.results.store.collect`'s table) as Markdown.

    One group: its tables under one title. Several: one section per group, each ranked on its
    own (groups train under different settings, so a ranking never mixes them).
    """
    presets = presets or {}
    if df.empty:
        return f"{TITLE}\n\nNo run records found.\n"
    groups = groups_of(df)
    if len(groups) == 1:
        lines = [TITLE, "", *_facts(df, presets), "", HOW_SEEDS, "", *_sections(df, "##")]
    else:
        listed = ", ".join(f"`{g}`" for g in groups)
        lines = [TITLE, "", f"{len(groups)} groups: {listed}. Each group is ranked on its own: groups are trained "
                 "under different settings (preset, budget, hardware), so their runs never share a table.", "",
                 HOW_SEEDS, ""]
        for g in groups:
            gdf = df[df["group"] == g]
            lines += [f"## Group `{g}`", "", *_facts(gdf, presets), "", *_sections(gdf, "###")]
    return "\n".join(lines).rstrip("\n") + "\n"


def leaderboard_groups(text: str) -> set[str] | None:
    """The groups a leaderboard file was written for, or None when ``text`` is not a leaderboard."""
    if not text.startswith(TITLE):
        return None
    groups: set[str] = set()
    for line in text.splitlines():
        if line.startswith("- **Runs:**") and "; groups " in line:
            listed = re.sub(r" \(preset `[^`]*`\)", "", line.split("; groups ", 1)[1])
            groups.update(re.findall(r"`([^`]+)`", listed))
    return groups


# --- compare -------------------------------------------------------------------------------------
def _metric_order(metric: str) -> tuple[int, str]:
    names = list(METRIC_NAMES)
    return (names.index(metric) if metric in names else len(names), metric)


def compare_table(agg: pd.DataFrame, stats: pd.DataFrame, entries: list[str]) -> str:
    """One task's models side by side: rows are counts, then every metric at every eval point.

    ``agg`` and ``stats`` are that task's rows of :func:`~memtasks.results.aggregate.summarise`
    and :func:`~memtasks.results.aggregate.metric_stats`: the leaderboard's numbers exactly.
    """
    by = {r["entry"]: r for r in agg.to_dict("records")}
    rows = [
        ["", "seeds (ok/all)", *(f"{by[e]['ok']}/{by[e]['runs']}" for e in entries)],
        ["", "trainable params", *(params(by[e]["params_min"], by[e]["params_max"]) for e in entries)],
        ["", "solved seeds", *(f"{by[e]['solved']}/{by[e]['runs']}" for e in entries)],
        ["", "seq/s", *(fmt(by[e]["throughput"]) for e in entries)],
    ]
    points = sorted(set(stats["eval_point"]), key=label_key)
    for point in points:
        at = stats[stats["eval_point"] == point]
        for metric in sorted(set(at["metric"]), key=_metric_order):
            cells = []
            for e in entries:
                hit = at[(at["metric"] == metric) & (at["entry"] == e)]
                mean, std = (float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])) if len(hit) else (np.nan, np.nan)
                cells.append((pm_pct if metric == "seq_accuracy" else pm)(mean, std))
            rows.append([point, METRIC_NAMES.get(metric, metric), *cells])
    return tabulate(rows, headers=["eval point", "metric", *entries], tablefmt="github", disable_numparse=True)


def solve_table(rows: list[Mapping[str, Any]]) -> str:
    """Per seed: sequences to solve and the wall / training seconds to that evaluation.

    ``rows``: entry, seed, sequences_seen, sequences_to_solve (NaN: never), wall_s and train_s (None: unknown).
    """
    def seqs(r: Mapping[str, Any]) -> str:
        if pd.isna(r["sequences_to_solve"]):
            return f"not solved in {int(r['sequences_seen']):,}"
        return f"{int(r['sequences_to_solve']):,}"

    columns = [Column("entry", lambda r: str(r["entry"])), Column("seed", lambda r: str(r["seed"])),
               Column("sequences to solve", seqs),
               Column("wall s at solve", lambda r: DASH if r["wall_s"] is None else f"{r['wall_s']:.1f}"),
               Column("training s at solve", lambda r: DASH if r["train_s"] is None else f"{r['train_s']:.1f}")]
    return _table(columns, rows)

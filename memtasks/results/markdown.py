"""Markdown rendering of aggregated results: the leaderboard and ``compare``'s tables.

Rendering only: the numbers come from :mod:`memtasks.results.aggregate` (definitions in
:mod:`memtasks.results.stats`), cells from :mod:`memtasks.results.cells`. Deterministic: the
same records give the same bytes (no clock is read; the date shown is the latest
``finished_at`` among the records).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Mapping

import numpy as np
import pandas as pd

from memtasks.results.aggregate import (
    budget_note, chance_on_eval, groups_of, overall, paper_budget, reference_levels, reference_of, summarise,
    tasks_all_at_chance, with_entries,
)
from memtasks.results.cells import (  # noqa: F401  (fmt and METRIC_NAMES are used by plots)
    DASH, METRIC_NAMES, Column, count, fmt, missing, params, pct, pm, pm_pct, table,
)
from memtasks.results.stats import AT_CHANCE_MARGIN, IMPROVING_SHARE
from memtasks.results.store import label_key

TITLE = "# memtasks leaderboard"
HOW_TO_READ = f"""**How to read the tables.**

- *mean ± 95% CI*: the mean over the seeds that finished (status `ok`) ± the half-width of the 95% Student-t interval, t(0.975, n−1)·s/√n; *(n=1)* marks one seed, which has no interval. *best (seed)*: the finished seed with the lowest cost (or mse) at the training lengths.
- *chance*: the cost of the best predictor that ignores its inputs (one output per step and channel, the mean target there; declared by each task), scored on the same evaluation sequences as the models. *chance removed*: 1 − cost ÷ chance (negative: worse than chance). A model is *at chance* when the upper end of its interval (its mean, for one seed) removes less than {100 * AT_CHANCE_MARGIN:g}% of chance and none of its seeds solved the task.
- *rank*: 1 + the number of models whose 95% interval lies wholly below this model's; models with overlapping intervals share a rank (marked =), two models at chance never rank against each other, and a model with fewer than two finished seeds is not ranked.
- *to solve*: the median over all seeds of the training sequences (optimiser updates) at the first evaluation that met the task's solved threshold, a seed that never did counting as infinitely many, so *not within budget* when half or more never did. *solved*: seeds that meet the threshold at the end, of all seeds.
- *AULC*: the mean cost over training (the trapezoid area under the learning curve from the first evaluation to the budget, over that span) ÷ chance, averaged over finished seeds: 1 is chance throughout, 0 perfect from the first evaluation.
- *improving*: *yes* when, over the seeds that trained to the end of their budget, the cost fell in the last third of training by more than both the spread of their final costs (std) and {100 * IMPROVING_SHARE:g}% of the cost at two thirds; — when every seed stopped early, solved.
- *tuned*: the value of the tuned hyper-parameter (the learning rate; for the ESN one closed-form hyper-parameter) the seeds trained with, chosen by the matrix's tuning phase on a validation set (`tuning.json` beside the seeds lists every trial's validation value).
- *longest solved*: per seed, the longest length up to which the run meets the solved threshold at the end (the training range's longest length, extended through each longer evaluated length that is solved as well; none when the training range is not solved); the median over seeds, and the best seed's where it differs. *curriculum reached*: with the `grow` curriculum, the upper end of the training range it had widened to at the end (median over seeds); the training range's longest length means it reached the whole range.
- Generalisation columns are means over finished seeds; *seq/s* is the mean training throughput. Each task's heading gives its budget in sequences and optimiser updates."""


# --- the header ---------------------------------------------------------------------------------
def _distinct(df: pd.DataFrame, col: str) -> str:
    values = sorted({str(v) for v in df[col].dropna()})
    return ", ".join(values) if values else "unknown"


def _commits(df: pd.DataFrame) -> str:
    """One commit (a published group), or every commit with its run count."""
    counts = Counter(str(c)[:10] for c in df["git_commit"].dropna())
    unknown = int(df["git_commit"].isna().sum())
    if len(counts) == 1 and not unknown:
        return f"- **Commit:** one commit, `{next(iter(counts))}`, for all {len(df)} runs"
    def runs(n: int) -> str:
        return f"{n} run" + ("s" if n != 1 else "")

    listed = ", ".join(f"`{c}` ({runs(n)})" for c, n in sorted(counts.items()))
    listed += f"{', ' if listed else ''}unknown ({runs(unknown)})" if unknown else ""
    return f"- **Commits:** not one commit: {listed}"


def _facts(df: pd.DataFrame, presets: Mapping[str, str]) -> list[str]:
    groups = ", ".join(f"`{g}`" + (f" (preset `{presets[g]}`)" if g in presets else "") for g in groups_of(df))
    hw = df.assign(hw=[f"{d} ({n})" if isinstance(n, str) else str(d) for d, n in zip(df["device"], df["device_name"])])
    hardware = ", ".join(f"{k}: {v} runs" for k, v in sorted(hw.groupby("hw").size().items()))
    finished = df["finished_at"].dropna()
    date = f"{max(finished)} (latest `finished_at` among the records)" if len(finished) else "unknown (no `finished_at` in the records)"
    below, unsourced = [], []
    for task, tdf in df.groupby("task", sort=True):
        paper = paper_budget(str(task))
        if paper is None:
            unsourced.append(str(task))
        elif budget_note(str(task), float(tdf["budget"].min())):
            below.append(f"{task} ({int(tdf['budget'].min()):,} vs ≈{paper[0]:,})")
    return [
        f"- **Runs:** {len(df)} records; {df['task'].nunique()} tasks × {df['model'].nunique()} models; groups {groups}",
        _commits(df),
        f"- **Hardware:** {hardware}",
        f"- **Versions:** memtasks {_distinct(df, 'memtasks_version')}; torch {_distinct(df, 'torch_version')}; "
        f"python {_distinct(df, 'python_version')}",
        f"- **Date:** {date}",
        f"- **Budgets below the papers' (≈):** {'; '.join(below) if below else 'none'}"
        + (f"; no paper budget recorded for {', '.join(unsourced)}" if unsourced else ""),
    ]


# --- one task ------------------------------------------------------------------------------------
def _rank_cell(r: Mapping[str, Any], shared: Counter) -> str:
    if missing(r["rank"]):
        return DASH
    text = ("=" if shared[r["rank"]] > 1 else "") + f"{r['rank']:g}"
    return text + (", at chance" if r["at_chance"] is True else "")


def _to_solve(r: Mapping[str, Any]) -> str:
    if math.isinf(r["median_to_solve"]):
        return "not within budget"
    return f"{r['median_to_solve']:,.0f} ({count(r['median_updates_to_solve'])})"


def _longest(r: Mapping[str, Any]) -> str:
    median, best = r["longest_median"], r["longest_best"]
    if missing(median):
        return DASH
    shown = "none" if median == 0 else f"{median:g}"
    return shown if best == median else f"{shown} (best {best:g})"


def _improving(r: Mapping[str, Any]) -> str:
    return DASH if missing(r["improving"]) else ("yes" if r["improving"] else "no")


def _best_beaten(r: Mapping[str, Any], refs: list[dict[str, Any]]) -> str:
    """The strongest reference predictor whose cost the model's mean cost matches or beats."""
    beaten = [x for x in refs[1:] if not missing(r["primary_mean"]) and r["primary_mean"] <= x["cost"]]
    return min(beaten, key=lambda x: x["cost"])["name"] if beaten else ("none" if refs[1:] else DASH)


def _references(task: str, tdf: pd.DataFrame, agg: pd.DataFrame) -> list[dict[str, Any]]:
    """Reference rows, scored on the evaluation set most runs used: chance, then the task's own."""
    key = Counter(zip(tdf["task_params"].astype(str), tdf["eval_size"].astype(float))).most_common(1)[0][0]
    chance = chance_on_eval(task, *key)
    if missing(chance):
        return []
    ref_value = float(agg["reference_value"].mean()) if "reference_value" in agg else float("nan")
    rows = [{"name": "chance (input-independent)", "cost": chance}]
    rows += [{"name": name, "cost": cost} for name, cost in reference_levels(task, *key)]
    for r in rows:
        r["removed"] = 1 - r["cost"] / chance if chance else float("nan")
        r["excess"] = r["cost"] - ref_value
    return rows


def _task_columns(task: str, agg: pd.DataFrame, refs: list[dict[str, Any]]) -> list[Column]:
    primary = agg["primary"].iloc[0]
    unit = "mse" if primary == "mse" else "cost (bits/seq)"
    labels = sorted((c[3:] for c in agg.columns if c.startswith("at:") and agg[c].notna().any()), key=label_key)
    ref = reference_of(task)
    has_excess = ref is not None and "excess_mean" in agg and agg["excess_mean"].notna().any()
    shared = Counter(agg["rank"].dropna())

    def best(r: Mapping[str, Any]) -> str:
        return DASH if missing(r["best_seed"]) else f"{fmt(r['best_primary'])} (s{int(r['best_seed'])})"

    cols = [
        Column("model", lambda r: r["entry"], lambda r: f"*{r['name']}*"),
        Column("rank", lambda r: _rank_cell(r, shared)),
        Column("params", lambda r: params(r["params_min"], r["params_max"])),
    ]
    if agg["tuned"].notna().any():
        cols.append(Column("tuned", lambda r: r["tuned"] or DASH))
    cols += [
        Column(f"{unit} mean ± 95% CI", lambda r: pm(r["primary_mean"], r["primary_ci"], r["primary_n"]),
               lambda r: fmt(r["cost"])),
        Column(f"{unit} best (seed)", best),
        Column("chance removed", lambda r: pm_pct(r["removed_mean"], r["removed_ci"], r["primary_n"]),
               lambda r: pct(r["removed"])),
    ]
    if primary == "cost":
        cols += [Column("seq acc mean ± 95% CI", lambda r: pm_pct(r.get("acc_mean"), r.get("acc_ci"), r.get("acc_n"))),
                 Column("seq acc best", lambda r: pct(r.get("best_acc")))]
    if has_excess:
        excess = ref.excess.replace("_", " ")
        cols.append(Column(f"{excess} mean ± 95% CI", lambda r: pm(r.get("excess_mean"), r.get("excess_ci"), r.get("excess_n")),
                           lambda r: fmt(r["excess"])))
    if len(refs) > 1:
        cols.append(Column("best reference beaten", lambda r: _best_beaten(r, refs)))
    point, show = ("mse", fmt) if primary == "mse" else ("acc", pct)
    cols += [Column(f"{point} @ {label}", lambda r, k=f"at:{label}": show(r[k])) for label in labels]
    cols.append(Column("longest solved", _longest))
    if agg["curriculum_median"].notna().any():
        cols.append(Column("curriculum reached", lambda r: DASH if missing(r["curriculum_median"]) else f"{r['curriculum_median']:g}"))
    cols += [Column("solved", lambda r: f"{r['solved']}/{r['runs']}"),
             Column("to solve: seqs (updates)", _to_solve),
             Column("AULC", lambda r: fmt(r["aulc"])),
             Column("improving", _improving),
             Column("seq/s", lambda r: fmt(r["throughput"]))]
    if bool((agg["diverged"] + agg["failed"]).any()):
        cols.append(Column("not ok", lambda r: ", ".join(f"{r[s]} {s}" for s in ("diverged", "failed") if r[s]) or ""))
    return cols


def _range(tdf: pd.DataFrame) -> str:
    lo, hi = tdf["train_lo"].min(), tdf["train_hi"].max()
    if np.isnan(lo):
        return "training lengths unknown"
    return f"training length {int(lo)}" if lo == hi else f"training lengths {int(lo)}–{int(hi)}"


def _span(lo: float, hi: float) -> str:
    return count(lo) if lo == hi else f"{count(lo)}–{count(hi)}"


def _budget(tdf: pd.DataFrame) -> str:
    """The budget in sequences and optimiser updates (sequences ÷ batch size, rounded up)."""
    b = tdf["budget"].dropna()
    if not len(b):
        return "budget unknown"
    text = f"budget {_span(b.min(), b.max())} sequences"
    both = tdf.dropna(subset=["budget", "batch_size"])
    if not len(both):
        return text + " (batch size unknown)"
    updates = np.ceil(both["budget"] / both["batch_size"])
    return text + f" = {_span(updates.min(), updates.max())} updates of {_span(both['batch_size'].min(), both['batch_size'].max())}"


def _budget_cell(r: Mapping[str, Any]) -> str:
    """One entry's budget as ``sequences (updates)``, from :func:`summarise`'s row."""
    seqs = _span(r["budget_min"], r["budget_max"])
    if missing(r["batch_min"]) or missing(r["budget_min"]):
        return seqs
    return f"{seqs} ({_span(math.ceil(r['budget_min'] / r['batch_max']), math.ceil(r['budget_max'] / r['batch_min']))})"


def _task_section(task: str, tdf: pd.DataFrame, agg: pd.DataFrame, h: str) -> list[str]:
    seeds = ", ".join(str(int(n)) for n in sorted(tdf.groupby("entry").size().unique()))
    refs = _references(task, tdf, agg)
    unit = "mse" if agg["primary"].iloc[0] == "mse" else "bits/seq"
    where = f"; chance {fmt(refs[0]['cost'])} {unit} on the evaluation set" if refs else ""
    lines = [f"{h} {task}", "", f"{_range(tdf)}; seeds per model: {seeds}; {_budget(tdf)}{where}.", ""]
    note = budget_note(task, float(tdf["budget"].min()))
    if note:
        lines += [f"> Note: {note}.", ""]
    return lines + [table(_task_columns(task, agg, refs), agg.to_dict("records"), refs), ""]


# --- over tasks ----------------------------------------------------------------------------------
def _overall_section(agg: pd.DataFrame, h: str) -> list[str]:
    tasks = sorted(agg["task"].unique())
    idle = tasks_all_at_chance(agg)
    shared = {t: Counter(agg.loc[agg["task"] == t, "rank"].dropna()) for t in tasks}
    at = agg.set_index(["entry", "task"])["at_chance"].to_dict()

    def task_rank(r: Mapping[str, Any], t: str) -> str:
        v = r[f"rank:{t}"]
        return DASH if missing(v) else _rank_cell({"rank": v, "at_chance": at.get((r["entry"], t))}, shared[t])

    columns = [Column("model", lambda r: r["entry"]),
               Column("mean rank", lambda r: DASH if missing(r["mean_rank"]) else f"{r['mean_rank']:.2f}"),
               Column("tasks ranked", lambda r: f"{r['tasks_ranked']}/{r['tasks_run']}"),
               Column("tasks solved", lambda r: f"{r['tasks_solved']}/{r['tasks_run']}"),
               Column("mean AULC", lambda r: fmt(r["mean_aulc"]))]
    columns += [Column(f"rank: {t}" + (" (all at chance)" if t in idle else ""), lambda r, t=t: task_rank(r, t))
                for t in tasks]
    left_out = (f" Left out because every model is at chance there: {', '.join(idle)}." if idle else "")
    note = ("*mean rank*: the mean of a model's shared ranks over the tasks on which it is ranked; a task on "
            f"which every model is at chance gives no rank.{left_out} *mean AULC*: over the tasks it ran. "
            "A model *solves a task* when at least half of its seeds solved it.")
    return [f"{h} Overall", "", note, "", table(columns, overall(agg).to_dict("records")), ""]


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
        lines = [TITLE, "", *_facts(df, presets), "", HOW_TO_READ, "", *_sections(df, "##")]
    else:
        listed = ", ".join(f"`{g}`" for g in groups)
        lines = [TITLE, "", f"{len(groups)} groups: {listed}. Each group is ranked on its own: groups are trained "
                 "under different settings (preset, budget, hardware), so their runs never share a table.", "",
                 HOW_TO_READ, ""]
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
    from tabulate import tabulate

    by = {r["entry"]: r for r in agg.to_dict("records")}
    shared = Counter(agg["rank"].dropna())
    rows = [
        ["", "seeds (ok/all)", *(f"{by[e]['ok']}/{by[e]['runs']}" for e in entries)],
        ["", "trainable params", *(params(by[e]["params_min"], by[e]["params_max"]) for e in entries)],
        ["", "budget: seqs (updates)", *(_budget_cell(by[e]) for e in entries)],
        ["", "solved seeds", *(f"{by[e]['solved']}/{by[e]['runs']}" for e in entries)],
        ["", "to solve: seqs (updates)", *(_to_solve(by[e]) for e in entries)],
        ["", "chance removed", *(pm_pct(by[e]["removed_mean"], by[e]["removed_ci"], by[e]["primary_n"]) for e in entries)],
        ["", "AULC", *(fmt(by[e]["aulc"]) for e in entries)],
        ["", "rank among these", *(_rank_cell(by[e], shared) for e in entries)],
        ["", "seq/s", *(fmt(by[e]["throughput"]) for e in entries)],
    ]
    points = sorted(set(stats["eval_point"]), key=label_key)
    for point in points:
        at = stats[stats["eval_point"] == point]
        for metric in sorted(set(at["metric"]), key=_metric_order):
            cells = []
            for e in entries:
                hit = at[(at["metric"] == metric) & (at["entry"] == e)]
                mean, half, n = ((float(hit["mean"].iloc[0]), float(hit["ci"].iloc[0]), int(hit["seeds"].iloc[0]))
                                 if len(hit) else (np.nan, np.nan, 0))
                cells.append((pm_pct if metric == "seq_accuracy" else pm)(mean, half, n))
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
    return table(columns, rows)

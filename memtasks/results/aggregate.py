"""The one seed aggregation: the leaderboard, ``compare`` and their exports all call it.

Over the seeds of one task × entry (an entry is a model, within one group):

* every metric at every eval point (:func:`metric_stats`): mean, sample std (n−1; NaN for one
  seed), min and max over the seeds that finished (status ``ok``) and have a value for it;
* the *best seed* (lowest primary metric at the training lengths, ties to the lower seed);
* solved seeds k/n over all runs, and the median sequences-to-solve over all runs, a run that
  never met the solved criterion counting as infinitely many (so infinity when half or more never did);
* throughput: mean over the finished seeds;
* rank within the task by the mean primary metric (1 = best; ties share the average rank; no
  finished seed ranks last); a model *solves a task* when at least half of its seeds solved it.

Per-task knowledge (which metric is primary, a reference predictor, the paper's budget) comes
from the task class (:func:`task_class`), never from a table keyed by task name.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memtasks.results.errors import MixedGroupsError
from memtasks.results.store import label_key

STAT_COLUMNS = ["task", "entry", "eval_point", "metric", "mean", "std", "min", "max", "seeds"]


def task_class(task: str) -> Any | None:
    """The registered class of ``task``, or None (a plugin's task that is not loaded)."""
    from memtasks.core.registry import RegistryError
    from memtasks.tasks import TASKS

    try:
        return TASKS.get(task)
    except RegistryError:  # fall back on what the metrics say
        return None


def reference_of(task: str) -> Any | None:
    cls = task_class(task)
    return cls.reference if cls is not None else None


def paper_budget(task: str) -> tuple[int, str] | None:
    """(sequences, source) of the paper that introduced ``task``, or None when not sourced."""
    cls = task_class(task)
    if cls is None or cls.paper_budget is None:
        return None
    return int(cls.paper_budget), str(cls.paper_source)


def budget_note(task: str, sequences: float | None) -> str | None:
    """A sentence when a run's budget is below the paper's, else None."""
    paper = paper_budget(task)
    if paper is None or sequences is None or np.isnan(sequences) or sequences >= paper[0]:
        return None
    return f"trained for {int(sequences):,} sequences, below the paper's ≈{paper[0]:,} ({paper[1]})"


def groups_of(df: pd.DataFrame) -> list[str]:
    return sorted(str(g) for g in df["group"].dropna().unique())


def check_one_group(df: pd.DataFrame, where: str) -> str:
    """The one group of ``df``'s records; several raise :class:`MixedGroupsError` naming them."""
    groups = groups_of(df)
    if len(groups) > 1:
        raise MixedGroupsError(
            f"the runs chosen under {where} come from several groups ({', '.join(groups)}), trained under different settings; "
            "choose one with --group"
        )
    return groups[0]


def with_entries(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``entry``: the name a model is listed under (its name; rankings never span groups)."""
    df = df.copy()
    df["entry"] = df["model"].astype(str)
    return df


def primary_metric(task: str, df: pd.DataFrame) -> str:
    """``mse`` or ``cost``: the metric runs of ``task`` are ranked by (lower is better)."""
    cls = task_class(task)
    loss = cls.loss if cls is not None else ("mse" if "train/mse" in df and df["train/mse"].notna().any() else "bce")
    return "mse" if loss == "mse" else "cost"


def eval_labels(df: pd.DataFrame) -> list[str]:
    """Generalisation labels present in ``df``'s metric columns (everything but "train")."""
    labels = {c.rsplit("/", 1)[0] for c in df.columns if "/" in c and df[c].notna().any()}
    return sorted(labels - {"train"}, key=label_key)


def median_to_solve(values: pd.Series) -> float:
    """Median over all runs; a run that never solved counts as infinity."""
    arr = np.where(values.isna(), np.inf, values.to_numpy(dtype=float))
    return float(np.median(arr)) if len(arr) else float("inf")


def metric_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Every metric at every eval point, per task × entry, over the finished seeds that have it.

    Long form, columns :data:`STAT_COLUMNS`; ``df`` needs ``entry`` (:func:`with_entries`).
    """
    ok = df[df["status"] == "ok"]
    metric_cols = [c for c in df.columns if "/" in c]
    long = ok.melt(id_vars=["task", "entry", "seed"], value_vars=metric_cols, var_name="column").dropna(subset=["value"])
    if long.empty:
        return pd.DataFrame(columns=STAT_COLUMNS)
    long[["eval_point", "metric"]] = long["column"].str.rsplit("/", n=1, expand=True)
    grouped = long.groupby(["task", "entry", "eval_point", "metric"], sort=True)["value"]
    out = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index().rename(columns={"count": "seeds"})
    out["_order"] = [label_key(x) for x in out["eval_point"]]
    out = out.sort_values(["task", "entry", "_order", "metric"], kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)[STAT_COLUMNS]


def _stat(stats: pd.DataFrame, point: str, metric: str) -> tuple[float, float]:
    """(mean, std) of one metric at one eval point from one task × entry's :func:`metric_stats`."""
    hit = stats[(stats["eval_point"] == point) & (stats["metric"] == metric)]
    return (float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])) if len(hit) else (float("nan"), float("nan"))


def _summarise(task: str, runs: pd.DataFrame, stats: pd.DataFrame, primary: str, labels: list[str]) -> dict[str, Any]:
    nan = float("nan")
    ok = runs[runs["status"] == "ok"]
    pcol = f"train/{primary}"
    scored = ok[ok[pcol].notna()] if pcol in ok else ok.iloc[0:0]
    best = scored.sort_values([pcol, "seed"], kind="stable").iloc[0] if len(scored) else None
    mean, std = _stat(stats, "train", primary)
    row: dict[str, Any] = {
        "model": runs["model"].iloc[0], "group": runs["group"].iloc[0], "primary": primary,
        "runs": len(runs), "ok": len(ok),
        "diverged": int((runs["status"] == "diverged").sum()), "failed": int((runs["status"] == "failed").sum()),
        "params_min": int(runs["trainable_params"].min()), "params_max": int(runs["trainable_params"].max()),
        "primary_mean": mean, "primary_std": std,
        "best_seed": int(best["seed"]) if best is not None else nan,
        "best_primary": float(best[pcol]) if best is not None else nan,
        "solved": int(runs["solved"].sum()),
        "median_to_solve": median_to_solve(runs["sequences_to_solve"]),
        "throughput": float(ok["throughput"].mean()) if len(ok) else nan,
        "closed_form": bool(runs["closed_form"].fillna(False).astype(bool).all()),
    }
    if primary == "cost" and "train/seq_accuracy" in runs:
        row["acc_mean"], row["acc_std"] = _stat(stats, "train", "seq_accuracy")
        row["best_acc"] = float(best["train/seq_accuracy"]) if best is not None else nan
    ref = reference_of(task)
    if ref is not None and f"train/{ref.excess}" in runs:
        row["excess_mean"], row["excess_std"] = _stat(stats, "train", ref.excess)
        row["reference_value"] = _stat(stats, "train", ref.metric)[0]
    point_metric = "mse" if primary == "mse" else "seq_accuracy"
    for label in labels:
        row[f"at:{label}"] = _stat(stats, label, point_metric)[0]
    return row


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task × entry, best first within each task, with its rank there.

    ``df`` is :func:`~memtasks.results.store.collect`'s table of one group (several raise
    :class:`MixedGroupsError`: a ranking never spans groups).
    """
    if df.empty:
        return pd.DataFrame()
    check_one_group(df, "the table")
    df = with_entries(df)
    stats = metric_stats(df)
    out: list[dict[str, Any]] = []
    for task, tdf in df.groupby("task", sort=True):
        tdf = tdf.drop(columns=[c for c in tdf.columns if "/" in c and tdf[c].isna().all()])
        primary, labels = primary_metric(str(task), tdf), eval_labels(tdf)
        tstats = stats[stats["task"] == task]
        for entry, runs in tdf.groupby("entry", sort=True):
            estats = tstats[tstats["entry"] == entry]
            out.append({"task": task, "entry": entry, **_summarise(str(task), runs, estats, primary, labels)})
    agg = pd.DataFrame(out)
    agg["rank"] = agg.groupby("task")["primary_mean"].rank(method="average", na_option="bottom")
    agg["task_solved"] = agg["solved"] * 2 >= agg["runs"]  # at least half the seeds solved
    agg["_missing"] = agg["primary_mean"].isna()
    agg = agg.sort_values(["task", "_missing", "primary_mean", "entry"], kind="stable").drop(columns="_missing")
    return agg.reset_index(drop=True)


def overall(agg: pd.DataFrame) -> pd.DataFrame:
    """Per entry: rank on each task, mean rank over the tasks it ran, tasks solved."""
    ranks = agg.pivot(index="entry", columns="task", values="rank")
    out = pd.DataFrame({
        "mean_rank": ranks.mean(axis=1),
        "tasks_run": ranks.notna().sum(axis=1),
        "tasks_solved": agg.groupby("entry")["task_solved"].sum().astype(int),
    })
    out = pd.concat([out, ranks.add_prefix("rank:")], axis=1).rename_axis("entry").reset_index()
    return out.sort_values(["mean_rank", "entry"], kind="stable").reset_index(drop=True)

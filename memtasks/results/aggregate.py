"""The one seed aggregation: the leaderboard, ``compare`` and their exports all call it.

Over the seeds of one task × entry (an entry is a model, within one group):

* every metric at every eval point (:func:`metric_stats`): mean, sample std (n−1; NaN for one
  seed), the half-width of the 95% t-interval (``ci``; NaN for one seed), min and max over the
  seeds that finished (status ``ok``) and have a value for it;
* the primary metric's interval, the *best seed* (lowest primary metric at the training
  lengths, ties to the lower seed), and the share of chance cost removed (1 − cost / chance,
  chance being the task's best input-independent predictor scored on the same evaluation set);
* solved seeds k/n over all runs; the median sequences and optimiser updates to solve over all
  runs, a run that never met the solved criterion counting as infinitely many (so "not within
  budget" when half or more never did);
* AULC (mean cost over training ÷ chance) and "still improving", from ``metrics.jsonl``;
* throughput: mean over the finished seeds;
* the shared rank within the task, and whether the model is at chance (:mod:`~memtasks.results.stats`
  defines both); a model *solves a task* when at least half of its seeds solved it.

Per-task knowledge (which metric is primary, chance, reference predictors, the paper's budget)
comes from the task class (:func:`task_class`), never from a table keyed by task name.
"""
from __future__ import annotations

from typing import Any

from functools import lru_cache

import numpy as np
import pandas as pd

from memtasks.results import stats as S
from memtasks.results.errors import MixedGroupsError
from memtasks.results.store import label_key, task_instance

STAT_COLUMNS = ["task", "entry", "eval_point", "metric", "mean", "std", "ci", "min", "max", "seeds"]


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


@lru_cache(maxsize=128)
def _eval_task(task: str, params_json: str, eval_size: float) -> tuple[Any, Any] | None:
    """(task, its training-lengths evaluation set of ``eval_size`` sequences), as the trainer scored runs."""
    instance = task_instance(task, params_json)
    if instance is None or not np.isfinite(eval_size):
        return None
    try:
        return instance, instance.eval_batch(None, int(eval_size))
    except Exception:  # a task of another version, or one that cannot sample: no chance line
        return None


@lru_cache(maxsize=128)
def chance_on_eval(task: str, params_json: str, eval_size: float) -> float:
    """Chance (the best input-independent predictor's cost) on a run's training-lengths evaluation set; NaN if unknown."""
    built = _eval_task(task, params_json, eval_size)
    if built is None:
        return float("nan")
    try:
        return float(built[0].chance_cost(None, built[1]))
    except Exception:  # a plugin's task whose chance cannot be computed
        return float("nan")


@lru_cache(maxsize=128)
def reference_levels(task: str, params_json: str, eval_size: float) -> tuple[tuple[str, float], ...]:
    """The task's reference predictors (name, cost) on a run's training-lengths evaluation set."""
    built = _eval_task(task, params_json, eval_size)
    return () if built is None else tuple(built[0].reference_levels(built[1]))


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
    return S.median_with_never(values.to_numpy(dtype=float))


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
    out["ci"] = [S.half_width(sd, int(n)) for sd, n in zip(out["std"], out["seeds"])]
    out["_order"] = [label_key(x) for x in out["eval_point"]]
    out = out.sort_values(["task", "entry", "_order", "metric"], kind="stable").drop(columns="_order")
    return out.reset_index(drop=True)[STAT_COLUMNS]


def _stat(stats: pd.DataFrame, point: str, metric: str) -> tuple[float, float, int]:
    """(mean, 95% half-width, seeds) of one metric at one eval point from one task × entry's :func:`metric_stats`."""
    hit = stats[(stats["eval_point"] == point) & (stats["metric"] == metric)]
    if not len(hit):
        return float("nan"), float("nan"), 0
    return float(hit["mean"].iloc[0]), float(hit["ci"].iloc[0]), int(hit["seeds"].iloc[0])


def _chances(runs: pd.DataFrame) -> np.ndarray:
    return np.array([chance_on_eval(str(r["task"]), str(r["task_params"]), float(r["eval_size"]))
                     for r in runs.to_dict("records")], dtype=float)


def _mean(values: Any) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _curves(ok: pd.DataFrame, chance: np.ndarray) -> dict[str, Any]:
    """AULC (÷ chance) and the still-improving flag of the finished seeds (see :mod:`stats`)."""
    curved = ok["curve_evals"].fillna(0).to_numpy() >= 2
    aulc = _mean(ok["curve_auc"].to_numpy(dtype=float)[curved] / chance[curved]) if curved.any() else float("nan")
    full = ok[curved & ~ok["stopped_early"].fillna(False).astype(bool).to_numpy()]
    improving = S.still_improving(full["curve_two_thirds"].tolist(), full["curve_final"].tolist())
    return {"aulc": aulc, "improving": improving}


def _summarise(task: str, runs: pd.DataFrame, stats: pd.DataFrame, primary: str, labels: list[str]) -> dict[str, Any]:
    nan = float("nan")
    ok = runs[runs["status"] == "ok"]
    pcol = f"train/{primary}"
    scored = ok[ok[pcol].notna()] if pcol in ok else ok.iloc[0:0]
    best = scored.sort_values([pcol, "seed"], kind="stable").iloc[0] if len(scored) else None
    iv = S.interval(scored[pcol].tolist() if len(scored) else [])
    chance_all = _chances(runs)
    chance = _mean(chance_all)
    batches = runs["batch_size"].dropna()
    solved = int(runs["solved"].sum())
    row: dict[str, Any] = {
        "model": runs["model"].iloc[0], "group": runs["group"].iloc[0], "primary": primary,
        "runs": len(runs), "ok": len(ok),
        "diverged": int((runs["status"] == "diverged").sum()), "failed": int((runs["status"] == "failed").sum()),
        "params_min": int(runs["trainable_params"].min()), "params_max": int(runs["trainable_params"].max()),
        "primary_mean": iv.mean, "primary_std": float(scored[pcol].std()) if len(scored) > 1 else nan,
        "primary_ci": iv.half, "primary_n": iv.n,
        "best_seed": int(best["seed"]) if best is not None else nan,
        "best_primary": float(best[pcol]) if best is not None else nan,
        "chance": chance,
        "removed_mean": 1 - iv.mean / chance if chance else nan,
        "removed_ci": iv.half / chance if chance else nan,
        "at_chance": S.at_chance(iv, chance, solved),
        "solved": solved,
        "median_to_solve": median_to_solve(runs["sequences_to_solve"]),
        "median_updates_to_solve": median_to_solve(runs["updates_to_solve"]),
        "budget_min": float(runs["budget"].min()), "budget_max": float(runs["budget"].max()),
        "batch_min": float(batches.min()) if len(batches) else nan,
        "batch_max": float(batches.max()) if len(batches) else nan,
        "throughput": float(ok["throughput"].mean()) if len(ok) else nan,
        "closed_form": bool(runs["closed_form"].fillna(False).astype(bool).all()),
        "tuned": ", ".join(sorted(set(runs["tuned"].dropna()))) or None,
        "longest_median": _median(runs["longest_solved"]), "longest_best": _max(runs["longest_solved"]),
        "curriculum_median": _median(runs["curriculum_hi"]),
        **_curves(ok, chance_all[(runs["status"] == "ok").to_numpy()]),
    }
    if primary == "cost" and "train/seq_accuracy" in runs:
        row["acc_mean"], row["acc_ci"], row["acc_n"] = _stat(stats, "train", "seq_accuracy")
        row["best_acc"] = float(best["train/seq_accuracy"]) if best is not None else nan
    ref = reference_of(task)
    if ref is not None and f"train/{ref.excess}" in runs:
        row["excess_mean"], row["excess_ci"], row["excess_n"] = _stat(stats, "train", ref.excess)
        row["reference_value"] = _stat(stats, "train", ref.metric)[0]
    point_metric = "mse" if primary == "mse" else "seq_accuracy"
    for label in labels:
        row[f"at:{label}"] = _stat(stats, label, point_metric)[0]
    return row


def _median(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.median()) if len(v) else float("nan")


def _max(values: pd.Series) -> float:
    v = values.dropna()
    return float(v.max()) if len(v) else float("nan")


def _rank(agg: pd.DataFrame) -> pd.Series:
    """Shared ranks within each task (:func:`~memtasks.results.stats.shared_ranks`)."""
    out = pd.Series(np.nan, index=agg.index)
    for _, t in agg.groupby("task"):
        ivs = [S.Interval(m, h, int(n)) for m, h, n in zip(t["primary_mean"], t["primary_ci"], t["primary_n"])]
        out[t.index] = S.shared_ranks(ivs, list(t["at_chance"]))
    return out


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task × entry, best first within each task, with its shared rank there.

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
    agg["rank"] = _rank(agg)
    agg["task_solved"] = agg["solved"] * 2 >= agg["runs"]  # at least half the seeds solved
    agg["_missing"] = agg["primary_mean"].isna()
    agg = agg.sort_values(["task", "_missing", "primary_mean", "entry"], kind="stable").drop(columns="_missing")
    return agg.reset_index(drop=True)


def tasks_all_at_chance(agg: pd.DataFrame) -> list[str]:
    """Tasks on which every model with a result is at chance: no overall rank is taken over them."""
    out = []
    for task, t in agg.groupby("task", sort=True):
        flags = [f for f in t["at_chance"] if f is not None and not pd.isna(f)]
        if flags and all(flags) and len(flags) == int(t["primary_mean"].notna().sum()):
            out.append(str(task))
    return out


def overall(agg: pd.DataFrame) -> pd.DataFrame:
    """Per entry: its shared rank on each task, the mean over the tasks where it has one (tasks on
    which every model is at chance left out), tasks ranked and solved, and the mean AULC."""
    ranks = agg.pivot(index="entry", columns="task", values="rank")
    counted = ranks.drop(columns=[t for t in tasks_all_at_chance(agg) if t in ranks.columns])
    out = pd.DataFrame({
        "mean_rank": counted.mean(axis=1),
        "tasks_ranked": counted.notna().sum(axis=1),
        "tasks_run": agg.groupby("entry")["task"].nunique(),
        "tasks_solved": agg.groupby("entry")["task_solved"].sum().astype(int),
        "mean_aulc": agg.groupby("entry")["aulc"].mean(),
    })
    out = pd.concat([out, ranks.add_prefix("rank:")], axis=1).rename_axis("entry").reset_index()
    out["_missing"] = out["mean_rank"].isna()
    out = out.sort_values(["_missing", "mean_rank", "entry"], kind="stable").drop(columns="_missing")
    return out.reset_index(drop=True)

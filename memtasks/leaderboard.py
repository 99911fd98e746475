"""The leaderboard: Markdown tables built from run records (``result.json`` + ``config.json``).

Rebuildable at any time from the files alone and deterministic: the same records give the same
bytes (no clock is read; the date shown is the latest ``finished_at`` among the records).

Aggregation over seeds, per task and model:

* cost (bits/seq) or mse and sequence accuracy at the training lengths: mean ± sample std over
  the seeds that finished (status ``ok``), and the *best seed* (lowest primary metric) alongside;
* generalisation points: mean over the finished seeds;
* solved seeds k/n over all runs; median sequences-to-solve over all runs, a run that never
  met the solved criterion counting as infinitely many (so "—" when half or more never did);
* rank: by the mean primary metric at the training lengths within the task (1 = best);
  a model *solves a task* when at least half of its seeds solved it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tabulate import tabulate

from memtasks.train.record import RecordError, read_result

# Training budgets of the papers that introduced the tasks, in sequences. Approximate (≈): the
# NTM paper's learning-curve figures for these five tasks run to roughly 1M training sequences
# (x-axis in thousands), read off the axes. Tasks whose paper budget we could not source (adding,
# delayed_xor, binary_addition, plugins' tasks) are left out rather than guessed.
PAPER_BUDGETS: dict[str, int] = {
    "copy": 1_000_000,
    "repeat_copy": 1_000_000,
    "associative_recall": 1_000_000,
    "dynamic_ngrams": 1_000_000,
    "priority_sort": 1_000_000,
}
PAPER_SOURCES: dict[str, str] = {
    task: "Graves et al. 2014 (NTM), learning-curve figures: up to ≈1M training sequences" for task in PAPER_BUDGETS
}

BASE_COLUMNS = (
    "group", "task", "model", "seed", "status", "solved", "sequences_seen", "sequences_to_solve",
    "trainable_params", "total_params", "state_size", "wall_time_s", "throughput", "finished_at", "error",
    "budget", "device", "device_name", "memtasks_version", "torch_version", "python_version", "git_commit",
    "task_params", "train_lo", "train_hi", "runs_dir", "path",
)
DASH = "—"


# --- reading ---------------------------------------------------------------------------------
def label_key(label: str) -> tuple[int, int, str]:
    """Eval labels in reading order: "train", lengths ascending, then override points."""
    if label == "train":
        return (0, 0, "")
    if label.isdigit():
        return (1, int(label), "")
    return (2, 0, label)


def task_class(task: str) -> Any | None:
    from memtasks.core.registry import RegistryError
    from memtasks.tasks import TASKS

    try:
        return TASKS.get(task)
    except RegistryError:  # a plugin's task that is not loaded: fall back on the metrics
        return None


@lru_cache(maxsize=256)
def _train_range(task: str, params_json: str) -> tuple[float, float]:
    from memtasks.tasks import get_task

    try:
        params = json.loads(params_json)
        frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}  # JSON gave lists
        lo, hi = get_task(task, **frozen).train_range
        return float(lo), float(hi)
    except Exception:  # unknown task or parameters of another version: range unknown
        return float("nan"), float("nan")


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.exists():
        return {}, f"{path}: missing; this run's hardware, versions and budget are unknown"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return {}, f"{path}: unreadable ({exc}); this run's hardware, versions and budget are unknown"
    return data, None


def _row(result: dict[str, Any], config: dict[str, Any], runs_dir: Path, path: Path) -> dict[str, Any]:
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    versions = config.get("versions") if isinstance(config.get("versions"), dict) else {}
    params = run.get("task_params") if isinstance(run.get("task_params"), dict) else {}
    stsolve = result["sequences_to_solve"]
    row: dict[str, Any] = {
        **{k: result[k] for k in ("group", "task", "model", "seed", "status", "solved", "sequences_seen",
                                   "trainable_params", "total_params", "state_size", "wall_time_s", "throughput")},
        "sequences_to_solve": float("nan") if stsolve is None else float(stsolve),
        "finished_at": result.get("finished_at") if isinstance(result.get("finished_at"), str) else None,
        "error": (result["error"] or "").splitlines()[0] if result["error"] else None,
        "budget": float(run["sequences"]) if isinstance(run.get("sequences"), int) else float("nan"),
        "device": config.get("device"),
        "device_name": config.get("device_name"),
        "memtasks_version": versions.get("memtasks"),
        "torch_version": versions.get("torch"),
        "python_version": versions.get("python"),
        "git_commit": config.get("git_commit"),
        "task_params": json.dumps(params, sort_keys=True),
        "runs_dir": str(runs_dir),
        "path": str(path),
    }
    row["train_lo"], row["train_hi"] = _train_range(result["task"], row["task_params"])
    for label, metrics in result["final"].items():
        for name, value in (metrics or {}).items():
            row[f"{label}/{name}"] = float(value) if isinstance(value, (int, float)) else float("nan")
    return row


def collect(runs_dirs: list[Path], groups: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Every run record under ``runs_dirs`` (optionally only ``groups``): one row per run.

    Returns the table (metrics flattened to ``"<label>/<metric>"`` columns, e.g. ``train/cost``)
    and warnings, one per skipped or incomplete file, each naming it. Never raises for a bad record.
    """
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    seen: dict[tuple[str, str, str, int], str] = {}
    for runs_dir in map(Path, runs_dirs):
        if not runs_dir.is_dir():
            warnings.append(f"{runs_dir}: no such runs directory")
            continue
        for path in sorted(runs_dir.rglob("result.json")):
            try:
                result = read_result(path)
            except RecordError as exc:
                warnings.append(f"skipped {exc}")
                continue
            if groups and result["group"] not in groups:
                continue
            key = (result["group"], result["task"], result["model"], result["seed"])
            if key in seen:
                warnings.append(f"skipped {path}: duplicate of {seen[key]} (same group, task, model and seed)")
                continue
            seen[key] = str(path)
            config, problem = _read_config(path.parent / "config.json")
            if problem:
                warnings.append(problem)
            rows.append(_row(result, config, runs_dir, path))
    for group in groups or ():
        if not any(r["group"] == group for r in rows):
            warnings.append(f"group {group!r}: no run records under {', '.join(map(str, runs_dirs))}")
    df = pd.DataFrame(rows)
    metric_cols = sorted({c for r in rows for c in r if "/" in c},
                         key=lambda c: (label_key(c.rsplit("/", 1)[0]), c.rsplit("/", 1)[1]))
    df = df.reindex(columns=[*BASE_COLUMNS, *metric_cols])
    if not df.empty:
        df = df.sort_values(["group", "task", "model", "seed", "path"], kind="stable").reset_index(drop=True)
    return df, warnings


def matrix_meta(runs_dirs: list[Path], groups: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``{"presets": {group: preset name}}`` from each ``<runs_dir>/<group>/matrix.json`` present."""
    presets: dict[str, str] = {}
    warnings: list[str] = []
    for runs_dir in map(Path, runs_dirs):
        for group in sorted(groups):
            path = runs_dir / group / "matrix.json"
            if not path.exists() or group in presets:
                continue
            try:
                presets[group] = str(json.loads(path.read_text())["preset"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                warnings.append(f"{path}: not a matrix record ({type(exc).__name__}: {exc}); preset unknown")
    return {"presets": presets}, warnings


# --- aggregation -----------------------------------------------------------------------------
def with_entries(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``entry``: the model's name, or ``model (group)`` when several groups are shown."""
    df = df.copy()
    several = df["group"].nunique() > 1
    df["entry"] = [f"{m} ({g})" if several else m for m, g in zip(df["model"], df["group"])]
    return df


def primary_metric(task: str, df: pd.DataFrame) -> str:
    cls = task_class(task)
    loss = cls.loss if cls is not None else ("mse" if "train/mse" in df and df["train/mse"].notna().any() else "bce")
    return "mse" if loss == "mse" else "cost"


def eval_labels(df: pd.DataFrame) -> list[str]:
    """Generalisation labels present in ``df``'s metric columns (everything but "train")."""
    labels = {c.rsplit("/", 1)[0] for c in df.columns if "/" in c and df[c].notna().any()}
    return sorted(labels - {"train"}, key=label_key)


def _std(s: pd.Series) -> float:
    return float(s.std()) if len(s) > 1 else float("nan")


def median_to_solve(values: pd.Series) -> float:
    """Median over all runs; a run that never solved counts as infinity."""
    arr = np.where(values.isna(), np.inf, values.to_numpy(dtype=float))
    return float(np.median(arr)) if len(arr) else float("inf")


def _summarise(runs: pd.DataFrame, primary: str, labels: list[str]) -> dict[str, Any]:
    """The seed aggregates of one task × entry (see the module docstring for the definitions)."""
    nan = float("nan")
    ok = runs[runs["status"] == "ok"]
    pcol = f"train/{primary}"
    scored = ok[ok[pcol].notna()] if pcol in ok else ok.iloc[0:0]
    best = scored.sort_values([pcol, "seed"], kind="stable").iloc[0] if len(scored) else None
    row: dict[str, Any] = {
        "model": runs["model"].iloc[0], "group": runs["group"].iloc[0], "primary": primary,
        "runs": len(runs), "ok": len(ok),
        "diverged": int((runs["status"] == "diverged").sum()), "failed": int((runs["status"] == "failed").sum()),
        "params_min": int(runs["trainable_params"].min()), "params_max": int(runs["trainable_params"].max()),
        "primary_mean": float(scored[pcol].mean()) if len(scored) else nan,
        "primary_std": _std(scored[pcol]) if len(scored) else nan,
        "best_seed": int(best["seed"]) if best is not None else nan,
        "best_primary": float(best[pcol]) if best is not None else nan,
        "solved": int(runs["solved"].sum()),
        "median_to_solve": median_to_solve(runs["sequences_to_solve"]),
        "throughput": float(ok["throughput"].mean()) if len(ok) else nan,
    }
    if primary == "cost" and "train/seq_accuracy" in scored:
        row["acc_mean"] = float(scored["train/seq_accuracy"].mean())
        row["acc_std"] = _std(scored["train/seq_accuracy"])
        row["best_acc"] = float(best["train/seq_accuracy"]) if best is not None else nan
    if "train/excess_bits" in scored:  # tasks with a Bayes-optimal reference (dynamic_ngrams)
        row["excess_mean"] = float(scored["train/excess_bits"].mean())
        row["excess_std"] = _std(scored["train/excess_bits"])
        row["bayes_cost"] = float(scored["train/bayes_cost"].mean())
    point_metric = "mse" if primary == "mse" else "seq_accuracy"
    for label in labels:
        col = f"{label}/{point_metric}"
        row[f"at:{label}"] = float(ok[col].mean()) if col in ok and ok[col].notna().any() else nan
    return row


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task × entry, best first within each task, with its rank there."""
    df = with_entries(df)
    out: list[dict[str, Any]] = []
    for task, tdf in df.groupby("task", sort=True):
        tdf = tdf.drop(columns=[c for c in tdf.columns if "/" in c and tdf[c].isna().all()])
        primary, labels = primary_metric(str(task), tdf), eval_labels(tdf)
        for entry, runs in tdf.groupby("entry", sort=True):
            out.append({"task": task, "entry": entry, **_summarise(runs, primary, labels)})
    agg = pd.DataFrame(out)
    if agg.empty:
        return agg
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


def budget_note(task: str, sequences: float | None) -> str | None:
    """A sentence when a run's budget is below the paper's, else None."""
    paper = PAPER_BUDGETS.get(task)
    if paper is None or sequences is None or np.isnan(sequences) or sequences >= paper:
        return None
    return f"trained for {int(sequences):,} sequences, below the paper's ≈{paper:,} ({PAPER_SOURCES[task]})"


# --- rendering -------------------------------------------------------------------------------
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


def _distinct(df: pd.DataFrame, col: str) -> str:
    values = sorted({str(v) for v in df[col].dropna()})
    return ", ".join(values) if values else "unknown"


def _header(df: pd.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    presets = meta.get("presets", {})
    groups = ", ".join(f"`{g}`" + (f" (preset `{presets[g]}`)" if g in presets else "") for g in sorted(df["group"].unique()))
    hw = df.assign(hw=[f"{d} ({n})" if isinstance(n, str) else str(d) for d, n in zip(df["device"], df["device_name"])])
    hardware = ", ".join(f"{k}: {v} runs" for k, v in sorted(hw.groupby("hw").size().items()))
    finished = df["finished_at"].dropna()
    date = f"{max(finished)} (latest `finished_at` among the records)" if len(finished) else "unknown (no `finished_at` in the records)"
    commits = sorted({str(c)[:10] for c in df["git_commit"].dropna()})
    below = [
        f"{task} ({int(tdf['budget'].min()):,} vs ≈{PAPER_BUDGETS[str(task)]:,})"
        for task, tdf in df.groupby("task", sort=True) if budget_note(str(task), float(tdf["budget"].min()))
    ]
    unsourced = sorted(set(df["task"]) - set(PAPER_BUDGETS))
    lines = [
        "# memtasks leaderboard",
        "",
        f"- **Runs:** {len(df)} records; {df['task'].nunique()} tasks × {df['model'].nunique()} models; groups {groups}",
        f"- **Hardware:** {hardware}",
        f"- **Versions:** memtasks {_distinct(df, 'memtasks_version')}; torch {_distinct(df, 'torch_version')}; "
        f"python {_distinct(df, 'python_version')}; git {', '.join(commits) or 'unknown'}",
        f"- **Date:** {date}",
        f"- **Budgets below the papers' (≈):** {'; '.join(below) if below else 'none'}"
        + (f"; no paper budget recorded for {', '.join(unsourced)}" if unsourced else ""),
        "",
        "**How seeds are aggregated.** *mean ± std* columns are the mean and sample standard deviation "
        "(n−1; omitted for one seed) over the seeds that finished (status `ok`); *best* columns are the single "
        "best seed (lowest cost or mse at the training lengths; its seed number in brackets) and its accuracy. "
        "Generalisation columns are means over finished seeds. *solved* is the number of seeds solved at the end "
        "of training out of all seeds. *median seqs to solve* is over all seeds, one that never met the solved "
        "criterion counting as infinitely many (— when half or more never did). *seq/s* is the mean training "
        "throughput of the finished seeds. Rows are sorted by the mean cost (or mse) at the training lengths, best first.",
        "",
    ]
    return lines


def _params(r: Mapping[str, Any]) -> str:
    lo, hi = r["params_min"], r["params_max"]
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _task_section(task: str, tdf: pd.DataFrame, agg: pd.DataFrame) -> list[str]:
    primary = agg["primary"].iloc[0]
    unit = "mse" if primary == "mse" else "cost (bits/seq)"
    labels = sorted((c[3:] for c in agg.columns if c.startswith("at:") and agg[c].notna().any()), key=label_key)
    has_bayes = "excess_mean" in agg and agg["excess_mean"].notna().any()
    has_status = bool((agg["diverged"] + agg["failed"]).any())
    headers = ["model", "params", f"{unit} mean ± std", f"{unit} best (seed)"]
    if primary == "cost":
        headers += ["seq acc mean ± std", "seq acc best"]
    if has_bayes:
        headers += ["excess bits mean ± std"]
    headers += [("mse" if primary == "mse" else "acc") + f" @ {label}" for label in labels]
    headers += ["solved", "median seqs to solve", "seq/s"] + (["not ok"] if has_status else [])
    rows = []
    if has_bayes:
        bayes = float(agg["bayes_cost"].mean())
        rows.append(["*Bayes-optimal* (reference)", DASH, fmt(bayes), DASH] + ([DASH, DASH] if primary == "cost" else [])
                    + ["0"] + [DASH] * (len(labels) + 3 + has_status))
    for r in agg.to_dict("records"):
        best = DASH if pd.isna(r["best_seed"]) else f"{fmt(r['best_primary'])} (s{int(r['best_seed'])})"
        row = [r["entry"], _params(r), pm(r["primary_mean"], r["primary_std"]), best]
        if primary == "cost":
            row += [pm_pct(r.get("acc_mean", np.nan), r.get("acc_std", np.nan)), pct(r.get("best_acc", np.nan))]
        if has_bayes:
            row += [pm(r.get("excess_mean", np.nan), r.get("excess_std", np.nan))]
        row += [(fmt if primary == "mse" else pct)(r[f"at:{label}"]) for label in labels]
        mts = r["median_to_solve"]
        row += [f"{r['solved']}/{r['runs']}", DASH if np.isinf(mts) else f"{mts:,.0f}", fmt(r["throughput"])]
        if has_status:
            row.append(", ".join(f"{r[s]} {s}" for s in ("diverged", "failed") if r[s]) or "")
        rows.append(row)
    lo, hi = tdf["train_lo"].min(), tdf["train_hi"].max()
    if np.isnan(lo):
        rng = "training lengths unknown"
    else:
        rng = f"training length {int(lo)}" if lo == hi else f"training lengths {int(lo)}–{int(hi)}"
    seeds = ", ".join(str(int(n)) for n in sorted(tdf.groupby("entry").size().unique()))
    lines = [f"## {task}", "", f"{rng}; seeds per model: {seeds}; budget {_budget(tdf)} sequences.", ""]
    note = budget_note(task, float(tdf["budget"].min()))
    if note:
        lines += [f"> Note: {note}.", ""]
    lines += [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    return lines


def _budget(tdf: pd.DataFrame) -> str:
    b = tdf["budget"].dropna()
    if not len(b):
        return "unknown"
    lo, hi = int(b.min()), int(b.max())
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _overall_section(agg: pd.DataFrame) -> list[str]:
    table = overall(agg)
    tasks = sorted(agg["task"].unique())
    headers = ["model", "mean rank", "tasks solved", *(f"rank: {t}" for t in tasks)]
    rows = [
        [r["entry"], f"{r['mean_rank']:.2f}", f"{r['tasks_solved']}/{r['tasks_run']}",
         *(DASH if np.isnan(r[f"rank:{t}"]) else f"{r[f'rank:{t}']:g}" for t in tasks)]
        for r in table.to_dict("records")
    ]
    return [
        "## Overall",
        "",
        "*mean rank*: the mean over the tasks a model ran of its rank on each (1 = lowest mean cost or mse at "
        "the training lengths; ties share the average rank; a model with no finished seed on a task ranks last). "
        "A model *solves a task* when at least half of its seeds solved it.",
        "",
        tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
        "",
    ]


def render(df: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> str:
    """The leaderboard as Markdown; same records and meta give the same bytes."""
    meta = meta or {}
    if df.empty:
        return "# memtasks leaderboard\n\nNo run records found.\n"
    df = with_entries(df)
    agg = aggregate(df)
    lines = _header(df, meta)
    for task in sorted(agg["task"].unique()):
        lines += _task_section(task, df[df["task"] == task], agg[agg["task"] == task])
    lines += _overall_section(agg)
    return "\n".join(lines).rstrip("\n") + "\n"


def write_leaderboard(runs_dirs: list[Path], groups: list[str] | None, out_path: Path) -> tuple[str, list[str]]:
    """Collect, render and write the leaderboard; returns the Markdown and the warnings."""
    df, warnings = collect(runs_dirs, groups)
    meta, meta_warnings = matrix_meta(runs_dirs, sorted(df["group"].unique()) if not df.empty else [])
    text = render(df, meta)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    return text, warnings + meta_warnings

"""Models side by side: a text table of final metrics and learning/generalisation plots.

Built from the run records alone (``result.json``, ``config.json``, ``metrics.jsonl``), like the
leaderboard. Curves are the median over seeds with a min–max band. Learning curves plot the
task's primary metric (cost in bits/seq, or mse) at the training lengths against sequences seen;
a seed that stopped early (solved) keeps its last value to the right of its last evaluation.
Generalisation curves plot sequence accuracy (or mse) against length, the training range shaded.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from memtasks.leaderboard import DASH, collect, eval_labels, fmt, label_key, primary_metric, with_entries
from memtasks.train.record import RecordError, read_jsonl

log = logging.getLogger(__name__)

MARKERS = "osD^v<>px*"
# Display names, in the order the side-by-side table lists them; other metrics follow by name.
METRIC_NAMES = {"cost": "cost (bits/seq)", "mse": "mse", "seq_accuracy": "seq accuracy", "bit_errors": "bit errors",
                "excess_bits": "excess bits", "bayes_cost": "Bayes cost (bits/seq)"}


def _select(df: pd.DataFrame, models: list[str], task: str | None, runs_dirs: list[Path]) -> pd.DataFrame:
    """The runs of ``models`` (and ``task``); names with no runs are a ``ValueError`` listing those present."""
    where = ", ".join(map(str, runs_dirs))
    if df.empty:
        raise ValueError(f"no run records under {where}; train some runs first (memtasks train / memtasks matrix)")
    if task is not None:
        if task not in set(df["task"]):
            raise ValueError(f"no runs of task {task!r} under {where}; tasks with runs: {', '.join(sorted(set(df['task'])))}")
        df = df[df["task"] == task]
    available = sorted(set(df["model"]))
    missing = [m for m in models if m not in available]
    if missing:
        scope = f" of task {task!r}" if task else ""
        raise ValueError(
            f"no runs{scope} of model(s) {', '.join(map(repr, missing))} under {where}; models with runs: {', '.join(available)}"
        )
    return with_entries(df[df["model"].isin(models)])


def _summary_table(tdf: pd.DataFrame, entries: list[str]) -> str:
    rows: list[list[str]] = []
    by_entry = {e: tdf[tdf["entry"] == e] for e in entries}
    ok = {e: r[r["status"] == "ok"] for e, r in by_entry.items()}
    rows.append(["", "seeds (ok/all)", *(f"{len(ok[e])}/{len(by_entry[e])}" for e in entries)])
    rows.append(["", "trainable params", *(f"{int(by_entry[e]['trainable_params'].median()):,}" for e in entries)])
    rows.append(["", "solved seeds", *(f"{int(by_entry[e]['solved'].sum())}/{len(by_entry[e])}" for e in entries)])
    rows.append(["", "seq/s", *(fmt(float(ok[e]["throughput"].mean())) if len(ok[e]) else DASH for e in entries)])
    for label in ["train", *eval_labels(tdf)]:
        present = {c.rsplit("/", 1)[1] for c in tdf.columns if c.rsplit("/", 1)[0] == label and tdf[c].notna().any()}
        metrics = sorted(present, key=lambda m: (list(METRIC_NAMES).index(m) if m in METRIC_NAMES else len(METRIC_NAMES), m))
        for metric in metrics:
            col = f"{label}/{metric}"
            cells = []
            for e in entries:
                values = ok[e][col].dropna()
                if metric == "seq_accuracy":
                    cell = DASH if values.empty else f"{100 * values.mean():.1f}%" + (f" ± {100 * values.std():.1f}" if len(values) > 1 else "")
                else:
                    cell = DASH if values.empty else fmt(float(values.mean())) + (f" ± {fmt(float(values.std()))}" if len(values) > 1 else "")
                cells.append(cell)
            rows.append([label, METRIC_NAMES.get(metric, metric), *cells])
    return tabulate(rows, headers=["eval point", "metric", *entries], tablefmt="github", disable_numparse=True)


def _solve_point(path: Path, sequences: float) -> tuple[float, float] | None:
    """(wall seconds, training seconds) since the run's start at its evaluation after ``sequences``."""
    for r in _metrics_rows(path, "time to solve") or ():
        if r.get("sequences") == sequences and "wall_time_s" in r and "train_time_s" in r:
            return float(r["wall_time_s"]), float(r["train_time_s"])
    return None


def _solve_table(tdf: pd.DataFrame, entries: list[str]) -> str:
    """Per seed: sequences to solve, and wall / training seconds from the run's start to that evaluation."""
    rows: list[list[str]] = []
    for e in entries:
        for _, run in tdf[tdf["entry"] == e].sort_values("seed").iterrows():
            seqs = run["sequences_to_solve"]
            if pd.isna(seqs):
                rows.append([e, str(run["seed"]), f"not solved in {int(run['sequences_seen']):,}", DASH, DASH])
                continue
            point = _solve_point(Path(run["path"]), seqs)
            wall, train = (DASH, DASH) if point is None else (f"{point[0]:.1f}", f"{point[1]:.1f}")
            rows.append([e, str(run["seed"]), f"{int(seqs):,}", wall, train])
    headers = ["entry", "seed", "sequences to solve", "wall s at solve", "training s at solve"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def aggregate_table(sel: pd.DataFrame) -> pd.DataFrame:
    """Long form of the side-by-side numbers: task, entry, eval point, metric, mean, std, min, max, seeds."""
    ok = sel[sel["status"] == "ok"]
    metric_cols = [c for c in sel.columns if "/" in c]
    long = ok.melt(id_vars=["task", "entry", "seed"], value_vars=metric_cols, var_name="column").dropna(subset=["value"])
    long[["eval_point", "metric"]] = long["column"].str.rsplit("/", n=1, expand=True)
    grouped = long.groupby(["task", "entry", "eval_point", "metric"], sort=True)["value"]
    out = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index().rename(columns={"count": "seeds"})
    out["_order"] = [label_key(x) for x in out["eval_point"]]
    return out.sort_values(["task", "entry", "_order", "metric"], kind="stable").drop(columns="_order").reset_index(drop=True)


# --- curves ----------------------------------------------------------------------------------
def _metrics_rows(path: Path, what: str) -> list[dict[str, Any]] | None:
    """The evaluation rows of the run whose ``result.json`` is ``path``, or None (logged) if unreadable."""
    try:
        return [r for r in read_jsonl(path.parent / "metrics.jsonl") if "event" not in r]
    except RecordError as exc:
        log.warning("skipped the %s of %s", what, exc)
        return None


def _curve(path: Path, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    rows = _metrics_rows(path, "learning curve")
    if rows is None:
        return None
    pts = [(r["sequences"], r["metrics"]["train"][column]) for r in rows if column in r.get("metrics", {}).get("train", {})]
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


def _learning_figure(task: str, tdf: pd.DataFrame, entries: list[str], primary: str) -> Any | None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for entry in entries:
        runs = tdf[tdf["entry"] == entry]
        curves = []
        for path, status in zip(runs["path"], runs["status"]):
            c = _curve(Path(path), primary)
            if c is not None:
                curves.append((c[0], c[1], status == "ok"))
        if not curves:
            continue
        x, med, lo, hi = _band(curves)
        (line,) = ax.plot(x, med, label=f"{entry} (n={len(curves)})")
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    if not ax.lines:  # no run has a metrics file with this metric
        plt.close(fig)
        return None
    ax.set_xlabel("training sequences")
    ax.set_ylabel(f"{METRIC_NAMES[primary]} at training lengths")
    if all(np.nanmin(ln.get_ydata()) > 0 for ln in ax.lines):
        ax.set_yscale("log")
    ax.set_title(f"{task}: learning curves (median over seeds, min–max band)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _generalisation_figure(task: str, tdf: pd.DataFrame, entries: list[str], primary: str) -> Any | None:
    import matplotlib.pyplot as plt

    lengths = [lab for lab in eval_labels(tdf) if lab.isdigit()]
    if not lengths:
        return None
    lo, hi = float(tdf["train_lo"].min()), float(tdf["train_hi"].max())
    known = not np.isnan(lo)  # a plugin's task that is not loaded: no training range to draw
    metric = "mse" if primary == "mse" else "seq_accuracy"
    # The training-range evaluation set mixes lengths; it sits at the middle of the range.
    xs = np.asarray(([(lo + hi) / 2] if known else []) + [float(x) for x in lengths])
    cols = [f"{lab}/{metric}" for lab in (["train"] if known else []) + lengths]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if known:
        ax.axvspan(lo - 0.5, hi + 0.5, color="0.85", label="training range")
    for i, entry in enumerate(entries):
        ok = tdf[(tdf["entry"] == entry) & (tdf["status"] == "ok")]
        values = ok.reindex(columns=cols).to_numpy(dtype=float)
        if values.size == 0 or np.isnan(values).all():
            continue
        scale = 100.0 if metric == "seq_accuracy" else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a point no finished seed has
            med, lo_, hi_ = (scale * f(values, axis=0) for f in (np.nanmedian, np.nanmin, np.nanmax))
        (line,) = ax.plot(xs, med, marker=MARKERS[i % len(MARKERS)], label=f"{entry} (n={len(ok)})")
        ax.fill_between(xs, lo_, hi_, color=line.get_color(), alpha=0.2, lw=0)
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xlabel("sequence length")
    ax.set_ylabel("sequence accuracy (%)" if metric == "seq_accuracy" else "mse")
    if xs.max() / max(xs.min(), 1.0) > 20:
        ax.set_xscale("log")
    ax.set_title(f"{task}: generalisation (median over seeds, min–max band)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# --- W&B -------------------------------------------------------------------------------------
def _log_wandb(mode: str, out_dir: Path, figures: dict[str, Any], table: pd.DataFrame, config: dict[str, Any]) -> None:
    import wandb

    from memtasks.train.wandb_log import PROJECT

    try:
        run = wandb.init(project=PROJECT, job_type="compare", name="compare: " + ", ".join(config["models"]),
                         config=config, dir=str(out_dir), mode=mode, reinit="finish_previous",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True))
    except Exception as exc:  # the files are written; W&B is a copy of them
        log.warning("W&B logging of the comparison failed (%s); the PNG files are written", exc)
        return
    try:
        run.log({key: wandb.Image(fig) for key, fig in figures.items()})
        run.log({"aggregate": wandb.Table(dataframe=table)})
    except Exception as exc:
        log.warning("W&B logging of the comparison failed: %s", exc)
    finally:
        run.finish()


def compare(
    models: list[str],
    runs_dirs: list[Path],
    task: str | None,
    groups: list[str] | None,
    out_dir: Path,
    wandb_mode: str | None,
) -> tuple[str, list[Path]]:
    """Compare ``models`` on every task they ran (or ``task``): returns the text and the PNGs written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memtasks.train.wandb_log import resolve_mode

    mode = resolve_mode(wandb_mode)
    df, problems = collect(list(runs_dirs), groups)
    for problem in problems:
        log.warning("%s", problem)
    sel = _select(df, list(dict.fromkeys(models)), task, list(runs_dirs))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    paths: list[Path] = []
    figures: dict[str, Any] = {}
    order = {m: i for i, m in enumerate(models)}
    for task_name, tdf in sel.groupby("task", sort=True):
        entries = sorted(set(tdf["entry"]), key=lambda e: (order[tdf.loc[tdf["entry"] == e, "model"].iloc[0]], e))
        primary = primary_metric(str(task_name), tdf)
        sections.append(f"## {task_name}\n\n{_summary_table(tdf, entries)}\n")
        if tdf["solved"].any():
            sections.append(f"Time to solve, per seed:\n\n{_solve_table(tdf, entries)}\n")
        for kind, make in (("learning", _learning_figure), ("generalisation", _generalisation_figure)):
            fig = make(str(task_name), tdf, entries, primary)
            if fig is None:
                continue
            path = out_dir / f"{kind}_{task_name}.png"
            fig.savefig(path, dpi=110)
            paths.append(path)
            figures[f"{kind}/{task_name}"] = fig
    note = "Final metrics: mean ± std over the seeds that finished (status ok); accuracy in %.\n"
    text = note + "\n" + "\n".join(sections).rstrip("\n") + "\n"
    if mode != "disabled":
        config = {"models": list(models), "task": task, "groups": groups, "runs_dirs": [str(d) for d in runs_dirs]}
        _log_wandb(mode, out_dir, figures, aggregate_table(sel), config)
    for fig in figures.values():
        plt.close(fig)
    return text, paths

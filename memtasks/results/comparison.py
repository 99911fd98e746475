"""Models side by side: per task, a table of final metrics and learning/generalisation figures.

Built from the run records alone (``result.json``, ``config.json``, ``metrics.jsonl``), with
the leaderboard's aggregation (:func:`~memtasks.results.aggregate.summarise` and
:func:`~memtasks.results.aggregate.metric_stats`), so the two never disagree about a model.
The runs compared must all come from one group (pass ``groups`` to choose).
"""
from __future__ import annotations

import difflib

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from memtasks.results.aggregate import check_one_group, metric_stats, primary_metric, summarise, with_entries
from memtasks.results.errors import NoRecordsError, RecordError
from memtasks.results.markdown import compare_table, solve_table
from memtasks.results.store import collect, eval_rows

log = logging.getLogger(__name__)

NOTE = ("Final metrics: mean ± half-width of the 95% t-interval over the seeds that finished (status ok; "
        "(n=1): one seed, no interval); accuracy in %. Ranks, chance, AULC and budgets as in the leaderboard.\n")


@dataclass
class Comparison:
    text: str  # Markdown: one section per task
    paths: list[Path]  # the figures written
    table: pd.DataFrame  # the compared records, one row per run
    warnings: list[str] = field(default_factory=list)


def select(df: pd.DataFrame, models: list[str], task: str | None, where: str) -> pd.DataFrame:
    """The runs of ``models`` (and ``task``), all of one group; a name with no runs raises, listing those present."""
    if df.empty:
        raise NoRecordsError(f"no run records under {where}; train some first (memtasks train, memtasks matrix)")
    if task is not None:
        if task not in set(df["task"]):
            raise NoRecordsError(f"no runs of task {task!r} under {where}; tasks with runs: {', '.join(sorted(set(df['task'])))}")
        df = df[df["task"] == task]
    available = sorted(set(df["model"]))
    missing = [m for m in models if m not in available]
    if missing:
        scope = f" of task {task!r}" if task else ""
        close = [c for m in missing for c in difflib.get_close_matches(m, available, n=1, cutoff=0.5)]
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        raise NoRecordsError(
            f"no runs{scope} of model(s) {', '.join(map(repr, missing))} under {where}{hint} models with runs: {', '.join(available)}"
        )
    sel = df[df["model"].isin(models)]
    check_one_group(sel, where)
    return with_entries(sel)


def _solve_rows(tdf: pd.DataFrame, entries: list[str]) -> list[dict[str, Any]]:
    """Per seed: sequences to solve, and wall / training seconds from the run's start to that evaluation."""
    rows = []
    for e in entries:
        for run in tdf[tdf["entry"] == e].sort_values("seed").to_dict("records"):
            wall = train = None
            if not pd.isna(run["sequences_to_solve"]):
                try:
                    evals = eval_rows(Path(run["path"]).parent)
                except RecordError as exc:
                    log.warning("skipped the time to solve of %s", exc)
                    evals = []
                hit = next((r for r in evals if r.get("sequences") == run["sequences_to_solve"]
                            and "wall_time_s" in r and "train_time_s" in r), None)
                if hit is not None:
                    wall, train = float(hit["wall_time_s"]), float(hit["train_time_s"])
            rows.append({**run, "wall_s": wall, "train_s": train})
    return rows


def _log_wandb(mode: str, out_dir: Path, figures: dict[str, Any], table: pd.DataFrame, config: dict[str, Any]) -> None:
    import matplotlib.pyplot  # noqa: F401 -- wandb.Image converts a matplotlib figure through pyplot
    import wandb

    from memtasks.train.wandb_log import PROJECT

    try:
        run = wandb.init(project=PROJECT, job_type="compare", name="compare: " + ", ".join(config["models"]),
                         config=config, dir=str(out_dir), mode=mode, reinit="finish_previous",
                         settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True))
    except Exception as exc:  # the files are written; W&B is a copy of them
        log.warning("W&B logging of the comparison failed (%s); the figure files are written", exc)
        return
    try:
        run.log({key: wandb.Image(fig) for key, fig in figures.items()})
        run.log({"aggregate": wandb.Table(dataframe=table)})
    except Exception as exc:
        log.warning("W&B logging of the comparison failed: %s", exc)
    finally:
        run.finish()


def build_comparison(
    models: list[str],
    runs_dirs: Iterable[Path | str],
    task: str | None = None,
    groups: Iterable[str] | None = None,
    out_dir: Path | str = "compare",
    wandb_mode: str | None = None,
    fmt: str = "png",
) -> Comparison:
    """Compare ``models`` on every task they ran (or ``task``); figures go to ``out_dir`` as ``fmt``.

    ``fmt``: png, pdf or svg. Raises :class:`NoRecordsError` for names with no runs and
    :class:`MixedGroupsError` when the runs span several groups.
    """
    from memtasks.results.plots import FIGURES, save_figure
    from memtasks.train.wandb_log import resolve_mode

    mode = resolve_mode(wandb_mode)
    dirs = [Path(d) for d in runs_dirs]
    models = list(dict.fromkeys(models))
    df, warnings = collect(dirs, list(groups) if groups else None)
    if df.empty and groups:
        present = sorted(set(collect(dirs)[0].get("group", [])))
        close = [c for g in groups for c in difflib.get_close_matches(g, present, n=1, cutoff=0.5)]
        hint = f"; did you mean {close[0]!r}?" if close else ";"
        raise NoRecordsError(f"no run records of group(s) {', '.join(map(repr, groups))} under "
                             f"{', '.join(map(str, dirs))}{hint} groups with records: {', '.join(present) or 'none'}")
    sel = select(df, models, task, ", ".join(map(str, dirs)))
    out_dir = Path(out_dir)
    sections: list[str] = []
    paths: list[Path] = []
    figures: dict[str, Any] = {}
    order = {m: i for i, m in enumerate(models)}
    agg, stats = summarise(sel), metric_stats(sel)
    for task_name, tdf in sel.groupby("task", sort=True):
        entries = sorted(set(tdf["entry"]), key=lambda e: (order[tdf.loc[tdf["entry"] == e, "model"].iloc[0]], e))
        sections.append(f"## {task_name}\n\n"
                        f"{compare_table(agg[agg['task'] == task_name], stats[stats['task'] == task_name], entries)}\n")
        if tdf["solved"].any():
            sections.append(f"Time to solve, per seed:\n\n{solve_table(_solve_rows(tdf, entries))}\n")
        primary = primary_metric(str(task_name), tdf)
        for kind, make in FIGURES.items():
            fig = make(str(task_name), tdf, entries, primary)
            if fig is not None:
                paths.append(save_figure(fig, out_dir / f"{kind}_{task_name}.{fmt.lstrip('.')}"))
                figures[f"{kind}/{task_name}"] = fig
    text = NOTE + "\n" + "\n".join(sections).rstrip("\n") + "\n"
    if mode != "disabled":
        config = {"models": models, "task": task, "groups": list(groups or []), "runs_dirs": [str(d) for d in dirs]}
        _log_wandb(mode, out_dir, figures, stats, config)
    return Comparison(text, paths, sel, warnings)


def compare(
    models: list[str],
    runs_dirs: Iterable[Path | str],
    task: str | None,
    groups: Iterable[str] | None,
    out_dir: Path | str,
    wandb_mode: str | None,
    fmt: str = "png",
) -> tuple[str, list[Path]]:
    """:func:`build_comparison`, returning the text and the figure paths (warnings are logged)."""
    result = build_comparison(models, runs_dirs, task, groups, out_dir, wandb_mode, fmt)
    for problem in result.warnings:
        log.warning("%s", problem)
    return result.text, result.paths

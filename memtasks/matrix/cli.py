"""The ``matrix``, ``leaderboard`` and ``compare`` sub-commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from tabulate import tabulate


def add_commands(sub: Any, plugin_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sp = sub.add_parser("matrix", help="run a benchmark matrix (tasks x models x seeds); resumes by default")
    sp.add_argument("spec", metavar="PRESET_OR_FILE", help="smoke | cpu | paper, or a TOML spec file")
    sp.add_argument("--workers", type=int, help="worker processes (default: one per CPU core, or per GPU)")
    sp.add_argument("--workers-per-gpu", type=int, default=1, dest="workers_per_gpu")
    sp.add_argument("--executor", choices=("local", "ray"), default="local")
    sp.add_argument("--ray-address", dest="ray_address", help="Ray cluster address (host:port or auto)")
    sp.add_argument("--group", help="override the spec's group (runs/<group>/...)")
    sp.add_argument("--runs-dir", default="runs", dest="runs_dir")
    sp.add_argument("--tasks", nargs="+", help="only these tasks of the spec")
    sp.add_argument("--models", nargs="+", help="only these models of the spec")
    sp.add_argument("--seeds", nargs="+", type=int, help="replace the spec's seeds")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a run setting in every cell")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"))
    sp.add_argument("--dry-run", action="store_true", dest="dry_run", help="list the cells and stop")
    plugin_arg(sp)
    sp.set_defaults(func=cmd_matrix)

    sp = sub.add_parser("leaderboard", help="aggregate run records into Markdown tables")
    sp.add_argument("runs_dirs", nargs="*", default=["runs"], metavar="RUNS_DIR")
    sp.add_argument("--group", action="append", help="only these groups (repeatable)")
    sp.add_argument("-o", "--output", default="leaderboard.md")
    sp.set_defaults(func=cmd_leaderboard)

    sp = sub.add_parser("compare", help="compare models side by side: table and learning/generalisation plots")
    sp.add_argument("models", nargs="+")
    sp.add_argument("--task", help="only this task")
    sp.add_argument("--runs-dir", action="append", dest="runs_dirs", help="default: runs")
    sp.add_argument("--group", action="append")
    sp.add_argument("--out", default="compare", help="folder for the PNG plots")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"))
    sp.set_defaults(func=cmd_compare)


def cmd_matrix(args: argparse.Namespace) -> int:
    from memtasks.matrix.executor import LocalExecutor, RayExecutor
    from memtasks.matrix.runner import run_matrix, summary_json, visible_gpus
    from memtasks.matrix.spec import expand, load_spec
    from memtasks.core.registry import load_plugin

    plugins = tuple(args.plugin or ())
    for p in plugins:
        load_plugin(p)
    spec = load_spec(args.spec)
    if args.dry_run:
        cells = expand(spec, args.tasks, args.models, args.seeds, args.set, args.group)
        for c in cells:
            print(f"{c.group}/{c.task}/{c.model}/seed-{c.seed}  sequences={c.sequences} budget={c.param_budget}")
        print(f"{len(cells)} cells")
        return 0
    if args.executor == "ray":
        executor: Any = RayExecutor(args.ray_address)
    else:
        executor = LocalExecutor(args.workers, args.workers_per_gpu, visible_gpus())
    report = run_matrix(
        spec,
        Path(args.runs_dir),
        executor,
        args.tasks,
        args.models,
        args.seeds,
        args.set,
        args.group,
        args.wandb,
        plugins,
    )
    rows = [[o.label, o.status, f"{o.seconds:.1f}", (o.error or "").splitlines()[0] if o.error else ""] for o in report.outcomes]
    if rows:
        print(tabulate(rows, headers=["cell", "status", "seconds", "error"]))
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts().items())
    util = report.utilisation()
    util_s = f", CPU utilisation {util:.0%} of {report.workers} workers" if util is not None else ""
    print(f"summary: {counts}; wall {report.wall_s:.0f}s{util_s}")
    if report.outcomes:  # an invocation that only skipped finished cells keeps the last real summary
        summary_path = Path(args.runs_dir) / (args.group or spec.group) / "matrix_summary.json"
        summary_path.write_text(summary_json(report) + "\n")
    if report.failed:
        print("failed cells: " + ", ".join(o.label for o in report.failed), file=sys.stderr)
        return 1
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from memtasks.leaderboard import write_leaderboard

    text, warnings = write_leaderboard([Path(d) for d in args.runs_dirs], args.group, Path(args.output))
    for w in warnings:
        print(f"skipped: {w}", file=sys.stderr)
    print(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from memtasks.compare import compare

    table, paths = compare(
        args.models, [Path(d) for d in (args.runs_dirs or ["runs"])], args.task, args.group, Path(args.out), args.wandb
    )
    print(table)
    for p in paths:
        print(f"wrote {p}")
    return 0

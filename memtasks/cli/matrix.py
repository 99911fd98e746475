"""``memtasks matrix``: a benchmark matrix (tasks x models x seeds), resumable."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from memtasks.cli.common import Common, load_plugins, non_negative_int, positive_int

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(sub, "matrix", "run a benchmark matrix (tasks x models x seeds); resumes by default")
    sp.add_argument("spec", metavar="PRESET_OR_FILE", help="demo | smoke | cpu | paper, or a TOML spec file")
    sp.add_argument("--workers", type=positive_int("--workers"), help="worker processes (default: one per CPU core, or per GPU)")
    sp.add_argument("--workers-per-gpu", type=positive_int("--workers-per-gpu"), default=1, dest="workers_per_gpu")
    sp.add_argument("--executor", choices=("local", "ray"), default="local")
    sp.add_argument("--ray-address", dest="ray_address", help="Ray cluster address (host:port or auto)")
    sp.add_argument("--group", help="override the spec's group (runs/<group>/...)")
    sp.add_argument("--runs-dir", default="runs", dest="runs_dir", help="folder of run records")
    sp.add_argument("--tasks", nargs="+", help="only these tasks of the spec")
    sp.add_argument("--models", nargs="+", help="only these models of the spec (or a registered plugin model)")
    sp.add_argument("--seeds", nargs="+", type=non_negative_int("--seeds"), help="replace the spec's seeds")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a run setting in every cell")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"))
    sp.add_argument("--force", action="store_true",
                    help="train the selected cells again, replacing their records (narrow with --tasks/--models/--seeds)")
    sp.add_argument("--dry-run", action="store_true", dest="dry_run", help="list the cells and what would happen to each, then stop")
    sp.set_defaults(func=cmd_matrix)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_matrix(args: argparse.Namespace) -> int:
    from memtasks.matrix import tune
    from memtasks.matrix.runner import plan_cells, plan_matrix
    from memtasks.matrix.spec import expand, load_spec

    _check_flags(args)
    plugins = load_plugins(args.plugin)
    spec = load_spec(args.spec)
    runs = Path(args.runs_dir)
    if spec.tune is None:
        plan = plan_matrix(spec, runs, args.tasks, args.models, args.seeds, args.set, args.group, force=args.force)
        if args.dry_run:
            return _dry_run(plan)
        return _run_phase(args, spec, plan, plugins)
    cells = expand(spec, args.tasks, args.models, args.seeds, args.set, args.group)  # checked once tuned
    trials = tune.trials(cells, spec.tune)
    trial_plan = plan_cells([t.config for t in trials], runs, args.force, args.set)
    if args.dry_run:
        _dry_run(trial_plan)
        print(f"then {len(cells)} final cells, each with its task and model's chosen value")
        return 0
    _stderr(f"tuning: {len(trials)} trials ({len({(t.task, t.model) for t in trials})} task x model pairs)")
    code = _run_phase(args, spec, trial_plan, plugins)
    if code == EXIT_INTERRUPTED:
        return code
    missing = [t for t in trials if not (tune.trial_folder(runs, t) / "result.json").exists()]
    if missing:
        print(f"tuning is not complete ({len(missing)} trials have no record, e.g. {tune.trial_folder(runs, missing[0])}); "
              "re-run the same command to finish it before the final cells", file=sys.stderr)
        return EXIT_FAILED
    choices = tune.choose(runs, trials)
    group = cells[0].group if cells else spec.group
    tune.write_choices(runs, group, choices, spec.tune)
    for (task, model), c in sorted(choices.items()):
        scores = ", ".join(f"{v:g}: {s:.4g}" for v, s in zip(c["grid"], c["validation"]))
        _stderr(f"tuned {task}/{model}: {c['knob']} = {c['chosen']:g} (validation {c['metric']}: {scores})")
    final = plan_cells(tune.apply(cells, choices), runs, args.force, args.set)
    return _run_phase(args, spec, final, plugins)


MAX_WORKERS_PER_CPU = 4  # more processes than this per core only thrash (each imports torch)


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that contradict each other or the machine, refused before anything is planned."""
    import os

    from memtasks.cli.common import CLIError

    if str(args.runs_dir) == "":
        raise CLIError("--runs-dir is empty; give the folder of run records (default: runs)")
    if Path(args.runs_dir).exists() and not Path(args.runs_dir).is_dir():
        raise CLIError(f"--runs-dir {args.runs_dir}: is a file, not a folder")
    if args.executor != "ray" and args.ray_address:
        raise CLIError("--ray-address is used only with --executor ray; add --executor ray or drop it")
    if args.executor == "ray" and (args.workers is not None or args.workers_per_gpu != 1):
        raise CLIError("--workers and --workers-per-gpu are for the local executor; with --executor ray the cluster's "
                       "CPUs (or GPUs) decide how many cells run at once")
    most = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if args.workers is not None and args.workers > most:
        raise CLIError(f"--workers {args.workers} is more than {most} ({MAX_WORKERS_PER_CPU} per CPU core here); "
                       "each worker is a process that imports torch")


def _dry_run(plan: Any) -> int:
    for c, state in plan.states():
        print(f"{c.group}/{c.task}/{c.model}/seed-{c.seed}  {state}  sequences={c.sequences} budget={c.param_budget}")
    print(f"{len(plan.cells)} cells: {len(plan.todo)} to run, {len(plan.finished)} already finished")
    return 0


def _run_phase(args: argparse.Namespace, spec: Any, plan: Any, plugins: tuple[str, ...]) -> int:
    from tabulate import tabulate

    from memtasks.matrix.executor import LocalExecutor, RayExecutor
    from memtasks.matrix.runner import run_matrix, summary_json, visible_gpus
    from memtasks.results import store as R

    if args.executor == "ray":
        executor: Any = RayExecutor(args.ray_address)
    else:
        executor = LocalExecutor(args.workers, args.workers_per_gpu, visible_gpus())
    report = run_matrix(plan, spec, Path(args.runs_dir), executor, args.wandb, plugins, echo=_stderr)
    rows = [[o.label, o.status, f"{o.seconds:.1f}", (o.error or "").splitlines()[0] if o.error else ""] for o in report.outcomes]
    if rows:
        print(tabulate(rows, headers=["cell", "status", "seconds", "error"]))
    counts = ", ".join(f"{k}: {v}" for k, v in report.counts().items() if v or k in ("ok", "failed"))
    util = report.utilisation()
    util_s = f", CPU utilisation {util:.0%} of {report.workers} workers" if util is not None else ""
    print(f"summary: {counts}; wall {report.wall_s:.0f}s{util_s}")
    if report.busy:
        print("held by another process (not run here; re-run this command later to pick them up): "
              + ", ".join(o.label for o in report.busy), file=sys.stderr)
    if report.outcomes and not report.interrupted and plan.cells:  # a pass that only skipped cells keeps the last summary
        R.write_text_atomic(Path(args.runs_dir) / plan.cells[0].group / "matrix_summary.json", summary_json(report) + "\n")
    if report.interrupted:
        print(f"interrupted: {len(report.not_started)} cells not started; running cells saved checkpoints. "
              "Re-run the same command to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
    if report.failed:
        print("failed cells: " + ", ".join(o.label for o in report.failed), file=sys.stderr)
        return EXIT_FAILED
    return 0

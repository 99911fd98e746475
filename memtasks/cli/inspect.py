"""``memtasks eval`` and ``memtasks inspect``: score a finished run's trained weights at any
length, and draw what its memory does on one sequence (``memtasks.inspect`` does the work)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from memtasks.cli.common import FIGURE_SUFFIXES, Common, load_plugins, non_negative_int, output_file, positive_int

DEVICES = ("auto", "cpu", "cuda", "mps")


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(
        sub, "eval",
        "score finished runs' trained weights on the fixed evaluation sets (default: the record's points, which "
        "reproduces result.json's final metrics); writes <run>/evals/<name>.json, never result.json",
    )
    sp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, runs/<group>/<task>/<model>/seed-<k>")
    sp.add_argument("--length", nargs="+", type=_length, metavar="N",
                    help="score at these lengths ('train': the training range) instead of the record's points "
                         "(after the run folders)")
    sp.add_argument("--set", action="append", default=[], metavar="task.KEY=VALUE",
                    help="a task parameter or sample override, e.g. task.repeats=20 (repeatable)")
    sp.add_argument("--size", type=positive_int("--size"), help="sequences per length (default: the run's eval_size)")
    sp.add_argument("--device", choices=DEVICES, help="(default: the device the run trained on, if here, else cpu)")
    sp.set_defaults(func=cmd_eval)

    sp = common.parser(
        sub, "inspect",
        "draw one sequence through a finished run's model: inputs, targets, outputs, and what its memory did",
    )
    sp.add_argument("run", metavar="RUN_DIR", help="a run folder, runs/<group>/<task>/<model>/seed-<k>")
    sp.add_argument("--length", type=positive_int("--length"), help="the sequence's length (default: drawn from the training range)")
    sp.add_argument("--seed", type=non_negative_int("--seed"), default=0, help="draws the sequence (as memtasks show --seed)")
    sp.add_argument("--set", action="append", default=[], metavar="task.KEY=VALUE",
                    help="a task parameter or sample override, e.g. task.repeats=20 (repeatable)")
    sp.add_argument("--png", metavar="FILE", help="write the figure (PNG, PDF or SVG by the file's suffix)")
    sp.add_argument("--device", choices=DEVICES, help="(default: the device the run trained on, if here, else cpu)")
    sp.set_defaults(func=cmd_inspect)


def _length(raw: str) -> int | None:
    if raw == "train":
        return None
    return positive_int("--length")(raw)


def _load(folder: str, device: str | None, sets: list[str]) -> tuple[Any, dict[str, Any]]:
    """The run with ``--set``'s task parameters applied, and ``--set``'s sample overrides."""
    import torch

    from memtasks.inspect import load_run, parse_task_sets, with_task_params

    run = load_run(folder, device)
    if run.device.type == "cpu":
        torch.set_num_threads(run.config.threads)  # as the trainer ran it: the same sums, the same numbers
    params, overrides = parse_task_sets(run.task, sets)
    return with_task_params(run, params), overrides


def cmd_eval(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from memtasks.inspect import check_run_folder, eval_name, evaluate_run, write_eval

    import logging

    load_plugins(args.plugin)
    for folder in args.runs:  # every folder's cheap checks before any model is built
        check_run_folder(folder)
    log = logging.getLogger(__name__)
    folders = list(dict.fromkeys(str(Path(f).resolve()) for f in args.runs))
    if len(folders) < len(args.runs):
        log.warning("a run folder is named more than once; each is evaluated once")
    if args.length is not None and len(set(args.length)) < len(args.length):
        log.warning("--length lists a length more than once; each is evaluated once")
    lengths = list(dict.fromkeys(args.length)) if args.length is not None else None
    for folder in folders:
        run, overrides = _load(folder, args.device, args.set)
        record = evaluate_run(run, lengths, overrides, args.size)
        path = write_eval(run, record, eval_name(lengths, overrides, run.task_params, args.size))
        points = record["points"]
        names = list(dict.fromkeys(m for p in points.values() for m in p["metrics"]))
        rows = [[label, *(f"{p['metrics'].get(m, float('nan')):.4g}" for m in names)] for label, p in points.items()]
        print(f"{run.name} ({run.folder}): {record['size']} sequences per length on {record['device']}")
        print(tabulate(rows, headers=["length", *names]))
        print(_verdict(record))
        print(f"wrote {path}")
    return 0


def _verdict(record: dict[str, Any]) -> str:
    rec = record["record"]
    note = " (the run diverged: its weights are those at divergence)" if rec["status"] == "diverged" else ""
    if rec["reproduced"] is None:
        return "result.json has no metrics for these sets to compare with" + note
    if rec["reproduced"]:
        return f"equals result.json's final metrics exactly at {', '.join(rec['compared'])}" + note
    return (f"differs from result.json's final metrics at {', '.join(rec['differ'])}{note}; the record was made on "
            "another device, thread count or torch version than this evaluation, or the code changed since")


def cmd_inspect(args: argparse.Namespace) -> int:
    from memtasks.memory_figure import example_batch, figure_title, focus_paths, inspect_figure, trace
    from memtasks.viz import text_grid

    load_plugins(args.plugin)
    png = output_file(args.png, "--png", FIGURE_SUFFIXES) if args.png is not None else None
    run, overrides = _load(args.run, args.device, args.set)
    batch = example_batch(run.task, args.length, args.seed, overrides, run.model.state_size())
    y, arrays = trace(run.model, batch.inputs.to(run.device))
    outputs = (y[0] > 0).float() if run.task.loss == "bce" else y[0]  # bits as the metrics threshold them
    title = figure_title(run, batch, args.seed, overrides)
    print(title)
    print(text_grid(batch, 0, outputs))
    drawn = ", ".join(f"{k} {tuple(v.shape[2:])}" for k, v in arrays.items())
    print(f"memory arrays: {drawn}" if arrays else f"model {run.config.model!r} has no trace(): inputs, targets and outputs only")
    for line in focus_paths(arrays):
        print(line)
    if png is not None:
        fig = inspect_figure(run.model, run.task, batch, 0, title, traced=(y, arrays))
        fig.savefig(png, dpi=110)
        print(f"wrote {png}")
    return 0

"""``memtasks tasks``, ``memtasks models`` and ``memtasks show``."""
from __future__ import annotations

import argparse
from typing import Any

from memtasks.cli.common import (
    FIGURE_SUFFIXES,
    CLIError,
    Common,
    load_plugins,
    non_negative_int,
    output_file,
    plugin_code,
    positive_int,
)


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(sub, "tasks", "list the registered tasks")
    sp.set_defaults(func=cmd_tasks)

    sp = common.parser(sub, "models", "list the registered models: family, size knob and its default")
    sp.add_argument(
        "--task",
        default=None,
        help="also build each model at its default size for this task's input and output widths and show its "
        "trainable parameters and floats of state per sequence (imports torch: a few seconds more)",
    )
    sp.set_defaults(func=cmd_models)

    sp = common.parser(sub, "show", "print one example of a task (and draw it with --png)")
    sp.add_argument("task")
    sp.add_argument("--length", type=positive_int("--length"), default=None, help="fix the task's length parameter")
    sp.add_argument("--seed", type=non_negative_int("--seed"), default=0)
    sp.add_argument("--png", metavar="FILE", help="also draw the example (PNG, PDF or SVG by the file's suffix)")
    sp.set_defaults(func=cmd_show)


def cmd_tasks(args: argparse.Namespace) -> int:
    from memtasks.tasks import TASKS, get_task, list_tasks

    load_plugins(args.plugin)
    for name in list_tasks():
        with plugin_code(TASKS.get(name), f"task {name!r}"):
            print(get_task(name).describe())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from memtasks.cli import zoo

    # the plain listing of the built-in models reads their source (no torch); plugins and
    # parameter counts need the models themselves
    entries = zoo.source_entries() if args.task is None and not args.plugin else None
    if entries is None:
        load_plugins(args.plugin)
        entries = zoo.registry_entries()
    rows = [entry.row() for entry in entries]
    if args.task is not None:
        from memtasks.models import MODELS, build_model
        from memtasks.tasks import get_task

        task = get_task(args.task)
        for entry, row in zip(entries, rows):
            with plugin_code(MODELS.get(entry.name), f"model {entry.name!r}: building it"):
                model = build_model(entry.name, task.d_in, task.d_out)
            row[f"trainable params ({task.name})"] = model.param_counts()[0]
            row["state floats"] = model.state_size()
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import torch

    from memtasks.tasks import get_task
    from memtasks.tasks.limits import check_sample_size
    from memtasks.viz import plot_example, text_grid

    load_plugins(args.plugin)
    png = output_file(args.png, "--png", FIGURE_SUFFIXES) if args.png is not None else None
    task = get_task(args.task)
    if args.length is not None:
        check_sample_size(task, 1, args.length, what="--length")
    try:
        with plugin_code(type(task), f"task {task.name!r}: sampling"):
            batch = task.sample(1, torch.Generator().manual_seed(args.seed), length=args.length)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CLIError) or args.length is None:
            raise
        raise CLIError(f"--length {args.length}: {exc}") from None
    length = int(batch.lengths[0])
    print(f"{task.name} (length {length}, seed {args.seed}); d_in={task.d_in} d_out={task.d_out} loss={task.loss}")
    print(text_grid(batch, 0))
    if png is not None:
        fig = plot_example(batch, 0, title=f"{task.name}, length {length}")
        fig.savefig(png, dpi=120)
        print(f"wrote {png}")
    return 0

"""``memtasks leaderboard`` and ``memtasks compare``: tables and figures from run records."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from memtasks.cli.common import Common, output_file, output_folder


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(sub, "leaderboard", "aggregate run records into Markdown tables", plugins=False)
    sp.add_argument("runs_dirs", nargs="*", default=["runs"], metavar="RUNS_DIR")
    sp.add_argument("--group", action="append", help="only these groups (repeatable)")
    sp.add_argument("-o", "--output", default="leaderboard.md", help="the Markdown file to write")
    sp.set_defaults(func=cmd_leaderboard)

    sp = common.parser(sub, "compare", "compare models side by side: table and learning/generalisation plots", plugins=False)
    sp.add_argument("models", nargs="+")
    sp.add_argument("--task", help="only this task")
    sp.add_argument("--runs-dir", action="append", dest="runs_dirs", help="default: runs")
    sp.add_argument("--group", action="append")
    sp.add_argument("--out", default="compare", help="folder for the plots")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"))
    sp.set_defaults(func=cmd_compare)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from memtasks.leaderboard import write_leaderboard

    out = output_file(args.output, "-o", (".md",))
    text, warnings = write_leaderboard([Path(d) for d in args.runs_dirs], args.group, out)
    for w in warnings:
        print(f"skipped: {w}", file=sys.stderr)
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from memtasks.compare import compare

    out = output_folder(args.out, "--out")
    table, paths = compare(args.models, [Path(d) for d in (args.runs_dirs or ["runs"])], args.task, args.group, out, args.wandb)
    print(table)
    for p in paths:
        print(f"wrote {p}")
    return 0

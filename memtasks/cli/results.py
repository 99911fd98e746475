"""``memtasks leaderboard`` and ``memtasks compare``: tables and figures from run records."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from memtasks.cli.common import Common, output_file, output_folder


def add_commands(sub: Any, common: Common) -> None:
    sp = common.parser(sub, "leaderboard", "aggregate run records into Markdown tables (one section per group)", plugins=False)
    sp.add_argument("runs_dirs", nargs="*", default=["runs"], metavar="RUNS_DIR")
    sp.add_argument("--group", action="append", help="only these groups (repeatable)")
    sp.add_argument("-o", "--output", default="leaderboard.md", help="the Markdown file to write")
    sp.add_argument("--csv", metavar="FILE", help="also write the collected table of every run as CSV")
    sp.add_argument("--json", metavar="FILE", help="also write the collected table of every run as JSON")
    sp.add_argument("--force", action="store_true",
                    help="replace an output file that is not the leaderboard of the same groups")
    sp.set_defaults(func=cmd_leaderboard)

    sp = common.parser(sub, "compare", "compare models side by side: table and learning/generalisation plots", plugins=False)
    sp.add_argument("models", nargs="+")
    sp.add_argument("--task", help="only this task")
    sp.add_argument("--runs-dir", action="append", dest="runs_dirs", help="default: runs")
    sp.add_argument("--group", action="append", help="the group to compare (required when the runs hold several)")
    sp.add_argument("--out", default="compare", help="folder for the plots")
    sp.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="file type of the plots")
    sp.add_argument("--wandb", choices=("offline", "online", "disabled"))
    sp.set_defaults(func=cmd_compare)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from memtasks.results import build_leaderboard, export_table

    out = output_file(args.output, "-o", (".md",))
    csv = output_file(args.csv, "--csv", (".csv",)) if args.csv is not None else None
    js = output_file(args.json, "--json", (".json",)) if args.json is not None else None
    board = build_leaderboard([Path(d) for d in args.runs_dirs], args.group)
    for w in board.warnings:
        print(f"skipped: {w}", file=sys.stderr)
    board.write(out, force=args.force)
    print(board.text)
    print(f"wrote {out}", file=sys.stderr)
    for path in (csv, js):
        if path is not None:
            export_table(board.table, path)
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from memtasks.results import build_comparison

    out = output_folder(args.out, "--out")
    report = build_comparison(args.models, [Path(d) for d in (args.runs_dirs or ["runs"])], args.task, args.group, out,
                              args.wandb, fmt=args.format)
    for w in report.warnings:
        print(f"skipped: {w}", file=sys.stderr)
    print(report.text)
    for p in report.paths:
        print(f"wrote {p}")
    return 0

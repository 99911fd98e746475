"""The ``memtasks`` command line: the only place that prints.

One module per group of commands (``tasks``: tasks, models, show; ``train``; ``matrix``;
``results``: leaderboard, compare; ``bench``: bench, capacity). Each declares its parsers with
``add_commands(sub, common)`` and imports torch and the rest of memtasks only inside its
command functions, so ``memtasks --help``, ``--version`` and the listings start fast.

Exit status, the same for every command: 0 done (a run that diverged is a recorded result,
``status: diverged``, and counts as done); 1 a run or cell failed, or an internal error; 2 a
wrong input (one line names the flag, field or file; ``-v`` adds the traceback); 130
interrupted (Ctrl-C or SIGTERM; unfinished runs resume from their checkpoints).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from typing import Sequence

from memtasks import __version__
from memtasks.cli import bench as _bench
from memtasks.cli import inspect as _inspect
from memtasks.cli import matrix as _matrix
from memtasks.cli import results as _results
from memtasks.cli import tasks as _tasks
from memtasks.cli import train as _train
from memtasks.cli.common import CLIError, Common, HelpFormatter, Parser
from memtasks.core.errors import MemtasksError

__all__ = ["CLIError", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="memtasks",
        description="Benchmark memory in recurrent and memory-augmented networks.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    p.add_argument("--version", action="version", version=f"memtasks {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = Common()
    for module in (_tasks, _train, _matrix, _results, _bench, _inspect):
        module.add_commands(sub, common)
    return p


TOP_LEVEL_FLAGS = ("-h", "--help", "-v", "--verbose", "--version")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for token in argv:  # before the command: an unknown flag is named, not reported as a missing command
        if not token.startswith("-"):
            break
        if token not in TOP_LEVEL_FLAGS:
            print(f"memtasks: error: unknown option {token} before the command (see memtasks --help)", file=sys.stderr)
            return EXIT_USAGE
    args = build_parser().parse_args(argv)
    verbose = bool(getattr(args, "verbose", False) or getattr(args, "sub_verbose", False))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (CLIError, MemtasksError) as exc:
        return _fail(f"{exc}", verbose)
    except KeyboardInterrupt:
        print("memtasks: interrupted; finished runs are kept and unfinished ones resume from their checkpoints", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `memtasks compare ... | head`: the reader left; say nothing more
        _silence_stdout()
        return 0
    except OSError as exc:
        return _fail(_os_message(exc), verbose)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for -v
        if verbose:
            traceback.print_exc()
        print(
            f"memtasks: internal error: {type(exc).__name__}: {exc} (this is a bug in memtasks; "
            "-v shows the traceback)",
            file=sys.stderr,
        )
        return 1


def _fail(message: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"memtasks: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _os_message(exc: OSError) -> str:
    """A file-system error as one line naming the path and the problem."""
    what = exc.strerror or str(exc)
    where = exc.filename if exc.filename is not None else "?"
    hint = {
        errno.ENOSPC: "; free some space and re-run (finished runs are kept)",
        errno.EROFS: "; choose a writable folder",
        errno.EACCES: "; check its permissions or choose another folder",
        errno.EDQUOT: "; free some space and re-run (finished runs are kept)",
    }.get(exc.errno or 0, "")
    return f"{where}: {what}{hint}"


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())

"""What every command shares: the user-error type, common flags, and checks of output paths
made before any work starts, so a wrong path costs nothing and leaves nothing half-written."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator, NoReturn, Sequence

from memtasks.core.errors import MemtasksError


class CLIError(MemtasksError):
    """An error to report in one line, with exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line in memtasks' format (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        bad = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if bad:
            choices = re.findall(r"'([^']*)'", bad.group(2))
            close = difflib.get_close_matches(bad.group(1), choices, n=1, cutoff=0.5)
            message += f"; did you mean {close[0]!r}?" if close else ""
        where = "" if self.prog == "memtasks" else f"{self.prog.removeprefix('memtasks ')}: "
        self.exit(2, f"memtasks: error: {where}{message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says it or there is none worth showing
    (None, an empty list, a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is argparse.SUPPRESS or default == [] or isinstance(default, bool):
            return text
        return super()._get_help_string(action)


class Common:
    """Builds sub-parsers with the flags every command takes (``-v``, ``--plugin``)."""

    def __init__(self) -> None:
        self.parent = Parser(add_help=False)
        self.parent.add_argument(
            "-v", "--verbose", action="store_true", dest="sub_verbose", help="debug logging and tracebacks"
        )

    def parser(self, sub: Any, name: str, help: str, plugins: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=help, description=help, parents=[self.parent], formatter_class=HelpFormatter
        )
        if plugins:
            sp.add_argument(
                "--plugin",
                action="append",
                metavar="FILE_OR_MODULE",
                help="import a plugin that registers models or tasks (repeatable)",
            )
        return sp


def load_plugins(names: Sequence[str] | None) -> tuple[str, ...]:
    """Import each ``--plugin``; a plugin that registers no task or model is named on stderr."""
    if not names:
        return ()
    from memtasks.core.registry import load_plugin
    from memtasks.models import MODELS
    from memtasks.tasks import TASKS

    for spec in names:
        path = Path(spec)
        if not spec.strip():
            raise CLIError("--plugin '': empty; give a .py file or an importable module name")
        if path.is_dir():
            raise CLIError(f"--plugin {spec}: is a folder; give a .py file or an importable module name")
        if path.is_file() and path.suffix != ".py":
            raise CLIError(f"--plugin {spec}: not a Python file; give a .py file or an importable module name")
        before = (len(TASKS.names()), len(MODELS.names()))
        loaded = set(sys.modules)
        load_plugin(spec)
        fresh = set(sys.modules) - loaded  # a plugin imported before registers nothing new, rightly
        if fresh and (len(TASKS.names()), len(MODELS.names())) == before:
            print(f"memtasks: warning: --plugin {spec} registered no task or model", file=sys.stderr)
    return tuple(names)


def whole_number(flag: str, lo: int, hi: int | None = None) -> Any:
    """An argparse type: an integer >= ``lo`` (and <= ``hi``), with an error naming ``flag``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects a whole number >= {lo}, got {raw!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"{flag} expects a whole number >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{flag} expects a whole number in [{lo}, {hi}], got {value}")
        return value

    return parse


def positive_int(flag: str) -> Any:
    return whole_number(flag, 1)


def non_negative_int(flag: str) -> Any:
    return whole_number(flag, 0)


FLOAT32_MAX = 3.4028234663852886e38


def positive_float(flag: str, hi: float | None = None, why: str = "") -> Any:
    """An argparse type: a finite number > 0 (and <= ``hi``, for the reason ``why``)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects a number > 0, got {raw!r}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{flag} expects a finite number > 0, got {raw}")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{flag} expects a number in (0, {hi:g}]{why}, got {raw}")
        return value

    return parse


def positive_int_at_most(flag: str, hi: int) -> Any:
    return whole_number(flag, 1, hi)


def unique(flag: str, values: Sequence[Any] | None) -> list[Any] | None:
    """``values`` with repeats dropped, naming the repeats on stderr (each item is measured once)."""
    if values is None:
        return None
    out = list(dict.fromkeys(values))
    if len(out) != len(values):
        repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
        print(f"memtasks: warning: {flag} lists {', '.join(map(str, repeated))} more than once; each runs once",
              file=sys.stderr)
    return out


def output_file(path: str | os.PathLike[str], flag: str, suffixes: Sequence[str] | None = None) -> Path:
    """Check that ``path`` can be written as a file: not a folder, its folder exists and is
    writable, and (if given) its suffix is one of ``suffixes``."""
    if not str(path).strip():
        raise CLIError(f"{flag} '': empty file name; give a file name" + (f" ending in {', '.join(suffixes)}" if suffixes else ""))
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"{flag} {p}: is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    above = next((q for q in (parent, *parent.parents) if q.exists()), None)
    if above is not None and not above.is_dir():
        raise CLIError(f"{flag} {p}: {above} is a file, not a folder; give a path in a folder")
    if not parent.is_dir():
        raise CLIError(f"{flag} {p}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"{flag} {p}: folder {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise CLIError(f"{flag} {p}: file is not writable")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise CLIError(f"{flag} {p}: unsupported file type {p.suffix or '(none)'}; use one of {', '.join(suffixes)}")
    return p


def output_folder(path: str | os.PathLike[str], flag: str) -> Path:
    """Check that ``path`` is (or can be created as) a writable folder; the command creates it
    when it has something to write, so a failing command leaves no empty folder behind."""
    if not str(path).strip():
        raise CLIError(f"{flag} '': empty folder name; give a folder (. for this one)")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CLIError(f"{flag} {p}: is a file, not a folder; give a folder")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise CLIError(f"{flag} {p}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise CLIError(f"{flag} {p}: {probe} is not writable")
    return p


@contextlib.contextmanager
def plugin_code(cls: type, what: str) -> Iterator[None]:
    """Around a call into a task's or model's own code: where the class comes from a plugin, an
    exception it raises is that plugin's fault, reported in one line naming it (exit status 2),
    not as a bug in memtasks. memtasks' own classes are left alone: their exceptions are bugs."""
    module = cls.__module__
    try:
        yield
    except (MemtasksError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if module == "memtasks" or module.startswith("memtasks."):
            raise
        import inspect

        try:
            where = inspect.getsourcefile(cls) or module
        except TypeError:
            where = module
        raise CLIError(f"{what} failed in plugin code ({where}): {type(exc).__name__}: {exc}") from exc


FIGURE_SUFFIXES = (".png", ".pdf", ".svg")

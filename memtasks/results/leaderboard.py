"""The leaderboard: run records collected, aggregated over seeds and written as Markdown.

Rebuildable at any time from the files alone and deterministic (see
:mod:`memtasks.results.markdown`). Groups are never ranked together: several groups give one
section each. An existing output file is replaced only when it is a leaderboard of the same
groups, so a run of other groups (``make demo``'s ``smoke``) cannot overwrite the committed
``leaderboard.md`` by accident; ``force`` replaces it anyway.
"""
from __future__ import annotations

import difflib

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from memtasks.results.aggregate import groups_of
from memtasks.results.errors import NoRecordsError, OverwriteError
from memtasks.results.markdown import leaderboard_groups, leaderboard_markdown
from memtasks.results.store import collect, matrix_presets, write_text_atomic


@dataclass
class Leaderboard:
    """A rendered leaderboard and what it was built from."""

    text: str  # the Markdown
    table: pd.DataFrame  # the collected records, one row per run (what --csv / --json export)
    groups: list[str]
    warnings: list[str] = field(default_factory=list)  # one per skipped or incomplete file, naming it

    def write(self, path: Path | str, force: bool = False) -> Path:
        """Write the Markdown to ``path`` atomically; see :func:`check_overwrite`."""
        path = Path(path)
        check_overwrite(path, self.groups, force)
        write_text_atomic(path, self.text)
        return path


def _where(runs_dirs: list[Path]) -> str:
    return ", ".join(map(str, runs_dirs))


def build_leaderboard(runs_dirs: Iterable[Path | str], groups: Iterable[str] | None = None) -> Leaderboard:
    """Collect the records under ``runs_dirs`` (only ``groups`` if given) and render them.

    Raises :class:`NoRecordsError` when a folder does not exist or no record matches.
    """
    dirs = [Path(d) for d in runs_dirs]
    wanted = list(dict.fromkeys(groups)) if groups else None
    df, warnings = collect(dirs, wanted)
    if df.empty:
        if wanted:
            present = groups_of(collect(dirs)[0])
            close = [m for g in wanted for m in difflib.get_close_matches(g, present, n=1, cutoff=0.5)]
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise NoRecordsError(
                f"no run records of group(s) {', '.join(map(repr, wanted))} under {_where(dirs)}{hint} "
                f"groups with records: {', '.join(present) or 'none'}"
            )
        skipped = [w for w in warnings if w.startswith("skipped")]
        if skipped:
            raise NoRecordsError(f"no readable run record under {_where(dirs)}: {'; '.join(skipped[:3])}")
        raise NoRecordsError(f"no run records under {_where(dirs)}; train some first (memtasks train, memtasks matrix) "
                             "or give the folder that holds them")
    present = groups_of(df)
    presets, more = matrix_presets(dirs, present)
    return Leaderboard(leaderboard_markdown(df, presets), df, present, warnings + more)


def check_overwrite(path: Path, groups: list[str], force: bool = False) -> None:
    """Refuse to replace ``path`` unless it is missing, a leaderboard of exactly ``groups``, or ``force``."""
    if force or not path.exists():
        return
    try:
        old = leaderboard_groups(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise OverwriteError(f"{path}: exists and cannot be read ({exc}); pass --force to replace it") from None
    if old is None:
        raise OverwriteError(f"{path}: exists and is not a memtasks leaderboard; pass --force to replace it, "
                             "or -o another file")
    if old != set(groups):
        raise OverwriteError(
            f"{path}: is the leaderboard of group(s) {', '.join(sorted(old)) or 'none'}, not {', '.join(groups)}; "
            "pass --group to rebuild the same groups, -o another file, or --force to replace it"
        )


def write_leaderboard(
    runs_dirs: Iterable[Path | str], groups: Iterable[str] | None, out_path: Path | str, force: bool = False
) -> tuple[str, list[str]]:
    """Build the leaderboard and write it to ``out_path``; returns the Markdown and the warnings."""
    board = build_leaderboard(runs_dirs, groups)
    board.write(out_path, force)
    return board.text, board.warnings

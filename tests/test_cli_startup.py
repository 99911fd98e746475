"""``memtasks --help``, ``--version``, every command's ``--help`` and the listings ``memtasks
tasks`` and ``memtasks models`` answer without importing torch (it takes seconds to import): each
is run in a fresh interpreter, which then reports whether torch was imported.

The task modules import torch through ``memtasks.core.lazy`` (on first use, not at import), and
the plain model listing reads the built-in models' registrations from their source
(``memtasks.cli.zoo``), checked here against the imported registry. ``memtasks models --task T``
(parameter counts), ``--plugin`` and ``memtasks show`` build or sample, so they import torch.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
from memtasks.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print("\\n" + json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _subcommands() -> list[str]:
    from memtasks.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 -- argparse has no public accessor
    return sorted(sub.choices)


def _probe(*argv: str) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    *text, last = out.stdout.rstrip("\n").split("\n")
    return json.loads(last), "\n".join(text)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["matrix", "--help"]])
def test_help_and_version_do_not_import_torch(argv: list[str]) -> None:
    result, text = _probe(*argv)
    assert result == {"code": 0, "torch": False}, (argv, result)
    assert ("memtasks 0." in text) if argv == ["--version"] else ("usage: memtasks" in text)


def test_every_command_help_is_torch_free() -> None:
    commands = _subcommands()
    assert {"train", "matrix", "leaderboard", "compare"} <= set(commands)
    code = "\n".join(
        [
            "import sys, contextlib, io",
            "from memtasks.cli import main",
            f"for cmd in {commands!r}:",
            "    with contextlib.redirect_stdout(io.StringIO()):",
            "        try:",
            "            main([cmd, '--help'])",
            "        except SystemExit:",
            "            pass",
            "    if 'torch' in sys.modules:",
            "        print(cmd); break",
        ]
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"`memtasks {out.stdout.strip()} --help` imported torch"


def test_python_m_memtasks_help_is_torch_free() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "memtasks", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage: memtasks" in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "memtasks.cli" in imported
    assert "torch" not in imported


def test_tasks_listing_is_torch_free_and_complete() -> None:
    from memtasks.tasks import TASKS, get_task

    result, text = _probe("tasks")
    assert result == {"code": 0, "torch": False}, result
    builtin = [n for n in TASKS.names() if TASKS.get(n).__module__.startswith("memtasks.tasks.")]
    assert [line.split()[0] for line in text.splitlines()] == builtin
    assert text.splitlines() == [get_task(n).describe() for n in builtin]


def test_models_listing_is_torch_free_and_complete() -> None:
    from memtasks.cli import zoo

    result, text = _probe("models")
    assert result == {"code": 0, "torch": False}, result
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()[2:]]
    expected = [e.row() for e in _builtin_registry_entries()]
    assert rows == [list(row.values()) for row in expected]
    assert text.splitlines()[0].replace(" ", "") == "|model|family|sizeknob|"
    assert zoo.source_entries() is not None


def test_models_read_from_source_match_the_registry() -> None:
    from memtasks.cli import zoo

    entries = zoo.source_entries()
    assert entries == _builtin_registry_entries()
    assert {"lstm", "ntm", "dnc", "esn"} <= {e.name for e in entries}
    esn = next(e for e in entries if e.name == "esn")
    assert (esn.size_knob, esn.default_size) == ("reservoir_size", 500)


def _builtin_registry_entries() -> list:
    from memtasks.cli import zoo
    from memtasks.models import MODELS

    return [e for e in zoo.registry_entries() if MODELS.get(e.name).__module__.startswith("memtasks.models.")]

"""``memtasks --help``, ``--version`` and every command's ``--help`` answer without importing torch
(it takes seconds to import): each is run in a fresh interpreter, which then reports whether torch
was imported.

The listings ``memtasks tasks`` and ``memtasks models`` still import torch: they read the
registries, and the task and model modules are built on torch.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

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

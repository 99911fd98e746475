"""The CLI commands run and print what they claim."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import memtasks


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "memtasks.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_tasks_lists_every_task():
    out = cli("tasks")
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(memtasks.list_tasks())
    for name in memtasks.list_tasks():
        line = next(l for l in lines if l.startswith(name + " "))
        task = memtasks.get_task(name)
        assert f"d_in={task.d_in}" in line and f"loss={task.loss}" in line


def test_models_counts_parameters_for_a_task_and_lists_plugins():
    from memtasks.models import MODELS

    out = cli("models", "--task", "copy", "--plugin", str(Path(__file__).resolve().parents[1] / "examples" / "my_model.py"))
    assert out.returncode == 0, out.stderr
    header, _, *rows = out.stdout.strip().splitlines()
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "model", "family", "size knob", "trainable params (copy)", "state floats"]
    names = [row.strip("|").split("|")[0].strip() for row in rows]
    builtin = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("memtasks.models.")]
    assert names == sorted([*builtin, "mgu"])
    lstm = next(row for row in rows if row.startswith("| lstm "))
    cells = [c.strip() for c in lstm.strip("|").split("|")]
    model = MODELS.get("lstm")(9, 8, MODELS.get("lstm").config_cls())
    assert cells[2:] == ["hidden_size=100", str(model.param_counts()[0]), str(model.state_size())]


def test_show_prints_grid_and_png(tmp_path):
    png = tmp_path / "x.png"
    out = cli("show", "copy", "--length", "3", "--png", str(png))
    assert out.returncode == 0, out.stderr
    assert "copy (length 3" in out.stdout
    assert "scored|" in out.stdout and out.stdout.count("*") == 3
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_every_task():
    for name in memtasks.list_tasks():
        out = cli("show", name, "--seed", "1")
        assert out.returncode == 0, (name, out.stderr)
        assert "in 0" in out.stdout and "tgt0" in out.stdout


def test_show_unknown_task_suggests():
    out = cli("show", "repeat_cpy")
    assert out.returncode == 2 and "did you mean 'repeat_copy'" in out.stderr


def test_bench_tasks_writes_json(tmp_path):
    out = cli("bench", "tasks", "--tasks", "copy", "adding", "--json", str(tmp_path / "b.json"))
    assert out.returncode == 0, out.stderr
    assert "threads=1" in out.stdout and "torch=" in out.stdout
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["task"] for r in data["rows"]] == ["copy", "adding"]
    assert all(r["sequences_per_s"] > 0 for r in data["rows"])


def test_bench_models_probe_step_leaves_no_buffers_leased():
    """`bench models --models ...` first runs one small training step of each named model; its output and
    graph must be gone before the timing, or the DNC's kernel buffers stay leased and every timed step
    makes a new arena (with the probe's graph kept, `--models lstm dnc` timed the dnc at 0.20x lstm)."""
    from memtasks.cli.bench import _one_training_step
    from memtasks.models.dnc.sequence import POOL

    _one_training_step("dnc")
    assert POOL.entries and all(entry[1]() is None for entry in POOL.entries)


def test_bench_models_reports_ratio_to_lstm(tmp_path):
    out = cli("bench", "models", "--models", "gru", "--json", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"lstm", "gru"}
    assert next(r for r in rows if r["model"] == "lstm")["ratio_to_lstm"] == 1.0

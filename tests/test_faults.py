"""Faults and bad input found by an outside test pass (issue 11): each defect has a test here
that failed on the code before its fix."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from memtasks.results import store as R
from memtasks.train.checkpoint import RunBusy, RunError
from memtasks.train.config import RunConfig
from memtasks.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--sequences", "64", "--set", "eval_every=64", "--set", "eval_size=8", "--set", "task.max_length=4",
        "--set", "task.generalise=6", "--set", "model.hidden_size=8"]

SPEC = """
name = "faults"
seeds = [0]
[train]
sequences = 64
batch_size = 16
eval_every = 64
eval_size = 8
early_stop = false
[tasks.copy]
bits = 4
max_length = 3
generalise = [5]
[models.lstm]
hidden_size = 8
[models.rnn]
hidden_size = 8
"""


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "disabled", **extra}


def cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memtasks.cli", *args], capture_output=True, text=True,
                          env=kw.pop("env", env()), timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)


def one_clear_line(out: subprocess.CompletedProcess, code: int = 2) -> str:
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("memtasks: error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def tiny(**kw) -> RunConfig:
    fields = dict(task="copy", model="lstm", sequences=64, batch_size=16, eval_every=64, eval_size=8,
                  early_stop=False, task_params={"bits": 4, "max_length": 3, "generalise": (5,)},
                  model_params={"hidden_size": 8})
    fields.update(kw)
    return RunConfig(**fields)


def folder_of(runs: Path, cfg: RunConfig) -> Path:
    return R.run_dir(runs, cfg.group, cfg.task, cfg.model, cfg.seed)


# --- 1. data loss: --force never touches a run another process holds ----------------------------
def test_force_leaves_a_run_held_by_another_process_untouched(tmp_path):
    cfg = tiny()
    train(cfg, tmp_path, wandb_mode="disabled")
    folder = folder_of(tmp_path, cfg)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    with open(folder / ".lock", "a") as held:  # as a training process holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunBusy, match="another process"):
            train(cfg, tmp_path, wandb_mode="disabled", force=True)
    after = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing deleted, nothing rewritten


def test_force_while_training_in_another_process_loses_nothing(tmp_path):
    args = ["train", "--task", "copy", "--model", "lstm", "--sequences", "100000", "--set", "eval_every=2000",
            "--set", "eval_size=8", "--set", "task.max_length=4", "--set", "task.generalise=6",
            "--set", "model.hidden_size=8", "--set", "early_stop=false", "--runs-dir", str(tmp_path), "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "memtasks.cli", *args], env=env(), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "default" / "copy" / "lstm" / "seed-0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(R.read_jsonl(folder / "metrics.jsonl")) < 2:
        time.sleep(0.1)
    second = cli(*args, "--force")
    assert "another process" in one_clear_line(second)
    assert (folder / "config.json").exists()
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode == 130
    assert (folder / "config.json").exists() and (folder / "checkpoint.pt").exists()


# --- 2. a matrix never counts a record of another configuration --------------------------------
def test_matrix_refuses_records_of_another_configuration(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    assert cli("matrix", str(spec), "--runs-dir", str(runs), "--workers", "1").returncode == 0
    meta = (runs / "faults" / "matrix.json").read_bytes()
    results = {p: p.read_bytes() for p in runs.rglob("result.json")}
    line = one_clear_line(cli("matrix", str(spec), "--runs-dir", str(runs), "--set", "sequences=128"))
    assert "sequences: 64 -> 128" in line and "--force" in line and "--group" in line
    spec.write_text(SPEC.replace("[models.lstm]\nhidden_size = 8", "[models.lstm]\nhidden_size = 9"))
    line = one_clear_line(cli("matrix", str(spec), "--runs-dir", str(runs)))
    assert "model.hidden_size: 8 -> 9" in line and "copy/lstm/seed-0" in line
    assert (runs / "faults" / "matrix.json").read_bytes() == meta
    assert {p: p.read_bytes() for p in runs.rglob("result.json")} == results
    # the remedy works: --force narrowed to the changed cells trains them again
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--force", "--models", "lstm", "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert json.loads((runs / "faults/copy/lstm/seed-0/config.json").read_text())["run"]["model_params"]["hidden_size"] == 9


# --- 4. Ctrl-C and SIGTERM stop a matrix: no new cell, checkpoints, exit 130 --------------------
@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to the driver"])
def test_matrix_stops_on_a_signal_and_starts_nothing_new(tmp_path, how):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("sequences = 64", "sequences = 200000").replace("eval_every = 64", "eval_every = 4000")
                    .replace("seeds = [0]", "seeds = [0, 1, 2]"))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "memtasks.cli", "matrix", str(spec), "--runs-dir", str(runs),
                             "--workers", "1"], env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(len(R.read_jsonl(p)) >= 2 for p in runs.rglob("metrics.jsonl")):
        time.sleep(0.1)
    if how.startswith("SIGINT"):
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 20
    assert "interrupted" in err and "Traceback" not in err
    started = [p.parent for p in runs.rglob("config.json")]
    assert len(started) == 1  # one worker: only the running cell was ever started
    assert not list(runs.rglob("result.json"))
    ckpt = torch.load(started[0] / "checkpoint.pt", weights_only=False)
    assert ckpt["loop"]["seen"] > 0  # written at the stop, not only every two minutes


def test_train_ctrl_c_writes_a_checkpoint_and_resumes_from_it(tmp_path):
    args = ["train", "--task", "copy", "--model", "lstm", "--sequences", "100000", "--set", "eval_every=1000",
            "--set", "eval_size=8", "--set", "task.max_length=4", "--set", "task.generalise=6",
            "--set", "model.hidden_size=8", "--set", "checkpoint_every_s=10000", "--runs-dir", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "memtasks.cli", *args], env=env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "default" / "copy" / "lstm" / "seed-0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(R.read_jsonl(folder / "metrics.jsonl")) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert ckpt["loop"]["seen"] >= 1000
    assert len(R.read_jsonl(folder / "metrics.jsonl")) == ckpt["loop"]["rows"]


# --- 6. duplicates and cells held by another matrix ---------------------------------------------
def test_duplicate_seeds_run_each_cell_once(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("seeds = [0]", "seeds = [0, 0]"))
    out = cli("matrix", str(spec), "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert out.returncode == 0 and "2 cells" in out.stdout
    out = cli("matrix", str(spec), "--runs-dir", str(tmp_path / "runs"), "--seeds", "3", "3", "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "failed: 0" in out.stdout
    assert len(list((tmp_path / "runs").rglob("result.json"))) == 2


def test_a_cell_held_by_another_process_is_reported_as_such(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    folder = runs / "faults" / "copy" / "rnn" / "seed-0"
    folder.mkdir(parents=True)
    with open(folder / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = cli("matrix", str(spec), "--runs-dir", str(runs), "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "held by another process: 1" in out.stdout and "failed: 0" in out.stdout
    assert "copy/rnn/seed-0" in out.stderr
    assert not (folder / "result.json").exists()
    again = cli("matrix", str(spec), "--runs-dir", str(runs), "--workers", "1")
    assert again.returncode == 0 and "1 already finished, 1 to run" in again.stderr


# --- 7. paths ---------------------------------------------------------------------------------
def test_path_problems_are_one_line_and_leave_nothing(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in one_clear_line(cli("train", "--task", "copy", "--model", "lstm", *TINY, "--runs-dir", str(a_file)))
    assert "is a folder" in one_clear_line(cli("leaderboard", str(ROOT / "tests" / "fixtures" / "runs"), "-o", str(tmp_path)))
    assert "is a file" in one_clear_line(cli("compare", "lstm", "--runs-dir", str(ROOT / "tests" / "fixtures" / "runs"),
                                             "--out", str(a_file)))
    assert "does not exist" in one_clear_line(cli("show", "copy", "--png", str(tmp_path / "missing" / "x.png")))
    assert not (tmp_path / "missing").exists()


def test_a_full_disk_leaves_no_half_written_checkpoint(tmp_path):
    import resource

    def small_files() -> None:  # writes past 64 KiB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    out = cli("train", "--task", "copy", "--model", "lstm", *TINY, "--set", "model.hidden_size=64",
              "--runs-dir", str(tmp_path), "--quiet", preexec_fn=small_files)
    assert out.returncode in (1, 2) and "Traceback" not in out.stderr
    assert not list(tmp_path.rglob("*.tmp")), "a half-written file was left behind"
    assert not list(tmp_path.rglob("checkpoint.pt"))


# --- 8. plugins ------------------------------------------------------------------------------
BROKEN_FORWARD = '''
from dataclasses import dataclass
import torch
from memtasks.models import MemoryModel, register_model

@dataclass(frozen=True)
class Cfg:
    hidden_size: int = 4

@register_model("{name}", config=Cfg)
class M(MemoryModel):
    def __init__(self, d_in, d_out, config):
        super().__init__(d_in, d_out, config)
        self.w = torch.nn.Linear(d_in, d_out)
    def initial_state(self, batch_size, device=None):
        return torch.zeros(batch_size, 1, device=device)
    def forward(self, x, state=None):
        {body}
'''


@pytest.mark.parametrize("name,body,needle", [
    ("nostate", "return self.w(x)", "returned a Tensor"),
    ("badshape", "return self.w(x)[:, :, :1], state", "y has shape (2, 2, 1)"),
])
def test_a_plugin_breaking_the_model_contract_is_named(tmp_path, name, body, needle):
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(BROKEN_FORWARD.format(name=name, body=body))
    out = cli("train", "--task", "copy", "--model", name, "--plugin", str(plugin), *TINY[:2], "--runs-dir", str(tmp_path))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"model {name!r} breaks the model contract" in out.stdout and needle in out.stdout
    assert "(B, T, d_out) = (2, 2, 8)" in out.stdout


@pytest.mark.parametrize("text,needle", [
    ("x = 1\ndef broken(:\n", "line 2: SyntaxError"),
    ("import os\nimport no_such_package_here\n", "line 2: ModuleNotFoundError"),
])
def test_a_broken_plugin_file_names_file_and_line(tmp_path, text, needle):
    plugin = tmp_path / "bad_plugin.py"
    plugin.write_text(text)
    line = one_clear_line(cli("tasks", "--plugin", str(plugin)))
    assert str(plugin) in line and needle in line


def test_a_plugin_config_field_without_default_is_named(tmp_path):
    plugin = tmp_path / "nodefault.py"
    plugin.write_text(BROKEN_FORWARD.format(name="nodefault", body="return self.w(x), state")
                      .replace("hidden_size: int = 4", "depth: int\n    hidden_size: int = 4"))
    line = one_clear_line(cli("train", "--task", "copy", "--model", "nodefault", "--plugin", str(plugin), *TINY[:2],
                              "--runs-dir", str(tmp_path)))
    assert "'depth' has no default" in line


# --- 9. sizes --------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["show", "copy", "--length", "1000000000"], "over the limit"),
    (["train", "--task", "copy", "--model", "lstm", "--param-budget", "1000000000000"], "over the limit"),
    (["train", "--task", "copy", "--model", "lstm", "--param-budget", "10"], "nearest achievable"),
    (["train", "--task", "copy", "--model", "lstm", "--set", "task.generalise=100000"], "generalisation length 100000"),
])
def test_sizes_that_cannot_fit_are_refused_up_front(tmp_path, args, needle):
    out = cli(*args, "--runs-dir", str(tmp_path)) if args[0] == "train" else cli(*args)
    assert needle in one_clear_line(out)
    assert not list(tmp_path.rglob("result.json"))


# --- 10. what actually ran is recorded ---------------------------------------------------------
def test_bf16_on_cpu_is_recorded_as_not_used(tmp_path):
    out = cli("train", "--task", "copy", "--model", "lstm", *TINY, "--set", "bf16=true", "--device", "cpu",
              "--runs-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "bf16 autocast runs on CUDA only" in out.stderr
    config = json.loads((tmp_path / "default/copy/lstm/seed-0/config.json").read_text())
    assert config["run"]["bf16"] is True and config["ran_with"]["bf16"] is False


def test_bench_rejects_a_zero_batch():
    assert "--batch-size" in one_clear_line(cli("bench", "tasks", "--batch-size", "0"))


# --- 11. records ----------------------------------------------------------------------------
def test_a_resume_whose_metrics_lost_rows_is_refused(tmp_path):
    cfg = tiny(sequences=256, eval_every=32, checkpoint_every_s=1e-6)
    folder = folder_of(tmp_path, cfg)
    train(cfg, tmp_path, wandb_mode="disabled")
    (folder / "result.json").unlink()  # as if killed after the last checkpoint
    rows = (folder / "metrics.jsonl").read_text().splitlines(keepends=True)
    (folder / "metrics.jsonl").write_text("".join(rows[:3]))
    with pytest.raises(RunError, match="rows were lost"):
        train(cfg, tmp_path, wandb_mode="disabled")
    assert not (folder / "result.json").exists()


def test_a_corrupt_result_says_what_to_do_and_force_replaces_it(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    assert cli("matrix", str(spec), "--runs-dir", str(runs), "--workers", "1").returncode == 0
    (runs / "faults/copy/rnn/seed-0/result.json").write_text("{not json")
    line = one_clear_line(cli("matrix", str(spec), "--runs-dir", str(runs)))
    assert "corrupt JSON" in line and "--force" in line
    line = one_clear_line(cli("train", "--task", "copy", "--model", "rnn", "--group", "faults", "--runs-dir", str(runs),
                              "--sequences", "64", "--set", "eval_every=64", "--set", "eval_size=8",
                              "--set", "task.max_length=3", "--set", "task.bits=4", "--set", "task.generalise=5",
                              "--set", "model.hidden_size=8", "--set", "early_stop=false", "--batch-size", "16"))
    assert "--force" in line
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--force", "--models", "rnn", "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert R.read_result(runs / "faults/copy/rnn/seed-0/result.json")["status"] == "ok"


def test_records_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        cfg = tiny()
        train(cfg, tmp_path, wandb_mode="disabled")
    finally:
        os.umask(old)
    for name in ("config.json", "result.json", "metrics.jsonl"):
        mode = stat.S_IMODE((folder_of(tmp_path, cfg) / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


# --- 12. messages ---------------------------------------------------------------------------
def test_messages_name_the_flag():
    assert "--model lstm" in one_clear_line(cli("capacity", "--model", "lstm", "--sizes", "10"))
    line = one_clear_line(cli("matrix", "smoke", "--workers", "-1"))
    assert "--workers" in line and ">= 1" in line


def test_no_compiler_is_warned_once_and_recorded(tmp_path):
    no_cc = env(CC="no-such-compiler", PATH=str(Path(sys.executable).parent), XDG_CACHE_HOME=str(tmp_path / "cache"),
                TMPDIR=str(tmp_path))
    out = cli("train", "--task", "copy", "--model", "ntm", *TINY[:2], "--set", "eval_size=8", "--set", "task.max_length=3",
              "--set", "task.generalise=5", "--set", "model.hidden_size=8", "--set", "model.memory_slots=8",
              "--runs-dir", str(tmp_path / "runs"), "--quiet", env=no_cc)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("C kernels unavailable") == 1
    config = json.loads((tmp_path / "runs/default/copy/ntm/seed-0/config.json").read_text())
    assert config["run"]["model_params"].get("cpu_kernel", True) is True and config["ran_with"]["cpu_kernel"] is False


# --- 5. kill -9 of the driver at random moments: nothing lost, nothing repeated, no orphans -------
# Long enough (about 35 s of training per cell on one core here) that 20 kills land before the
# matrix can finish, although the checkpoints every 0.3 s keep most of the work done between them.
KILL_SPEC = """
name = "kills"
seeds = [0, 1]
[train]
sequences = 400_000
batch_size = 16
eval_every = 25_000
eval_size = 8
early_stop = false
checkpoint_every_s = 0.3
[tasks.copy]
bits = 4
max_length = 4
generalise = [6]
[models.lstm]
hidden_size = 16
[models.gru]
hidden_size = 16
"""


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat_file.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _comparable(folder: Path) -> list:
    rows = R.read_jsonl(folder / "metrics.jsonl")
    return [{k: v for k, v in r.items() if k not in ("train_time_s", "wall_time_s")} for r in rows]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")
def test_sigkill_of_the_driver_at_random_moments(tmp_path):
    import random

    spec = tmp_path / "spec.toml"
    spec.write_text(KILL_SPEC)
    reference = tmp_path / "reference"
    assert cli("matrix", str(spec), "--runs-dir", str(reference), "--workers", "2").returncode == 0
    runs = tmp_path / "runs"
    rng = random.Random(11)
    kills = 0
    while kills < 20:
        proc = subprocess.Popen([sys.executable, "-m", "memtasks.cli", "matrix", str(spec), "--runs-dir", str(runs),
                                 "--workers", "2"], env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rng.uniform(0.5, 7.0)
        tree: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            tree |= _descendants(proc.pid)
            time.sleep(0.05)
        if proc.poll() is not None:  # the matrix finished before this moment came
            break
        tree |= _descendants(proc.pid)
        proc.kill()
        proc.wait()
        kills += 1
        gone_by = time.monotonic() + 5
        while time.monotonic() < gone_by and any(_alive(p) for p in tree):
            time.sleep(0.05)
        assert not [p for p in tree if _alive(p)], f"kill {kills}: processes of the killed matrix still alive after 5 s"
    assert kills == 20, f"the matrix finished after {kills} kills, before all 20 landed; make it longer"
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--workers", "2")
    assert out.returncode == 0, out.stderr
    finished = sorted(p.parent.relative_to(runs) for p in runs.rglob("result.json"))
    assert finished == sorted(p.parent.relative_to(reference) for p in reference.rglob("result.json"))
    assert len(finished) == 4
    for rel in finished:
        mine, theirs = R.read_result(runs / rel / "result.json"), R.read_result(reference / rel / "result.json")
        assert mine["status"] == "ok" and mine["final"] == theirs["final"], rel
        assert _comparable(runs / rel) == _comparable(reference / rel), rel

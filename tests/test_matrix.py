"""The benchmark matrix: spec validation, resume after a kill, failing cells, Ray, smoke preset."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from memtasks.matrix.spec import SpecError, expand, load_spec
from memtasks.results import store as R

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
seeds = [0, 1]
[train]
sequences = 256
batch_size = 16
eval_every = 128
eval_size = 8
early_stop = false
[tasks.copy]
bits = 4
max_length = 3
generalise = [5]
[tasks.delayed_xor]
base_length = 24
generalise = [30]
[models.lstm]
hidden_size = 12
[models.gru1]
hidden_size = 12
"""

FAILING_PLUGIN = '''
from dataclasses import dataclass
from torch import nn
from memtasks.models import MemoryModel, register_model

@dataclass(frozen=True)
class BoomConfig:
    hidden_size: int = 4

@register_model("boom", config=BoomConfig)
class Boom(MemoryModel):
    def __init__(self, d_in, d_out, config):
        super().__init__(d_in, d_out, config)
        self.w = nn.Linear(d_in, d_out)
    def initial_state(self, batch_size, device=None):
        return None
    def forward(self, x, state=None):
        raise RuntimeError("boom: this model always fails")
'''


def cli(*args: str, env_extra: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "memtasks.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def records(runs: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(runs)): R.read_result(p) for p in sorted(runs.rglob("result.json"))}


# --- spec ------------------------------------------------------------------------------
def test_expansion_order_filters_and_overrides(tmp_path):
    spec = load_spec(str(write(tmp_path, TINY)))
    cells = expand(spec)
    assert len(cells) == 2 * 2 * 2
    assert [(c.task, c.model, c.seed) for c in cells[:3]] == [("copy", "lstm", 0), ("copy", "lstm", 1), ("copy", "gru1", 0)]
    assert cells[0].group == "tiny" and cells[0].task_params["max_length"] == 3
    narrowed = expand(spec, tasks=["copy"], models=["gru1"], seeds=[5], sets=["lr=0.01"], group="g")
    assert [(c.task, c.model, c.seed, c.lr, c.group) for c in narrowed] == [("copy", "gru1", 5, 0.01, "g")]


def test_presets_load_and_smoke_covers_everything():
    import memtasks
    import memtasks.models as models  # noqa: F401  (registers the models)

    from memtasks.matrix.spec import PRESETS

    for name in PRESETS:
        assert expand(load_spec(name))
    built_in = {n for n in models.MODELS.names() if models.MODELS.get(n).__module__.startswith("memtasks.models.")}
    for name in ("smoke", "reference"):  # every built-in task and model
        cells = expand(load_spec(name))
        assert {c.task for c in cells} == set(memtasks.list_tasks()), name
        assert {c.model for c in cells} == built_in, name


@pytest.mark.parametrize(
    "text,needle",
    [
        ("nmae = 'x'\n[tasks.copy]\n[models.lstm]\n", "unknown top-level key 'nmae' (did you mean 'name'?)"),
        ("[train]\nsequencez = 3\n[tasks.copy]\n[models.lstm]\n", "[train] unknown run setting key 'sequencez'"),
        ("[tasks.cpy]\n[models.lstm]\n", "did you mean 'copy'"),
        ("[tasks.copy]\n[models.lsmt]\n", "did you mean 'lstm'"),
        ("[tasks.copy]\nbits = 0\n[models.lstm]\n", "copy.bits=0"),
        ("[tasks.copy]\n[models.lstm]\nhiden_size = 3\n", "hiden_size"),
        ("[train]\nbatch_size = -1\n[tasks.copy]\n[models.lstm]\n", "batch_size"),
        ("seeds = []\n[tasks.copy]\n[models.lstm]\n", "seeds"),
        ("[tasks.copy]\n", "[models] is empty"),
        ("[tasks.copy\n", "invalid TOML"),
    ],
)
def test_bad_spec_names_the_field(tmp_path, text, needle):
    with pytest.raises(SpecError) as info:
        load_spec(str(write(tmp_path, text)))
    assert needle in str(info.value)
    assert "spec.toml" in str(info.value)


def test_unknown_preset_or_file():
    with pytest.raises(SpecError, match="neither a preset"):
        load_spec("smok")


# --- running -------------------------------------------------------------------------------
def test_matrix_runs_and_resume_after_kill_loses_and_repeats_nothing(tmp_path):
    spec = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "memtasks.cli", "matrix", str(spec), "--runs-dir", str(runs), "--workers", "2"],
        env={**os.environ, "WANDB_MODE": "disabled"}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(runs.rglob("result.json"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, as a hard kill would
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("result.json")}
    assert 2 <= len(before) < 8, "killed mid-matrix"
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert f"{len(before)} already finished, {8 - len(before)} to run" in out.stderr
    for p, mtime in before.items():
        assert p.stat().st_mtime_ns == mtime, f"{p} was redone"
    done = records(runs)
    assert len(done) == 8 and all(r["status"] == "ok" for r in done.values())
    again = cli("matrix", str(spec), "--runs-dir", str(runs))
    assert again.returncode == 0 and "8 already finished, 0 to run" in again.stderr
    summary = json.loads((runs / "tiny" / "matrix_summary.json").read_text())  # of the last run that ran cells
    assert summary["counts"]["skipped (already finished)"] == len(before)
    assert summary["counts"]["ok"] == 8 - len(before)


def test_failing_cell_does_not_stop_the_others(tmp_path):
    plugin = write(tmp_path, FAILING_PLUGIN, "boom.py")
    spec = write(tmp_path, TINY.replace("[models.gru1]", "[models.boom]\nhidden_size = 4\n[models.gru1]"))
    runs = tmp_path / "runs"
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--seeds", "0", "--tasks", "copy", "--plugin", str(plugin),
              "--workers", "2")
    assert out.returncode == 1
    assert "failed cells: copy/boom/seed-0" in out.stderr
    done = records(runs)
    assert done["tiny/copy/lstm/seed-0"]["status"] == "ok" and done["tiny/copy/gru1/seed-0"]["status"] == "ok"
    assert done["tiny/copy/boom/seed-0"]["status"] == "failed"
    assert "boom: this model always fails" in done["tiny/copy/boom/seed-0"]["error"]


def test_diverging_cell_is_recorded_and_matrix_goes_on(tmp_path):
    spec = write(tmp_path, TINY + "[models.rnn]\nhidden_size = 12\nnonlinearity = 'relu'\n[models.rnn.train]\n"
                 "lr = 1e8\noptimizer = 'sgd'\nsequences = 2048\n")
    runs = tmp_path / "runs"
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--seeds", "0", "--tasks", "copy", "--workers", "2")
    assert out.returncode == 0, out.stderr  # diverged is a result, not a failure
    done = records(runs)
    assert done["tiny/copy/rnn/seed-0"]["status"] == "diverged"
    assert done["tiny/copy/lstm/seed-0"]["status"] == "ok"
    assert "diverged: 1" in out.stdout


# --- GPU worker placement, runnable without a GPU -----------------------------------------
def _worker_device(_: int) -> tuple[int, str]:
    time.sleep(0.5)  # stay busy so that the pool starts every worker
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_workers_per_gpu_pins_each_worker_to_one_device():
    """--workers-per-gpu 2 on two GPUs: four workers, each sees one GPU, two per GPU. Only the
    placement logic runs here (no CUDA call), so it needs no GPU."""
    import concurrent.futures as cf
    import multiprocessing as mp

    from memtasks.matrix.executor import LocalExecutor, _init_worker

    ex = LocalExecutor(workers_per_gpu=2, gpus=[0, 1])
    assert ex.plan() == 4
    assert LocalExecutor(workers=3, gpus=[0, 1]).plan() == 3 and LocalExecutor().gpu_queue(None, 2) is None
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(4, mp_context=ctx, initializer=_init_worker, initargs=(1, ex.gpu_queue(ctx, 4))) as pool:
        seen = dict(pool.map(_worker_device, range(8)))  # worker pid -> its CUDA_VISIBLE_DEVICES
    assert set(seen.values()) <= {"0", "1"}
    per_gpu = [sum(1 for d in seen.values() if d == gpu) for gpu in ("0", "1")]
    assert max(per_gpu) <= 2, f"a GPU got more than --workers-per-gpu workers: {seen}"


# --- Ray ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strip_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("wall_time_s", "train_time_s", "throughput", "finished_at")}


@pytest.mark.ray
@pytest.mark.parametrize("auth", ["none", "token"])
def test_ray_cluster_matches_local_executor(tmp_path, monkeypatch, auth):
    """A cluster on 127.0.0.1, without and with Ray's token authentication, trains the matrix as the
    local executor does. The test has its own HOME and no RAY_AUTH_* variables, so a token an
    earlier `ray start` left in ~/.ray/auth_token changes nothing; it stops its own cluster only."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    assert ray_bin.exists(), "the ray extra installs the ray command"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if auth == "token":  # as `ray start` finds it after `ray get-auth-token --generate`
        made = subprocess.run([str(ray_bin), "get-auth-token", "--generate"], capture_output=True, text=True,
                              env=env, timeout=120)
        if made.returncode != 0:
            pytest.skip(f"this Ray has no token authentication: {made.stderr.strip()[-300:]}")
        assert (home / ".ray" / "auth_token").exists()
    spec = write(tmp_path, TINY)
    port = _free_port()
    ray_tmp = Path(tempfile.mkdtemp(prefix="mtray", dir="/tmp"))  # unix socket paths must stay short
    head_log = tmp_path / "head.log"
    with open(head_log, "w") as out:  # --block: ending this process stops this cluster, no other
        head = subprocess.Popen(
            [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in head_log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, head_log.read_text()
            time.sleep(0.5)
        if auth == "token":
            assert "Token authentication is enabled" in head_log.read_text(), "the cluster requires the token"
        ray_runs, local_runs = tmp_path / "ray_runs", tmp_path / "local_runs"
        out = cli("matrix", str(spec), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                  "--runs-dir", str(ray_runs), "--seeds", "0")
        assert out.returncode == 0, out.stderr + out.stdout
        local = cli("matrix", str(spec), "--runs-dir", str(local_runs), "--seeds", "0", "--workers", "2")
        assert local.returncode == 0, local.stderr
        a, b = records(ray_runs), records(local_runs)
        assert a.keys() == b.keys() and len(a) == 4
        for key in a:
            assert _strip_timings(a[key]) == _strip_timings(b[key]), key
            ma = R.read_jsonl(ray_runs / key / "metrics.jsonl")
            mb = R.read_jsonl(local_runs / key / "metrics.jsonl")
            assert [{k: v for k, v in r.items() if k not in ("train_time_s", "wall_time_s")} for r in ma] == [
                {k: v for k, v in r.items() if k not in ("train_time_s", "wall_time_s")} for r in mb]
        # resume through Ray: nothing is re-run
        again = cli("matrix", str(spec), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                    "--runs-dir", str(ray_runs), "--seeds", "0")
        assert again.returncode == 0 and "4 already finished, 0 to run" in again.stderr
    finally:
        head.terminate()  # the head drains, then stops the processes it started
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # this test's own session
            head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


# --- the smoke preset end to end ------------------------------------------------------------
@pytest.mark.slow
def test_smoke_preset_and_leaderboard(tmp_path):
    runs = tmp_path / "runs"
    out = cli("matrix", "smoke", "--runs-dir", str(runs), "--workers", "2", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "failed: 0" in out.stdout
    board = tmp_path / "board.md"
    lb = cli("leaderboard", str(runs), "--group", "smoke", "-o", str(board))
    assert lb.returncode == 0, lb.stderr
    text = board.read_text()
    for task in ("copy", "adding", "dynamic_ngrams"):
        assert task in text


def test_plugin_model_runs_with_a_preset_and_appears_on_the_leaderboard(tmp_path):
    spec = write(tmp_path, TINY)
    runs = tmp_path / "runs"
    out = cli("matrix", str(spec), "--runs-dir", str(runs), "--seeds", "0", "--tasks", "copy",
              "--models", "lstm", "mgu", "--plugin", str(ROOT / "examples" / "my_model.py"), "--workers", "2")
    assert out.returncode == 0, out.stderr
    board = tmp_path / "board.md"
    lb = cli("leaderboard", str(runs), "-o", str(board))
    assert lb.returncode == 0, lb.stderr
    table = board.read_text().split("## copy")[1]
    assert "| mgu " in table and "| lstm " in table

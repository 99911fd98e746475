"""The real wandb library, offline, in a temp dir (and, for the fallback, online against a closed
port): each logged run is read back from its transaction log with wandb's own protobuf schema,
only once W&B's service process has exited, so the log is complete and closed."""
from __future__ import annotations

import json
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

from memtasks.results import store as R
from memtasks.train import wandb_log
from memtasks.train.config import RunConfig
from memtasks.train.build import make_model, make_task
from memtasks.train.trainer import train
from memtasks.train.wandb_log import WandbRun

wandb = pytest.importorskip("wandb")

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", 2-byte magic, 1-byte version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """W&B reads nothing of the machine's account or earlier tests: its own home, no key, no mode,
    and a fresh service (wandb's setup caches the environment it first saw)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(wandb_log, "_online_blocked_until", 0.0)
    wandb.teardown()
    yield
    wandb.teardown()


def read_wandb_records(path: Path) -> list:
    """Decode a closed .wandb file: LevelDB-style log blocks carrying wandb ``Record`` protobufs.

    Every chunk's CRC is checked and a record cut short is an error, so a log still being
    written can never pass for a complete one.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    records, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        assert len(chunk) == length, f"{path}: record cut short at byte {pos}"
        assert crc == zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, f"{path}: bad CRC at byte {pos}"
        pos += 7 + length
        pending += chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    assert pending == b"", f"{path}: ends inside a record"
    return records


def closed_logs(root: Path) -> list[Path]:
    """The offline logs under ``root``, read only after W&B's service process has exited
    (``wandb.teardown`` joins it), so no writer holds them open."""
    wandb.teardown()
    return sorted(root.rglob("offline-run-*/*.wandb"))


def _put(into: dict[str, Any], item: Any) -> None:
    """Set one wandb ``key``/``nested_key`` item (its value JSON-encoded) into nested dicts."""
    *path, last = list(item.nested_key) or [item.key]
    for part in path:
        into = into.setdefault(part, {})
    into[last] = json.loads(item.value_json)


def read_run(path: Path) -> dict[str, Any]:
    """A run as W&B would show it: its run record, config, summary and history rows."""
    records = read_wandb_records(path)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds, f"{path}: the run never finished"
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history = []
    for item in run.config.update:
        _put(config, item)
    for r in records:
        kind = r.WhichOneof("record_type")
        for item in r.config.update if kind == "config" else ():
            _put(config, item)
        for item in r.summary.update if kind == "summary" else ():
            _put(summary, item)
        if kind == "history":
            history.append({})
            for item in r.history.item:
                _put(history[-1], item)
    return {"run": run, "config": config, "summary": summary, "history": history}


def tiny_config(**kw: Any) -> RunConfig:
    base = dict(task="copy", model="lstm", sequences=640, eval_every=320, eval_size=8, early_stop=False,
                task_params={"max_length": 3}, model_params={"hidden_size": 16})
    return RunConfig(**{**base, **kw})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- through the trainer --------------------------------------------------------------------------
def test_offline_round_trip(tmp_path):
    cfg = tiny_config()
    result = train(cfg, tmp_path / "runs", wandb_mode=None)  # default mode is offline
    assert result["status"] == "ok"
    files = closed_logs(tmp_path / "runs")
    assert len(files) == 1, "one offline W&B run was written"
    got = read_run(files[0])
    run = got["run"]
    assert run.run_group == "default/copy/lstm", "W&B groups one model on one task across seeds"
    assert run.job_type == "train" and set(run.tags) == {"copy", "lstm"}
    assert run.display_name == "copy/lstm/seed-0"
    config = got["config"]
    assert config["optim"]["lr"] == cfg.optim()["lr"] is not None
    assert config["model_size"]["trainable_params"] == result["trainable_params"] > 0
    summary = got["summary"]
    assert summary["status"] == "ok"
    assert summary["sequences_seen"] == 640
    assert summary["final/train/bit_errors"] == pytest.approx(result["final"]["train"]["bit_errors"])
    history = got["history"]
    evals = [h for h in history if "eval/train/cost" in h]
    assert [h["sequences"] for h in evals] == [0, 320, 640]
    assert any("example" in h for h in history), "the output-vs-target picture was logged"
    assert any("eval/by_length" in h for h in history), "the per-length table was logged"
    assert "curves/cost" in got["config"]["_wandb"]["visualize"], "the learning curves were logged as a chart"


def test_trainer_logs_training_and_the_resolved_config(tmp_path):
    cfg = tiny_config()
    result = train(cfg, tmp_path / "runs", wandb_mode="offline")
    assert result["status"] == "ok"
    (path,) = closed_logs(tmp_path / "runs")
    got = read_run(path)
    stored = json.loads((R.run_dir(tmp_path / "runs", "default", "copy", "lstm", 0) / "config.json").read_text())
    config = got["config"]
    for key in ("run", "optim", "task_params", "model_config", "versions", "eval_hashes", "git_commit", "device"):
        assert config[key] == stored[key], f"W&B config {key} is what config.json records"
    assert config["model_config"]["hidden_size"] == 16
    assert config["device"] == "cpu"
    train_rows = [h for h in got["history"] if "train/loss" in h]
    assert train_rows, "training loss logged as training goes"
    for row in train_rows:
        assert {"sequences", "train/lr", "train/grad_norm"} <= set(row)
        assert row["train/lr"] == pytest.approx(cfg.optim()["lr"])


def test_force_gives_a_fresh_run_id(tmp_path):
    cfg = tiny_config(sequences=64, eval_every=64)
    train(cfg, tmp_path / "runs", wandb_mode="offline")
    (first,) = [read_run(p)["run"].run_id for p in closed_logs(tmp_path / "runs")]
    train(cfg, tmp_path / "runs", wandb_mode="offline", force=True)
    (second,) = [read_run(p)["run"].run_id for p in closed_logs(tmp_path / "runs")]
    assert second != first, "W&B would merge the replaced run and the new one (online, or by wandb sync)"


# --- WandbRun on its own ---------------------------------------------------------------------------
def test_wandb_run_logs_training_evaluation_and_resolved_config(tmp_path):
    cfg = tiny_config()
    task, run_dir = make_task(cfg), tmp_path / "run"
    model = make_model(cfg, task)
    resolved = {
        "run": cfg.to_dict(), "optim": cfg.optim(), "task_params": task.params(),
        "model_config": {"hidden_size": 16, "num_layers": 1}, "budget": None,
        "versions": {"memtasks": "0.1.0", "torch": torch.__version__}, "eval_hashes": {"train": "abc"},
        "git_commit": "0123abcd", "device": "cpu", "device_name": "x86_64", "threads": 1,
    }
    wb = WandbRun.start(cfg, run_dir, "offline", resolved=resolved)
    train_rows = [{"sequences": 32 * i, "step": i, "loss": 1.0 / i, "lr": 1e-3, "grad_norm": 0.5 * i} for i in range(1, 5)]
    eval_rows = [
        {"sequences": s, "step": s // 32, "train_time_s": 0.1 * s, "wall_time_s": 0.1 * s, "curriculum": [1, 3],
         "metrics": {"train": {"cost": 3.0 - s / 64, "bit_errors": 1.0}, "30": {"cost": 5.0 - s / 64, "bit_errors": 2.0}}}
        for s in (0, 64, 128)
    ]
    for row in train_rows[:2]:
        wb.log_train(row)
    wb.log_eval(eval_rows[0])
    for row in train_rows[2:]:
        wb.log_train(row)
    for row in eval_rows:
        R.append_jsonl(run_dir / "metrics.jsonl", row)
    wb.log_eval(eval_rows[1])
    wb.log_eval(eval_rows[2])
    result = {"status": "diverged", "sequences_seen": 128, "trainable_params": 7, "total_params": 9, "state_size": 32,
              "final": eval_rows[2]["metrics"]}
    wb.finish(result, model, task, torch.device("cpu"))

    (path,) = closed_logs(run_dir)
    got = read_run(path)
    assert {k: got["config"][k] for k in resolved} == json.loads(json.dumps(resolved))
    assert got["config"]["model_size"] == {"trainable_params": 7, "total_params": 9, "state_size": 32}
    logged = [h for h in got["history"] if "train/loss" in h]
    assert [(h["sequences"], h["train/step"], h["train/loss"], h["train/lr"], h["train/grad_norm"]) for h in logged] == [
        (r["sequences"], r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in train_rows
    ]
    evals = [h for h in got["history"] if "eval/30/cost" in h]
    assert [(h["sequences"], h["eval/30/cost"]) for h in evals] == [(0, 5.0), (64, 4.0), (128, 3.0)]
    end = next(h for h in got["history"] if "eval/by_length" in h)
    assert end["eval/by_length"]["_type"] == "table-file"
    charts = got["config"]["_wandb"]["visualize"]
    for name in ("cost", "bit_errors"):  # one learning-curve chart per metric, a line per length
        assert charts[f"curves/{name}"]["panel_config"]["panelDefId"] == "wandb/lineseries/v0"
        assert end[f"curves/{name}_table"]["_type"] == "table-file"
    assert "example" not in end, "no picture of a diverged run"
    table = json.loads(next(run_dir.rglob("media/table/eval/by_length_*.table.json")).read_text())
    assert table["columns"] == ["eval", "length", "bit_errors", "cost"]
    assert table["data"] == [["train", None, 1.0, 1.0], ["30", 30, 2.0, 3.0]]
    assert got["summary"]["status"] == "diverged" and got["summary"]["final/30/cost"] == 3.0


def test_fresh_id_and_resume(tmp_path):
    cfg, run_dir = tiny_config(), tmp_path / "run"

    def start_finish(**kw: Any) -> str:
        wb = WandbRun.start(cfg, run_dir, "offline", **kw)
        rid = wb.run.id
        wb.run.finish()
        return rid

    first = start_finish()
    assert first == wandb_log.run_id(cfg, tmp_path / "elsewhere", resume=False, fresh_id=False), "the base id"
    fresh = start_finish(fresh_id=True)
    assert fresh != first and fresh.startswith(first + "-")
    assert start_finish(resume=True) == fresh, "a resumed run continues the recorded id"
    fresher = start_finish(fresh_id=True)
    assert fresher not in (first, fresh), "a fresh id never reuses an earlier one"
    assert start_finish() not in (first, fresh, fresher), "a restart from scratch is a new W&B run"
    ids = [read_run(p)["run"].run_id for p in closed_logs(run_dir)]
    assert len(ids) == 5 and len(set(ids)) == 4, "only the resumed run shares an id"


def test_online_without_network_falls_back_to_offline(tmp_path, monkeypatch):
    """An API key and no server: the run logs offline, within the documented bound."""
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(wandb_log, "ONLINE_TIMEOUT_S", 3.0)  # the test's bound; the mechanism is the same
    cfg = tiny_config()
    t0 = time.monotonic()
    wb = WandbRun.start(cfg, tmp_path / "a", "online")
    elapsed = time.monotonic() - t0
    assert wb.run.settings._offline, "fell back to an offline run"
    assert wandb_log.ONLINE_TIMEOUT_S <= elapsed < wandb_log.ONLINE_TIMEOUT_S + 10 + 15, elapsed
    wb.log_eval({"sequences": 0, "train_time_s": 0.0, "metrics": {"train": {"cost": 1.0}}})
    wb.run.finish()
    assert not list((tmp_path / "a" / "wandb").glob("run-*")), "the failed online attempt leaves nothing to sync"

    t0 = time.monotonic()
    wb = WandbRun.start(tiny_config(seed=1), tmp_path / "b", "online")
    assert wb.run.settings._offline and time.monotonic() - t0 < wandb_log.ONLINE_TIMEOUT_S, "no second wait"
    wb.run.finish()

    (path,) = closed_logs(tmp_path / "a")
    got = read_run(path)
    assert got["run"].run_id == wandb_log.run_id(cfg, tmp_path / "elsewhere", resume=False, fresh_id=False)
    assert [h["eval/train/cost"] for h in got["history"] if "eval/train/cost" in h] == [1.0]


def test_an_interrupted_run_is_marked_preempted_and_resumes_under_its_id(tmp_path):
    cfg, run_dir = tiny_config(), tmp_path / "run"
    wb = WandbRun.start(cfg, run_dir, "offline")
    wb.log_train({"sequences": 32, "step": 1, "loss": 0.5, "lr": 1e-3, "grad_norm": 1.0})
    wb.abandon()
    (first,) = closed_logs(run_dir)
    kinds = [r.WhichOneof("record_type") for r in read_wandb_records(first)]
    assert "preempting" in kinds
    assert next(r.exit for r in read_wandb_records(first) if r.WhichOneof("record_type") == "exit").exit_code == 1
    wb = WandbRun.start(cfg, run_dir, "offline", resume=True)
    wb.log_train({"sequences": 64, "step": 2, "loss": 0.25, "lr": 1e-3, "grad_norm": 1.0})
    wb.run.finish()
    runs = [read_run(p) for p in closed_logs(run_dir)]
    assert len(runs) == 2 and runs[0]["run"].run_id == runs[1]["run"].run_id, "the resume continues the W&B run"
    assert [h["train/loss"] for r in runs for h in r["history"] if "train/loss" in h] == [0.5, 0.25]


def test_compare_logs_its_figures_and_table(tmp_path):
    """``memtasks compare`` in a fresh interpreter (nothing imported beforehand, as for a user)
    logs every figure it draws and the aggregate table to an offline W&B run."""
    import os
    import subprocess
    import sys

    fixture = Path(__file__).parent / "fixtures" / "runs"
    out = tmp_path / "cmp"
    env = {**os.environ, "HOME": str(tmp_path / "home"), "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, "-m", "memtasks", "compare", "lstm", "gru", "--task", "copy", "--runs-dir",
                           str(fixture), "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "W&B logging of the comparison failed" not in done.stderr, done.stderr
    (log,) = closed_logs(out)
    run = read_run(log)
    logged = {k: v for row in run["history"] for k, v in row.items() if not k.startswith("_")}
    drawn = {f"{p.stem.split('_', 1)[0]}/copy" for p in out.glob("*_copy.png")}
    assert drawn and drawn <= set(logged), (drawn, sorted(logged))
    assert all(logged[k]["_type"] == "image-file" for k in drawn)
    assert logged["aggregate"]["_type"] == "table-file"

"""The real wandb library, offline, in a temp dir: the logged run is read back from its
transaction log with wandb's own protobuf schema."""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from memtasks.train.config import RunConfig
from memtasks.train.trainer import train

BLOCK = 32 * 1024
HEADER = 7  # ":W&B", 2-byte magic, 1-byte version


def read_wandb_records(path: Path) -> list:
    """Decode a .wandb file: LevelDB-style log blocks carrying wandb ``Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            break
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(pending)
            records.append(rec)
            pending = b""
    return records


def _key(item) -> str:
    return item.key or item.nested_key[0]


def test_offline_round_trip(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = RunConfig(
        task="copy", model="lstm", sequences=640, eval_every=320, eval_size=8, early_stop=False,
        task_params={"max_length": 3}, model_params={"hidden_size": 16},
    )
    result = train(cfg, tmp_path / "runs", wandb_mode=None)  # default mode is offline
    assert result["status"] == "ok"
    files = list((tmp_path / "runs").rglob("offline-run-*/*.wandb"))
    assert len(files) == 1, "one offline W&B run was written"
    # wandb's service process may still be flushing the log when finish() returns under load
    deadline = time.monotonic() + 30
    while True:
        records = read_wandb_records(files[0])
        done = any(r.WhichOneof("record_type") == "exit" for r in records)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "history" in kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "default" and run.job_type == "copy" and set(run.tags) == {"copy", "lstm"}
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({_key(item): json.loads(item.value_json) for item in r.summary.update})
    assert summary["status"] == "ok"
    assert summary["sequences_seen"] == 640
    assert summary["final/train/bit_errors"] == pytest.approx(result["final"]["train"]["bit_errors"])
    history = [
        {_key(item): json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    evals = [h for h in history if "eval/train/cost" in h]
    assert [h["sequences"] for h in evals] == [0, 320, 640]
    assert any("example" in h for h in history), "the output-vs-target picture was logged"

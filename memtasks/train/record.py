"""The run record on disk: the source of truth for every result.

Layout (documented for users in ``runs/README.md``)::

    runs/<group>/<task>/<model>/seed-<k>/
        config.json      RunConfig + versions, eval-set hashes, device, threads, git commit
        metrics.jsonl    one JSON object per evaluation, appended and flushed
        result.json      written atomically at the end (schema below)
        checkpoint.pt    model, optimiser, step, RNG states (not committed)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "failed")

# result.json: required key -> accepted types
RESULT_SCHEMA: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "status": (str,),
    "task": (str,),
    "model": (str,),
    "seed": (int,),
    "group": (str,),
    "final": (dict,),  # eval label -> {metric: value}
    "sequences_seen": (int,),
    "sequences_to_solve": (int, type(None)),
    "solved": (bool,),
    "trainable_params": (int,),
    "total_params": (int,),
    "state_size": (int,),
    "wall_time_s": (float, int),
    "throughput": (float, int),  # training sequences per second of training time
    "error": (str, type(None)),
    "diverged_at": (dict, type(None)),  # {"step": int, "sequences": int} when diverged
}


class RecordError(ValueError):
    """A run-record file is missing, corrupt or foreign; the message names the file."""


def run_dir(runs_dir: str | Path, group: str, task: str, model: str, seed: int) -> Path:
    return Path(runs_dir) / group / task / model / f"seed-{seed}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a torn last line (a kill mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise RecordError(f"{path}: line {i + 1} is not valid JSON") from None
    return rows


def validate_result(data: Any, path: Path | str = "result.json") -> dict[str, Any]:
    """Check a parsed result.json against the schema; raise ``RecordError`` naming the file."""
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a memtasks result (expected a JSON object)")
    if "schema_version" not in data:
        raise RecordError(f"{path}: not a memtasks result (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise RecordError(f"{path}: schema_version {data['schema_version']!r} is not supported (expected {SCHEMA_VERSION})")
    for key, types in RESULT_SCHEMA.items():
        if key not in data:
            raise RecordError(f"{path}: missing field {key!r}")
        value = data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RecordError(f"{path}: field {key!r} should be {names}, got {type(value).__name__}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{path}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    return data


def read_result(path: Path | str) -> dict[str, Any]:
    """Read and validate a result.json; every problem becomes a ``RecordError`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: corrupt JSON ({exc.msg} at line {exc.lineno})") from None
    return validate_result(data, path)

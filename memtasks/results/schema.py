"""The run result (``result.json``): the one definition of every field the trainer writes and
every reader reads.

:class:`RunResult` lists the fields, their types and their meaning; :func:`validate_result`
checks a parsed file against it. Fields with a default are optional: records written before
they existed still read (every record of schema version 1 is readable). A field the schema does
not know is an error, so a new field is added here, in ``runs/README.md`` (a test keeps the two
in step), and nowhere else.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

from memtasks.results.errors import RecordError

SCHEMA_VERSION = 1
STATUSES = ("ok", "diverged", "failed")
FINAL_STATUSES = ("ok", "diverged")  # a failed run is retried; these never re-run without --force

Metrics = dict[str, dict[str, float]]  # eval label ("train", "30", "repeats=20") -> metric -> value


def _doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(frozen=True)
class RunResult:
    """One run's outcome, as stored in ``runs/<group>/<task>/<model>/seed-<k>/result.json``."""

    schema_version: int = _doc("the version of this schema the record follows")
    status: str = _doc("ok, diverged (a NaN/inf loss or gradient stopped training) or failed")
    task: str = _doc("the cell: task name")
    model: str = _doc("the cell: model name")
    seed: int = _doc("the cell: seed")
    group: str = _doc("the cell: group (the folder under runs/)")
    final: Metrics = _doc("the last evaluation, label -> metric -> value (diverged: the last good one)")
    sequences_seen: int = _doc("training sequences consumed")
    sequences_to_solve: int | None = _doc("sequences seen at the first evaluation that met the solved threshold")
    solved: bool = _doc("the final evaluation meets the task's solved threshold")
    trainable_params: int = _doc("trainable parameters")
    total_params: int = _doc("all parameters, fixed ones (ESN reservoir) included")
    state_size: int = _doc("floats of recurrent state per sequence")
    wall_time_s: float = _doc("seconds, the whole run")
    throughput: float = _doc("training sequences per second of training time")
    error: str | None = _doc("why it failed or diverged")
    diverged_at: dict[str, int] | None = _doc("{step, sequences} where it diverged")
    finished_at: str | None = _doc("ISO-8601 UTC time the record was written", default=None)
    stopped_early: bool | None = _doc("stopped after `patience` solved evaluations in a row", default=None)
    train_time_s: float | None = _doc("seconds of training steps only", default=None)
    budget: dict[str, Any] | None = _doc("the parameter-budget choice, as in config.json", default=None)
    fit: dict[str, Any] | None = _doc("closed-form models (ESN): the ridge regulariser chosen and its loss", default=None)
    stop_reason: str | None = _doc(
        "why training ended: budget, solved (patience evaluations solved in a row), plateaued "
        "(no improvement for plateau_patience evaluations), diverged or failed", default=None)
    collapse: dict[str, Any] | None = _doc(
        "set when the run was solved or near it and fell back toward its starting value: "
        "{metric, best, best_at, final, start}", default=None)

    @classmethod
    def from_dict(cls, data: Any, path: Path | str = "result.json") -> "RunResult":
        """Validate a parsed ``result.json`` and build the record; ``RecordError`` names the file."""
        validate_result(data, path)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def closed_form(self) -> bool:
        """Fitted in one step (no learning curve): the ESN."""
        return self.fit is not None


@lru_cache(maxsize=1)
def _accepted() -> dict[str, tuple[tuple[type, ...], bool]]:
    """Field name -> (accepted JSON types, required), from :class:`RunResult`'s annotations."""
    hints = typing.get_type_hints(RunResult)
    out: dict[str, tuple[tuple[type, ...], bool]] = {}
    for f in dataclasses.fields(RunResult):
        tp = hints[f.name]
        union = isinstance(tp, types.UnionType) or typing.get_origin(tp) is Union
        kinds = tuple(typing.get_origin(a) or a for a in (typing.get_args(tp) if union else (tp,)))
        if float in kinds:
            kinds += (int,)  # JSON writes 3.0 as 3 in other tools
        out[f.name] = (kinds, f.default is dataclasses.MISSING)
    return out


def field_docs() -> dict[str, str]:
    """Field name -> its meaning (for documentation and its test)."""
    return {f.name: f.metadata["doc"] for f in dataclasses.fields(RunResult)}


def _type_names(kinds: tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys("null" if t is type(None) else t.__name__ for t in kinds))


def validate_result(data: Any, path: Path | str = "result.json") -> dict[str, Any]:
    """Check a parsed ``result.json`` against :class:`RunResult`; raise ``RecordError`` naming the file."""
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a memtasks result (expected a JSON object)")
    if "schema_version" not in data:
        raise RecordError(f"{path}: not a memtasks result (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise RecordError(
            f"{path}: schema_version {data['schema_version']!r} is not supported (expected {SCHEMA_VERSION}); "
            "read it with the memtasks version that wrote it"
        )
    accepted = _accepted()
    unknown = sorted(set(data) - set(accepted))
    if unknown:
        raise RecordError(f"{path}: unknown field(s) {', '.join(map(repr, unknown))} for schema_version {SCHEMA_VERSION}; "
                          f"known fields: {', '.join(accepted)}")
    for key, (kinds, required) in accepted.items():
        if key not in data:
            if required:
                raise RecordError(f"{path}: missing field {key!r}")
            continue
        value = data[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise RecordError(f"{path}: field {key!r} should be {_type_names(kinds)}, got {type(value).__name__}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{path}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
    for label, metrics in data["final"].items():
        if not isinstance(metrics, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in metrics.values()
        ):
            raise RecordError(f"{path}: final[{label!r}] should map metric names to numbers")
    return data

"""Run records on disk: where they live, how they are written and read, and the table of them.

Layout (documented for users in ``runs/README.md``)::

    runs/<group>/<task>/<model>/seed-<k>/
        config.json      RunConfig + versions, eval-set hashes, device, threads, git commit
        metrics.jsonl    one JSON object per evaluation, appended and flushed
        result.json      written atomically at the end (:class:`~memtasks.results.schema.RunResult`)
        checkpoint.pt    model, optimiser, step, RNG states (not committed)

Every file memtasks writes whole goes through :func:`write_text_atomic`; whether a run is
finished is decided by :func:`finished_status` alone. pandas is imported by :func:`collect`
only, so the trainer can use this module without it.
"""
from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from memtasks.results.errors import NoRecordsError, RecordError, ResultsError
from memtasks.results.schema import FINAL_STATUSES, SCHEMA_VERSION, STATUSES, RunResult, validate_result

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION", "STATUSES", "RecordError", "RunResult", "append_jsonl", "collect", "eval_rows",
    "export_table", "finished_result", "finished_status", "is_finished", "label_key", "matrix_presets", "read_jsonl",
    "read_result", "run_dir", "task_instance", "validate_result", "write_json_atomic", "write_text_atomic",
]

BASE_COLUMNS = (
    "group", "task", "model", "seed", "status", "solved", "sequences_seen", "sequences_to_solve",
    "trainable_params", "total_params", "state_size", "wall_time_s", "throughput", "finished_at", "error",
    "closed_form", "budget", "device", "device_name", "memtasks_version", "torch_version", "python_version",
    "git_commit", "task_params", "train_lo", "train_hi", "runs_dir", "path",
    "batch_size", "eval_size", "stopped_early", "updates_seen", "updates_to_solve",
    "curve_evals", "curve_auc", "curve_two_thirds", "curve_final", "tuned", "longest_solved", "curriculum_hi",
)
CURVE_METRICS = ("cost", "mse")  # the learning curve follows the first of these the train label has


# --- paths and writing -------------------------------------------------------------------------
def run_dir(runs_dir: str | Path, group: str, task: str, model: str, seed: int) -> Path:
    return Path(runs_dir) / group / task / model / f"seed-{seed}"


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A reader sees the old file or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide records from colleagues
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path | str, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- reading -----------------------------------------------------------------------------------
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


def eval_rows(folder: Path) -> list[dict[str, Any]]:
    """The evaluation rows of the run in ``folder`` (events such as curriculum steps left out)."""
    return [r for r in read_jsonl(Path(folder) / "metrics.jsonl") if "event" not in r]


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


# --- is this run finished -------------------------------------------------------------------------
def finished_result(folder: Path | str) -> dict[str, Any] | None:
    """The record of the run in ``folder`` if it is final (status ok or diverged), else None.

    None when there is no ``result.json`` or the run failed (a failed run is retried). A corrupt
    record raises ``RecordError``: the caller decides whether to stop or to run it again.
    """
    path = Path(folder) / "result.json"
    if not path.exists():
        return None
    result = read_result(path)
    return result if result["status"] in FINAL_STATUSES else None


def finished_status(folder: Path | str) -> str | None:
    """``ok``/``diverged`` when the run in ``folder`` is final; None when it must (re)run.

    An unreadable record counts as unfinished: running it again replaces it (or reports why not).
    """
    try:
        result = finished_result(folder)
    except RecordError:
        return None
    return None if result is None else str(result["status"])


def is_finished(folder: Path | str) -> bool:
    return finished_status(folder) is not None


# --- the table of records ---------------------------------------------------------------------
def label_key(label: str) -> tuple[int, int, str]:
    """Eval labels in reading order: "train", lengths ascending, then override points."""
    if label == "train":
        return (0, 0, "")
    if label.isdigit():
        return (1, int(label), "")
    return (2, 0, label)


@lru_cache(maxsize=256)
def task_instance(task: str, params_json: str) -> Any | None:
    """The task a record ran (``params_json``: its ``task_params``), or None if it cannot be built."""
    from memtasks.tasks import get_task

    try:
        params = json.loads(params_json)
        frozen = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}  # JSON gave lists
        return get_task(task, **frozen)
    except Exception:  # unknown task (a plugin not loaded) or parameters of another version
        return None


def _train_range(task: str, params_json: str) -> tuple[float, float]:
    instance = task_instance(task, params_json)
    if instance is None:
        return float("nan"), float("nan")
    lo, hi = instance.train_range
    return float(lo), float(hi)


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.exists():
        return {}, f"{path}: missing; this run's hardware, versions and budget are unknown"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return {}, f"{path}: unreadable ({exc}); this run's hardware, versions and budget are unknown"
    return data, None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tuned(config: dict[str, Any], tuning: Path) -> str | None:
    """``"<knob> <value>"``: the tuned hyper-parameter (named by the matrix's ``tuning.json`` beside
    the seeds) at the value this run's own config says it trained with; None when not tuned."""
    try:
        knob = json.loads(tuning.read_text())["knob"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    value = _dict(config.get("optim")).get("lr") if knob == "lr" else _dict(config.get("model_config")).get(knob)
    if value is None:
        return None
    return f"{knob} {value:g}" if isinstance(value, float) else f"{knob} {value}"


def _int_or_nan(value: Any) -> float:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else float("nan")


def _curve(result: RunResult, budget: float, batch: float, warnings: list[str], path: Path,
           grow: bool) -> dict[str, Any]:
    """Per-run columns from ``metrics.jsonl``: updates, and the learning curve's summary (:mod:`stats`).

    Updates to solve: the ``step`` of the evaluation at ``sequences_to_solve``, else those
    sequences / batch size; updates seen likewise from the last evaluation or ``sequences_seen``.
    With a ``grow`` curriculum, the upper end of its range at the last evaluation.
    """
    from memtasks.results.stats import curve_summary

    try:
        rows = eval_rows(path.parent)
    except RecordError as exc:
        warnings.append(f"{exc}; its learning curve is left out")
        rows = []
    steps = {r.get("sequences"): r.get("step") for r in rows if isinstance(r.get("step"), int)}
    per_update = batch if batch > 0 else float("nan")
    to_solve = result.sequences_to_solve
    out: dict[str, Any] = {
        "updates_seen": float(steps.get(result.sequences_seen, result.sequences_seen / per_update)),
        "updates_to_solve": float("nan") if to_solve is None else float(steps.get(to_solve, to_solve / per_update)),
    }
    train = [(r.get("sequences"), _dict(_dict(r.get("metrics")).get("train"))) for r in rows]
    metric = next((m for m in CURVE_METRICS if any(m in t for _, t in train)), None)
    points = [(float(s), float(t[metric])) for s, t in train
              if metric and isinstance(s, (int, float)) and isinstance(t.get(metric), (int, float))]
    curve = curve_summary([p[0] for p in points], [p[1] for p in points], budget)
    out.update(curve_evals=curve.evals, curve_auc=curve.auc, curve_two_thirds=curve.at_two_thirds,
               curve_final=curve.final)
    ranges = [r["curriculum"] for r in rows if isinstance(r.get("curriculum"), list) and len(r["curriculum"]) == 2]
    out["curriculum_hi"] = float(ranges[-1][1]) if grow and ranges else float("nan")
    return out


def longest_solved(result: RunResult, task: Any) -> float:
    """The longest length up to which the run is solved at the end: the training range's longest
    length when it is solved there, extended through each longer evaluated length (ascending) that
    is solved too; 0 when the training range is not solved; nan when the task is unknown. Points
    with sample overrides (e.g. repeat copy's repeats) are not lengths and are left out."""
    if task is None:
        return float("nan")
    final = result.final or {}
    train = final.get("train") or {}
    if not isinstance(train.get(task.solved_metric), (int, float)) or not task.is_solved(train):
        return 0.0
    longest = float(task.train_range[1])
    for label in sorted((k for k in final if k.isdigit()), key=int):
        metrics = final[label] or {}
        if not isinstance(metrics.get(task.solved_metric), (int, float)) or not task.is_solved(metrics):
            break
        longest = max(longest, float(label))
    return longest


def _row(result: RunResult, config: dict[str, Any], runs_dir: Path, path: Path,
         warnings: list[str]) -> dict[str, Any]:
    run, versions = _dict(config.get("run")), _dict(config.get("versions"))
    params = _dict(run.get("task_params"))
    stsolve = result.sequences_to_solve
    row: dict[str, Any] = {
        **{k: getattr(result, k) for k in ("group", "task", "model", "seed", "status", "solved", "sequences_seen",
                                           "trainable_params", "total_params", "state_size", "wall_time_s",
                                           "throughput", "finished_at")},
        "sequences_to_solve": float("nan") if stsolve is None else float(stsolve),
        "error": result.error.splitlines()[0] if result.error else None,
        "closed_form": result.closed_form,
        "budget": float(run["sequences"]) if isinstance(run.get("sequences"), int) else float("nan"),
        "device": config.get("device"),
        "device_name": config.get("device_name"),
        "memtasks_version": versions.get("memtasks"),
        "torch_version": versions.get("torch"),
        "python_version": versions.get("python"),
        "git_commit": config.get("git_commit"),
        "task_params": json.dumps(params, sort_keys=True),
        "runs_dir": str(runs_dir),
        "path": str(path),
    }
    row["train_lo"], row["train_hi"] = _train_range(result.task, row["task_params"])
    row["batch_size"], row["eval_size"] = _int_or_nan(run.get("batch_size")), _int_or_nan(run.get("eval_size"))
    row["stopped_early"] = bool(result.stopped_early)
    row["tuned"] = _tuned(config, path.parent.parent / "tuning.json")
    row.update(_curve(result, row["budget"], row["batch_size"], warnings, path, run.get("curriculum") == "grow"))
    row["longest_solved"] = longest_solved(result, task_instance(result.task, row["task_params"]))
    for label, metrics in result.final.items():
        for name, value in (metrics or {}).items():
            row[f"{label}/{name}"] = float(value) if isinstance(value, (int, float)) else float("nan")
    return row


def _records(runs_dirs: list[Path], groups: list[str] | None, warnings: list[str]) -> Iterable[dict[str, Any]]:
    seen: dict[tuple[str, str, str, int], str] = {}
    for runs_dir in runs_dirs:
        for path in sorted(runs_dir.rglob("result.json")):
            try:
                result = RunResult.from_dict(read_result(path), path)
            except RecordError as exc:
                warnings.append(f"skipped {exc}")
                continue
            if groups and result.group not in groups:
                continue
            key = (result.group, result.task, result.model, result.seed)
            folder = path.parent.relative_to(runs_dir).parts
            if len(folder) == 4 and folder != (result.group, result.task, result.model, f"seed-{result.seed}"):
                warnings.append(f"skipped {path}: the record says {result.group}/{result.task}/{result.model}/"
                                f"seed-{result.seed} but lies in {'/'.join(folder)} (copied or moved by hand?)")
                continue
            if key in seen:
                warnings.append(f"skipped {path}: duplicate of {seen[key]} (same group, task, model and seed)")
                continue
            seen[key] = str(path)
            config, problem = _read_config(path.parent / "config.json")
            if problem:
                warnings.append(problem)
            yield _row(result, config, runs_dir, path, warnings)


def collect(runs_dirs: Iterable[Path | str], groups: Iterable[str] | None = None) -> tuple["pd.DataFrame", list[str]]:
    """Every run record under ``runs_dirs`` (optionally only ``groups``): one row per run.

    Returns the table and warnings, one per skipped or incomplete file, each naming it. Columns:
    :data:`BASE_COLUMNS`, then the final metrics flattened to ``"<label>/<metric>"`` (e.g.
    ``train/cost``, ``30/seq_accuracy``) in reading order. Rows are sorted by group, task, model
    and seed. A bad record is skipped with a warning; a runs folder that does not exist raises
    :class:`NoRecordsError`. An empty table is returned as such (the caller decides).
    """
    import pandas as pd

    dirs = [Path(d) for d in runs_dirs]
    groups = list(groups) if groups else None
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise NoRecordsError(f"{d}: is a file, not a folder; give the folder that holds <group>/<task>/<model>/seed-<k>/")
        if not d.is_dir():
            raise NoRecordsError(f"{d}: no such runs folder; give the folder that holds <group>/<task>/<model>/seed-<k>/ "
                                 "(memtasks train and memtasks matrix write to runs/ by default)")
    warnings: list[str] = []
    rows = list(_records(dirs, groups, warnings))
    for group in groups or ():
        if not any(r["group"] == group for r in rows):
            warnings.append(f"group {group!r}: no run records under {', '.join(map(str, dirs))}")
    df = pd.DataFrame(rows)
    metric_cols = sorted({c for r in rows for c in r if "/" in c},
                         key=lambda c: (label_key(c.rsplit("/", 1)[0]), c.rsplit("/", 1)[1]))
    df = df.reindex(columns=[*BASE_COLUMNS, *metric_cols])
    if not df.empty:
        df = df.sort_values(["group", "task", "model", "seed", "path"], kind="stable").reset_index(drop=True)
    return df, warnings


def matrix_presets(runs_dirs: Iterable[Path | str], groups: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """``{group: preset name}`` from each ``<runs_dir>/<group>/matrix.json`` present, and warnings."""
    presets: dict[str, str] = {}
    warnings: list[str] = []
    for runs_dir in map(Path, runs_dirs):
        for group in sorted(groups):
            path = runs_dir / group / "matrix.json"
            if not path.exists() or group in presets:
                continue
            try:
                presets[group] = str(json.loads(path.read_text())["preset"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                warnings.append(f"{path}: not a matrix record ({type(exc).__name__}: {exc}); preset unknown")
    return presets, warnings


def export_table(df: "pd.DataFrame", path: Path | str) -> Path:
    """Write the collected table as CSV (``.csv``) or JSON records (``.json``), chosen by the suffix.

    JSON is a list of objects, one per run, missing values as null; both are written atomically.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = df.to_csv(index=False)
    elif suffix == ".json":
        text = df.to_json(orient="records", indent=1, force_ascii=False) + "\n"
    else:
        raise ResultsError(f"{path}: cannot tell the table's format from the suffix {path.suffix or '(none)'!r}; "
                           "name the file .csv or .json")
    write_text_atomic(path, text)
    return path

"""memtasks.results: the record schema, the store, group policy, exports, one aggregation, figures."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from memtasks.results import schema, store
from memtasks.results.aggregate import metric_stats, summarise, with_entries
from memtasks.results.comparison import build_comparison, compare
from memtasks.results.errors import MixedGroupsError, NoRecordsError, OverwriteError, RecordError, ResultsError
from memtasks.results.leaderboard import build_leaderboard, write_leaderboard
from memtasks.results.markdown import leaderboard_groups
from memtasks.results.plots import CLIP_FACTOR, generalisation_figure, learning_figure, save_figure

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "runs"


def write_run(root: Path, group: str, task: str, model: str, seed: int, final: dict[str, dict[str, float]], *,
              status: str = "ok", solved: bool = False, fit: dict[str, Any] | None = None,
              curve: list[tuple[int, float]] | None = None, metric: str = "cost", params: int = 10) -> Path:
    """One run folder with result.json, config.json and (given ``curve``) metrics.jsonl."""
    d = store.run_dir(root, group, task, model, seed)
    d.mkdir(parents=True)
    result: dict[str, Any] = {
        "schema_version": 1, "status": status, "task": task, "model": model, "seed": seed, "group": group,
        "final": final, "sequences_seen": 1000, "sequences_to_solve": 500 if solved else None, "solved": solved,
        "trainable_params": params, "total_params": params, "state_size": 4, "wall_time_s": 1.0, "throughput": 100.0,
        "error": None if status == "ok" else "boom", "diverged_at": None, "finished_at": "2024-01-01T00:00:00Z",
    }
    if fit is not None:
        result["fit"] = fit
    store.write_json_atomic(d / "result.json", result)
    config = {"run": {"sequences": 1000, "batch_size": 10, "eval_size": 16, "task_params": {}}, "device": "cpu",
              "versions": {"memtasks": "0.1.0"}}
    store.write_json_atomic(d / "config.json", config)
    for seqs, value in curve or ():
        store.append_jsonl(d / "metrics.jsonl", {"sequences": seqs, "step": 1, "metrics": {"train": {metric: value}}})
    return d


def bce(cost: float, acc: float) -> dict[str, dict[str, float]]:
    return {"train": {"cost": cost, "bit_errors": 1.0 - acc, "seq_accuracy": acc}, "30": {"cost": 9.0, "seq_accuracy": acc / 2}}


# --- schema --------------------------------------------------------------------------------------
def test_every_committed_record_reads() -> None:
    paths = sorted((ROOT / "runs").rglob("result.json")) + sorted(FIXTURES.rglob("result.json"))
    assert paths
    for path in paths:
        record = schema.RunResult.from_dict(store.read_result(path), path)
        assert record.schema_version == schema.SCHEMA_VERSION


def test_old_records_without_optional_fields_read_and_unknown_fields_do_not(tmp_path: Path) -> None:
    d = write_run(tmp_path, "g", "copy", "a", 0, bce(1.0, 0.5))
    data = json.loads((d / "result.json").read_text())
    del data["finished_at"]  # written before the field existed
    assert schema.RunResult.from_dict(data).finished_at is None
    with pytest.raises(RecordError, match=r"unknown field\(s\) 'accuracy'"):
        schema.validate_result({**data, "accuracy": 1.0}, "x/result.json")
    with pytest.raises(RecordError, match="x/result.json: field 'seed' should be int, got str"):
        schema.validate_result({**data, "seed": "0"}, "x/result.json")
    with pytest.raises(RecordError, match="missing field 'final'"):
        schema.validate_result({k: v for k, v in data.items() if k != "final"})
    with pytest.raises(RecordError, match=r"final\['train'\] should map metric names to numbers"):
        schema.validate_result({**data, "final": {"train": {"cost": "low"}}})


def test_runs_readme_documents_exactly_the_schema_fields() -> None:
    text = (ROOT / "runs" / "README.md").read_text()
    section = text.split("## result.json", 1)[1]
    documented = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            documented.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    assert documented == set(schema.field_docs())


def test_a_trained_record_has_only_schema_fields(tmp_path: Path) -> None:
    from memtasks.train.config import RunConfig
    from memtasks.train.trainer import train

    config = RunConfig(task="copy", model="esn", sequences=64, batch_size=16, eval_size=8, eval_every=64,
                       task_params={"bits": 2, "max_length": 2, "generalise": (3,)}, model_params={"reservoir_size": 10})
    train(config, tmp_path, wandb_mode="disabled")
    data = json.loads((store.run_dir(tmp_path, "default", "copy", "esn", 0) / "result.json").read_text())
    assert set(data) <= set(schema.field_docs())
    assert schema.RunResult.from_dict(data).closed_form


# --- store ---------------------------------------------------------------------------------------
def test_finished_is_decided_once(tmp_path: Path) -> None:
    ok = write_run(tmp_path, "g", "copy", "a", 0, bce(1.0, 0.5))
    diverged = write_run(tmp_path, "g", "copy", "a", 1, {}, status="diverged")
    failed = write_run(tmp_path, "g", "copy", "a", 2, {}, status="failed")
    corrupt = write_run(tmp_path, "g", "copy", "a", 3, {})
    (corrupt / "result.json").write_text('{"schema_version": 1, ')
    missing = tmp_path / "g" / "copy" / "a" / "seed-9"
    assert [store.finished_status(d) for d in (ok, diverged, failed, corrupt, missing)] == ["ok", "diverged", None, None, None]
    assert store.is_finished(ok) and not store.is_finished(failed)
    assert store.finished_result(failed) is None and store.finished_result(ok)["status"] == "ok"
    with pytest.raises(RecordError, match="corrupt JSON"):
        store.finished_result(corrupt)


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store.write_text_atomic(tmp_path / "sub" / "a.txt", "one")
    store.write_text_atomic(tmp_path / "sub" / "a.txt", "two")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.txt"] and (tmp_path / "sub" / "a.txt").read_text() == "two"


def test_missing_or_empty_runs_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NoRecordsError, match=f"{tmp_path / 'nope'}: no such runs folder"):
        build_leaderboard([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoRecordsError, match="no run records under"):
        build_leaderboard([tmp_path / "empty"])
    with pytest.raises(NoRecordsError, match="no run records under"):
        compare(["a"], [tmp_path / "empty"], None, None, tmp_path / "cmp", "disabled")
    assert issubclass(NoRecordsError, ValueError)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_export_writes_the_collected_table(tmp_path: Path, suffix: str) -> None:
    board = build_leaderboard([FIXTURES])
    path = store.export_table(board.table, tmp_path / f"runs{suffix}")
    back = pd.read_csv(path) if suffix == ".csv" else pd.DataFrame(json.loads(path.read_text()))
    assert len(back) == len(board.table) == 18
    assert list(back.columns) == list(board.table.columns)
    assert "train/cost" in back.columns and back["group"].eq("fixture").all()
    np.testing.assert_allclose(back["train/seq_accuracy"].to_numpy(dtype=float),
                               board.table["train/seq_accuracy"].to_numpy(dtype=float), equal_nan=True)
    with pytest.raises(ResultsError, match=r"runs.txt: .*name the file .csv or .json"):
        store.export_table(board.table, tmp_path / "runs.txt")


# --- groups are never mixed ------------------------------------------------------------------------
@pytest.fixture
def two_groups(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for seed, cost in enumerate((1.0, 3.0)):
        write_run(root, "cpu", "copy", "lstm", seed, bce(cost, 0.5))
        write_run(root, "smoke", "copy", "esn", seed, bce(cost / 10, 0.9))  # better numbers, smaller budget
    return root


def test_leaderboard_ranks_each_group_on_its_own(two_groups: Path) -> None:
    board = build_leaderboard([two_groups])
    assert board.groups == ["cpu", "smoke"]
    cpu, smoke = board.text.split("## Group `cpu`")[1].split("## Group `smoke`")
    assert "| lstm " in cpu and "esn" not in cpu
    assert "| esn " in smoke and "lstm" not in smoke
    assert "(smoke)" not in board.text and "(cpu)" not in board.text
    assert leaderboard_groups(board.text) == {"cpu", "smoke"}
    with pytest.raises(MixedGroupsError, match="cpu, smoke"):
        summarise(board.table)
    single = build_leaderboard([two_groups], ["cpu"])
    assert single.text.startswith("# memtasks leaderboard\n\n- **Runs:**") and "esn" not in single.text


def test_compare_refuses_to_mix_groups(two_groups: Path, tmp_path: Path) -> None:
    with pytest.raises(MixedGroupsError, match=r"several groups \(cpu, smoke\).*--group"):
        compare(["lstm", "esn"], [two_groups], None, None, tmp_path / "cmp", "disabled")
    text, _ = compare(["lstm"], [two_groups], None, ["cpu"], tmp_path / "cmp", "disabled")
    assert "| lstm " in text


def test_leaderboard_is_not_overwritten_by_other_groups(two_groups: Path, tmp_path: Path) -> None:
    out = tmp_path / "leaderboard.md"
    write_leaderboard([two_groups], ["cpu"], out)
    write_leaderboard([two_groups], ["cpu"], out)  # the same groups: rebuilt in place
    with pytest.raises(OverwriteError, match=r"leaderboard of group\(s\) cpu, not cpu, smoke; .*--force"):
        write_leaderboard([two_groups], None, out)
    assert leaderboard_groups(out.read_text()) == {"cpu"}
    write_leaderboard([two_groups], None, out, force=True)
    assert leaderboard_groups(out.read_text()) == {"cpu", "smoke"}
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    with pytest.raises(OverwriteError, match="not a memtasks leaderboard"):
        write_leaderboard([two_groups], ["cpu"], notes)
    assert notes.read_text() == "my notes\n"


# --- one aggregation ---------------------------------------------------------------------------------
def _cells(text: str, entry: str) -> dict[str, str]:
    """The cells of ``entry``'s row in the first table of ``text``, by column header."""
    lines = text.splitlines()
    header = next(x for x in lines if x.startswith("| model "))
    line = next(x for x in lines if x.startswith(f"| {entry} "))
    return dict(zip(*([c.strip() for c in x.strip("|").split("|")] for x in (header, line))))


def test_leaderboard_and_compare_report_the_same_numbers(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    # seed 2 of a has an accuracy but no cost (the old rules disagreed on whether it counts),
    # and a diverged seed still carries the metrics of its last good evaluation.
    write_run(root, "g", "copy", "a", 0, bce(1.0, 0.5))
    write_run(root, "g", "copy", "a", 1, bce(3.0, 0.25), params=12)
    write_run(root, "g", "copy", "a", 2, {"train": {"seq_accuracy": 1.0}})
    write_run(root, "g", "copy", "b", 0, bce(0.5, 1.0))
    write_run(root, "g", "copy", "b", 1, bce(9.0, 0.0), status="diverged")
    board = build_leaderboard([root])
    result = build_comparison(["a", "b"], [root], "copy", None, tmp_path / "cmp", "disabled")
    agg = summarise(board.table).set_index("entry")
    stats = metric_stats(with_entries(board.table)).set_index(["entry", "eval_point", "metric"])
    for entry in ("a", "b"):
        lb = _cells(board.text.split("## copy")[1], entry)
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in result.text.splitlines() if r.startswith("| ")]
        row = {(c[0], c[1]): c[2:] for c in cells}  # (eval point, metric) -> one cell per entry
        col = ["a", "b"].index(entry)
        assert lb["cost (bits/seq) mean ± 95% CI"] == row[("train", "cost (bits/seq)")][col]
        assert lb["seq acc mean ± 95% CI"] == row[("train", "seq accuracy")][col]
        assert lb["params"] == row[("", "trainable params")][col]
        for header, name in (("chance removed", "chance removed"), ("rank", "rank among these"), ("AULC", "AULC"),
                             ("solved", "solved seeds"), ("to solve: seqs (updates)", "to solve: seqs (updates)")):
            assert lb[header] == row[("", name)][col], header
        assert agg.loc[entry, "primary_mean"] == stats.loc[(entry, "train", "cost"), "mean"]
    # 0.5, 0.25 and 1.0: every finished seed with an accuracy; 95% CI t(0.975, 2)·0.3819/√3 = 0.949
    assert _cells(board.text, "a")["seq acc mean ± 95% CI"] == "58.3 ± 94.9%"
    assert _cells(board.text, "b")["cost (bits/seq) mean ± 95% CI"] == "0.500 (n=1)"  # the diverged seed is not averaged in
    assert agg.loc["a", "chance"] == agg.loc["b", "chance"] > 10  # copy's chance on the 16 evaluation sequences


# --- figures ---------------------------------------------------------------------------------------
def _figure_for(root: Path, task: str, kind: str) -> Any:
    df, _ = store.collect([root])
    df = with_entries(df[df["task"] == task])
    entries = sorted(df["entry"].unique())
    make = learning_figure if kind == "learning" else generalisation_figure
    return make(task, df, entries, "mse" if task == "adding" else "cost")


def _labels(fig: Any) -> list[str]:
    return [line.get_label() for line in fig.axes[0].lines]


def test_closed_form_model_is_drawn_as_a_level(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "g", "delayed_xor", "esn", seed, {"train": {"cost": 1.05}}, fit={"ridge": 1e-3},
                  curve=[(1000, 1.04 + seed / 100)])
        write_run(root, "g", "delayed_xor", "lstm", seed, {"train": {"cost": 1.0}},
                  curve=[(0, 1.001), (500, 1.0), (1000, 1.002)])
    fig = _figure_for(root, "delayed_xor", "learning")
    ax = fig.axes[0]
    esn = next(line for line in ax.lines if line.get_label() == "esn (n=2, closed-form fit)")
    assert esn.get_linestyle() == "--" and np.allclose(esn.get_ydata(), 1.045)  # a level line across the axes
    assert ax.get_yscale() == "linear"  # 1.0 to 1.05: no log axis
    fig.canvas.draw()
    assert not any("times" in t.get_text() or "10^" in t.get_text() for t in ax.get_yticklabels())
    chance = next(line for line in ax.lines if line.get_label().startswith("chance"))
    assert np.allclose(chance.get_ydata(), 1.0)  # one scored bit, guessed


def test_exploded_runs_are_clipped_on_a_log_axis(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        write_run(root, "g", "adding", "indrnn", seed, {"train": {"mse": 0.005}, "200": {"mse": 0.5}, "1000": {"mse": 4e8}})
        write_run(root, "g", "adding", "lstm", seed, {"train": {"mse": 0.17}, "200": {"mse": 0.17}, "1000": {"mse": 0.17}})
    fig = _figure_for(root, "adding", "generalisation")
    ax = fig.axes[0]
    ceiling = CLIP_FACTOR * 2 / 12
    assert ax.get_yscale() == "log"
    assert max(float(np.nanmax(line.get_ydata())) for line in ax.lines if len(line.get_ydata())) <= ceiling + 1e-9
    assert any(label.startswith("clipped at 16.7") and "4e+08" in label for label in _labels(fig))
    assert ax.get_xlabel() == "base length T0 (steps)"
    assert any(label.startswith("chance") for label in _labels(fig))


def test_reference_line_title_and_formats(tmp_path: Path) -> None:
    fig = _figure_for(FIXTURES, "dynamic_ngrams", "learning")
    ax = fig.axes[0]
    bayes = next(line for line in ax.lines if line.get_label() == "Bayes-optimal (reference)")
    assert 20 < float(bayes.get_ydata()[0]) < 23  # the fixtures' mean bayes_cost, 21.9
    fig.canvas.draw()
    box, frame = ax.title.get_window_extent(), fig.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1  # the title is not clipped
    assert save_figure(fig, tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in save_figure(fig, tmp_path / "f.svg").read_bytes()[:400]
    with pytest.raises(ResultsError, match="use one of .png, .pdf, .svg"):
        save_figure(fig, tmp_path / "f.jpeg")


def test_generalisation_axis_is_named_by_the_task() -> None:
    fig = _figure_for(FIXTURES, "copy", "generalisation")
    assert fig.axes[0].get_xlabel() == "sequence length L (vectors)"


def test_no_global_backend_is_chosen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import matplotlib

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("library code called matplotlib.use")

    monkeypatch.setattr(matplotlib, "use", refuse)
    _, paths = compare(["rnn", "lstm"], [FIXTURES], "copy", None, tmp_path / "cmp", "disabled", fmt="svg")
    assert sorted(p.name for p in paths) == ["generalisation_copy.svg", "learning_copy.svg"]

    from memtasks.tasks import get_task
    from memtasks.viz import plot_example

    fig = plot_example(get_task("copy", max_length=3).eval_batch(3, size=2))
    assert fig.axes and math.isfinite(fig.get_figwidth())

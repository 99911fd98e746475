"""Leaderboard and compare, from run records on disk.

The golden file ``tests/golden/leaderboard.md`` is the leaderboard of the fixture records in
``tests/fixtures/runs`` (tiny real runs of copy, dynamic_ngrams and adding). After an intended
change to the leaderboard's format, regenerate it from the repository root and review the diff::

    .venv/bin/python -c "from pathlib import Path; from memtasks.results import write_leaderboard; \
write_leaderboard([Path('tests/fixtures/runs')], None, Path('tests/golden/leaderboard.md'), force=True)"
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from memtasks.results.aggregate import budget_note, median_to_solve, overall, summarise
from memtasks.results.comparison import compare
from memtasks.results.errors import NoRecordsError
from memtasks.results.leaderboard import build_leaderboard, write_leaderboard
from memtasks.results.markdown import leaderboard_markdown
from memtasks.results.store import collect

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures" / "runs"
GOLDEN = HERE / "golden" / "leaderboard.md"


def test_fixture_leaderboard_matches_golden(tmp_path: Path) -> None:
    text, warnings = write_leaderboard([FIXTURES], None, tmp_path / "lb.md")
    assert warnings == []
    assert (tmp_path / "lb.md").read_text() == text
    assert text == GOLDEN.read_text(), "leaderboard changed; if intended, regenerate the golden file (module docstring)"


def test_same_records_give_same_bytes(tmp_path: Path) -> None:
    elsewhere = tmp_path / "copied"
    shutil.copytree(FIXTURES, elsewhere)  # another path, other mtimes: the text must not change
    first, _ = write_leaderboard([FIXTURES], None, tmp_path / "a.md")
    second, _ = write_leaderboard([elsewhere], ["fixture"], tmp_path / "b.md")
    df, _ = collect([FIXTURES])
    assert first == second == leaderboard_markdown(df, {"fixture": "fixture"})
    assert (tmp_path / "a.md").read_bytes() == (tmp_path / "b.md").read_bytes()


# --- a small hand-written example ---------------------------------------------------------
def _write_run(root: Path, task: str, model: str, seed: int, final: dict[str, dict[str, float]], *,
               status: str = "ok", solved: bool = False, to_solve: int | None = None,
               finished_at: str = "2024-01-01T00:00:00Z", throughput: float = 100.0) -> None:
    d = root / "g" / task / model / f"seed-{seed}"
    d.mkdir(parents=True)
    result: dict[str, Any] = {
        "schema_version": 1, "status": status, "task": task, "model": model, "seed": seed, "group": "g",
        "final": final, "sequences_seen": 1000, "sequences_to_solve": to_solve, "solved": solved,
        "trainable_params": 10 if model == "a" else 20, "total_params": 30, "state_size": 4,
        "wall_time_s": 1.0, "throughput": throughput, "error": None if status == "ok" else "boom",
        "diverged_at": {"step": 3, "sequences": 96} if status == "diverged" else None, "finished_at": finished_at,
    }
    (d / "result.json").write_text(json.dumps(result))
    config = {"run": {"sequences": 1000, "task_params": {}}, "device": "cpu", "device_name": "testbox",
              "versions": {"memtasks": "0.1.0", "torch": "2.x", "python": "3.x"}, "git_commit": "abc"}
    (d / "config.json").write_text(json.dumps(config))


def _bce(cost: float, acc: float) -> dict[str, dict[str, float]]:
    return {"train": {"cost": cost, "bit_errors": 0.0, "seq_accuracy": acc}, "30": {"cost": 9.0, "bit_errors": 1.0, "seq_accuracy": acc / 2}}


@pytest.fixture
def hand_runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    # copy: a has two finished seeds (cost 1 and 3); b one finished seed (cost 0.5) and one that diverged.
    _write_run(root, "copy", "a", 0, _bce(1.0, 0.5), solved=True, to_solve=100, throughput=100.0)
    _write_run(root, "copy", "a", 1, _bce(3.0, 0.25), throughput=300.0, finished_at="2024-03-02T10:00:00Z")
    _write_run(root, "copy", "b", 0, _bce(0.5, 1.0), solved=True, to_solve=200)
    _write_run(root, "copy", "b", 1, {}, status="diverged")
    # adding (mse): only a ran it, one seed, unsolved.
    _write_run(root, "adding", "a", 0, {"train": {"mse": 0.1}, "200": {"mse": 0.3}})
    return root


def test_aggregation_by_hand(hand_runs: Path) -> None:
    df, warnings = collect([hand_runs])
    assert warnings == []
    assert len(df) == 5 and df.loc[0, "train/mse"] == 0.1  # sorted: adding before copy
    agg = summarise(df).set_index(["task", "entry"])
    a, b = agg.loc[("copy", "a")], agg.loc[("copy", "b")]
    assert a["primary_mean"] == 2.0 and math.isclose(a["primary_std"], math.sqrt(2.0))  # sample std of 1, 3
    assert a["best_seed"] == 0 and a["best_primary"] == 1.0 and a["best_acc"] == 0.5
    assert a["acc_mean"] == 0.375 and a["at:30"] == 0.1875
    assert (a["solved"], a["runs"]) == (1, 2) and a["task_solved"]  # half the seeds: solved
    assert math.isinf(a["median_to_solve"])  # median of (100, never) is never
    assert a["throughput"] == 200.0
    assert b["primary_mean"] == 0.5 and math.isnan(b["primary_std"])  # the diverged seed has no metrics
    assert (b["ok"], b["diverged"], b["solved"], b["runs"]) == (1, 1, 1, 2)
    assert math.isinf(b["median_to_solve"]) and b["throughput"] == 100.0
    # a's 95% interval: 2 ± t(0.975, 1)·√2/√2 = 2 ± 12.7062; b has one finished seed: no interval, no rank
    assert a["primary_ci"] == pytest.approx(12.7062) and a["primary_n"] == 2 and a["rank"] == 1.0
    assert math.isnan(b["primary_ci"]) and b["primary_n"] == 1 and math.isnan(b["rank"])
    assert agg.loc[("adding", "a")]["primary"] == "mse" and math.isnan(agg.loc[("adding", "a")]["rank"])
    assert not agg.loc[("adding", "a")]["task_solved"]
    assert math.isnan(a["chance"])  # these records do not say their evaluation set's size: chance unknown

    ov = overall(summarise(df)).set_index("entry")
    assert list(ov.index) == ["a", "b"]  # a ranked on copy; b on nothing
    assert ov.loc["a", "mean_rank"] == 1.0 and ov.loc["a", "tasks_ranked"] == 1 and ov.loc["a", "tasks_run"] == 2
    assert ov.loc["a", "tasks_solved"] == 1
    assert math.isnan(ov.loc["b", "mean_rank"]) and ov.loc["b", "tasks_solved"] == 1 and ov.loc["b", "tasks_run"] == 1

    text = leaderboard_markdown(df)
    copy_table = text.split("## copy")[1].split("## Overall")[0]
    assert copy_table.index("| b ") < copy_table.index("| a ")  # best first
    assert "| 2.00 ± 12.7 " in copy_table and "| 1.00 (s0) " in copy_table and "| 37.5 ± 158.8% " in copy_table
    assert "| 0.500 (n=1) " in copy_table  # one seed: the mean, marked
    assert "| 1 diverged " in copy_table and "| 1/2 " in copy_table
    assert "2024-03-02T10:00:00Z" in text  # the latest finished_at, not today's date
    assert "copy (1,000 vs ≈1,000,000)" in text and "adding (" not in text.split("## ")[0]
    assert "| testbox" not in text and "cpu (testbox): 5 runs" in text


def test_median_to_solve() -> None:
    assert median_to_solve(pd.Series([100.0, 300.0, float("nan")])) == 300.0
    assert median_to_solve(pd.Series([100.0, 300.0])) == 200.0
    assert math.isinf(median_to_solve(pd.Series([100.0, float("nan")])))


def test_budget_note() -> None:
    assert budget_note("copy", 1000.0) is not None and "≈1,000,000" in budget_note("copy", 1000.0)
    assert budget_note("copy", 2_000_000.0) is None
    assert budget_note("no_such_task", 10.0) is None


def test_corrupt_and_foreign_records_are_skipped(hand_runs: Path) -> None:
    bad = hand_runs / "g" / "copy" / "c" / "seed-0" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "status": ')
    foreign = hand_runs / "other" / "result.json"
    foreign.parent.mkdir(parents=True)
    foreign.write_text(json.dumps({"accuracy": 0.9}))
    df, warnings = collect([hand_runs])
    assert len(df) == 5
    assert len(warnings) == 2
    assert any(str(bad) in w and "corrupt JSON" in w for w in warnings)
    assert any(str(foreign) in w and "not a memtasks result" in w for w in warnings)
    text, warnings2 = write_leaderboard([hand_runs], None, hand_runs / "lb.md")
    assert warnings2 == warnings and "## copy" in text


def test_group_filter(hand_runs: Path) -> None:
    df, warnings = collect([hand_runs], ["nope"])
    assert df.empty and warnings == [f"group 'nope': no run records under {hand_runs}"]
    assert "No run records" in leaderboard_markdown(df)
    with pytest.raises(NoRecordsError, match=r"group\(s\) 'nope' under .*; groups with records: g"):
        build_leaderboard([hand_runs], ["nope"])


# --- compare ---------------------------------------------------------------------------------
def test_compare_writes_plots(tmp_path: Path) -> None:
    text, paths = compare(["rnn", "lstm"], [FIXTURES], None, None, tmp_path / "cmp", "disabled")
    names = sorted(p.name for p in paths)
    assert names == ["generalisation_adding.png", "generalisation_copy.png", "learning_adding.png",
                     "learning_copy.png", "learning_dynamic_ngrams.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## copy" in text and "| rnn " in text and "seq accuracy" in text
    assert not (tmp_path / "cmp" / "wandb").exists()


def test_compare_lists_time_to_solve_per_seed(hand_runs: Path, tmp_path: Path) -> None:
    rows = [{"sequences": 50, "step": 1, "wall_time_s": 3.0, "train_time_s": 2.0, "metrics": {"train": {"cost": 5.0}}},
            {"sequences": 100, "step": 2, "wall_time_s": 7.5, "train_time_s": 6.25, "metrics": {"train": {"cost": 1.0}}}]
    (hand_runs / "g" / "copy" / "a" / "seed-0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, _ = compare(["a", "b"], [hand_runs], "copy", None, tmp_path / "cmp", "disabled")
    table = text.split("Time to solve, per seed:", 1)[1]
    lines = [" ".join(line.split()) for line in table.splitlines() if line.startswith("| a") or line.startswith("| b")]
    assert lines == [
        "| a | 0 | 100 | 7.5 | 6.2 |",  # the evaluation at 100 sequences, from metrics.jsonl
        "| a | 1 | not solved in 1,000 | — | — |",
        "| b | 0 | 200 | — | — |",  # solved, but no metrics file to time it
        "| b | 1 | not solved in 1,000 | — | — |",
    ]


def test_compare_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'nosuch'.*models with runs: gru, lstm, rnn"):
        compare(["lstm", "nosuch"], [FIXTURES], None, None, tmp_path, "disabled")
    with pytest.raises(ValueError, match="tasks with runs: adding, copy, dynamic_ngrams"):
        compare(["lstm"], [FIXTURES], "priority_sort", None, tmp_path, "disabled")


def test_model_with_no_finished_seed_is_not_ranked(hand_runs: Path) -> None:
    _write_run(hand_runs, "copy", "c", 0, {}, status="failed")
    df, _ = collect([hand_runs])
    agg = summarise(df).set_index(["task", "entry"])
    assert math.isnan(agg.loc[("copy", "c"), "rank"]) and math.isnan(agg.loc[("copy", "c"), "primary_mean"])
    text = leaderboard_markdown(df)
    copy_table = text.split("## copy")[1].split("## Overall")[0]
    assert copy_table.index("| a ") < copy_table.index("| c ")  # listed last
    row = next(line for line in text.splitlines() if line.startswith("| c "))
    assert "| 1 failed" in row and "| 0/1 " in row and "(s" not in row


# --- statistics on the leaderboard, from hand-made records --------------------------------------
COPY = {"bits": 2, "max_length": 3, "generalise": [6]}


def _stat_run(root: Path, task: str, model: str, seed: int, curve: list[tuple[int, float]], *,
              to_solve: int | None = None, commit: str = "c0ffee" * 6 + "abcd", params: dict[str, Any] = COPY) -> None:
    """A finished run whose metrics.jsonl holds ``curve`` (sequences, train cost), 32 sequences per update."""
    d = root / "pub" / task / model / f"seed-{seed}"
    d.mkdir(parents=True)
    final = {"train": {"cost": curve[-1][1], "bit_errors": 0.0, "seq_accuracy": 0.5}}
    result: dict[str, Any] = {
        "schema_version": 1, "status": "ok", "task": task, "model": model, "seed": seed, "group": "pub",
        "final": final, "sequences_seen": curve[-1][0], "sequences_to_solve": to_solve, "solved": to_solve is not None,
        "trainable_params": 10, "total_params": 10, "state_size": 4, "wall_time_s": 1.0, "throughput": 100.0,
        "error": None, "diverged_at": None, "finished_at": "2024-01-01T00:00:00Z",
        "stopped_early": False,
    }
    (d / "result.json").write_text(json.dumps(result))
    config = {"run": {"sequences": 3200, "batch_size": 32, "eval_size": 16, "task_params": params},
              "device": "cpu", "versions": {"memtasks": "0.1.0"}, "git_commit": commit}
    (d / "config.json").write_text(json.dumps(config))
    rows = [{"sequences": s, "step": s // 32, "metrics": {"train": {"cost": c}}} for s, c in curve]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _curve(end: float, start: float = 4.0) -> list[tuple[int, float]]:
    return [(0, start), (1600, (start + end) / 2), (3200, end)]


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, float]:
    from memtasks.tasks import get_task

    task = get_task("copy", **{**COPY, "generalise": (6,)})
    chance = task.chance_cost(None, task.eval_batch(None, 16))
    root = tmp_path / "runs"
    for seed, (good, mid, flat, above) in enumerate([(0.10, 1.00, 0.998, 1.05), (0.12, 1.10, 1.0, 1.06), (0.11, 1.05, 1.002, 1.07)]):
        _stat_run(root, "copy", "good", seed, _curve(good), to_solve=1600 if seed < 2 else None)
        _stat_run(root, "copy", "mid", seed, _curve(mid))
        _stat_run(root, "copy", "flat", seed, _curve(flat * chance, start=chance))
        _stat_run(root, "copy", "above", seed, _curve(above * chance, start=chance))
        for model in ("good", "mid"):  # on delayed_xor, everyone sits at chance (1 bit)
            _stat_run(root, "delayed_xor", model, seed, _curve(1.0 + seed / 100, start=1.0), params={"base_length": 22})
    return root, chance


def test_ranks_chance_and_curves_on_the_leaderboard(published: tuple[Path, float]) -> None:
    root, chance = published
    df, warnings = collect([root])
    assert warnings == []
    agg = summarise(df).set_index(["task", "entry"])
    good, mid, flat, above = (agg.loc[("copy", m)] for m in ("good", "mid", "flat", "above"))
    assert good["chance"] == pytest.approx(chance) and chance > 3
    assert (good["rank"], mid["rank"]) == (1, 2)
    assert flat["at_chance"] and above["at_chance"] and not mid["at_chance"]
    assert flat["rank"] == above["rank"] == 3  # apart, but both at chance: not ranked against each other
    assert good["removed_mean"] == pytest.approx(1 - 0.11 / chance)
    # solved by 2 of 3 seeds at 1,600 sequences = 50 updates; mid never: not within budget
    assert good["median_to_solve"] == 1600 and good["median_updates_to_solve"] == 50
    assert math.isinf(mid["median_to_solve"])
    # AULC: the curve 4 → m = (4+e)/2 → e at 0, 1600, 3200: trapezoids (4+m)/2 and (m+e)/2, each half the span; ÷ chance
    e = [0.10, 0.12, 0.11]
    assert good["aulc"] == pytest.approx(sum((4 + (4 + x) / 2) / 4 + ((4 + x) / 2 + x) / 4 for x in e) / 3 / chance)
    assert good["improving"] and not flat["improving"]  # flat fell by 0.2% of chance in its last third
    assert set(agg.loc["delayed_xor", "at_chance"]) == {True}
    ov = overall(summarise(df)).set_index("entry")
    assert ov.loc["good", "mean_rank"] == 1 and ov.loc["good", "tasks_ranked"] == 1  # delayed_xor left out

    text = leaderboard_markdown(df)
    assert "- **Commit:** one commit, `c0ffeec0ff`, for all 18 runs" in text
    assert "budget 3,200 sequences = 100 updates of 32" in text
    rows = _rows(text.split("## copy")[1].split("## delayed_xor")[0])
    assert rows["*chance (input-independent)*"]["cost (bits/seq) mean ± 95% CI"] == f"{chance:.2f}"
    assert rows["good"]["rank"] == "1" and rows["mid"]["rank"] == "2"
    assert rows["flat"]["rank"] == rows["above"]["rank"] == "=3, at chance"
    assert rows["good"]["to solve: seqs (updates)"] == "1,600 (50)"
    assert rows["mid"]["to solve: seqs (updates)"] == "not within budget"
    assert rows["good"]["improving"] == "yes" and rows["flat"]["improving"] == "no"
    assert "Left out because every model is at chance there: delayed_xor." in text
    assert "rank: delayed_xor (all at chance)" in text


def test_a_model_that_solves_some_seeds_is_not_at_chance(published: tuple[Path, float]) -> None:
    """Two seeds solved, one left at chance: the interval reaches chance, but the model learns the
    task, so it is not at chance, the task counts in the overall rank, and the wide interval still
    keeps it from ranking above the models at chance."""
    root, _ = published
    for seed, end in enumerate((0.001, 0.002, 1.0)):
        _stat_run(root, "delayed_xor", "learner", seed, _curve(end, start=1.0), params={"base_length": 22},
                  to_solve=1600 if end < 0.5 else None)
    agg = summarise(collect([root])[0]).set_index(["task", "entry"])
    learner = agg.loc[("delayed_xor", "learner")]
    assert learner["primary_mean"] + learner["primary_ci"] > 0.99  # the interval reaches chance (1 bit)
    assert not learner["at_chance"]
    assert agg.loc[("delayed_xor", "good"), "at_chance"] and learner["rank"] == 1
    assert agg.loc[("delayed_xor", "good"), "rank"] == 1  # not clearly beaten by the wide interval
    text = leaderboard_markdown(collect([root])[0])
    assert "Left out because every model is at chance there" not in text


def _rows(section: str) -> dict[str, dict[str, str]]:
    """The first table of ``section``: row name -> column header -> cell."""
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {cells[0]: dict(zip(split[0], cells)) for cells in split[1:]}


def test_several_commits_are_listed(published: tuple[Path, float]) -> None:
    root, _ = published
    _stat_run(root, "copy", "late", 0, _curve(0.5), commit="0123456789" * 4)
    df, _ = collect([root])
    assert "- **Commits:** not one commit: `0123456789` (1 run), `c0ffeec0ff` (18 runs)" in leaderboard_markdown(df)

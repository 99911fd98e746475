"""The fair-benchmark pieces of the trainer (issue 13): plateau stop, the collapse flag and the
validation set a tuning phase chooses on."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from memtasks.results import store as R
from memtasks.tasks import get_task
from memtasks.train.config import RunConfig
from memtasks.train.evaluation import _fingerprint_list, validation_batch
from memtasks.train.loop import LoopState
from memtasks.train.run_record import collapse
from memtasks.train.trainer import train


def tiny(**kw) -> RunConfig:
    fields = dict(task="copy", model="lstm", sequences=4096, batch_size=16, eval_every=256, eval_size=8,
                  task_params={"bits": 4, "max_length": 3, "generalise": (5,)}, model_params={"hidden_size": 8})
    fields.update(kw)
    return RunConfig(**fields)


def test_a_run_that_stops_improving_stops_as_plateaued(tmp_path):
    # lr 1e-9: nothing moves, so after `plateau_patience` evaluations without improvement it stops
    result = train(tiny(lr=1e-9, plateau_patience=3), tmp_path, wandb_mode="disabled")
    assert result["status"] == "ok" and result["stop_reason"] == "plateaued"
    rows = R.eval_rows(R.run_dir(tmp_path, "default", "copy", "lstm", 0))
    assert len(rows) == 1 + 3 and result["sequences_seen"] == 3 * 256 < 4096
    budget = train(tiny(lr=1e-9, seed=1), tmp_path, wandb_mode="disabled")  # without it: the whole budget
    assert budget["stop_reason"] == "budget" and budget["sequences_seen"] == 4096


def test_the_table_reads_how_far_a_grow_curriculum_got(tmp_path):
    # lengths 1-10 in fifths of 2: a `grow` run starts on 1-2 and, unsolved, stays there
    params = {"bits": 4, "max_length": 10, "generalise": (12,)}
    train(tiny(lr=1e-9, sequences=512, curriculum="grow", task_params=params), tmp_path, wandb_mode="disabled")
    train(tiny(lr=1e-9, sequences=512, seed=1, task_params=params), tmp_path, wandb_mode="disabled")
    df = R.collect([tmp_path])[0].set_index("seed")
    assert df.loc[0, "curriculum_hi"] == 2.0 and math.isnan(df.loc[1, "curriculum_hi"])  # uniform: no curriculum
    assert df.loc[0, "longest_solved"] == 0.0  # not solved at its training lengths


def test_track_best_counts_evaluations_without_improvement():
    loop = LoopState()
    for seen, value in [(0, 10.0), (1, 5.0), (2, 4.99), (3, 4.0), (4, math.nan), (5, 4.0)]:
        loop.seen = seen
        loop.track_best(value, 0.01)
    assert loop.start_value == 10.0 and loop.best == 4.0 and loop.best_at == 3
    assert loop.since_best == 2  # NaN and an equal value are no improvement; 4.99 was not 1% better than 5


def test_a_widening_curriculum_restarts_the_plateau_count():
    loop = LoopState()
    for seen, value in [(0, 1.0), (1, 1.0), (2, 1.0)]:
        loop.seen = seen
        loop.track_best(value, 0.01)
    assert loop.since_best == 2
    loop.widened()  # progress the whole-range metric may not show yet
    assert loop.since_best == 0 and loop.best == 1.0
    loop.track_best(1.0, 0.01)
    assert loop.since_best == 1


@pytest.mark.parametrize("start,best,final,collapsed", [
    (4.0, 0.0, 3.0, True),     # solved, then back near the start: a collapse
    (4.0, 0.0, 0.5, False),    # solved, then a little worse: not a collapse
    (4.0, 0.015, 3.5, True),   # near solved (within 2x the 0.01 threshold), then back
    (4.0, 1.0, 3.9, False),    # never near solved: no collapse, just not learning
    (4.0, 0.0, math.nan, True),
])
def test_collapse_flag(start, best, final, collapsed):
    task = get_task("copy")  # solved: bit_errors < 0.01
    loop = SimpleNamespace(start_value=start, best=best, best_at=100, last_eval={"train": {"bit_errors": final}})
    flag = collapse(task, loop)
    assert (flag is not None) == collapsed
    if flag:
        assert flag["best"] == best and flag["start"] == start and flag["metric"] == "bit_errors"


def test_validation_set_is_disjoint_from_every_evaluation_set():
    task = get_task("copy", bits=3, max_length=3, generalise=(5,))  # small: collisions are likely
    val = validation_batch(task, 32)
    assert val.batch_size == 32
    scored = set()
    for length, overrides in task.eval_points().values():
        scored |= set(_fingerprint_list(task.eval_batch(length, 32, **overrides)))
    raw = task.eval_batch(None, 32, seed=7919)
    assert set(_fingerprint_list(raw)) & scored, "the check needs a task where raw draws do collide"
    assert not set(_fingerprint_list(val)) & scored
    assert _fingerprint_list(val) == _fingerprint_list(validation_batch(task, 32))  # stable


def test_validate_records_validation_metrics_at_every_evaluation(tmp_path):
    train(tiny(sequences=512, validate=True), tmp_path, wandb_mode="disabled")
    rows = R.eval_rows(R.run_dir(tmp_path, "default", "copy", "lstm", 0))
    assert len(rows) == 3 and all(set(r["validation"]) == set(r["metrics"]["train"]) for r in rows)


# --- the tuning phase ---------------------------------------------------------------------------
TUNE_SPEC = """
name = "tuned"
seeds = [0, 1]
[train]
sequences = 1024
batch_size = 16
eval_every = 256
eval_size = 8
early_stop = false
[tune]
lr = [1e-9, 3e-3, 1e9]
fraction = 0.5
[tune.models.esn]
spectral_radius = [0.5, 0.9, 1.2]
[tasks.copy]
bits = 4
max_length = 3
generalise = [5]
[models.lstm]
hidden_size = 8
[models.esn]
reservoir_size = 20
"""


def _fake_trial(runs, trial, status, value):
    from memtasks.matrix.tune import trial_folder

    folder = trial_folder(runs, trial)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"status": status}))  # only the status is read
    (folder / "metrics.jsonl").write_text(json.dumps({"sequences": 0, "metrics": {}, "validation": {"bit_errors": value}}) + "\n")


def test_tuning_selection_on_a_fake_record_set(tmp_path, monkeypatch):
    from memtasks.matrix import tune
    from memtasks.results import store

    spec = tune.parse_tune({"lr": [1e-4, 1e-3, 1e-2], "fraction": 0.1}, "test")
    cells = [tiny(), tiny(seed=1), tiny(model="gru")]
    trials = tune.trials(cells, spec)
    assert [(t.model, t.value) for t in trials] == [("lstm", 1e-4), ("lstm", 1e-3), ("lstm", 1e-2),
                                                    ("gru", 1e-4), ("gru", 1e-3), ("gru", 1e-2)]
    assert {t.config.seed for t in trials} == {0} and all(t.config.validate for t in trials)
    assert all(t.config.sequences == 410 for t in trials)  # a tenth of 4096, rounded up
    assert len({t.config.group for t in trials}) == 3  # one group per grid value
    monkeypatch.setattr(store, "finished_result", lambda folder: json.loads((Path(folder) / "result.json").read_text()))
    scores = {("lstm", 1e-4): ("ok", 2.0), ("lstm", 1e-3): ("ok", 0.5), ("lstm", 1e-2): ("diverged", 0.0),
              ("gru", 1e-4): ("ok", 1.0), ("gru", 1e-3): ("ok", 1.0), ("gru", 1e-2): ("ok", float("nan"))}
    for t in trials:
        _fake_trial(tmp_path, t, *scores[(t.model, t.value)])
    choices = tune.choose(tmp_path, trials)
    assert choices[("copy", "lstm")]["chosen"] == 1e-3  # the diverged trial's 0.0 does not count
    assert choices[("copy", "lstm")]["validation"] == [2.0, 0.5, math.inf]
    assert choices[("copy", "gru")]["chosen"] == 1e-4  # a tie goes to the first in grid order; NaN loses
    final = tune.apply(cells, choices)
    assert [c.lr for c in final] == [1e-3, 1e-3, 1e-4]


@pytest.mark.parametrize("text,needle", [
    ("[tune]\nlr = [1e-3, 3e-3]\n", "at least 3 values"),
    ("[tune]\nlr = [1e-3, 1e-3, 3e-3]\n", "twice"),
    ("[tune]\nlr = [1e-3, 2e-3, 3e-3]\nsteps = 3\n", "no key 'steps'"),
    ("[tune]\nlr = [1e-3, 2e-3, 3e-3]\n[tune.models.esn]\nspectral_radius = [0.9, 1.0, 1.1, 1.2]\n", "same number"),
])
def test_bad_tune_tables_name_the_field(tmp_path, text, needle):
    from memtasks.matrix.spec import SpecError, load_spec

    path = tmp_path / "spec.toml"
    path.write_text('[tasks.copy]\n[models.lstm]\n[models.esn]\n' + text)
    with pytest.raises(SpecError, match=needle):
        load_spec(str(path))


@pytest.mark.slow
def test_matrix_tunes_every_model_equally_then_trains_its_seeds(tmp_path):
    import subprocess
    import sys

    spec = tmp_path / "spec.toml"
    spec.write_text(TUNE_SPEC)
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "memtasks.cli", "matrix", str(spec), "--runs-dir", str(runs), "--workers", "2"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lstm = json.loads((runs / "tuned/copy/lstm/tuning.json").read_text())
    assert lstm["knob"] == "lr" and lstm["grid"] == [1e-9, 3e-3, 1e9] and lstm["chosen"] == 3e-3
    assert lstm["validation"][1] < lstm["validation"][0] and lstm["validation"][1] < (lstm["validation"][2] or math.inf)
    esn = json.loads((runs / "tuned/copy/esn/tuning.json").read_text())
    assert esn["knob"] == "spectral_radius" and len(esn["validation"]) == 3
    for seed in (0, 1):
        config = json.loads((runs / f"tuned/copy/lstm/seed-{seed}/config.json").read_text())
        assert config["optim"]["lr"] == 3e-3
        esn_model = json.loads((runs / f"tuned/copy/esn/seed-{seed}/config.json").read_text())["model_config"]
        assert esn_model["spectral_radius"] == esn["chosen"]
    assert len(list(runs.glob("tuned-tune-*/copy/*/seed-0/result.json"))) == 6
    from memtasks.results.aggregate import summarise
    from memtasks.results.store import collect

    agg = summarise(collect([runs], ["tuned"])[0]).set_index("model")  # the leaderboard's "tuned" column
    assert agg.loc["lstm", "tuned"] == "lr 0.003" and agg.loc["esn", "tuned"] == f"spectral_radius {esn['chosen']:g}"
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)  # resumes: nothing to redo
    assert again.returncode == 0 and again.stderr.count("0 to run") == 2, again.stderr

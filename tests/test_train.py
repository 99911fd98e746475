"""memtasks train: records, resume after SIGKILL, divergence, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from memtasks.results import store as R
from memtasks.train.config import RunConfig
from memtasks.train.trainer import RunError, train
from memtasks.models import MODELS

SMALL = {
    "ntm": {"hidden_size": 16, "memory_slots": 8, "memory_width": 4},
    "dnc": {"hidden_size": 16, "memory_slots": 8, "memory_width": 4},
    "esn": {"reservoir_size": 30},
}


def tiny(model: str = "lstm", **kw) -> RunConfig:
    fields = dict(
        task="copy",
        model=model,
        sequences=256,
        batch_size=16,
        eval_every=128,
        eval_size=8,
        early_stop=False,
        task_params={"bits": 4, "max_length": 3, "generalise": (5,)},
        model_params=SMALL.get(model, {"hidden_size": 12}),
    )
    fields.update(kw)
    return RunConfig(**fields)


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "memtasks.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.mark.parametrize("model", MODELS.names())
def test_tiny_run_writes_valid_record(tmp_path, model):
    result = train(tiny(model), tmp_path, wandb_mode="disabled")
    assert result["status"] == "ok", result["error"]
    folder = R.run_dir(tmp_path, "default", "copy", model, 0)
    stored = R.read_result(folder / "result.json")
    assert stored["final"].keys() == {"train", "5"}
    assert stored["trainable_params"] > 0 and stored["state_size"] > 0
    config = json.loads((folder / "config.json").read_text())
    assert RunConfig.from_dict(config["run"]) == tiny(model)
    assert set(config["versions"]) >= {"memtasks", "torch", "task"}
    assert config["eval_hashes"]["train"]
    rows = [r for r in R.read_jsonl(folder / "metrics.jsonl") if "metrics" in r]
    if MODELS.get(model).closed_form:
        assert len(rows) == 1
    else:
        assert [r["sequences"] for r in rows] == [0, 128, 256]


def test_finished_run_is_not_rerun(tmp_path):
    first = train(tiny(), tmp_path, wandb_mode="disabled")
    mtime = (R.run_dir(tmp_path, "default", "copy", "lstm", 0) / "result.json").stat().st_mtime_ns
    again = train(tiny(), tmp_path, wandb_mode="disabled")
    assert again == first
    assert (R.run_dir(tmp_path, "default", "copy", "lstm", 0) / "result.json").stat().st_mtime_ns == mtime
    forced = train(tiny(), tmp_path, wandb_mode="disabled", force=True)
    assert forced["final"] == first["final"]  # same seed, same numbers


def test_sigkill_and_resume_equals_uninterrupted(tmp_path):
    args = [
        "train", "--task", "copy", "--model", "lstm", "--seed", "3", "--sequences", "12800", "--batch-size", "16",
        "--set", "eval_every=800", "--set", "eval_size=16", "--set", "early_stop=false", "--set", "checkpoint_every_s=0.05",
        "--set", "task.max_length=4", "--set", "task.bits=4", "--set", "model.hidden_size=16", "--wandb", "disabled",
        "--quiet",
    ]
    ref = cli(*args, "--runs-dir", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    killed_dir = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    result_file = R.run_dir(killed_dir, "default", "copy", "lstm", 3) / "result.json"
    kills = 0  # kills that landed before the run had finished
    for _ in range(3):  # kill it mid-run a few times, each after a new checkpoint exists
        if result_file.exists():
            break
        proc = subprocess.Popen([sys.executable, "-m", "memtasks.cli", *args, "--runs-dir", str(killed_dir)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ckpt = R.run_dir(killed_dir, "default", "copy", "lstm", 3) / "checkpoint.pt"
        start = ckpt.stat().st_mtime if ckpt.exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists() and ckpt.stat().st_mtime > start:
                time.sleep(0.3)
                break
            time.sleep(0.02)
        if proc.poll() is None:
            mid_run = not result_file.exists()
            proc.send_signal(signal.SIGKILL)
            kills += mid_run
        proc.wait()
    assert kills >= 1, "the run finished before it could be killed; make it longer"
    resumed = cli(*args, "--runs-dir", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr
    a = R.read_result(R.run_dir(tmp_path / "ref", "default", "copy", "lstm", 3) / "result.json")
    b = R.read_result(R.run_dir(killed_dir, "default", "copy", "lstm", 3) / "result.json")
    assert a["final"] == b["final"]
    assert a["sequences_seen"] == b["sequences_seen"] and a["sequences_to_solve"] == b["sequences_to_solve"]
    rows_a = R.read_jsonl(R.run_dir(tmp_path / "ref", "default", "copy", "lstm", 3) / "metrics.jsonl")
    rows_b = R.read_jsonl(R.run_dir(killed_dir, "default", "copy", "lstm", 3) / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("train_time_s", "wall_time_s")} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b), "no evaluation lost or repeated"


def test_divergence_is_recorded(tmp_path):
    cfg = tiny("rnn", lr=1e8, optimizer="sgd", sequences=4096, model_params={"hidden_size": 12, "nonlinearity": "relu"})
    result = train(cfg, tmp_path, wandb_mode="disabled")
    assert result["status"] == "diverged"
    assert result["diverged_at"]["step"] >= 1
    assert "non-finite" in result["error"]
    assert result["final"]["train"]["cost"] >= 0, "the last good metrics are kept"
    assert R.read_result(R.run_dir(tmp_path, "default", "copy", "rnn", 0) / "result.json")["status"] == "diverged"


def test_early_stop_with_patience(tmp_path):
    cfg = tiny(sequences=20_000, eval_every=320, early_stop=True, patience=2, task_params={"bits": 2, "max_length": 1, "generalise": (2,)},
               model_params={"hidden_size": 32}, lr=1e-2)
    result = train(cfg, tmp_path, wandb_mode="disabled")
    assert result["status"] == "ok"
    assert result["sequences_to_solve"] is not None
    assert result["stopped_early"] and result["sequences_seen"] < 20_000
    rows = [r for r in R.read_jsonl(R.run_dir(tmp_path, "default", "copy", "lstm", 0) / "metrics.jsonl") if "metrics" in r]
    assert rows[-1]["sequences"] >= result["sequences_to_solve"] + 320  # patience: solved twice in a row


def test_grow_curriculum_widens_and_is_recorded(tmp_path):
    cfg = tiny(sequences=6000, curriculum="grow", task_params={"bits": 2, "max_length": 10, "generalise": (12,)},
               model_params={"hidden_size": 32}, lr=1e-2, eval_every=2000)
    result = train(cfg, tmp_path, wandb_mode="disabled")
    assert result["status"] == "ok"
    rows = R.read_jsonl(R.run_dir(tmp_path, "default", "copy", "lstm", 0) / "metrics.jsonl")
    events = [r for r in rows if r.get("event") == "curriculum"]
    assert events and events[0]["range"] == [1, 4]
    assert rows[0]["curriculum"] == [1, 2]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--task", "cpy", "--model", "lstm"], "did you mean 'copy'"),
        (["--task", "copy", "--model", "lstn"], "did you mean 'lstm'"),
        (["--task", "copy", "--model", "lstm", "--set", "lrr=0.1"], "did you mean 'lr'"),
        (["--task", "copy", "--model", "lstm", "--set", "batch_size=many"], "batch_size expects an integer"),
        (["--task", "copy", "--model", "lstm", "--set", "task.bits=0"], "copy.bits=0"),
        (["--task", "copy", "--model", "lstm", "--set", "model.hidden=3"], "hidden_size"),
    ],
)
def test_bad_inputs_give_clear_errors(tmp_path, args, needle):
    out = cli("train", *args, "--runs-dir", str(tmp_path), "--sequences", "32")
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_unreadable_runs_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = cli("train", "--task", "copy", "--model", "lstm", "--runs-dir", str(blocker / "runs"), "--sequences", "32")
    assert out.returncode == 2 and "runs dir" in out.stderr and "Traceback" not in out.stderr


def test_corrupt_checkpoint_is_reported_and_finished_runs_untouched(tmp_path):
    done = train(tiny(seed=1), tmp_path, wandb_mode="disabled")
    finished = R.run_dir(tmp_path, "default", "copy", "lstm", 1) / "result.json"
    before = finished.read_bytes()
    folder = R.run_dir(tmp_path, "default", "copy", "lstm", 0)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(RunError, match="corrupt checkpoint"):
        train(tiny(seed=0), tmp_path, wandb_mode="disabled")
    assert not (folder / "result.json").exists()
    assert finished.read_bytes() == before and done["status"] == "ok"
    # the finished seed is still returned as is, even with --force elsewhere
    assert train(tiny(seed=1), tmp_path, wandb_mode="disabled") == done


def test_config_json_round_trip_and_unknown_keys():
    cfg = tiny(task_params={"generalise": [5, 6]})
    assert RunConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(TypeError, match="sequencez"):
        RunConfig.from_dict({**cfg.to_dict(), "sequencez": 3})
    with pytest.raises(ValueError, match="curriculum"):
        tiny(curriculum="sometimes")


def test_family_defaults_from_papers():
    # recipe = "family": each family's own optimiser (the committed cpu records trained this way)
    assert tiny("dnc", recipe="family").optim() == {
        "optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.9, "clip_value": 10.0, "clip_norm": None}
    assert tiny("ntm", recipe="family").optim()["clip_value"] == 10.0
    assert tiny("indrnn", recipe="family").optim()["lr"] == 2e-4
    assert tiny("ntm", recipe="family", lr=3e-3).optim()["lr"] == 3e-3


def test_one_recipe_for_every_gradient_trained_model():
    from memtasks.models import MODELS

    recipe = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "clip_value": None, "clip_norm": 1.0}
    for name in MODELS.names():
        assert tiny(name).optim() == recipe, name
    assert tiny("ntm", lr=3e-4).optim() == {**recipe, "lr": 3e-4}  # the learning rate is the tuned knob
    assert tiny("lstm", recipe="family").optim() != tiny("lstm").optim()  # recipes are part of a run's identity
    assert tiny("lstm", recipe="family").digest() != tiny("lstm").digest()


def test_forget_gate_bias_starts_at_one_in_every_lstm():
    from memtasks.models import build_model

    lstm = build_model("lstm", 3, 2, hidden_size=5, num_layers=2)
    for layer in range(2):
        total = getattr(lstm.core, f"bias_ih_l{layer}") + getattr(lstm.core, f"bias_hh_l{layer}")
        assert torch.equal(total[5:10], torch.ones(5))  # gate order (i, f, g, o)
    assert torch.equal(build_model("ntm", 3, 2, hidden_size=5).bias[5:10], torch.ones(5))
    assert torch.equal(build_model("dnc", 3, 2, hidden_size=5).input_proj.bias[5:10], torch.ones(5))
    uniform = build_model("lstm", 3, 2, hidden_size=5, forget_bias="uniform").core.bias_ih_l0[5:10]
    assert uniform.abs().max() <= 1 / 5**0.5 and not torch.equal(uniform, torch.ones(5))


def test_indrnn_gets_t_max_from_task(tmp_path):
    from memtasks.train.trainer import make_model, make_task

    cfg = tiny("indrnn")
    model = make_model(cfg, make_task(cfg))
    assert model.config.t_max == make_task(cfg).max_steps(3)


def test_cli_train_prints_progress_lines(tmp_path):
    out = cli("train", "--task", "copy", "--model", "lstm", "--sequences", "512", "--set", "eval_every=256",
              "--set", "task.max_length=3", "--runs-dir", str(tmp_path), "--wandb", "disabled")
    assert out.returncode == 0, out.stderr
    assert "eval @ 256 seq" in out.stderr  # line-based when not on a terminal
    assert "status=ok" in out.stdout and "seq_accuracy" in out.stdout


def test_a_run_being_trained_elsewhere_is_not_touched(tmp_path):
    import fcntl

    folder = R.run_dir(tmp_path, "default", "copy", "lstm", 0)
    folder.mkdir(parents=True)
    with open(folder / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunError, match="another process"):
            train(tiny(), tmp_path, wandb_mode="disabled")
    assert not (folder / "result.json").exists()
    assert train(tiny(), tmp_path, wandb_mode="disabled")["status"] == "ok"


def test_a_folder_of_another_configuration_is_not_mixed_in(tmp_path):
    train(tiny(), tmp_path, wandb_mode="disabled")
    with pytest.raises(RunError, match="different configuration"):
        train(tiny(lr=0.5), tmp_path, wandb_mode="disabled")
    assert train(tiny(lr=0.5), tmp_path, wandb_mode="disabled", force=True)["status"] in ("ok", "diverged")

"""Looking inside trained models: ``trace`` changes nothing and its arrays are what the equations
say; ``memtasks eval`` reproduces a record exactly and writes files of its own; ``memtasks
inspect`` draws every registered model (and a plugin without ``trace``); bad input is one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from memtasks.cli import main
from memtasks.models import MODELS, build_model
from memtasks.models.base import MemoryModel
from memtasks.models.dnc import cpu_kernel as dnc_kernel
from memtasks.models.ntm import cpu_kernel as ntm_kernel
from memtasks.results import store as R
from memtasks.tasks import get_task
from memtasks.train.config import RunConfig
from memtasks.train.evaluation import eval_points, evaluate
from memtasks.train.trainer import train

SMALL = {
    "ntm": {"hidden_size": 12, "memory_slots": 9, "memory_width": 5},
    "dnc": {"hidden_size": 12, "memory_slots": 9, "memory_width": 5},
    "esn": {"reservoir_size": 30},
}
KERNELS = {"ntm": ntm_kernel.LIBRARY.load() is not None, "dnc": dnc_kernel.load() is not None}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(name: str, seed: int = 0, **overrides) -> MemoryModel:
    torch.manual_seed(seed)
    return build_model(name, 4, 3, **{**SMALL.get(name, {"hidden_size": 7}), **overrides}).eval()


def _tensors(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for part in state for t in _tensors(part)]


def _traced(name: str) -> bool:
    return MODELS.get(name).trace is not MemoryModel.trace


def _paths() -> list[tuple[str, dict]]:
    """Every registered model with a trace; the NTM and DNC on both their paths."""
    out = []
    for name in MODELS.names():
        if not _traced(name):
            continue
        if name in KERNELS:
            out.append((name, {"cpu_kernel": False}))
            if KERNELS[name]:
                out.append((name, {"cpu_kernel": True}))
        else:
            out.append((name, {}))
    return out


# --- trace ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,overrides", _paths(), ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()))
def test_trace_changes_nothing(name, overrides):
    model = _model(name, **overrides)
    x = torch.randn(3, 7, 4, generator=_gen(1))
    start = model.initial_state(3)
    for state in (None, start):
        with torch.no_grad():
            y, final = model(x, state)
            y2, final2, arrays = model.trace(x, state)
        assert torch.equal(y, y2), f"{name}: trace changed the outputs"
        for a, b in zip(_tensors(final), _tensors(final2), strict=True):
            assert torch.equal(a, b), f"{name}: trace changed the final state"
        assert arrays, f"{name}: a model with its own trace returns arrays"
        for key, value in arrays.items():
            assert value.shape[:2] == (3, 7), f"{name}: {key} is not (B, T, ...)"
            assert torch.isfinite(value).all()
    with torch.no_grad():  # and nothing was left behind on the module
        y3, _ = model(x)
    assert torch.equal(y, y3)
    # with gradients on, trace's y is forward's y and carries their graph
    y4, _, _ = model.trace(x)
    assert y4.requires_grad == any(p.requires_grad for p in model.parameters()) and torch.allclose(y4, y3)


def test_a_model_without_trace_gets_the_default():
    name = next(n for n in MODELS.names() if not _traced(n))  # the example plugin, mgu
    model = _model(name)
    x = torch.randn(2, 5, 4, generator=_gen(1))
    with torch.no_grad():
        y, _, arrays = model.trace(x)
        assert arrays == {} and torch.equal(y, model(x)[0])


@pytest.mark.parametrize("name", [n for n in MODELS.names() if _traced(n) and n not in ("ntm", "dnc", "esn")])
def test_recurrent_hidden_states_give_the_outputs(name):
    model = _model(name, num_layers=2)
    x = torch.randn(2, 6, 4, generator=_gen(2))
    with torch.no_grad():
        y, final, arrays = model.trace(x)
    hidden = arrays["hidden"]
    assert hidden.shape == (2, 6, 2, 7)
    torch.testing.assert_close(model.readout(hidden[:, :, -1]), y, rtol=1e-5, atol=1e-6)  # y_t = W_y h_t + b_y
    last = final.h if name == "lstm" else final
    torch.testing.assert_close(hidden[:, -1], last, rtol=1e-5, atol=1e-6)
    if name == "lstm":
        torch.testing.assert_close(arrays["cell"][:, -1], final.c, rtol=1e-5, atol=1e-6)


def test_esn_trace_is_its_reservoir_and_readout():
    model = _model("esn")
    x = torch.randn(2, 6, 4, generator=_gen(2))
    with torch.no_grad():
        y, final, arrays = model.trace(x)
    states, _ = model.reservoir_states(x)
    assert torch.equal(arrays["reservoir"], states) and torch.equal(arrays["readout"], y)
    assert torch.equal(arrays["reservoir"][:, -1], final)


def reference_ntm_weightings(model, x):
    """Every head's weighting w_t at every step, from the equations of Graves et al. (2014): heads
    one at a time, the shift by torch.roll, sharpening in its power form (as tests/test_ntm.py)."""
    cfg = model.config
    b, steps, _ = x.shape
    hid, m, n_r, n_w, rng = cfg.hidden_size, cfg.memory_width, cfg.read_heads, cfg.write_heads, cfg.shift_range
    heads = n_r + n_w
    state = model.initial_state(b)
    h, c = state.controller
    memory = state.memory
    w_prev = [state.read_weights[:, i] for i in range(n_r)] + [state.write_weights[:, i] for i in range(n_w)]
    reads = [state.reads[:, i] for i in range(n_r)]
    sizes = [heads * m, 3 * heads, heads * (2 * rng + 1), n_w * m, n_w * m]
    out = {"read_weights": [], "write_weights": [], "erase": [], "add": []}
    for t in range(steps):
        pre = torch.cat([x[:, t]] + reads, -1) @ torch.cat((model.w_x, model.w_r), 1).T + model.bias + h @ model.w_h.T
        gates = [torch.sigmoid(pre[:, k * hid : (k + 1) * hid]) for k in range(3)]
        c = gates[1] * c + gates[0] * torch.tanh(pre[:, 3 * hid :])
        h = gates[2] * torch.tanh(c)
        p = h @ model.w_p.T + model.b_p
        keys, scalars, shift_hat, erase_hat, add_hat = torch.split(p, sizes, dim=1)
        ws = []
        for k in range(heads):
            key = keys[:, k * m : (k + 1) * m]
            beta = F.softplus(scalars[:, 3 * k : 3 * k + 1])
            sim = (memory * key.unsqueeze(1)).sum(-1) / (key.norm(dim=-1, keepdim=True).clamp_min(1e-8) * memory.norm(dim=-1).clamp_min(1e-8))
            g = torch.sigmoid(scalars[:, 3 * k + 2 : 3 * k + 3])
            w_g = g * torch.softmax(beta * sim, dim=-1) + (1 - g) * w_prev[k]
            s = torch.softmax(shift_hat[:, k * (2 * rng + 1) : (k + 1) * (2 * rng + 1)], dim=-1)
            w_s = sum(s[:, j : j + 1] * torch.roll(w_g, j - rng, dims=-1) for j in range(2 * rng + 1))
            powered = w_s ** (1 + F.softplus(scalars[:, 3 * k + 1 : 3 * k + 2]))
            ws.append(powered / powered.sum(-1, keepdim=True))
        reads = [(ws[k].unsqueeze(-1) * memory).sum(1) for k in range(n_r)]
        e = torch.sigmoid(erase_hat).view(b, n_w, m)
        a = torch.tanh(add_hat).view(b, n_w, m)
        keep, added = torch.ones_like(memory), torch.zeros_like(memory)
        for k in range(n_w):
            wk = ws[n_r + k].unsqueeze(-1)
            keep = keep * (1 - wk * e[:, k].unsqueeze(1))
            added = added + wk * a[:, k].unsqueeze(1)
        memory = memory * keep + added
        w_prev = ws
        out["read_weights"].append(torch.stack(ws[:n_r], 1))
        out["write_weights"].append(torch.stack(ws[n_r:], 1))
        out["erase"].append(e)
        out["add"].append(a)
    return {k: torch.stack(v, 1) for k, v in out.items()}


@pytest.mark.parametrize("overrides", [{}, {"read_heads": 2, "write_heads": 2, "shift_range": 2}])
def test_ntm_traced_weightings_equal_the_reference_loop(overrides):
    model = _model("ntm", cpu_kernel=False, **overrides).double()
    x = torch.randn(2, 9, 4, generator=_gen(3), dtype=torch.float64)
    with torch.no_grad():
        y, arrays = model.trace_torch(x)
        ref = reference_ntm_weightings(model, x)
        assert torch.equal(y, model(x)[0]), "on the PyTorch path the traced loop is forward's loop"
    for key, want in ref.items():
        torch.testing.assert_close(arrays[key], want, rtol=1e-9, atol=1e-12, msg=lambda s: f"{key}: {s}")


@pytest.mark.parametrize("overrides", [{"controller": "feedforward", "add_activation": "linear"}, {"memory_init": "random"}])
def test_ntm_traced_loop_is_forwards_loop(overrides):
    model = _model("ntm", cpu_kernel=False, **overrides)
    x = torch.randn(2, 6, 4, generator=_gen(3))
    with torch.no_grad():
        y, arrays = model.trace_torch(x)
        assert torch.equal(y, model(x)[0])
    torch.testing.assert_close(arrays["write_weights"].sum(-1), torch.ones(2, 6, 1))


@pytest.mark.skipif(not KERNELS["ntm"], reason="no C compiler: the NTM kernels cannot be built")
def test_ntm_trace_on_the_kernel_path_reproduces_its_outputs():
    model = _model("ntm", read_heads=2)
    x = torch.randn(3, 11, 4, generator=_gen(4))
    with torch.no_grad():
        y, _ = model(x)  # the C kernels
        y_torch, arrays = model.trace_torch(x)
        ref = reference_ntm_weightings(model.double(), x.double())
    torch.testing.assert_close(y_torch, y, rtol=1e-5, atol=1e-5)  # the kernels' equivalence tolerance (test_ntm)
    torch.testing.assert_close(arrays["read_weights"].double(), ref["read_weights"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", [False, True] if KERNELS["dnc"] else [False])
def test_dnc_trace_reproduces_forward(kernel):
    model = _model("dnc", read_heads=2, cpu_kernel=kernel)
    x = torch.randn(3, 10, 4, generator=_gen(5))
    with torch.no_grad():
        y, final = model(x)
        y_torch, final_torch, arrays = model.trace_torch(x)
    if kernel:
        torch.testing.assert_close(y_torch, y, rtol=1e-5, atol=1e-5)  # the kernels' equivalence tolerance (test_dnc)
        # Near-equal usages can rank the other way after float32 rounding, so the two paths may
        # allocate a permutation of the same slots: compare what does not depend on slot labels.
        for name in ("h", "c", "read_vectors"):
            torch.testing.assert_close(getattr(final_torch, name), getattr(final, name), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(final_torch.usage.sort(-1).values, final.usage.sort(-1).values, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(final_torch.memory.sum(1), final.memory.sum(1), rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(y_torch, y), "on the PyTorch path the traced loop is forward's loop"
        for a, b in zip(final, final_torch, strict=True):
            assert torch.equal(a, b)
    torch.testing.assert_close(arrays["write_weighting"][:, -1], final_torch.write_weighting, rtol=0, atol=0)
    torch.testing.assert_close(arrays["read_weightings"][:, -1], final_torch.read_weightings, rtol=0, atol=0)
    torch.testing.assert_close(arrays["usage"][:, -1], final_torch.usage, rtol=0, atol=0)


def test_trace_rows_are_distributions_where_the_equations_say_so():
    x = torch.randn(3, 12, 4, generator=_gen(6))
    tol = 1e-5
    with torch.no_grad():
        _, _, ntm = _model("ntm", read_heads=2, shift_range=2).trace(x)
        _, _, dnc = _model("dnc", read_heads=2).trace(x)
    for key in ("read_weights", "write_weights"):  # w_t = sharpen(...): a softmax over slots
        assert (ntm[key] >= 0).all()
        torch.testing.assert_close(ntm[key].sum(-1), torch.ones(ntm[key].shape[:-1]), rtol=0, atol=tol)
    assert ((ntm["erase"] >= 0) & (ntm["erase"] <= 1)).all() and (ntm["add"].abs() <= 1).all()
    modes = dnc["read_modes"]  # π_t: a softmax over (backward, content, forward)
    assert (modes >= 0).all() and torch.allclose(modes.sum(-1), torch.ones(modes.shape[:-1]), atol=tol)
    for key in ("write_weighting", "read_weightings", "allocation"):  # gated or directional: at most 1
        assert (dnc[key] >= 0).all() and (dnc[key].sum(-1) <= 1 + tol).all(), key
    assert ((dnc["usage"] >= 0) & (dnc["usage"] <= 1 + tol)).all()


# --- evaluate, the Python function ------------------------------------------------------------------------
def test_evaluate_at_any_length_and_override():
    task = get_task("repeat_copy", bits=3, max_length=3, max_repeats=3, generalise=(5,))
    model = _model("lstm")
    model = build_model("lstm", task.d_in, task.d_out, hidden_size=7)
    points = eval_points(task, [None, 6], {"repeats": 4})
    assert points == {"repeats=4": (None, {"repeats": 4}), "6,repeats=4": (6, {"repeats": 4})}
    assert list(eval_points(task)) == ["train", "5", "repeats=20"]
    assert eval_points(task, None, {"repeats": 4}) == {"repeats=4": (None, {"repeats": 4}), "5,repeats=4": (5, {"repeats": 4})}
    got = evaluate(model, task, lengths=[None, 6], overrides={"repeats": 4}, size=4)
    assert set(got) == {"repeats=4", "6,repeats=4"} and set(got["6,repeats=4"]) >= {"cost", "bit_errors"}
    assert evaluate(model, task, 4, "cpu") == evaluate(model, task, size=4)  # the trainer's positional call
    with pytest.raises(ValueError, match="no sample override"):
        evaluate(model, task, size=4, overrides={"colour": 1})
    with pytest.raises(ValueError, match="whole number"):
        evaluate(model, task, size=4, lengths=[0])
    with pytest.raises(ValueError, match="over the limit"):
        evaluate(model, task, size=4, lengths=[10**9])


# --- memtasks eval and inspect on tiny runs of every family -------------------------------------------------
def tiny(model: str) -> RunConfig:
    return RunConfig(
        task="copy", model=model, sequences=64, batch_size=16, eval_every=32, eval_size=8, early_stop=False,
        task_params={"bits": 4, "max_length": 3, "generalise": (5,)},
        model_params={**SMALL.get(model, {"hidden_size": 12})},
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    made: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in made:
            result = train(tiny(model), root, wandb_mode="disabled")
            assert result["status"] == "ok", result["error"]
            made[model] = R.run_dir(root, "default", "copy", model, 0)
        return made[model]

    return get


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("model", MODELS.names())
def test_eval_reproduces_the_record_exactly(runs, capsys, model):
    folder = runs(model)
    before = (folder / "result.json").read_bytes()
    code, out, err = run_cli(capsys, "eval", folder)
    assert code == 0, err
    written = json.loads((folder / "evals" / "record.json").read_text())
    final = R.read_result(folder / "result.json")["final"]
    assert {label: p["metrics"] for label, p in written["points"].items()} == final  # exactly, every float
    assert written["record"]["reproduced"] is True and "equals result.json's final metrics exactly" in out
    config = json.loads((folder / "config.json").read_text())
    assert {label: p["eval_hash"] for label, p in written["points"].items()} == config["eval_hashes"]
    assert (folder / "result.json").read_bytes() == before


def test_eval_at_a_new_length_writes_its_own_file(runs, capsys):
    folder = runs("lstm")
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    code, out, err = run_cli(capsys, "eval", folder, "--length", "7", "train", "--size", "4")
    assert code == 0, err
    path = folder / "evals" / "length-7-train_size-4.json"
    written = json.loads(path.read_text())
    assert list(written["points"]) == ["7", "train"] and written["size"] == 4
    assert written["points"]["7"]["length"] == 7 and written["record"]["reproduced"] is None
    assert f"wrote {path}" in out and "7" in out.splitlines()[3]
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before, "the record is untouched"


def test_eval_takes_several_runs(runs, capsys):
    folders = [runs("lstm"), runs("ntm")]
    code, out, err = run_cli(capsys, "eval", *folders, "--length", "6", "--size", "4")
    assert code == 0, err
    for folder in folders:
        assert (folder / "evals" / "length-6_size-4.json").exists() and f"({folder})" in out


def test_sample_overrides_in_eval_and_inspect(tmp_path, capsys):
    config = RunConfig(task="repeat_copy", model="lstm", sequences=32, batch_size=16, eval_every=32, eval_size=4,
                       task_params={"bits": 3, "max_length": 2, "max_repeats": 2, "generalise": (3,)},
                       model_params={"hidden_size": 8})
    assert train(config, tmp_path, wandb_mode="disabled")["status"] == "ok"
    folder = R.run_dir(tmp_path, "default", "repeat_copy", "lstm", 0)
    code, out, err = run_cli(capsys, "eval", folder, "--set", "task.repeats=3")
    assert code == 0, err
    written = json.loads((folder / "evals" / "repeats-3.json").read_text())
    assert list(written["points"]) == ["3,repeats=3", "repeats=3"]  # the record's points, each with repeats=3
    assert written["points"]["repeats=3"]["overrides"] == {"repeats": 3}
    code, out, err = run_cli(capsys, "inspect", folder, "--length", "2", "--set", "task.repeats=3", "--png", tmp_path / "r.svg")
    assert code == 0, err
    assert out.startswith("repeat_copy/lstm/seed-0: length 2, repeats=3 (sequence seed 0)")


def test_eval_with_task_parameters_and_overrides(runs, capsys):
    folder = runs("gru")
    code, out, err = run_cli(capsys, "eval", folder, "--set", "task.max_length=4", "--length", "train")
    assert code == 0, err
    written = json.loads((folder / "evals" / "length-train_max_length-4.json").read_text())
    assert written["changed_task_params"] == {"max_length": 4} and written["task_params"]["max_length"] == 4
    assert written["record"]["reproduced"] is None  # another task: nothing to compare


@pytest.mark.parametrize("model", MODELS.names())
def test_inspect_draws_every_model(runs, capsys, tmp_path, model):
    folder = runs(model)
    png = tmp_path / f"{model}.png"
    code, out, err = run_cli(capsys, "inspect", folder, "--length", "4", "--seed", "3", "--png", png)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert out.startswith(f"copy/{model}/seed-0: length 4 (sequence seed 3)")
    if _traced(model):
        assert "memory arrays: " in out
    else:
        assert "has no trace()" in out  # the plugin: inputs, targets and outputs only


@pytest.mark.parametrize("suffix,magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_inspect_writes_pdf_and_svg(runs, capsys, tmp_path, suffix, magic):
    out = tmp_path / f"ntm{suffix}"
    code, _, err = run_cli(capsys, "inspect", runs("ntm"), "--png", out)
    assert code == 0, err
    assert out.read_bytes().startswith(magic)


def _copy(folder: Path, to: Path) -> Path:
    dest = to / "runs" / "g" / "copy" / folder.parent.name / folder.name
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(".lock", "evals"))
    return dest


@pytest.mark.parametrize("command", ["eval", "inspect"])
def test_bad_input_is_one_clear_line(runs, capsys, tmp_path, command):
    folder = _copy(runs("lstm"), tmp_path)
    cases = []
    old = _copy(runs("rnn"), tmp_path)
    (old / "weights.pt").unlink()  # a record from before runs kept their weights
    cases.append(([old], "no trained weights (weights.pt)"))
    unfinished = _copy(runs("gru"), tmp_path)
    (unfinished / "result.json").unlink()
    cases.append(([unfinished], "the run is unfinished"))
    stranger = tmp_path / "runs" / "g" / "copy" / "stranger" / "seed-0"
    shutil.copytree(folder, stranger)
    config = json.loads((stranger / "config.json").read_text())
    config["run"]["model"] = "stranger"
    (stranger / "config.json").write_text(json.dumps(config))
    cases.append(([stranger], "model 'stranger' is not installed; load the plugin"))
    cases.append(([folder, "--length", "400000000"], "over the limit"))
    cases.append(([tmp_path / "nowhere"], "no such run folder"))
    cases.append(([folder, "--set", "task.bits=5"], "keep the input and output widths"))
    for args, needle in cases:
        code, out, err = run_cli(capsys, command, *args)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("memtasks: error: ") and needle in err, err
        assert "Traceback" not in err


def test_wandb_logs_the_inspection_figure():
    pytest.importorskip("wandb")
    from PIL import Image

    from memtasks.train.wandb_log import _example_image

    task = get_task("copy", bits=4, max_length=3)
    plain = build_model("mgu", task.d_in, task.d_out, hidden_size=6)
    traced = build_model("ntm", task.d_in, task.d_out, **SMALL["ntm"])
    sizes = [_example_image(m, task, torch.device("cpu")).image.size for m in (plain, traced)]
    assert sizes[1][1] > sizes[0][1], "the NTM's figure has its memory panels below the outputs"
    assert all(isinstance(s, tuple) for s in sizes) and Image is not None


def test_a_diverged_models_non_finite_weights_are_drawn(tmp_path):
    from memtasks.memory_figure import example_batch, inspect_figure

    task = get_task("copy", bits=4, max_length=3)
    model = build_model("ntm", task.d_in, task.d_out, **SMALL["ntm"])
    with torch.no_grad():
        model.w_p.fill_(float("nan"))  # what a diverged run's weights.pt may hold
    fig = inspect_figure(model, task, example_batch(task, 3, seed=1), 0, "diverged")
    fig.savefig(tmp_path / "nan.png")
    assert (tmp_path / "nan.png").stat().st_size > 0


def test_focus_paths_follow_each_heads_peak_around_the_ring() -> None:
    from memtasks.memory_figure import focus_paths

    n, T = 10, 14
    peaks = [(8 + t) % n for t in range(6)] + [0, 0] + [1 + t for t in range(6)]  # wraps 9 -> 0; a jump back; a stall
    write = F.one_hot(torch.tensor(peaks), n).float().view(1, T, 1, n) * 0.9  # (B, T, heads, N), rows sum to 0.9
    two_heads = torch.stack([write[:, :, 0], write[:, :, 0].roll(1, -1)], 2)  # heads drawn as [0] and [1]
    arrays = {
        "write_weights": write,
        "read_weights": two_heads,
        "usage": torch.ones(1, T, n) * 0.7,  # rows sum to 7: not a weighting
        "add": torch.randn(1, T, 1, n),  # negative values: not a weighting
        "read_modes": torch.full((1, T, 1, 3), 1 / 3),  # 3 rows: modes, not locations
    }
    lines = focus_paths(arrays)
    assert [line.split(":")[0] for line in lines] == ["write_weights", "read_weights [0]", "read_weights [1]"]
    # steps 0-5 one location forward each (9 -> 0 is +1 on the ring), 5 -> 6 back 3, 6 -> 7 still, then forward
    assert lines[0] == "write_weights: peak moves +1 x11, -3 x1, +0 x1; t0-5: +1 | t5: -3 | t6: +0 | t7-13: +1"
    assert lines[1].split(":", 1)[1] == lines[2].split(":", 1)[1]  # a rolled head moves the same way

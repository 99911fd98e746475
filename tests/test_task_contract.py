"""The contract every registered task meets (generated from the registry, plugins included)."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

import memtasks
from memtasks.tasks import TASKS, get_task

TASK_NAMES = memtasks.list_tasks()


def test_all_design_card_tasks_registered():
    for name in ("copy", "repeat_copy", "associative_recall", "dynamic_ngrams", "priority_sort",
                 "binary_addition", "delayed_xor", "adding"):
        assert name in TASK_NAMES


@pytest.fixture(params=TASK_NAMES)
def task(request):
    return get_task(request.param)


def test_shapes_and_dtypes(task):
    g = torch.Generator().manual_seed(0)
    b = task.sample(5, g)
    B, T, _ = b.inputs.shape
    assert B == 5
    assert b.inputs.dtype == torch.float32 and b.targets.dtype == torch.float32
    assert b.mask.dtype == torch.bool
    assert b.inputs.shape[-1] == task.d_in and b.targets.shape == (B, T, task.d_out)
    assert b.mask.shape == (B, T)
    assert b.lengths.shape == (B,)
    assert b.mask.any(dim=1).all(), "every sequence has scored steps"
    assert T <= task.max_steps(task.train_range[1])


def test_padding_is_unscored_and_zero(task):
    g = torch.Generator().manual_seed(1)
    b = task.sample(16, g)
    steps = b.extras["steps"]
    t = torch.arange(b.inputs.shape[1]).unsqueeze(0)
    pad = t >= steps.unsqueeze(1)
    assert not (b.mask & pad).any()
    assert (b.inputs[pad] == 0).all() and (b.targets[pad] == 0).all()
    assert int(steps.max()) == b.inputs.shape[1]


def test_deterministic_from_generator(task):
    a = task.sample(4, torch.Generator().manual_seed(7))
    b = task.sample(4, torch.Generator().manual_seed(7))
    c = task.sample(4, torch.Generator().manual_seed(8))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets) and torch.equal(a.mask, b.mask)
    assert not (a.inputs.shape == c.inputs.shape and torch.equal(a.inputs, c.inputs))


def test_global_rng_untouched(task):
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    task.sample(8, torch.Generator().manual_seed(3))
    task.eval_batch(None, size=8)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert all(np.array_equal(x, y) for x, y in zip(np_state[1:2], np.random.get_state()[1:2]))
    assert py_state == random.getstate()


def test_length_honoured(task):
    lo, hi = task.train_range
    for n in {lo, hi}:
        b = task.sample(3, torch.Generator().manual_seed(0), length=n)
        assert (b.lengths == n).all()
    g = task.generalisation_lengths
    if g:
        b = task.sample(2, torch.Generator().manual_seed(0), length=g[0])
        assert (b.lengths == g[0]).all()
    b = task.sample(64, torch.Generator().manual_seed(0))
    assert int(b.lengths.min()) >= lo and int(b.lengths.max()) <= hi


def test_device_placement(task):
    b = task.sample(2, torch.Generator().manual_seed(0), device="cpu")
    assert b.inputs.device.type == "cpu" and b.mask.device.type == "cpu"
    if torch.cuda.is_available():  # the GPU path runs where there is one
        gb = task.sample(2, torch.Generator(device="cuda").manual_seed(0), device="cuda")
        assert gb.inputs.is_cuda and gb.mask.is_cuda


def test_eval_batch_fixed_and_hashed(task):
    a = task.eval_batch(None, size=8)
    b = task.eval_batch(None, size=8)
    assert torch.equal(a.inputs, b.inputs)
    assert task.eval_hash(None, size=8) == a.content_hash()
    assert task.eval_hash(None, size=8, seed=1) != task.eval_hash(None, size=8, seed=0)
    for label, (length, overrides) in task.eval_points().items():
        if length is None or length <= 2 * task.train_range[1]:
            eb = task.eval_batch(length, size=2, **overrides)
            assert eb.mask.any()


def test_bad_parameters_rejected_with_field_name(task):
    cls = type(task)
    int_fields = [f for f in dataclasses.fields(cls) if f.type in ("int", int)]
    assert int_fields, f"{task.name} has integer parameters to validate"
    f = int_fields[0]
    with pytest.raises(ValueError, match=f.name):
        get_task(task.name, **{f.name: -5})
    with pytest.raises(TypeError, match="no_such_field"):
        get_task(task.name, no_such_field=1)


def test_metrics_and_loss(task):
    b = task.eval_batch(None, size=4)
    perfect = b.targets * 40 - 20 if task.loss == "bce" else b.targets
    m = task.metrics(perfect, b)
    if task.loss == "bce":
        assert m["bit_errors"] == 0 and m["seq_accuracy"] == 1.0 and m["cost"] < 1e-3
    else:
        assert m["mse"] == 0
    assert task.solved_metric in m
    assert torch.isfinite(task.loss_fn(torch.zeros_like(b.targets), b))


def test_docstring_has_worked_example(task):
    doc = type(task).__doc__ or ""
    assert "example" in doc.lower() and len(doc) > 200


def test_unknown_task_suggests():
    with pytest.raises(ValueError, match="did you mean 'copy'"):
        get_task("cpy")


def test_unknown_sample_override_rejected():
    with pytest.raises(TypeError, match="bogus"):
        get_task("copy").sample(2, torch.Generator(), bogus=3)


def test_entry_point_task_plugin(tmp_path, monkeypatch):
    """A task registered by an installed package's entry point is found by name."""
    import importlib.metadata
    import sys

    pkg = tmp_path / "mt_task_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from dataclasses import dataclass\n"
        "from memtasks.tasks.copy import Copy\n"
        "from memtasks import register_task\n"
        "@register_task('plugin_copy')\n"
        "@dataclass(frozen=True)\n"
        "class PluginCopy(Copy):\n"
        "    '''Copy, registered by a plugin. Worked example: see copy.''' \n"
    )
    dist = tmp_path / "mt_task_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mt-task-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[memtasks.tasks]\nplugin_copy = mt_task_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setattr(TASKS, "_entry_points_loaded", False)
    try:
        assert "plugin_copy" in memtasks.list_tasks()
        assert get_task("plugin_copy").d_in == 9
    finally:
        TASKS.unregister("plugin_copy")
        sys.modules.pop("mt_task_plugin", None)

"""The contract every registered model meets (generated from the registry, plugins included)."""
from __future__ import annotations

import copy as _copy
import gc

import pytest
import torch

import memtasks
import memtasks.models as models
from memtasks.models import MODELS, build_model

MODEL_NAMES = models.list_models()
D_IN, D_OUT = 5, 4
SMALL = {  # small sizes keep the suite fast; defaults are covered by build tests
    "ntm": {"hidden_size": 24, "memory_slots": 16, "memory_width": 6},
    "dnc": {"hidden_size": 24, "memory_slots": 16, "memory_width": 6},
    "esn": {"reservoir_size": 40},
}


def small(name: str, **kw) -> models.MemoryModel:
    torch.manual_seed(0)
    hp = dict(SMALL.get(name, {"hidden_size": 16}))
    hp.update(kw)
    return build_model(name, D_IN, D_OUT, **hp)


def test_all_design_card_models_registered():
    for name in ("rnn", "lstm", "gru", "gru1", "gru2", "gru3", "indrnn", "esn", "ntm", "dnc"):
        assert name in MODEL_NAMES


@pytest.fixture(params=MODEL_NAMES)
def name(request):
    return request.param


def _flat(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in _flat(s)]


def test_shape_arity_and_state(name):
    m = small(name)
    x = torch.randn(3, 7, D_IN)
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 2
    y, state = out
    assert y.shape == (3, 7, D_OUT)
    for t in _flat(state):
        assert t.shape[0] == 3, "state is batch first"
    y2, state2 = m(x, m.initial_state(3, x.device))
    assert torch.allclose(y, y2, atol=1e-6)
    assert m.state_size() == sum(t[0].numel() for t in _flat(state))
    trainable, total = m.param_counts()
    assert 0 < trainable <= total


def test_wrong_input_shape_names_model(name):
    m = small(name)
    with pytest.raises(ValueError, match=name):
        m(torch.randn(2, 3, D_IN + 1))


def test_chunked_forward_equals_whole(name):
    m = small(name)
    x = torch.randn(2, 9, D_IN)
    y, _ = m(x)
    y1, s = m(x[:, :4])
    y2, _ = m(x[:, 4:], s)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-5, rtol=1e-5)


def test_forward_leaves_module_unchanged(name):
    m = small(name)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    attrs = {k: _copy.copy(v) for k, v in vars(m).items() if not k.startswith("_")}
    m(torch.randn(2, 5, D_IN))
    m.train()
    m(torch.randn(2, 5, D_IN))
    for k, v in m.state_dict().items():
        assert torch.equal(before[k], v), f"{name}.forward changed {k}"
    for k, v in vars(m).items():
        if not k.startswith("_"):
            assert k in attrs and (attrs[k] is v or attrs[k] == v), f"{name}.forward changed attribute {k}"


def test_no_shared_parameter_storage(name):
    a, b = build_model(name, D_IN, D_OUT, **SMALL.get(name, {})), build_model(name, D_IN, D_OUT, **SMALL.get(name, {}))
    ptrs = {p.data_ptr() for p in a.parameters()} | {t.data_ptr() for t in a.buffers()}
    for t in list(b.parameters()) + list(b.buffers()):
        assert t.data_ptr() not in ptrs


def test_gradients_reach_every_trainable_parameter(name):
    m = small(name)
    x = torch.randn(3, 6, D_IN)
    y, _ = m(x)
    y.pow(2).mean().backward()
    for pname, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"
    if name == "esn":
        assert [n for n, p in m.named_parameters() if p.requires_grad] == ["readout.weight", "readout.bias"] or all(
            n.startswith("readout") for n, p in m.named_parameters() if p.requires_grad
        )


def test_a_training_step_leaves_no_tensor_in_a_reference_cycle(name):
    """What a step allocates is freed when its last reference goes, not when the garbage collector next
    runs: a cycle through an autograd node (an output kept on ``ctx``) would hold every buffer of the
    step, megabytes for the memory models, until then."""
    m = small(name)
    x = torch.randn(3, 9, D_IN)  # longer than the DNC kernel's checkpoint segment
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        y, state = m(x)
        y.pow(2).mean().backward()
        del y, state
        gc.collect()
        cycled = [o for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not cycled, f"{name}: {len(cycled)} tensors of a training step sit in reference cycles"


def test_deterministic_under_seed(name):
    a, b = small(name), small(name)
    x = torch.randn(2, 4, D_IN)
    torch.testing.assert_close(a(x)[0], b(x)[0])


def test_budget_lands_within_five_percent(name):
    cls = MODELS.get(name)
    if cls.size_knob is None:
        pytest.skip("no size knob")
    # the ESN's trainable part is its readout only: a 30k budget would mean a 3,700-unit reservoir
    budget = 5_000 if name == "esn" else 30_000
    m = build_model(name, 9, 8, param_budget=budget)
    trainable, _ = m.param_counts()
    assert abs(trainable - budget) / budget <= 0.05, (name, trainable, m.budget_info)
    assert m.budget_info["trainable_params"] == trainable


def test_unknown_hparam_and_model_name():
    with pytest.raises(TypeError, match="hidden_sise"):
        build_model("lstm", 3, 3, hidden_sise=4)
    with pytest.raises(ValueError, match="did you mean 'lstm'"):
        build_model("lstmm", 3, 3)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if not MODELS.get(n).closed_form])
def test_learning_sanity_on_short_copy(name):
    """A few hundred steps on copy with lengths 1-3 drive the loss clearly below its start."""
    task = memtasks.get_task("copy", bits=4, max_length=3)
    torch.manual_seed(0)
    m = build_model(name, task.d_in, task.d_out, **SMALL.get(name, {"hidden_size": 32}))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    eval_b = task.eval_batch(None, size=64)

    def eval_loss() -> float:
        with torch.no_grad():
            return task.loss_fn(m(eval_b.inputs)[0], eval_b).item()

    start = eval_loss()
    for _ in range(300):
        b = task.sample(16, g)
        loss = task.loss_fn(m(b.inputs)[0], b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_optimizer_step()
    end = eval_loss()
    assert end < 0.75 * start, (name, start, end)


def test_registry_rejects_bad_classes():
    from dataclasses import dataclass

    from memtasks.core.registry import RegistryError

    @dataclass(frozen=True)
    class Cfg:
        hidden_size: int = 4

    with pytest.raises(RegistryError, match="already registered"):
        @models.register_model("lstm", config=Cfg)
        class Other(models.MemoryModel):
            def forward(self, x, state=None):
                return x, state

            def initial_state(self, batch_size, device=None):
                return None

    with pytest.raises(RegistryError, match="forward"):
        @models.register_model("broken_model", config=Cfg)
        class Broken(models.MemoryModel):
            pass

    with pytest.raises(RegistryError, match="subclass"):
        models.register_model("not_a_model", config=Cfg)(object)
    assert "broken_model" not in MODELS

"""Oracle tests for repeat_copy, associative_recall and priority_sort.

Each reference below decodes a sequence from its *inputs alone*, with a plain Python loop,
computes the answer the task asks for, and checks the targets and mask against it. The
references share no code with the generators.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest
import torch

from memtasks import get_task
from memtasks.tasks.base import Batch, Task
from memtasks.tasks.priority_sort import priority_order

Rows = list[list[float]]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_tail(task: Task, batch: Batch) -> None:
    """Shapes, and all-zero, unscored padding past each sequence's ``steps``."""
    n, T, _ = batch.inputs.shape
    assert batch.inputs.shape[2] == task.d_in and batch.targets.shape == (n, T, task.d_out)
    assert batch.mask.dtype == torch.bool and batch.mask.shape == (n, T)
    steps = batch.extras["steps"]
    assert T == int(steps.max())
    pad = torch.arange(T).unsqueeze(0) >= steps.unsqueeze(1)
    assert not batch.inputs[pad].any() and not batch.targets[pad].any() and not batch.mask[pad].any()
    # max_steps bounds the training range of the other axes: repeat_copy's R <= max_repeats
    repeats = batch.extras.get("repeats")
    for b in range(n):
        if repeats is None or int(repeats[b]) <= task.max_repeats:
            assert int(steps[b]) <= task.max_steps(int(batch.lengths[b]))


def _check_answer(targets: Rows, mask: list[bool], start: int, expected: Rows) -> None:
    """``expected`` sits on steps start.. and is exactly what is scored; other targets are zero."""
    T, d = len(targets), len(targets[0])
    want = [[0.0] * d for _ in range(T)]
    want_mask = [False] * T
    for i, row in enumerate(expected):
        want[start + i] = row
        want_mask[start + i] = True
    assert targets == want
    assert mask == want_mask


# --- repeat_copy ---------------------------------------------------------------------------


def _training_stats(lo: int, hi: int) -> tuple[float, float]:
    values = list(range(lo, hi + 1))
    return statistics.mean(values), (statistics.pstdev(values) if lo < hi else 1.0)


def _oracle_repeat_copy(task: Task, batch: Batch) -> list[int]:
    """Check every sequence; return the decoded repeat counts."""
    _check_tail(task, batch)
    nb = task.bits
    mean, std = _training_stats(task.min_repeats, task.max_repeats)
    inputs, targets, mask = batch.inputs.tolist(), batch.targets.tolist(), batch.mask.tolist()
    decoded = []
    for b, seq in enumerate(inputs):
        L = next(t for t, x in enumerate(seq) if x[nb] == 1.0)
        assert L == int(batch.lengths[b])
        data = [x[:nb] for x in seq[:L]]
        assert all(x[nb] == 0 and x[nb + 1] == 0 for x in seq[:L])
        R = round(seq[L + 1][nb + 1] * std + mean)
        assert math.isclose(seq[L + 1][nb + 1], (R - mean) / std, rel_tol=1e-6, abs_tol=1e-6)
        assert all(v == 0 for x in seq[L + 2 :] for v in x)
        expected = [row + [0.0] for _ in range(R) for row in data] + [[0.0] * nb + [1.0]]
        _check_answer(targets[b], mask[b], L + 2, expected)
        decoded.append(R)
    return decoded


def test_repeat_copy_mixed_lengths() -> None:
    task = get_task("repeat_copy")
    batch = task.sample(300, _gen(0))
    reps = _oracle_repeat_copy(task, batch)
    assert set(batch.lengths.tolist()) == set(range(1, 11))
    assert set(reps) == set(range(1, 11))
    assert reps == batch.extras["repeats"].tolist()


@pytest.mark.parametrize("length", [1, 7, 20])
def test_repeat_copy_fixed_length(length: int) -> None:
    task = get_task("repeat_copy", bits=5)
    batch = task.sample(40, _gen(length), length=length)
    assert batch.lengths.tolist() == [length] * 40
    _oracle_repeat_copy(task, batch)


def test_repeat_copy_fixed_repeats_use_training_statistics() -> None:
    task = get_task("repeat_copy")
    batch = task.sample(50, _gen(1), repeats=20)
    assert _oracle_repeat_copy(task, batch) == [20] * 50
    rows = torch.arange(50)
    value = batch.inputs[rows, batch.lengths + 1, task.bits + 1]
    # training range 1..10: mean 5.5, std sqrt(99/12)
    assert torch.allclose(value, torch.full((50,), (20 - 5.5) / math.sqrt(99 / 12)))
    assert batch.mask.sum(1).tolist() == (20 * batch.lengths + 1).tolist()
    # the eval point the task declares gives the same thing
    assert task.eval_batch(None, size=8, **dict(task.generalisation_overrides)).extras["repeats"].eq(20).all()


@pytest.mark.parametrize(("lo", "hi", "repeats"), [(2, 4, 7), (3, 3, 5)])
def test_repeat_copy_normalisation_other_ranges(lo: int, hi: int, repeats: int) -> None:
    task = get_task("repeat_copy", bits=3, min_repeats=lo, max_repeats=hi, max_length=4)
    _oracle_repeat_copy(task, task.sample(30, _gen(2)))
    batch = task.sample(10, _gen(3), repeats=repeats)
    mean, std = _training_stats(lo, hi)
    value = batch.inputs[torch.arange(10), batch.lengths + 1, task.bits + 1]
    assert torch.allclose(value, torch.full((10,), (repeats - mean) / std))
    assert _oracle_repeat_copy(task, batch) == [repeats] * 10


# --- associative_recall ----------------------------------------------------------------------


def _oracle_associative_recall(task: Task, batch: Batch) -> list[tuple[int, int]]:
    """Check every sequence; return (K, query index) per sequence."""
    _check_tail(task, batch)
    nb, S = task.bits, task.item_size
    inputs, targets, mask = batch.inputs.tolist(), batch.targets.tolist(), batch.mask.tolist()
    decoded = []
    for b, seq in enumerate(inputs):
        items, t = [], 0
        while seq[t][nb] == 1.0:  # item delimiter
            assert seq[t][:nb] == [0.0] * nb and seq[t][nb + 1] == 0
            vecs = seq[t + 1 : t + 1 + S]
            assert all(x[nb] == 0 and x[nb + 1] == 0 for x in vecs)
            items.append(tuple(tuple(x[:nb]) for x in vecs))
            t += S + 1
        K = len(items)
        assert K == int(batch.lengths[b])
        assert len(set(items)) == K, "items of a sequence must be distinct"
        assert seq[t] == [0.0] * nb + [0.0, 1.0]
        query = tuple(tuple(x[:nb]) for x in seq[t + 1 : t + 1 + S])
        assert all(x[nb] == 0 and x[nb + 1] == 0 for x in seq[t + 1 : t + 1 + S])
        assert seq[t + S + 1] == [0.0] * nb + [0.0, 1.0]
        assert all(v == 0 for x in seq[t + S + 2 :] for v in x)
        q = items.index(query)
        assert q <= K - 2, "the query is never the last item"
        _check_answer(targets[b], mask[b], t + S + 2, [list(v) for v in items[q + 1]])
        decoded.append((K, q))
    return decoded


def test_associative_recall_mixed_lengths() -> None:
    task = get_task("associative_recall")
    batch = task.sample(300, _gen(0))
    decoded = _oracle_associative_recall(task, batch)
    assert {k for k, _ in decoded} == set(range(2, 7))


@pytest.mark.parametrize("length", [2, 12, 20])
def test_associative_recall_fixed_length(length: int) -> None:
    task = get_task("associative_recall")
    batch = task.sample(40, _gen(length), length=length)
    assert [k for k, _ in _oracle_associative_recall(task, batch)] == [length] * 40


def test_associative_recall_distinct_at_full_capacity() -> None:
    # 2 bits x 2 vectors = 16 possible items, all 16 used: collisions are certain and re-drawn
    task = get_task("associative_recall", bits=2, item_size=2, min_items=2, max_items=6, generalise=(16,))
    _oracle_associative_recall(task, task.sample(64, _gen(4), length=16))
    _oracle_associative_recall(task, task.sample(200, _gen(5)))


def test_associative_recall_query_uniform() -> None:
    task = get_task("associative_recall", bits=3, item_size=2)
    batch = task.sample(3000, _gen(6), length=6)
    counts = Counter(q for _, q in _oracle_associative_recall(task, batch))
    assert set(counts) == set(range(5))
    assert all(abs(c - 600) < 120 for c in counts.values()), counts


def test_associative_recall_rejects_impossible_lengths() -> None:
    task = get_task("associative_recall")
    with pytest.raises(ValueError, match="length"):
        task.sample(2, _gen(0), length=1)
    with pytest.raises(ValueError, match="generalise"):
        get_task("associative_recall", bits=2, item_size=2, generalise=(17,))


# --- priority_sort ---------------------------------------------------------------------------


def _oracle_priority_sort(task: Task, batch: Batch) -> list[list[float]]:
    """Check every sequence; return the decoded priorities."""
    _check_tail(task, batch)
    nb = task.bits
    inputs, targets, mask = batch.inputs.tolist(), batch.targets.tolist(), batch.mask.tolist()
    decoded = []
    for b, seq in enumerate(inputs):
        N = next(t for t, x in enumerate(seq) if x[nb + 1] == 1.0)
        assert N == int(batch.lengths[b])
        assert seq[N] == [0.0] * (nb + 1) + [1.0]
        vectors = [x[:nb] for x in seq[:N]]
        prios = [x[nb] for x in seq[:N]]
        assert all(-1.0 <= p <= 1.0 for p in prios)
        assert all(v == 0 for x in seq[N + 1 :] for v in x)
        K = int(0.8 * N + 1e-9)
        order = sorted(range(N), key=lambda i: -prios[i])  # Python's sort is stable
        _check_answer(targets[b], mask[b], N + 1, [vectors[i] for i in order[:K]])
        decoded.append(prios)
    return decoded


def test_priority_sort_default() -> None:
    task = get_task("priority_sort")
    batch = task.sample(200, _gen(0))
    assert batch.lengths.eq(20).all() and batch.mask.sum(1).eq(16).all()
    prios = [p for row in _oracle_priority_sort(task, batch) for p in row]
    assert min(prios) < -0.99 and max(prios) > 0.99


def test_priority_sort_mixed_lengths() -> None:
    task = get_task("priority_sort", bits=4, min_inputs=2, max_inputs=25)
    batch = task.sample(300, _gen(1))
    _oracle_priority_sort(task, batch)
    assert set(batch.lengths.tolist()) == set(range(2, 26))


@pytest.mark.parametrize("length", [2, 30, 40])
def test_priority_sort_fixed_length(length: int) -> None:
    task = get_task("priority_sort")
    batch = task.sample(30, _gen(length), length=length)
    assert batch.mask.sum(1).eq(4 * length // 5).all()
    _oracle_priority_sort(task, batch)


def test_priority_sort_ties_keep_input_order_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # quantise the priorities to {-1, -0.5, 0, 0.5} so that ties are everywhere
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: (real_rand(*a, **k) * 4).floor() / 4)
    task = get_task("priority_sort", bits=3, min_inputs=2, max_inputs=20)
    batch = task.sample(200, _gen(2))
    prios = _oracle_priority_sort(task, batch)
    assert any(len(set(p)) < len(p) for p in prios)


def test_priority_order_is_stable() -> None:
    g = _gen(3)
    lengths = torch.randint(1, 13, (100,), generator=g)
    prio = torch.randint(-2, 3, (100, 12), generator=g).float()
    order = priority_order(prio, lengths).tolist()
    for b in range(100):
        n = int(lengths[b])
        p = prio[b].tolist()
        assert order[b][:n] == sorted(range(n), key=lambda i: -p[i])
        assert sorted(order[b][n:]) == list(range(n, 12))
    # the plainest tie: all equal priorities give the input order
    assert priority_order(torch.zeros(1, 5), torch.tensor([5])).tolist() == [[0, 1, 2, 3, 4]]


# --- all three -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("repeat_copy", "bits", 0),
        ("repeat_copy", "max_length", 0),
        ("repeat_copy", "max_repeats", 0),
        ("repeat_copy", "generalise", (0,)),
        ("associative_recall", "min_items", 1),
        ("associative_recall", "item_size", 0),
        ("associative_recall", "max_items", 1),
        ("priority_sort", "min_inputs", 1),
        ("priority_sort", "max_inputs", 19),
        ("priority_sort", "bits", 2.5),
    ],
)
def test_invalid_parameters_name_the_field(name: str, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        get_task(name, **{field: value})


def test_bad_repeats_override() -> None:
    with pytest.raises(ValueError, match="repeats"):
        get_task("repeat_copy").sample(2, _gen(0), repeats=0)


@pytest.mark.parametrize("name", ["repeat_copy", "associative_recall", "priority_sort"])
def test_generation_is_deterministic(name: str) -> None:
    task = get_task(name)
    a, b = task.sample(16, _gen(9)), task.sample(16, _gen(9))
    assert a.content_hash() == b.content_hash()
    assert task.loss == "bce" and task.version == "1" and task.solved_metric == "bit_errors"

"""Oracle tests for binary_addition, delayed_xor, adding and dynamic_ngrams.

Every reference here is computed from the batch's inputs alone, one sequence at a time, with
plain Python (ints, lists, dicts), independently of the vectorised generators.
"""
from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
import torch

from memtasks import get_task
from memtasks.tasks.dynamic_ngrams import bayes_optimal_cost, sequence_bits


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- binary_addition ----------------------------------------------------------------------------


def _bits_to_int(bits: list[float]) -> int:
    return sum(int(b) << i for i, b in enumerate(bits))


def _check_addition_sequence(mode: str, n: int, inp: list[list[float]], tgt: list[float], mask: list[bool]) -> None:
    T = len(mask)
    if mode == "sequential":
        assert inp[n][1] == 1 and inp[2 * n + 1][1] == 1
        assert [t for t in range(T) if inp[t][1] != 0] == [n, 2 * n + 1]
        a = _bits_to_int([inp[t][0] for t in range(n)])
        b = _bits_to_int([inp[t][0] for t in range(n + 1, 2 * n + 1)])
        assert all(inp[t][0] == 0 for t in (n, *range(2 * n + 1, T)))
        answer_steps = list(range(2 * n + 2, 3 * n + 3))
    else:
        a = _bits_to_int([inp[t][0] for t in range(n)])
        b = _bits_to_int([inp[t][1] for t in range(n)])
        assert all(inp[t] == [0.0, 0.0] for t in range(n, T))
        answer_steps = list(range(n + 1))
    total = a + b
    assert [t for t in range(T) if mask[t]] == answer_steps
    assert [int(tgt[t]) for t in answer_steps] == [(total >> i) & 1 for i in range(n + 1)]
    assert all(tgt[t] == 0 for t in range(T) if not mask[t])


@pytest.mark.parametrize("mode", ["sequential", "online"])
@pytest.mark.parametrize("length", [None, 1, 7, 40, 100])
def test_binary_addition_matches_python_ints(mode: str, length: int | None) -> None:
    task = get_task("binary_addition", mode=mode)
    batch = task.sample(64, _gen(11), length=length)
    lengths = batch.lengths.tolist()
    if length is None:
        assert len(set(lengths)) > 1  # mixed lengths really are mixed
        assert all(task.min_bits <= n <= task.max_bits for n in lengths)
    assert batch.inputs.shape == (64, task.max_steps(max(lengths)), 2)
    assert batch.extras["steps"].tolist() == [task.max_steps(n) for n in lengths]
    inputs, targets, mask = batch.inputs.tolist(), batch.targets[..., 0].tolist(), batch.mask.tolist()
    for s in range(64):
        _check_addition_sequence(mode, lengths[s], inputs[s], targets[s], mask[s])


def test_binary_addition_operands_use_every_bit() -> None:
    # leading zeros allowed, but the top bit of a 100-bit operand is set about half the time
    batch = get_task("binary_addition").sample(400, _gen(3), length=100)
    top = batch.inputs[:, 99, 0]
    assert 0.35 < top.mean().item() < 0.65


# --- delayed_xor and adding ---------------------------------------------------------------------


def _check_marker_sequence(
    T0: int, T: int, inp: list[list[float]], mask: list[bool], windows: str = "fixed"
) -> tuple[int, int]:
    assert T0 <= T <= math.floor(Fraction(11, 10) * T0)
    marks = [t for t, row in enumerate(inp) if row[1] != 0]
    assert len(marks) == 2
    i, j = marks
    first_end = 10 if windows == "fixed" else T // 10  # version 1: [0, 10); version 2: the first tenth
    assert 0 <= i < first_end <= j < T // 2
    assert [t for t, row in enumerate(inp) if row[2] != 0] == [T - 1]
    assert [t for t in range(len(mask)) if mask[t]] == [T - 1]
    assert all(row == [0.0, 0.0, 0.0] for row in inp[T:])
    return i, j


@pytest.mark.parametrize("length", [None, 22, 100, 1000])
def test_delayed_xor_is_xor_of_marked_bits(length: int | None) -> None:
    task = get_task("delayed_xor", marker_windows="fixed")  # encoding version 1
    batch = task.sample(32, _gen(5), length=length)
    T0s, steps = batch.lengths.tolist(), batch.extras["steps"].tolist()
    assert batch.inputs.shape[1] == max(steps) <= task.max_steps(max(T0s))
    inputs, targets, mask = batch.inputs.tolist(), batch.targets[..., 0].tolist(), batch.mask.tolist()
    for s in range(32):
        T = steps[s]
        i, j = _check_marker_sequence(T0s[s], T, inputs[s], mask[s])
        assert all(row[0] in (0.0, 1.0) for row in inputs[s][:T])
        assert targets[s][T - 1] == float(int(inputs[s][i][0]) ^ int(inputs[s][j][0]))
        assert sum(targets[s]) == targets[s][T - 1]


@pytest.mark.parametrize("length", [None, 22, 1000, 5000])
def test_adding_is_sum_of_marked_values(length: int | None) -> None:
    task = get_task("adding")
    batch = task.sample(16, _gen(6), length=length)
    T0s, steps = batch.lengths.tolist(), batch.extras["steps"].tolist()
    inputs, targets, mask = batch.inputs.tolist(), batch.targets[..., 0].tolist(), batch.mask.tolist()
    for s in range(16):
        T = steps[s]
        i, j = _check_marker_sequence(T0s[s], T, inputs[s], mask[s])
        assert all(0.0 <= row[0] < 1.0 for row in inputs[s][:T])
        assert targets[s][T - 1] == pytest.approx(inputs[s][i][0] + inputs[s][j][0], abs=1e-6)


def test_marker_layout_covers_its_ranges() -> None:
    batch = get_task("delayed_xor", marker_windows="fixed").sample(2000, _gen(8), length=50)
    steps = batch.extras["steps"]
    assert set(steps.tolist()) == set(range(50, 56))
    marks = batch.inputs[:, :, 1].nonzero()[:, 1].view(-1, 2)
    assert set(marks[:, 0].tolist()) == set(range(10))
    assert marks[:, 1].min().item() == 10 and marks[:, 1].max().item() == 26  # floor(55 / 2) - 1


@pytest.mark.parametrize("length", [None, 10, 23, 100, 1000])
def test_delayed_xor_scaled_windows(length: int | None) -> None:
    """Encoding version 2 (the default): i in [0, floor(T/10)), j in [floor(T/10), floor(T/2))."""
    task = get_task("delayed_xor", min_length=10, base_length=100)
    assert task.version == "2" and task.train_range == (10, 100)
    batch = task.sample(64, _gen(7), length=length)
    T0s, steps = batch.lengths.tolist(), batch.extras["steps"].tolist()
    inputs, targets, mask = batch.inputs.tolist(), batch.targets[..., 0].tolist(), batch.mask.tolist()
    for s in range(64):
        T = steps[s]
        i, j = _check_marker_sequence(T0s[s], T, inputs[s], mask[s], windows="scaled")
        assert targets[s][T - 1] == float(int(inputs[s][i][0]) ^ int(inputs[s][j][0]))


def test_scaled_windows_cover_their_ranges_and_match_version_1_at_t_100() -> None:
    batch = get_task("delayed_xor").sample(4000, _gen(8), length=20)
    steps = batch.extras["steps"]
    marks = batch.inputs[:, :, 1].nonzero()[:, 1].view(-1, 2)
    assert set(steps.tolist()) == {20, 21, 22}
    assert set(marks[:, 0].tolist()) == {0, 1} and set(marks[:, 1].tolist()) == set(range(2, 11))  # floor(22/2) - 1
    at_100 = {w: get_task("delayed_xor", marker_windows=w).sample(64, _gen(3), length=100) for w in ("fixed", "scaled")}
    same = at_100["fixed"].extras["steps"] < 110  # floor(T/10) = 10 for T in [100, 109]: the same windows
    assert same.sum() > 32 and torch.equal(at_100["fixed"].inputs[same], at_100["scaled"].inputs[same])


def test_a_field_at_its_old_value_keeps_the_old_evaluation_sets() -> None:
    fixed = get_task("delayed_xor", marker_windows="fixed")
    assert fixed.version == "1" and "marker_windows" not in fixed.seed_params()
    assert get_task("adding").seed_params() == {"base_length": 100, "generalise": (200, 500, 1000, 5000)}
    assert fixed.eval_hash(None, 8) != get_task("delayed_xor").eval_hash(None, 8)


def test_adding_constant_baseline_mse() -> None:
    task = get_task("adding")
    batch = task.sample(4000, _gen(9))
    ones = torch.ones_like(batch.targets)
    assert task.metrics(ones, batch)["mse"] == pytest.approx(1 / 6, abs=0.015)


def test_marker_tasks_reject_short_lengths() -> None:
    with pytest.raises(ValueError, match="base_length"):
        get_task("delayed_xor", base_length=21, marker_windows="fixed")
    with pytest.raises(ValueError, match="base_length"):
        get_task("delayed_xor", base_length=9)  # the scaled windows need T0 >= 10
    with pytest.raises(ValueError, match="min_length"):
        get_task("delayed_xor", base_length=50, min_length=60)
    with pytest.raises(ValueError, match="generalise"):
        get_task("adding", generalise=(10,))
    with pytest.raises(ValueError, match="too short"):
        get_task("adding").sample(4, _gen(0), length=21)


def test_binary_addition_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="mode"):
        get_task("binary_addition", mode="parallel")
    with pytest.raises(ValueError, match="max_bits"):
        get_task("binary_addition", min_bits=5, max_bits=4)


# --- dynamic_ngrams ----------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [[200] * 8, [6, 7, 30, 200, 199, 6, 50, 120]])
def test_dynamic_ngrams_targets_are_next_input(lengths: list[int]) -> None:
    task = get_task("dynamic_ngrams")
    batch = task._generate(torch.tensor(lengths), _gen(4))
    assert batch.inputs.shape == (8, max(lengths) - 1, 1)
    inputs, targets, mask = batch.inputs[..., 0].tolist(), batch.targets[..., 0].tolist(), batch.mask.tolist()
    for s, n in enumerate(lengths):
        assert all(x in (0.0, 1.0) for x in inputs[s])
        assert targets[s][: n - 2] == inputs[s][1 : n - 1]
        assert [t for t, m in enumerate(mask[s]) if m] == list(range(4, n - 1))
        assert all(x == 0 for x in inputs[s][n - 1 :] + targets[s][n - 1 :])


def test_dynamic_ngrams_training_batch_shape() -> None:
    task = get_task("dynamic_ngrams")
    batch = task.sample(4, _gen(1))
    assert batch.lengths.tolist() == [200] * 4 and batch.inputs.shape == (4, 199, 1)
    assert batch.mask.sum(1).tolist() == [195] * 4


def _brute_force_bayes(bits: list[int], order: int, scored: list[bool]) -> tuple[float, list[float]]:
    """Summed cost over scored steps, and P(1) at every step t >= order-2, by dict counting."""
    k = order - 1
    counts: dict[tuple[int, ...], list[int]] = {}
    total, probs = 0.0, []
    for t in range(k - 1, len(bits) - 1):
        context = tuple(bits[t - k + 1 : t + 1])
        n0, n1 = counts.setdefault(context, [0, 0])
        p1 = (n1 + 0.5) / (n1 + n0 + 1)
        probs.append(p1)
        if scored[t]:
            total -= math.log2(p1 if bits[t + 1] == 1 else 1 - p1)
        counts[context][bits[t + 1]] += 1
    return total, probs


@pytest.mark.parametrize("order", [2, 3, 6])
def test_bayes_cost_matches_brute_force(order: int) -> None:
    rng = random.Random(order)
    for n in (order, order + 1, 17, 120):
        bits = [[rng.randint(0, 1) for _ in range(n)] for _ in range(5)]
        fast = bayes_optimal_cost(torch.tensor(bits), order=order)
        for s in range(5):
            scored = [t >= order - 2 for t in range(n - 1)]
            assert fast[s].item() == pytest.approx(_brute_force_bayes(bits[s], order, scored)[0], abs=1e-5)


def test_bayes_cost_on_mixed_length_batch_ignores_padding() -> None:
    task = get_task("dynamic_ngrams")
    lengths = [200, 6, 37, 150]
    batch = task._generate(torch.tensor(lengths), _gen(2))
    fast = bayes_optimal_cost(sequence_bits(batch), batch.mask, task.order)
    bits = sequence_bits(batch).tolist()
    for s, n in enumerate(lengths):
        own = bits[s][:n]
        assert fast[s].item() == pytest.approx(_brute_force_bayes(own, 6, [t >= 4 for t in range(n - 1)])[0], abs=1e-5)


def test_bayes_predictor_has_zero_excess() -> None:
    task = get_task("dynamic_ngrams")
    batch = task.sample(8, _gen(12))
    logits = torch.zeros_like(batch.targets)
    for s, bits in enumerate(sequence_bits(batch).tolist()):
        _, probs = _brute_force_bayes(bits, 6, [True] * 199)
        p = torch.tensor(probs, dtype=torch.float64)
        logits[s, 4:, 0] = torch.log(p / (1 - p)).float()
    m = task.metrics(logits, batch)
    assert abs(m["excess_bits"]) < 1e-3
    assert m["bayes_cost"] == pytest.approx(m["cost"], abs=1e-3)
    coin = task.metrics(torch.zeros_like(batch.targets), batch)
    assert coin["cost"] == pytest.approx(195.0) and coin["excess_bits"] > 20
    assert not task.is_solved(coin) and task.is_solved(m)


def _deterministic_sequence(table: list[int], n: int, rng: random.Random) -> list[int]:
    bits = [rng.randint(0, 1) for _ in range(5)]
    while len(bits) < n:
        context = int("".join(map(str, bits[-5:])), 2)
        bits.append(table[context])
    return bits


def test_bayes_cost_of_a_deterministic_table_stays_small() -> None:
    # with every probability 0 or 1, each context's next bit never changes, and the estimator's
    # cost on a run of m equal bits is at most 1 + log2(m) / 2: logarithmic, not linear, in length
    rng = random.Random(0)
    tables = [[rng.randint(0, 1) for _ in range(32)] for _ in range(20)]
    starts = [rng.getrandbits(32) for _ in range(20)]
    costs = {}
    for n in (200, 3200):
        bits = [_deterministic_sequence(tables[s], n, random.Random(starts[s])) for s in range(20)]
        costs[n] = bayes_optimal_cost(torch.tensor(bits)).tolist()
        for c in costs[n]:
            assert c <= 32 * (1 + 0.5 * math.log2(n))
    for short, long in zip(costs[200], costs[3200]):
        # 16x the bits cost about 0.5 * log2(16) = 2 bits more per context; allow 3 for rounding of counts
        assert long - short <= 32 * 3

"""Chance per task against a brute-force predictor, and the leaderboard's statistics by hand.

Chance is the cost of the best predictor that ignores its inputs (one output per step and
channel). Each task declares it in closed form (``Task._moments_at``); here it is checked against
the best such predictor fitted by brute force to thousands of sampled sequences.
"""
from __future__ import annotations

import math

import pytest
import torch

from memtasks.results import stats as S
from memtasks.tasks import TASKS, get_task
from memtasks.tasks.base import Task
from memtasks.tasks.dynamic_ngrams import bayes_optimal_cost, sequence_bits

SAMPLE = 2048


# --- chance, declared per task, against brute force -------------------------------------------
def brute_force_chance(task: Task, length: int | None, **overrides: object) -> tuple[float, float, torch.Tensor]:
    """(declared chance on a sample, the brute-force best constant predictor's cost on it, its prediction).

    Brute force: per step and channel, the share of ones (bce) or the mean (mse) of the sampled
    targets where scored, scored on the same sample.
    """
    batch = task.sample(SAMPLE, torch.Generator().manual_seed(20240), length=length, **overrides)
    s = batch.mask.unsqueeze(-1).expand_as(batch.targets).double()
    y = batch.targets.double()
    p = (s * y).sum(0) / s.sum(0).clamp_min(1.0)  # (T, d_out)
    if task.loss == "mse":
        brute = float((s * (y - p) ** 2).sum() / s.sum())
    else:
        q = p.clamp(1e-12, 1 - 1e-12)
        brute = float((s * -(y * torch.log2(q) + (1 - y) * torch.log2(1 - q))).sum() / SAMPLE)
    return task.chance_cost(length, batch, **overrides), brute, p


def _points(task: Task) -> list[tuple[int | None, dict[str, object]]]:
    points: list[tuple[int | None, dict[str, object]]] = [(None, {})]
    points += [(n, {}) for n in task.generalisation_lengths[:1]]
    points += [(None, {k: v}) for k, v in task.generalisation_overrides]
    return points


CASES = [(name, {}) for name in TASKS.names()] + [
    ("binary_addition", {"max_bits": 3}),  # short operands: the final carry is far from a fair coin
    ("binary_addition", {"max_bits": 3, "mode": "online"}),
    ("repeat_copy", {"bits": 3, "max_length": 4, "max_repeats": 4}),  # the end marker's step is uncertain
    ("copy", {"bits": 2, "max_length": 3}),
]


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}{p or ''}" for n, p in CASES])
def test_declared_chance_is_the_brute_force_best_constant_predictor(name: str, params: dict[str, object]) -> None:
    task = get_task(name, **params)
    for length, overrides in _points(task):
        declared, brute, p = brute_force_chance(task, length, **overrides)
        where = f"{name}{params} at length {length} {overrides}"
        # The brute-force predictor is fitted to the sample, so it can only do better there, by its
        # overfit: about 1/(2 ln 2) bits (bce) or the variance (mse) per fitted cell over the sample
        # size. Three times that is a fraction of a percent; a wrong declaration loses percents.
        cells = int((task.target_moments(length, **overrides).scored > 0).sum())
        overfit = cells / SAMPLE * (declared if task.loss == "mse" else 1 / (2 * math.log(2)))
        assert brute <= declared + 1e-9, where
        assert declared - brute <= 3 * overfit + 1e-3 * declared, f"{where}: declared {declared}, brute force {brute}"
        # the declared expectation agrees with the sample too (lengths drawn make this one looser)
        assert task.chance_cost(length, **overrides) == pytest.approx(brute, rel=0.04), where
        # and so does the prediction, step by step and channel by channel, within 5 standard errors
        m = task.target_moments(length, **overrides)
        T = min(m.scored.shape[0], p.shape[0])
        a, want = m.scored[:T], task.chance_prediction(length, **overrides)[:T]
        var = (m.second[:T] / a.clamp_min(1e-12) - want**2).clamp_min(0)
        seen = a * SAMPLE >= 20
        se = (var / (a * SAMPLE).clamp_min(1)).sqrt()
        assert bool(((p[:T] - want).abs() <= 5 * se + 1e-9)[seen].all()), where


def test_chance_in_closed_form() -> None:
    assert get_task("copy").chance_cost() == pytest.approx(8 * 10.5)  # 8 fair bits × E[L], L uniform 1..20
    assert get_task("copy").chance_cost(30) == pytest.approx(240)
    assert get_task("associative_recall").chance_cost(12) == pytest.approx(18)  # one item: 3 vectors × 6 bits
    assert get_task("priority_sort").chance_cost() == pytest.approx(8 * 16)  # K = floor(4·20/5) vectors
    assert get_task("dynamic_ngrams").chance_cost() == pytest.approx(195)  # 200 bits, 195 scored predictions
    assert get_task("delayed_xor").chance_cost(100) == pytest.approx(1.0)
    assert get_task("adding").chance_cost() == pytest.approx(2 / 12)  # Var(x_i + x_j): always answering 1
    # repeat copy at fixed L and R: the end marker's step is known, so only data bits cost
    assert get_task("repeat_copy", max_repeats=1).chance_cost(4) == pytest.approx(8 * 4)
    # binary addition, n = 1: one fair sum bit, and a carry that is 1 for 1 of the 4 pairs
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert get_task("binary_addition").chance_cost(1) == pytest.approx(1 + h)
    assert get_task("binary_addition", mode="online").chance_cost(1) == pytest.approx(1 + h)


def test_chance_line_of_figures_is_the_declared_chance() -> None:
    task = get_task("repeat_copy", bits=3, max_length=4, max_repeats=4)
    batch = task.eval_batch(None)
    assert task.chance_level("cost") == pytest.approx(task.chance_cost(None, batch))
    # well below one bit per scored bit, which the end channel's zeros would cost a fair guesser
    scored_bits = float(batch.mask.sum()) * task.d_out / batch.batch_size
    assert task.chance_level("cost") < 0.85 * scored_bits


def test_a_task_without_closed_form_moments_is_estimated() -> None:
    class Plain(type(get_task("copy"))):  # the copy layout, with the declaration taken away
        def _moments_at(self, length: int) -> None:  # type: ignore[override]
            return None

    task = Plain(bits=2, max_length=3)
    assert task.chance_cost() == pytest.approx(2 * 2, rel=0.05)


# --- the adaptive counters of dynamic N-grams ---------------------------------------------------
def _counter_loop(bits: list[int], k: int, first: int) -> float:
    """The k-context-bit adaptive counter's cost on one sequence, by hand: bit j is predicted at
    step j − 1 from the counts after its context so far; the steps from ``first`` on are scored."""
    counts: dict[tuple[int, ...], list[int]] = {}
    cost = 0.0
    for j in range(k, len(bits)):  # bit 0 has no step, but a 0-bit counter still counts it
        n0, n1 = counts.setdefault(tuple(bits[j - k : j]), [0, 0])
        p1 = (n1 + 0.5) / (n0 + n1 + 1)
        if j - 1 >= first:
            cost -= math.log2(p1 if bits[j] else 1 - p1)
        counts[tuple(bits[j - k : j])][bits[j]] += 1
    return cost


def test_counters_against_a_loop_and_the_bayes_optimum() -> None:
    task = get_task("dynamic_ngrams", order=4, num_bits=40)
    batch = task.eval_batch(None, 8)
    costs = task.counter_costs(batch)
    assert list(costs) == [0, 1, 2, 3]
    bits = sequence_bits(batch).tolist()
    for k in costs:
        by_hand = sum(_counter_loop(row, k, task.order - 2) for row in bits) / len(bits)
        assert costs[k] == pytest.approx(by_hand, rel=1e-9), k
    assert costs[3] == pytest.approx(float(bayes_optimal_cost(sequence_bits(batch), batch.mask, 4).mean()))
    names = [name for name, _ in task.reference_levels(batch)]
    assert names[0] == "k=0 counter" and names[-1] == "k=3 counter (Bayes-optimal)"


# --- intervals, by hand ---------------------------------------------------------------------------
def _t_cdf(q: float, df: int) -> float:
    """P(T <= q) for Student's t, by Simpson's rule on its density (for checking the table)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    n = 200_000
    h = q / n
    f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 30, 31, 60])
def test_t_quantiles(df: int) -> None:
    assert _t_cdf(S.t975(df), df) == pytest.approx(0.975, abs=2e-5)


def test_interval_by_hand() -> None:
    two = S.interval([1.0, 3.0])  # mean 2, s = √2: half = 12.7062·√2/√2
    assert (two.mean, two.n) == (2.0, 2) and two.half == pytest.approx(12.7062)
    three = S.interval([1.0, 2.0, 3.0, float("nan")])  # NaN left out; s = 1: half = 4.3027/√3
    assert three.n == 3 and three.half == pytest.approx(4.3027 / math.sqrt(3))
    assert (three.low, three.high) == pytest.approx((2 - 2.48417, 2 + 2.48417), abs=1e-5)
    one = S.interval([5.0])
    assert one.mean == 5.0 and not one.has_interval and math.isnan(one.low)
    assert S.interval([]).n == 0
    assert S.half_width(1.0, 3) == pytest.approx(three.half) and math.isnan(S.half_width(1.0, 1))


def _iv(low: float, high: float) -> S.Interval:
    return S.Interval((low + high) / 2, (high - low) / 2, 3)


def test_shared_ranks_by_hand() -> None:
    # a chain of overlaps: A overlaps B, B overlaps C, A lies wholly below C
    assert S.shared_ranks([_iv(1, 2), _iv(1.5, 3), _iv(2.5, 4)], [False] * 3) == [1, 1, 2]
    # separate intervals: strict ranks; touching ends (2 = 2) are not separate
    assert S.shared_ranks([_iv(0, 1), _iv(2, 3), _iv(4, 5)], [False] * 3) == [1, 2, 3]
    assert S.shared_ranks([_iv(0, 2), _iv(2, 3)], [False] * 2) == [1, 1]
    # one seed (no interval): no rank, and it beats no one
    one = S.Interval(0.1, float("nan"), 1)
    assert S.shared_ranks([one, _iv(2, 3)], [False, False]) == pytest.approx([float("nan"), 1], nan_ok=True)
    # two models at chance (one below chance, one above it, intervals apart) share a rank;
    # a model off chance that lies below both beats both
    assert S.shared_ranks([_iv(9.0, 9.95), _iv(10.5, 11), _iv(1, 2)], [True, True, False]) == [2, 2, 1]


def test_at_chance_by_hand() -> None:
    chance = 10.0
    assert S.at_chance(_iv(9.0, 9.95), chance)  # reaches 99.5% of chance: not clearly below it
    assert not S.at_chance(_iv(8.0, 9.85), chance)  # removes more than 1% even at its upper end
    assert S.at_chance(_iv(10.5, 11), chance)  # worse than chance is at chance
    assert S.at_chance(S.Interval(9.95, float("nan"), 1), chance)  # one seed: its mean
    assert not S.at_chance(S.Interval(9.8, float("nan"), 1), chance)
    assert S.at_chance(_iv(1, 2), float("nan")) is None
    # two seeds solved, one at chance: a wide interval reaching chance, but the model learns the task
    assert S.at_chance(_iv(3.4, 14.0), chance) and not S.at_chance(_iv(3.4, 14.0), chance, solved=2)


# --- learning curves, by hand ---------------------------------------------------------------------
def test_curve_summary_by_hand() -> None:
    c = S.curve_summary([0, 100, 200, 300], [4.0, 2.0, 1.0, 1.0], budget=300)
    assert c.auc == pytest.approx((300 + 150 + 100) / 300)  # trapezoids (4+2)/2·100, (2+1)/2·100, (1+1)/2·100
    assert (c.at_two_thirds, c.final, c.evals) == (1.0, 1.0, 4)  # 2/3 of 300 is the evaluation at 200
    early = S.curve_summary([0, 100], [4.0, 0.0], budget=400)  # stopped early: 0 carried to the budget
    assert early.auc == pytest.approx(200 / 400) and early.at_two_thirds == 4.0
    between = S.curve_summary([0, 100, 250, 300], [4.0, 3.0, 2.0, 1.0])  # 2/3 of 300 = 200: the last at or before
    assert between.at_two_thirds == 3.0 and between.auc == pytest.approx((350 + 375 + 75) / 300)
    assert S.curve_summary([500], [2.0], budget=1000).auc == 2.0  # one evaluation: its value
    assert S.curve_summary([], [], 10).evals == 0


def test_still_improving_by_hand() -> None:
    # fell from 2.0 to 1.0 on both seeds, spread 0.1: improving
    assert S.still_improving([2.0, 2.0], [0.95, 1.05]) is True
    # fell by 0.5 on average, but the seeds end 1.0 apart: within the spread
    assert S.still_improving([2.0, 2.0], [1.0, 2.0]) is False
    # fell by 2% of its cost: below the 5% floor, even with one seed (no spread)
    assert S.still_improving([1.0], [0.98]) is False
    assert S.still_improving([1.0], [0.9]) is True
    assert S.still_improving([], []) is None


def test_median_with_never() -> None:
    assert S.median_with_never([100.0, 300.0, float("nan")]) == 300.0
    assert math.isinf(S.median_with_never([100.0, float("nan")]))


# --- longest length solved ----------------------------------------------------------------------
@pytest.mark.parametrize("final,expected", [
    ({"train": {"bit_errors": 0.0}, "30": {"bit_errors": 0.0}, "50": {"bit_errors": 2.0}, "100": {"bit_errors": 0.0}}, 30.0),
    ({"train": {"bit_errors": 0.0}, "30": {"bit_errors": 0.5}}, 20.0),     # solved at training lengths only
    ({"train": {"bit_errors": 0.5}, "30": {"bit_errors": 0.0}}, 0.0),      # not solved where it trained: none
    ({"train": {"bit_errors": 0.0}, "100": {"bit_errors": 0.0}, "30": {"bit_errors": 0.0}}, 100.0),  # ascending order
    ({"train": {"bit_errors": float("nan")}}, 0.0),
])
def test_longest_solved_is_contiguous_from_the_training_range(final, expected):
    from types import SimpleNamespace

    from memtasks.results.store import longest_solved
    from memtasks.tasks import get_task

    copy = get_task("copy")  # trains on 1-20; solved: bit errors < 0.01
    assert longest_solved(SimpleNamespace(final=final), copy) == expected
    assert math.isnan(longest_solved(SimpleNamespace(final=final), None))

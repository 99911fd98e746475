"""Linear memory capacity (Jaeger 2002): the estimator on exact cases, and the bound MC <= N on real reservoirs."""
from __future__ import annotations

import json

import pytest
import torch

from memtasks.capacity import memory_capacity, memory_function
from memtasks.cli import main


def test_a_delay_line_remembers_exactly_its_length():
    """States x_i(n) = u(n - i), i = 0..N-1, hold delays 1..N-1 perfectly and nothing older."""
    g = torch.Generator().manual_seed(0)
    N, T = 6, 3000
    u = torch.rand(T + N, generator=g, dtype=torch.float64) - 0.5
    states = torch.stack([u[N - i : N - i + T] for i in range(N)], dim=1)  # (T, N)
    mc = memory_function(states, u[N:], max_delay=2 * N, train_steps=1000, ridge=1e-10)
    torch.testing.assert_close(mc[: N - 1], torch.ones(N - 1, dtype=torch.float64), atol=1e-8, rtol=0)
    assert mc[N - 1 :].max() < 0.01  # u(n - k) for k >= N is independent of the states
    assert abs(float(mc.sum()) - (N - 1)) < 0.1


def test_states_without_memory_have_none():
    g = torch.Generator().manual_seed(1)
    u = torch.rand(4000, generator=g, dtype=torch.float64)
    noise = torch.rand(4000, 8, generator=g, dtype=torch.float64)  # independent of the input
    assert float(memory_function(noise, u, 10, 2000, 1e-8).sum()) < 0.1


@pytest.mark.parametrize("n", [10, 40])
def test_esn_capacity_is_bounded_by_its_size_and_recalls_the_last_input(n):
    row = memory_capacity(n, seed=0, test_steps=4000)
    assert 0 < row["memory_capacity"] <= n
    assert row["mc_delay_1"] > 0.95
    assert len(row["memory_function"]) == 2 * n


def test_bigger_reservoirs_remember_more():
    small, big = (memory_capacity(n, seed=0, test_steps=4000)["memory_capacity"] for n in (10, 80))
    assert big > small


def test_too_few_steps_is_a_clear_error():
    with pytest.raises(ValueError, match="no test steps"):
        memory_function(torch.zeros(30, 4), torch.zeros(30), max_delay=20, train_steps=10, ridge=1e-8)


def test_capacity_command_writes_json(tmp_path, capsys):
    out = tmp_path / "mc.json"
    assert main(["capacity", "--sizes", "8", "16", "--seeds", "0", "1", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["reservoir_size"] for r in doc["table"]] == [8, 16]
    assert all(r["bound_holds"] for r in doc["table"])
    assert len(doc["runs"]) == 4
    assert "memory_capacity" in capsys.readouterr().out

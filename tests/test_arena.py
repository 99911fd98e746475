"""The pool of float32 arenas behind the DNC's and the NTM's kernel buffers (models/arena.py)."""
from __future__ import annotations

import torch

from memtasks.models.arena import ArenaPool


def test_arena_views_are_aligned_apart_and_reused_only_when_free():
    pool = ArenaPool(arenas=2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the kernels' buffers stay float32 whatever the default
    try:
        first = pool.lease([(4, 5), (3,)])
    finally:
        torch.set_default_dtype(default)
    a, b = first.views
    assert a.dtype == b.dtype == torch.float32
    assert a.shape == (4, 5) and b.shape == (3,) and b.data_ptr() - a.data_ptr() >= 20 * 4
    assert a.data_ptr() % 64 == 0 and b.data_ptr() % 64 == 0
    held = pool.lease([(4, 5)])
    assert held.views[0].data_ptr() != a.data_ptr()  # in use: not handed out twice
    pointer = a.data_ptr()
    del first, a, b
    assert pool.lease([(4, 5)]).views[0].data_ptr() == pointer  # free again: reused
    assert len(pool.entries) == 2
    with torch.inference_mode():  # an arena first made there serves training later
        pool.lease([(50,)])
    reused = pool.lease([(50,)])
    reused.views[0].copy_(torch.ones(50))
    assert not reused.views[0].is_inference()
    del reused
    pool.max_floats = 64
    arenas = [entry[0] for entry in pool.entries]
    big = pool.lease([(10, 10)])  # fits no arena and is larger than the pool keeps: allocated, not pooled
    assert big.views[0].shape == (10, 10)
    assert len(pool.entries) == 2 and all(entry[0] is arena for entry, arena in zip(pool.entries, arenas))


def test_arena_keeps_its_views_per_list_of_shapes():
    pool = ArenaPool(arenas=1)
    first = pool.lease([(4, 5), (3,)])
    views = first.views
    del first
    again = pool.lease([(4, 5), (3,)])
    assert all(x is y for x, y in zip(again.views, views))  # made once, handed out again
    del again
    other = pool.lease([(3,), (4, 5)])  # the same arena, other shapes: their own views
    assert [v.shape for v in other.views] == [(3,), (4, 5)]
    assert other.views[0].data_ptr() == views[0].data_ptr()


def test_a_lease_held_for_long_costs_one_new_arena_not_one_every_call():
    """An output kept with its graph holds its lease (the CLI's probe step did, for the whole of `bench
    models --models dnc`): the pool then puts the next arena it has to make in that lease's place, and
    the steps after it alternate between two pooled arenas instead of making one every other step."""
    pool = ArenaPool(arenas=2)
    kept = pool.lease([(8,)])
    previous = pool.lease([(1000,)])  # a training step's lease lives on while the next step leases
    for step in range(6):
        current = pool.lease([(1000,)])
        storage = current.views[0].untyped_storage().data_ptr()
        assert storage in [entry[0].untyped_storage().data_ptr() for entry in pool.entries], step
        previous = current
    assert len(pool.entries) == 2 and previous.views[0].shape == (1000,)
    assert kept.views[0].shape == (8,) and kept.views[0].untyped_storage().data_ptr() not in [
        entry[0].untyped_storage().data_ptr() for entry in pool.entries
    ]  # its arena left the pool; its lease still holds it

"""Pooled float32 arenas for the internal buffers of the C-kernel sequence functions (DNC, NTM).

A training forward of the DNC or the NTM keeps per-step records for its backward: tens of MB at
batch 32 (the DNC ≈45 MB, the NTM's memories ≈14 MB at T = 41). Fresh tensors of that size are
fresh pages whenever the allocator has handed the last ones back to the system (glibc serves them
by ``mmap`` above an adaptive threshold and unmaps them when freed): a page fault and a zeroing for
every 4 KB, every step. How often that happens depends on what else the process allocates and
frees, so one model's speed came to depend on which other models ran in the process before it
(docs/performance.md). An :class:`ArenaPool` keeps a few arenas alive instead and hands out views
of one: a forward's buffers are a :class:`Lease`, whose arena is free again once the lease (held by
the autograd context) is gone. An arena also keeps the views it handed out, per list of shapes (a
training loop asks for the same few again and again): making the DNC forward's 19 views took 57 µs
(timed alone in a one-off script).
"""
from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Sequence

import torch

ALIGN = 16  # floats: every view starts on a 64-byte boundary (the kernels' streaming stores need it)
CACHED = 64  # lists of shapes whose views an arena keeps (then it starts again)


class Lease:
    """One call's views into an arena; the arena is free again once this object is gone."""

    __slots__ = ("views", "__weakref__")


class ArenaPool:
    """At most ``arenas`` flat float32 tensors of at most ``max_floats`` each, handed out as a
    :class:`Lease` of contiguous views. A request that fits no free arena gets a new one, which
    joins the pool if there is room, or else takes the place of the smallest free arena (too small
    for it) or, when every arena is leased, of the smallest leased one (which its lease keeps alive
    until it ends, then frees): a lease held for long, such as the graph of an output someone kept,
    costs one new arena, not one every call. A request larger than ``max_floats`` is served but not
    kept. Thread-safe."""

    def __init__(self, arenas: int = 2, max_floats: int = 32 << 20) -> None:
        self.arenas = arenas  # a training step's graph often lives on during the next forward, hence two
        self.max_floats = max_floats  # 128 MB
        # [flat tensor, weakref to the Lease that holds it (dead: free), {key: views made of it}]
        self.entries: list[list[Any]] = []
        self._lock = threading.Lock()

    def lease(self, shapes: Sequence[tuple[int, ...]]) -> Lease:
        """Uninitialised contiguous float32 views of ``shapes``, each 64-byte aligned, in one arena."""
        sizes = [-(-math.prod(shape) // ALIGN) * ALIGN for shape in shapes]
        floats = max(sum(sizes), 1)
        lease = Lease()
        with self._lock:
            free = [entry for entry in self.entries if entry[1]() is None]
            fits = [entry for entry in free if entry[0].numel() >= floats]
            if fits:
                entry = min(fits, key=lambda e: e[0].numel())
            else:
                with torch.inference_mode(False):  # a normal tensor: an inference one would refuse later writes
                    # float32 whatever the default dtype; PyTorch's CPU allocator aligns to 64 bytes
                    entry = [torch.empty(floats, dtype=torch.float32), None, {}]
                if floats <= self.max_floats:
                    if len(self.entries) < self.arenas:
                        self.entries.append(entry)
                    else:  # in place of the smallest free arena (too small for this call), else of the smallest
                        smallest = min(free or self.entries, key=lambda e: e[0].numel())
                        self.entries[next(i for i, e in enumerate(self.entries) if e is smallest)] = entry
            entry[1] = weakref.ref(lease)
            flat, cache = entry[0], entry[2]
        # views made in inference mode may not be written outside it: they are kept apart
        key = (tuple(map(tuple, shapes)), torch.is_inference_mode_enabled())
        views = cache.get(key)
        if views is None:
            made, offset = [], 0
            for shape, size in zip(shapes, sizes):
                made.append(flat[offset : offset + math.prod(shape)].view(shape))
                offset += size
            views = tuple(made)
            if len(cache) >= CACHED:
                cache.clear()
            cache[key] = views
        lease.views = views
        return lease


"""The NTM's heads (addressing, read, write) as C kernels for float32 on CPU, built on first use.

Why: the PyTorch loop of ``sequence.py`` / ``bptt.py`` spends most of a step in about 45
operator calls forward and 55 backward for the heads alone, each a few microseconds of
dispatch around a few hundred floats of arithmetic (batch 32, N = 128, M = 20). Here the
heads of a step are one call each way, one batch element at a time, its memory (10 KB) in
cache. The controller (two matrix products and the LSTM cell) stays in PyTorch.

The equations are those of ``memory.py`` (Graves et al. 2014, eqs. 2-9) with the clamps of
``COSINE_EPS`` and ``SHARPEN_EPS``, for one write head and any number of read heads; the
backward is the exact gradient, term by term the one of ``bptt.py``. ``tests/test_ntm.py``
checks outputs and gradients against the PyTorch path.

The source is plain C99 in ``kernel.c`` next to this file, built by ``models/cbuild.py`` with
``COSINE_EPS`` and ``SHARPEN_EPS`` of ``memory.py`` as ``-D`` options; where it cannot be built
the model runs its PyTorch path. The buffers of a sequence travel as one struct,
``ntm_buffers`` in ``kernel.c``, mirrored here by :class:`Buffers`; the two functions take slot
numbers into them, not byte offsets.
"""
from __future__ import annotations

import ctypes
from ctypes import POINTER, c_long, c_void_p

import torch

from memtasks.models.cbuild import KernelLibrary
from memtasks.models.ntm.memory import COSINE_EPS, SHARPEN_EPS


class Buffers(ctypes.Structure):
    """``ntm_buffers`` of ``kernel.c``, field for field: the sizes and the time-major buffers of one
    sequence (pointers from ``Tensor.data_ptr()``; the tensors must outlive every call; ``sv`` may
    be None, then the forward saves nothing)."""

    _fields_ = [(n, c_long) for n in ("B", "N", "M", "R", "S", "P", "tanh_add", "Z", "H")] + [
        (n, c_void_p) for n in ("p", "mem", "w", "z", "sv")
    ]


_BUF = POINTER(Buffers)

LIBRARY = KernelLibrary(
    "ntm_heads",
    "ntm/kernel.c",
    {
        "ntm_heads_forward": (_BUF, c_long, c_long, c_long, c_long),
        "ntm_heads_backward": (_BUF, c_long, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p),
    },
    model="ntm",
    queries={"ntm_saved_floats": (c_long, c_long, c_long, c_long)},
    structs={"ntm_sizeof_buffers": Buffers},
    defines=(f"COS_EPS={COSINE_EPS!r}f", f"SHARP_EPS={SHARPEN_EPS!r}f"),
)


def saved_size(lib: ctypes.CDLL, slots: int, width: int, read_heads: int, shifts: int) -> int:
    """Floats ``ntm_heads_forward`` saves per batch element and step (``ntm_saved_floats`` in ``kernel.c``)."""
    return lib.ntm_saved_floats(slots, width, read_heads, shifts)


def kernel_for(x: torch.Tensor, write_heads: int) -> ctypes.CDLL | None:
    """The kernels when they apply (float32 on CPU, one write head) and could be built."""
    return LIBRARY.for_input(x) if write_heads == 1 else None

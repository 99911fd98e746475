"""The C kernels of the DNC for float32 on CPU, built with the system C compiler on first use.

Why: on one CPU thread a DNC step is dominated by two costs that PyTorch operators cannot
avoid (measured at batch 32, N = 128, W = 20, T = 41; see ``sequence.py``):

1. memory traffic on the link matrix: a batch of link matrices is 2 MB, the T of a sequence
   (82 MB) live in DRAM, and every operator is one more trip there (≈ 0.25 ms a pass on a
   25 GB/s core); autograd makes about 8 such passes forward and 14 backward per step;
2. dispatch: a step is ~60 small operators forward and as many autograd nodes backward,
   5–10 µs each, against a few µs of arithmetic.

So the whole sequence runs here, two batch elements at a time through every step, in one call
forward (``dnc_sequence_forward``: the controller's matrix-vector products and LSTM cell, then
the memory step) and one backward (``dnc_sequence_backward``: the exact gradient, derived by
hand, recomputing rows of L_t instead of reading them back, and each segment of link matrices and
memories from its checkpoints): two elements' 64 KB link matrices, their gradients and the
controller's weights stay in the core's own cache for the whole sequence. ``dnc_step_forward`` and
``dnc_step_backward`` are one memory step over the whole batch. Vector loops are written for
the compiler to vectorise (the memory is kept slot-minor, ``(B, W, N)``, so that loops over
slots are contiguous; ``vexp`` is an exp of about 1 ulp that vectorises).

How: the source is plain C99 in ``kernel.c`` next to this file, built on first use and called
through ``ctypes`` (``models/cbuild.py``: the cache, the flags, the shared ``vexp``). The buffers
of a sequence travel as one struct, ``dnc_buffers`` in ``kernel.c``, mirrored here by
:class:`Buffers`; the functions take slot numbers into them, not byte offsets. Without a
compiler, or if the build fails, :func:`load` returns None (once per process, with a warning)
and the model runs its PyTorch operators (``memory.py``); the two agree to float32 rounding,
which ``tests/test_dnc.py`` checks.
"""
from __future__ import annotations

import ctypes
from ctypes import POINTER, c_long, c_void_p

import torch

from memtasks.models.cbuild import KernelLibrary


class Buffers(ctypes.Structure):
    """``dnc_buffers`` of ``kernel.c``, field for field: the sizes and the time-major buffers of one
    sequence (pointers from ``Tensor.data_ptr()``; the tensors must outlive every call)."""

    _fields_ = [(n, c_long) for n in ("B", "N", "W", "R", "H")] + [
        (n, c_void_p) for n in ("xi", "sv", "order", "act", "c", "h", "mem", "usage", "prec", "ww", "wr", "reads")
    ]


class StateGrad(ctypes.Structure):
    """``dnc_state_grad`` of ``kernel.c``: dLoss/d of (M, u, L, p, w^w, w^r); None is NULL (zero)."""

    _fields_ = [(n, c_void_p) for n in ("mem", "usage", "link", "prec", "ww", "wr")]


class Sequence(ctypes.Structure):
    """``dnc_sequence`` of ``kernel.c``: the step count, checkpoint interval, training flag and input
    size, the inputs, the controller's weights (each also transposed) and the link matrices' buffers of
    one sequence."""

    _fields_ = [(n, c_long) for n in ("T", "K", "train", "D")] + [
        (n, c_void_p)
        for n in ("x", "b_x", "w_rh", "w_rh_t", "w_xi", "w_xi_t", "b_xi", "h0", "z", "link0", "ckpt", "link_last")
    ]


class SequenceGrad(ctypes.Structure):
    """``dnc_sequence_grad`` of ``kernel.c``: dLoss/d of the outputs and final state (in; None is
    zero), of the per-step gates and interface vectors and of the initial state (out)."""

    _fields_ = (
        [(n, c_void_p) for n in ("hs", "rs", "h", "c", "r")]
        + [("last", StateGrad)]
        + [(n, c_void_p) for n in ("gates", "xi", "h0", "c0", "r0")]
        + [("first", StateGrad)]
    )


_BUF, _GRAD = POINTER(Buffers), POINTER(StateGrad)
_SEQ, _SEQ_GRAD = POINTER(Sequence), POINTER(SequenceGrad)

LIBRARY = KernelLibrary(
    "dnc_step",
    "dnc/kernel.c",
    {
        "dnc_step_forward": (_BUF, c_long, c_long, c_long, c_long, c_void_p, c_void_p),
        "dnc_step_backward": (_BUF, c_long, c_void_p, _GRAD, c_void_p, c_void_p, _GRAD),
        "dnc_sequence_forward": (_BUF, _SEQ),
        "dnc_sequence_backward": (_BUF, _SEQ, _SEQ_GRAD),
    },
    model="dnc",
    queries={"dnc_saved_floats": (c_long, c_long)},
    structs={
        "dnc_sizeof_buffers": Buffers,
        "dnc_sizeof_state_grad": StateGrad,
        "dnc_sizeof_sequence": Sequence,
        "dnc_sizeof_sequence_grad": SequenceGrad,
    },
    # a * b + c as one fused multiply-add (one rounding instead of two; with -std=c99 GCC fuses none):
    # fewer instructions in the link loops and the controller's products, 1-5% of the kernels' time
    flags=("-ffp-contract=fast",),
)


def saved_size(lib: ctypes.CDLL, slots: int, read_heads: int) -> int:
    """Floats ``dnc_step_forward`` saves per batch element for the backward (``saved_at`` in ``kernel.c``)."""
    return lib.dnc_saved_floats(slots, read_heads)


def load() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they cannot be built (then the PyTorch path is used)."""
    return LIBRARY.load()


def kernel_for(x: torch.Tensor, use_kernel: bool) -> ctypes.CDLL | None:
    """The kernels when they apply to inputs like ``x`` (float32 on CPU) and could be built."""
    return LIBRARY.for_input(x) if use_kernel else None

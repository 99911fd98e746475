"""The C kernels as code: C lives in .c/.h files (never in a Python string), their buffer structs
match the ctypes mirrors, and a failure inside a kernel (a malloc returning NULL) becomes a clear
Python error that names the kernel. The kernels' numbers are tested in test_dnc.py / test_ntm.py."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest
import torch

from memtasks.models import cbuild
from memtasks.models.dnc import cpu_kernel as dnc_kernel
from memtasks.models.ntm import cpu_kernel as ntm_kernel

MODELS = Path(cbuild.__file__).resolve().parent
LIBRARIES = {"dnc": dnc_kernel.LIBRARY, "ntm": ntm_kernel.LIBRARY}
# a line of C: a preprocessor directive, or a C function definition's head
C_LINE = re.compile(r"^\s*#\s*(include|define|pragma|ifndef|endif)\b|^\s*(static\s+)?(inline\s+)?(void|int|long|float)\s+\**\w+\s*\(")

# more bytes than any 64-bit address space holds (2^57 with 5-level paging): a malloc of this fails
HUGE_SLOTS = 2**55


def _needs(lib: cbuild.KernelLibrary) -> ctypes.CDLL:
    loaded = lib.load()
    if loaded is None:
        pytest.skip("no C compiler: the kernels cannot be built")
    return loaded


def test_no_python_file_under_models_holds_c_source():
    offenders = [
        f"{path.relative_to(MODELS)}:{i}: {line.strip()}"
        for path in sorted(MODELS.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if C_LINE.match(line)
    ]
    assert not offenders, "C source inside Python files (it belongs in a .c/.h file):\n" + "\n".join(offenders)


@pytest.mark.parametrize("model", sorted(LIBRARIES))
def test_each_kernel_is_a_c_file_next_to_its_module_and_includes_the_shared_header(model):
    lib = LIBRARIES[model]
    assert (MODELS / lib.source).is_file() and (MODELS / cbuild.HEADER).is_file()
    sources = lib.sources()
    assert set(sources) == {Path(lib.source).name, cbuild.HEADER}
    assert f'#include "{cbuild.HEADER}"' in sources[Path(lib.source).name]


@pytest.mark.parametrize("model", sorted(LIBRARIES))
def test_struct_mirrors_match_the_c_structs(model):
    lib = LIBRARIES[model]
    loaded = _needs(lib)
    for fn, struct in lib.structs.items():
        assert getattr(loaded, fn)() == ctypes.sizeof(struct), fn


def test_a_struct_mirror_that_disagrees_is_refused_when_loading():
    _needs(dnc_kernel.LIBRARY)

    class Short(ctypes.Structure):
        _fields_ = [("B", ctypes.c_long)]

    wrong = cbuild.KernelLibrary(
        "dnc_step", "dnc/kernel.c", {}, model="dnc", structs={"dnc_sizeof_buffers": Short}
    )  # the same sources: the cached library, no new build
    with pytest.raises(TypeError, match="dnc_sizeof_buffers.*Short"):
        wrong.load()


def test_dnc_allocation_failure_is_a_memory_error_naming_the_kernel():
    lib = _needs(dnc_kernel.LIBRARY)
    # no batch elements, so nothing is read or written; the scratch of HUGE_SLOTS slots cannot be allocated
    scratch = torch.zeros(16)
    ptr = scratch.data_ptr()
    names = [name for name, _ in dnc_kernel.Buffers._fields_[5:]]
    buf = dnc_kernel.Buffers(B=0, N=HUGE_SLOTS, W=1, R=1, H=1, **{name: ptr for name in names})
    with pytest.raises(MemoryError, match=r"dnc C kernel dnc_step_forward: out of memory"):
        lib.dnc_step_forward(buf, 0, 0, 0, 1, ptr, ptr)
    grad = dnc_kernel.StateGrad(*([ptr] * 6))
    with pytest.raises(MemoryError, match=r"dnc C kernel dnc_step_backward: out of memory"):
        lib.dnc_step_backward(buf, 0, ptr, grad, ptr, ptr, grad)


def test_ntm_allocation_failure_is_a_memory_error_naming_the_kernel():
    lib = _needs(ntm_kernel.LIBRARY)
    scratch = torch.zeros(16)
    ptr = scratch.data_ptr()
    buf = ntm_kernel.Buffers(B=0, N=HUGE_SLOTS, M=1, R=1, S=3, P=1, tanh_add=1, Z=1, H=0, p=ptr, mem=ptr, w=ptr,
                             z=ptr, sv=ptr)
    with pytest.raises(MemoryError, match=r"ntm C kernel ntm_heads_forward: out of memory"):
        lib.ntm_heads_forward(buf, 0, 0, 0, 1)
    with pytest.raises(MemoryError, match=r"ntm C kernel ntm_heads_backward: out of memory"):
        lib.ntm_heads_backward(buf, 0, None, None, ptr, ptr, ptr, ptr)


def test_an_unknown_status_code_is_a_runtime_error_naming_the_kernel():
    class Fn:
        __name__ = "some_kernel"

    check = cbuild._status_check("dnc")
    assert check(0, Fn(), ()) == 0
    with pytest.raises(RuntimeError, match="dnc C kernel some_kernel: failed with status 7"):
        check(7, Fn(), ())

"""Plain-C CPU kernels built with the system compiler on first use (the DNC's and the NTM's).

A :class:`KernelLibrary` holds one C99 source. Nothing happens at import; the first
:meth:`KernelLibrary.load` compiles it with ``cc -O3 -march=native`` into a cache directory
(``$XDG_CACHE_HOME/memtasks`` or ``~/.cache/memtasks``, else the temp directory). The file name
carries a hash of the source, the flags, the compiler and the CPU, so a shared home directory
never hands one CPU another's instructions, and concurrent builders race harmlessly (the
library is moved into place atomically). Without a compiler, or if the build fails, ``load``
returns None, once per process with a warning, and the model runs its PyTorch operators.
The kernels are single-threaded, whatever ``torch.get_num_threads()`` says.

``C_HELPERS`` is C code both kernels start with: ``vexp`` and ``vlog``, an exp and a log of
about 1 ulp (Cephes-style range reduction and polynomials) written so that the compiler
vectorises the loops that call them, which the C library's ``expf``/``logf`` prevent, and a
``softmax`` built on ``vexp``.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import torch

log = logging.getLogger(__name__)

F32 = 4  # bytes of a float32: the kernels take pointers, offsets into buffers are computed in bytes

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC", "-std=c99")

C_HELPERS = r"""
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* exp, arguments clamped to the float range: x = n ln2 + r, e^r by a degree-6 polynomial */
static inline float vexp(float x) {
    x = x < -87.33654f ? -87.33654f : x;
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    const float y = q * r * r + r + 1.0f;
    union { int i; float f; } scale;
    scale.i = ((int)n + 127) << 23;
    return y * scale.f;
}

/* log of a positive normal float: x = m 2^e with m in (sqrt(1/2), sqrt(2)], log(m) by a polynomial in m - 1 */
static inline float vlog(float x) {
    union { float f; int i; } u;
    u.f = x;
    float e = (float)(((u.i >> 23) & 0xff) - 127);
    u.i = (u.i & 0x007fffff) | 0x3f800000; /* m in [1, 2) */
    float m = u.f;
    const int big = m > 1.41421356f;
    m = big ? 0.5f * m : m;
    e = big ? e + 1.0f : e;
    const float f = m - 1.0f, z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return f + y + 0.693359375f * e;
}

/* x <- softmax(x) over n entries, max-shifted */
static void softmax(float *x, long n) {
    float mx = -INFINITY;
    #pragma omp simd reduction(max : mx)
    for (long i = 0; i < n; ++i) mx = x[i] > mx ? x[i] : mx;
    float tot = 0.0f;
    #pragma omp simd reduction(+ : tot)
    for (long i = 0; i < n; ++i) {
        x[i] = vexp(x[i] - mx);
        tot += x[i];
    }
    const float inv = 1.0f / tot;
    #pragma omp simd
    for (long i = 0; i < n; ++i) x[i] *= inv;
}

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
static inline float vsigm(float x) { return 1.0f / (1.0f + vexp(-x)); }
static inline float vtanh(float x) { return 1.0f - 2.0f / (vexp(2.0f * x) + 1.0f); }
"""


def _cpu_id() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "memtasks"


def build(name: str, source: str, compiler: str) -> Path:
    """Compile ``source`` into ``<cache>/<name>_<hash>.so`` unless it is there; return its path."""
    last: Exception | None = None
    key = hashlib.sha256("\0".join([source, " ".join(FLAGS), compiler, _cpu_id()]).encode()).hexdigest()[:16]
    for directory in (_cache_dir(), Path(tempfile.gettempdir()) / "memtasks"):
        target = directory / f"{name}_{key}.so"
        if target.exists():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                src = Path(tmp) / f"{name}.c"
                src.write_text(source)
                out = Path(tmp) / f"{name}.so"
                subprocess.run([compiler, *FLAGS, str(src), "-o", str(out)], check=True, capture_output=True, timeout=120)
                os.replace(out, target)  # atomic
            return target
        except (OSError, subprocess.SubprocessError) as exc:
            last = exc
    raise RuntimeError(f"could not build the {name} kernels: {last}")


class KernelLibrary:
    """One C source and the signatures of its functions, built and loaded on first use.

    ``signatures`` maps a function name to ``(n_long, n_pointer)``: the function takes that many
    ``long`` arguments followed by that many pointers (``None`` passes NULL) and returns void.
    """

    def __init__(self, name: str, source: str, signatures: dict[str, tuple[int, int]], model: str) -> None:
        self.name = name
        self.source = C_HELPERS + source
        self.signatures = signatures
        self.model = model
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}

    def _build(self, compiler: str) -> Path:
        return build(self.name, self.source, compiler)

    def load(self) -> ctypes.CDLL | None:
        """The compiled library, or None where it cannot be built (then the PyTorch path is used)."""
        with self._lock:
            if "lib" in self._state:
                return self._state["lib"]
            lib = None
            compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
            if sys.platform.startswith(("linux", "darwin")) and compiler:
                try:
                    lib = ctypes.CDLL(str(self._build(compiler)))
                    for fn, (n_long, n_ptr) in self.signatures.items():
                        f = getattr(lib, fn)
                        f.argtypes = _argtypes(n_long, n_ptr)
                        f.restype = None
                except (OSError, RuntimeError, AttributeError) as exc:
                    log.warning("%s: C kernels unavailable, using the PyTorch operators (%s)", self.model, exc)
                    lib = None
            self._state["lib"] = lib
            return lib


    def for_input(self, x: torch.Tensor) -> ctypes.CDLL | None:
        """The library where it applies to a tensor like ``x`` (float32 on the CPU, the only case the
        kernels are written for) and could be built; else None."""
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return None
        return self.load()


def _argtypes(n_long: int, n_ptr: int) -> Sequence[Any]:
    return [ctypes.c_long] * n_long + [ctypes.c_void_p] * n_ptr

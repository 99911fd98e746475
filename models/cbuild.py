"""Plain-C CPU kernels built with the system compiler on first use (the DNC's and the NTM's).

A :class:`KernelLibrary` names one C file of this package (``dnc/kernel.c``, ``ntm/kernel.c``);
each includes ``cbuild_helpers.h``, the C both kernels share: ``vexp`` and
``vlog``, an exp and a log of about 1 ulp written so that the compiler vectorises the loops that
call them, a ``softmax`` built on ``vexp``, and the status codes every kernel function returns.
The files are read as package data (``importlib.resources``), so an installed wheel builds the
same way as a checkout.

Nothing happens at import; the first :meth:`KernelLibrary.load` copies the C file and the header
into a scratch directory and compiles them with ``cc -O3 -march=native`` into a cache directory
(``$XDG_CACHE_HOME/memtasks`` or ``~/.cache/memtasks``, else the temp directory). The file name
carries a hash of the sources, the flags, the compiler and the CPU, so a shared home directory
never hands one CPU another's instructions, and concurrent builders race harmlessly (the
library is moved into place atomically). Without a compiler, or if the build fails, ``load``
returns None, once per process with a warning, and the model runs its PyTorch operators.
The kernels are single-threaded, whatever ``torch.get_num_threads()`` says.

A kernel function returns a status code (``cbuild_helpers.h``); a nonzero one raises the
exception of :data:`STATUS_ERRORS`, whose message names the model and the function.
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
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Mapping, Sequence

import torch

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC", "-std=c99")

HEADER = "cbuild_helpers.h"  # next to this file; every kernel includes it

# the nonzero status codes of cbuild_helpers.h, and what each becomes in Python
STATUS_ERRORS: dict[int, tuple[type[Exception], str]] = {
    1: (MemoryError, "out of memory (a malloc in the kernel returned NULL; nothing was written)"),
}


def read_source(relative: str) -> str:
    """The text of a C file of this package, e.g. ``"dnc/kernel.c"`` (from a checkout or a wheel)."""
    return resources.files(__package__).joinpath(relative).read_text()


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


def build(
    name: str, sources: Mapping[str, str], main: str, compiler: str, defines: Sequence[str] = (), flags: Sequence[str] = ()
) -> Path:
    """Compile ``sources[main]`` into ``<cache>/<name>_<hash>.so`` unless it is there; return its path.

    ``sources`` maps file names to texts; they are written side by side, so an include of ``"x.h"``
    finds ``sources["x.h"]``. ``defines`` are ``-D`` options (``"COS_EPS=1e-08f"``); ``flags`` are compiler
    options after :data:`FLAGS` (``"-ffp-contract=fast"``), for this library alone.
    """
    last: Exception | None = None
    parts = [f"{k}\0{sources[k]}" for k in sorted(sources)] + [" ".join(defines), " ".join(FLAGS), compiler, _cpu_id()]
    if flags:  # only then: a library without extra flags keeps its file name
        parts.append(" ".join(flags))
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    for directory in (_cache_dir(), Path(tempfile.gettempdir()) / "memtasks"):
        target = directory / f"{name}_{key}.so"
        if target.exists():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                for file, text in sources.items():
                    (Path(tmp) / file).write_text(text)
                out = Path(tmp) / f"{name}.so"
                cmd = [compiler, *FLAGS, *flags, *(f"-D{d}" for d in defines), "-I", tmp, str(Path(tmp) / main), "-o", str(out)]
                subprocess.run(cmd, check=True, capture_output=True, timeout=120)
                os.replace(out, target)  # atomic
            return target
        except (OSError, subprocess.SubprocessError) as exc:
            last = exc
    raise RuntimeError(f"could not build the {name} kernels: {last}")


class KernelLibrary:
    """One C file of this package and the signatures of its functions, built and loaded on first use.

    ``kernels`` maps a function name to its ``argtypes``; each returns a status code, checked on
    every call (a nonzero one raises, see :data:`STATUS_ERRORS`). ``queries`` maps a function
    name to its ``argtypes`` for functions that return a ``long`` (a size). ``structs`` maps a
    function that returns ``sizeof`` a C struct to the ``ctypes.Structure`` that mirrors it: a
    mismatch, a bug in this package, raises ``TypeError`` when the library is loaded.
    ``defines`` are ``-D`` options for the build, ``flags`` extra compiler options (after :data:`FLAGS`).
    """

    def __init__(
        self,
        name: str,
        source: str,
        kernels: Mapping[str, Sequence[Any]],
        model: str,
        queries: Mapping[str, Sequence[Any]] | None = None,
        structs: Mapping[str, type[ctypes.Structure]] | None = None,
        defines: Sequence[str] = (),
        flags: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.source = source  # relative to this package, e.g. "dnc/kernel.c"
        self.kernels = dict(kernels)
        self.queries = dict(queries or {})
        self.structs = dict(structs or {})
        self.defines = tuple(defines)
        self.flags = tuple(flags)
        self.model = model
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {}

    def sources(self) -> dict[str, str]:
        """File name -> text of what the build compiles: the kernel's C file and the shared header."""
        return {PurePosixPath(self.source).name: read_source(self.source), HEADER: read_source(HEADER)}

    def _build(self, compiler: str) -> Path:
        return build(self.name, self.sources(), PurePosixPath(self.source).name, compiler, self.defines, self.flags)

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
                    self._declare(lib)
                except (OSError, RuntimeError, AttributeError) as exc:
                    log.warning("%s: C kernels unavailable, using the PyTorch operators (%s)", self.model, exc)
                    lib = None
            else:
                why = "no C compiler found (cc, gcc, clang or $CC)" if not compiler else f"platform {sys.platform}"
                log.warning("%s: C kernels unavailable, using the PyTorch operators (%s)", self.model, why)
            if lib is not None:
                self._check_structs(lib)
            self._state["lib"] = lib
            return lib

    def _declare(self, lib: ctypes.CDLL) -> None:
        for fn, argtypes in self.kernels.items():
            f = getattr(lib, fn)
            f.argtypes, f.restype, f.errcheck = list(argtypes), ctypes.c_int, _status_check(self.model)
        for fn, argtypes in [*self.queries.items(), *((fn, ()) for fn in self.structs)]:
            f = getattr(lib, fn)
            f.argtypes, f.restype = list(argtypes), ctypes.c_long

    def _check_structs(self, lib: ctypes.CDLL) -> None:
        for fn, struct in self.structs.items():
            size, mirror = getattr(lib, fn)(), ctypes.sizeof(struct)
            if size != mirror:
                raise TypeError(
                    f"{self.model} C kernels: {fn}() says {size} bytes but its ctypes mirror "
                    f"{struct.__name__} has {mirror}: the two struct definitions disagree"
                )

    def for_input(self, x: torch.Tensor) -> ctypes.CDLL | None:
        """The library where it applies to a tensor like ``x`` (float32 on the CPU, the only case the
        kernels are written for) and could be built; else None."""
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return None
        return self.load()


def _status_check(model: str) -> Callable[[int, Any, tuple[Any, ...]], int]:
    """A ctypes ``errcheck``: a nonzero status becomes an exception naming the model and the function."""

    def check(status: int, func: Any, args: tuple[Any, ...]) -> int:
        if status:
            kind, what = STATUS_ERRORS.get(status, (RuntimeError, f"failed with status {status}"))
            raise kind(f"{model} C kernel {func.__name__}: {what}")
        return status

    return check

"""The DNC kernels' largest parts timed alone, against what the core's multiply ports allow.

Builds ``models/dnc/kernel.c`` (this tree's, or the one given) with a small C harness into one
library, as the model's build does (same flags), and times in a loop, one element at the benchmark's
sizes (N = 128 slots, one read head, hidden 100, [W_rh W_x] 129 x 400, W_xi 100 x 88), with its
buffers in cache as the sequence kernels keep them:

* the link step forward (``link_forward_1``: L_t from L_{t-1}, with L_t w and L_tᵀ w),
  its gradient (``link_backward_1``, dLoss/dL_t in, dLoss/dL_{t-1} out), and the backward's
  recomputation of L_t alone (``link_update``);
* the controller's products for one element and step, in pairs as the sequence kernels run them:
  forward ``axpy_rows2`` over [W_rh W_x] and W_xi, backward ``dot_rows2`` over their transposes.

Each line gives core cycles per element and step (the core's clock is measured first, with a chain of
dependent additions, one a cycle) and the bound of the multiply ports: products per 8-float vector
counted from the code, two such instructions a cycle. The time-stamp counter's rate is printed too:
it ticks at a fixed rate (on our 2-core VMs 2.60 GHz, the core 3.67), so ``rdtsc`` counts are not
core cycles. x86-64 only (the clock loop)::

    .venv/bin/python docs/bench/dnc_parts.py [path/to/kernel.c]

One-element timings leave out what the training step adds: both elements' link matrices, segments
and gradients, the weights and the per-step records share the core's L2 in the step, so the same
code takes longer there (docs/performance.md, fifth round).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
from pathlib import Path

from memtasks.models.cbuild import HEADER, build, read_source
from memtasks.models.dnc import cpu_kernel

HARNESS = r"""
#define _POSIX_C_SOURCE 200112L /* clock_gettime, posix_memalign under -std=c99 */
#include <time.h>
#include "kernel.c"

/* n floats, 64-byte aligned as the kernels' buffers are (arena views, their own aligned scratch) */
static float *floats(long n) {
    void *p = 0;
    return posix_memalign(&p, 64, sizeof(float) * n) ? 0 : (float *)p;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* core clock: a chain of dependent additions, one a cycle, four a loop (0 where not x86-64) */
double parts_core_hz(void) {
#if defined(__x86_64__)
    long x = 0, n = 400000000;
    const double t0 = now();
    __asm__ volatile("1: add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n sub $4, %1\n jnz 1b"
                     : "+r"(x), "+r"(n));
    return 400000000 / (now() - t0);
#else
    return 0.0;
#endif
}

double parts_tsc_hz(void) {
#if defined(__x86_64__)
    const double t0 = now();
    const unsigned long long c0 = __builtin_ia32_rdtsc();
    while (now() - t0 < 0.2) {}
    return (double)(__builtin_ia32_rdtsc() - c0) / (now() - t0);
#else
    return 0.0;
#endif
}

/* seconds per call of part `which` (0 link forward, 1 link gradient, 2 link recomputation,
 * 3 forward products, 4 backward products), the best of `rounds` loops of `reps` calls */
double parts_time(int which, long reps, int rounds) {
    enum { N = 128, H = 100, Z = 129, G = 400, S = 88 };
    float *L = floats(N * N), *Ln = floats(N * N), *gL = floats(N * N), *v = floats(16 * N);
    float *A = floats(Z * G + H * S), *X = floats(4 * G), *Y = floats(4 * G);
    if (!L || !Ln || !gL || !v || !A || !X || !Y) return -1.0;
    srand(1);
    for (long i = 0; i < N * N; ++i) L[i] = Ln[i] = gL[i] = 0.01f * rand() / RAND_MAX;
    for (long i = 0; i < 16 * N; ++i) v[i] = 0.01f * rand() / RAND_MAX;
    for (long i = 0; i < Z * G + H * S; ++i) A[i] = 0.01f * rand() / RAND_MAX;
    for (long i = 0; i < 4 * G; ++i) X[i] = Y[i] = 0.01f * rand() / RAND_MAX;
    const float *w = v, *p = v + N, *r = v + 2 * N, *gf = v + 3 * N, *gb = v + 4 * N;
    float *gw = v + 5 * N, *gp = v + 6 * N, *gr = v + 7 * N, *f = v + 8 * N, *bk = v + 9 * N;
    double best = 1e30;
    for (int round = 0; round < rounds; ++round) {
        const double t0 = now();
        for (long k = 0; k < reps; ++k) {
            switch (which) {
            case 0: link_forward_1(L, w, p, r, N, Ln, f, bk); break;
            case 1: link_backward_1(gL, gf, gb, L, w, p, r, N, gL, gw, gp, gr); break;
            case 2: link_update(1, N, L, w, p, Ln); break;
            case 3: /* one step of a pair: [W_rh W_x]^T z and W_xi^T h for both */
                axpy_rows2(A, X, X + G, Z, G, Y, Y + G);
                axpy_rows2(A + Z * G, X, X + G, H, S, Y + 2 * G, Y + 3 * G);
                break;
            case 4: /* the backward's: W_xi^T-side dot products, then the Z = 120 rows of [W_rh W_x]^T */
                dot_rows2(A + Z * G, X, X + G, H, S, Y, Y + G);
                dot_rows2(A, X + 2 * G, X + 3 * G, Z - 9, G, Y + 2 * G, Y + 3 * G);
                break;
            }
        }
        const double t = (now() - t0) / reps;
        if (t < best) best = t;
    }
    free(L); free(Ln); free(gL); free(v); free(A); free(X); free(Y);
    return best;
}
"""

# (name, elements per call, multiply-port instructions per call): the link loops' products per 8-float
# vector of L (forward 4, gradient 10, recomputation 2) over N^2 / 8 vectors; the products' N x M / 8 per
# element, two elements a call
N, H, Z, G, S = 128, 100, 129, 400, 88
PARTS = (
    ("link step forward", 1, 4 * N * N / 8),
    ("link step gradient", 1, 10 * N * N / 8),
    ("link recomputation", 1, 2 * N * N / 8),
    ("controller forward products", 2, 2 * (Z * G + H * S) / 8),
    ("controller backward products", 2, 2 * ((Z - 9) * G + H * S) / 8),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kernel", type=Path, nargs="?", help="kernel.c to time (default: this tree's)")
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    source = args.kernel.read_text() if args.kernel else read_source(cpu_kernel.LIBRARY.source)
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise SystemExit("no C compiler found (cc, gcc, clang or $CC)")
    sources = {"parts.c": HARNESS, "kernel.c": source, HEADER: read_source(HEADER)}
    lib = ctypes.CDLL(str(build("dnc_parts", sources, "parts.c", compiler, flags=cpu_kernel.LIBRARY.flags)))
    for fn in ("parts_core_hz", "parts_tsc_hz"):
        getattr(lib, fn).restype = ctypes.c_double
    lib.parts_time.restype = ctypes.c_double
    lib.parts_time.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_int]
    core = statistics.median(lib.parts_core_hz() for _ in range(3))
    if not core:
        raise SystemExit("the core clock is measured on x86-64 only")
    tsc = lib.parts_tsc_hz()
    print(f"core clock {core / 1e9:.2f} GHz" + (f", time-stamp counter {tsc / 1e9:.2f} GHz" if tsc else ""))
    print(f"{'part':30s} {'core cycles / element-step':>27s} {'multiply-port bound':>20s} {'bound / time':>13s}")
    for which, (name, elements, products) in enumerate(PARTS):
        seconds = lib.parts_time(which, 2000, args.rounds)
        if seconds < 0:
            raise SystemExit("out of memory")
        cycles = seconds * core / elements
        bound = products / 2 / elements
        print(f"{name:30s} {cycles:27,.0f} {bound:20,.0f} {bound / cycles:13.2f}")


if __name__ == "__main__":
    main()

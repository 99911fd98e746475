/* C helpers shared by the C kernels of memtasks.models (dnc/kernel.c, ntm/kernel.c); cbuild.py
 * compiles each kernel with this header next to it.
 *
 * vexp and vlog: an exp and a log of about 1 ulp (Cephes-style range reduction and polynomials),
 * written so that the compiler vectorises the loops that call them, which the C library's
 * expf/logf prevent; softmax is built on vexp.
 *
 * Status codes: every exported kernel function returns one; cbuild.py turns a nonzero one into
 * a Python exception that names the kernel (STATUS_ERRORS there mirrors this list). */
#ifndef MEMTASKS_CBUILD_HELPERS_H
#define MEMTASKS_CBUILD_HELPERS_H
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

#define KERNEL_OK 0
#define KERNEL_NO_MEMORY 1 /* a malloc returned NULL: nothing was written */

#endif

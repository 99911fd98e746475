/* One DNC memory step (Graves et al. 2016, Methods): float32, contiguous, batch-major.
 * The memory is stored slot-minor, M[b][k][n] (B x W x N), so that every loop over slots is a
 * contiguous vector loop. Per batch element b, independently (that element's N x N link rows
 * stay in cache):
 *   interface  k^w, k^r, beta = oneplus, e, f^i, g^a, g^w = sigmoid, v, pi = softmax over 3
 *   usage      psi = prod_i (1 - f^i w^r_{t-1,i});  u_t = (u + w^w_{t-1} - u w^w_{t-1}) psi
 *   allocation phi = stable ascending sort of u_t;  a[phi_j] = (1 - u[phi_j]) prod_{i<j} u[phi_i]
 *   write      c^w = C(M_{t-1}, k^w, beta^w);  w^w = g^w (g^a a + (1 - g^a) c^w)
 *              M_t = M_{t-1} (1 - w^w e^T) + w^w v^T
 *   links      L_t[i,j] = (1 - w^w_i - w^w_j) L_{t-1}[i,j] + w^w_i p_{t-1,j}, L_t[i,i] = 0
 *              p_t = (1 - sum w^w) p_{t-1} + w^w;  f^i = L_t w^r_{t-1,i};  b^i = L_t^T w^r_{t-1,i}
 *   read       c^r_i = C(M_t, k^r_i, beta^r_i);  w^r_i = pi_i0 b^i + pi_i1 c^r_i + pi_i2 f^i;  r_i = M_t^T w^r_i
 * C(M, k, beta)[n] = softmax_n(beta k.M[n] / (|k|_e |M[n]|_e)),  |x|_e = sqrt(sum x^2 + EPS).
 * The backward is the exact gradient of the above (none through the sort order); it recomputes
 * the rows of L_t instead of reading them back. Each element of L_t (and of dL_{t-1}) is computed
 * from the same element of L_{t-1} (of dL_t) alone, so Ln may be L and gL may be gLn: the caller
 * updates one link buffer in place, which stays in cache, instead of writing a new 2 MB a step.
 *
 * Called from Python (models/dnc/sequence.py) through ctypes: every exported function takes the
 * buffers of the sequence as one dnc_buffers (mirrored field for field by cpu_kernel.Buffers)
 * and slot numbers into them, and returns a status code of cbuild_helpers.h. */
#include "cbuild_helpers.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
/* 256-bit vectors where the compiler vectorizes (it chose 512 on AVX-512 machines): on the 2-core AMD
 * machines the training step took 0.96-0.98x the time (docs/performance.md, issue 16's fourth round) */
#pragma GCC target("prefer-vector-width=256")
#endif

/* Eight floats as one value (GCC/Clang vector extensions: one AVX register where there is one, two SSE
 * registers or scalar code elsewhere). The link matrices' loops are written with them: their four-row
 * blocks keep sixteen broadcast scalars and eight partial sums in registers and sum each partial sum
 * once a block (hsum8), where `omp simd` reductions spilled and summed lane by lane. For N % 8 == 0. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4))); /* unaligned loads and stores */
typedef int v8i __attribute__((vector_size(32)));
static inline v8 ld8(const float *p) { return *(const v8u *)p; }
static inline void st8(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 bc8(float x) { return x - (v8){0}; }
static inline float hsum8(v8 v) { /* ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)) */
#if defined(__clang__)
    v = v + __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    v = v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#else
    v = v + __builtin_shuffle(v, (v8i){4, 5, 6, 7, 0, 1, 2, 3});
    v = v + __builtin_shuffle(v, (v8i){2, 3, 0, 1, 6, 7, 4, 5});
    v = v + __builtin_shuffle(v, (v8i){1, 0, 3, 2, 5, 4, 7, 6});
#endif
    return v[0];
}

#define EPS 1e-6f

/* The time-major buffers of one sequence, allocated once per call by sequence.py: entry i of a
 * buffer ("slot i") is one step's value. Per-step buffers have TS slots and state buffers TT
 * (T and T + 1 when training, 1 and 2 alternating slots in evaluation). All contiguous float32
 * (order: int32). S is the interface size (layout.S), SV = dnc_saved_floats(N, R). */
typedef struct {
    long B, N, W, R, H;  /* batch, memory slots, width, read heads, controller size */
    float *xi;     /* (TS, B, S)       interface vectors xi_t */
    float *sv;     /* (TS, B, SV)      what the forward saves for the backward (saved_at) */
    int *order;    /* (TS, B, N)       allocation order phi_t */
    float *act;    /* (TS, B, 4H)      activated LSTM gates */
    float *c;      /* (TT, B, H)       LSTM cell c_t */
    float *h;      /* (T, B, H)        LSTM output h_t, one slot per step */
    float *mem;    /* (TT, B, W, N)    memory M_t, slot-minor; the sequence functions in training
                    *                  write only t = 0 (the caller), multiples of K, and T */
    float *usage;  /* (TT, B, N)       u_t */
    float *prec;   /* (TT, B, N)       precedence p_t */
    float *ww;     /* (TT, B, N)       write weighting w^w_t */
    float *wr;     /* (TT, B, R, N)    read weightings w^r_t */
    float *reads;  /* (T + 1, B, R, W) read vectors r_t, one slot per step and r_0 */
} dnc_buffers;

/* dLoss/d of a memory state (M, u, L, p, w^w, w^r), batch-major as in dnc_buffers; NULL: zero */
typedef struct {
    float *mem, *usage, *link, *prec, *ww, *wr;
} dnc_state_grad;

typedef struct {
    long N, W, R, S;
    long kw, kr, bw, br, er, fg, ga, gw, v, pi; /* offsets into the interface vector xi */
} layout;

static layout make_layout(long N, long W, long R) {
    layout l;
    l.N = N; l.W = W; l.R = R;
    l.kw = 0; l.kr = W; l.bw = (1 + R) * W; l.br = l.bw + 1;
    l.er = l.br + R; l.fg = l.er + W; l.ga = l.fg + R; l.gw = l.ga + 1;
    l.v = l.gw + 1; l.pi = l.v + W; l.S = l.pi + 3 * R;
    return l;
}


static inline float snorm(const float *x, long n) {
    float s = 0.0f;
    for (long k = 0; k < n; ++k) s += x[k] * x[k];
    return sqrtf(s + EPS);
}

/* out[n] = sum_k M[k][n] key[k]  (M is W x N); four rows of M a pass (out loaded and stored once for four) */
static void slot_dots(const float *M, long N, long W, const float *key, float *out) {
    memset(out, 0, sizeof(float) * N);
    long k = 0;
    for (; k + 4 <= W; k += 4) {
        const float k0 = key[k], k1 = key[k + 1], k2 = key[k + 2], k3 = key[k + 3];
        const float *M0 = M + k * N, *M1 = M0 + N, *M2 = M1 + N, *M3 = M2 + N;
        #pragma omp simd
        for (long n = 0; n < N; ++n) out[n] += (M0[n] * k0 + M1[n] * k1) + (M2[n] * k2 + M3[n] * k3);
    }
    for (; k < W; ++k) {
        const float kk = key[k];
        const float *Mk = M + k * N;
        #pragma omp simd
        for (long n = 0; n < N; ++n) out[n] += Mk[n] * kk;
    }
}

/* out[n] = |M[:, n]|_e; four rows of M a pass */
static void slot_norms(const float *M, long N, long W, float *out) {
    memset(out, 0, sizeof(float) * N);
    long k = 0;
    for (; k + 4 <= W; k += 4) {
        const float *M0 = M + k * N, *M1 = M0 + N, *M2 = M1 + N, *M3 = M2 + N;
        #pragma omp simd
        for (long n = 0; n < N; ++n) out[n] += (M0[n] * M0[n] + M1[n] * M1[n]) + (M2[n] * M2[n] + M3[n] * M3[n]);
    }
    for (; k < W; ++k) {
        const float *Mk = M + k * N;
        #pragma omp simd
        for (long n = 0; n < N; ++n) out[n] += Mk[n] * Mk[n];
    }
    #pragma omp simd
    for (long n = 0; n < N; ++n) out[n] = sqrtf(out[n] + EPS);
}

/* saved floats per batch element */
static long saved_size(long N, long R) { return 7 * N + 4 * R * N; }
long dnc_saved_floats(long N, long R) { return saved_size(N, R); }

typedef struct { float *nM, *simw, *cw, *alloc, *cp, *srt, *nMn, *simr, *cr, *fw, *bk; } saved;

static saved saved_at(float *base, long N, long R) {
    saved s;
    s.nM = base; s.simw = base + N; s.cw = base + 2 * N; s.alloc = base + 3 * N; s.cp = base + 4 * N;
    s.srt = base + 5 * N; s.nMn = base + 6 * N; s.simr = base + 7 * N; s.cr = s.simr + R * N;
    s.fw = s.cr + R * N; s.bk = s.fw + R * N;
    return s;
}

/* an unsigned key in the order of the float (-0 -> +0 first, so that zeros tie) */
static inline unsigned order_key(float x) {
    float v = x + 0.0f;
    unsigned u;
    memcpy(&u, &v, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* stable ascending argsort of x[0..N) by LSD radix sort on order-preserving keys */
static void argsort(const float *x, long N, int *idx, int *itmp, unsigned *key, unsigned *ktmp) {
    for (long i = 0; i < N; ++i) {
        key[i] = order_key(x[i]);
        idx[i] = (int)i;
    }
    for (int shift = 0; shift < 32; shift += 8) {
        long count[257];
        memset(count, 0, sizeof count);
        for (long i = 0; i < N; ++i) count[((key[i] >> shift) & 255u) + 1]++;
        if (count[((key[0] >> shift) & 255u) + 1] == N) continue; /* one digit value: nothing to do */
        for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
        for (long i = 0; i < N; ++i) {
            long pos = count[(key[i] >> shift) & 255u]++;
            ktmp[pos] = key[i];
            itmp[pos] = idx[i];
        }
        memcpy(key, ktmp, sizeof(unsigned) * N);
        memcpy(idx, itmp, sizeof(int) * N);
    }
}

/* The same order from a guess: idx holds a permutation (the previous step's order, which usage
 * mostly keeps), sorted by insertion on (key, slot) pairs, a strict total order, so the result is
 * argsort's whatever the guess. Returns 0, idx unchanged, when that takes more than 8N moves. */
static int argsort_from(const float *x, long N, int *idx, unsigned long long *ck) {
    for (long i = 0; i < N; ++i) ck[i] = ((unsigned long long)order_key(x[idx[i]]) << 32) | (unsigned)idx[i];
    long moves = 0;
    for (long i = 1; i < N; ++i) {
        const unsigned long long v = ck[i];
        long j = i;
        while (j > 0 && ck[j - 1] > v) {
            ck[j] = ck[j - 1];
            --j;
        }
        ck[j] = v;
        moves += i - j;
        if (moves > 8 * N) return 0;
    }
    for (long i = 0; i < N; ++i) idx[i] = (int)(ck[i] & 0xffffffffu);
    return 1;
}

/* content weighting of one key against the slots of M (W x N) with known slot norms; writes sim, c */
static void content(const float *M, const float *nrm, const float *key, float beta, long N, long W, float *sim,
                    float *c) {
    const float nk = snorm(key, W);
    slot_dots(M, N, W, key, sim);
    #pragma omp simd
    for (long n = 0; n < N; ++n) {
        sim[n] = sim[n] / (nk * nrm[n]);
        c[n] = beta * sim[n];
    }
    softmax(c, N);
}

/* gradient of content(): gc in; adds into gM (W x N) and gkey (W); returns d/d beta.
 * gdot, gn: N floats of scratch */
static float content_backward(const float *M, const float *nrm, const float *key, float beta, const float *sim,
                              const float *c, const float *gc, long N, long W, float *gM, float *gkey,
                              float *gdot, float *gn) {
    const float nk = snorm(key, W);
    float s = 0.0f, gbeta = 0.0f, gnk = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (long n = 0; n < N; ++n) s += gc[n] * c[n];
    #pragma omp simd reduction(+ : gbeta, gnk)
    for (long n = 0; n < N; ++n) {
        const float gz = c[n] * (gc[n] - s);
        gbeta += gz * sim[n];
        const float gsim = beta * gz;
        gdot[n] = gsim / (nk * nrm[n]);
        gnk -= gsim * sim[n];
        gn[n] = -gsim * sim[n] / (nrm[n] * nrm[n]);
    }
    gnk /= nk * nk;
    long k = 0;
    if (N % 8 == 0) /* four rows of M a pass: gdot and gn loaded once for four, one horizontal sum a row */
        for (; k + 4 <= W; k += 4) {
            const float *M0 = M + k * N;
            float *G0 = gM + k * N;
            const v8 k0 = bc8(key[k]), k1 = bc8(key[k + 1]), k2 = bc8(key[k + 2]), k3 = bc8(key[k + 3]);
            v8 a0 = bc8(0.0f), a1 = a0, a2 = a0, a3 = a0;
            for (long n = 0; n < N; n += 8) {
                const v8 gd = ld8(gdot + n), gv = ld8(gn + n);
                const v8 m0 = ld8(M0 + n), m1 = ld8(M0 + N + n), m2 = ld8(M0 + 2 * N + n), m3 = ld8(M0 + 3 * N + n);
                a0 += gd * m0; a1 += gd * m1; a2 += gd * m2; a3 += gd * m3;
                st8(G0 + n, ld8(G0 + n) + (gd * k0 + gv * m0));
                st8(G0 + N + n, ld8(G0 + N + n) + (gd * k1 + gv * m1));
                st8(G0 + 2 * N + n, ld8(G0 + 2 * N + n) + (gd * k2 + gv * m2));
                st8(G0 + 3 * N + n, ld8(G0 + 3 * N + n) + (gd * k3 + gv * m3));
            }
            gkey[k] += hsum8(a0) + gnk * key[k];
            gkey[k + 1] += hsum8(a1) + gnk * key[k + 1];
            gkey[k + 2] += hsum8(a2) + gnk * key[k + 2];
            gkey[k + 3] += hsum8(a3) + gnk * key[k + 3];
        }
    for (; k < W; ++k) {
        const float *Mk = M + k * N;
        float *gMk = gM + k * N;
        const float kk = key[k];
        float acc = 0.0f;
        #pragma omp simd reduction(+ : acc)
        for (long n = 0; n < N; ++n) {
            acc += gdot[n] * Mk[n];
            gMk[n] += gdot[n] * kk + gn[n] * Mk[n];
        }
        gkey[k] += acc + gnk * kk;
    }
    return gbeta;
}

/* L_t rows from L_{t-1}; f[h,i] = sum_j L_t[i,j] r[h,j]; bk[h,j] = sum_i r[h,i] L_t[i,j] (any R) */
static void link_forward(const float *Lb, const float *w, const float *p, const float *r, long N, long R,
                         float *O, float *fw, float *bk) {
    memset(bk, 0, sizeof(float) * R * N);
    for (long i = 0; i < N; ++i) {
        const float *Li = Lb + i * N;
        float *Oi = O + i * N;
        const float a = 1.0f - w[i], wi = w[i];
        #pragma omp simd
        for (long j = 0; j < N; ++j) Oi[j] = (a - w[j]) * Li[j] + wi * p[j];
        Oi[i] = 0.0f;
        for (long h = 0; h < R; ++h) {
            const float *rh = r + h * N;
            float *bh = bk + h * N;
            const float ri = rh[i];
            float acc = 0.0f;
            #pragma omp simd reduction(+ : acc)
            for (long j = 0; j < N; ++j) {
                acc += Oi[j] * rh[j];
                bh[j] += ri * Oi[j];
            }
            fw[h * N + i] = acc;
        }
    }
}

/* the same for one read head, four rows at a time: the column vectors are loaded once per block. The
 * loop computes the diagonal entries like any other (a per-element test for j == i would cost more
 * than the arithmetic); after it they are set to zero and what they added to f and b is taken back. */
static void link_forward_1(const float *Lb, const float *w, const float *p, const float *r, long N, float *O,
                           float *fw, float *bk) {
    memset(bk, 0, sizeof(float) * N);
    long i = 0;
    if (N % 8 == 0)
        for (; i < N; i += 4) { /* the same sums in eight-float vectors */
            const float *L = Lb + i * N;
            float *Oi = O + i * N;
            const v8 w0 = bc8(w[i]), w1 = bc8(w[i + 1]), w2 = bc8(w[i + 2]), w3 = bc8(w[i + 3]);
            const v8 a0 = 1.0f - w0, a1 = 1.0f - w1, a2 = 1.0f - w2, a3 = 1.0f - w3;
            const v8 r0 = bc8(r[i]), r1 = bc8(r[i + 1]), r2 = bc8(r[i + 2]), r3 = bc8(r[i + 3]);
            v8 f0 = bc8(0.0f), f1 = f0, f2 = f0, f3 = f0;
            for (long j = 0; j < N; j += 8) {
                const v8 wj = ld8(w + j), pj = ld8(p + j), rj = ld8(r + j);
                const v8 o0 = (a0 - wj) * ld8(L + j) + w0 * pj;
                const v8 o1 = (a1 - wj) * ld8(L + N + j) + w1 * pj;
                const v8 o2 = (a2 - wj) * ld8(L + 2 * N + j) + w2 * pj;
                const v8 o3 = (a3 - wj) * ld8(L + 3 * N + j) + w3 * pj;
                st8(Oi + j, o0); st8(Oi + N + j, o1); st8(Oi + 2 * N + j, o2); st8(Oi + 3 * N + j, o3);
                f0 += o0 * rj; f1 += o1 * rj; f2 += o2 * rj; f3 += o3 * rj;
                st8(bk + j, ld8(bk + j) + (r0 * o0 + r1 * o1 + r2 * o2 + r3 * o3));
            }
            fw[i] = hsum8(f0); fw[i + 1] = hsum8(f1); fw[i + 2] = hsum8(f2); fw[i + 3] = hsum8(f3);
            for (long d = i; d < i + 4; ++d) { /* L_t[d,d] = 0 */
                const float o = O[d * N + d];
                O[d * N + d] = 0.0f;
                fw[d] -= o * r[d];
                bk[d] -= r[d] * o;
            }
        }
    for (; i + 4 <= N; i += 4) {
        const float *L0 = Lb + i * N, *L1 = L0 + N, *L2 = L1 + N, *L3 = L2 + N;
        float *O0 = O + i * N, *O1 = O0 + N, *O2 = O1 + N, *O3 = O2 + N;
        const float w0 = w[i], w1 = w[i + 1], w2 = w[i + 2], w3 = w[i + 3];
        const float a0 = 1.0f - w0, a1 = 1.0f - w1, a2 = 1.0f - w2, a3 = 1.0f - w3;
        const float r0 = r[i], r1 = r[i + 1], r2 = r[i + 2], r3 = r[i + 3];
        float f0 = 0.0f, f1 = 0.0f, f2 = 0.0f, f3 = 0.0f;
        #pragma omp simd reduction(+ : f0, f1, f2, f3)
        for (long j = 0; j < N; ++j) {
            const float wj = w[j], pj = p[j], rj = r[j];
            const float o0 = (a0 - wj) * L0[j] + w0 * pj;
            const float o1 = (a1 - wj) * L1[j] + w1 * pj;
            const float o2 = (a2 - wj) * L2[j] + w2 * pj;
            const float o3 = (a3 - wj) * L3[j] + w3 * pj;
            O0[j] = o0; O1[j] = o1; O2[j] = o2; O3[j] = o3;
            f0 += o0 * rj; f1 += o1 * rj; f2 += o2 * rj; f3 += o3 * rj;
            bk[j] += r0 * o0 + r1 * o1 + r2 * o2 + r3 * o3;
        }
        fw[i] = f0; fw[i + 1] = f1; fw[i + 2] = f2; fw[i + 3] = f3;
        for (long d = i; d < i + 4; ++d) { /* L_t[d,d] = 0 */
            const float o = O[d * N + d];
            O[d * N + d] = 0.0f;
            fw[d] -= o * r[d];
            bk[d] -= r[d] * o;
        }
    }
    for (; i < N; ++i) {
        const float *Li = Lb + i * N;
        float *Oi = O + i * N;
        const float a = 1.0f - w[i], wi = w[i], ri = r[i];
        float acc = 0.0f;
        #pragma omp simd reduction(+ : acc)
        for (long j = 0; j < N; ++j) {
            const float o = (j == i) ? 0.0f : (a - w[j]) * Li[j] + wi * p[j];
            Oi[j] = o;
            acc += o * r[j];
            bk[j] += ri * o;
        }
        fw[i] = acc;
    }
}

/* gradient of the link step (any R): dL_t = gnew + gf r^T + r gb^T off the diagonal; accumulates
 * into gw, gp, gr; writes dL_{t-1} into gL when it is not NULL. row, nrow: N floats of scratch. */
static void link_backward(const float *gnew, const float *gf, const float *gb, const float *Lb, const float *w,
                          const float *p, const float *r, long N, long R, float *gL, float *gw, float *gp,
                          float *gr, float *row, float *nrow) {
    for (long i = 0; i < N; ++i) {
        const float *Li = Lb + i * N;
        const float a = 1.0f - w[i], wi = w[i];
        if (gnew) memcpy(row, gnew + i * N, sizeof(float) * N);
        else memset(row, 0, sizeof(float) * N);
        for (long h = 0; h < R; ++h) {
            const float *rh = r + h * N, *gbh = gb + h * N;
            const float gfi = gf[h * N + i], ri = rh[i];
            #pragma omp simd
            for (long j = 0; j < N; ++j) row[j] += gfi * rh[j] + ri * gbh[j];
        }
        row[i] = 0.0f;
        #pragma omp simd
        for (long j = 0; j < N; ++j) nrow[j] = (a - w[j]) * Li[j] + wi * p[j];
        nrow[i] = 0.0f;
        for (long h = 0; h < R; ++h) {
            const float *gbh = gb + h * N;
            float *grh = gr + h * N;
            const float gfi = gf[h * N + i];
            float acc = 0.0f;
            #pragma omp simd reduction(+ : acc)
            for (long j = 0; j < N; ++j) {
                acc += gbh[j] * nrow[j];
                grh[j] += gfi * nrow[j];
            }
            grh[i] += acc;
        }
        float gwi = 0.0f;
        #pragma omp simd reduction(+ : gwi)
        for (long j = 0; j < N; ++j) {
            const float g = row[j], lv = Li[j];
            gp[j] += wi * g;
            gwi += g * (p[j] - lv);
            gw[j] -= g * lv;
        }
        gw[i] += gwi;
        if (gL) {
            float *gLi = gL + i * N;
            #pragma omp simd
            for (long j = 0; j < N; ++j) gLi[j] = row[j] * (a - w[j]);
        }
    }
}

/* the same for one read head, four rows at a time */
#define LINK_BWD_ROW(k)                                                                            \
    const float g##k = G##k[j] + gf##k * rj + r##k * gbj;                                          \
    const float l##k = L##k[j], d##k = a##k - wj;                                                  \
    const float n##k = d##k * l##k + w##k * pj;                                                    \
    ar##k += gbj * n##k;                                                                           \
    aw##k += g##k * (pj - l##k);

/* what LINK_BWD_ROW(k) and the sums after it added for the diagonal entry (i + k, i + k), whose
 * gradient is zero because L_t's diagonal is set to zero: taken back after the unmasked loop */
#define LINK_BWD_DIAG(k)                                                                           \
    {                                                                                              \
        const long d = i + k;                                                                      \
        const float g = gd##k + gf##k * r[d] + r##k * gb[d];                                       \
        const float lv = L##k[d], nv = (a##k - w[d]) * lv + w##k * p[d];                           \
        ar##k -= gb[d] * nv;                                                                       \
        aw##k -= g * (p[d] - lv);                                                                  \
        gr[d] -= gf##k * nv;                                                                       \
        gp[d] -= w##k * g;                                                                         \
        gw[d] += g * lv;                                                                           \
        if (gL) gL[d * N + d] = 0.0f;                                                              \
    }

static const float zeros_row[4096];

/* LINK_BWD_ROW in eight-float vectors; G (dLoss/dL_t) is read only when hasg */
#define LINK_BWD_VROW(k)                                                                           \
    const v8 g##k = (hasg ? ld8(G + (k) * N + j) : zero) + gf##k * rj + r##k * gbj;                \
    const v8 l##k = ld8(L + (k) * N + j), d##k = a##k - wj;                                        \
    const v8 n##k = d##k * l##k + w##k * pj;                                                       \
    ar##k += gbj * n##k;                                                                           \
    aw##k += g##k * (pj - l##k);

/* link_backward_1's rows i .. i + 3 in eight-float vectors (N % 8 == 0); hasg, hasd: whether G (dLoss/dL_t)
 * is read and D (dLoss/dL_{t-1}) written. Inlined with constant flags: one loop for each case. */
static inline __attribute__((always_inline)) void link_backward_rows(int hasg, int hasd, const float *G,
        const float *gf, const float *gb, const float *L, const float *w, const float *p, const float *r, long N,
        long i, float *D, float *gw, float *gp, float *gr) {
    const v8 zero = bc8(0.0f);
    const v8 w0 = bc8(w[i]), w1 = bc8(w[i + 1]), w2 = bc8(w[i + 2]), w3 = bc8(w[i + 3]);
    const v8 a0 = 1.0f - w0, a1 = 1.0f - w1, a2 = 1.0f - w2, a3 = 1.0f - w3;
    const v8 r0 = bc8(r[i]), r1 = bc8(r[i + 1]), r2 = bc8(r[i + 2]), r3 = bc8(r[i + 3]);
    const v8 gf0 = bc8(gf[i]), gf1 = bc8(gf[i + 1]), gf2 = bc8(gf[i + 2]), gf3 = bc8(gf[i + 3]);
    v8 ar0 = zero, ar1 = zero, ar2 = zero, ar3 = zero, aw0 = zero, aw1 = zero, aw2 = zero, aw3 = zero;
    float gd[4]; /* read before the loop: D may be G itself (updated in place) */
    for (int k = 0; k < 4; ++k) gd[k] = hasg ? G[k * N + i + k] : 0.0f;
    for (long j = 0; j < N; j += 8) {
        const v8 wj = ld8(w + j), pj = ld8(p + j), rj = ld8(r + j), gbj = ld8(gb + j);
        LINK_BWD_VROW(0) LINK_BWD_VROW(1) LINK_BWD_VROW(2) LINK_BWD_VROW(3)
        st8(gr + j, ld8(gr + j) + (gf0 * n0 + gf1 * n1 + gf2 * n2 + gf3 * n3));
        st8(gp + j, ld8(gp + j) + (w0 * g0 + w1 * g1 + w2 * g2 + w3 * g3));
        st8(gw + j, ld8(gw + j) - (g0 * l0 + g1 * l1 + g2 * l2 + g3 * l3));
        if (hasd) {
            st8(D + j, g0 * d0); st8(D + N + j, g1 * d1); st8(D + 2 * N + j, g2 * d2); st8(D + 3 * N + j, g3 * d3);
        }
    }
    float ar[4] = {hsum8(ar0), hsum8(ar1), hsum8(ar2), hsum8(ar3)};
    float aw[4] = {hsum8(aw0), hsum8(aw1), hsum8(aw2), hsum8(aw3)};
    for (int k = 0; k < 4; ++k) { /* what the loop added for the diagonal entry (i + k, i + k), taken back */
        const long d = i + k;
        const float wk = w[d], g = gd[k] + gf[d] * r[d] + r[d] * gb[d];
        const float lv = L[k * N + d], nv = (1.0f - wk - wk) * lv + wk * p[d];
        ar[k] -= gb[d] * nv;
        aw[k] -= g * (p[d] - lv);
        gr[d] -= gf[d] * nv;
        gp[d] -= wk * g;
        gw[d] += g * lv;
        if (hasd) D[k * N + d] = 0.0f;
    }
    for (int k = 0; k < 4; ++k) {
        gr[i + k] += ar[k];
        gw[i + k] += aw[k];
    }
}

static void link_backward_1(const float *gnew, const float *gf, const float *gb, const float *Lb, const float *w,
                            const float *p, const float *r, long N, float *gL, float *gw, float *gp, float *gr) {
    long i = 0;
    if (N % 8 == 0)
        for (; i < N; i += 4) {
            const float *G = gnew ? gnew + i * N : 0, *L = Lb + i * N;
            float *D = gL ? gL + i * N : 0;
            if (gnew && gL) link_backward_rows(1, 1, G, gf, gb, L, w, p, r, N, i, D, gw, gp, gr);
            else if (gL) link_backward_rows(0, 1, G, gf, gb, L, w, p, r, N, i, D, gw, gp, gr);
            else if (gnew) link_backward_rows(1, 0, G, gf, gb, L, w, p, r, N, i, D, gw, gp, gr);
            else link_backward_rows(0, 0, G, gf, gb, L, w, p, r, N, i, D, gw, gp, gr);
        }
    if (N <= 4096) {
        for (; i + 4 <= N; i += 4) {
            const float *L0 = Lb + i * N, *L1 = L0 + N, *L2 = L1 + N, *L3 = L2 + N;
            const float *G0 = gnew ? gnew + i * N : zeros_row, *G1 = gnew ? G0 + N : zeros_row;
            const float *G2 = gnew ? G1 + N : zeros_row, *G3 = gnew ? G2 + N : zeros_row;
            const float w0 = w[i], w1 = w[i + 1], w2 = w[i + 2], w3 = w[i + 3];
            const float a0 = 1.0f - w0, a1 = 1.0f - w1, a2 = 1.0f - w2, a3 = 1.0f - w3;
            const float r0 = r[i], r1 = r[i + 1], r2 = r[i + 2], r3 = r[i + 3];
            const float gf0 = gf[i], gf1 = gf[i + 1], gf2 = gf[i + 2], gf3 = gf[i + 3];
            float ar0 = 0.0f, ar1 = 0.0f, ar2 = 0.0f, ar3 = 0.0f, aw0 = 0.0f, aw1 = 0.0f, aw2 = 0.0f, aw3 = 0.0f;
            /* read before the loop: gL may be gnew itself (updated in place) */
            const float gd0 = G0[i], gd1 = G1[i + 1], gd2 = G2[i + 2], gd3 = G3[i + 3];
            if (gL) {
                float *D0 = gL + i * N, *D1 = D0 + N, *D2 = D1 + N, *D3 = D2 + N;
                #pragma omp simd reduction(+ : ar0, ar1, ar2, ar3, aw0, aw1, aw2, aw3)
                for (long j = 0; j < N; ++j) {
                    const float wj = w[j], pj = p[j], rj = r[j], gbj = gb[j];
                    LINK_BWD_ROW(0) LINK_BWD_ROW(1) LINK_BWD_ROW(2) LINK_BWD_ROW(3)
                    gr[j] += gf0 * n0 + gf1 * n1 + gf2 * n2 + gf3 * n3;
                    gp[j] += w0 * g0 + w1 * g1 + w2 * g2 + w3 * g3;
                    gw[j] -= g0 * l0 + g1 * l1 + g2 * l2 + g3 * l3;
                    D0[j] = g0 * d0; D1[j] = g1 * d1; D2[j] = g2 * d2; D3[j] = g3 * d3;
                }
            } else {
                #pragma omp simd reduction(+ : ar0, ar1, ar2, ar3, aw0, aw1, aw2, aw3)
                for (long j = 0; j < N; ++j) {
                    const float wj = w[j], pj = p[j], rj = r[j], gbj = gb[j];
                    LINK_BWD_ROW(0) LINK_BWD_ROW(1) LINK_BWD_ROW(2) LINK_BWD_ROW(3)
                    gr[j] += gf0 * n0 + gf1 * n1 + gf2 * n2 + gf3 * n3;
                    gp[j] += w0 * g0 + w1 * g1 + w2 * g2 + w3 * g3;
                    gw[j] -= g0 * l0 + g1 * l1 + g2 * l2 + g3 * l3;
                }
            }
            LINK_BWD_DIAG(0) LINK_BWD_DIAG(1) LINK_BWD_DIAG(2) LINK_BWD_DIAG(3)
            gr[i] += ar0; gr[i + 1] += ar1; gr[i + 2] += ar2; gr[i + 3] += ar3;
            gw[i] += aw0; gw[i + 1] += aw1; gw[i + 2] += aw2; gw[i + 3] += aw3;
        }
    }
    for (; i < N; ++i) {
        const float *L0 = Lb + i * N, *G0 = gnew ? gnew + i * N : 0;
        const float w0 = w[i], a0 = 1.0f - w0, r0 = r[i], gf0 = gf[i];
        float ar0 = 0.0f, aw0 = 0.0f;
        for (long j = 0; j < N; ++j) {
            const float wj = w[j], pj = p[j], rj = r[j], gbj = gb[j];
            const float g0 = (j == i) ? 0.0f : (G0 ? G0[j] : 0.0f) + gf0 * rj + r0 * gbj;
            const float l0 = L0[j], d0 = a0 - wj;
            const float n0 = (j == i) ? 0.0f : d0 * l0 + w0 * pj;
            ar0 += gbj * n0;
            aw0 += g0 * (pj - l0);
            gr[j] += gf0 * n0;
            gp[j] += w0 * g0;
            gw[j] -= g0 * l0;
            if (gL) gL[i * N + j] = g0 * d0;
        }
        gr[i] += ar0;
        gw[i] += aw0;
    }
}

/* the erase vector e = sigmoid(x) (W floats) with vexp, vectorised: with libm's expf, one call a float,
 * three times per element and step, the training step took 1.01-1.02x the time. Not inlined: the forward
 * and the backward's recomputation of the memories get the same e, bit for bit. */
__attribute__((noinline)) static void erase_vector(const float *x, long W, float *e) {
    #pragma omp simd
    for (long k = 0; k < W; ++k) e[k] = vsigm(x[k]);
}

/* M_t = M_{t-1} ∘ (1 − w^w_t e_tᵀ) + w^w_t v_tᵀ, slot-minor (row k of M is the k-th of W rows of N slots).
 * Not inlined: the forward and the backward's recomputation of a segment run the same instructions, so
 * the recomputed memories equal the forward's bit for bit. */
__attribute__((noinline)) static void memory_write(const float *M, const float *ww, const float *e, const float *v,
                                                   long N, long W, float *out) {
    for (long k = 0; k < W; ++k) {
        const float ek = e[k], vk = v[k];
        const float *Mk = M + k * N;
        float *Ok = out + k * N;
        #pragma omp simd
        for (long n = 0; n < N; ++n) Ok[n] = Mk[n] * (1.0f - ww[n] * ek) + ww[n] * vk;
    }
}

/* floats of scratch step_forward needs */
static long forward_scratch(long N, long W) { return 6 * N + W; }

/* hint: the allocation orders of the previous step (B x N), a guess for this step's, or NULL.
 * L NULL: L_{t-1} = 0 and p_{t-1} = 0 (the zero initial state), so L_t = 0 and the directional
 * weightings f_t = b_t = 0 exactly: written as zeros, not computed (the link step's arithmetic on zeros
 * gives +0.0 in every entry, the same bits). ws: forward_scratch(N, W) floats of scratch. */
static void step_forward(long B, long N, long W, long R, const float *xi, const float *M, const float *u,
                         const float *L, const float *p, const float *wwp, const float *wrp, float *Mn, float *un,
                         float *Ln, float *pn, float *ww, float *wr, float *rv, float *sv, int *phi,
                         const int *hint, float *ws) {
    const layout l = make_layout(N, W, R);
    unsigned long long *ck = (unsigned long long *)ws; /* 2N floats: malloc'd, so aligned */
    int *itmp = (int *)(ws + 2 * N);
    unsigned *key = (unsigned *)(ws + 3 * N), *ktmp = (unsigned *)(ws + 4 * N);
    float *psi = ws + 5 * N, *e = ws + 6 * N;
    for (long b = 0; b < B; ++b) {
        const float *x = xi + b * l.S, *Mb = M + b * N * W, *ub = u + b * N, *Lb = L ? L + b * N * N : 0;
        const float *pb = p + b * N, *wwpb = wwp + b * N, *wrpb = wrp + b * R * N;
        float *Mnb = Mn + b * N * W, *unb = un + b * N, *Lnb = Ln + b * N * N, *pnb = pn + b * N;
        float *wwb = ww + b * N, *wrb = wr + b * R * N, *rvb = rv + b * R * W;
        int *phib = phi + b * N;
        saved s = saved_at(sv + b * saved_size(N, R), N, R);
        const float ga = sigm(x[l.ga]), gw = sigm(x[l.gw]), betaw = 1.0f + softplus(x[l.bw]);
        erase_vector(x + l.er, W, e);

        /* usage and allocation */
        for (long n = 0; n < N; ++n) psi[n] = 1.0f;
        for (long h = 0; h < R; ++h) {
            const float f = sigm(x[l.fg + h]);
            #pragma omp simd
            for (long n = 0; n < N; ++n) psi[n] *= 1.0f - f * wrpb[h * N + n];
        }
        #pragma omp simd
        for (long n = 0; n < N; ++n) unb[n] = (ub[n] + wwpb[n] - ub[n] * wwpb[n]) * psi[n];
        if (hint && hint + b * N != phib) memcpy(phib, hint + b * N, sizeof(int) * N);
        if (!hint || !argsort_from(unb, N, phib, ck)) argsort(unb, N, phib, itmp, key, ktmp);
        float prod = 1.0f;
        for (long j = 0; j < N; ++j) {
            const float sj = unb[phib[j]];
            s.srt[j] = sj;
            s.cp[j] = prod;
            s.alloc[phib[j]] = (1.0f - sj) * prod;
            prod *= sj;
        }

        /* write weighting, memory */
        slot_norms(Mb, N, W, s.nM);
        content(Mb, s.nM, x + l.kw, betaw, N, W, s.simw, s.cw);
        float wsum = 0.0f;
        #pragma omp simd reduction(+ : wsum)
        for (long n = 0; n < N; ++n) {
            wwb[n] = gw * (ga * s.alloc[n] + (1.0f - ga) * s.cw[n]);
            wsum += wwb[n];
        }
        memory_write(Mb, wwb, e, x + l.v, N, W, Mnb);
        slot_norms(Mnb, N, W, s.nMn);

        /* links, precedence, directional weightings */
        if (!Lb) {
            memset(Lnb, 0, sizeof(float) * N * N);
            memset(s.fw, 0, sizeof(float) * R * N);
            memset(s.bk, 0, sizeof(float) * R * N);
        } else if (R == 1) link_forward_1(Lb, wwb, pb, wrpb, N, Lnb, s.fw, s.bk);
        else link_forward(Lb, wwb, pb, wrpb, N, R, Lnb, s.fw, s.bk);
        #pragma omp simd
        for (long n = 0; n < N; ++n) pnb[n] = (1.0f - wsum) * pb[n] + wwb[n];

        /* reads */
        for (long h = 0; h < R; ++h) {
            const float betar = 1.0f + softplus(x[l.br + h]);
            content(Mnb, s.nMn, x + l.kr + h * W, betar, N, W, s.simr + h * N, s.cr + h * N);
            const float *z = x + l.pi + 3 * h;
            const float mz = fmaxf(z[0], fmaxf(z[1], z[2]));
            const float e0 = expf(z[0] - mz), e1 = expf(z[1] - mz), e2 = expf(z[2] - mz), t = e0 + e1 + e2;
            const float p0 = e0 / t, p1 = e1 / t, p2 = e2 / t;
            float *wh = wrb + h * N;
            const float *bh = s.bk + h * N, *ch = s.cr + h * N, *fh = s.fw + h * N;
            #pragma omp simd
            for (long n = 0; n < N; ++n) wh[n] = p0 * bh[n] + p1 * ch[n] + p2 * fh[n];
            long k = 0;
            if (N % 8 == 0) /* four rows of M_t a pass, w^r_h loaded once for four */
                for (; k + 4 <= W; k += 4) {
                    const float *O = Mnb + k * N;
                    v8 a0 = bc8(0.0f), a1 = a0, a2 = a0, a3 = a0;
                    for (long n = 0; n < N; n += 8) {
                        const v8 wn = ld8(wh + n);
                        a0 += wn * ld8(O + n); a1 += wn * ld8(O + N + n);
                        a2 += wn * ld8(O + 2 * N + n); a3 += wn * ld8(O + 3 * N + n);
                    }
                    rvb[h * W + k] = hsum8(a0); rvb[h * W + k + 1] = hsum8(a1);
                    rvb[h * W + k + 2] = hsum8(a2); rvb[h * W + k + 3] = hsum8(a3);
                }
            for (; k < W; ++k) {
                const float *Ok = Mnb + k * N;
                float acc = 0.0f;
                #pragma omp simd reduction(+ : acc)
                for (long n = 0; n < N; ++n) acc += wh[n] * Ok[n];
                rvb[h * W + k] = acc;
            }
        }
    }
}

static void copy_or_zero(float *dst, const float *src, long n) {
    if (src) memcpy(dst, src, sizeof(float) * n);
    else memset(dst, 0, sizeof(float) * n);
}

/* floats of scratch step_backward needs */
static long backward_scratch(long N, long W, long R) { return N * W + 7 * N + 5 * R * N + W; }

/* ws: backward_scratch(N, W, R) floats of scratch. L NULL: L_t = 0 and p_t = 0 (the zero initial state,
 * gL NULL): the link step's gradient is then zero in every input but p_t (dLoss/dp_t = sum_i w_i dLoss/dL[i, .],
 * of the constant zero state: not wanted), and it is skipped; gp gets only the precedence step's part. */
static void step_backward(long B, long N, long W, long R, const float *xi, const float *M, const float *u,
                         const float *L, const float *p, const float *wwp, const float *wrp, const float *Mn,
                         const float *ww, const float *wr, const float *sv, const int *phi, const float *gMn,
                         const float *gun, const float *gLn, const float *gpn, const float *gww, const float *gwr,
                         const float *grv, float *gxi, float *gM, float *gu, float *gL, float *gp, float *gwwp,
                         float *gwrp, float *ws) {
    const layout l = make_layout(N, W, R);
    float *gMa = ws;                   /* dLoss/dM_t */
    float *gwwa = gMa + N * W;         /* dLoss/dw^w_t */
    float *gwra = gwwa + N;            /* dLoss/dw^r_t */
    float *gu1 = gwra + R * N;         /* dLoss/du_t */
    float *gf = gu1 + N, *gb = gf + R * N, *gcr = gb + R * N;
    float *row = gcr + R * N, *nrow = row + N, *tmp = nrow + N, *tmp2 = tmp + N, *q = tmp2 + N;
    float *e = q + R * N;
    for (long b = 0; b < B; ++b) {
        const float *x = xi + b * l.S, *Mb = M + b * N * W, *ub = u + b * N, *Lb = L ? L + b * N * N : 0;
        const float *pb = p + b * N, *wwpb = wwp + b * N, *wrpb = wrp + b * R * N;
        const float *Mnb = Mn + b * N * W, *wwb = ww + b * N, *wrb = wr + b * R * N;
        const int *phib = phi + b * N;
        saved s = saved_at((float *)sv + b * saved_size(N, R), N, R);
        float *gx = gxi + b * l.S, *gMb = gM + b * N * W, *gub = gu + b * N, *gpb = gp + b * N;
        float *gwwpb = gwwp + b * N, *gwrpb = gwrp + b * R * N;
        float *gLb = gL ? gL + b * N * N : 0;
        const float *gLnb = gLn ? gLn + b * N * N : 0;
        const float ga = sigm(x[l.ga]), gw = sigm(x[l.gw]), betaw = 1.0f + softplus(x[l.bw]);
        erase_vector(x + l.er, W, e);
        memset(gx, 0, sizeof(float) * l.S);

        const float *gMnb = gMn ? gMn + b * N * W : 0;
        if (!grv) copy_or_zero(gMa, gMnb, N * W); /* else the first head's pass below writes gMa */
        copy_or_zero(gwwa, gww ? gww + b * N : 0, N);
        copy_or_zero(gwra, gwr ? gwr + b * R * N : 0, R * N);
        copy_or_zero(gu1, gun ? gun + b * N : 0, N);
        memset(gwrpb, 0, sizeof(float) * R * N);
        memset(gpb, 0, sizeof(float) * N);

        /* r_i = M_t^T w^r_i */
        if (grv) {
            const float *g = grv + b * R * W;
            for (long h = 0; h < R; ++h) {
                const float *wh = wrb + h * N, *gh = g + h * W;
                float *gwh = gwra + h * N;
                /* dLoss/dM_t = dLoss/dM_t from later steps (gMn) + sum_h g_h w^r_h^T */
                for (long k = 0; k < W; ++k) {
                    const float gk = gh[k];
                    const float *src = h ? gMa + k * N : gMnb ? gMnb + k * N : 0;
                    float *gOk = gMa + k * N;
                    if (src) {
                        #pragma omp simd
                        for (long n = 0; n < N; ++n) gOk[n] = src[n] + gk * wh[n];
                    } else {
                        #pragma omp simd
                        for (long n = 0; n < N; ++n) gOk[n] = gk * wh[n];
                    }
                }
                /* dLoss/dw^r_h += M_t g_h, four rows of M_t a pass */
                long k = 0;
                for (; k + 4 <= W; k += 4) {
                    const float g0 = gh[k], g1 = gh[k + 1], g2 = gh[k + 2], g3 = gh[k + 3];
                    const float *O0 = Mnb + k * N, *O1 = O0 + N, *O2 = O1 + N, *O3 = O2 + N;
                    #pragma omp simd
                    for (long n = 0; n < N; ++n) gwh[n] += (g0 * O0[n] + g1 * O1[n]) + (g2 * O2[n] + g3 * O3[n]);
                }
                for (; k < W; ++k) {
                    const float gk = gh[k], *Ok = Mnb + k * N;
                    #pragma omp simd
                    for (long n = 0; n < N; ++n) gwh[n] += gk * Ok[n];
                }
            }
        }
        /* read modes, read content */
        for (long h = 0; h < R; ++h) {
            const float *z = x + l.pi + 3 * h;
            const float mz = fmaxf(z[0], fmaxf(z[1], z[2]));
            const float e0 = expf(z[0] - mz), e1 = expf(z[1] - mz), e2 = expf(z[2] - mz), t = e0 + e1 + e2;
            const float p0 = e0 / t, p1 = e1 / t, p2 = e2 / t;
            const float *gwh = gwra + h * N, *bh = s.bk + h * N, *ch = s.cr + h * N, *fh = s.fw + h * N;
            float *gbh = gb + h * N, *gch = gcr + h * N, *gfh = gf + h * N;
            float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f;
            #pragma omp simd reduction(+ : g0, g1, g2)
            for (long n = 0; n < N; ++n) {
                const float g = gwh[n];
                g0 += g * bh[n];
                g1 += g * ch[n];
                g2 += g * fh[n];
                gbh[n] = p0 * g;
                gch[n] = p1 * g;
                gfh[n] = p2 * g;
            }
            const float dotp = g0 * p0 + g1 * p1 + g2 * p2;
            gx[l.pi + 3 * h] = p0 * (g0 - dotp);
            gx[l.pi + 3 * h + 1] = p1 * (g1 - dotp);
            gx[l.pi + 3 * h + 2] = p2 * (g2 - dotp);
            const float xb = x[l.br + h];
            const float gbeta = content_backward(Mnb, s.nMn, x + l.kr + h * W, 1.0f + softplus(xb), s.simr + h * N,
                                                 ch, gch, N, W, gMa, gx + l.kr + h * W, tmp, tmp2);
            gx[l.br + h] = gbeta * sigm(xb);
        }

        /* links */
        if (Lb && R == 1) link_backward_1(gLnb, gf, gb, Lb, wwb, pb, wrpb, N, gLb, gwwa, gpb, gwrpb);
        else if (Lb) link_backward(gLnb, gf, gb, Lb, wwb, pb, wrpb, N, R, gLb, gwwa, gpb, gwrpb, row, nrow);
        /* else L_t = 0 and p_t = 0: nothing to add */
        /* precedence */
        if (gpn) {
            const float *g = gpn + b * N;
            float wsum = 0.0f, dot = 0.0f;
            #pragma omp simd reduction(+ : wsum, dot)
            for (long n = 0; n < N; ++n) { wsum += wwb[n]; dot += g[n] * pb[n]; }
            #pragma omp simd
            for (long n = 0; n < N; ++n) {
                gpb[n] += (1.0f - wsum) * g[n];
                gwwa[n] += g[n] - dot;
            }
        }
        /* memory write: four rows a pass in eight-float vectors (two in plain loops), dLoss/dw^w loaded and
         * stored once a pass, one horizontal sum a row and sum */
        long k = 0;
        if (N % 8 == 0)
            for (; k + 4 <= W; k += 4) {
                const float *M0 = Mb + k * N, *g0 = gMa + k * N;
                float *gM0 = gMb + k * N;
                const v8 e0 = bc8(e[k]), e1 = bc8(e[k + 1]), e2 = bc8(e[k + 2]), e3 = bc8(e[k + 3]);
                const v8 v0 = bc8(x[l.v + k]), v1 = bc8(x[l.v + k + 1]), v2 = bc8(x[l.v + k + 2]);
                const v8 v3 = bc8(x[l.v + k + 3]);
                v8 ge0 = bc8(0.0f), ge1 = ge0, ge2 = ge0, ge3 = ge0, gv0 = ge0, gv1 = ge0, gv2 = ge0, gv3 = ge0;
                for (long n = 0; n < N; n += 8) {
                    const v8 wn = ld8(wwb + n);
#define MEM_BWD_VROW(i)                                                                            \
    const v8 a##i = ld8(g0 + (i) * N + n), m##i = ld8(M0 + (i) * N + n), aw##i = a##i * wn;         \
    st8(gM0 + (i) * N + n, a##i * (1.0f - wn * e##i));                                             \
    ge##i += aw##i * m##i;                                                                         \
    gv##i += aw##i;
                    MEM_BWD_VROW(0) MEM_BWD_VROW(1) MEM_BWD_VROW(2) MEM_BWD_VROW(3)
#undef MEM_BWD_VROW
                    st8(gwwa + n, ld8(gwwa + n) + ((a0 * (v0 - m0 * e0) + a1 * (v1 - m1 * e1)) +
                                                   (a2 * (v2 - m2 * e2) + a3 * (v3 - m3 * e3))));
                }
                const v8 ge[4] = {ge0, ge1, ge2, ge3}, gv[4] = {gv0, gv1, gv2, gv3};
                for (int i = 0; i < 4; ++i) {
                    const float ek = e[k + i];
                    gx[l.er + k + i] = -hsum8(ge[i]) * ek * (1.0f - ek);
                    gx[l.v + k + i] = hsum8(gv[i]);
                }
            }
        for (; k + 2 <= W; k += 2) {
            const float e0 = e[k], v0 = x[l.v + k], e1 = e[k + 1], v1 = x[l.v + k + 1];
            const float *M0 = Mb + k * N, *M1 = M0 + N, *g0 = gMa + k * N, *g1 = g0 + N;
            float *gM0 = gMb + k * N, *gM1 = gM0 + N;
            float ge0 = 0.0f, gv0 = 0.0f, ge1 = 0.0f, gv1 = 0.0f;
            #pragma omp simd reduction(+ : ge0, gv0, ge1, gv1)
            for (long n = 0; n < N; ++n) {
                const float a = g0[n], c = g1[n], wn = wwb[n];
                gM0[n] = a * (1.0f - wn * e0);
                gM1[n] = c * (1.0f - wn * e1);
                gwwa[n] += a * (v0 - M0[n] * e0) + c * (v1 - M1[n] * e1);
                ge0 -= a * wn * M0[n];
                gv0 += a * wn;
                ge1 -= c * wn * M1[n];
                gv1 += c * wn;
            }
            gx[l.er + k] = ge0 * e0 * (1.0f - e0);
            gx[l.v + k] = gv0;
            gx[l.er + k + 1] = ge1 * e1 * (1.0f - e1);
            gx[l.v + k + 1] = gv1;
        }
        for (; k < W; ++k) {
            const float ek = e[k], vk = x[l.v + k];
            const float *Mk = Mb + k * N, *gk = gMa + k * N;
            float *gMk = gMb + k * N;
            float ge = 0.0f, gv = 0.0f;
            #pragma omp simd reduction(+ : ge, gv)
            for (long n = 0; n < N; ++n) {
                const float g = gk[n];
                gMk[n] = g * (1.0f - wwb[n] * ek);
                gwwa[n] += g * (vk - Mk[n] * ek);
                ge -= g * wwb[n] * Mk[n];
                gv += g * wwb[n];
            }
            gx[l.er + k] = ge * ek * (1.0f - ek);
            gx[l.v + k] = gv;
        }
        /* write weighting */
        float ggw = 0.0f, gga = 0.0f;
        #pragma omp simd reduction(+ : ggw, gga)
        for (long n = 0; n < N; ++n) {
            const float mix = ga * s.alloc[n] + (1.0f - ga) * s.cw[n];
            const float gmix = gw * gwwa[n];
            ggw += gwwa[n] * mix;
            gga += gmix * (s.alloc[n] - s.cw[n]);
            row[n] = ga * gmix;           /* dLoss/da */
            nrow[n] = (1.0f - ga) * gmix; /* dLoss/dc^w */
        }
        gx[l.gw] = ggw * gw * (1.0f - gw);
        gx[l.ga] = gga * ga * (1.0f - ga);
        const float gbw = content_backward(Mb, s.nM, x + l.kw, betaw, s.simw, s.cw, nrow, N, W, gMb, gx + l.kw,
                                           tmp, tmp2);
        gx[l.bw] = gbw * sigm(x[l.bw]);
        /* allocation: a[phi_j] = (1 - s_j) cp_j, cp_j = prod_{i<j} s_i; with Q_j = sum_{k>j} G_k prod_{j<i<k} s_i,
         * G_k = da[phi_k] (1 - s_k), ds_j = cp_j (Q_j - da[phi_j]): exact, and no division by a usage */
        for (long j = 0; j < N; ++j) tmp[j] = row[phib[j]]; /* da in sorted order */
        float Q = 0.0f;
        for (long j = N - 1; j >= 0; --j) { /* only Q's fma on the chain */
            const float gaj = tmp[j];
            tmp2[j] = s.cp[j] * (Q - gaj);
            Q = s.srt[j] * Q + gaj * (1.0f - s.srt[j]);
        }
        for (long j = 0; j < N; ++j) gu1[phib[j]] += tmp2[j];
        /* usage */
        if (R == 1) { /* psi = q: the loops below in one */
            const float f = sigm(x[l.fg]);
            float gfh = 0.0f;
            #pragma omp simd reduction(+ : gfh)
            for (long n = 0; n < N; ++n) {
                const float up = ub[n] + wwpb[n] - ub[n] * wwpb[n];
                const float gup = gu1[n] * (1.0f - f * wrpb[n]), gq = gu1[n] * up;
                gub[n] = gup * (1.0f - wwpb[n]);
                gwwpb[n] = gup * (1.0f - ub[n]);
                gfh -= gq * wrpb[n];
                gwrpb[n] -= gq * f;
            }
            gx[l.fg] = gfh * f * (1.0f - f);
            continue;
        }
        for (long h = 0; h < R; ++h) {
            const float f = sigm(x[l.fg + h]);
            #pragma omp simd
            for (long n = 0; n < N; ++n) q[h * N + n] = 1.0f - f * wrpb[h * N + n];
        }
        for (long n = 0; n < N; ++n) {
            float psi = 1.0f;
            for (long h = 0; h < R; ++h) psi *= q[h * N + n];
            const float up = ub[n] + wwpb[n] - ub[n] * wwpb[n];
            const float gup = gu1[n] * psi;
            tmp[n] = gu1[n] * up; /* dLoss/dpsi */
            gub[n] = gup * (1.0f - wwpb[n]);
            gwwpb[n] = gup * (1.0f - ub[n]);
        }
        for (long h = 0; h < R; ++h) {
            const float f = sigm(x[l.fg + h]);
            float gfh = 0.0f;
            for (long n = 0; n < N; ++n) {
                float others = 1.0f;
                for (long h2 = 0; h2 < R; ++h2)
                    if (h2 != h) others *= q[h2 * N + n];
                const float gq = tmp[n] * others;
                gfh -= gq * wrpb[h * N + n];
                gwrpb[h * N + n] -= gq * f;
            }
            gx[l.fg + h] = gfh * f * (1.0f - f);
        }
    }
}

/* LSTM cell of the controller, gates in (i, f, o, g) order, for B rows of 4H pre-activations:
 * i, f, o = sigmoid, g = tanh;  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).
 * Writes the activated gates into act (B x 4H) for the backward. */

static void lstm_forward(long B, long H, const float *gates, const float *c, float *act, float *cn, float *hn) {
    for (long b = 0; b < B; ++b) {
        const float *z = gates + b * 4 * H, *cb = c + b * H;
        float *a = act + b * 4 * H, *cnb = cn + b * H, *hb = hn + b * H;
        #pragma omp simd
        for (long k = 0; k < 3 * H; ++k) a[k] = vsigm(z[k]);
        #pragma omp simd
        for (long k = 3 * H; k < 4 * H; ++k) a[k] = vtanh(z[k]);
        #pragma omp simd
        for (long k = 0; k < H; ++k) {
            const float cc = a[H + k] * cb[k] + a[k] * a[3 * H + k];
            cnb[k] = cc;
            hb[k] = a[2 * H + k] * vtanh(cc);
        }
    }
}

/* gh: dLoss/dh_t; gc: dLoss/dc_t from later steps (NULL: none). Writes dLoss/dgates and dLoss/dc_{t-1}. */
static void lstm_backward(long B, long H, const float *act, const float *c, const float *cn, const float *gh,
                          const float *gc, float *ggates, float *gcp) {
    for (long b = 0; b < B; ++b) {
        const float *a = act + b * 4 * H, *cb = c + b * H, *cnb = cn + b * H, *ghb = gh + b * H;
        const float *gcb = gc ? gc + b * H : 0;
        float *gz = ggates + b * 4 * H, *gcpb = gcp + b * H;
        #pragma omp simd
        for (long k = 0; k < H; ++k) {
            const float i = a[k], f = a[H + k], o = a[2 * H + k], g = a[3 * H + k];
            const float tc = vtanh(cnb[k]);
            const float dc = (gcb ? gcb[k] : 0.0f) + ghb[k] * o * (1.0f - tc * tc);
            gz[k] = dc * g * i * (1.0f - i);
            gz[H + k] = dc * cb[k] * f * (1.0f - f);
            gz[2 * H + k] = ghb[k] * tc * o * (1.0f - o);
            gz[3 * H + k] = dc * i * (1.0f - g * g);
            gcpb[k] = dc * f;
        }
    }
}

/* L_t alone (for the backward's recomputation from a checkpoint): out = (1 - w_i - w_j) L + w_i p_j, diag 0 */
static void link_update(long B, long N, const float *L, const float *w, const float *p, float *out) {
    for (long b = 0; b < B; ++b) {
        const float *Lb = L + b * N * N, *wb = w + b * N, *pb = p + b * N;
        float *O = out + b * N * N;
        for (long i = 0; i < N; ++i) {
            const float *Li = Lb + i * N;
            float *Oi = O + i * N;
            const float a = 1.0f - wb[i], wi = wb[i];
            #pragma omp simd
            for (long j = 0; j < N; ++j) Oi[j] = (a - wb[j]) * Li[j] + wi * pb[j];
            Oi[i] = 0.0f;
        }
    }
}

/* --- the exported functions: slot numbers into one dnc_buffers, pointers only for what is not in it --- */

#define SLOT(buf, i, size) ((buf) + (i) * (size))

/* memory step t: interface xi and saves at slot `step`, state from slot `prev` to slot `next`, r_{t+1}
 * at reads slot t + 1; L_{t-1} in L, L_t into Ln (which may be L) */
int dnc_step_forward(const dnc_buffers *s, long t, long step, long prev, long next, const float *L, float *Ln) {
    const long B = s->B, N = s->N, W = s->W, R = s->R, S = make_layout(N, W, R).S, SV = saved_size(N, R);
    const long n = B * N, rn = B * R * N, mem = B * W * N;
    float *ws = malloc(sizeof(float) * forward_scratch(N, W));
    if (!ws) return KERNEL_NO_MEMORY;
    step_forward(B, N, W, R, SLOT(s->xi, step, B * S), SLOT(s->mem, prev, mem), SLOT(s->usage, prev, n), L,
                 SLOT(s->prec, prev, n), SLOT(s->ww, prev, n), SLOT(s->wr, prev, rn), SLOT(s->mem, next, mem),
                 SLOT(s->usage, next, n), Ln, SLOT(s->prec, next, n), SLOT(s->ww, next, n), SLOT(s->wr, next, rn),
                 SLOT(s->reads, t + 1, B * R * W), SLOT(s->sv, step, B * SV), SLOT(s->order, step, n), 0, ws);
    free(ws);
    return KERNEL_OK;
}

/* gradient of memory step t (every buffer at its training slot: per-step t, state t -> t + 1), L_{t-1}
 * in L. In: dLoss/d(state t) (next), dLoss/dr_{t+1} (grv, or NULL). Out: dLoss/dxi_t (gxi, B x S) and
 * dLoss/d(state t - 1) (prev; prev->link may be NULL, or next->link itself: updated in place). */
int dnc_step_backward(const dnc_buffers *s, long t, const float *L, const dnc_state_grad *next, const float *grv,
                      float *gxi, const dnc_state_grad *prev) {
    const long B = s->B, N = s->N, W = s->W, R = s->R, S = make_layout(N, W, R).S, SV = saved_size(N, R);
    const long n = B * N, rn = B * R * N, mem = B * W * N;
    float *ws = malloc(sizeof(float) * backward_scratch(N, W, R));
    if (!ws) return KERNEL_NO_MEMORY;
    step_backward(B, N, W, R, SLOT(s->xi, t, B * S), SLOT(s->mem, t, mem), SLOT(s->usage, t, n), L,
                  SLOT(s->prec, t, n), SLOT(s->ww, t, n), SLOT(s->wr, t, rn), SLOT(s->mem, t + 1, mem),
                  SLOT(s->ww, t + 1, n), SLOT(s->wr, t + 1, rn), SLOT(s->sv, t, B * SV), SLOT(s->order, t, n),
                  next->mem, next->usage, next->link, next->prec, next->ww, next->wr, grv, gxi, prev->mem,
                  prev->usage, prev->link, prev->prec, prev->ww, prev->wr, ws);
    free(ws);
    return KERNEL_OK;
}

/* --- the whole sequence, two batch elements at a time ---
 *
 * Batch elements are independent until the weight gradients, so dnc_sequence_forward and
 * dnc_sequence_backward run every step of one pair of elements (controller and memory) before the
 * next pair: their link matrices, recomputed segments and link gradients (64 KB each at N = 128)
 * and the controller weights stay in the core's own cache (L2) for the whole sequence,
 * where the step-major loop streamed the batch's 2 MB of link matrices through the shared cache
 * once a step each way. Per element and step the controller is
 *   z_t = [r_{t-1}; h_{t-1}; x_t],  gates_t = b + [W_rh W_x] z_t,  (h_t, c_t) = LSTM(gates_t, c_{t-1}),
 *   xi_t = W_xi h_t + b_xi,
 * and the backward writes dLoss/dgates_t and dLoss/dxi_t per step; the weight gradients, sums over
 * batch and time, are matmuls in sequence.py. Link matrices: the forward updates one element's L in
 * place in a cached buffer and copies L_t for t = cK (c >= 1, t < T) into ckpt with streaming stores
 * (writing the checkpoint itself fetched each line from memory first); the backward recomputes each
 * segment L_{cK+1..cK+K-1} from its checkpoint, per element, just before it needs it. Memories the
 * same way: a training forward keeps M_t in cache and writes its record only at t = cK and t = T; the
 * backward recomputes M_{cK+1..cK+K-1} with the forward's own memory_write. The saved floats are written
 * in cache and copied to their record with streaming stores; one _mm_sfence ends the forward.
 *
 * Both run two elements in lockstep (the last alone when B is odd): each step, each element runs its
 * own memory step with its own buffers, then the controller products load every weight row once for
 * both (axpy_rows2 forward, dot_rows2 backward: the weights are read from L2 at its bandwidth, and
 * were the backward's largest cost after the link matrices). Two recomputed segments then share L2
 * with the weights: a checkpoint every 6 steps (sequence.CHECKPOINT) rather than 8. Both ask for
 * the next step's per-step records ahead of time (prefetch): time-major, they are never in cache
 * when a step reaches them. Results do not depend on the pairing: axpy_rows2 and dot_rows2 sum each
 * y in axpy_rows' and dot_rows' order, so an element's numbers are the same, bit for bit, in any
 * batch (tests/test_dnc.py). */

/* what the sequence functions take beyond dnc_buffers (mirrored by cpu_kernel.Sequence) */
typedef struct {
    long T, K, train, D;  /* steps, checkpoint interval, 1 when a backward will follow, inputs */
    const float *x;       /* (T, B, D)      x_t, time-major */
    const float *b_x;     /* (4H)           b, the gates' bias */
    const float *w_rh;    /* (4H, RW + H)   W_rh */
    const float *w_rh_t;  /* (RW + H + D, 4H) [W_rh W_x] transposed */
    const float *w_xi;    /* (S, H)         W_xi */
    const float *w_xi_t;  /* (H, S)         W_xi transposed */
    const float *b_xi;    /* (S)            b_xi */
    const float *h0;      /* (B, H)         h_0 */
    float *z;             /* (TS, B, RW + H + D) controller inputs [r_{t-1}; h_{t-1}; x_t] */
    const float *link0;   /* (B, N, N)      L_0; NULL: the whole initial state is zero, a constant (the
                           * buffers' slot 0 zeroed, h0 zeros): step 1's link step is then not computed */
    float *ckpt;          /* ((T - 1) / K, B, N, N) L_{cK}, c = 1 .. (T - 1) / K (training only) */
    float *link_last;     /* (B, N, N)      L_T */
} dnc_sequence;

/* dLoss/d of the sequence's outputs and final state (in), of its initial state and of the per-step
 * gates and interface vectors (out). NULL inputs are zero; first.link may be NULL (not wanted), and
 * must be when link0 is: from the zero state first.prec lacks the link step's part (not computed). */
typedef struct {
    const float *hs, *rs;      /* (T, B, H), (T, B, R, W): dLoss/dh_t, dLoss/dr_t from the outputs */
    const float *h, *c, *r;    /* (B, H), (B, H), (B, R, W): dLoss/d h_T, c_T, r_T */
    dnc_state_grad last;       /* dLoss/d (M_T, u_T, L_T, p_T, w^w_T, w^r_T); mem slot-minor (B, W, N) */
    float *gates, *xi;         /* out: (T, B, 4H), (T, B, S) */
    float *h0, *c0, *r0;       /* out: dLoss/d h_0, c_0, r_0 */
    dnc_state_grad first;      /* out: dLoss/d the initial memory state */
} dnc_sequence_grad;

/* y = b + A^T x for A (n x m) row-major, as n axpys over contiguous rows of length m */
static void axpy_rows(const float *restrict A, const float *restrict x, long n, long m, float *restrict y) {
    long k = 0;
    for (; k + 8 <= n; k += 8) { /* eight rows a pass: y is loaded and stored once for eight */
        const float *A0 = A + k * m;
        const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
        const float x4 = x[k + 4], x5 = x[k + 5], x6 = x[k + 6], x7 = x[k + 7];
        #pragma omp simd
        for (long j = 0; j < m; ++j)
            y[j] += (((x0 * A0[j] + x1 * A0[m + j]) + x2 * A0[2 * m + j]) + x3 * A0[3 * m + j]) +
                    (((x4 * A0[4 * m + j] + x5 * A0[5 * m + j]) + x6 * A0[6 * m + j]) + x7 * A0[7 * m + j]);
    }
    for (; k + 4 <= n; k += 4) { /* four rows a pass: y is loaded and stored once for four */
        const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
        const float *A0 = A + k * m, *A1 = A0 + m, *A2 = A1 + m, *A3 = A2 + m;
        #pragma omp simd
        for (long j = 0; j < m; ++j) y[j] += ((x0 * A0[j] + x1 * A1[j]) + x2 * A2[j]) + x3 * A3[j];
    }
    for (; k < n; ++k) {
        const float xk = x[k];
        const float *Ak = A + k * m;
        #pragma omp simd
        for (long j = 0; j < m; ++j) y[j] += xk * Ak[j];
    }
}

/* a . x for one row (m % 8 == 0). Not inlined: dot_rows and dot_rows2 sum a row left over from their blocks
 * with the same instructions, so that either gives the same number. */
__attribute__((noinline)) static float dot_row(const float *restrict a, const float *restrict x, long m) {
    v8 s0 = bc8(0.0f);
    for (long j = 0; j < m; j += 8) s0 += ld8(a + j) * ld8(x + j);
    return hsum8(s0);
}

/* y[k] += A[k] . x for the n rows of A (n x m, row-major, m % 8 == 0): the backward's products with the
 * weights in the forward's (transposed) layout, four rows a pass in eight-float vectors, x loaded once a
 * pass. Against axpy_rows over the weights' own rows (Z or H floats each, y loaded and stored every pass,
 * H = 100 not a multiple of 8) they took 0.93x the time (eight rows a pass, one element at a time, timed
 * with rdtsc in a one-off build). They read the weights' 227 KB from L2 per element and step, about as
 * fast as a plain streaming read of them goes there (≈30 bytes a cycle in a one-off micro-benchmark):
 * dot_rows2 reads them once for two elements. */
static void dot_rows(const float *restrict A, const float *restrict x, long n, long m, float *restrict y) {
    long k = 0;
    for (; k + 4 <= n; k += 4) {
        const float *A0 = A + k * m;
        v8 s0 = bc8(0.0f), s1 = s0, s2 = s0, s3 = s0;
        for (long j = 0; j < m; j += 8) {
            const v8 a = ld8(x + j);
            s0 += ld8(A0 + j) * a; s1 += ld8(A0 + m + j) * a; s2 += ld8(A0 + 2 * m + j) * a; s3 += ld8(A0 + 3 * m + j) * a;
        }
        y[k] += hsum8(s0); y[k + 1] += hsum8(s1); y[k + 2] += hsum8(s2); y[k + 3] += hsum8(s3);
    }
    for (; k < n; ++k) y[k] += dot_row(A + k * m, x, m);
}

/* dot_rows for two vectors at once, y0 += A x0 and y1 += A x1, each row of A loaded once for both (four
 * rows a pass). Each row's sums are dot_rows' in dot_rows' order: the results equal dot_rows', bit for bit. */
static void dot_rows2(const float *restrict A, const float *restrict x0, const float *restrict x1, long n, long m,
                      float *restrict y0, float *restrict y1) {
    long k = 0;
    for (; k + 4 <= n; k += 4) {
        const float *A0 = A + k * m;
        v8 s0 = bc8(0.0f), s1 = s0, s2 = s0, s3 = s0, t0 = s0, t1 = s0, t2 = s0, t3 = s0;
        for (long j = 0; j < m; j += 8) {
            const v8 a = ld8(x0 + j), c = ld8(x1 + j);
            const v8 r0 = ld8(A0 + j), r1 = ld8(A0 + m + j), r2 = ld8(A0 + 2 * m + j), r3 = ld8(A0 + 3 * m + j);
            s0 += r0 * a; s1 += r1 * a; s2 += r2 * a; s3 += r3 * a;
            t0 += r0 * c; t1 += r1 * c; t2 += r2 * c; t3 += r3 * c;
        }
        y0[k] += hsum8(s0); y0[k + 1] += hsum8(s1); y0[k + 2] += hsum8(s2); y0[k + 3] += hsum8(s3);
        y1[k] += hsum8(t0); y1[k + 1] += hsum8(t1); y1[k + 2] += hsum8(t2); y1[k + 3] += hsum8(t3);
    }
    for (; k < n; ++k) {
        y0[k] += dot_row(A + k * m, x0, m);
        y1[k] += dot_row(A + k * m, x1, m);
    }
}

/* y_e += At x_e for the P (1 or 2) elements' x_e, the weights given both ways: At (n x m) for dot_rows and
 * dot_rows2 when m % 8 == 0, its transpose A (m x n) for axpy_rows otherwise */
static void backward_products(const float *At, const float *A, float *const x[2], long P, long n, long m,
                              float *const y[2]) {
    if (P == 2 && m % 8 == 0) dot_rows2(At, x[0], x[1], n, m, y[0], y[1]);
    else
        for (long e = 0; e < P; ++e) {
            if (m % 8 == 0) dot_rows(At, x[e], n, m, y[e]);
            else axpy_rows(A, x[e], m, n, y[e]);
        }
}

/* axpy_rows for two vectors at once, y0 = b0 + A^T x0 and y1 = b1 + A^T x1: each row of A is loaded once
 * for both (the weights come from L2; per element they were the controller's cost). Each y sums its
 * rows in axpy_rows' order, so either result equals axpy_rows' bit for bit. */
static void axpy_rows2(const float *restrict A, const float *restrict x0, const float *restrict x1, long n, long m,
                       float *restrict y0, float *restrict y1) {
    long k = 0;
    for (; k + 8 <= n; k += 8) {
        const float *A0 = A + k * m;
        const float a0 = x0[k], a1 = x0[k + 1], a2 = x0[k + 2], a3 = x0[k + 3];
        const float a4 = x0[k + 4], a5 = x0[k + 5], a6 = x0[k + 6], a7 = x0[k + 7];
        const float b0 = x1[k], b1 = x1[k + 1], b2 = x1[k + 2], b3 = x1[k + 3];
        const float b4 = x1[k + 4], b5 = x1[k + 5], b6 = x1[k + 6], b7 = x1[k + 7];
        #pragma omp simd
        for (long j = 0; j < m; ++j) {
            const float r0 = A0[j], r1 = A0[m + j], r2 = A0[2 * m + j], r3 = A0[3 * m + j];
            const float r4 = A0[4 * m + j], r5 = A0[5 * m + j], r6 = A0[6 * m + j], r7 = A0[7 * m + j];
            y0[j] += (((a0 * r0 + a1 * r1) + a2 * r2) + a3 * r3) + (((a4 * r4 + a5 * r5) + a6 * r6) + a7 * r7);
            y1[j] += (((b0 * r0 + b1 * r1) + b2 * r2) + b3 * r3) + (((b4 * r4 + b5 * r5) + b6 * r6) + b7 * r7);
        }
    }
    for (; k + 4 <= n; k += 4) {
        const float a0 = x0[k], a1 = x0[k + 1], a2 = x0[k + 2], a3 = x0[k + 3];
        const float b0 = x1[k], b1 = x1[k + 1], b2 = x1[k + 2], b3 = x1[k + 3];
        const float *A0 = A + k * m, *A1 = A0 + m, *A2 = A1 + m, *A3 = A2 + m;
        #pragma omp simd
        for (long j = 0; j < m; ++j) {
            const float r0 = A0[j], r1 = A1[j], r2 = A2[j], r3 = A3[j];
            y0[j] += ((a0 * r0 + a1 * r1) + a2 * r2) + a3 * r3;
            y1[j] += ((b0 * r0 + b1 * r1) + b2 * r2) + b3 * r3;
        }
    }
    for (; k < n; ++k) {
        const float a = x0[k], b = x1[k];
        const float *Ak = A + k * m;
        #pragma omp simd
        for (long j = 0; j < m; ++j) {
            y0[j] += a * Ak[j];
            y1[j] += b * Ak[j];
        }
    }
}

/* the slot of buffer `base` (per-slot size `size` per element) for step slot i and element b */
#define AT(base, i, b, size) ((base) + ((i) * B + (b)) * (size))

/* dst = src (n floats) without reading dst's lines into the cache: a checkpoint is not read again until
 * the backward, so its write need not fetch it (64 KB a line at a time from memory) nor evict what the
 * forward still uses. Plain memcpy unless AVX-512 and 64-byte alignment. No fence: the caller issues one
 * _mm_sfence after all its copies (a fence a copy waited for each copy's lines to reach memory). */
static void stream_copy(float *restrict dst, const float *restrict src, long n) {
#ifdef __AVX512F__
    if ((((unsigned long)dst | (unsigned long)src) & 63) == 0 && n % 16 == 0) {
        for (long i = 0; i < n; i += 16) _mm512_stream_ps(dst + i, _mm512_load_ps(src + i));
        return;
    }
#endif
    memcpy(dst, src, sizeof(float) * n);
}

/* ask for n floats (or ints) at p to be brought into the cache, for reading (write 0) or writing (1): the
 * per-step records, time-major, are out of cache when a step comes to them (the forward writes them for
 * the first time; the backward reads them long after the forward wrote them), so each step asks for the
 * next step's while it runs */
#define prefetch(p, n, write) prefetch_floats((const void *)(p), (n), (write))
static inline void prefetch_floats(const void *p, long n, int write) {
#if defined(__GNUC__)
    const char *c = (const char *)p;
    if (write)
        for (long i = 0; i < n * 4; i += 64) __builtin_prefetch(c + i, 1, 2);
    else
        for (long i = 0; i < n * 4; i += 64) __builtin_prefetch(c + i, 0, 2);
#else
    (void)p; (void)n; (void)write;
#endif
}

int dnc_sequence_forward(const dnc_buffers *s, const dnc_sequence *q) {
    const long B = s->B, N = s->N, W = s->W, R = s->R, H = s->H, G = 4 * H, RW = R * W, Z = RW + H + q->D;
    const long S = make_layout(N, W, R).S, SV = saved_size(N, R), NN = N * N, T = q->T, K = q->K;
    /* two elements in lockstep (one when B is odd, at the end): their controller products share each
     * weight row's load; each runs its own memory step with its own link buffer */
    /* the link matrices and (training) memories of the two elements, updated in cache: a training forward
     * writes M_t to its record only at the checkpoints (t a multiple of K) and at t = T, as it writes L_t;
     * the backward recomputes the others. Per step that is 10 KB (N = 128, W = 20) that no longer goes
     * to memory and back, one step in K excepted. */
    const long WN = W * N, MB = q->train ? 4 * WN : 0, SVA = (SV + 15) / 16 * 16;
    float *curbuf = malloc(sizeof(float) * (2 * NN + MB + 2 * SVA + 16)), *gates = malloc(sizeof(float) * 2 * G);
    float *ws = malloc(sizeof(float) * forward_scratch(N, W));
    if (!curbuf || !gates || !ws) {
        free(curbuf); free(gates); free(ws);
        return KERNEL_NO_MEMORY;
    }
    float *cur = (float *)(((unsigned long)curbuf + 63) & ~63ul); /* 64-byte aligned, for stream_copy */
    float *mcur = cur + 2 * NN; /* element e's memories: mcur + (2 e + t % 2) WN (training only) */
    /* element e's saved floats (svcur + e SVA), written here and copied to the record with streaming
     * stores: plain stores would first read each of the record's lines from memory */
    float *svcur = mcur + MB;
    for (long b0 = 0; b0 < B; b0 += 2) {
        const long P = b0 + 1 < B ? 2 : 1;
        const float *Lprev[2], *Mprev[2];
        for (long e = 0; e < P; ++e) {
            Lprev[e] = q->link0 ? q->link0 + (b0 + e) * NN : 0; /* NULL: the zero state (step_forward) */
            Mprev[e] = AT(s->mem, 0, b0 + e, WN);
        }
        for (long t = 0; t < T; ++t) {
            const long k = q->train ? t : 0, a = q->train ? t : t % 2, nx = q->train ? t + 1 : (t + 1) % 2;
            float *zt[2], *ht[2], *xit[2];
            for (long e = 0; e < P; ++e) {
                const long b = b0 + e;
                zt[e] = AT(q->z, k, b, Z); ht[e] = AT(s->h, t, b, H); xit[e] = AT(s->xi, k, b, S);
                memcpy(zt[e], AT(s->reads, t, b, RW), sizeof(float) * RW);
                memcpy(zt[e] + RW, t ? AT(s->h, t - 1, b, H) : q->h0 + b * H, sizeof(float) * H);
                memcpy(zt[e] + RW + H, AT(q->x, t, b, q->D), sizeof(float) * q->D);
                memcpy(gates + e * G, q->b_x, sizeof(float) * G);
            }
            if (P == 2) axpy_rows2(q->w_rh_t, zt[0], zt[1], Z, G, gates, gates + G);
            else axpy_rows(q->w_rh_t, zt[0], Z, G, gates);
            for (long e = 0; e < P; ++e) {
                const long b = b0 + e;
                lstm_forward(1, H, gates + e * G, AT(s->c, a, b, H), AT(s->act, k, b, G), AT(s->c, nx, b, H), ht[e]);
                memcpy(xit[e], q->b_xi, sizeof(float) * S);
            }
            if (P == 2) axpy_rows2(q->w_xi_t, ht[0], ht[1], H, S, xit[0], xit[1]);
            else axpy_rows(q->w_xi_t, ht[0], H, S, xit[0]);
            if (t + 1 < T && q->train) /* step t + 1's records, while step t runs (in evaluation they are in cache) */
                for (long e = 0; e < P; ++e) {
                    const long b = b0 + e;
                    prefetch(AT(s->act, t + 1, b, G), G, 1);
                    prefetch(AT(s->xi, t + 1, b, S), S, 1);
                    prefetch(AT(s->wr, t + 2, b, R * N), R * N, 1);
                }
            for (long e = 0; e < P; ++e) {
                const long b = b0 + e;
                float *Lout = cur + e * NN; /* in cache; the checkpoints and L_T are copies of it */
                const float *Min = q->train ? Mprev[e] : AT(s->mem, a, b, WN);
                float *Mout = q->train ? mcur + (2 * e + t % 2) * WN : AT(s->mem, nx, b, WN);
                /* the previous step's allocation order as the guess (in evaluation it is in the same slot) */
                const int *hint = t == 0 ? 0 : s->order + ((q->train ? t - 1 : 0) * B + b) * N;
                step_forward(1, N, W, R, xit[e], Min, AT(s->usage, a, b, N), Lprev[e],
                             AT(s->prec, a, b, N), AT(s->ww, a, b, N), AT(s->wr, a, b, R * N), Mout,
                             AT(s->usage, nx, b, N), Lout, AT(s->prec, nx, b, N), AT(s->ww, nx, b, N),
                             AT(s->wr, nx, b, R * N), AT(s->reads, t + 1, b, RW), svcur + e * SVA,
                             s->order + (k * B + b) * N, hint, ws);
                if (q->train && t < T - 1 && (t + 1) % K == 0)
                    stream_copy(q->ckpt + (((t + 1) / K - 1) * B + b) * NN, Lout, NN);
                if (t == T - 1) stream_copy(q->link_last + b * NN, Lout, NN);
                if (q->train && ((t + 1) % K == 0 || t == T - 1)) stream_copy(AT(s->mem, t + 1, b, WN), Mout, WN);
                if (q->train) stream_copy(AT(s->sv, k, b, SV), svcur + e * SVA, SV);
                Lprev[e] = Lout;
                Mprev[e] = Mout;
            }
        }
    }
#ifdef __AVX512F__
    _mm_sfence(); /* the streaming stores of stream_copy, visible to every thread from here (one fence, not one a copy) */
#endif
    free(curbuf); free(gates); free(ws);
    return KERNEL_OK;
}

/* one element's gradient of a memory state: the NULL-or-slice view of a batch-major dnc_state_grad */
static dnc_state_grad state_grad_at(const dnc_state_grad *g, long b, long N, long W, long R) {
    dnc_state_grad e;
    e.mem = g->mem ? g->mem + b * W * N : 0;
    e.usage = g->usage ? g->usage + b * N : 0;
    e.link = g->link ? g->link + b * N * N : 0;
    e.prec = g->prec ? g->prec + b * N : 0;
    e.ww = g->ww ? g->ww + b * N : 0;
    e.wr = g->wr ? g->wr + b * R * N : 0;
    return e;
}

/* one batch element's state in dnc_sequence_backward (two run in lockstep) */
typedef struct {
    float *seg, *mseg, *erase, *gL; /* recomputed segment (L, M), erase vector, dLoss/dL updated in place */
    float *gh, *gc2[2], *ght, *gread, *gz;
    dnc_state_grad sets[2], next, first; /* two memory-state gradients, dLoss/d state t + 1, state 0 */
    const float *gc, *gr;                /* dLoss/dc_t, dLoss/dr_t from later steps (NULL: zero) */
    int has_gL, which;
} element_backward;

int dnc_sequence_backward(const dnc_buffers *s, const dnc_sequence *q, const dnc_sequence_grad *g) {
    const long B = s->B, N = s->N, W = s->W, R = s->R, H = s->H, G = 4 * H, RW = R * W, Z = RW + H;
    const long S = make_layout(N, W, R).S, SV = saved_size(N, R), NN = N * N, T = q->T, K = q->K;
    const long MS = W * N + 3 * N + R * N; /* one element's memory-state gradient, less the link */
    const long WN = W * N, KS = K > 1 ? K - 1 : 1;
    /* per element: L_{cK+1 .. cK+K-1}, M_{cK+1 .. cK+K-1} and e, dLoss/dL when first.link is NULL, two
     * memory-state gradients, gh, gc (two), ght, gread, gz */
    const long PER = KS * NN + KS * WN + W + NN + 2 * MS + 4 * H + RW + Z;
    float *block = malloc(sizeof(float) * 2 * PER);
    float *ws = malloc(sizeof(float) * backward_scratch(N, W, R));
    if (!block || !ws) {
        free(block); free(ws);
        return KERNEL_NO_MEMORY;
    }
    const layout lay = make_layout(N, W, R);
    element_backward E[2];
    for (int e = 0; e < 2; ++e) {
        float *p = block + e * PER;
        E[e].seg = p; p += KS * NN;
        E[e].mseg = p; p += KS * WN;
        E[e].erase = p; p += W;
        E[e].gL = p; p += NN; /* replaced by first.link when there is one */
        for (int i = 0; i < 2; ++i) {
            E[e].sets[i].mem = p; E[e].sets[i].usage = p + W * N; E[e].sets[i].prec = p + W * N + N;
            E[e].sets[i].ww = p + W * N + 2 * N; E[e].sets[i].wr = p + W * N + 3 * N; E[e].sets[i].link = 0;
            p += MS;
        }
        E[e].gh = p; E[e].gc2[0] = p + H; E[e].gc2[1] = p + 2 * H; E[e].ght = p + 3 * H;
        E[e].gread = p + 4 * H; E[e].gz = p + 4 * H + RW;
    }
    float *gLscratch[2] = {E[0].gL, E[1].gL};
    for (long b0 = 0; b0 < B; b0 += 2) {
        const long P = b0 + 1 < B ? 2 : 1;
        for (long e = 0; e < P; ++e) {
            element_backward *x = E + e;
            const long b = b0 + e;
            const dnc_state_grad last = state_grad_at(&g->last, b, N, W, R);
            x->first = state_grad_at(&g->first, b, N, W, R);
            x->gL = x->first.link ? x->first.link : gLscratch[e];
            if (last.link) memcpy(x->gL, last.link, sizeof(float) * NN);
            x->has_gL = last.link != 0;
            x->next = last;
            x->which = 0;
            if (g->h) memcpy(x->gh, g->h + b * H, sizeof(float) * H);
            else memset(x->gh, 0, sizeof(float) * H);
            x->gc = g->c ? g->c + b * H : 0;
            x->gr = g->r ? g->r + b * RW : 0;
        }
        for (long t = T - 1; t >= 0; --t) {
            /* L_t: a checkpoint, or recomputed with the rest of its segment on entering it */
            const long c0 = t - t % K, top = (c0 + K - 1 < T - 1) ? c0 + K - 1 : T - 1;
            float *gxi[2], *ggates[2];
            for (long e = 0; e < P; ++e) { /* the memory steps, one element after the other */
                element_backward *x = E + e;
                const long b = b0 + e;
                /* L_{c0}; NULL: L_0 of the zero state (step_backward), and then L_1 = 0 */
                const float *base = c0 > 0 ? q->ckpt + ((c0 / K - 1) * B + b) * NN : q->link0 ? q->link0 + b * NN : 0;
                const float *mbase = AT(s->mem, c0, b, WN); /* M_t: a record at the checkpoints and at T */
                if (t == top)
                    for (long j = c0 + 1; j <= top; ++j) {
                        if (j == c0 + 1 && !base) memset(x->seg, 0, sizeof(float) * NN);
                        else link_update(1, N, j == c0 + 1 ? base : x->seg + (j - c0 - 2) * NN, AT(s->ww, j, b, N),
                                         AT(s->prec, j - 1, b, N), x->seg + (j - c0 - 1) * NN);
                        const float *xj = AT(s->xi, j - 1, b, S);
                        erase_vector(xj + lay.er, W, x->erase);
                        memory_write(j == c0 + 1 ? mbase : x->mseg + (j - c0 - 2) * WN, AT(s->ww, j, b, N), x->erase,
                                     xj + lay.v, N, W, x->mseg + (j - c0 - 1) * WN);
                    }
                const float *Lt = t == c0 ? base : x->seg + (t - c0 - 1) * NN;
                const float *Mt = t == c0 ? mbase : x->mseg + (t - c0 - 1) * WN;
                const float *Mnext = t == top ? AT(s->mem, t + 1, b, WN) : x->mseg + (t - c0) * WN;
                if (t > 0) { /* step t - 1's records, while step t runs */
                    prefetch(AT(s->sv, t - 1, b, SV), SV, 0);
                    prefetch(AT(s->xi, t - 1, b, S), S, 0);
                    prefetch(AT(s->act, t - 1, b, G), G, 0);
                    prefetch(AT(s->wr, t - 1, b, R * N), R * N, 0);
                    prefetch(s->order + ((t - 1) * B + b) * N, N, 0);
                    prefetch(AT(s->usage, t - 1, b, N), N, 0);
                    prefetch(AT(s->prec, t - 1, b, N), N, 0);
                    prefetch(AT(s->ww, t - 1, b, N), N, 0);
                }
                const float *grv = 0;
                if (x->gr || g->rs) {
                    for (long i = 0; i < RW; ++i)
                        x->gread[i] = (x->gr ? x->gr[i] : 0.0f) + (g->rs ? AT(g->rs, t, b, RW)[i] : 0.0f);
                    grv = x->gread;
                }
                dnc_state_grad prev = t == 0 ? x->first : x->sets[x->which], next = x->next;
                float *gLp = (t > 0 || x->first.link) ? x->gL : 0;
                gxi[e] = AT(g->xi, t, b, S);
                step_backward(1, N, W, R, AT(s->xi, t, b, S), Mt, AT(s->usage, t, b, N), Lt,
                              AT(s->prec, t, b, N), AT(s->ww, t, b, N), AT(s->wr, t, b, R * N), Mnext,
                              AT(s->ww, t + 1, b, N), AT(s->wr, t + 1, b, R * N), AT(s->sv, t, b, SV),
                              s->order + (t * B + b) * N, next.mem, next.usage, x->has_gL ? x->gL : 0, next.prec,
                              next.ww, next.wr, grv, gxi[e], prev.mem, prev.usage, gLp, prev.prec, prev.ww, prev.wr, ws);
                x->has_gL = 1;
                x->next = prev;
                x->which ^= 1;
                /* dh_t = (from z_{t+1}) + (from the outputs) + W_xi^T dxi_t: the first two here */
                for (long i = 0; i < H; ++i) x->ght[i] = x->gh[i] + (g->hs ? AT(g->hs, t, b, H)[i] : 0.0f);
            }
            /* the controllers, both elements' products sharing each weight row's load */
            float *ght[2] = {E[0].ght, E[1].ght}, *gz[2] = {E[0].gz, E[1].gz};
            backward_products(q->w_xi_t, q->w_xi, gxi, P, H, S, ght);
            for (long e = 0; e < P; ++e) {
                element_backward *x = E + e;
                const long b = b0 + e;
                float *gcp = t == 0 ? g->c0 + b * H : x->gc2[t % 2];
                ggates[e] = AT(g->gates, t, b, G);
                lstm_backward(1, H, AT(s->act, t, b, G), AT(s->c, t, b, H), AT(s->c, t + 1, b, H), x->ght, x->gc,
                              ggates[e], gcp);
                x->gc = gcp;
                memset(x->gz, 0, sizeof(float) * Z);
            }
            /* dz_t = W_rh^T dgates_t = [dr_t; dh_{t-1}] (the first Z rows of the transposed weights: not W_x's) */
            backward_products(q->w_rh_t, q->w_rh, ggates, P, Z, G, gz);
            for (long e = 0; e < P; ++e) {
                memcpy(E[e].gh, E[e].gz + RW, sizeof(float) * H);
                E[e].gr = E[e].gz; /* read before gz is overwritten, at step t - 1 */
            }
        }
        for (long e = 0; e < P; ++e) {
            memcpy(g->h0 + (b0 + e) * H, E[e].gh, sizeof(float) * H);
            memcpy(g->r0 + (b0 + e) * RW, E[e].gz, sizeof(float) * RW);
        }
    }
    free(block); free(ws);
    return KERNEL_OK;
}

#undef AT

/* sizeof(dnc_sequence), sizeof(dnc_sequence_grad): checked against their ctypes mirrors when loaded */
long dnc_sizeof_sequence(void) { return (long)sizeof(dnc_sequence); }
long dnc_sizeof_sequence_grad(void) { return (long)sizeof(dnc_sequence_grad); }

/* sizeof(dnc_buffers), sizeof(dnc_state_grad): checked against their ctypes mirrors when loaded */
long dnc_sizeof_buffers(void) { return (long)sizeof(dnc_buffers); }
long dnc_sizeof_state_grad(void) { return (long)sizeof(dnc_state_grad); }

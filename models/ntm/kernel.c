/* NTM heads of one step, float32, batch-major; the memory is held transposed, M[b][m][n]
 * (B x M x N), so loops over slots are contiguous. A = R + 1 heads, read heads first, then
 * the write head. Head parameters p (P floats per batch element):
 *   [ k: A*M | (beta^, gamma^, g^): A*3 | s^: A*S | e^: M | a^: M ]
 * beta = softplus(beta^), gamma = 1 + softplus(gamma^), g = sigmoid(g^), s = softmax(s^) over
 * offsets -SR..SR (S = 2 SR + 1), e = sigmoid(e^), a = tanh(a^) (or a^).
 * Per head:  sim_n = (k . M(n)) rho sigma_n,  rho = 1/max(|k|, EPS), sigma_n = 1/max(|M(n)|, EPS)
 *            wc = softmax(beta sim);  wg = w_prev + g (wc - w_prev)
 *            ws(i) = sum_j s_j wg(i - j + SR mod N);  w = softmax(gamma log max(ws, SEPS))
 * Reads r_h = M w_h (of M_{t-1}); write M_t = M (1 - e ww^T) + a ww^T.
 *
 * Called from Python (models/ntm/kernel_sequence.py) through ctypes: both exported functions take
 * the buffers of the sequence as one ntm_buffers (mirrored field for field by cpu_kernel.Buffers)
 * and slot numbers into them, and return a status code of cbuild_helpers.h. EPS and SEPS are
 * memory.COSINE_EPS and memory.SHARPEN_EPS, passed by cbuild.py as -DCOS_EPS=... -DSHARP_EPS=... */
#include "cbuild_helpers.h"

#if !defined(COS_EPS) || !defined(SHARP_EPS)
#error "build with -DCOS_EPS=<float> -DSHARP_EPS=<float> (models/ntm/cpu_kernel.py passes memory.py's values)"
#endif

/* The time-major buffers of one sequence, allocated once per call by kernel_sequence.py: entry i of
 * a buffer ("slot i") is one step's value. TP is T when training, else 1; TT is T + 1 when training,
 * else 2 alternating slots. All contiguous float32. */
typedef struct {
    long B, N, M, R, S, P;  /* batch, memory slots, width, read heads, shifts (2 SR + 1), head parameters */
    long tanh_add;          /* 1: a = tanh(a^); 0: a = a^ */
    long Z, H;              /* length of a row of z, and where the reads start in it (after h) */
    float *p;               /* (TP, B, P)        head parameters p_t */
    float *mem;             /* (TT, B, M, N)     memory M_t, transposed */
    float *w;               /* (TT, B, R + 1, N) weightings w_t, read heads first */
    float *z;               /* (T + 1, B, Z)     controller inputs [h_t; r_t]: the forward writes r_t */
    float *sv;              /* (T, B, SV)        what the forward saves for the backward; NULL: nothing */
} ntm_buffers;

/* y = softmax backward: y_i = x_i (g_i - sum_j g_j x_j); y may be g */
static void softmax_backward(const float *x, const float *g, float *y, long n) {
    float dot = 0.0f;
    #pragma omp simd reduction(+ : dot)
    for (long i = 0; i < n; ++i) dot += g[i] * x[i];
    #pragma omp simd
    for (long i = 0; i < n; ++i) y[i] = x[i] * (g[i] - dot);
}

/* pad[q] = x[(q - r) mod n], q in [0, n + 2r) */
static void circular_pad(const float *x, long n, long r, float *pad) {
    for (long q = 0; q < r; ++q) pad[q] = x[(n - r + q) % n];
    memcpy(pad + r, x, sizeof(float) * n);
    for (long q = 0; q < r; ++q) pad[n + r + q] = x[q % n];
}

/* floats saved per batch element: sigma, per head (sim, wc, wg, clamped, logw, s, 4 scalars), e, a */
static long head_saved(long N, long S) { return 5 * N + S + 4; }
long ntm_saved_floats(long N, long M, long R, long S) { return N + (R + 1) * head_saved(N, S) + 2 * M; }

static int heads_forward(long B, long N, long M, long R, long S, long tanh_add, long P, long rv_stride,
                         const float *p, const float *mem, const float *wprev, float *mem_out, float *w_out,
                         float *rv, float *sv) {
    const long A = R + 1, SR = S / 2, HS = head_saved(N, S), SV = ntm_saved_floats(N, M, R, S);
    const long o_sc = A * M, o_sh = o_sc + 3 * A, o_e = o_sh + A * S, o_a = o_e + M;
    float *scratch = malloc(sizeof(float) * (SV + N + 2 * SR));
    if (!scratch) return KERNEL_NO_MEMORY;
    float *pad = scratch + SV;
    for (long b = 0; b < B; ++b) {
        const float *pb = p + b * P, *Mb = mem + b * M * N, *wpb = wprev + b * A * N;
        float *Mo = mem_out + b * M * N, *wb = w_out + b * A * N;
        float *s_ = sv ? sv + b * SV : scratch;
        float *sigma = s_;
        memset(sigma, 0, sizeof(float) * N);
        for (long m = 0; m < M; ++m) {
            const float *Mm = Mb + m * N;
            #pragma omp simd
            for (long n = 0; n < N; ++n) sigma[n] += Mm[n] * Mm[n];
        }
        #pragma omp simd
        for (long n = 0; n < N; ++n) {
            const float sq = sigma[n] > COS_EPS * COS_EPS ? sigma[n] : COS_EPS * COS_EPS;
            sigma[n] = 1.0f / sqrtf(sq);
        }
        for (long a = 0; a < A; ++a) {
            float *sim = s_ + N + a * HS, *wc = sim + N, *wg = wc + N, *cl = wg + N, *lw = cl + N;
            float *sh = lw + N, *sc = sh + S;
            const float *k = pb + a * M, *wp = wpb + a * N;
            float *w = wb + a * N;
            const float beta = softplus(pb[o_sc + 3 * a]), gamma = 1.0f + softplus(pb[o_sc + 3 * a + 1]);
            const float gate = sigm(pb[o_sc + 3 * a + 2]);
            float kn = 0.0f;
            for (long m = 0; m < M; ++m) kn += k[m] * k[m];
            kn = sqrtf(kn);
            const float rho = 1.0f / (kn > COS_EPS ? kn : COS_EPS);
            memset(sim, 0, sizeof(float) * N);
            for (long m = 0; m < M; ++m) {
                const float km = k[m], *Mm = Mb + m * N;
                #pragma omp simd
                for (long n = 0; n < N; ++n) sim[n] += km * Mm[n];
            }
            #pragma omp simd
            for (long n = 0; n < N; ++n) {
                sim[n] = sim[n] * rho * sigma[n];
                wc[n] = beta * sim[n];
            }
            softmax(wc, N);
            #pragma omp simd
            for (long n = 0; n < N; ++n) wg[n] = wp[n] + gate * (wc[n] - wp[n]);
            for (long j = 0; j < S; ++j) sh[j] = pb[o_sh + a * S + j];
            softmax(sh, S);
            circular_pad(wg, N, SR, pad);
            memset(cl, 0, sizeof(float) * N);
            for (long j = 0; j < S; ++j) { /* offset j - SR: ws(i) += s_j wg(i - (j - SR)) = s_j pad[i + 2 SR - j] */
                const float sj = sh[j], *src = pad + 2 * SR - j;
                #pragma omp simd
                for (long n = 0; n < N; ++n) cl[n] += sj * src[n];
            }
            #pragma omp simd
            for (long n = 0; n < N; ++n) {
                cl[n] = cl[n] > SHARP_EPS ? cl[n] : SHARP_EPS;
                lw[n] = vlog(cl[n]);
                w[n] = gamma * lw[n];
            }
            softmax(w, N);
            sc[0] = beta; sc[1] = gamma; sc[2] = gate; sc[3] = rho;
        }
        for (long h = 0; h < R; ++h) {
            const float *wh = wb + h * N;
            for (long m = 0; m < M; ++m) {
                const float *Mm = Mb + m * N;
                float acc = 0.0f;
                #pragma omp simd reduction(+ : acc)
                for (long n = 0; n < N; ++n) acc += wh[n] * Mm[n];
                rv[b * rv_stride + h * M + m] = acc;
            }
        }
        float *e = s_ + N + A * HS, *ad = e + M;
        const float *ww = wb + R * N;
        for (long m = 0; m < M; ++m) {
            e[m] = sigm(pb[o_e + m]);
            ad[m] = tanh_add ? tanhf(pb[o_a + m]) : pb[o_a + m];
            const float em = e[m], am = ad[m], *Mm = Mb + m * N;
            float *Om = Mo + m * N;
            #pragma omp simd
            for (long n = 0; n < N; ++n) Om[n] = Mm[n] * (1.0f - em * ww[n]) + am * ww[n];
        }
    }
    free(scratch);
    return KERNEL_OK;
}

/* Gradients of one step. In: dL/dM_t (gmem_next, or NULL), dL/dw_t from step t+1 (gw_next, or
 * NULL), dL/dr_t (rows of gr at gr_stride, or NULL). Out: dL/dp (gp), dL/dM_{t-1} (gmem: may be
 * gmem_next itself, updated in place), dL/dw_{t-1} (gw_prev). */
static int heads_backward(long B, long N, long M, long R, long S, long tanh_add, long P, long gr_stride,
                         const float *p, const float *mem, const float *wprev, const float *w, const float *sv,
                         const float *gmem_next, const float *gw_next, const float *gr, float *gp, float *gmem,
                         float *gw_prev) {
    const long A = R + 1, SR = S / 2, HS = head_saved(N, S), SV = ntm_saved_floats(N, M, R, S);
    const long o_sc = A * M, o_sh = o_sc + 3 * A, o_e = o_sh + A * S, o_a = o_e + M;
    float *gw = malloc(sizeof(float) * (A * N + 8 * N + 4 * SR + 2 * S + 2 * M));
    if (!gw) return KERNEL_NO_MEMORY;
    float *gsig = gw + A * N, *gl = gsig + N, *gws = gl + N, *gwg = gws + N, *gz = gwg + N, *gd = gz + N;
    float *pad = gd + N, *gpad = pad + N + 2 * SR, *gs = gpad + N + 2 * SR, *gsm = gs + S;
    float *ge = gsm + S, *ga = ge + M;
    for (long b = 0; b < B; ++b) {
        const float *pb = p + b * P, *Mb = mem + b * M * N, *wpb = wprev + b * A * N, *wb = w + b * A * N;
        const float *s_ = sv + b * SV, *sigma = s_;
        const float *e = s_ + N + A * HS, *ad = e + M, *ww = wb + R * N;
        float *gpb = gp + b * P, *gMb = gmem + b * M * N, *gwpb = gw_prev + b * A * N;
        if (gw_next) memcpy(gw, gw_next + b * A * N, sizeof(float) * A * N);
        else memset(gw, 0, sizeof(float) * A * N);
        /* write: M_t = M (1 - e ww) + a ww */
        float *gww = gw + R * N;
        if (gmem_next) {
            const float *gMn = gmem_next + b * M * N;
            for (long m = 0; m < M; ++m) {
                const float em = e[m], am = ad[m], *Mm = Mb + m * N, *gm = gMn + m * N;
                float *gMm = gMb + m * N;
                float se = 0.0f, sa = 0.0f;
                #pragma omp simd reduction(+ : se, sa)
                for (long n = 0; n < N; ++n) {
                    const float g = gm[n];
                    gww[n] += g * (am - em * Mm[n]);
                    se -= g * Mm[n] * ww[n];
                    sa += g * ww[n];
                    gMm[n] = g * (1.0f - em * ww[n]); /* after every read of gm[n]: gmem may be gmem_next */
                }
                ge[m] = se;
                ga[m] = sa;
            }
        } else {
            memset(gMb, 0, sizeof(float) * M * N);
            memset(ge, 0, sizeof(float) * M);
            memset(ga, 0, sizeof(float) * M);
        }
        /* reads: r_h = M w_h */
        if (gr) {
            const float *grb = gr + b * gr_stride;
            for (long h = 0; h < R; ++h) {
                const float *wh = wb + h * N;
                float *gwh = gw + h * N;
                for (long m = 0; m < M; ++m) {
                    const float g = grb[h * M + m], *Mm = Mb + m * N;
                    float *gMm = gMb + m * N;
                    #pragma omp simd
                    for (long n = 0; n < N; ++n) {
                        gwh[n] += g * Mm[n];
                        gMm[n] += g * wh[n];
                    }
                }
            }
        }
        memset(gsig, 0, sizeof(float) * N);
        for (long a = 0; a < A; ++a) {
            const float *sim = s_ + N + a * HS, *wc = sim + N, *wg = wc + N, *cl = wg + N, *lw = cl + N;
            const float *sh = lw + N, *sc = sh + S;
            const float beta = sc[0], gamma = sc[1], gate = sc[2], rho = sc[3];
            const float *k = pb + a * M, *wa = wb + a * N, *wp = wpb + a * N;
            /* sharpening */
            softmax_backward(wa, gw + a * N, gl, N);
            float ggamma = 0.0f;
            #pragma omp simd reduction(+ : ggamma)
            for (long n = 0; n < N; ++n) {
                ggamma += gl[n] * lw[n];
                gws[n] = cl[n] > SHARP_EPS ? gl[n] * gamma / cl[n] : 0.0f;
            }
            /* shift: gs_j = sum_i gws(i) pad[i + 2 SR - j]; gwg(q) = sum_j s_j gpad[q + j] */
            circular_pad(wg, N, SR, pad);
            circular_pad(gws, N, SR, gpad);
            memset(gwg, 0, sizeof(float) * N);
            for (long j = 0; j < S; ++j) {
                const float *src = pad + 2 * SR - j, *gsrc = gpad + j, sj = sh[j];
                float acc = 0.0f;
                #pragma omp simd reduction(+ : acc)
                for (long n = 0; n < N; ++n) {
                    acc += gws[n] * src[n];
                    gwg[n] += sj * gsrc[n];
                }
                gs[j] = acc;
            }
            softmax_backward(sh, gs, gsm, S);
            /* interpolation */
            float ggate = 0.0f;
            #pragma omp simd reduction(+ : ggate)
            for (long n = 0; n < N; ++n) {
                ggate += gwg[n] * (wc[n] - wp[n]);
                gwpb[a * N + n] = (1.0f - gate) * gwg[n];
                gwg[n] *= gate; /* now dL/dwc */
            }
            /* content */
            softmax_backward(wc, gwg, gz, N);
            float gbeta = 0.0f, usum = 0.0f;
            #pragma omp simd reduction(+ : gbeta, usum)
            for (long n = 0; n < N; ++n) {
                gbeta += gz[n] * sim[n];
                const float gsim = beta * gz[n];
                usum += gsim * sim[n];
                gsig[n] += gsim * sim[n];
                gd[n] = gsim * rho * sigma[n]; /* dL/d(k . M(n)) */
            }
            const float rho2 = rho < 1.0f / COS_EPS ? rho * rho : 0.0f;
            for (long m = 0; m < M; ++m) {
                const float km = k[m], *Mm = Mb + m * N;
                float *gMm = gMb + m * N;
                float acc = 0.0f;
                #pragma omp simd reduction(+ : acc)
                for (long n = 0; n < N; ++n) {
                    acc += gd[n] * Mm[n];
                    gMm[n] += km * gd[n];
                }
                gpb[a * M + m] = acc - km * rho2 * usum;
            }
            gpb[o_sc + 3 * a] = gbeta * sigm(pb[o_sc + 3 * a]);
            gpb[o_sc + 3 * a + 1] = ggamma * sigm(pb[o_sc + 3 * a + 1]);
            gpb[o_sc + 3 * a + 2] = ggate * gate * (1.0f - gate);
            for (long j = 0; j < S; ++j) gpb[o_sh + a * S + j] = gsm[j];
        }
        /* slot norms: d sigma_n / d M(n) = -M(n) sigma_n^3, where not clamped */
        for (long m = 0; m < M; ++m) {
            const float *Mm = Mb + m * N;
            float *gMm = gMb + m * N;
            #pragma omp simd
            for (long n = 0; n < N; ++n) {
                const float s2 = sigma[n] < 1.0f / COS_EPS ? sigma[n] * sigma[n] : 0.0f;
                gMm[n] -= Mm[n] * s2 * gsig[n];
            }
        }
        for (long m = 0; m < M; ++m) {
            gpb[o_e + m] = ge[m] * e[m] * (1.0f - e[m]);
            gpb[o_a + m] = tanh_add ? ga[m] * (1.0f - ad[m] * ad[m]) : ga[m];
        }
    }
    free(gw);
    return KERNEL_OK;
}

/* --- the exported functions: slot numbers into one ntm_buffers, pointers only for what is not in it --- */

#define SLOT(buf, i, size) ((buf) + (i) * (size))

/* the heads of step t: p_t at slot `step`, M and w from slot `prev` to slot `next`, r_t into row t + 1
 * of z, saves at sv slot t (none when sv is NULL) */
int ntm_heads_forward(const ntm_buffers *s, long t, long step, long prev, long next) {
    const long B = s->B, N = s->N, M = s->M, R = s->R, S = s->S, P = s->P, A = R + 1;
    float *sv = s->sv ? SLOT(s->sv, t, B * ntm_saved_floats(N, M, R, S)) : 0;
    return heads_forward(B, N, M, R, S, s->tanh_add, P, s->Z, SLOT(s->p, step, B * P),
                         SLOT(s->mem, prev, B * M * N), SLOT(s->w, prev, B * A * N), SLOT(s->mem, next, B * M * N),
                         SLOT(s->w, next, B * A * N), SLOT(s->z, t + 1, B * s->Z) + s->H, sv);
}

/* gradient of the heads of step t (every buffer at its training slot). In: dLoss/dM_t (gmem_next, or
 * NULL), dLoss/dw_t from step t + 1 (gw_next, or NULL), dLoss/dz_t (gz, B x Z: its reads part is
 * dLoss/dr_t). Out: dLoss/dp_t (gp, B x P), dLoss/dM_{t-1} (gmem: may be gmem_next itself, updated in
 * place), dLoss/dw_{t-1} (gw_prev). */
int ntm_heads_backward(const ntm_buffers *s, long t, const float *gmem_next, const float *gw_next, const float *gz,
                       float *gp, float *gmem, float *gw_prev) {
    const long B = s->B, N = s->N, M = s->M, R = s->R, S = s->S, P = s->P, A = R + 1;
    return heads_backward(B, N, M, R, S, s->tanh_add, P, s->Z, SLOT(s->p, t, B * P), SLOT(s->mem, t, B * M * N),
                          SLOT(s->w, t, B * A * N), SLOT(s->w, t + 1, B * A * N),
                          SLOT(s->sv, t, B * ntm_saved_floats(N, M, R, S)), gmem_next, gw_next, gz + s->H, gp,
                          gmem, gw_prev);
}

/* sizeof(ntm_buffers): checked against its ctypes mirror when loaded */
long ntm_sizeof_buffers(void) { return (long)sizeof(ntm_buffers); }

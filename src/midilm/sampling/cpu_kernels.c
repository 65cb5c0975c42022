/* A GPT-2 forward for one new position of a few rows (every sampled token), and matrix
 * products of a few rows, on an AVX-512 CPU.
 *
 * Why they exist (cpu_kernels.py has the measurements): sampling one token reads every
 * weight once, so it is bound by memory, yet in PyTorch a small model's token is mostly
 * the overhead of ~150 small operations, and its CPU attention kernel spends ~50 us a layer
 * on one query. Here the whole model is one call: its matrix products walk each weight row
 * once, front to back, with the rows split between OpenMP threads (the same OpenMP runtime
 * as PyTorch's, so one thread pool) and barriers between a block's steps.
 *
 * Built at first use by cpu_kernels.py with -march=native; every result is checked
 * against PyTorch there before it is trusted.
 */
#include <immintrin.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

/* glibc's vector expf and tanhf (libmvec) for the softmax and the GELU. math.h declares them
 * only under -ffast-math, and that flag (or -fno-math-errno alone) makes GCC 12 build the
 * matrix-vector loops here ~1.5x slower (measured: 35 against 54 GB/s), so: declared here. */
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float tanhf(float);

#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512VL__)
#error "midilm's CPU kernels need AVX-512 (F, BW, VL)"
#endif

#define ROW_BLOCK 8 /* rows of x that share one pass over the bf16 weights (MAX_BF16_ROWS) */

/* This thread's share [lo, hi) of n rows, cut at multiples of `grain`. */
static void thread_span(long n, long grain, long *lo, long *hi) {
    const long t = omp_get_thread_num(), count = omp_get_num_threads(), units = (n + grain - 1) / grain;
    *lo = units * t / count * grain;
    *hi = units * (t + 1) / count * grain;
    if (*hi > n) *hi = n;
    if (*lo > n) *lo = n;
}

/* The first n lanes (none for n <= 0). */
static inline __mmask16 mask16(long n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* x (fp32) . w (fp16), four independent sums so the adds overlap. */
static float dot_f16(const float *x, const uint16_t *w, long K) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long k = 0;
    for (; k + 64 <= K; k += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + k))), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + k + 16))), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + k + 32))), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + k + 48))), a3);
    }
    for (; k < K; k += 16) {
        __mmask16 m = mask16(K - k);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + k), _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + k)), a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* bf16 matrices are packed in blocks of 32 output rows, the pairs of inputs side by side
 * ([N/32][K/2][32][2], zero-padded to whole blocks and pairs): one 64-byte load then holds
 * 16 outputs' next two weights, and each bf16 pair of x, broadcast, feeds a dot-product
 * instruction per 16 outputs. A block's weights are read once for up to ROW_BLOCK rows of x. */
#define PACK 32
static inline long packed_pairs(long K) { return (K + 1) / 2; }

#ifdef __AVX512BF16__
static inline __attribute__((always_inline)) void block_bf16(
    const uint16_t *x, long stride, long pairs, const uint16_t *w, float *sums, const int rows) {
    __m512 a[ROW_BLOCK], c[ROW_BLOCK];
    const uint32_t *xp = (const uint32_t *)x;
    for (int i = 0; i < rows; i++) a[i] = c[i] = _mm512_setzero_ps();
    for (long p = 0; p < pairs; p++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + p * 2 * PACK);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + p * 2 * PACK + PACK);
        for (int i = 0; i < rows; i++) {
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)xp[i * (stride / 2) + p]);
            a[i] = _mm512_dpbf16_ps(a[i], xv, w0);
            c[i] = _mm512_dpbf16_ps(c[i], xv, w1);
        }
    }
    for (int i = 0; i < rows; i++) {
        _mm512_storeu_ps(sums + i * PACK, a[i]);
        _mm512_storeu_ps(sums + i * PACK + 16, c[i]);
    }
}
#define ROWS_CASE(r) case r: block_bf16(xb + m0 * stride, stride, pairs, w + nb * PACK * 2 * pairs, sums, r); break;
#endif

/* A row of fp32 as bf16 (round to nearest even), zero-padded to `stride` (a multiple of 32). */
static void to_bf16_row(const float *x, long K, uint16_t *out, long stride) {
#ifdef __AVX512BF16__
    for (long k = 0; k < stride; k += 32) {
        __m512 lo = _mm512_maskz_loadu_ps(mask16(K - k), x + k);
        __m512 hi = _mm512_maskz_loadu_ps(mask16(K - k - 16), x + k + 16);
        _mm512_storeu_si512(out + k, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
#else
    (void)x, (void)K, (void)out, (void)stride;
#endif
}

static long bf16_stride(long K) { return (K + 63) / 64 * 64; }

enum { STORE, STORE_GELU, ADD };

/* out[m][n] for n in [lo, hi), every m < M: x[m] . w[n] + bias[n], stored (then GELU-tanh)
 * or added to what out holds (the residual stream). x is fp32 (fp16 weights) or its bf16
 * copy xb (bf16 weights). */
static void product_span(const float *x, const uint16_t *xb, long M, long K, const uint16_t *w,
                         int bf16, const float *bias, float *out, long N, long lo, long hi, int mode) {
    if (!bf16) {
        for (long n = lo; n < hi; n++)
            for (long m = 0; m < M; m++) {
                float v = dot_f16(x + m * K, w + n * K, K) + (bias ? bias[n] : 0.0f);
                out[m * N + n] = mode == ADD ? out[m * N + n] + v : v;
            }
    }
#ifdef __AVX512BF16__
    else { /* [lo, hi) are whole blocks of PACK rows here, but for the last (see span) */
        const long stride = bf16_stride(K), pairs = packed_pairs(K);
        float sums[ROW_BLOCK * PACK];
        for (long m0 = 0; m0 < M; m0 += ROW_BLOCK)
            for (long nb = lo / PACK; nb * PACK < hi; nb++) {
                const long rows = M - m0 < ROW_BLOCK ? M - m0 : ROW_BLOCK;
                const long n0 = nb * PACK, count = hi - n0 < PACK ? hi - n0 : PACK;
                switch (rows) { ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6) ROWS_CASE(7) ROWS_CASE(8) }
                for (long i = 0; i < rows; i++) {
                    float *o = out + (m0 + i) * N + n0;
                    for (long j = 0; j < count; j++) {
                        float v = sums[i * PACK + j] + (bias ? bias[n0 + j] : 0.0f);
                        o[j] = mode == ADD ? o[j] + v : v;
                    }
                }
            }
    }
#endif
    if (mode == STORE_GELU)
        for (long m = 0; m < M; m++) {
            float *row = out + m * N;
#pragma omp simd
            for (long n = lo; n < hi; n++) {
                float v = row[n];
                row[n] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
            }
        }
}

/* y (M, N) = x (M, K) @ w (N, K)^T + bias, then GELU-tanh if asked. x, y, bias fp32; w fp16
 * (w_is_bf16 = 0, rows as they are) or bf16 (1, packed as above). Returns 0, or -1 where this build cannot (bf16 unsupported,
 * out of memory). */
int midilm_linear(const float *x, long M, long K, const uint16_t *w, int w_is_bf16, long N,
                  const float *bias, float *y, int gelu, int threads) {
    uint16_t *xb = NULL;
    if (w_is_bf16) {
#ifndef __AVX512BF16__
        return -1;
#endif
        long stride = bf16_stride(K);
        xb = aligned_alloc(64, (size_t)M * stride * sizeof(uint16_t));
        if (!xb) return -1;
        for (long m = 0; m < M; m++) to_bf16_row(x + m * K, K, xb + m * stride, stride);
    }
#pragma omp parallel num_threads(threads)
    {
        long lo, hi;
        thread_span(N, w_is_bf16 ? PACK : 1, &lo, &hi);
        product_span(x, xb, M, K, w, w_is_bf16, bias, y, N, lo, hi, gelu ? STORE_GELU : STORE);
    }
    free(xb);
    return 0;
}

int midilm_has_bf16(void) {
#ifdef __AVX512BF16__
    return 1;
#else
    return 0;
#endif
}

/* Layer norm of one row (two passes: the mean, then the variance about it). */
static void layer_norm_row(const float *x, long C, const float *gain, const float *shift, float eps, float *out) {
    float sum = 0.0f, squares = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (long c = 0; c < C; c++) sum += x[c];
    const float mean = sum / C;
#pragma omp simd reduction(+ : squares)
    for (long c = 0; c < C; c++) squares += (x[c] - mean) * (x[c] - mean);
    const float scale = 1.0f / sqrtf(squares / C + eps);
#pragma omp simd
    for (long c = 0; c < C; c++) out[c] = (x[c] - mean) * scale * gain[c] + shift[c];
}

/* Softmax attention of one query over `length` keys and values (fp16 rows of D). */
static inline __m512 load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

static void attend(const float *q, const uint16_t *keys, const uint16_t *values, long length, long D,
                   float *scores, float *out) {
    const long blocks = D / 16;
    const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float)D));
    __m512 qr[16], o[16];
    for (long i = 0; i < blocks; i++) qr[i] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * i), scale);
    float top = -FLT_MAX;
    for (long j = 0; j < length; j++) {
        __m512 acc = _mm512_mul_ps(qr[0], load_f16(keys + j * D));
        for (long i = 1; i < blocks; i++) acc = _mm512_fmadd_ps(qr[i], load_f16(keys + j * D + 16 * i), acc);
        scores[j] = _mm512_reduce_add_ps(acc);
        top = scores[j] > top ? scores[j] : top;
    }
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (long j = 0; j < length; j++) {
        scores[j] = expf(scores[j] - top);
        total += scores[j];
    }
    for (long i = 0; i < blocks; i++) o[i] = _mm512_setzero_ps();
    for (long j = 0; j < length; j++) {
        __m512 p = _mm512_set1_ps(scores[j]);
        for (long i = 0; i < blocks; i++) o[i] = _mm512_fmadd_ps(p, load_f16(values + j * D + 16 * i), o[i]);
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / total);
    for (long i = 0; i < blocks; i++) _mm512_storeu_ps(out + 16 * i, _mm512_mul_ps(o[i], inverse));
}

/* A pre-norm GPT-2 block's parameters: norms, biases fp32; matrices (out, in) fp16, or bf16
 * packed. */
typedef struct {
    const float *ln_1_w, *ln_1_b, *ln_2_w, *ln_2_b;
    const uint16_t *qkv_w, *proj_w, *fc_w, *out_w; /* (3C, C), (C, C), (4C, C), (C, 4C) */
    const float *qkv_b, *proj_b, *fc_b, *out_b;
} Block;

/* Floats of workspace midilm_forward needs. */
long midilm_forward_workspace(long B, long C, long max_len, int threads) {
    return B * (C + 3 * C + C + 4 * C) + B * bf16_stride(4 * C) / 2 + (long)threads * max_len + 64;
}

/* Thread t of T's rows of h = layer_norm(x), with their bf16 copy where the product after
 * reads bf16. */
static void norm_rows(long t, long T, const float *x, long B, long C, const float *gain,
                      const float *shift, float eps, float *h, uint16_t *xb, int bf16) {
    for (long m = B * t / T; m < B * (t + 1) / T; m++) {
        layer_norm_row(x + m * C, C, gain, shift, eps, h + m * C);
        if (bf16) to_bf16_row(h + m * C, C, xb + m * bf16_stride(C), bf16_stride(C));
    }
}

/* Thread t of T's rows of x (B, K) as bf16, for the product after. */
static void bf16_rows(long t, long T, const float *x, long B, long K, uint16_t *xb) {
    for (long m = B * t / T; m < B * (t + 1) / T; m++) to_bf16_row(x + m * K, K, xb + m * bf16_stride(K), bf16_stride(K));
}

/* One block, run by every thread of a parallel region (thread t of T); see midilm_forward.
 * Ends with a barrier, so x is whole for what comes next. */
static void block_steps(long t, long T, float *x, long B, long C, long H, const Block *blk, int bf16,
                        uint16_t *kv, long max_len, long pos, float eps, float *work) {
    const long D = C / H, C3 = 3 * C, C4 = 4 * C, grain = bf16 ? PACK : 1;
    const long s4 = bf16_stride(C4);
    float *h = work, *fused = h + B * C, *attn = fused + B * C3, *mlp = attn + B * C;
    uint16_t *xb = (uint16_t *)(mlp + B * C4); /* bf16 copy of a product's input */
    float *scores = (float *)(xb + B * s4);
#define SPAN(n) const long lo = (n) * t / T, hi = (n) * (t + 1) / T
#define PRODUCT_SPAN(n) long lo, hi; thread_span(n, grain, &lo, &hi)
    norm_rows(t, T, x, B, C, blk->ln_1_w, blk->ln_1_b, eps, h, xb, bf16);
#pragma omp barrier
    { PRODUCT_SPAN(C3); product_span(h, xb, B, C, blk->qkv_w, bf16, blk->qkv_b, fused, C3, lo, hi, STORE); }
#pragma omp barrier
    { /* each (row, head): its key and value into the cache, then its attention */
        SPAN(B * H);
        for (long item = lo; item < hi; item++) {
            const long b = item / H, head = item % H;
            uint16_t *keys = kv + item * 2 * max_len * D, *values = keys + max_len * D;
            const float *row = fused + b * C3 + head * D;
            for (long d = 0; d < D; d += 16) {
                _mm256_storeu_si256((__m256i *)(keys + pos * D + d),
                                    _mm512_cvtps_ph(_mm512_loadu_ps(row + C + d), _MM_FROUND_TO_NEAREST_INT));
                _mm256_storeu_si256((__m256i *)(values + pos * D + d),
                                    _mm512_cvtps_ph(_mm512_loadu_ps(row + 2 * C + d), _MM_FROUND_TO_NEAREST_INT));
            }
            attend(row, keys, values, pos + 1, D, scores + t * max_len, attn + b * C + head * D);
        }
    }
#pragma omp barrier
    if (bf16) {
        bf16_rows(t, T, attn, B, C, xb);
#pragma omp barrier
    }
    { PRODUCT_SPAN(C); product_span(attn, xb, B, C, blk->proj_w, bf16, blk->proj_b, x, C, lo, hi, ADD); }
#pragma omp barrier
    norm_rows(t, T, x, B, C, blk->ln_2_w, blk->ln_2_b, eps, h, xb, bf16);
#pragma omp barrier
    { PRODUCT_SPAN(C4); product_span(h, xb, B, C, blk->fc_w, bf16, blk->fc_b, mlp, C4, lo, hi, STORE_GELU); }
#pragma omp barrier
    if (bf16) {
        bf16_rows(t, T, mlp, B, C4, xb);
#pragma omp barrier
    }
    { PRODUCT_SPAN(C); product_span(mlp, xb, B, C4, blk->out_w, bf16, blk->out_b, x, C, lo, hi, ADD); }
#pragma omp barrier
#undef SPAN
#undef PRODUCT_SPAN
}

/* The whole model for one new position of B rows, in one parallel region: x (B, C), the
 * embedded tokens, goes through every block in place; the cache kv, fp16 (layers, B, H, 2,
 * max_len, D) contiguous, receives the position's keys and values at `pos`; logits (B, vocab) = head(ln_f(x)), the head (vocab, C) without bias.
 * Matrices fp16, or bf16 packed (bf16 = 1). Returns 0, or -1 where it cannot (D not a
 * multiple of 16 up to 256, bf16 unsupported). */
int midilm_forward(float *x, long B, long C, long H, long layers, const Block *blocks,
                   const float *ln_f_w, const float *ln_f_b, const uint16_t *head_w, long vocab,
                   int bf16, uint16_t *kv, long max_len, long pos, float eps,
                   float *logits, float *work, int threads) {
    const long D = C / H, layer_size = B * H * 2 * max_len * D;
    if (D * H != C || D % 16 || D > 256) return -1;
#ifndef __AVX512BF16__
    if (bf16) return -1;
#endif
    float *h = work;
    uint16_t *xb = (uint16_t *)(work + B * 9 * C);
#pragma omp parallel num_threads(threads)
    {
        const long t = omp_get_thread_num(), T = omp_get_num_threads();
        for (long layer = 0; layer < layers; layer++)
            block_steps(t, T, x, B, C, H, blocks + layer, bf16, kv + layer * layer_size, max_len, pos, eps, work);
        norm_rows(t, T, x, B, C, ln_f_w, ln_f_b, eps, h, xb, bf16);
#pragma omp barrier
        long lo, hi;
        thread_span(vocab, bf16 ? PACK : 1, &lo, &hi);
        product_span(h, xb, B, C, head_w, bf16, NULL, logits, vocab, lo, hi, STORE);
    }
    return 0;
}

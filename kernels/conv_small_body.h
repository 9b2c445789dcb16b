/* One instantiation of the register-blocked small-reduction conv row (see conv_small.h).
 * Parameters, #defined by the includer: REAL (float/double), VEC (a 32-byte GCC vector
 * of REAL), LANES (REAL per VEC), ROW_FN (the function's name), TARGET (a function
 * attribute: empty, or a target("...") attribute). */

/* acc[p][b] += x[pixel p, k] * w[k, chunk b] over all k; P pixels x NB vectors of
 * output channels live in registers for the whole reduction; each output is written once. */
#define BLOCK_BODY(P, NB, V, L)                                                            \
    do {                                                                               \
        V acc[P][NB];                                                                  \
        for (int b = 0; b < NB; b++) {                                                 \
            V bv = FASTDL_LOADV(V, bias + oc + b * L);                                 \
            for (int p = 0; p < P; p++) acc[p][b] = bv;                                \
        }                                                                              \
        const REAL* wk = w + oc;                                                       \
        for (ptrdiff_t k = 0; k < k_total; k++, wk += out_c) {                              \
            V wv[NB];                                                                  \
            for (int b = 0; b < NB; b++) wv[b] = FASTDL_LOADV(V, wk + b * L);           \
            const REAL* xk = x_pix + koff[k];                                          \
            for (int p = 0; p < P; p++) {                                              \
                REAL a = xk[p * pixel_step];                                           \
                for (int b = 0; b < NB; b++) acc[p][b] += a * wv[b];                   \
            }                                                                          \
        }                                                                              \
        for (int p = 0; p < P; p++)                                                    \
            for (int b = 0; b < NB; b++)                                               \
                FASTDL_STOREV(V, out_pix + p * out_c + oc + b * L, acc[p][b]);           \
    } while (0)

TARGET static void ROW_FN(const REAL* x_row, const REAL* w, const REAL* bias, REAL* out_row,
                          ptrdiff_t out_w, ptrdiff_t out_c, ptrdiff_t pixel_step, const ptrdiff_t* koff,
                          ptrdiff_t k_total)
{
    ptrdiff_t ow = 0;
    /* 6 pixels x 2 vectors: 12 accumulators + 2 weight vectors + 1 broadcast fit the
     * 16 vector registers of AVX2 (and of SSE2, where each VEC is two registers the
     * compiler spills a little). */
    for (; ow + 6 <= out_w; ow += 6) {
        const REAL* x_pix = x_row + ow * pixel_step;
        REAL* out_pix = out_row + ow * out_c;
        ptrdiff_t oc = 0;
        for (; oc + 2 * LANES <= out_c; oc += 2 * LANES) BLOCK_BODY(6, 2, VEC, LANES);
        for (; oc + LANES <= out_c; oc += LANES) BLOCK_BODY(6, 1, VEC, LANES);
        for (; oc < out_c; oc++) BLOCK_BODY(6, 1, REAL, 1);
    }
    for (; ow < out_w; ow++) {
        const REAL* x_pix = x_row + ow * pixel_step;
        REAL* out_pix = out_row + ow * out_c;
        ptrdiff_t oc = 0;
        for (; oc + 2 * LANES <= out_c; oc += 2 * LANES) BLOCK_BODY(1, 2, VEC, LANES);
        for (; oc + LANES <= out_c; oc += LANES) BLOCK_BODY(1, 1, VEC, LANES);
        for (; oc < out_c; oc++) BLOCK_BODY(1, 1, REAL, 1);
    }
}

#undef BLOCK_BODY

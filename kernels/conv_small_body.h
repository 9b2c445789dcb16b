/* One instantiation of the register-blocked small-reduction conv row (see conv_small.h).
 * Parameters, #defined by the includer: REAL (float/double), VEC (a GCC vector of REAL),
 * LANES (REAL per VEC), REAL_INDEX (the integer type of REAL's size, for
 * __builtin_shuffle's lane indices),
 * ROW_FN and TRANSPOSE_FN (the functions' names), TARGET (a function attribute: empty, or a target("...")
 * attribute), and the block shapes: P_WIDE pixels for blocks of 4 vectors of channels (0:
 * no such blocks, too few registers), P_PAIR for 2 vectors, P_ONE for one vector and for
 * the channels left over; NB_FIRST: vectors of channels per LANES-pixel block of
 * channels-first output; HALF_VEC / HALF_LANES and QUARTER_VEC / QUARTER_LANES (optional):
 * narrower vectors for the channels left over (4 fp32 channels in an AVX-512 build ran 1.5x
 * slower than in the generic one when they went one channel at a time). */

/* acc[p][b] += x[pixel p, k] * w[k, chunk b] over all k; P pixels x NB vectors of
 * output channels live in registers for the whole reduction; each output is written once,
 * by STORE. Weight rows are w_stride apart (out_c, or C_out for one group's out_c columns
 * of a grouped conv). Output (pixel p, channel c) is at
 * out_row + (ow + p) * pix_stride + (oc + c) * chan_stride. */
#define BLOCK_BODY(P, NB, V, L, STORE)                                                     \
    do {                                                                               \
        const REAL* x_pix = x_row + ow * pixel_step;                                   \
        V acc[P][NB];                                                                  \
        for (int b = 0; b < NB; b++) {                                                 \
            V bv = FASTDL_LOADV(V, bias + oc + b * L);                                 \
            for (int p = 0; p < P; p++) acc[p][b] = bv;                                \
        }                                                                              \
        const REAL* wk = w + oc;                                                       \
        for (ptrdiff_t k = 0; k < k_total; k++, wk += w_stride) {                      \
            V wv[NB];                                                                  \
            for (int b = 0; b < NB; b++) wv[b] = FASTDL_LOADV(V, wk + b * L);           \
            const REAL* xk = x_pix + koff[k];                                          \
            for (int p = 0; p < P; p++) {                                              \
                REAL a = xk[p * pixel_step];                                           \
                for (int b = 0; b < NB; b++) acc[p][b] += a * wv[b];                   \
            }                                                                          \
        }                                                                              \
        STORE(P, NB, V, L);                                                            \
    } while (0)

/* channels-last (chan_stride 1): whole vectors */
#define STORE_VECTORS(P, NB, V, L)                                                         \
    for (int p = 0; p < P; p++)                                                        \
        for (int b = 0; b < NB; b++)                                                   \
            FASTDL_STOREV(V, out_row + (ow + p) * pix_stride + oc + b * L, acc[p][b])

/* any layout, through a stack tile: each channel's P pixels are written in turn */
#define STORE_TILE(P, NB, V, L)                                                            \
    do {                                                                               \
        REAL tile[P][NB * L];                                                          \
        for (int p = 0; p < P; p++)                                                    \
            for (int b = 0; b < NB; b++) FASTDL_STOREV(V, &tile[p][b * L], acc[p][b]);  \
        for (int c = 0; c < NB * L; c++) {                                             \
            REAL* dst = out_row + ow * pix_stride + (oc + c) * chan_stride;            \
            for (int p = 0; p < P; p++) dst[p * pix_stride] = tile[p][c];              \
        }                                                                              \
    } while (0)

/* channels-first (pix_stride 1), P == L: each chunk b of acc is an L x L (pixel x
 * channel) matrix; transposed in registers, its rows are channels' runs of L consecutive
 * pixels, one vector store each. The transpose swaps the off-diagonal h x h blocks of
 * every 2h x 2h block, h = L/2 .. 1 (log2(L) rounds of two-input shuffles). */
/* lane j of the two results of a round, as indices into the concatenation (lo, hi);
 * taken mod 2L so rounds that never run (h >= L) still compile under Clang */
#define SWAP_LO(j, h, L) ((((j) & (h)) ? (L) + (j) - (h) : (j)) % (2 * (L)))
#define SWAP_HI(j, h, L) ((((j) & (h)) ? (L) + (j) : (j) + (h)) % (2 * (L)))
#define LANE_LIST(L, F, h) LANE_LIST_(L, F, h)
#define LANE_LIST_(L, F, h) LANE_LIST_##L(F, h)
#define LANE_LIST_2(F, h) F(0, h, 2), F(1, h, 2)
#define LANE_LIST_4(F, h) F(0, h, 4), F(1, h, 4), F(2, h, 4), F(3, h, 4)
#define LANE_LIST_8(F, h) F(0, h, 8), F(1, h, 8), F(2, h, 8), F(3, h, 8), F(4, h, 8),     \
                          F(5, h, 8), F(6, h, 8), F(7, h, 8)
#define LANE_LIST_16(F, h) F(0, h, 16), F(1, h, 16), F(2, h, 16), F(3, h, 16),            \
                           F(4, h, 16), F(5, h, 16), F(6, h, 16), F(7, h, 16),            \
                           F(8, h, 16), F(9, h, 16), F(10, h, 16), F(11, h, 16),          \
                           F(12, h, 16), F(13, h, 16), F(14, h, 16), F(15, h, 16)
/* two-input shuffle with constant lane indices: GCC's __builtin_shuffle takes them as a
 * vector, Clang's __builtin_shufflevector as arguments (GCC has that only from 12 on) */
#if defined(__clang__)
#define SHUFFLE2(V, L, a, b, F, h) __builtin_shufflevector(a, b, LANE_LIST(L, F, h))
#else
#define SHUFFLE2(V, L, a, b, F, h)                                                         \
    ({                                                                                 \
        typedef REAL_INDEX index_t_ __attribute__((vector_size(sizeof(V))));           \
        __builtin_shuffle(a, b, (index_t_){LANE_LIST(L, F, h)});                       \
    })
#endif
/* one round; rounds with h >= L do nothing */
#define TRANSPOSE_ROUND(V, L, b, h)                                                        \
    for (int i = 0; i + (h) < (L); i++)                                                \
        if (!(i & (h))) {                                                              \
            V lo_ = acc[i][b], hi_ = acc[i + (h)][b];                                  \
            acc[i][b] = SHUFFLE2(V, L, lo_, hi_, SWAP_LO, h);                          \
            acc[i + (h)][b] = SHUFFLE2(V, L, lo_, hi_, SWAP_HI, h);                    \
        }
#define STORE_TRANSPOSED(P, NB, V, L)                                                      \
    for (int b = 0; b < NB; b++) {                                                     \
        TRANSPOSE_ROUND(V, L, b, 8)                                                    \
        TRANSPOSE_ROUND(V, L, b, 4)                                                    \
        TRANSPOSE_ROUND(V, L, b, 2)                                                    \
        TRANSPOSE_ROUND(V, L, b, 1)                                                    \
        for (int c = 0; c < L; c++)                                                    \
            FASTDL_STOREV(V, out_row + ow + (oc + b * L + c) * chan_stride, acc[c][b]); \
    }

/* Channels oc .. oc + NB * L of the whole row, P pixels at a time (rows narrower than P:
 * one pixel at a time, stored by NARROW_STORE). When out_w is not a multiple of P the last
 * block is moved back to end at the row's end: it recomputes (the same values) up to
 * P - 1 pixels, which costs less than one-pixel blocks, whose NB accumulator chains leave
 * the FMA units waiting on latency. */
#define CHANNEL_BLOCK(P, NB, V, L, STORE, NARROW_STORE)                                    \
    do {                                                                               \
        if (out_w >= P) {                                                              \
            for (ptrdiff_t ow = 0;; ow += P) {                                         \
                if (ow + P > out_w) ow = out_w - P;                                    \
                BLOCK_BODY(P, NB, V, L, STORE);                                        \
                if (ow + P == out_w) break;                                            \
            }                                                                          \
        } else {                                                                       \
            for (ptrdiff_t ow = 0; ow < out_w; ow++)                                   \
                BLOCK_BODY(1, NB, V, L, NARROW_STORE);                                 \
        }                                                                              \
    } while (0)

TARGET static void ROW_FN(const REAL* x_row, const REAL* w, const REAL* bias, REAL* out_row,
                          ptrdiff_t out_w, ptrdiff_t out_c, ptrdiff_t pixel_step,
                          const ptrdiff_t* koff, ptrdiff_t k_total, ptrdiff_t w_stride,
                          ptrdiff_t pix_stride, ptrdiff_t chan_stride)
{
    ptrdiff_t oc = 0;
    if (chan_stride == 1) {
#if P_WIDE > 0
        /* pixels outer here, so a wide out_c (fp64: 2+ blocks of 4 vectors) is still
         * written as one sequential stream (channel blocks outer: 13% slower, fp64
         * 3->64 3x3) */
        const ptrdiff_t wide_end = out_c - out_c % (4 * LANES);
        if (wide_end > 0 && out_w >= P_WIDE) {
            for (ptrdiff_t ow = 0;; ow += P_WIDE) {
                if (ow + P_WIDE > out_w) ow = out_w - P_WIDE;
                for (oc = 0; oc < wide_end; oc += 4 * LANES)
                    BLOCK_BODY(P_WIDE, 4, VEC, LANES, STORE_VECTORS);
                if (ow + P_WIDE == out_w) break;
            }
            oc = wide_end;
        }
        for (; oc + 4 * LANES <= out_c; oc += 4 * LANES)
            CHANNEL_BLOCK(P_WIDE, 4, VEC, LANES, STORE_VECTORS, STORE_VECTORS);
#endif
        for (; oc + 2 * LANES <= out_c; oc += 2 * LANES)
            CHANNEL_BLOCK(P_PAIR, 2, VEC, LANES, STORE_VECTORS, STORE_VECTORS);
        for (; oc + LANES <= out_c; oc += LANES)
            CHANNEL_BLOCK(P_ONE, 1, VEC, LANES, STORE_VECTORS, STORE_VECTORS);
#ifdef HALF_VEC
        for (; oc + HALF_LANES <= out_c; oc += HALF_LANES)
            CHANNEL_BLOCK(P_ONE, 1, HALF_VEC, HALF_LANES, STORE_VECTORS, STORE_VECTORS);
#endif
#ifdef QUARTER_VEC
        for (; oc + QUARTER_LANES <= out_c; oc += QUARTER_LANES)
            CHANNEL_BLOCK(P_ONE, 1, QUARTER_VEC, QUARTER_LANES, STORE_VECTORS, STORE_VECTORS);
#endif
    } else if (pix_stride == 1) {
        if (out_w >= LANES) {
            for (; oc + NB_FIRST * LANES <= out_c; oc += NB_FIRST * LANES)
                CHANNEL_BLOCK(LANES, NB_FIRST, VEC, LANES, STORE_TRANSPOSED, STORE_TILE);
            for (; oc + LANES <= out_c; oc += LANES)
                CHANNEL_BLOCK(LANES, 1, VEC, LANES, STORE_TRANSPOSED, STORE_TILE);
        }
#ifdef HALF_VEC
        if (out_w >= HALF_LANES)
            for (; oc + HALF_LANES <= out_c; oc += HALF_LANES)
                CHANNEL_BLOCK(HALF_LANES, 1, HALF_VEC, HALF_LANES, STORE_TRANSPOSED, STORE_TILE);
#endif
    }
    /* what is left: narrow rows or strided output, and the last channels */
    for (; oc + LANES <= out_c; oc += LANES)
        CHANNEL_BLOCK(P_ONE, 1, VEC, LANES, STORE_TILE, STORE_TILE);
#ifdef HALF_VEC
    for (; oc + HALF_LANES <= out_c; oc += HALF_LANES)
        CHANNEL_BLOCK(P_ONE, 1, HALF_VEC, HALF_LANES, STORE_TILE, STORE_TILE);
#endif
#ifdef QUARTER_VEC
    for (; oc + QUARTER_LANES <= out_c; oc += QUARTER_LANES)
        CHANNEL_BLOCK(P_ONE, 1, QUARTER_VEC, QUARTER_LANES, STORE_TILE, STORE_TILE);
#endif
    /* (1 to 3 channels: scalar) */
    for (; oc < out_c; oc++) CHANNEL_BLOCK(P_ONE, 1, REAL, 1, STORE_TILE, STORE_TILE);
}

/* Depthwise conv (groups == C_in == C_out): output channel c reads input channel c only,
 * so the reduction runs over the taps alone and the vectors run along the channels: P
 * pixels x NB vectors of channels stay in registers over the taps, each multiply-add
 * reading an input vector and a weight vector (no broadcast, unlike ROW_FN). Output
 * channels-last; (pixel p, channel c) at out_row[p * channels + c]. The taps are a list
 * (the ones a row or pixel reads, padding skipped): toff[t], the offset of the t-th from
 * a pixel's first input element, and wtap[t], its row of the (all taps x channels)
 * weights. */
#define DW_BODY(P, NB, V, L)                                                               \
    do {                                                                               \
        const REAL* x_pix = x_row + ow * pixel_step + c;                               \
        V acc[P][NB];                                                                  \
        for (int b = 0; b < NB; b++) {                                                 \
            V bv = FASTDL_LOADV(V, bias + c + b * L);                                  \
            for (int p = 0; p < P; p++) acc[p][b] = bv;                                \
        }                                                                              \
        for (ptrdiff_t t = 0; t < taps; t++) {                                         \
            V wv[NB];                                                                  \
            const REAL* wt = w + wtap[t] * channels + c;                                \
            for (int b = 0; b < NB; b++) wv[b] = FASTDL_LOADV(V, wt + b * L);          \
            const REAL* xt = x_pix + toff[t];                                          \
            for (int p = 0; p < P; p++)                                                \
                for (int b = 0; b < NB; b++)                                           \
                    acc[p][b] += FASTDL_LOADV(V, xt + p * pixel_step + b * L) * wv[b]; \
        }                                                                              \
        for (int p = 0; p < P; p++)                                                    \
            for (int b = 0; b < NB; b++)                                               \
                FASTDL_STOREV(V, out_row + (ow + p) * channels + c + b * L, acc[p][b]); \
    } while (0)

/* P pixels from ow, every channel: vector blocks, then narrower ones, then scalars */
#define DW_CHANNELS(P)                                                                     \
    do {                                                                               \
        ptrdiff_t c = 0;                                                               \
        for (; c + 2 * LANES <= channels; c += 2 * LANES) DW_BODY(P, 2, VEC, LANES);   \
        for (; c + LANES <= channels; c += LANES) DW_BODY(P, 1, VEC, LANES);           \
        DW_HALF(P);                                                                    \
        DW_QUARTER(P);                                                                 \
        for (; c < channels; c++) DW_BODY(P, 1, REAL, 1);                              \
    } while (0)
#ifdef HALF_VEC
#define DW_HALF(P) for (; c + HALF_LANES <= channels; c += HALF_LANES) DW_BODY(P, 1, HALF_VEC, HALF_LANES)
#else
#define DW_HALF(P)
#endif
#ifdef QUARTER_VEC
#define DW_QUARTER(P)                                                                      \
    for (; c + QUARTER_LANES <= channels; c += QUARTER_LANES)                          \
        DW_BODY(P, 1, QUARTER_VEC, QUARTER_LANES)
#else
#define DW_QUARTER(P)
#endif

/* 32 vector registers (AVX-512): 8 pixels x 2 vectors; else 4 x 2 */
#if P_WIDE > 0
#define DW_P 8
#else
#define DW_P 4
#endif

/* Pixel blocks outer, channels inner: a block's input pixels stay in L1 for all its
 * channels (channels outer over the whole row: 8x56x56x64 fp32, one thread, 0.90 ms
 * against ...). The last block is moved back to end at the row's end, as in ROW_FN. */
TARGET static void DEPTHWISE_FN(const REAL* x_row, const REAL* w, const REAL* bias,
                                REAL* out_row, ptrdiff_t out_w, ptrdiff_t channels,
                                ptrdiff_t pixel_step, const ptrdiff_t* toff,
                                const ptrdiff_t* wtap, ptrdiff_t taps)
{
    if (out_w >= DW_P) {
        for (ptrdiff_t ow = 0;; ow += DW_P) {
            if (ow + DW_P > out_w) ow = out_w - DW_P;
            DW_CHANNELS(DW_P);
            if (ow + DW_P == out_w) break;
        }
    } else {
        for (ptrdiff_t ow = 0; ow < out_w; ow++) DW_CHANNELS(1);
    }
}

#undef DW_BODY
#undef DW_CHANNELS
#undef DW_HALF
#undef DW_QUARTER
#undef DW_P

/* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: L x L tiles
 * loaded as L vectors, transposed in registers by the rounds above and stored as L vectors.
 * A dimension that is not a multiple of L ends with a tile moved back to end at its end
 * (it rewrites a few values with the same values: a copy, src and dst never overlap); only
 * dimensions shorter than L are copied value by value. L is the half vector where there is
 * one (AVX-512: 8 x 8 fp32, as numba's): a tile's L loads (or stores) hit L channel planes
 * whose addresses often share their L1 set (a plane a multiple of 4 KB: conv1d 1024, conv3d
 * 16x56x56), and 16 such lines overflow the set (one thread, 32x16x56x56 fp32
 * to_channels_last: 0.34 ms with 8 x 8 tiles, 0.54 with 16 x 16). */
#ifdef HALF_VEC
#define TILE_VEC HALF_VEC
#define TILE_LANES HALF_LANES
#else
#define TILE_VEC VEC
#define TILE_LANES LANES
#endif
TARGET static void TRANSPOSE_FN(const REAL* src, ptrdiff_t src_stride, REAL* dst,
                                ptrdiff_t dst_stride, ptrdiff_t rows, ptrdiff_t cols)
{
    if (rows < TILE_LANES || cols < TILE_LANES) {
        /* (few channels, e.g. a 3-channel image) one destination row at a time */
        for (ptrdiff_t j = 0; j < cols; j++) {
            REAL* restrict dst_row = dst + j * dst_stride;
            const REAL* restrict src_col = src + j;
            for (ptrdiff_t i = 0; i < rows; i++) dst_row[i] = src_col[i * src_stride];
        }
        return;
    }
    /* the side whose rows are far apart (channel planes) is walked along its rows in the
     * inner loop: each of the L unrolled loads or stores then streams through one plane
     * (the hardware prefetchers follow it), rather than all planes stepping together */
    const int rows_outer = src_stride > dst_stride;
    const ptrdiff_t outer_n = rows_outer ? rows : cols, inner_n = rows_outer ? cols : rows;
    for (ptrdiff_t a0 = 0;; a0 += TILE_LANES) {
        if (a0 + TILE_LANES > outer_n) a0 = outer_n - TILE_LANES;
        for (ptrdiff_t b0 = 0;; b0 += TILE_LANES) {
            if (b0 + TILE_LANES > inner_n) b0 = inner_n - TILE_LANES;
            const ptrdiff_t i0 = rows_outer ? a0 : b0, j0 = rows_outer ? b0 : a0;
            TILE_VEC acc[TILE_LANES][1];
            for (int i = 0; i < TILE_LANES; i++)
                acc[i][0] = FASTDL_LOADV(TILE_VEC, src + (i0 + i) * src_stride + j0);
            TRANSPOSE_ROUND(TILE_VEC, TILE_LANES, 0, 8)
            TRANSPOSE_ROUND(TILE_VEC, TILE_LANES, 0, 4)
            TRANSPOSE_ROUND(TILE_VEC, TILE_LANES, 0, 2)
            TRANSPOSE_ROUND(TILE_VEC, TILE_LANES, 0, 1)
            for (int j = 0; j < TILE_LANES; j++)
                FASTDL_STOREV(TILE_VEC, dst + (j0 + j) * dst_stride + i0, acc[j][0]);
            if (b0 + TILE_LANES == inner_n) break;
        }
        if (a0 + TILE_LANES == outer_n) break;
    }
}

#undef TILE_VEC
#undef TILE_LANES
#undef BLOCK_BODY
#undef STORE_VECTORS
#undef STORE_TILE
#undef SWAP_LO
#undef SWAP_HI
#undef LANE_LIST
#undef LANE_LIST_
#undef LANE_LIST_2
#undef LANE_LIST_4
#undef LANE_LIST_8
#undef LANE_LIST_16
#undef SHUFFLE2
#undef TRANSPOSE_ROUND
#undef STORE_TRANSPOSED
#undef CHANNEL_BLOCK

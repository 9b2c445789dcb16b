/* One build of the batch-norm loops (see norm_simd.h). Parameters, #defined by the
 * includer: REAL (float/double), LOAD4 (four REAL at a pointer, as a float64 vector),
 * VEC (a 32-byte vector of REAL), LANES (REAL per VEC), NAME(loop) (this build's
 * function name), TARGET (empty, or a target("...") attribute). */

/* sums[0] = sum of (x[i] - shift), sums[1] = sum of (x[i] - shift)^2, in float64.
 * Four independent vector accumulators: one would leave the loop waiting on the add
 * latency instead of on memory. */
TARGET static void NAME(shifted_sums)(const REAL* x, ptrdiff_t n, double shift, double* sums)
{
    const fastdl_f64x4 shift_v = {shift, shift, shift, shift};
    fastdl_f64x4 s1[4] = {{0}}, s2[4] = {{0}};
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 4; k++) {
            fastdl_f64x4 d = LOAD4(x + i + 4 * k) - shift_v;
            s1[k] += d;
            s2[k] += d * d;
        }
    fastdl_f64x4 v1 = (s1[0] + s1[1]) + (s1[2] + s1[3]);
    fastdl_f64x4 v2 = (s2[0] + s2[1]) + (s2[2] + s2[3]);
    double sum1 = (v1[0] + v1[1]) + (v1[2] + v1[3]);
    double sum2 = (v2[0] + v2[1]) + (v2[2] + v2[3]);
    for (; i < n; i++) {
        double d = (double)x[i] - shift;
        sum1 += d;
        sum2 += d * d;
    }
    sums[0] = sum1;
    sums[1] = sum2;
}

/* Over rows 0..rows-1 of an (rows, row_stride) matrix, per column w < width (at most
 * the caller's tile): shift[w] = x[0, w], sum1[w] / sum2[w] = sums of x[r, w] - shift[w]
 * and of its square. */
TARGET static void NAME(column_sums)(const REAL* x, ptrdiff_t row_stride, ptrdiff_t rows,
                                     ptrdiff_t width, double* shift, double* sum1,
                                     double* sum2)
{
    /* Measured (AMD EPYC, 200704 x 64): float32 gains from two rows per step (half the
     * accumulator loads and stores, 3.2 vs 4.7 ms); float64 runs 2.9x slower that way
     * (11.9 vs 4.0 ms), so it takes one row per step. */
    const int rows_per_step = sizeof(REAL) == sizeof(float) ? 2 : 1;
    const ptrdiff_t vector_width = width - width % 4;
    ptrdiff_t r = 0;
    for (ptrdiff_t w = 0; w < width; w++) {
        shift[w] = (double)x[w];
        sum1[w] = 0.0;
        sum2[w] = 0.0;
    }
    if (rows_per_step == 2) {
        for (; r + 1 < rows; r += 2) {
            const REAL* row = x + r * row_stride;
            const REAL* next_row = row + row_stride;
            for (ptrdiff_t w = 0; w < vector_width; w += 4) {
                fastdl_f64x4 sh = FASTDL_NORM_LOAD4_F64(shift + w);
                fastdl_f64x4 d = LOAD4(row + w) - sh;
                fastdl_f64x4 e = LOAD4(next_row + w) - sh;
                FASTDL_NORM_STORE4(sum1 + w, FASTDL_NORM_LOAD4_F64(sum1 + w) + (d + e));
                FASTDL_NORM_STORE4(sum2 + w,
                                   FASTDL_NORM_LOAD4_F64(sum2 + w) + (d * d + e * e));
            }
            for (ptrdiff_t w = vector_width; w < width; w++) {
                double d = (double)row[w] - shift[w];
                double e = (double)next_row[w] - shift[w];
                sum1[w] += d + e;
                sum2[w] += d * d + e * e;
            }
        }
    }
    for (; r < rows; r++) {
        const REAL* row = x + r * row_stride;
        for (ptrdiff_t w = 0; w < vector_width; w += 4) {
            fastdl_f64x4 d = LOAD4(row + w) - FASTDL_NORM_LOAD4_F64(shift + w);
            FASTDL_NORM_STORE4(sum1 + w, FASTDL_NORM_LOAD4_F64(sum1 + w) + d);
            FASTDL_NORM_STORE4(sum2 + w, FASTDL_NORM_LOAD4_F64(sum2 + w) + d * d);
        }
        for (ptrdiff_t w = vector_width; w < width; w++) {
            double d = (double)row[w] - shift[w];
            sum1[w] += d;
            sum2[w] += d * d;
        }
    }
}

/* The scale/shift loops walk the output from its end (see fastdl/_numba/norm.py: a new
 * output array takes its page faults here, and walking down finds more of each newly
 * zeroed page still in cache; 5-7 ms instead of 8-9 for 51 MB). */

/* out[i] = (x[i] - center) * scale + shift, i from n-1 down to 0 */
TARGET static void NAME(affine)(const REAL* restrict x, REAL* restrict out, ptrdiff_t n,
                                REAL center, REAL scale, REAL shift)
{
    const VEC center_v = center - (VEC){0}, scale_v = scale - (VEC){0};
    const VEC shift_v = shift - (VEC){0};
    ptrdiff_t i = n;
    for (; i >= LANES; i -= LANES) {
        VEC v = FASTDL_LOADV(VEC, x + i - LANES);
        FASTDL_STOREV(VEC, out + i - LANES, (v - center_v) * scale_v + shift_v);
    }
    for (; i > 0; i--)
        out[i - 1] = (x[i - 1] - center) * scale + shift;
}

/* out[r, w] = (x[r, w] - center[w]) * scale[w] + shift[w] on contiguous (rows, width),
 * rows from the last down to the first, each row in runs of FASTDL_NORM_RUN_BYTES, the
 * last run first, each run ascending (as fastdl/_numba/norm.py: descending rows read
 * ascending in one piece ran 3x slower once a row exceeded 256 bytes). */
TARGET static void NAME(affine_columns)(const REAL* restrict x, REAL* restrict out,
                                        ptrdiff_t rows, ptrdiff_t width,
                                        const REAL* restrict center,
                                        const REAL* restrict scale,
                                        const REAL* restrict shift)
{
    const ptrdiff_t run = FASTDL_NORM_RUN_BYTES / sizeof(REAL);
    const ptrdiff_t runs = (width + run - 1) / run;
    for (ptrdiff_t r = rows - 1; r >= 0; r--) {
        const REAL* restrict row = x + r * width;
        REAL* restrict out_row = out + r * width;
        for (ptrdiff_t q = runs - 1; q >= 0; q--) {
            const ptrdiff_t w1 = (q + 1) * run < width ? (q + 1) * run : width;
            for (ptrdiff_t w = q * run; w < w1; w++)
                out_row[w] = (row[w] - center[w]) * scale[w] + shift[w];
        }
    }
}

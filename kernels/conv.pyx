# Cython conv kernels: channels-last, OpenMP-parallel over output tiles; the SMALL path
# (kernels/conv_small.h) also writes channels-first output directly.
# Same contract and the same five algorithms (SMALL, DEPTHWISE, DIRECT, SHIFTED, IM2COL)
# as fastdl/_numba/conv.py; the SMALL and DEPTHWISE rows are C (kernels/conv_small_body.h).
# The path, thread count and tile size come from fastdl/_conv_plan.py (one rule for both
# backends). The Python wrapper (fastdl/conv.py) has already validated every shape, so no
# bounds are checked here.
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from cython.parallel cimport parallel, prange, threadid

import numpy as np

cdef extern from "conv_small.h" nogil:
    int fastdl_conv_small_best_isa()
    void fastdl_conv_small_row_f32(int isa, const float* x_row, const float* w,
                                   const float* bias, float* out_row, Py_ssize_t out_w,
                                   Py_ssize_t out_c, Py_ssize_t pixel_step,
                                   const Py_ssize_t* koff, Py_ssize_t k_total,
                                   Py_ssize_t w_stride, Py_ssize_t pix_stride,
                                   Py_ssize_t chan_stride)
    void fastdl_conv_small_row_f64(int isa, const double* x_row, const double* w,
                                   const double* bias, double* out_row, Py_ssize_t out_w,
                                   Py_ssize_t out_c, Py_ssize_t pixel_step,
                                   const Py_ssize_t* koff, Py_ssize_t k_total,
                                   Py_ssize_t w_stride, Py_ssize_t pix_stride,
                                   Py_ssize_t chan_stride)
    void fastdl_conv_depthwise_row_f32(int isa, const float* x_row, const float* w,
                                       const float* bias, float* out_row, Py_ssize_t out_w,
                                       Py_ssize_t channels, Py_ssize_t pixel_step,
                                       const Py_ssize_t* toff, const Py_ssize_t* wtap,
                                       Py_ssize_t taps)
    void fastdl_conv_depthwise_row_f64(int isa, const double* x_row, const double* w,
                                       const double* bias, double* out_row, Py_ssize_t out_w,
                                       Py_ssize_t channels, Py_ssize_t pixel_step,
                                       const Py_ssize_t* toff, const Py_ssize_t* wtap,
                                       Py_ssize_t taps)
    void fastdl_transpose_f32(int isa, const float* src, Py_ssize_t src_stride, float* dst,
                              Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols)
    void fastdl_transpose_f64(int isa, const double* src, Py_ssize_t src_stride, double* dst,
                              Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t cols)

# The SMALL kernel is compiled generic, for AVX2+FMA and for AVX-512 (kernels/conv_small.h);
# the best this CPU runs, checked once. Index into SMALL_BUILDS.
SMALL_BUILDS = ("generic", "avx2", "avx512")
cdef int _best_small_isa = fastdl_conv_small_best_isa()
cdef int _small_isa = _best_small_isa


def _small_kernel_build(build=None):
    """Return the name of the build the SMALL path runs (one of SMALL_BUILDS); set it with
    build (tests run every build this way). Setting a build this CPU cannot run raises
    ValueError."""
    global _small_isa
    if build is not None:
        isa = SMALL_BUILDS.index(build)
        if isa > _best_small_isa:
            raise ValueError(f"this CPU cannot run the {build} build of the SMALL kernel")
        _small_isa = isa
    return SMALL_BUILDS[_small_isa]


def _small_builds_available():
    """The SMALL kernel builds this CPU can run."""
    return SMALL_BUILDS[:_best_small_isa + 1]

from fastdl import _conv_plan

ctypedef fused real:
    float
    double

# scipy's BLAS (scipy.linalg.cython_blas), loaded on the first GEMM-path call rather than
# by a module-level cimport: importing scipy.linalg costs ~0.13 s, and the SMALL and
# DIRECT paths (the exams' layers, small inputs) never call BLAS.
ctypedef void (*sgemm_fn)(char* transa, char* transb, int* m, int* n, int* k,
                          float* alpha, float* a, int* lda, float* b, int* ldb,
                          float* beta, float* c, int* ldc) noexcept nogil
ctypedef void (*dgemm_fn)(char* transa, char* transb, int* m, int* n, int* k,
                          double* alpha, double* a, int* lda, double* b, int* ldb,
                          double* beta, double* c, int* ldc) noexcept nogil
cdef sgemm_fn sgemm = NULL
cdef dgemm_fn dgemm = NULL


cdef void _load_blas() except *:
    global sgemm, dgemm
    if sgemm != NULL:
        return
    from scipy.linalg import cython_blas
    capsules = cython_blas.__pyx_capi__
    dgemm = <dgemm_fn>PyCapsule_GetPointer(capsules["dgemm"], PyCapsule_GetName(capsules["dgemm"]))
    sgemm = <sgemm_fn>PyCapsule_GetPointer(capsules["sgemm"], PyCapsule_GetName(capsules["sgemm"]))


cdef inline void _gemm(int m, int n, int k, const real* a, int lda, const real* b, int ldb,
                       real beta, real* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = A[m, k] @ B[k, n] + beta * C. BLAS is column-major, where a
    row-major matrix is its own transpose, so compute C^T = B^T A^T."""
    cdef char no_trans = b'N'
    cdef real one = 1
    if real is float:
        sgemm(&no_trans, &no_trans, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda,
              &beta, <float*>c, &ldc)
    else:
        dgemm(&no_trans, &no_trans, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda,
              &beta, <double*>c, &ldc)


cdef inline void _small_row(int isa, const real* x_row, const real* w, const real* bias,
                            real* out_row, Py_ssize_t out_w, Py_ssize_t out_c,
                            Py_ssize_t pixel_step, const Py_ssize_t* koff, Py_ssize_t k_total,
                            Py_ssize_t w_stride, Py_ssize_t pix_stride,
                            Py_ssize_t chan_stride) noexcept nogil:
    """kernels/conv_small.h's row kernel for this dtype."""
    if real is float:
        fastdl_conv_small_row_f32(isa, x_row, w, bias, out_row, out_w, out_c, pixel_step,
                                  koff, k_total, w_stride, pix_stride, chan_stride)
    else:
        fastdl_conv_small_row_f64(isa, x_row, w, bias, out_row, out_w, out_c, pixel_step,
                                  koff, k_total, w_stride, pix_stride, chan_stride)


cdef inline void _depthwise_row(int isa, const real* x_row, const real* w, const real* bias,
                                real* out_row, Py_ssize_t out_w, Py_ssize_t channels,
                                Py_ssize_t pixel_step, const Py_ssize_t* toff,
                                const Py_ssize_t* wtap, Py_ssize_t taps) noexcept nogil:
    """kernels/conv_small.h's depthwise row kernel for this dtype."""
    if real is float:
        fastdl_conv_depthwise_row_f32(isa, x_row, w, bias, out_row, out_w, channels,
                                      pixel_step, toff, wtap, taps)
    else:
        fastdl_conv_depthwise_row_f64(isa, x_row, w, bias, out_row, out_w, channels,
                                      pixel_step, toff, wtap, taps)


cdef inline void _transpose(int isa, const real* src, Py_ssize_t src_stride, real* dst,
                            Py_ssize_t dst_stride, Py_ssize_t rows,
                            Py_ssize_t cols) noexcept nogil:
    """kernels/conv_small.h's in-register transpose for this dtype: dst[c, r] = src[r, c]."""
    if real is float:
        fastdl_transpose_f32(isa, src, src_stride, dst, dst_stride, rows, cols)
    else:
        fastdl_transpose_f64(isa, src, src_stride, dst, dst_stride, rows, cols)


cdef inline void _direct_row(const real* xp, const real* w, const real* bias, real* out,
                             Py_ssize_t n, Py_ssize_t od, Py_ssize_t oh,
                             Py_ssize_t in_d, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                             Py_ssize_t out_w, Py_ssize_t out_c,
                             Py_ssize_t k_d, Py_ssize_t k_h, Py_ssize_t k_w, Py_ssize_t c_per_group,
                             Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t dd, Py_ssize_t dh, Py_ssize_t dw,
                             Py_ssize_t groups) noexcept nogil:
    """DIRECT path: one output row, inner loop over output channels (contiguous)."""
    cdef Py_ssize_t o_per_group = out_c // groups
    cdef Py_ssize_t ow, kd, kh, kw, g, c, o, o_end
    cdef real* acc
    cdef const real* pixel
    cdef const real* tap
    cdef real v
    for ow in range(out_w):
        acc = out + ow * out_c
        for o in range(out_c):
            acc[o] = bias[o]
        for kd in range(k_d):
            for kh in range(k_h):
                for kw in range(k_w):
                    pixel = xp + (((n * in_d + od * sd + kd * dd) * in_h
                                   + oh * sh + kh * dh) * in_w + ow * sw + kw * dw) * in_c
                    tap = w + ((kd * k_h + kh) * k_w + kw) * c_per_group * out_c
                    if o_per_group == 1:
                        # depthwise-like: output o reads input channel o * c_per_group + c
                        for c in range(c_per_group):
                            for o in range(out_c):
                                acc[o] += pixel[o * c_per_group + c] * tap[c * out_c + o]
                        continue
                    for g in range(groups):
                        o_end = (g + 1) * o_per_group
                        for c in range(c_per_group):
                            v = pixel[g * c_per_group + c]
                            for o in range(g * o_per_group, o_end):
                                acc[o] += v * tap[c * out_c + o]


cdef inline void _shifted_tile(const real* x_plane, const real* w, const real* bias,
                               real* out_plane, real* buf, Py_ssize_t p0, Py_ssize_t rows,
                               Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                               Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t out_c,
                               Py_ssize_t k_d, Py_ssize_t k_h, Py_ssize_t k_w,
                               Py_ssize_t c_per_group, Py_ssize_t dd, Py_ssize_t dh,
                               Py_ssize_t dw, Py_ssize_t groups) noexcept nogil:
    """SHIFTED path: grid positions p0 .. p0+rows of the (n, od) plane that starts at
    x_plane (input) and out_plane (output). Grid position p
    is (oh, ow) = divmod(p, in_w); for tap (kd, kh, kw) its input pixel is the flattened
    padded grid shifted by ((kd*dd)*in_h + kh*dh)*in_w + kw*dw, so each tap is one GEMM
    on a contiguous run of pixels (lda = in_c)."""
    cdef Py_ssize_t o_per_group = out_c // groups
    cdef Py_ssize_t kd, kh, kw, g, p, o, oh, ow, tap
    cdef const real* a
    cdef real beta
    cdef real* dst
    cdef real* src
    for kd in range(k_d):
        for kh in range(k_h):
            for kw in range(k_w):
                tap = (kd * k_h + kh) * k_w + kw
                a = x_plane + (((kd * dd) * in_h + kh * dh) * in_w + kw * dw + p0) * in_c
                beta = 0 if tap == 0 else 1
                for g in range(groups):
                    _gemm(<int>rows, <int>o_per_group, <int>c_per_group,
                          a + g * c_per_group, <int>in_c,
                          w + tap * c_per_group * out_c + g * o_per_group, <int>out_c,
                          beta, buf + g * o_per_group, <int>out_c)
    # Copy the valid grid positions (not the padding columns) out, adding the bias.
    for p in range(p0, p0 + rows):
        oh = p // in_w
        ow = p - oh * in_w
        if ow < out_w:
            dst = out_plane + (oh * out_w + ow) * out_c
            src = buf + (p - p0) * out_c
            for o in range(out_c):
                dst[o] = src[o] + bias[o]


cdef inline void _im2col_tile(const real* xp, const real* w, const real* bias, real* out,
                              real* patches, Py_ssize_t q0, Py_ssize_t rows,
                              Py_ssize_t in_d, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                              Py_ssize_t out_d, Py_ssize_t out_h, Py_ssize_t out_w,
                              Py_ssize_t out_c, Py_ssize_t k_d, Py_ssize_t k_h, Py_ssize_t k_w,
                              Py_ssize_t c_per_group, Py_ssize_t sd, Py_ssize_t sh,
                              Py_ssize_t sw, Py_ssize_t dd, Py_ssize_t dh, Py_ssize_t dw,
                              Py_ssize_t groups) noexcept nogil:
    """IM2COL path: output pixels q0 .. q0+rows (flat over n, od, oh, ow), one group at a
    time: gather their (tap, channel) patches, then one GEMM straight into out."""
    cdef Py_ssize_t o_per_group = out_c // groups
    cdef Py_ssize_t k_total = k_d * k_h * k_w * c_per_group
    # With groups == 1 and dw == 1 a kernel row's k_w taps are one contiguous run of
    # k_w * in_c input values: copy it in one loop.
    cdef bint one_run = groups == 1 and dw == 1
    cdef Py_ssize_t runs = 1 if one_run else k_w
    cdef Py_ssize_t run_len = k_w * c_per_group if one_run else c_per_group
    cdef Py_ssize_t g, q, o, c, kd, kh, kw, n, od, oh, ow, rest
    cdef const real* pixel
    cdef real* row
    for q in range(q0, q0 + rows):
        row = out + q * out_c
        for o in range(out_c):
            row[o] = bias[o]
    for g in range(groups):
        # (n, od, oh, ow) of pixel q0, then stepped along (no divisions per pixel)
        ow = q0 % out_w
        rest = q0 // out_w
        oh = rest % out_h
        rest = rest // out_h
        od = rest % out_d
        n = rest // out_d
        for q in range(q0, q0 + rows):
            row = patches + (q - q0) * k_total
            for kd in range(k_d):
                for kh in range(k_h):
                    pixel = xp + (((n * in_d + od * sd + kd * dd) * in_h + oh * sh + kh * dh)
                                  * in_w + ow * sw) * in_c + g * c_per_group
                    for kw in range(runs):
                        for c in range(run_len):
                            row[c] = pixel[kw * dw * in_c + c]
                        row += run_len
            ow = ow + 1
            if ow == out_w:
                ow = 0
                oh = oh + 1
                if oh == out_h:
                    oh = 0
                    od = od + 1
                    if od == out_d:
                        od = 0
                        n = n + 1
        _gemm(<int>rows, <int>o_per_group, <int>k_total, patches, <int>k_total,
              w + g * o_per_group, <int>out_c, 1, out + q0 * out_c + g * o_per_group,
              <int>out_c)


def conv_ndhwc(const real[:, :, :, :, ::1] xp not None,
               const real[:, :, :, :, ::1] w not None,
               const real[::1] bias not None,
               real[:, :, :, :, ::1] out not None,
               tuple stride, tuple dilation, Py_ssize_t groups, int num_threads,
               bint channels_first_out=False, bint channels_first_in=False,
               tuple pads=(0, 0, 0)):
    """out[n, od, oh, ow, :] = bias + sum over taps and channels; xp is already padded,
    but by pads = (front, top, left) on the DEPTHWISE path, whose kernel skips the taps
    in that padding (ValueError on another path; the back, bottom and right padding
    follow from out's shape). channels_first_out: out is (N, C_out, D, H, W) instead,
    written by the SMALL kernel directly; channels_first_in: xp is (N, C_in, D, H, W),
    read by the SMALL kernel directly (SMALL path only, see conv.py; ValueError on any
    other path)."""
    cdef Py_ssize_t sd = stride[0], sh = stride[1], sw = stride[2]
    cdef Py_ssize_t dd = dilation[0], dh = dilation[1], dw = dilation[2]
    # channels-first arrays are (N, C, D, H, W): read their sizes in channels-last order
    cdef int c_axis = 1 if channels_first_out else 4
    cdef int d_axis = 2 if channels_first_out else 1
    cdef Py_ssize_t n_batch = out.shape[0], out_c = out.shape[c_axis]
    cdef Py_ssize_t out_d = out.shape[d_axis], out_h = out.shape[d_axis + 1]
    cdef Py_ssize_t out_w = out.shape[d_axis + 2]
    c_axis = 1 if channels_first_in else 4
    d_axis = 2 if channels_first_in else 1
    cdef Py_ssize_t in_d = xp.shape[d_axis], in_h = xp.shape[d_axis + 1]
    cdef Py_ssize_t in_w = xp.shape[d_axis + 2], in_c = xp.shape[c_axis]
    cdef Py_ssize_t k_d = w.shape[0], k_h = w.shape[1], k_w = w.shape[2], c_per_group = w.shape[3]
    cdef Py_ssize_t k_total = k_d * k_h * k_w * c_per_group
    cdef Py_ssize_t rows = n_batch * out_d * out_h, row, n, od, oh
    cdef Py_ssize_t plane_len, tiles_per_plane, n_tiles, tile, plane, p0, q0, pixels
    cdef const real* xp_ptr = &xp[0, 0, 0, 0, 0]
    cdef const real* w_ptr = &w[0, 0, 0, 0, 0]
    cdef const real* b_ptr = &bias[0]
    cdef real* out_ptr = &out[0, 0, 0, 0, 0]
    cdef real* buf
    cdef int path, threads
    cdef Py_ssize_t tile_rows
    cdef bint limit_blas
    path, threads, tile_rows, limit_blas = _conv_plan.choose(
        (n_batch, out_d, out_h, out_w, out_c), (k_d, k_h, k_w, c_per_group, out_c), stride, groups, num_threads, sizeof(real))
    if (channels_first_out or channels_first_in) and path != _conv_plan.SMALL:
        raise ValueError("channels-first input or output is only supported on the SMALL path")
    if any(pads) and path != _conv_plan.DEPTHWISE:
        raise ValueError("padding in the kernel is only supported on the DEPTHWISE path")

    cdef const Py_ssize_t[::1] koff
    cdef const Py_ssize_t* koff_ptr
    cdef const real* x_row
    cdef real* out_row
    cdef Py_ssize_t pix_stride, chan_stride, tile_w, o_per_group, g
    cdef Py_ssize_t in_pixel, in_channel, pixel_step
    cdef real[:, ::1] first_tiles
    cdef real* tiles_ptr
    cdef int isa
    if path == _conv_plan.SMALL:
        koff = _conv_plan.reduction_offsets((n_batch, in_d, in_h, in_w, in_c),
                                            (k_d, k_h, k_w, c_per_group, out_c),
                                            dilation, channels_first_in)
        koff_ptr = &koff[0]
        # One task per output row (n, od, oh), as on the DIRECT path; a grouped conv runs
        # the row kernel once per group (input channels g * c_per_group.., weight columns
        # and output channels g * o_per_group.., weight rows still out_c apart). Output
        # row start and strides: channels-last rows are out_w * out_c apart, pixels out_c,
        # channels 1; channels-first rows are out_w apart within an image's channel planes.
        # The input alike: in_pixel and in_channel are its pixel and channel steps.
        in_pixel, in_channel = _conv_plan.input_steps((n_batch, in_d, in_h, in_w, in_c),
                                                      channels_first_in)
        pixel_step = sw * in_pixel
        o_per_group = out_c // groups
        plane = out_d * out_h * out_w
        pix_stride = 1 if channels_first_out else out_c
        chan_stride = plane if channels_first_out else 1
        isa = _small_isa
        if channels_first_out and k_total >= _conv_plan.FIRST_TILE_MIN_REDUCTION:
            # Long reductions: each row is computed channels-last, tile_w pixels at a time,
            # into a per-thread L1 tile and transposed out (the channels-last blocks beat
            # the LANES-pixel ones that write channels-first directly; see _conv_plan).
            tile_w = _conv_plan.first_tile_pixels(out_w, out_c, sizeof(real))
            first_tiles = np.empty((threads, tile_w * out_c), dtype=np.asarray(out).dtype)
            tiles_ptr = &first_tiles[0, 0]
            with nogil, parallel(num_threads=threads):
                buf = tiles_ptr + threadid() * tile_w * out_c
                for row in prange(rows, schedule="static"):
                    n = row // (out_d * out_h)
                    od = (row // out_h) % out_d
                    oh = row % out_h
                    x_row = xp_ptr + n * in_d * in_h * in_w * in_c + (
                        (od * sd * in_h + oh * sh) * in_w) * in_pixel
                    out_row = out_ptr + n * out_c * plane + (row - n * out_d * out_h) * out_w
                    p0 = 0
                    while p0 < out_w:
                        pixels = min(tile_w, out_w - p0)
                        for g in range(groups):
                            _small_row(isa, x_row + p0 * pixel_step + g * c_per_group * in_channel,
                                       w_ptr + g * o_per_group, b_ptr + g * o_per_group,
                                       buf + g * o_per_group, pixels, o_per_group, pixel_step,
                                       koff_ptr, k_total, out_c, out_c, 1)
                        _transpose(isa, buf, out_c, out_row + p0, plane, pixels, out_c)
                        p0 = p0 + tile_w
            return
        for row in prange(rows, nogil=True, num_threads=threads, schedule="static"):
            n = row // (out_d * out_h)
            od = (row // out_h) % out_d
            oh = row % out_h
            x_row = xp_ptr + n * in_d * in_h * in_w * in_c + (
                (od * sd * in_h + oh * sh) * in_w) * in_pixel
            if channels_first_out:
                out_row = out_ptr + n * out_c * plane + (row - n * out_d * out_h) * out_w
            else:
                out_row = out_ptr + row * out_w * out_c
            for g in range(groups):
                _small_row(isa, x_row + g * c_per_group * in_channel, w_ptr + g * o_per_group,
                           b_ptr + g * o_per_group, out_row + g * o_per_group * chan_stride,
                           out_w, o_per_group, pixel_step, koff_ptr, k_total, out_c,
                           pix_stride, chan_stride)
        return

    cdef Py_ssize_t ow_lo, ow_hi, n_edges, e, r
    cdef const Py_ssize_t[::1] edges
    cdef const Py_ssize_t[:, ::1] tap_counts
    cdef const Py_ssize_t[:, :, ::1] toff, wtap
    cdef const real* x_img
    if path == _conv_plan.DEPTHWISE:
        # The taps each output row reads (all, or those outside the padding `pads`), from
        # _conv_plan: the columns whose taps all lie inside the input in one row-kernel
        # call, each edge column in one of its own. Each thread writes only its own rows.
        ow_lo, ow_hi, edges, tap_counts, toff, wtap = _conv_plan.depthwise_taps(
            (n_batch, in_d, in_h, in_w, in_c), (k_d, k_h, k_w, c_per_group, out_c),
            (n_batch, out_d, out_h, out_w, out_c), stride, dilation, pads)
        n_edges = edges.shape[0]
        isa = _small_isa
        for row in prange(rows, nogil=True, num_threads=threads, schedule="static"):
            n = row // (out_d * out_h)
            r = row - n * out_d * out_h
            x_img = xp_ptr + n * in_d * in_h * in_w * in_c
            out_row = out_ptr + row * out_w * out_c
            if ow_hi > ow_lo:
                _depthwise_row(isa, x_img, w_ptr, b_ptr, out_row + ow_lo * out_c,
                               ow_hi - ow_lo, out_c, sw * in_c, &toff[r, 0, 0],
                               &wtap[r, 0, 0], tap_counts[r, 0])
            for e in range(n_edges):
                _depthwise_row(isa, x_img, w_ptr, b_ptr, out_row + edges[e] * out_c, 1, out_c,
                               0, &toff[r, 1 + e, 0], &wtap[r, 1 + e, 0], tap_counts[r, 1 + e])
        return

    if path == _conv_plan.DIRECT:
        # One task per output row (n, od, oh): each thread writes only its own rows.
        for row in prange(rows, nogil=True, num_threads=threads, schedule="static"):
            n = row // (out_d * out_h)
            od = (row // out_h) % out_d
            oh = row % out_h
            _direct_row(xp_ptr, w_ptr, b_ptr, out_ptr + row * out_w * out_c, n, od, oh,
                        in_d, in_h, in_w, in_c, out_w, out_c, k_d, k_h, k_w, c_per_group,
                        sd, sh, sw, dd, dh, dw, groups)
        return

    _load_blas()
    # Per-thread scratch (SHIFTED: a tile of outputs; IM2COL: a tile of patches),
    # allocated here so an allocation failure raises instead of failing in a thread.
    cdef Py_ssize_t width = out_c if path == _conv_plan.SHIFTED else k_total
    cdef real[:, ::1] scratch = np.empty((threads, tile_rows * width), dtype=np.asarray(out).dtype)
    cdef real* scratch_ptr = &scratch[0, 0]
    with _conv_plan.blas_single_threaded(limit_blas):
        if path == _conv_plan.SHIFTED:
            # Tiles of grid positions inside one (n, od) plane; the last output pixel
            # of a plane is at grid position (out_h - 1) * in_w + out_w - 1.
            plane_len = (out_h - 1) * in_w + out_w
            tiles_per_plane = (plane_len + tile_rows - 1) // tile_rows
            n_tiles = n_batch * out_d * tiles_per_plane
            with nogil, parallel(num_threads=threads):
                buf = scratch_ptr + threadid() * tile_rows * width
                for tile in prange(n_tiles, schedule="static"):
                    plane = tile // tiles_per_plane
                    p0 = (tile % tiles_per_plane) * tile_rows
                    n = plane // out_d
                    od = plane % out_d
                    _shifted_tile(xp_ptr + (n * in_d + od) * in_h * in_w * in_c, w_ptr, b_ptr,
                                  out_ptr + plane * out_h * out_w * out_c, buf, p0,
                                  min(tile_rows, plane_len - p0), in_h, in_w, in_c,
                                  out_h, out_w, out_c, k_d, k_h, k_w, c_per_group,
                                  dd, dh, dw, groups)
        else:
            pixels = rows * out_w
            n_tiles = (pixels + tile_rows - 1) // tile_rows
            with nogil, parallel(num_threads=threads):
                buf = scratch_ptr + threadid() * tile_rows * width
                for tile in prange(n_tiles, schedule="static"):
                    q0 = tile * tile_rows
                    _im2col_tile(xp_ptr, w_ptr, b_ptr, out_ptr, buf, q0,
                                 min(tile_rows, pixels - q0), in_d, in_h, in_w, in_c,
                                 out_d, out_h, out_w, out_c, k_d, k_h, k_w, c_per_group,
                                 sd, sh, sw, dd, dh, dw, groups)


# Layout changes for channels-first calls. NumPy's copy of a moveaxis view reads (or
# writes) with a stride of a whole channel plane, one TLB miss per value: 1.6-1.9 ms for
# an 8x64x56x56 float32 batch, ~10x a plain copy. These work on one (n, d, h) input row or
# one block of pixels at a time, so both sides stay in L1, run on all threads and move
# values through the SMALL kernel's in-register transpose (fastdl_transpose_*; a scalar
# loop: 1.7 ms against 0.34 ms for a 32x16x56x56 float32 input, one thread).

cdef enum:
    PIXEL_BLOCK = 64  # pixels per task of to_channels_first (64 * C values in L1)


def to_channels_last(const real[:, :, :, :, ::1] x not None,
                     real[:, :, :, :, ::1] out not None,
                     tuple offsets, int num_threads):
    """out[n, d + od, h + oh, w + ow, c] = x[n, c, d, h, w]; the rest of out (the
    padding) is left as it is. offsets = (od, oh, ow), the leading padding."""
    cdef Py_ssize_t n_batch = x.shape[0], channels = x.shape[1], depth = x.shape[2]
    cdef Py_ssize_t height = x.shape[3], width = x.shape[4]
    cdef Py_ssize_t od = offsets[0], oh = offsets[1], ow = offsets[2]
    cdef Py_ssize_t row, n, d, h
    cdef Py_ssize_t plane = depth * height * width
    cdef int isa = _small_isa
    # one (n, d, h) row per task: a (channels x width) matrix, rows a plane apart,
    # transposed into the (width x channels) row of out
    for row in prange(n_batch * depth * height, nogil=True, num_threads=num_threads,
                      schedule="static"):
        n = row // (depth * height)
        d = (row // height) % depth
        h = row % height
        _transpose(isa, &x[n, 0, d, h, 0], plane, &out[n, d + od, h + oh, ow, 0], channels,
                   channels, width)


def to_channels_first(const real[:, :, ::1] y not None, real[:, :, ::1] out not None,
                      int num_threads):
    """out[n, c, s] = y[n, s, c]: a channels-last result (pixels s) to channels-first."""
    cdef Py_ssize_t n_batch = y.shape[0], pixels = y.shape[1], channels = y.shape[2]
    cdef Py_ssize_t blocks = (pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    cdef Py_ssize_t task, n, s0
    cdef int isa = _small_isa
    for task in prange(n_batch * blocks, nogil=True, num_threads=num_threads,
                       schedule="static"):
        n = task // blocks
        s0 = (task % blocks) * PIXEL_BLOCK
        _transpose(isa, &y[n, s0, 0], channels, &out[n, 0, s0], pixels,
                   min(PIXEL_BLOCK, pixels - s0), channels)

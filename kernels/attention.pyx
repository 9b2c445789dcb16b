# Cython sliding-window attention: scores, masked softmax and value sum fused per output
# row. Same contract and method as fastdl/_numba/attention.py (see there); the Python
# wrapper (fastdl/attention.py) has already validated every shape, so no bounds are
# checked here. Channel norms are folded into per-image keys; each output row is one call
# of a C row function (kernels/attention_rows.h, built generic and for AVX2, picked at
# run time) with the thread's own scratch. Both layouts are read and written in place:
# attention_nhwc and attention_nchw differ only in the strides they pass.
from cython.parallel cimport prange, threadid
from libc.math cimport sqrt

import numpy as np

cdef extern from "simd.h" nogil:
    int fastdl_cpu_has_avx2_fma()

cdef extern from "attention_rows.h" nogil:
    ctypedef struct fastdl_attention_geometry:
        Py_ssize_t in_h, in_w, in_c, out_w, out_c, k_h, k_w, sw, pad_left
        Py_ssize_t x_row_step, x_col_step, x_chan_step, out_col_step, out_chan_step
        const Py_ssize_t* col_ranges
    Py_ssize_t fastdl_attention_scratch_len(const fastdl_attention_geometry* g)
    void fastdl_attention_row_f32(int avx2, const fastdl_attention_geometry* g,
                                  const float* image, const float* keys, const float* value,
                                  float* out_row, float* scratch, Py_ssize_t* slot_holds,
                                  Py_ssize_t image_index, Py_ssize_t top)
    void fastdl_attention_row_f64(int avx2, const fastdl_attention_geometry* g,
                                  const double* image, const double* keys,
                                  const double* value, double* out_row, double* scratch,
                                  Py_ssize_t* slot_holds, Py_ssize_t image_index,
                                  Py_ssize_t top)

# This CPU's choice of row-function build, checked once.
cdef int _avx2 = fastdl_cpu_has_avx2_fma()


def _row_build(use_avx2=None):
    """Return whether the row function runs its AVX2 build; set it with use_avx2 (tests
    run the generic build this way; True only where the CPU supports AVX2+FMA)."""
    global _avx2
    if use_avx2 is not None:
        _avx2 = 1 if use_avx2 and fastdl_cpu_has_avx2_fma() else 0
    return bool(_avx2)


ctypedef fused real:
    float
    double


cdef void _fold_norms(const real* x, const real* key, real* keys, double* sums,
                      Py_ssize_t n_batch, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                      bint channels_first, Py_ssize_t taps, Py_ssize_t out_c,
                      int num_threads) noexcept nogil:
    """keys[n, a, b, c, o] = key[a, b, c, o] / ||x[n, c]|| (a zero channel: key * 0, so it
    stays zero and an inf/NaN key still gives NaN). Squares are summed in float64 into
    ``sums`` (N * in_h * in_c doubles): one partial sum per input row (n, h) and channel
    for channels-last x, so the work splits for any N; one per contiguous channel plane
    for channels-first x."""
    cdef Py_ssize_t row, plane, n, w, c, h, t, o, parts
    cdef double xv, sq, norm
    cdef const real* src
    cdef double* row_sums
    cdef real* dst
    if channels_first:
        parts = 1
        for plane in prange(n_batch * in_c, num_threads=num_threads, schedule="static"):
            src = x + plane * in_h * in_w
            sq = 0
            for w in range(in_h * in_w):
                xv = src[w]
                sq = sq + xv * xv
            sums[plane] = sq
    else:
        parts = in_h
        for row in prange(n_batch * in_h, num_threads=num_threads, schedule="static"):
            row_sums = sums + row * in_c
            for c in range(in_c):
                row_sums[c] = 0
            for w in range(in_w):
                src = x + (row * in_w + w) * in_c
                for c in range(in_c):
                    xv = src[c]
                    row_sums[c] = row_sums[c] + xv * xv
    # sums is (N, parts, C) either way. Serial, as in numba: little work, and on a busy
    # machine every parallel region can wait a scheduler tick for a descheduled thread.
    for n in range(n_batch):
        for c in range(in_c):
            sq = 0
            for h in range(parts):
                sq = sq + sums[(n * parts + h) * in_c + c]
            norm = sqrt(sq)
            for t in range(taps):
                src = key + t * in_c * out_c + c * out_c
                dst = keys + ((n * taps + t) * in_c + c) * out_c
                for o in range(out_c):
                    if norm == 0:
                        dst[o] = <real>(src[o] * 0.0)
                    else:
                        dst[o] = <real>(src[o] / norm)


cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for b > 0 (with cdivision, ``//`` truncates toward zero)."""
    return a // b if a >= 0 else -((-a + b - 1) // b)


cdef _attention(const real[:, :, :, ::1] x, const real[:, :, :, ::1] key,
                const real[:, :, ::1] value, real[:, :, :, ::1] out, tuple stride, tuple pads,
                bint normalize, int num_threads, bint channels_first):
    cdef Py_ssize_t sh = stride[0], pad_top = pads[0]
    cdef Py_ssize_t n_batch = x.shape[0], in_h, in_w, in_c, out_h, out_w, out_c
    if channels_first:
        in_c, in_h, in_w = x.shape[1], x.shape[2], x.shape[3]
        out_c, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    else:
        in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
        out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
    cdef fastdl_attention_geometry g
    g.in_h, g.in_w, g.in_c, g.out_w, g.out_c = in_h, in_w, in_c, out_w, out_c
    g.k_h, g.k_w, g.sw, g.pad_left = key.shape[0], key.shape[1], stride[1], pads[1]
    if channels_first:
        g.x_row_step, g.x_col_step, g.x_chan_step = in_w, 1, in_h * in_w
        g.out_col_step, g.out_chan_step = 1, out_h * out_w
    else:
        g.x_row_step, g.x_col_step, g.x_chan_step = in_w * in_c, in_c, 1
        g.out_col_step, g.out_chan_step = out_c, 1
    cdef Py_ssize_t out_row_step = out_w if channels_first else out_w * out_c
    cdef Py_ssize_t image_len = in_h * in_w * in_c, out_image_len = out_h * out_w * out_c
    cdef Py_ssize_t image_keys = g.k_h * g.k_w * in_c * out_c
    cdef Py_ssize_t scratch_len = fastdl_attention_scratch_len(&g)
    cdef Py_ssize_t row, n, i, b, first, stop
    dtype = np.float32 if real is float else np.float64
    cdef real[:, ::1] scratch = np.empty((num_threads, scratch_len), dtype)
    # each thread's ring tags: which input row its scratch slots hold (none yet)
    cdef Py_ssize_t[:, ::1] slot_holds = np.full((num_threads, g.k_h), -1, np.intp)
    # output columns [first, stop) whose column offset b lands inside the input
    cdef Py_ssize_t[:, ::1] col_ranges = np.empty((g.k_w, 2), np.intp)
    for b in range(g.k_w):
        first = max(0, -_floor_div(b - g.pad_left, g.sw))  # ceil((pad_left - b) / sw)
        stop = min(out_w, _floor_div(in_w - 1 + g.pad_left - b, g.sw) + 1)
        col_ranges[b, 0] = first
        col_ranges[b, 1] = max(first, stop)
    g.col_ranges = &col_ranges[0, 0]
    cdef real[:, :, :, :, ::1] folded
    cdef double[:, ::1] row_sums
    cdef const real* keys_ptr = &key[0, 0, 0, 0]
    cdef Py_ssize_t keys_step = 0
    if normalize:
        folded = np.empty((n_batch, g.k_h, g.k_w, in_c, out_c), dtype)
        row_sums = np.empty((n_batch * in_h, in_c), np.float64)
        with nogil:
            _fold_norms(&x[0, 0, 0, 0], &key[0, 0, 0, 0], &folded[0, 0, 0, 0, 0],
                        &row_sums[0, 0], n_batch, in_h, in_w, in_c, channels_first,
                        g.k_h * g.k_w, out_c, num_threads)
        keys_ptr = &folded[0, 0, 0, 0, 0]
        keys_step = image_keys
    cdef const real* x_ptr = &x[0, 0, 0, 0]
    cdef const real* value_ptr = &value[0, 0, 0]
    cdef real* out_ptr = &out[0, 0, 0, 0]
    cdef real* scratch_ptr = &scratch[0, 0]
    cdef Py_ssize_t* slots_ptr = &slot_holds[0, 0]
    cdef int avx2 = _avx2
    # Blocks of consecutive output rows (the ring of input rows is reused within a block),
    # a few per thread, handed out dynamically so that a thread on a busy core takes
    # fewer; each thread writes only its blocks' rows and its own scratch.
    cdef Py_ssize_t rows = n_batch * out_h, block, tid
    cdef Py_ssize_t num_blocks = min(rows, 4 * num_threads)
    for block in prange(num_blocks, nogil=True, num_threads=num_threads, schedule="dynamic"):
        tid = threadid()
        for row in range(block * rows // num_blocks, (block + 1) * rows // num_blocks):
            n = row // out_h
            i = row - n * out_h
            if real is float:
                fastdl_attention_row_f32(avx2, &g, x_ptr + n * image_len,
                                         keys_ptr + n * keys_step, value_ptr,
                                         out_ptr + n * out_image_len + i * out_row_step,
                                         scratch_ptr + tid * scratch_len,
                                         slots_ptr + tid * g.k_h, n, i * sh - pad_top)
            else:
                fastdl_attention_row_f64(avx2, &g, x_ptr + n * image_len,
                                         keys_ptr + n * keys_step, value_ptr,
                                         out_ptr + n * out_image_len + i * out_row_step,
                                         scratch_ptr + tid * scratch_len,
                                         slots_ptr + tid * g.k_h, n, i * sh - pad_top)


def attention_nhwc(const real[:, :, :, ::1] x not None,
                   const real[:, :, :, ::1] key not None,
                   const real[:, :, ::1] value not None,
                   real[:, :, :, ::1] out not None,
                   tuple stride, tuple pads, bint normalize, int num_threads):
    """out[n, i, j, :] = masked-softmax-weighted values; x (N, H, W, C_in) is unpadded,
    ``pads`` are the (top, left) paddings, whose positions are left out of the softmax;
    key (KH, KW, C_in, C_out), value (KH, KW, C_out)."""
    _attention(x, key, value, out, stride, pads, normalize, num_threads, False)


def attention_nchw(const real[:, :, :, ::1] x not None,
                   const real[:, :, :, ::1] key not None,
                   const real[:, :, ::1] value not None,
                   real[:, :, :, ::1] out not None,
                   tuple stride, tuple pads, bint normalize, int num_threads):
    """attention_nhwc on channels-first x (N, C_in, H, W) and out (N, C_out, Ho, Wo),
    read and written in place; key and value as for attention_nhwc."""
    _attention(x, key, value, out, stride, pads, normalize, num_threads, True)

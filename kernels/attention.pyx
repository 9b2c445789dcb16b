# Cython sliding-window attention: fused scores, masked softmax and value sum per pixel.
# Same contract as fastdl/_numba/attention.py; the Python wrapper (fastdl/attention.py)
# has already validated every shape, so no bounds are checked here. Nothing window-sized
# is materialised: channel norms are folded into per-image keys, and each output pixel's
# KH*KW*C_out scores live in a per-thread scratch row.
from cython.parallel cimport prange, threadid
from libc.math cimport exp, expf, sqrt

import numpy as np

ctypedef fused real:
    float
    double


cdef inline void _attention_row(const real* x, const real* keys, const real* value,
                                real* out, real* scores, real* totals, real* weighted,
                                Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                                Py_ssize_t out_w, Py_ssize_t out_c,
                                Py_ssize_t k_h, Py_ssize_t k_w,
                                Py_ssize_t top, Py_ssize_t sw, Py_ssize_t pad_left) noexcept nogil:
    """One output row; ``x`` points at the image, ``keys`` at its (KH, KW, C, O) keys,
    ``top`` is the input row of window offset 0 (may be negative: masked)."""
    cdef Py_ssize_t a_lo = -top if top < 0 else 0
    cdef Py_ssize_t a_hi = in_h - top if in_h - top < k_h else k_h
    cdef Py_ssize_t j, a, b, c, o, left, b_lo, b_hi
    cdef real* acc
    cdef real* s
    cdef const real* pixel
    cdef const real* tap
    cdef const real* v
    cdef real xv, e
    for j in range(out_w):
        left = j * sw - pad_left
        b_lo = -left if left < 0 else 0
        b_hi = in_w - left if in_w - left < k_w else k_w
        acc = out + j * out_c
        # scores of the valid window positions, and their running max per channel
        for o in range(out_c):
            acc[o] = -1.0 / 0.0
        for a in range(a_lo, a_hi):
            for b in range(b_lo, b_hi):
                s = scores + (a * k_w + b) * out_c
                pixel = x + ((top + a) * in_w + left + b) * in_c
                tap = keys + (a * k_w + b) * in_c * out_c
                for o in range(out_c):
                    s[o] = 0
                for c in range(in_c):
                    xv = pixel[c]
                    for o in range(out_c):  # contiguous over output channels
                        s[o] += xv * tap[c * out_c + o]
                for o in range(out_c):
                    # NaN scores need no care here: exp(NaN - max) makes the output NaN
                    if s[o] > acc[o]:
                        acc[o] = s[o]
        # softmax-weighted values: sum(e * v) / sum(e), e = exp(s - max) <= 1
        for o in range(out_c):
            totals[o] = 0
            weighted[o] = 0
        for a in range(a_lo, a_hi):
            for b in range(b_lo, b_hi):
                s = scores + (a * k_w + b) * out_c
                v = value + (a * k_w + b) * out_c
                for o in range(out_c):
                    if real is float:
                        e = expf(s[o] - acc[o])
                    else:
                        e = exp(s[o] - acc[o])
                    totals[o] += e
                    weighted[o] += e * v[o]
        for o in range(out_c):
            acc[o] = weighted[o] / totals[o]


cdef void _fold_norms(const real* x, const real* key, real* keys, double* row_sums,
                      Py_ssize_t n_batch, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                      Py_ssize_t taps, Py_ssize_t out_c, int num_threads) noexcept nogil:
    """keys[n, a, b, c, o] = key[a, b, c, o] / ||x[n, :, :, c]|| (a zero channel: key * 0,
    so it stays zero and an inf/NaN key still gives NaN). Squares are summed in float64,
    one partial sum per input row, so the work splits for any N."""
    cdef Py_ssize_t row, n, w, c, h, t, o
    cdef double xv, sq, norm
    cdef const real* pixel
    cdef double* sums
    cdef real* dst
    cdef const real* src
    for row in prange(n_batch * in_h, num_threads=num_threads, schedule="static"):
        sums = row_sums + row * in_c
        for c in range(in_c):
            sums[c] = 0
        for w in range(in_w):
            pixel = x + (row * in_w + w) * in_c
            for c in range(in_c):
                xv = pixel[c]
                sums[c] = sums[c] + xv * xv
    for n in prange(n_batch, num_threads=num_threads, schedule="static"):
        for c in range(in_c):
            sq = 0
            for h in range(in_h):
                sq = sq + row_sums[(n * in_h + h) * in_c + c]
            norm = sqrt(sq)
            for t in range(taps):
                src = key + t * in_c * out_c + c * out_c
                dst = keys + ((n * taps + t) * in_c + c) * out_c
                for o in range(out_c):
                    if norm == 0:
                        dst[o] = <real>(src[o] * 0.0)
                    else:
                        dst[o] = <real>(src[o] / norm)


def attention_nhwc(const real[:, :, :, ::1] x not None,
                   const real[:, :, :, ::1] key not None,
                   const real[:, :, ::1] value not None,
                   real[:, :, :, ::1] out not None,
                   tuple stride, tuple pads, bint normalize, int num_threads):
    """out[n, i, j, :] = masked-softmax-weighted values; x is unpadded, ``pads`` are the
    (top, left) paddings, whose positions are left out of the softmax."""
    cdef Py_ssize_t sh = stride[0], sw = stride[1], pad_top = pads[0], pad_left = pads[1]
    cdef Py_ssize_t n_batch = x.shape[0], in_h = x.shape[1], in_w = x.shape[2], in_c = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2], out_c = out.shape[3]
    cdef Py_ssize_t k_h = key.shape[0], k_w = key.shape[1]
    cdef Py_ssize_t image_keys = k_h * k_w * in_c * out_c, scratch_len = (k_h * k_w + 2) * out_c
    cdef Py_ssize_t row, n, tid
    dtype = np.float32 if real is float else np.float64
    cdef real[:, ::1] scratch = np.empty((num_threads, scratch_len), dtype)
    cdef real[:, :, :, :, ::1] folded
    cdef double[:, ::1] row_sums
    cdef const real* keys_ptr = &key[0, 0, 0, 0]
    cdef Py_ssize_t keys_step = 0
    if normalize:
        folded = np.empty((n_batch, k_h, k_w, in_c, out_c), dtype)
        row_sums = np.empty((n_batch * in_h, in_c), np.float64)
        with nogil:
            _fold_norms(&x[0, 0, 0, 0], &key[0, 0, 0, 0], &folded[0, 0, 0, 0, 0],
                        &row_sums[0, 0], n_batch, in_h, in_w, in_c, k_h * k_w, out_c,
                        num_threads)
        keys_ptr = &folded[0, 0, 0, 0, 0]
        keys_step = image_keys
    cdef const real* x_ptr = &x[0, 0, 0, 0]
    cdef const real* value_ptr = &value[0, 0, 0]
    cdef real* out_ptr = &out[0, 0, 0, 0]
    cdef real* scratch_ptr = &scratch[0, 0]
    # One task per output row (n, i): each thread writes only its own rows and scratch.
    for row in prange(n_batch * out_h, nogil=True, num_threads=num_threads, schedule="static"):
        n = row // out_h
        tid = threadid()
        _attention_row(x_ptr + n * in_h * in_w * in_c, keys_ptr + n * keys_step, value_ptr,
                       out_ptr + row * out_w * out_c,
                       scratch_ptr + tid * scratch_len,
                       scratch_ptr + tid * scratch_len + k_h * k_w * out_c,
                       scratch_ptr + tid * scratch_len + (k_h * k_w + 1) * out_c,
                       in_h, in_w, in_c, out_w, out_c, k_h, k_w,
                       (row % out_h) * sh - pad_top, sw, pad_left)

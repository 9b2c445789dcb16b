# Cython sliding-window attention: scores, masked softmax and value sum fused per output
# row. Same contract and method as fastdl/_numba/attention.py (see there); the Python
# wrapper (fastdl/attention.py) has already validated every shape, so no bounds are
# checked here. Nothing window-sized is materialised: channel norms are folded into
# per-image keys, and each thread keeps one output row's input rows (channel-major) and
# KH*KW*C_out*Wo scores in its own scratch.
from cython.parallel cimport prange, threadid
from libc.math cimport sqrt

from fastmath cimport exp32, exp64

import numpy as np

ctypedef fused real:
    float
    double


cdef inline void _attention_row(const real* image, const real* keys, const real* value,
                                real* out_row, real* rows_t, real* scores, real* peak,
                                real* total, real* weighted, const Py_ssize_t* col_ranges,
                                Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                                Py_ssize_t out_w, Py_ssize_t out_c,
                                Py_ssize_t k_h, Py_ssize_t k_w,
                                Py_ssize_t top, Py_ssize_t sw, Py_ssize_t pad_left) noexcept nogil:
    """One output row. ``image`` and ``keys`` point at the row's image and its (KH, KW, C,
    O) keys; ``top`` is the input row of window offset 0 (negative: masked padding);
    ``col_ranges[2b], col_ranges[2b+1]`` the output columns whose offset b is inside."""
    cdef Py_ssize_t a_lo = -top if top < 0 else 0
    cdef Py_ssize_t a_hi = in_h - top if in_h - top < k_h else k_h
    cdef Py_ssize_t a, b, c, o, w, j, j_lo, count, start, tap
    cdef const real* src
    cdef const real* line
    cdef const real* kc
    cdef real* dst
    cdef real* s
    cdef real* pk
    cdef real* tot
    cdef real* wsum
    cdef real k, k0, k1, k2, k3, v, e
    for a in range(a_lo, a_hi):  # the input rows, channel-major
        src = image + (top + a) * in_w * in_c
        dst = rows_t + a * in_c * in_w
        for w in range(in_w):
            for c in range(in_c):
                dst[c * in_w + w] = src[w * in_c + c]
    for j in range(out_c * out_w):
        peak[j] = -1.0 / 0.0
    for a in range(a_lo, a_hi):
        for b in range(k_w):
            j_lo = col_ranges[2 * b]
            count = col_ranges[2 * b + 1] - j_lo
            start = j_lo * sw + b - pad_left
            tap = a * k_w + b
            for o in range(out_c):
                s = scores + (tap * out_c + o) * out_w + j_lo
                for j in range(count):
                    s[j] = 0
                c = 0
                if sw == 1:
                    # four channels per pass over the row: 5 loads and 1 store per 4
                    # multiply-adds instead of 12 memory operations
                    while c + 4 <= in_c:
                        kc = keys + (tap * in_c + c) * out_c + o
                        k0, k1, k2, k3 = kc[0], kc[out_c], kc[2 * out_c], kc[3 * out_c]
                        line = rows_t + (a * in_c + c) * in_w + start
                        for j in range(count):
                            s[j] += (line[j] * k0 + line[in_w + j] * k1
                                     + line[2 * in_w + j] * k2 + line[3 * in_w + j] * k3)
                        c = c + 4
                for c in range(c, in_c):
                    k = keys[(tap * in_c + c) * out_c + o]
                    line = rows_t + (a * in_c + c) * in_w + start
                    if sw == 1:
                        for j in range(count):
                            s[j] += line[j] * k
                    else:
                        for j in range(count):
                            s[j] += line[j * sw] * k
                pk = peak + o * out_w + j_lo
                for j in range(count):
                    # NaN needs no care: exp(NaN - peak) makes the output NaN
                    pk[j] = s[j] if s[j] > pk[j] else pk[j]
    # softmax-weighted values: sum(e * v) / sum(e), e = exp(s - peak) <= 1
    for j in range(out_c * out_w):
        total[j] = 0
        weighted[j] = 0
    for a in range(a_lo, a_hi):
        for b in range(k_w):
            j_lo = col_ranges[2 * b]
            count = col_ranges[2 * b + 1] - j_lo
            tap = a * k_w + b
            for o in range(out_c):
                v = value[tap * out_c + o]
                s = scores + (tap * out_c + o) * out_w + j_lo
                pk = peak + o * out_w + j_lo
                tot = total + o * out_w + j_lo
                wsum = weighted + o * out_w + j_lo
                for j in range(count):
                    if real is float:
                        e = exp32(s[j] - pk[j])
                    else:
                        e = exp64(s[j] - pk[j])
                    tot[j] += e
                    wsum[j] += e * v
    for j in range(out_w):
        for o in range(out_c):
            out_row[j * out_c + o] = weighted[o * out_w + j] / total[o * out_w + j]


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


cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Floor division for b > 0 (with cdivision, ``//`` truncates toward zero)."""
    return a // b if a >= 0 else -((-a + b - 1) // b)


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
    cdef Py_ssize_t image_keys = k_h * k_w * in_c * out_c
    cdef Py_ssize_t rows_len = k_h * in_c * in_w, scores_len = k_h * k_w * out_c * out_w
    cdef Py_ssize_t row_len = out_c * out_w
    cdef Py_ssize_t scratch_len = rows_len + scores_len + 3 * row_len
    cdef Py_ssize_t row, n, tid, b, first, stop
    dtype = np.float32 if real is float else np.float64
    cdef real[:, ::1] scratch = np.empty((num_threads, scratch_len), dtype)
    # output columns [first, stop) whose column offset b lands inside the input
    cdef Py_ssize_t[:, ::1] col_ranges = np.empty((k_w, 2), np.intp)
    for b in range(k_w):
        first = max(0, -_floor_div(b - pad_left, sw))  # ceil((pad_left - b) / sw)
        stop = min(out_w, _floor_div(in_w - 1 + pad_left - b, sw) + 1)
        col_ranges[b, 0] = first
        col_ranges[b, 1] = max(first, stop)
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
    cdef real* mine
    cdef const Py_ssize_t* ranges_ptr = &col_ranges[0, 0]
    # One task per output row (n, i): each thread writes only its own rows and scratch.
    for row in prange(n_batch * out_h, nogil=True, num_threads=num_threads, schedule="static"):
        n = row // out_h
        mine = scratch_ptr + threadid() * scratch_len
        _attention_row(x_ptr + n * in_h * in_w * in_c, keys_ptr + n * keys_step, value_ptr,
                       out_ptr + row * out_w * out_c, mine, mine + rows_len,
                       mine + rows_len + scores_len, mine + rows_len + scores_len + row_len,
                       mine + rows_len + scores_len + 2 * row_len, ranges_ptr,
                       in_h, in_w, in_c, out_w, out_c, k_h, k_w,
                       (row % out_h) * sh - pad_top, sw, pad_left)

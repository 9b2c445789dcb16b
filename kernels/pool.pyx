# Cython pooling kernels: channels-last, OpenMP-parallel over output rows, C streamed
# contiguously (with C == 1, i.e. NCHW planes, the inner loop runs over output columns).
# Same contract as fastdl/_numba/pool.py; the Python wrapper (fastdl/pool.py) has
# already validated every shape, so no bounds are checked here.
from cython.parallel cimport prange
from libc.math cimport INFINITY

ctypedef fused real:
    float
    double


cdef inline void _column_range(Py_ssize_t tap, Py_ssize_t out_w, Py_ssize_t in_w,
                               Py_ssize_t sw, Py_ssize_t pad_left,
                               Py_ssize_t* first, Py_ssize_t* stop) noexcept nogil:
    """Output columns ow whose input column ow*sw + tap - pad_left is inside the input."""
    cdef Py_ssize_t last = in_w - 1 - tap + pad_left  # the largest ow*sw allowed
    first[0] = (pad_left - tap + sw - 1) // sw if pad_left > tap else 0
    stop[0] = 0
    if last >= 0:
        stop[0] = last // sw + 1 if last // sw + 1 < out_w else out_w


cdef inline void _max_row(const real* x, real* dst, Py_ssize_t h_lo, Py_ssize_t h_hi,
                          Py_ssize_t in_w, Py_ssize_t channels, Py_ssize_t out_w,
                          Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pad_left) noexcept nogil:
    cdef Py_ssize_t ow, ih, tap, c, first, stop
    cdef const real* src
    cdef real* cell
    cdef real v, m
    for c in range(out_w * channels):
        dst[c] = -INFINITY  # padded cells are skipped, so they never win
    for ih in range(h_lo, h_hi):  # stream the input row by row
        for tap in range(kw):
            _column_range(tap, out_w, in_w, sw, pad_left, &first, &stop)
            src = x + (ih * in_w + tap - pad_left) * channels
            if channels == 1:  # NCHW planes: run along the output columns
                for ow in range(first, stop):
                    v = src[ow * sw]
                    m = dst[ow]
                    # NaN wins, as in PyTorch; no branches, so the loop vectorises
                    dst[ow] = v if (v > m) | (v != v) else m
            else:
                for ow in range(first, stop):
                    cell = dst + ow * channels
                    for c in range(channels):
                        v = src[ow * sw * channels + c]
                        m = cell[c]
                        cell[c] = v if (v > m) | (v != v) else m


cdef inline void _sum_row(const real* x, real* dst, Py_ssize_t h_lo, Py_ssize_t h_hi,
                          Py_ssize_t in_w, Py_ssize_t channels, Py_ssize_t out_w,
                          Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t pad_left,
                          real scale) noexcept nogil:
    cdef Py_ssize_t ow, ih, tap, c, first, stop
    cdef const real* src
    cdef real* cell
    for c in range(out_w * channels):
        dst[c] = 0
    for ih in range(h_lo, h_hi):
        for tap in range(kw):
            _column_range(tap, out_w, in_w, sw, pad_left, &first, &stop)
            src = x + (ih * in_w + tap - pad_left) * channels
            if channels == 1:
                for ow in range(first, stop):
                    dst[ow] += src[ow * sw]
            else:
                for ow in range(first, stop):
                    cell = dst + ow * channels
                    for c in range(channels):
                        cell[c] += src[ow * sw * channels + c]
    for c in range(out_w * channels):
        dst[c] *= scale


cdef void _pool(const real* x, real* out, Py_ssize_t n_batch, Py_ssize_t in_h,
                Py_ssize_t in_w, Py_ssize_t channels, Py_ssize_t out_h, Py_ssize_t out_w,
                tuple size, tuple stride, tuple pads, int num_threads, bint average):
    cdef Py_ssize_t kh = size[0], kw = size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t pad_top = pads[0], pad_left = pads[1]
    # Padded cells count as zeros in the divisor (count_include_pad=True).
    cdef real scale = 1.0 / <real>(kh * kw)
    cdef Py_ssize_t row, n, oh, h0, h_lo, h_hi
    cdef const real* image
    # One task per output row (n, oh): each thread writes only its own rows.
    for row in prange(n_batch * out_h, nogil=True, num_threads=num_threads, schedule="static"):
        n = row // out_h
        oh = row - n * out_h
        h0 = oh * sh - pad_top
        h_lo = h0 if h0 > 0 else 0
        h_hi = h0 + kh if h0 + kh < in_h else in_h
        image = x + n * in_h * in_w * channels
        if average:
            _sum_row(image, out + row * out_w * channels, h_lo, h_hi, in_w, channels,
                     out_w, kw, sw, pad_left, scale)
        else:
            _max_row(image, out + row * out_w * channels, h_lo, h_hi, in_w, channels,
                     out_w, kw, sw, pad_left)


def max_pool_nhwc(const real[:, :, :, ::1] x not None, real[:, :, :, ::1] out not None,
                  tuple size, tuple stride, tuple pads, int num_threads):
    """out[n, oh, ow, :] = max over the window's in-bounds cells of x (N, H, W, C);
    ``pads`` = (top, left): the bottom/right padding is implied by out's shape."""
    _pool(&x[0, 0, 0, 0], &out[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.shape[3],
          out.shape[1], out.shape[2], size, stride, pads, num_threads, False)


def avg_pool_nhwc(const real[:, :, :, ::1] x not None, real[:, :, :, ::1] out not None,
                  tuple size, tuple stride, tuple pads, int num_threads):
    """out[n, oh, ow, :] = sum over the window's in-bounds cells / (size_h * size_w)."""
    _pool(&x[0, 0, 0, 0], &out[0, 0, 0, 0], x.shape[0], x.shape[1], x.shape[2], x.shape[3],
          out.shape[1], out.shape[2], size, stride, pads, num_threads, True)

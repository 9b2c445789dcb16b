# Cython pooling kernels: channels-last, OpenMP-parallel over output rows. Each output
# row is one call of a C row function (kernels/pool_rows.h: along the channels, or with
# C == 1, i.e. NCHW planes, along the row), built generic and for AVX2 and picked at
# run time.
# Same contract and algorithm as fastdl/_numba/pool.py; the Python wrapper
# (fastdl/pool.py) has already validated every shape, so no bounds are checked here.
cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free, malloc

from arrays cimport plain_array

cnp.import_array()


cdef extern from "simd.h" nogil:
    int fastdl_cpu_has_avx2_fma()

cdef extern from "pool_rows.h" nogil:
    void fastdl_pool_row_f32(int avx2, int average, const float* image, float* dst,
                             float* line, Py_ssize_t h_lo, Py_ssize_t h_hi, Py_ssize_t in_w,
                             Py_ssize_t channels, Py_ssize_t out_w, Py_ssize_t kw,
                             Py_ssize_t sw, Py_ssize_t pad_left, float scale)
    void fastdl_pool_row_f64(int avx2, int average, const double* image, double* dst,
                             double* line, Py_ssize_t h_lo, Py_ssize_t h_hi, Py_ssize_t in_w,
                             Py_ssize_t channels, Py_ssize_t out_w, Py_ssize_t kw,
                             Py_ssize_t sw, Py_ssize_t pad_left, double scale)

# This CPU's choice of row-function build, checked once.
cdef int _avx2 = fastdl_cpu_has_avx2_fma()


def _row_build(use_avx2=None):
    """Return whether the row functions run their AVX2 build; set it with use_avx2 (tests
    run the generic build this way; True only where the CPU supports AVX2+FMA)."""
    global _avx2
    if use_avx2 is not None:
        _avx2 = 1 if use_avx2 and fastdl_cpu_has_avx2_fma() else 0
    return bool(_avx2)


ctypedef fused real:
    float
    double


cdef inline void _pool_row(const real* x, real* out, real* line, Py_ssize_t row,
                           Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t channels,
                           Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t kh, Py_ssize_t kw,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pad_top,
                           Py_ssize_t pad_left, real scale, int avx2, bint average) noexcept nogil:
    """Output row (n, oh) = row: its window's input rows reduced by the C row function."""
    cdef Py_ssize_t n = row // out_h
    cdef Py_ssize_t h0 = (row - n * out_h) * sh - pad_top
    cdef Py_ssize_t h_lo = h0 if h0 > 0 else 0
    cdef Py_ssize_t h_hi = h0 + kh if h0 + kh < in_h else in_h
    if real is float:
        fastdl_pool_row_f32(avx2, average, x + n * in_h * in_w * channels,
                            out + row * out_w * channels, line, h_lo, h_hi,
                            in_w, channels, out_w, kw, sw, pad_left, scale)
    else:
        fastdl_pool_row_f64(avx2, average, x + n * in_h * in_w * channels,
                            out + row * out_w * channels, line, h_lo, h_hi,
                            in_w, channels, out_w, kw, sw, pad_left, scale)


cdef void _pool(const real* x, real* out, real* lines, Py_ssize_t n_batch, Py_ssize_t in_h,
                Py_ssize_t in_w, Py_ssize_t channels, Py_ssize_t out_h, Py_ssize_t out_w,
                Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t pad_top, Py_ssize_t pad_left, int num_threads,
                bint average) noexcept nogil:
    # Padded cells count as zeros in the divisor (count_include_pad=True).
    cdef real scale = 1.0 / <real>(kh * kw)
    cdef Py_ssize_t row
    cdef int avx2 = _avx2
    if num_threads == 1:  # no parallel region: entering one costs ~0.7 us, even alone
        for row in range(n_batch * out_h):
            _pool_row(x, out, lines, row, in_h, in_w, channels, out_h, out_w, kh, kw, sh,
                      sw, pad_top, pad_left, scale, avx2, average)
        return
    # One task per output row (n, oh): each thread writes only its own rows and line.
    for row in prange(n_batch * out_h, nogil=True, num_threads=num_threads, schedule="static"):
        _pool_row(x, out, lines + threadid() * in_w * channels, row, in_h, in_w, channels,
                  out_h, out_w, kh, kw, sh, sw, pad_top, pad_left, scale, avx2, average)


cdef _run(cnp.ndarray x, cnp.ndarray out, tuple size, tuple stride, tuple pads,
          int num_threads, bint average):
    cdef int type_num = cnp.PyArray_TYPE(x)
    if not ((type_num == cnp.NPY_FLOAT or type_num == cnp.NPY_DOUBLE)
            and plain_array(x, type_num, 4) and plain_array(out, type_num, 4)
            and cnp.PyArray_ISWRITEABLE(out) and out.shape[0] == x.shape[0]
            and out.shape[3] == x.shape[3] and 1 <= num_threads):
        raise ValueError("pooling kernel: arrays do not fit the contract (see fastdl/pool.py)")
    cdef Py_ssize_t kh = size[0], kw = size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t pad_top = pads[0], pad_left = pads[1]
    # one scratch line (an input row; used with one channel) per thread; malloc, not a
    # NumPy array: on small inputs the array and its memoryview cost ~0.5 us per call
    cdef void* lines = malloc(num_threads * x.shape[2] * cnp.PyArray_ITEMSIZE(x))
    if lines == NULL:
        raise MemoryError()
    with nogil:
        if type_num == cnp.NPY_FLOAT:
            _pool(<const float*>cnp.PyArray_DATA(x), <float*>cnp.PyArray_DATA(out),
                  <float*>lines, x.shape[0], x.shape[1], x.shape[2], x.shape[3],
                  out.shape[1], out.shape[2], kh, kw, sh, sw, pad_top, pad_left,
                  num_threads, average)
        else:
            _pool(<const double*>cnp.PyArray_DATA(x), <double*>cnp.PyArray_DATA(out),
                  <double*>lines, x.shape[0], x.shape[1], x.shape[2], x.shape[3],
                  out.shape[1], out.shape[2], kh, kw, sh, sw, pad_top, pad_left,
                  num_threads, average)
    free(lines)


# The kernels take ndarrays and read their data pointers (see kernels/arrays.pxd).


def max_pool_nhwc(cnp.ndarray x not None, cnp.ndarray out not None, tuple size, tuple stride,
                  tuple pads, int num_threads):
    """out[n, oh, ow, :] = max over the window's in-bounds cells of x (N, H, W, C);
    ``pads`` = (top, left): the bottom/right padding is implied by out's shape."""
    _run(x, out, size, stride, pads, num_threads, False)


def avg_pool_nhwc(cnp.ndarray x not None, cnp.ndarray out not None, tuple size, tuple stride,
                  tuple pads, int num_threads):
    """out[n, oh, ow, :] = sum over the window's in-bounds cells / (size_h * size_w)."""
    _run(x, out, size, stride, pads, num_threads, True)

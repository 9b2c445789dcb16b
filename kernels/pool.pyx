# Cython pooling kernels: channels-last, OpenMP-parallel over output rows. Each output
# row is one call of a C row function (kernels/pool_rows.h: along the channels, or with
# C == 1, i.e. NCHW planes, along the row), built generic and for AVX2 and picked at
# run time.
# Same contract and algorithm as fastdl/_numba/pool.py; the Python wrapper
# (fastdl/pool.py) has already validated every shape, so no bounds are checked here.
from cython.parallel cimport prange, threadid
from libc.stdlib cimport free, malloc


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


cdef void _pool(const real* x, real* out, real* lines, Py_ssize_t n_batch, Py_ssize_t in_h,
                Py_ssize_t in_w, Py_ssize_t channels, Py_ssize_t out_h, Py_ssize_t out_w,
                tuple size, tuple stride, tuple pads, int num_threads, bint average):
    cdef Py_ssize_t kh = size[0], kw = size[1], sh = stride[0], sw = stride[1]
    cdef Py_ssize_t pad_top = pads[0], pad_left = pads[1]
    # Padded cells count as zeros in the divisor (count_include_pad=True).
    cdef real scale = 1.0 / <real>(kh * kw)
    cdef Py_ssize_t row, n, oh, h0, h_lo, h_hi
    cdef int avx2 = _avx2
    cdef real* line
    # One task per output row (n, oh): each thread writes only its own rows and line.
    for row in prange(n_batch * out_h, nogil=True, num_threads=num_threads, schedule="static"):
        line = lines + threadid() * in_w * channels
        n = row // out_h
        oh = row - n * out_h
        h0 = oh * sh - pad_top
        h_lo = h0 if h0 > 0 else 0
        h_hi = h0 + kh if h0 + kh < in_h else in_h
        if real is float:
            fastdl_pool_row_f32(avx2, average, x + n * in_h * in_w * channels,
                                out + row * out_w * channels, line, h_lo, h_hi,
                                in_w, channels, out_w, kw, sw, pad_left, scale)
        else:
            fastdl_pool_row_f64(avx2, average, x + n * in_h * in_w * channels,
                                out + row * out_w * channels, line, h_lo, h_hi,
                                in_w, channels, out_w, kw, sw, pad_left, scale)


cdef _run(const real[:, :, :, ::1] x, real[:, :, :, ::1] out, tuple size, tuple stride,
          tuple pads, int num_threads, bint average):
    # one scratch line (an input row; used with one channel) per thread; malloc, not a
    # NumPy array: on small inputs the array and its memoryview cost ~0.5 us per call
    cdef real* lines = <real*>malloc(num_threads * x.shape[2] * sizeof(real))
    if lines == NULL:
        raise MemoryError()
    try:
        _pool(&x[0, 0, 0, 0], &out[0, 0, 0, 0], lines, x.shape[0], x.shape[1],
              x.shape[2], x.shape[3], out.shape[1], out.shape[2], size, stride, pads,
              num_threads, average)
    finally:
        free(lines)


def max_pool_nhwc(const real[:, :, :, ::1] x not None, real[:, :, :, ::1] out not None,
                  tuple size, tuple stride, tuple pads, int num_threads):
    """out[n, oh, ow, :] = max over the window's in-bounds cells of x (N, H, W, C);
    ``pads`` = (top, left): the bottom/right padding is implied by out's shape."""
    _run(x, out, size, stride, pads, num_threads, False)


def avg_pool_nhwc(const real[:, :, :, ::1] x not None, real[:, :, :, ::1] out not None,
                  tuple size, tuple stride, tuple pads, int num_threads):
    """out[n, oh, ow, :] = sum over the window's in-bounds cells / (size_h * size_w)."""
    _run(x, out, size, stride, pads, num_threads, True)

# Cython batch-norm kernels: same contract and work decomposition as
# fastdl/_numba/norm.py (read its docstring). The Python wrapper (fastdl/norm.py) has
# validated every shape and made x3 a contiguous (A, C, B) array, so nothing is checked
# here. The hot loops are C (kernels/norm_simd.h), built generic and for AVX2+FMA.
import numpy as np

cimport cython
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from arrays cimport plain_array

cdef extern from "simd.h" nogil:
    int fastdl_cpu_has_avx2_fma()

cdef extern from "norm_simd.h" nogil:
    void fastdl_norm_shifted_sums_f32(int avx2, const float* x, Py_ssize_t n, double shift,
                                      double* sums)
    void fastdl_norm_shifted_sums_f64(int avx2, const double* x, Py_ssize_t n, double shift,
                                      double* sums)
    void fastdl_norm_column_sums_f32(int avx2, const float* x, Py_ssize_t row_stride,
                                     Py_ssize_t rows, Py_ssize_t width, double* shift,
                                     double* sum1, double* sum2)
    void fastdl_norm_column_sums_f64(int avx2, const double* x, Py_ssize_t row_stride,
                                     Py_ssize_t rows, Py_ssize_t width, double* shift,
                                     double* sum1, double* sum2)
    void fastdl_norm_affine_f32(int avx2, const float* x, float* out, Py_ssize_t n,
                                float center, float scale, float shift)
    void fastdl_norm_affine_f64(int avx2, const double* x, double* out, Py_ssize_t n,
                                double center, double scale, double shift)
    void fastdl_norm_affine_columns_f32(int avx2, const float* x, float* out, Py_ssize_t rows,
                                        Py_ssize_t width, const float* center,
                                        const float* scale, const float* shift)
    void fastdl_norm_affine_columns_f64(int avx2, const double* x, double* out,
                                        Py_ssize_t rows, Py_ssize_t width,
                                        const double* center, const double* scale,
                                        const double* shift)

cnp.import_array()

# This CPU's choice of build of the C loops, checked once.
cdef int _avx2 = fastdl_cpu_has_avx2_fma()


def _simd_build(use_avx2=None):
    """Return whether the C loops run their AVX2+FMA build; set it with use_avx2 (tests
    run the generic build this way; True only where the CPU supports AVX2+FMA)."""
    global _avx2
    if use_avx2 is not None:
        _avx2 = 1 if use_avx2 and fastdl_cpu_has_avx2_fma() else 0
    return bool(_avx2)


ctypedef fused real:
    float
    double

cdef enum:  # compile-time constants (COLUMN_TILE sizes stack arrays)
    SEGMENT_MIN = 64
    PIECE = 4096
    COLUMN_TILE = 1024


cdef struct Summary:
    double n
    double mean
    double m2


cdef inline void _chan_merge(Summary* acc, double n_b, double mean_b, double m2_b) noexcept nogil:
    """Merge a (count, mean, sum of squared deviations) summary into acc (Chan et al.)."""
    cdef double total, delta
    if acc.n == 0.0:
        acc.n, acc.mean, acc.m2 = n_b, mean_b, m2_b
        return
    total = acc.n + n_b
    delta = mean_b - acc.mean
    acc.mean = acc.mean + delta * (n_b / total)
    acc.m2 = acc.m2 + m2_b + delta * delta * (acc.n * n_b / total)
    acc.n = total


cdef inline void _column_block(const real* x, Py_ssize_t width, Py_ssize_t r0, Py_ssize_t r1,
                               Py_ssize_t w0, Py_ssize_t w1, double* shift, double* sum1,
                               double* sum2) noexcept nogil:
    # Accumulators for one column tile on the stack (in L1 for the whole row loop).
    cdef double local_shift[COLUMN_TILE]
    cdef double local_sum1[COLUMN_TILE]
    cdef double local_sum2[COLUMN_TILE]
    cdef Py_ssize_t w, n = w1 - w0
    if real is float:
        fastdl_norm_column_sums_f32(_avx2, x + r0 * width + w0, width, r1 - r0, n,
                                    local_shift, local_sum1, local_sum2)
    else:
        fastdl_norm_column_sums_f64(_avx2, x + r0 * width + w0, width, r1 - r0, n,
                                    local_shift, local_sum1, local_sum2)
    for w in range(n):
        shift[w0 + w] = local_shift[w]
        sum1[w0 + w] = local_sum1[w]
        sum2[w0 + w] = local_sum2[w]


cdef void _column_stats(const real* x, Py_ssize_t n_rows, Py_ssize_t channels,
                        Py_ssize_t per_channel, double* mean, double* var,
                        Py_ssize_t row_chunks, int num_threads,
                        double* shift, double* sum1, double* sum2) noexcept nogil:
    cdef Py_ssize_t width = channels * per_channel
    cdef Py_ssize_t tiles = (width + COLUMN_TILE - 1) // COLUMN_TILE
    cdef Py_ssize_t task, k, w0, c
    for task in prange(row_chunks * tiles, nogil=True, num_threads=num_threads, schedule="static"):
        k = task // tiles
        w0 = (task % tiles) * COLUMN_TILE
        _column_block(x, width, k * n_rows // row_chunks, (k + 1) * n_rows // row_chunks,
                      w0, min(width, w0 + COLUMN_TILE),
                      shift + k * width, sum1 + k * width, sum2 + k * width)
    # Serial merge (C * row_chunks tiny merges): a second parallel region would be one more
    # point where every thread waits for the slowest, costly on a busy machine.
    for c in range(channels):
        _merge_columns(c, n_rows, width, per_channel, row_chunks, shift, sum1, sum2,
                       mean, var)


cdef inline void _merge_columns(Py_ssize_t c, Py_ssize_t n_rows, Py_ssize_t width,
                                Py_ssize_t per_channel, Py_ssize_t row_chunks,
                                const double* shift, const double* sum1, const double* sum2,
                                double* mean, double* var) noexcept nogil:
    """Channel c's statistics from the shifted sums of its columns in every row chunk."""
    cdef Py_ssize_t k, w, at
    cdef double n_k, s1
    cdef Summary acc
    acc.n = 0.0
    acc.mean = 0.0
    acc.m2 = 0.0
    for k in range(row_chunks):
        n_k = <double>((k + 1) * n_rows // row_chunks - k * n_rows // row_chunks)
        for w in range(c * per_channel, (c + 1) * per_channel):
            at = k * width + w
            s1 = sum1[at]
            _chan_merge(&acc, n_k, shift[at] + s1 / n_k, max(sum2[at] - s1 * s1 / n_k, 0.0))
    mean[c] = acc.mean
    var[c] = acc.m2 / acc.n


cdef inline void _segment_run(const real* x, Py_ssize_t channels, Py_ssize_t length,
                              Py_ssize_t item0, Py_ssize_t item1, Summary* parts) noexcept nogil:
    """Pieces item0..item1-1 of the (A*C, B) rows, in memory order, each merged into its
    channel's summary parts[c] (this task's own C slots)."""
    cdef Py_ssize_t pieces = (length + PIECE - 1) // PIECE
    cdef Py_ssize_t item, row, b0, n
    cdef const real* values
    cdef double shift, n_b
    cdef double sums[2]
    for item in range(item0, item1):
        row = item // pieces
        b0 = (item % pieces) * PIECE
        n = min(length - b0, PIECE)
        values = x + row * length + b0
        shift = values[0]
        if real is float:
            fastdl_norm_shifted_sums_f32(_avx2, values, n, shift, sums)
        else:
            fastdl_norm_shifted_sums_f64(_avx2, values, n, shift, sums)
        n_b = <double>n
        _chan_merge(&parts[row % channels], n_b, shift + sums[0] / n_b,
                    max(sums[1] - sums[0] * sums[0] / n_b, 0.0))


cdef void _segment_stats(const real* x, Py_ssize_t rows, Py_ssize_t channels,
                         Py_ssize_t length, double* mean, double* var, Py_ssize_t tasks,
                         int num_threads, Summary* parts) noexcept nogil:
    cdef Py_ssize_t items = rows * ((length + PIECE - 1) // PIECE)
    cdef Py_ssize_t task, c
    cdef Summary acc
    for task in prange(tasks, nogil=True, num_threads=num_threads, schedule="static"):
        _segment_run(x, channels, length, task * items // tasks, (task + 1) * items // tasks,
                     parts + task * channels)
    for c in range(channels):
        acc.n = 0.0
        acc.mean = 0.0
        acc.m2 = 0.0
        for task in range(tasks):
            if parts[task * channels + c].n > 0.0:
                _chan_merge(&acc, parts[task * channels + c].n,
                            parts[task * channels + c].mean, parts[task * channels + c].m2)
        mean[c] = acc.mean
        var[c] = acc.m2 / acc.n


cdef inline void _affine_segment_run(const real* x, real* out, Py_ssize_t channels,
                                     Py_ssize_t length, Py_ssize_t item0, Py_ssize_t item1,
                                     const real* center, const real* scale,
                                     const real* shift) noexcept nogil:
    """out = (x - center[c]) * scale[c] + shift[c] on pieces item1-1 down to item0 (the
    scale/shift loops walk the output from its end: see kernels/norm_simd_body.h)."""
    cdef Py_ssize_t pieces = (length + PIECE - 1) // PIECE
    cdef Py_ssize_t item, row, c, at, n
    for item in range(item1 - 1, item0 - 1, -1):
        row = item // pieces
        c = row % channels
        at = row * length + (item % pieces) * PIECE
        n = min(length - (item % pieces) * PIECE, PIECE)
        if real is float:
            fastdl_norm_affine_f32(_avx2, x + at, out + at, n, center[c], scale[c], shift[c])
        else:
            fastdl_norm_affine_f64(_avx2, x + at, out + at, n, center[c], scale[c], shift[c])


cdef Py_ssize_t _segment_tasks(Py_ssize_t rows, Py_ssize_t length, int num_threads):
    """One contiguous run of pieces per thread (fewer when there are fewer pieces)."""
    return max(1, min(num_threads, rows * ((length + PIECE - 1) // PIECE)))


def channel_stats(const real[:, :, ::1] x3 not None, double[::1] mean not None,
                  double[::1] var not None, int num_threads):
    """mean[c], var[c] (float64, biased) over axes 0 and 2 of the contiguous x3 (A, C, B)."""
    cdef Py_ssize_t n_rows = x3.shape[0], channels = x3.shape[1], length = x3.shape[2]
    cdef Py_ssize_t width, tiles, row_chunks, tasks
    cdef double* scratch
    cdef Py_ssize_t sums_len
    cdef Summary[::1] parts
    if length < SEGMENT_MIN:
        width = channels * length
        tiles = (width + COLUMN_TILE - 1) // COLUMN_TILE
        row_chunks = max(1, min(n_rows, (num_threads + tiles - 1) // tiles))
        # calloc, not np.zeros: on small inputs the array and its memoryview cost ~0.5 us
        sums_len = row_chunks * width
        scratch = <double*>calloc(3 * sums_len, sizeof(double))
        if scratch == NULL:
            raise MemoryError()
        with nogil:
            _column_stats(&x3[0, 0, 0], n_rows, channels, length, &mean[0], &var[0],
                          row_chunks, num_threads, scratch, scratch + sums_len,
                          scratch + 2 * sums_len)
        free(scratch)
    else:
        tasks = _segment_tasks(n_rows * channels, length, num_threads)
        parts = np.zeros(tasks * channels, dtype=[("n", "f8"), ("mean", "f8"), ("m2", "f8")])
        with nogil:
            _segment_stats(&x3[0, 0, 0], n_rows * channels, channels, length, &mean[0],
                           &var[0], tasks, num_threads, &parts[0])


cdef const real[::1] _per_column(const real[::1] per_channel, Py_ssize_t length):
    """Each channel's value repeated for its ``length`` columns (channels-last data,
    length 1, needs no copy)."""
    if length == 1:
        return per_channel
    return np.repeat(np.asarray(per_channel), length)


def scale_shift(const real[:, :, ::1] x3 not None, const real[::1] center not None,
                const real[::1] scale not None, const real[::1] shift not None,
                real[:, :, ::1] out not None, int num_threads):
    """out[a, c, b] = (x3[a, c, b] - center[c]) * scale[c] + shift[c]; all in x3's dtype."""
    _scale_shift(x3, center, scale, shift, out, num_threads)


# A cdef function, so that normalize() passes its memoryviews without a Python call
# (each argument would become a Python memoryview object and back: ~1 us per call).
cdef _scale_shift(const real[:, :, ::1] x3, const real[::1] center, const real[::1] scale,
                  const real[::1] shift, real[:, :, ::1] out, int num_threads):
    cdef Py_ssize_t n_rows = x3.shape[0], channels = x3.shape[1], length = x3.shape[2]
    cdef Py_ssize_t rows = n_rows * channels
    cdef Py_ssize_t items = rows * ((length + PIECE - 1) // PIECE)
    cdef Py_ssize_t width = channels * length
    cdef Py_ssize_t task, tasks, r0, r1
    cdef const real* x_ptr = &x3[0, 0, 0]
    cdef real* out_ptr = &out[0, 0, 0]
    cdef const real[::1] center_w, scale_w, shift_w
    if length < SEGMENT_MIN:  # per-column parameters: the inner loop runs over C*B values
        center_w, scale_w, shift_w = _per_column(center, length), _per_column(scale, length), \
            _per_column(shift, length)
        tasks = max(1, min(num_threads, n_rows))
        for task in prange(tasks, nogil=True, num_threads=num_threads, schedule="static"):
            r0 = task * n_rows // tasks
            r1 = (task + 1) * n_rows // tasks
            if real is float:
                fastdl_norm_affine_columns_f32(_avx2, x_ptr + r0 * width, out_ptr + r0 * width,
                                               r1 - r0, width, &center_w[0], &scale_w[0],
                                               &shift_w[0])
            else:
                fastdl_norm_affine_columns_f64(_avx2, x_ptr + r0 * width, out_ptr + r0 * width,
                                               r1 - r0, width, &center_w[0], &scale_w[0],
                                               &shift_w[0])
    else:
        tasks = _segment_tasks(rows, length, num_threads)
        for task in prange(tasks, nogil=True, num_threads=num_threads, schedule="static"):
            _affine_segment_run(x_ptr, out_ptr, channels, length, task * items // tasks,
                                (task + 1) * items // tasks, &center[0], &scale[0], &shift[0])


@cython.cdivision(True)  # IEEE division (inf / NaN), as NumPy; no ZeroDivisionError check
def normalize(const real[:, :, ::1] x3 not None, const double[::1] mean not None,
              const double[::1] var not None, const real[:] gamma not None,
              const real[:] beta not None, double eps, real[:, :, ::1] out not None,
              int num_threads):
    """out = gamma * (x3 - mean) / sqrt(var + eps) + beta per channel (see fastdl/norm.py):
    the per-channel center, scale and shift in float64, then scale_shift."""
    cdef Py_ssize_t channels = x3.shape[1], c
    cdef real[:, ::1] parameters = np.empty((3, channels),
                                            np.float32 if real is float else np.float64)
    for c in range(channels):
        _channel_affine(gamma[c], beta[c], mean[c], var[c], eps, &parameters[0, c],
                        &parameters[1, c], &parameters[2, c])
    _scale_shift(x3, parameters[0], parameters[1], parameters[2], out, num_threads)


cdef inline void _channel_affine(double gamma, double beta, double mean, double var,
                                 double eps, real* center, real* scale,
                                 real* shift) noexcept nogil:
    """One channel's center (the mean rounded to x's dtype), scale and shift, computed in
    float64 (see fastdl/norm.py): the arithmetic of both normalize() and the serial call."""
    cdef double factor = gamma / sqrt(var + eps)
    center[0] = <real>mean
    scale[0] = <real>factor
    shift[0] = <real>(beta - (mean - center[0]) * factor)


# ---------------------------------------------------------------------------------------
# Small inputs: the whole batch norm in one call on the calling thread.
#
# On a (2, 8, 8, 16) input the arithmetic takes about a microsecond, while the general
# path costs ~9 us: two kernel entries with seven typed memoryviews (~0.2 us each), the
# running-statistics update and the float64 conversions as NumPy calls. Here the wrapper
# passes ndarrays it has already validated (C-contiguous, native byte order, x3's dtype
# for out/gamma/beta, float32 or float64 running statistics), and their data pointers are
# read directly (see kernels/arrays.pxd). The arithmetic is the general path's on one
# thread, operation for operation, so the results are bitwise the same (tested).

cdef inline void _serial_stats(const real* x, Py_ssize_t n_rows, Py_ssize_t channels,
                               Py_ssize_t length, double* mean, double* var,
                               double* scratch) noexcept nogil:
    """_column_stats / _segment_stats on one thread (one row chunk, one task); scratch
    holds 3 * channels * length doubles (columns) or channels Summaries (segments)."""
    cdef Py_ssize_t width = channels * length, w0, c, tile
    cdef Py_ssize_t items = n_rows * channels * ((length + PIECE - 1) // PIECE)
    cdef Summary* parts = <Summary*>scratch
    if length < SEGMENT_MIN:
        for tile in range((width + COLUMN_TILE - 1) // COLUMN_TILE):
            w0 = tile * COLUMN_TILE
            _column_block(x, width, 0, n_rows, w0, min(width, w0 + COLUMN_TILE),
                          scratch, scratch + width, scratch + 2 * width)
        for c in range(channels):
            _merge_columns(c, n_rows, width, length, 1, scratch, scratch + width,
                           scratch + 2 * width, mean, var)
    else:
        memset(parts, 0, channels * sizeof(Summary))
        _segment_run(x, channels, length, 0, items, parts)
        for c in range(channels):  # as _segment_stats' merge of one task's summaries
            mean[c] = parts[c].mean
            var[c] = parts[c].m2 / parts[c].n


cdef inline void _load_statistic(cnp.ndarray statistic, double* into, Py_ssize_t n) noexcept:
    """A float32 or float64 (n,) array's values as float64."""
    cdef Py_ssize_t c
    cdef const float* single
    cdef const double* double_ = <const double*>cnp.PyArray_DATA(statistic)
    if cnp.PyArray_ITEMSIZE(statistic) == 4:
        single = <const float*>double_
        for c in range(n):
            into[c] = single[c]
    else:
        memcpy(into, double_, n * sizeof(double))


cdef inline void _blend_statistic(cnp.ndarray running, const double* batch, double decay,
                                  Py_ssize_t n) noexcept:
    """running = decay * running + (1 - decay) * batch, in float64 rounded into running:
    the general path's NumPy expression (no FMA here: the generic build has none)."""
    cdef Py_ssize_t c
    cdef float* single
    cdef double* double_ = <double*>cnp.PyArray_DATA(running)
    if cnp.PyArray_ITEMSIZE(running) == 4:
        single = <float*>double_
        for c in range(n):
            single[c] = <float>(<double>single[c] * decay + (1.0 - decay) * batch[c])
    else:
        for c in range(n):
            double_[c] = double_[c] * decay + (1.0 - decay) * batch[c]


cdef void _serial_normalize(const real* x, real* out, Py_ssize_t n_rows,
                            Py_ssize_t channels, Py_ssize_t length, const double* mean,
                            const double* var, const real* gamma, const real* beta,
                            double eps, real* parameters) noexcept nogil:
    """normalize() on one thread; parameters holds 3 * channels * _values_per_channel()."""
    cdef Py_ssize_t c, b, per = _values_per_channel(length)
    cdef Py_ssize_t items = n_rows * channels * ((length + PIECE - 1) // PIECE)
    cdef real* centers = parameters
    cdef real* scales = parameters + channels * per
    cdef real* shifts = parameters + 2 * channels * per
    for c in range(channels):
        _channel_affine(gamma[c], beta[c], mean[c], var[c], eps, &centers[c * per],
                        &scales[c * per], &shifts[c * per])
        for b in range(1, per):  # the columns kernel takes one value per column
            centers[c * per + b] = centers[c * per]
            scales[c * per + b] = scales[c * per]
            shifts[c * per + b] = shifts[c * per]
    if length < SEGMENT_MIN:
        if real is float:
            fastdl_norm_affine_columns_f32(_avx2, x, out, n_rows, channels * length, centers,
                                           scales, shifts)
        else:
            fastdl_norm_affine_columns_f64(_avx2, x, out, n_rows, channels * length, centers,
                                           scales, shifts)
    else:
        _affine_segment_run(x, out, channels, length, 0, items, centers, scales, shifts)


cdef inline Py_ssize_t _values_per_channel(Py_ssize_t length) noexcept nogil:
    """Parameter values per channel in the serial call: one per column for the columns
    kernel (length < SEGMENT_MIN), one for the segments kernel."""
    return length if length < SEGMENT_MIN else 1


cdef void _serial_batch_norm(const real* x, real* out, Py_ssize_t n_rows,
                             Py_ssize_t channels, Py_ssize_t length, const real* gamma,
                             const real* beta, double eps, bint training,
                             cnp.ndarray running_mean, cnp.ndarray running_var,
                             double decay, double* scratch) noexcept:
    cdef double* mean = scratch
    cdef double* var = scratch + channels
    cdef real* parameters = <real*>(scratch + 2 * channels)
    if training:
        # the statistics' scratch is reused for the parameters afterwards
        _serial_stats(x, n_rows, channels, length, mean, var, scratch + 2 * channels)
        if running_mean is not None:
            _blend_statistic(running_mean, mean, decay, channels)
            _blend_statistic(running_var, var, decay, channels)
    else:
        _load_statistic(running_mean, mean, channels)
        _load_statistic(running_var, var, channels)
    _serial_normalize(x, out, n_rows, channels, length, mean, var, gamma, beta, eps,
                      parameters)


@cython.cdivision(True)
def batch_norm_serial(cnp.ndarray x3 not None, cnp.ndarray gamma not None,
                      cnp.ndarray beta not None, double eps, bint training,
                      cnp.ndarray running_mean, cnp.ndarray running_var, double decay,
                      cnp.ndarray out not None):
    """batch_norm (fastdl/norm.py) of the contiguous (A, C, B) x3 into out, on the calling
    thread: in training the batch statistics (running_mean / running_var, when given,
    blended in place), else the running statistics; then normalize()."""
    cdef Py_ssize_t n_rows, channels, length
    cdef double* scratch
    cdef int real_type = cnp.PyArray_TYPE(x3)
    # The wrapper's contract, checked because the pointers below are raw (kernels/arrays.pxd)
    if not ((real_type == cnp.NPY_FLOAT or real_type == cnp.NPY_DOUBLE)
            and plain_array(x3, real_type, 3) and _fits(out, real_type, x3)
            and cnp.PyArray_ISWRITEABLE(out)
            and _fits_channels(gamma, real_type, x3) and _fits_channels(beta, real_type, x3)
            and (running_mean is None or _fits_statistic(running_mean, x3, training))
            and (running_var is None or _fits_statistic(running_var, x3, training))
            and (running_mean is None) == (running_var is None)
            and (training or running_mean is not None)):
        raise ValueError("batch_norm_serial: arrays do not fit the contract "
                         "(see fastdl/norm.py)")
    n_rows, channels, length = x3.shape[0], x3.shape[1], x3.shape[2]
    # mean and var, then the statistics' scratch (columns: 3 * C * length doubles;
    # segments: C Summaries of 3), reused for the parameters (3 * C * per values)
    scratch = <double*>malloc((2 + 3 * _values_per_channel(length)) * channels * sizeof(double))
    if scratch == NULL:
        raise MemoryError()
    if real_type == cnp.NPY_FLOAT:
        _serial_batch_norm(<const float*>cnp.PyArray_DATA(x3), <float*>cnp.PyArray_DATA(out),
                           n_rows, channels, length, <const float*>cnp.PyArray_DATA(gamma),
                           <const float*>cnp.PyArray_DATA(beta), eps, training,
                           running_mean, running_var, decay, scratch)
    else:
        _serial_batch_norm(<const double*>cnp.PyArray_DATA(x3), <double*>cnp.PyArray_DATA(out),
                           n_rows, channels, length, <const double*>cnp.PyArray_DATA(gamma),
                           <const double*>cnp.PyArray_DATA(beta), eps, training,
                           running_mean, running_var, decay, scratch)
    free(scratch)


cdef inline bint _fits(cnp.ndarray a, int real_type, cnp.ndarray x3):
    """a is a plain array (kernels/arrays.pxd) of x3's dtype and shape."""
    return (plain_array(a, real_type, 3) and a.shape[0] == x3.shape[0]
            and a.shape[1] == x3.shape[1] and a.shape[2] == x3.shape[2])


cdef inline bint _fits_channels(cnp.ndarray a, int real_type, cnp.ndarray x3):
    return plain_array(a, real_type, 1) and a.shape[0] == x3.shape[1]


cdef inline bint _fits_statistic(cnp.ndarray a, cnp.ndarray x3, bint written):
    return ((cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT or cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE)
            and _fits_channels(a, cnp.PyArray_TYPE(a), x3)
            and (not written or cnp.PyArray_ISWRITEABLE(a)))

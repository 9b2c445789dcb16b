# Cython conv kernel: channels-last, OpenMP-parallel over output rows.
# Same contract as fastdl/_numba/conv.py; the Python wrapper (fastdl/conv.py) has already
# validated every shape, so no bounds are checked here.
from cython.parallel cimport prange

ctypedef fused real:
    float
    double


cdef inline void _conv_row(const real* xp, const real* w, const real* bias, real* out,
                           Py_ssize_t n, Py_ssize_t od, Py_ssize_t oh,
                           Py_ssize_t in_d, Py_ssize_t in_h, Py_ssize_t in_w, Py_ssize_t in_c,
                           Py_ssize_t out_w, Py_ssize_t out_c,
                           Py_ssize_t k_d, Py_ssize_t k_h, Py_ssize_t k_w, Py_ssize_t c_per_group,
                           Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                           Py_ssize_t dd, Py_ssize_t dh, Py_ssize_t dw,
                           Py_ssize_t groups) noexcept nogil:
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
                    for g in range(groups):
                        o_end = (g + 1) * o_per_group
                        for c in range(c_per_group):
                            v = pixel[g * c_per_group + c]
                            for o in range(g * o_per_group, o_end):
                                acc[o] += v * tap[c * out_c + o]


def conv_ndhwc(const real[:, :, :, :, ::1] xp not None,
               const real[:, :, :, :, ::1] w not None,
               const real[::1] bias not None,
               real[:, :, :, :, ::1] out not None,
               tuple stride, tuple dilation, Py_ssize_t groups, int num_threads):
    """out[n, od, oh, ow, :] = bias + sum over taps and channels; xp is already padded."""
    cdef Py_ssize_t sd = stride[0], sh = stride[1], sw = stride[2]
    cdef Py_ssize_t dd = dilation[0], dh = dilation[1], dw = dilation[2]
    cdef Py_ssize_t n_batch = out.shape[0], out_d = out.shape[1], out_h = out.shape[2]
    cdef Py_ssize_t out_w = out.shape[3], out_c = out.shape[4]
    cdef Py_ssize_t in_d = xp.shape[1], in_h = xp.shape[2], in_w = xp.shape[3], in_c = xp.shape[4]
    cdef Py_ssize_t k_d = w.shape[0], k_h = w.shape[1], k_w = w.shape[2], c_per_group = w.shape[3]
    cdef Py_ssize_t rows = n_batch * out_d * out_h, row, n, od, oh
    cdef const real* xp_ptr = &xp[0, 0, 0, 0, 0]
    cdef const real* w_ptr = &w[0, 0, 0, 0, 0]
    cdef const real* b_ptr = &bias[0]
    cdef real* out_ptr = &out[0, 0, 0, 0, 0]
    # One task per output row (n, od, oh): each thread writes only its own rows.
    for row in prange(rows, nogil=True, num_threads=num_threads, schedule="static"):
        n = row // (out_d * out_h)
        od = (row // out_h) % out_d
        oh = row % out_h
        _conv_row(xp_ptr, w_ptr, b_ptr, out_ptr + row * out_w * out_c, n, od, oh,
                  in_d, in_h, in_w, in_c, out_w, out_c, k_d, k_h, k_w, c_per_group,
                  sd, sh, sw, dd, dh, dw, groups)

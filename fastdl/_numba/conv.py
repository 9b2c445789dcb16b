"""Numba conv kernel: channels-last, parallel over output rows."""

from numba import prange

from . import njit_parallel, run_parallel


@njit_parallel
def _conv_ndhwc(xp, w, bias, out, sd, sh, sw, dd, dh, dw, groups):
    n_batch, out_d, out_h, out_w, out_c = out.shape
    k_d, k_h, k_w, c_per_group, _ = w.shape
    o_per_group = out_c // groups
    rows = n_batch * out_d * out_h
    # One task per output row (n, od, oh): each thread writes only its own rows.
    for row in prange(rows):
        n = row // (out_d * out_h)
        od = (row // out_h) % out_d
        oh = row % out_h
        for ow in range(out_w):
            acc = out[n, od, oh, ow]
            acc[:] = bias
            for kd in range(k_d):
                for kh in range(k_h):
                    for kw in range(k_w):
                        pixel = xp[n, od * sd + kd * dd, oh * sh + kh * dh, ow * sw + kw * dw]
                        tap = w[kd, kh, kw]
                        for g in range(groups):
                            for c in range(c_per_group):
                                v = pixel[g * c_per_group + c]
                                # contiguous over output channels: vectorises
                                for o in range(g * o_per_group, (g + 1) * o_per_group):
                                    acc[o] += v * tap[c, o]


def conv_ndhwc(xp, w, bias, out, stride, dilation, groups, num_threads):
    """out[n, od, oh, ow, :] = bias + sum over taps and channels; xp is already padded."""
    run_parallel(_conv_ndhwc, num_threads, xp, w, bias, out, *stride, *dilation, groups)

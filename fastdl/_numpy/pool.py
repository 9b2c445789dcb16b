"""NumPy pooling backend: one strided view of the padded input per window tap."""

import numpy as np


def _taps(x, out, size, stride, pads, fill):
    """Yield, for each window tap, the (N, Ho, Wo, C) view of x padded with ``fill``."""
    (kh, kw), (sh, sw), (top, left) = size, stride, pads
    n, out_h, out_w, c = out.shape
    in_h, in_w = x.shape[1:3]
    bottom = max(0, (out_h - 1) * sh + kh - top - in_h)
    right = max(0, (out_w - 1) * sw + kw - left - in_w)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    for a in range(kh):
        for b in range(kw):
            yield padded[:, a: a + (out_h - 1) * sh + 1: sh, b: b + (out_w - 1) * sw + 1: sw]


def max_pool_nhwc(x, out, size, stride, pads, num_threads):
    """Same contract as the compiled kernels; ``num_threads`` is ignored. Padding is
    -inf, so it never wins; np.maximum propagates NaN."""
    out.fill(-np.inf)
    for view in _taps(x, out, size, stride, pads, -np.inf):
        np.maximum(out, view, out=out)


def avg_pool_nhwc(x, out, size, stride, pads, num_threads):
    """Same contract as the compiled kernels; zero padding counts in the divisor."""
    out.fill(0)
    with np.errstate(invalid="ignore"):  # inf + -inf is NaN, as in the compiled kernels
        for view in _taps(x, out, size, stride, pads, 0):
            out += view
    out /= size[0] * size[1]

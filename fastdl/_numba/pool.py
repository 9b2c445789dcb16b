"""Numba pooling kernels on channels-last (N, H, W, C) data, parallel over output rows.

The inner loop runs over C, contiguous in memory. With C == 1 (how the wrapper passes
NCHW data: N*C planes of one channel) it runs over the output columns instead, so
channels-first input is pooled in place without a transpose.
"""

import numpy as np
from numba import prange

from . import njit_serial, njit_parallel, run_parallel


@njit_serial
def _column_range(tap, out_w, in_w, sw, pad_left):
    """Output columns ow whose input column ow*sw + tap - pad_left is inside the input."""
    first = (pad_left - tap + sw - 1) // sw if pad_left > tap else 0
    last = in_w - 1 - tap + pad_left  # the largest ow*sw allowed
    return first, (min(out_w, last // sw + 1) if last >= 0 else 0)


@njit_parallel
def _max_pool_nhwc(x, out, kh, kw, sh, sw, pad_top, pad_left):
    n_batch, in_h, in_w, channels = x.shape
    _, out_h, out_w, _ = out.shape
    rows_in = x.reshape(n_batch, in_h, in_w * channels)  # 1-d rows vectorise better
    rows_out = out.reshape(n_batch, out_h, out_w * channels)
    # One task per output row (n, oh): each thread writes only its own rows. Taps that
    # fall in the padding are skipped, so padded cells never win.
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row % out_h
        h0 = oh * sh - pad_top
        dst = out[n, oh]
        dst[:] = -np.inf
        for ih in range(max(h0, 0), min(h0 + kh, in_h)):  # stream the input row by row
            src = x[n, ih]
            if channels == 1:  # NCHW planes: run along the output columns, tap by tap
                src_row, dst_row = rows_in[n, ih], rows_out[n, oh]
                for tap in range(kw):
                    first, stop = _column_range(tap, out_w, in_w, sw, pad_left)
                    for ow in range(first, stop):
                        v = src_row[ow * sw + tap - pad_left]
                        m = dst_row[ow]
                        # NaN wins, as in PyTorch: a window holding a NaN gives NaN
                        dst_row[ow] = v if (v > m) | (v != v) else m
            else:
                for ow in range(out_w):
                    w0 = ow * sw - pad_left
                    cell = dst[ow]
                    for iw in range(max(w0, 0), min(w0 + kw, in_w)):
                        pixel = src[iw]
                        for c in range(channels):
                            v = pixel[c]
                            m = cell[c]
                            cell[c] = v if (v > m) | (v != v) else m


@njit_parallel
def _avg_pool_nhwc(x, out, kh, kw, sh, sw, pad_top, pad_left):
    n_batch, in_h, in_w, channels = x.shape
    _, out_h, out_w, _ = out.shape
    rows_in = x.reshape(n_batch, in_h, in_w * channels)
    rows_out = out.reshape(n_batch, out_h, out_w * channels)
    # Padded cells count as zeros in the divisor (count_include_pad=True).
    scale = out.dtype.type(1.0) / out.dtype.type(kh * kw)
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row % out_h
        h0 = oh * sh - pad_top
        dst = out[n, oh]
        dst[:] = 0
        for ih in range(max(h0, 0), min(h0 + kh, in_h)):
            src = x[n, ih]
            if channels == 1:
                src_row, dst_row = rows_in[n, ih], rows_out[n, oh]
                for tap in range(kw):
                    first, stop = _column_range(tap, out_w, in_w, sw, pad_left)
                    for ow in range(first, stop):
                        dst_row[ow] += src_row[ow * sw + tap - pad_left]
            else:
                for ow in range(out_w):
                    w0 = ow * sw - pad_left
                    cell = dst[ow]
                    for iw in range(max(w0, 0), min(w0 + kw, in_w)):
                        pixel = src[iw]
                        for c in range(channels):
                            cell[c] += pixel[c]
        for ow in range(out_w):
            for c in range(channels):
                dst[ow, c] *= scale


def max_pool_nhwc(x, out, size, stride, pads, num_threads):
    """out[n, oh, ow, :] = max over the window's in-bounds cells of x (N, H, W, C);
    ``pads`` = (top, left): the bottom/right padding is implied by out's shape."""
    run_parallel(_max_pool_nhwc, num_threads, x, out, *size, *stride, *pads)


def avg_pool_nhwc(x, out, size, stride, pads, num_threads):
    """out[n, oh, ow, :] = sum over the window's in-bounds cells / (size_h * size_w)."""
    run_parallel(_avg_pool_nhwc, num_threads, x, out, *size, *stride, *pads)

"""Numba pooling kernels: channels-last, parallel over output rows, C streamed contiguously."""

import numpy as np
from numba import prange

from . import njit_parallel, run_parallel


@njit_parallel
def _max_pool_nhwc(x, out, kh, kw, sh, sw, pad_top, pad_left):
    n_batch, in_h, in_w, channels = x.shape
    _, out_h, out_w, _ = out.shape
    # One task per output row (n, oh): each thread writes only its own rows. Taps that
    # fall in the padding are skipped, so padded cells never win.
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row % out_h
        h0 = oh * sh - pad_top
        h_lo, h_hi = max(h0, 0), min(h0 + kh, in_h)
        dst_row = out[n, oh]
        for ow in range(out_w):
            dst = dst_row[ow]
            for c in range(channels):
                dst[c] = -np.inf
        for ih in range(h_lo, h_hi):  # stream the input row by row
            src_row = x[n, ih]
            for ow in range(out_w):
                w0 = ow * sw - pad_left
                dst = dst_row[ow]
                for iw in range(max(w0, 0), min(w0 + kw, in_w)):
                    src = src_row[iw]
                    for c in range(channels):
                        v = src[c]
                        m = dst[c]
                        # NaN wins, as in PyTorch: a window holding a NaN gives NaN
                        dst[c] = v if (v > m or v != v) else m


@njit_parallel
def _avg_pool_nhwc(x, out, kh, kw, sh, sw, pad_top, pad_left):
    n_batch, in_h, in_w, channels = x.shape
    _, out_h, out_w, _ = out.shape
    # Padded cells count as zeros in the divisor (count_include_pad=True).
    scale = out.dtype.type(1.0) / out.dtype.type(kh * kw)
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row % out_h
        h0 = oh * sh - pad_top
        h_lo, h_hi = max(h0, 0), min(h0 + kh, in_h)
        dst_row = out[n, oh]
        for ow in range(out_w):
            dst = dst_row[ow]
            for c in range(channels):
                dst[c] = 0
        for ih in range(h_lo, h_hi):
            src_row = x[n, ih]
            for ow in range(out_w):
                w0 = ow * sw - pad_left
                dst = dst_row[ow]
                for iw in range(max(w0, 0), min(w0 + kw, in_w)):
                    src = src_row[iw]
                    for c in range(channels):
                        dst[c] += src[c]
        for ow in range(out_w):
            dst = dst_row[ow]
            for c in range(channels):
                dst[c] *= scale


def max_pool_nhwc(x, out, size, stride, pads, num_threads):
    """out[n, oh, ow, :] = max over the window's in-bounds cells of x (N, H, W, C);
    ``pads`` = (top, left): the bottom/right padding is implied by out's shape."""
    run_parallel(_max_pool_nhwc, num_threads, x, out, *size, *stride, *pads)


def avg_pool_nhwc(x, out, size, stride, pads, num_threads):
    """out[n, oh, ow, :] = sum over the window's in-bounds cells / (size_h * size_w)."""
    run_parallel(_avg_pool_nhwc, num_threads, x, out, *size, *stride, *pads)

"""Numba pooling kernels on channels-last (N, H, W, C) data, parallel over output rows.

Same algorithm as the Cython kernel (kernels/pool_rows.h). Channels-last data is reduced
straight into the output row, input row by input row, along the contiguous channels.
With C == 1 (how the wrapper passes NCHW data: N*C planes of one channel, pooled in place
without a transpose) the inner loops run along the row instead: the common 2-wide,
stride-2 window reduces each input row's column pairs straight into the output row, with
a constant stride, so LLVM vectorises the two interleaved loads (a loop with a run-time
stride, or the tap-by-tap update of the output it replaced, does not: 4x slower); any
other window first reduces its input rows into a scratch line (unit stride, so it
vectorises), then each output column reduces its window's cells of that line.
A window holding a NaN gives NaN, as in PyTorch's max_pool2d.
"""

import numpy as np
from numba import prange, uint64 as _u

from . import njit_parallel, njit_serial, run_parallel


@njit_serial(inline="always")
def _combine(m, v, average):
    """m + v for average pooling; else the max, where NaN wins whichever side it is on
    (a select, so the loops vectorise)."""
    if average:
        return m + v
    return v if (v > m) | (v != v) else m


@njit_parallel
def _pool_nhwc(x, out, kh, kw, sh, sw, pad_top, pad_left, average, num_threads):
    n_batch, in_h, in_w, channels = x.shape
    _, out_h, out_w, _ = out.shape
    rows_in = x.reshape(n_batch, in_h, in_w * channels)  # 1-d rows vectorise better
    rows_out = out.reshape(n_batch, out_h, out_w * channels)
    # Padded cells count as zeros in the divisor (count_include_pad=True).
    scale = out.dtype.type(1.0) / out.dtype.type(kh * kw)
    rows = n_batch * out_h
    # A block of output rows per task (each writes only its own rows), so the scratch
    # line is allocated once per block; a few blocks per thread even out uneven rows.
    # The wrapper's padding rule guarantees every window at least one input row and column.
    num_blocks = 1 if num_threads == 1 else min(rows, 8 * num_threads)
    for block in prange(num_blocks):
        line = np.empty(in_w, x.dtype)
        for row in range(block * rows // num_blocks, (block + 1) * rows // num_blocks):
            n = row // out_h
            oh = row % out_h
            h0 = oh * sh - pad_top
            h_lo, h_hi = max(h0, 0), min(h0 + kh, in_h)
            dst = rows_out[n, oh]
            if channels > 1:
                # Flat unsigned indices, no slices: a signed index gets numba's wraparound
                # check, and a slice per cell costs more than the cell's 8-16 values
                # (16x16x8 avg pool, one thread: 1.63 -> 1.33 us; 2x112x112x64 248 ->
                # 223 us). A loop, not cell[:] = ...: numba's slice assignment checks for
                # overlap first.
                for ih in range(h_lo, h_hi):
                    src = rows_in[n, ih]
                    for ow in range(out_w):
                        w0 = ow * sw - pad_left
                        lo, hi = max(w0, 0), min(w0 + kw, in_w)
                        cell = _u(ow * channels)
                        if ih == h_lo:
                            first = _u(lo * channels)
                            for c in range(_u(channels)):
                                dst[cell + c] = src[first + c]
                            lo += 1
                        for iw in range(lo, hi):
                            pixel = _u(iw * channels)
                            for c in range(_u(channels)):
                                dst[cell + c] = _combine(dst[cell + c], src[pixel + c], average)
                if average:
                    for i in range(out_w * channels):
                        dst[i] *= scale
                continue
            # One channel. Every pass streams a single input row: reading two rows in one
            # loop runs at a third of the speed once the input is out of cache.
            if kw == 2 and sw == 2 and pad_left == 0:
                # the common window: column pairs of each input row, straight into dst
                src = rows_in[n, h_lo]
                for ow in range(out_w):
                    dst[ow] = _combine(src[2 * ow], src[2 * ow + 1], average)
                for ih in range(h_lo + 1, h_hi):
                    src = rows_in[n, ih]
                    for ow in range(out_w):
                        dst[ow] = _combine(dst[ow], _combine(src[2 * ow], src[2 * ow + 1],
                                                             average), average)
                if average:
                    for ow in range(out_w):
                        dst[ow] *= scale
                continue
            # any other window: its rows reduced into line, then each output column
            line[:] = rows_in[n, h_lo]
            for ih in range(h_lo + 1, h_hi):
                src = rows_in[n, ih]
                for i in range(in_w):
                    line[i] = _combine(line[i], src[i], average)
            for ow in range(out_w):
                w0 = ow * sw - pad_left
                lo, hi = max(w0, 0), min(w0 + kw, in_w)
                r = line[lo]
                for iw in range(lo + 1, hi):
                    r = _combine(r, line[iw], average)
                dst[ow] = r * scale if average else r


def max_pool_nhwc(x, out, size, stride, pads, num_threads):
    """out[n, oh, ow, :] = max over the window's in-bounds cells of x (N, H, W, C);
    ``pads`` = (top, left): the bottom/right padding is implied by out's shape."""
    (kh, kw), (sh, sw), (top, left) = size, stride, pads
    run_parallel(_pool_nhwc, num_threads, x, out, kh, kw, sh, sw, top, left, False,
                 num_threads)


def avg_pool_nhwc(x, out, size, stride, pads, num_threads):
    """out[n, oh, ow, :] = sum over the window's in-bounds cells / (size_h * size_w)."""
    (kh, kw), (sh, sw), (top, left) = size, stride, pads
    run_parallel(_pool_nhwc, num_threads, x, out, kh, kw, sh, sw, top, left, True,
                 num_threads)

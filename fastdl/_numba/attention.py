"""Numba sliding-window attention: fused scores, masked softmax and value sum per pixel.

Nothing window-sized is materialised: the channel norms are folded into per-image keys
(N * KH * KW * C_in * C_out values), and each output pixel's KH*KW*C_out scores live in
a per-row scratch buffer.
"""

import math

import numpy as np
from numba import prange

from . import njit_parallel, run_parallel


@njit_parallel
def _attention_nhwc(x, key, value, out, sh, sw, pad_top, pad_left, normalize):
    n_batch, in_h, in_w, in_c = x.shape
    _, out_h, out_w, out_c = out.shape
    k_h, k_w = value.shape[0], value.shape[1]

    # Per-image keys with the channel norms folded in: key[a, b, c, o] / ||x[n, :, :, c]||.
    # Squares are summed in float64, one partial sum per input row (parallel for any N).
    if normalize:
        row_sums = np.zeros((n_batch * in_h, in_c), np.float64)
        for row in prange(n_batch * in_h):
            n = row // in_h
            h = row % in_h
            for w in range(in_w):
                for c in range(in_c):
                    v = np.float64(x[n, h, w, c])
                    row_sums[row, c] += v * v
        keys = np.empty((n_batch,) + key.shape, key.dtype)
        for n in prange(n_batch):
            for c in range(in_c):
                sq = 0.0
                for h in range(in_h):
                    sq += row_sums[n * in_h + h, c]
                norm = math.sqrt(sq)
                # a zero channel stays zero: key * 0 (so an inf/NaN key still gives NaN)
                for a in range(k_h):
                    for b in range(k_w):
                        for o in range(out_c):
                            if norm == 0.0:
                                keys[n, a, b, c, o] = key[a, b, c, o] * 0.0
                            else:
                                keys[n, a, b, c, o] = key[a, b, c, o] / norm
    else:
        keys = key.reshape((1,) + key.shape)

    # One task per output row (n, i): each thread writes only its own rows.
    for row in prange(n_batch * out_h):
        n = row // out_h
        i = row % out_h
        image_keys = keys[n if normalize else 0]
        scores = np.empty((k_h * k_w, out_c), out.dtype)
        totals = np.empty(out_c, out.dtype)
        weighted = np.empty(out_c, out.dtype)
        top = i * sh - pad_top
        a_lo = max(0, -top)
        a_hi = min(k_h, in_h - top)
        for j in range(out_w):
            left = j * sw - pad_left
            b_lo = max(0, -left)
            b_hi = min(k_w, in_w - left)
            acc = out[n, i, j]
            # scores of the valid window positions, and their running max per channel
            for o in range(out_c):
                acc[o] = -np.inf
            for a in range(a_lo, a_hi):
                for b in range(b_lo, b_hi):
                    s = scores[a * k_w + b]
                    s[:] = 0
                    pixel = x[n, top + a, left + b]
                    tap = image_keys[a, b]
                    for c in range(in_c):
                        v = pixel[c]
                        for o in range(out_c):  # contiguous over output channels
                            s[o] += v * tap[c, o]
                    for o in range(out_c):
                        acc[o] = max(acc[o], s[o])
            # softmax-weighted values: sum(e * v) / sum(e), e = exp(s - max) <= 1
            totals[:] = 0
            weighted[:] = 0
            for a in range(a_lo, a_hi):
                for b in range(b_lo, b_hi):
                    s = scores[a * k_w + b]
                    v = value[a, b]
                    for o in range(out_c):
                        e = math.exp(s[o] - acc[o])
                        totals[o] += e
                        weighted[o] += e * v[o]
            for o in range(out_c):
                acc[o] = weighted[o] / totals[o]

def _writable(array):
    """Numba compiles a separate specialisation (~10 s) for each mix of read-only inputs;
    a copy of a read-only input costs far less than that, and little next to the kernel."""
    return array if array.flags.writeable else array.copy()


def attention_nhwc(x, key, value, out, stride, pads, normalize, num_threads):
    """out[n, i, j, :] = masked-softmax-weighted values; x is unpadded, ``pads`` are the
    (top, left) paddings, whose positions are left out of the softmax."""
    run_parallel(_attention_nhwc, num_threads, _writable(x), _writable(key), _writable(value),
                 out, stride[0], stride[1], pads[0], pads[1], normalize)

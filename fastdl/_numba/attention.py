"""Numba sliding-window attention: scores, masked softmax and value sum fused per output
row.

Nothing window-sized is materialised. The channel norms are folded into per-image keys
(N * KH * KW * C_in * C_out values). Each thread works through a block of output rows
with its own scratch: the input rows of the current output row, channel-major (C_in, W),
so the score loops run along the row (vectorised over output columns), kept in a ring
of KH rows (input row h in slot h % KH) so that each input row is copied once per block,
not once per output row; and the row's KH*KW*C_out*Wo scores. Window positions in the
padding are never visited: for each window offset, only the output columns and rows
whose position lands inside the input are computed and summed. Both layouts are read
and written in place (attention_nhwc, attention_nchw): channels-first input rows are
copied into the ring as they are, channels-last ones transposed.
"""

import math

import numpy as np
from numba import prange

from . import njit_parallel, njit_serial, run_parallel
from .fastmath import fast_exp


@njit_serial
def _valid_range(offset, pad, stride, in_size, out_size):
    """Outputs [first, stop) whose window offset ``offset`` lands inside the input."""
    first = max(0, -((offset - pad) // stride))  # ceil((pad - offset) / stride)
    stop = min(out_size, (in_size - 1 + pad - offset) // stride + 1)
    return first, max(first, stop)


@njit_serial
def _fold_norms(key, partial_sums):
    """(N, KH, KW, C_in, C_out) keys: key / ||x[n, :, :, c]|| per image, from
    (N, parts, C_in) partial sums of squares (a zero channel: key * 0, so it stays zero
    and an inf/NaN key still gives NaN)."""
    n_batch = partial_sums.shape[0]
    keys = np.empty((n_batch,) + key.shape, key.dtype)
    for n in range(n_batch):
        for c in range(key.shape[2]):
            norm = math.sqrt(partial_sums[n, :, c].sum())
            for a in range(key.shape[0]):
                for b in range(key.shape[1]):
                    for o in range(key.shape[3]):
                        if norm == 0.0:
                            keys[n, a, b, c, o] = key[a, b, c, o] * 0.0
                        else:
                            keys[n, a, b, c, o] = key[a, b, c, o] / norm
    return keys


@njit_parallel
def _square_sums(x, channels_first):
    """(N, parts, C) partial sums of squares per image and channel, in float64: per input
    row (N, H, C) for channels-last x (N, H, W, C), so the work splits for any N; per
    contiguous channel plane (N, 1, C) for channels-first x (N, C, H, W)."""
    n_batch = x.shape[0]
    if channels_first:
        in_c = x.shape[1]
        planes = x.reshape(n_batch * in_c, x.shape[2] * x.shape[3])
        sums = np.empty((n_batch, 1, in_c), np.float64)
        for plane in prange(n_batch * in_c):
            total = 0.0
            for i in range(planes.shape[1]):
                v = np.float64(planes[plane, i])
                total += v * v
            sums[plane // in_c, 0, plane % in_c] = total
        return sums
    in_h, in_w, in_c = x.shape[1], x.shape[2], x.shape[3]
    sums = np.zeros((n_batch, in_h, in_c), np.float64)
    for row in prange(n_batch * in_h):
        n = row // in_h
        h = row % in_h
        for w in range(in_w):
            for c in range(in_c):
                v = np.float64(x[n, h, w, c])
                sums[n, h, c] += v * v
    return sums


@njit_parallel
def _attention_rows(x, keys, value, out, sh, sw, pad_top, pad_left, channels_first,
                    num_blocks):
    n_batch = x.shape[0]
    if channels_first:
        _, in_c, in_h, in_w = x.shape
        _, out_c, out_h, out_w = out.shape
    else:
        _, in_h, in_w, in_c = x.shape
        _, out_h, out_w, out_c = out.shape
    k_h, k_w = value.shape[0], value.shape[1]
    dtype = out.dtype
    col_ranges = np.empty((k_w, 2), np.int64)  # valid output columns per column offset
    for b in range(k_w):
        col_ranges[b, 0], col_ranges[b, 1] = _valid_range(b, pad_left, sw, in_w, out_w)
    rows = n_batch * out_h
    # one block of consecutive output rows per task: each writes only its own rows
    for block in prange(num_blocks):
        # input rows, channel-major, in a ring: input row h sits in slot h % KH, so the
        # next output row (which shares KH - sh input rows) copies only its new rows
        rows_t = np.empty((k_h, in_c, in_w), dtype)
        slot_holds = np.full(k_h, -1, np.int64)  # the (n * in_h + h) in each slot
        scores = np.empty((k_h, k_w, out_c, out_w), dtype)
        peak = np.empty((out_c, out_w), dtype)
        total = np.empty((out_c, out_w), dtype)
        weighted = np.empty((out_c, out_w), dtype)
        for row in range(block * rows // num_blocks, (block + 1) * rows // num_blocks):
            n = row // out_h
            top = (row % out_h) * sh - pad_top
            a_lo = max(0, -top)
            a_hi = min(k_h, in_h - top)
            for a in range(a_lo, a_hi):
                h = top + a
                slot = h % k_h
                if slot_holds[slot] != n * in_h + h:
                    slot_holds[slot] = n * in_h + h
                    if channels_first:
                        for c in range(in_c):
                            rows_t[slot, c] = x[n, c, h]
                    else:
                        for w in range(in_w):
                            for c in range(in_c):
                                rows_t[slot, c, w] = x[n, h, w, c]
            image_keys = keys[n if keys.shape[0] > 1 else 0]
            peak[:] = -np.inf
            # inner loops run over 0-based ranges of 1-d slices: indices numba can prove
            # non-negative (no wraparound check), so LLVM vectorises them
            for a in range(a_lo, a_hi):
                for b in range(k_w):
                    j_lo, j_hi = col_ranges[b, 0], col_ranges[b, 1]
                    count = j_hi - j_lo
                    start = j_lo * sw + b - pad_left
                    slot = (top + a) % k_h
                    for o in range(out_c):
                        s = scores[a, b, o, j_lo:j_hi]
                        s[:] = 0
                        if sw == 1:
                            # four channels per pass over the row: 5 loads and 1 store per 4
                            # multiply-adds instead of 12 memory operations
                            c = 0
                            while c + 4 <= in_c:
                                k0, k1 = image_keys[a, b, c, o], image_keys[a, b, c + 1, o]
                                k2, k3 = image_keys[a, b, c + 2, o], image_keys[a, b, c + 3, o]
                                l0 = rows_t[slot, c, start:start + count]
                                l1 = rows_t[slot, c + 1, start:start + count]
                                l2 = rows_t[slot, c + 2, start:start + count]
                                l3 = rows_t[slot, c + 3, start:start + count]
                                for j in range(count):
                                    s[j] += l0[j] * k0 + l1[j] * k1 + l2[j] * k2 + l3[j] * k3
                                c += 4
                            if in_c - c == 3:  # e.g. RGB input: one pass, not three
                                k0, k1 = image_keys[a, b, c, o], image_keys[a, b, c + 1, o]
                                k2 = image_keys[a, b, c + 2, o]
                                l0 = rows_t[slot, c, start:start + count]
                                l1 = rows_t[slot, c + 1, start:start + count]
                                l2 = rows_t[slot, c + 2, start:start + count]
                                for j in range(count):
                                    s[j] += l0[j] * k0 + l1[j] * k1 + l2[j] * k2
                                c += 3
                            for c in range(c, in_c):
                                k = image_keys[a, b, c, o]
                                line = rows_t[slot, c, start:start + count]
                                for j in range(count):
                                    s[j] += line[j] * k
                        else:
                            for c in range(in_c):
                                k = image_keys[a, b, c, o]
                                strided = rows_t[slot, c, start:start + (count - 1) * sw + 1:sw]
                                for j in range(count):
                                    s[j] += strided[j] * k
                        top_o = peak[o, j_lo:j_hi]
                        for j in range(count):
                            # NaN needs no care: exp(NaN - peak) makes the output NaN
                            if s[j] > top_o[j]:
                                top_o[j] = s[j]
            # softmax-weighted values: sum(e * v) / sum(e), e = exp(s - peak) <= 1
            total[:] = 0
            weighted[:] = 0
            for a in range(a_lo, a_hi):
                for b in range(k_w):
                    j_lo, j_hi = col_ranges[b, 0], col_ranges[b, 1]
                    for o in range(out_c):
                        v = value[a, b, o]
                        s = scores[a, b, o, j_lo:j_hi]
                        top_o = peak[o, j_lo:j_hi]
                        total_o = total[o, j_lo:j_hi]
                        weighted_o = weighted[o, j_lo:j_hi]
                        for j in range(j_hi - j_lo):
                            e = fast_exp(s[j] - top_o[j])
                            total_o[j] += e
                            weighted_o[j] += e * v
            if channels_first:
                for o in range(out_c):
                    dst = out[n, o, row % out_h]
                    for j in range(out_w):
                        dst[j] = weighted[o, j] / total[o, j]
            else:
                for j in range(out_w):
                    for o in range(out_c):
                        out[n, row % out_h, j, o] = weighted[o, j] / total[o, j]


def _writable(array):
    """Numba compiles a separate specialisation (~10 s) for each mix of read-only inputs;
    a copy of a read-only input costs far less than that, and little next to the kernel."""
    return array if array.flags.writeable else array.copy()


def _attention(x, key, value, out, stride, pads, normalize, num_threads, channels_first):
    x, key = _writable(x), _writable(key)
    if normalize:
        keys = _fold_norms(key, run_parallel(_square_sums, num_threads, x, channels_first))
    else:
        keys = key.reshape((1,) + key.shape)
    # a few blocks per thread evens out rows that differ in cost (masked border rows)
    rows = out.shape[0] * (out.shape[2] if channels_first else out.shape[1])
    num_blocks = min(rows, 4 * num_threads)
    run_parallel(_attention_rows, num_threads, x, keys, _writable(value), out, stride[0],
                 stride[1], pads[0], pads[1], channels_first, num_blocks)


def attention_nhwc(x, key, value, out, stride, pads, normalize, num_threads):
    """out[n, i, j, :] = masked-softmax-weighted values; x (N, H, W, C_in) is unpadded,
    ``pads`` are the (top, left) paddings, whose positions are left out of the softmax;
    key (KH, KW, C_in, C_out), value (KH, KW, C_out)."""
    _attention(x, key, value, out, stride, pads, normalize, num_threads, False)


def attention_nchw(x, key, value, out, stride, pads, normalize, num_threads):
    """attention_nhwc on channels-first x (N, C_in, H, W) and out (N, C_out, Ho, Wo);
    key and value as for attention_nhwc."""
    _attention(x, key, value, out, stride, pads, normalize, num_threads, True)

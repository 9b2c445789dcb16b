"""NumPy sliding-window attention: one strided-view matrix product per window position.

Two passes over the window positions (the first finds each output's max score, the
second sums exp(score - max) and the weighted values), so memory stays at a few
output-sized arrays. Each position only touches the outputs whose window puts it inside
the input: padded positions are masked by never being visited.
"""

import numpy as np


def _valid_outputs(offset, pad, stride, in_size, out_size):
    """The outputs (a slice) whose window position ``offset`` lands inside the input, and
    the matching input slice."""
    # input index of output i is i*stride + offset - pad; keep 0 <= it < in_size
    first = max(0, -(-(pad - offset) // stride))
    last = min(out_size - 1, (in_size - 1 + pad - offset) // stride)
    if last < first:
        return None, None
    start = first * stride + offset - pad
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


def attention_nhwc(x, key, value, out, stride, pads, normalize, num_threads):
    """Same contract as the compiled kernels; ``num_threads`` is ignored."""
    # NaN/Inf propagate silently, as in the compiled kernels
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        _attention(x, key, value, out, stride, pads, normalize)


def _attention(x, key, value, out, stride, pads, normalize):
    n_batch, in_h, in_w, _ = x.shape
    _, out_h, out_w, _ = out.shape
    k_h, k_w = value.shape[:2]
    if normalize:
        norms = np.sqrt(np.einsum("nhwc,nhwc->nc", x, x, dtype=np.float64))
        safe = np.where(norms == 0, 1.0, norms)[:, None, None, :, None]
        # a zero channel stays zero: key * 0 (so an inf/NaN key still gives NaN)
        keys = np.where(norms[:, None, None, :, None] == 0, key * 0, key / safe)
        keys = keys.astype(out.dtype)[:, :, :, None]  # (N, KH, KW, 1, C_in, C_out)
    else:
        keys = key[None, :, :, None]
    taps = []
    for a in range(k_h):
        rows, in_rows = _valid_outputs(a, pads[0], stride[0], in_h, out_h)
        for b in range(k_w):
            cols, in_cols = _valid_outputs(b, pads[1], stride[1], in_w, out_w)
            if rows is not None and cols is not None:
                taps.append((a, b, (slice(None), rows, cols), x[:, in_rows, in_cols]))

    def scores(a, b, window):
        return window @ keys[:, a, b]  # (N, h, w, C_in) @ (N or 1, 1, C_in, C_out)

    peak = np.full(out.shape, -np.inf, out.dtype)
    for a, b, region, window in taps:
        np.maximum(peak[region], scores(a, b, window), out=peak[region])
    total = np.zeros(out.shape, out.dtype)
    out[...] = 0
    for a, b, region, window in taps:
        e = np.exp(scores(a, b, window) - peak[region])
        total[region] += e
        out[region] += e * value[a, b]
    out /= total


def attention_nchw(x, key, value, out, stride, pads, normalize, num_threads):
    """attention_nhwc on channels-first x (N, C_in, H, W) and out (N, C_out, Ho, Wo);
    key and value as for attention_nhwc. The reference backend simply transposes."""
    out_last = np.empty(out.shape[:1] + out.shape[2:] + out.shape[1:2], out.dtype)
    attention_nhwc(np.ascontiguousarray(np.moveaxis(x, 1, -1)), key, value, out_last,
                   stride, pads, normalize, num_threads)
    out[...] = np.moveaxis(out_last, -1, 1)

"""Naive loop references: slow, written straight from the definitions, obviously right.

They take the public functions' arguments (channels-last layouts only) and compute in
float64 with plain Python loops over output elements. Tests hold every backend to them;
the benchmarks time them on small shapes.
"""

import itertools
import math

import numpy as np

from . import _checks

# ---------------------------------------------------------------------------------------
# Convolution


def conv_nd(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation of a batched channels-last x (N, *spatial, C_in) with weight
    (*kernel, C_in/groups, C_out); any number of spatial dims. Returns float64."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    nd = x.ndim - 2
    kernel = weight.shape[:nd]
    c_in, (c_per_group, c_out) = x.shape[-1], weight.shape[nd:]
    stride = _checks.int_tuple("stride", stride, nd, 1)
    dilation = _checks.int_tuple("dilation", dilation, nd, 1)
    pads = _checks.padding_pairs(padding, nd, kernel, dilation, stride)
    out_spatial = _checks.window_output_shape(x.shape[1:-1], kernel, stride, pads, dilation)
    o_per_group = c_out // groups
    out = np.zeros((x.shape[0],) + out_spatial + (c_out,))
    for n in range(x.shape[0]):
        for pos in itertools.product(*(range(s) for s in out_spatial)):
            for o in range(c_out):
                g = o // o_per_group
                total = 0.0 if bias is None else float(bias[o])
                for tap in itertools.product(*(range(k) for k in kernel)):
                    # input coordinate of this tap; outside the input = zero padding
                    coord = [p * s + t * d - lo for p, s, t, d, (lo, _)
                             in zip(pos, stride, tap, dilation, pads)]
                    if any(c < 0 or c >= size for c, size in zip(coord, x.shape[1:-1])):
                        continue
                    for c in range(c_per_group):
                        total += x[(n, *coord, g * c_per_group + c)] * weight[(*tap, c, o)]
                out[(n, *pos, o)] = total
    assert c_in == c_per_group * groups
    return out


# ---------------------------------------------------------------------------------------
# Batch normalization


def channel_statistics(x, axis=-1):
    """Per-channel mean and biased variance of x over every axis but ``axis``, two passes
    of plain float64 loops. Returns two float64 arrays of shape (C,)."""
    x = np.asarray(x, dtype=np.float64)
    axis %= x.ndim
    channels = x.shape[axis]
    total = np.zeros(channels)
    count = 0
    for index in np.ndindex(x.shape):
        total[index[axis]] += x[index]
        count += 1
    count //= channels
    mean = total / count
    squares = np.zeros(channels)
    for index in np.ndindex(x.shape):
        squares[index[axis]] += (x[index] - mean[index[axis]]) ** 2
    return mean, squares / count


def batch_norm(x, gamma, beta, eps=1e-5, training=True, running_mean=None, running_var=None,
               decay=0.9, axis=-1):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel, element by element.

    Training: batch statistics, and returns (out, new_running_mean, new_running_var) with
    ``new = decay * running + (1 - decay) * batch`` (None when no running arrays are
    given); the arguments are not modified. Eval: the running statistics. float64."""
    x = np.asarray(x, dtype=np.float64)
    axis %= x.ndim
    if training:
        mean, var = channel_statistics(x, axis)
    else:
        mean = np.asarray(running_mean, dtype=np.float64)
        var = np.asarray(running_var, dtype=np.float64)
    out = np.empty(x.shape)
    for index in np.ndindex(x.shape):
        c = index[axis]
        out[index] = gamma[c] * (x[index] - mean[c]) / np.sqrt(var[c] + eps) + beta[c]
    if not training or running_mean is None:
        return out, None, None
    new_mean = [decay * float(r) + (1 - decay) * m for r, m in zip(running_mean, mean)]
    new_var = [decay * float(r) + (1 - decay) * v for r, v in zip(running_var, var)]
    return out, np.array(new_mean), np.array(new_var)


# ---------------------------------------------------------------------------------------
# Pooling


def _pool(x, size, stride, padding, reduce):
    """Apply ``reduce(values)`` to the in-bounds input values of each window of a
    batched channels-last x (N, H, W, C)."""
    x = np.asarray(x, dtype=np.float64)
    size, stride, pads, (out_h, out_w) = _checks.pool_geometry(x.shape[1:3], size, stride, padding)
    out = np.empty((x.shape[0], out_h, out_w, x.shape[3]))
    for n, i, j, c in itertools.product(*(range(s) for s in out.shape)):
        values = []
        for a in range(size[0]):
            for b in range(size[1]):
                row = i * stride[0] + a - pads[0][0]
                col = j * stride[1] + b - pads[1][0]
                if 0 <= row < x.shape[1] and 0 <= col < x.shape[2]:  # else: padding
                    values.append(float(x[n, row, col, c]))
        out[n, i, j, c] = reduce(values)
    return out


def max_pool2d(x, size=2, stride=None, padding=0):
    """Max pooling of a batched channels-last x (N, H, W, C); padded cells are left out
    and a window holding a NaN gives NaN. Returns float64."""
    return _pool(x, size, stride, padding,
                 lambda values: math.nan if any(map(math.isnan, values)) else max(values))


def avg_pool2d(x, size=2, stride=None, padding=0):
    """Average pooling of a batched channels-last x (N, H, W, C); padded cells count as
    zeros (the divisor is always size_h * size_w). Returns float64."""
    kh, kw = _checks.int_tuple("size", size, 2, 1)
    return _pool(x, size, stride, padding, lambda values: sum(values) / (kh * kw))


# ---------------------------------------------------------------------------------------
# Sliding-window attention


def sliding_window_attention(x, key, value, stride=1, padding="valid", normalize=True):
    """The attention layer straight from its definition, channels-last: x (N, H, W, C_in),
    key (KH, KW, C_in, C_out), value (KH, KW, C_out) or (KH, KW, 1, C_out). Window
    positions in the padding are left out of the softmax. Returns float64."""
    x = np.asarray(x, dtype=np.float64)
    key = np.asarray(key, dtype=np.float64)
    k_h, k_w, _, c_out = key.shape
    value = np.asarray(value, dtype=np.float64).reshape(k_h, k_w, c_out)
    in_h, in_w = x.shape[1:3]
    stride = _checks.int_tuple("stride", stride, 2, 1)
    pads = _checks.padding_pairs(padding, 2, (k_h, k_w), (1, 1), stride)
    out_h, out_w = _checks.window_output_shape((in_h, in_w), (k_h, k_w), stride, pads, (1, 1))
    with np.errstate(invalid="ignore"):  # NaN/Inf propagate silently
        return _attention_loops(x, key, value, stride, pads, (out_h, out_w), normalize)


def _attention_loops(x, key, value, stride, pads, out_spatial, normalize):
    n_batch, in_h, in_w, c_in = x.shape
    k_h, k_w, _, c_out = key.shape
    out_h, out_w = out_spatial
    xn = x.copy()
    if normalize:
        for n in range(n_batch):
            for c in range(c_in):
                norm = np.sqrt(sum(x[n, h, w, c] ** 2 for h in range(in_h) for w in range(in_w)))
                if norm != 0:  # a zero channel stays zero
                    xn[n, :, :, c] = x[n, :, :, c] / norm
    out = np.zeros((n_batch, out_h, out_w, c_out))
    for n in range(n_batch):
        for i in range(out_h):
            for j in range(out_w):
                for o in range(c_out):
                    scores = {}
                    for a in range(k_h):
                        for b in range(k_w):
                            r = i * stride[0] + a - pads[0][0]
                            q = j * stride[1] + b - pads[1][0]
                            if 0 <= r < in_h and 0 <= q < in_w:  # padding is masked
                                scores[a, b] = sum(xn[n, r, q, c] * key[a, b, c, o]
                                                   for c in range(c_in))
                    peak = max(scores.values())
                    if np.isnan(list(scores.values())).any():
                        peak = np.nan
                    weights = {ab: np.exp(s - peak) for ab, s in scores.items()}
                    total = sum(weights.values())
                    out[n, i, j, o] = sum(w / total * value[ab][o] for ab, w in weights.items())
    return out

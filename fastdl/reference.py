"""Naive loop references: slow, written straight from the definitions, obviously right.

They take the public functions' arguments (channels-last layouts only) and compute in
float64 with plain Python loops over output elements. Tests hold every backend to them;
the benchmarks time them on small shapes.
"""

import itertools

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

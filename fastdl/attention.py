"""sliding_window_attention: the exams' image attention layer, generalised.

For every output pixel and output channel, a softmax over the window positions of
(normalised input . key) scores weights the per-position values. The wrapper validates,
makes the one contiguous copy of each input the kernel needs (dtype, byte order and
layout fixed in one go; no padded copy: padded positions are masked in the kernel) and
allocates the output, so kernels only compute. Channels-first data goes to each
backend's ``attention_nchw``, which the compiled backends run in place (the NumPy one
transposes).
"""

import numpy as np

from . import _checks, _scratch
from ._dispatch import get_num_threads, kernels


def sliding_window_attention(x, key, value, *, stride=1, padding="valid", normalize=True,
                             layout="NHWC", backend=None):
    """Sliding-window attention over an image batch.

    x: (N, H, W, C_in) or unbatched (H, W, C_in); key: (KH, KW, C_in, C_out); value:
    (KH, KW, C_out) or (KH, KW, 1, C_out). With ``layout="NCHW"``: x (N, C_in, H, W),
    key (C_out, C_in, KH, KW), value (C_out, KH, KW) or (C_out, 1, KH, KW).

    ``normalize=True`` first divides each image's channel c by its Frobenius norm over
    (H, W) (a channel whose norm is 0 stays 0). Then for output pixel (i, j), channel o
    and window offsets (a, b)::

        s[a, b] = sum_c xn[i*sh + a - pad_top, j*sw + b - pad_left, c] * key[a, b, c, o]
        y[i, j, o] = sum_{a, b} softmax(s)[a, b] * value[a, b, o]

    with a numerically stable softmax over the window positions. Window positions in the
    padding are left out of the softmax (masked), not treated as zero pixels; each side's
    padding must therefore be smaller than the window. ``stride`` is an int or a pair;
    ``padding`` an int, a pair, "valid" or "same" (odd window, stride 1). The output is
    (N, Ho, Wo, C_out) ((N, C_out, Ho, Wo) for "NCHW"; unbatched in, unbatched out) with
    the usual convolution output size, in ``np.result_type`` of the inputs (float32 stays
    float32; ints and bools compute in float64). NaN/Inf propagate: with ``normalize``, a
    NaN anywhere in channel c of an image makes that channel's norm, and so every output
    of that image, NaN.

    Channel norms are summed in float64. The compiled backends compute float32 softmax
    weights with a vectorised polynomial exp (within 1 ulp of the correctly rounded
    exp; +-inf and NaN as ``np.exp``) and never allocate anything window-sized.
    """
    spec = _checks.attention_arguments(x, key, value, stride, padding, normalize, layout)
    module = kernels("attention", backend)
    dtype = spec.dtype
    n = spec.x.shape[0]
    out_channels = spec.key.shape[-1]
    # Channels-first data goes to the backend's NCHW kernel, which the compiled backends
    # read and write in place (a transposing copy of a 64-channel batch costs more than
    # the attention itself).
    if spec.channels_first:
        out = _scratch.result((n, out_channels) + spec.out_spatial, dtype)
        x_in = _checks.kernel_array(np.moveaxis(spec.x, -1, 1), dtype)
    else:
        out = _scratch.result((n,) + spec.out_spatial + (out_channels,), dtype)
        x_in = _checks.kernel_array(spec.x, dtype)
    if n:
        leading_pads = (spec.pads[0][0], spec.pads[1][0])
        run = module.attention_nchw if spec.channels_first else module.attention_nhwc
        run(x_in, _checks.kernel_array(spec.key, dtype), _checks.kernel_array(spec.value, dtype),
            out, spec.stride, leading_pads, spec.normalize, get_num_threads())
    return out if spec.batched else out[0]

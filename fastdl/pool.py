"""max_pool2d / avg_pool2d: validate in Python, then run one backend's kernel.

The kernels work on channels-last (N, H, W, C) data and stream C contiguously; they
skip window cells that fall in the padding instead of reading a padded copy, so an
NHWC float input that is already C-contiguous is not copied at all. NCHW input is
pooled without a transpose, as N*C single-channel images (the kernels then run along
the rows); an NCHW-shaped view of channels-last memory takes the channels-last path.
"""

import numpy as np

from . import _checks, _scratch
from ._dispatch import kernels, threads_for


def max_pool2d(x, size=2, stride=None, padding=0, *, layout="NHWC", backend=None):
    """2-d max pooling.

    x: (N, H, W, C) or an unbatched (H, W, C) image for layout "NHWC"; (N, C, H, W) or
    (C, H, W) for "NCHW". ``size``, ``stride`` (default: ``size``) and ``padding`` are
    ints or (h, w) tuples; ``padding`` also takes "valid" and "same". Each padding must
    be at most half the window (PyTorch's rule). Padded cells never win the max, and a
    window holding a NaN gives NaN (as PyTorch's max_pool2d). Output
    (N, Ho, Wo, C) (or the layout's equivalent) with Ho = (H + 2p - size) // stride + 1;
    float32 stays float32, integer/bool input gives float64.
    """
    return _pool("max_pool_nhwc", x, size, stride, padding, layout, backend)


def avg_pool2d(x, size=2, stride=None, padding=0, *, layout="NHWC", backend=None):
    """2-d average pooling, arguments as ``max_pool2d``.

    Padded cells count as zeros and every window is divided by size_h * size_w
    (PyTorch's default ``count_include_pad=True``); windows never extend past the
    padded input (PyTorch's ``ceil_mode=False``).
    """
    return _pool("avg_pool_nhwc", x, size, stride, padding, layout, backend)


def _pool(kernel_name, x, size, stride, padding, layout, backend):
    x, geometry = _checks.pool_arguments(x, size, stride, padding, layout)
    kernel = getattr(kernels("pool", backend), kernel_name)
    if not geometry.batched:
        x = x[np.newaxis]
    if geometry.channels_first:  # a view: the one copy happens when the kernel input is made
        x = np.moveaxis(x, 1, -1)
    n, in_h, in_w, channels = x.shape
    out_h, out_w = geometry.out_spatial
    dtype = x.dtype
    # a small input's result (about its size or less) comes from malloc's reused blocks
    # anyway: skip _scratch.result's checks (0.2 us of a 3 us call)
    new_result = np.empty if x.nbytes < _scratch.MIN_BYTES else _scratch.result
    if geometry.channels_first and not x.flags.c_contiguous:
        # NCHW memory: pool the N*C planes in place as single-channel images.
        out = new_result((n, channels, out_h, out_w), dtype)
        if out.size:
            planes = np.ascontiguousarray(np.moveaxis(x, -1, 1))
            kernel(planes.reshape(n * channels, in_h, in_w, 1),
                   out.reshape(n * channels, out_h, out_w, 1), geometry.size, geometry.stride,
                   geometry.kernel_pads, threads_for(planes.size))
    else:
        out = new_result((n, out_h, out_w, channels), dtype)
        if out.size:
            # The one copy the kernel may need: C order (x is native-endian float already).
            xc = np.ascontiguousarray(x)
            kernel(xc, out, geometry.size, geometry.stride, geometry.kernel_pads,
                   threads_for(xc.size))
        if geometry.channels_first:  # NCHW shape over channels-last memory: return NCHW
            out = np.ascontiguousarray(np.moveaxis(out, -1, 1))
    return out if geometry.batched else out[0]

"""conv1d / conv2d / conv3d: validate in Python, then run one backend's kernel.

All three share one kernel that works on channels-last 3-d data (N, D, H, W, C) with
(KD, KH, KW, C_in/groups, C_out) weights: conv2d is D = 1, conv1d is D = H = 1. The
wrapper makes the single copy the kernel needs (zero padding, dtype, byte order and
layout fixed in one go) and allocates the output, so kernels only compute. Channels-first
calls go through the backend's cache-blocked transpose ``to_channels_last`` on the way
in; on the way out the SMALL path (kernel-sized reductions, grouped or not, see
_conv_plan) writes the channels-first output itself (``conv_ndhwc(...,
channels_first_out=True)``), the other paths compute channels-last and go through
``to_channels_first``. Two calls skip the copy's work: the SMALL path reads a
channels-first input with few channels as it is (``channels_first_in``), and the
DEPTHWISE path, when every weight is finite, skips the padded taps (``pads``) rather than
reading a zero-padded copy.
"""

import math

import numpy as np

from . import _checks, _conv_plan, _scratch
from ._dispatch import get_num_threads, kernels, threads_for


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NWC", backend=None):
    """1-d cross-correlation. x: (N, W, C_in) or (W, C_in) for layout "NWC" with weight
    (KW, C_in/groups, C_out); layout "NCW": x (N, C_in, W), weight (C_out, C_in/groups, KW)."""
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, layout, backend)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NHWC", backend=None):
    """2-d cross-correlation. x: (N, H, W, C_in) or (H, W, C_in) for layout "NHWC" with
    weight (KH, KW, C_in/groups, C_out); layout "NCHW": x (N, C_in, H, W), weight
    (C_out, C_in/groups, KH, KW). ``padding``: int, per-dim tuple, "valid" or "same"."""
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, layout, backend)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NDHWC", backend=None):
    """3-d cross-correlation. x: (N, D, H, W, C_in) or unbatched for layout "NDHWC" with
    weight (KD, KH, KW, C_in/groups, C_out); layout "NCDHW": x (N, C_in, D, H, W),
    weight (C_out, C_in/groups, KD, KH, KW)."""
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, layout, backend)


def _to_3d(array, nd, spatial_axis):
    """View an nd-spatial array as 3-d spatial by inserting unit dims at spatial_axis."""
    shape = array.shape
    return array.reshape(shape[:spatial_axis] + (1,) * (3 - nd) + shape[spatial_axis:])


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, layout, backend):
    spec = _checks.conv_arguments(nd, x, weight, bias, stride, padding, dilation, groups, layout)
    geometry = spec.geometry
    module = kernels("conv", backend)
    dtype, out_channels, out_spatial = geometry.dtype, geometry.out_channels, geometry.out_spatial
    n = spec.x.shape[0]
    unit = (1,) * (3 - nd)
    padded = geometry.interior is not None
    small = _conv_plan.takes_small_path(math.prod(spec.weight.shape[:-1]), out_channels,
                                        geometry.groups)
    # Channels-first output: the SMALL kernel writes it directly; the other paths compute
    # channels-last and transpose (their GEMM tiles are channels-last by construction).
    write_first = geometry.channels_first and small
    # ... and with few input channels it reads the channels-first input as it is, too
    read_first = write_first and _conv_plan.reads_channels_first(spec.x.shape[-1], padded)
    w = _to_3d(np.ascontiguousarray(spec.weight, dtype=dtype), nd, 0)
    # The DEPTHWISE kernel skips the taps in the padding instead of reading a zero-padded
    # copy, when that gives the same sums: every weight finite (a zero times an infinite
    # weight is NaN, and padding is IEEE zeros, see the README).
    pad_in_kernel = (padded and not small and _conv_plan.takes_depthwise_path(
        w.shape[3], out_channels, geometry.groups) and bool(np.isfinite(w).all()))
    if write_first:
        out = _scratch.result((n, out_channels) + unit + out_spatial, dtype)
        result = out.reshape((n, out_channels) + out_spatial)
    elif geometry.channels_first:  # the kernel's channels-last output is a temporary
        out = _scratch.empty("conv output", (n,) + unit + out_spatial + (out_channels,), dtype)
        result = _scratch.result((n, out_channels) + out_spatial, dtype)
    else:
        out = _scratch.result((n,) + unit + out_spatial + (out_channels,), dtype)
        result = out.reshape((n,) + out_spatial + (out_channels,))
    if n:
        xp = _kernel_input(module, spec, nd, read_first, padded and not pad_in_kernel)
        b = np.zeros(out_channels, dtype) if spec.bias is None else np.ascontiguousarray(spec.bias, dtype)
        kernel_pads = (((0,) * (3 - nd) + tuple(lo for lo, _ in geometry.pads))
                       if pad_in_kernel else (0, 0, 0))
        module.conv_ndhwc(xp, w, b, out, unit + geometry.stride, unit + geometry.dilation,
                          geometry.groups, get_num_threads(), write_first, read_first,
                          kernel_pads)
        if geometry.channels_first and not write_first:
            module.to_channels_first(out.reshape(n, -1, out_channels),
                                     result.reshape(n, out_channels, -1), threads_for(out.size))
    return result if geometry.batched else result[0]


def _kernel_input(module, spec, nd, read_first, padded):
    """The one copy of x the kernel reads: C-contiguous (N, D, H, W, C) in the compute
    dtype, zero-padded unless not ``padded``. spec.x is channels-last (a view, for
    channels-first calls, of the caller's array), which NumPy copies; channels-first data
    goes through the backend's cache-blocked transpose instead of NumPy's plane-strided
    copy. read_first: the channels-first input itself, (N, C, D, H, W): no copy at all
    when it is unpadded, C-contiguous and in the compute dtype already; else a (padded)
    copy in that layout."""
    geometry = spec.geometry
    interior = geometry.interior if padded else None
    if not geometry.channels_first:
        padded_shape = geometry.padded_shape if padded else spec.x.shape
        return _to_3d(_checks.padded_copy(spec.x, padded_shape, interior, geometry.dtype,
                                          "conv input"), nd, 1)
    x_caller = np.moveaxis(spec.x, -1, 1)
    pads = ((0, 0),) * (3 - nd) + (geometry.pads if padded else ((0, 0),) * nd)
    if read_first:  # the channels-first twins of the channels-last shape and index
        n, *spatial, channels = geometry.padded_shape
        interior = interior and (slice(None),) + interior
        return _to_3d(_checks.padded_copy(x_caller, (n, channels, *spatial), interior,
                                          geometry.dtype, "conv input"), nd, 2)
    x_first = _to_3d(np.ascontiguousarray(x_caller, dtype=geometry.dtype), nd, 2)
    n, channels = x_first.shape[:2]
    padded_shape = (n,) + _checks.padded_spatial(x_first.shape[2:], pads) + (channels,)
    xp = _checks.padded_empty(padded_shape, _checks.interior_index(x_first.shape[2:], pads),
                              geometry.dtype, "conv input")
    module.to_channels_last(x_first, xp, tuple(lo for lo, _ in pads), threads_for(x_first.size))
    return xp

"""NumPy conv backend: one strided-view matrix product per kernel tap."""

import numpy as np


def conv_ndhwc(xp, w, bias, out, stride, dilation, groups, num_threads, channels_first_out=False,
               channels_first_in=False, pads=(0, 0, 0)):
    """Same contract as the compiled kernels; ``num_threads`` is ignored, and ``pads``
    (the compiled DEPTHWISE path's padding in the kernel) zero-pads xp here."""
    # channels-first arrays are (N, C, D, H, W): work on their channels-last views
    if channels_first_out:
        out = np.moveaxis(out, 1, -1)
    if channels_first_in:
        xp = np.moveaxis(xp, 1, -1)
    if any(pads):  # leading pads; the trailing ones are what the output's windows reach
        reach = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in
                 zip(out.shape[1:4], stride, w.shape[:3], dilation)]
        xp = np.pad(xp, [(0, 0)] + [(lo, max(0, r - lo - n)) for lo, r, n in
                                    zip(pads, reach, xp.shape[1:4])] + [(0, 0)])
    n_batch, out_d, out_h, out_w, out_c = out.shape
    k_d, k_h, k_w, c_per_group, _ = w.shape
    o_per_group = out_c // groups
    (sd, sh, sw), (dd, dh, dw) = stride, dilation
    out[...] = bias
    for kd in range(k_d):
        for kh in range(k_h):
            for kw in range(k_w):
                window = xp[:,
                            kd * dd: kd * dd + (out_d - 1) * sd + 1: sd,
                            kh * dh: kh * dh + (out_h - 1) * sh + 1: sh,
                            kw * dw: kw * dw + (out_w - 1) * sw + 1: sw]
                tap = w[kd, kh, kw]
                if groups == 1:
                    out += window @ tap
                else:  # (.., g, c) x (c, g, o) per group, without a Python loop over groups
                    grouped = window.reshape(window.shape[:-1] + (groups, c_per_group))
                    tap_g = tap.reshape(c_per_group, groups, o_per_group)
                    out += np.einsum("...gc,cgo->...go", grouped, tap_g).reshape(out.shape)


def to_channels_last(x, out, offsets, num_threads):
    """out[n, d + od, h + oh, w + ow, c] = x[n, c, d, h, w]; the rest of out (the
    padding) is left as it is. offsets = (od, oh, ow), the leading padding."""
    _, _, depth, height, width = x.shape
    od, oh, ow = offsets
    out[:, od:od + depth, oh:oh + height, ow:ow + width] = np.moveaxis(x, 1, -1)


def to_channels_first(y, out, num_threads):
    """out[n, c, s] = y[n, s, c]: a channels-last result (pixels s) to channels-first."""
    out[...] = np.moveaxis(y, -1, 1)

"""NumPy batch-norm backend: two-pass float64 statistics, then a vectorised scale/shift."""

import numpy as np

from ..norm import _blend_statistic  # the general path's update, the same NumPy calls


def channel_stats(x3, mean, var, num_threads):
    """Same contract as the compiled kernels; ``num_threads`` is ignored."""
    mean[:] = x3.mean(axis=(0, 2), dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf in a channel holding Inf: NaN, silently
        centered = x3 - mean[:, np.newaxis]  # float64: the second pass is exact enough
    var[:] = np.einsum("acb,acb->c", centered, centered) / (x3.shape[0] * x3.shape[2])


def scale_shift(x3, center, scale, shift, out, num_threads):
    """Same contract as the compiled kernels; ``num_threads`` is ignored."""
    with np.errstate(invalid="ignore"):  # as the compiled kernels: NaN without a warning
        np.subtract(x3, center[:, np.newaxis], out=out)
    out *= scale[:, np.newaxis]
    out += shift[:, np.newaxis]


def normalize(x3, mean, var, gamma, beta, eps, out, num_threads):
    """Same contract as the compiled kernels; ``num_threads`` is ignored."""
    dtype = x3.dtype
    # mean and var are float64, so each expression is float64 (gamma and beta converted
    # exactly).
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN/negative var: NaN, silently
        scale = gamma / np.sqrt(var + eps)
        center = mean.astype(dtype)
        shift = beta - (mean - center) * scale
    scale_shift(x3, center, scale.astype(dtype), shift.astype(dtype), out, num_threads)


def batch_norm_serial(x3, gamma, beta, eps, training, running_mean, running_var, decay, out):
    """Same contract as the compiled kernels: the whole batch norm of x3 into out."""
    if training:
        mean, var = np.empty(x3.shape[1]), np.empty(x3.shape[1])
        channel_stats(x3, mean, var, 1)
        if running_mean is not None:
            _blend_statistic(running_mean, mean, decay)
            _blend_statistic(running_var, var, decay)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    normalize(x3, mean, var, gamma, beta, eps, out, 1)

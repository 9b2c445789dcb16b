"""Batch normalization: ``batch_norm`` and the exams' drop-in ``forward_batchnorm``.

The wrapper validates, makes the one contiguous copy the kernels need (dtype, byte order
and layout fixed in one go; none when x already fits) and views it as (A, C, B): C
channels, A = prod(shape[:axis]), B = prod(shape[axis+1:]), so channels-last and
channels-first inputs need no transpose. Two kernels then run: per-channel statistics
(float64, numerically stable) and ``normalize``, which turns them into a per-channel
center, scale and shift (in float64, C values) and applies them in one pass.
"""

import numpy as np

from . import _checks, _scratch
from ._dispatch import kernels, threads_for


def batch_norm(x, gamma, beta, *, eps=1e-5, training=True, running_mean=None,
               running_var=None, decay=0.9, axis=-1, backend=None):
    """Normalise ``x`` per channel: ``gamma * (x - mean) / sqrt(var + eps) + beta``.

    The statistics run over every axis but ``axis`` (the channel axis: the features of
    an (N, F) matrix, C of an NHWC batch with the default ``axis=-1``, ``axis=1`` for
    NCHW). ``training=True`` uses the batch mean and the biased variance (as ``np.var``);
    if ``running_mean`` and ``running_var`` (float32/float64 arrays of shape (C,)) are
    given, they are updated IN PLACE as ``running = decay * running + (1 - decay) *
    batch`` (the biased batch variance; PyTorch's ``momentum`` is ``1 - decay`` and it
    stores the unbiased variance). Give both running arrays or neither. ``training=False``
    normalises with the running statistics, which are then required and only read (so
    read-only arrays are fine there). ``gamma`` and ``beta`` have shape (C,).

    Returns a new array of x's shape, dtype ``np.result_type(x, gamma, beta)``.
    """
    x, gamma, beta, eps, running_mean, running_var, decay, layout = (
        _checks.batch_norm_arguments(x, gamma, beta, eps, training, running_mean, running_var,
                                     decay, axis))
    module = kernels("norm", backend)
    x3 = np.ascontiguousarray(x, dtype=layout.dtype).reshape(layout.view_shape)
    if layout.plain_statistics and threads_for(x3.size) == 1:
        # One call does it all on this thread (small inputs: the general path's separate
        # kernel calls and NumPy steps cost more than the arithmetic; same results).
        # (A small result comes from malloc's reused blocks anyway: _scratch.result's
        # checks cost 0.2 us of a 5 us call.)
        new_result = np.empty if x3.nbytes < _scratch.MIN_BYTES else _scratch.result
        out = new_result(x3.shape, layout.dtype)
        module.batch_norm_serial(x3, np.ascontiguousarray(gamma, layout.dtype),
                                 np.ascontiguousarray(beta, layout.dtype), eps,
                                 layout.training, running_mean, running_var, decay, out)
        return out.reshape(x.shape)
    if layout.training:
        mean, var = _batch_statistics(module, x3)
        if running_mean is not None:
            _blend_statistic(running_mean, mean, decay)
            _blend_statistic(running_var, var, decay)
    else:
        mean = running_mean.astype(np.float64, copy=False)  # only read
        var = running_var.astype(np.float64, copy=False)
    out = _normalize(module, x3, mean, var, gamma, beta, eps)
    return out.reshape(x.shape)


def forward_batchnorm(Z, gamma, beta, eps, cache_dict, beta_avg, mode):
    """The exams' batch-norm forward pass, same signature and results, on fastdl's kernels.

    Z: (num_examples, num_features). ``mode='train'``: mu and var are the mean and the
    biased variance of Z over axis 0, and the moving averages are updated as
    ``cache_dict['mu'] = beta_avg * cache_dict['mu'] + (1 - beta_avg) * mu`` (same for
    ``'var'``) -- new arrays are stored, as the exam's code does; a missing key counts
    as 0 (the usual zero initialisation). ``mode='test'``: mu, var = cache_dict['mu'],
    cache_dict['var'] (both required). Returns ``gamma * (Z - mu) / sqrt(var + eps) +
    beta``. gamma, beta and the cached statistics may be scalars, (F,) or (1, F).
    """
    moving_weight = beta_avg  # as given: a NumPy scalar keeps its dtype in the update
    Z, gamma, beta, eps, beta_avg, mode, cached = _checks.forward_batchnorm_arguments(
        Z, gamma, beta, eps, cache_dict, beta_avg, mode)
    module = kernels("norm")
    if mode == "train":
        dtype = _checks.common_dtype(Z, gamma, beta)
        x3 = np.ascontiguousarray(Z, dtype=dtype).reshape(Z.shape[0], Z.shape[1], 1)
        mu, var = _batch_statistics(module, x3)
        for key, batch in (("mu", mu), ("var", var)):
            # the exam's own expression, with its dtype rules (mu has Z's dtype)
            cache_dict[key] = (moving_weight * np.asarray(cache_dict.get(key, 0.0))
                               + (1 - moving_weight) * batch.astype(Z.dtype))
    else:
        mu, var = cached
        dtype = _checks.common_dtype(Z, gamma, beta, mu, var)
        x3 = np.ascontiguousarray(Z, dtype=dtype).reshape(Z.shape[0], Z.shape[1], 1)
        mu, var = mu.astype(np.float64), var.astype(np.float64)
    return _normalize(module, x3, mu, var, gamma, beta, eps).reshape(Z.shape)


def _blend_statistic(running, batch, decay):
    """running = decay * running + (1 - decay) * batch, computed in float64 and rounded
    into ``running`` in place (the compiled backends' batch_norm_serial does the same
    operations in C / numba; three NumPy calls here, each ~1 us on C values)."""
    kept = np.multiply(running, decay, dtype=np.float64)
    np.add(kept, (1 - decay) * batch, out=running, casting="unsafe")


def _batch_statistics(module, x3):
    """Per-channel mean and biased variance (float64) of a contiguous (A, C, B) array."""
    mean = np.empty(x3.shape[1])
    var = np.empty(x3.shape[1])
    module.channel_stats(x3, mean, var, threads_for(x3.size))
    return mean, var


def _normalize(module, x3, mean, var, gamma, beta, eps):
    """``gamma * (x3 - mean) / sqrt(var + eps) + beta`` per channel, in x3's dtype.

    Computed as ``(x - center) * scale + shift`` with center = mean rounded to x's dtype:
    x - center is then (nearly) exact even when the mean is large against the spread,
    and the rounding of the mean is folded into shift, which is computed in float64.
    The backend's ``normalize`` does both steps (the per-channel arithmetic as a dozen
    NumPy calls on C values cost ~5 us, a third of a small call).
    """
    dtype = x3.dtype
    out = _scratch.result(x3.shape, dtype)
    module.normalize(x3, mean, var, gamma.astype(dtype, copy=False),
                     beta.astype(dtype, copy=False), eps, out, threads_for(x3.size))
    return out

"""Dense layers, activations, dropout and gradient clipping (plain vectorised NumPy).

Every function follows the library's dtype rules: float32 in -> float32 out (computed in
float32), mixed float inputs follow ``np.result_type``, int/bool -> float64, and inputs
are never modified (except ``clip_grad_norm``, which scales gradients in place, as
PyTorch's ``clip_grad_norm_`` does).
"""

import math
import numbers

import numpy as np

from . import _checks


def dense(x, weight, bias=None):
    """Fully connected layer ``x @ weight + bias``.

    x: (N, in) (or one example of shape (in,), giving (out,)); weight: (in, out), the
    exams' orientation (PyTorch's ``nn.Linear`` stores the transpose); bias: (out,) or
    None. Returns (N, out).
    """
    x = _checks.as_float_array("x", x)
    weight = _checks.as_float_array("weight", weight)
    bias = None if bias is None else _checks.as_float_array("bias", bias)
    _checks.check_rank("x", x, (1, 2), "(N, in) or one example (in,)")
    _checks.check_rank("weight", weight, (2,), "(in, out)")
    if x.shape[-1] != weight.shape[0]:
        raise ValueError(f"x and weight: x has {x.shape[-1]} features (shape {x.shape}) but "
                         f"weight expects {weight.shape[0]} (shape {weight.shape}, (in, out))")
    if bias is not None and bias.shape != (weight.shape[1],):
        raise ValueError(f"bias: expected shape ({weight.shape[1]},) (one per output), "
                         f"got {bias.shape}")
    dtype = _checks.common_dtype(x, weight, bias)
    out = np.matmul(x.astype(dtype, copy=False), weight.astype(dtype, copy=False))
    if bias is not None:
        out += bias.astype(dtype, copy=False)
    return out


def sigmoid(x):
    """Logistic sigmoid 1 / (1 + exp(-x)), stable for large |x| (no overflow warning)
    and accurate in relative terms for very negative x (sigmoid(-50) = 1.9e-22, not 0).

    Uses ``scipy.special.expit`` (a float32 and float64 ufunc, about 4x faster than the
    two-branch NumPy expression); imported on first use to keep ``import fastdl`` fast.
    """
    from scipy.special import expit

    return expit(_checks.as_float_array("x", x))


def relu(x):
    """max(x, 0) elementwise (NaN stays NaN)."""
    x = _checks.as_float_array("x", x)
    return np.maximum(x, 0)


def tanh(x):
    """Hyperbolic tangent elementwise."""
    return np.tanh(_checks.as_float_array("x", x))


def softmax(x, axis=-1):
    """Softmax along ``axis``; the maximum is subtracted first, so large logits do not
    overflow and softmax(x) == softmax(x + c)."""
    x = _checks.as_float_array("x", x)
    if x.ndim == 0:
        raise ValueError("x: softmax needs at least a 1-d array, got a scalar")
    axis = _checks.as_int("axis", axis)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis: {axis} is out of range for x of shape {x.shape}")
    if x.shape[axis] == 0:
        return x.copy()
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def dropout(x, p, *, training=True, rng=None):
    """Inverted dropout: each unit is zeroed with probability ``p`` and the kept units
    are scaled by 1 / (1 - p), so the expected activation is unchanged and nothing needs
    rescaling at test time.

    ``training=False`` returns a copy of x unchanged. ``rng``: a
    ``numpy.random.Generator`` (or a seed) for reproducible masks; None draws a fresh
    one. ``p`` must be in [0, 1). As in PyTorch, a dropped NaN stays NaN (x is
    multiplied by the 0/scale mask).
    """
    x = _checks.as_float_array("x", x)
    p = _checks.check_fraction("p", p, high_open=True)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training: expected a bool, got {type(training).__name__} {training!r}")
    if not training or p == 0:
        return x.copy()
    if rng is not None and not isinstance(rng, (np.random.Generator, numbers.Integral)):
        raise TypeError(f"rng: expected a numpy.random.Generator, an int seed or None, "
                        f"got {type(rng).__name__}")
    generator = np.random.default_rng(rng)
    keep = generator.random(x.shape, dtype=x.dtype) >= x.dtype.type(p)
    scale = x.dtype.type(1 / (1 - p))
    return x * (keep * scale)


def clip_grad_norm(grads, max_norm):
    """Scale gradients in place so their global L2 norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` (norm_type 2) does; returns the total norm (a
    Python float, computed in float64) before clipping.

    grads: a dict of arrays or a list/tuple of arrays (float32/float64, writable). The
    scale factor is min(1, max_norm / (total_norm + 1e-6)); a non-finite total norm
    is applied as in PyTorch (NaN -> every gradient NaN; Inf -> factor 0).
    """
    if isinstance(grads, dict):
        named = list(grads.items())
    elif isinstance(grads, (list, tuple)):
        named = list(enumerate(grads))
    else:
        raise TypeError(f"grads: expected a dict or a list of arrays, got {type(grads).__name__}")
    max_norm = _checks.check_positive_finite("max_norm", max_norm)
    arrays = [_checks.writable_float_array(f"grads[{name!r}]", g) for name, g in named]
    # float64 norms (float32 squares of large gradients would overflow); hypot combines
    # the per-array norms without squaring them again
    total = math.hypot(*(float(np.linalg.norm(g.astype(np.float64, copy=False).ravel()))
                         for g in arrays)) if arrays else 0.0
    coef = max_norm / (total + 1e-6)
    if math.isnan(coef) or coef < 1:
        for g in arrays:
            g *= g.dtype.type(coef)
    return total

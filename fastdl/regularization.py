"""L1 / L2 regularization as in the exams: penalties, gradients, the weight-decay step and
the closed-form L1 solution under a diagonal quadratic approximation.

Convention (the exams'): the L2 penalty is ``lam * sum(w**2)`` (no 1/2), so its gradient
is ``2 * lam * w`` and a gradient step on J + penalty is the weight-decay step
``(1 - 2 lr lam) w - lr dJ/dw``. The L1 penalty is ``alpha * sum(|w|)`` with gradient
``alpha * sign(w)`` (0 at w == 0, the subgradient NumPy's sign gives).

Penalties accept one array or a dict / list of arrays (summed over all of them) and
return a NumPy scalar of the arrays' dtype. Nothing is modified in place.
"""

import numpy as np

from . import _checks


def _weight_arrays(w):
    if isinstance(w, dict):
        items = list(w.items())
    elif isinstance(w, (list, tuple)) and any(isinstance(v, np.ndarray) for v in w):
        items = list(enumerate(w))
    else:
        return [_checks.as_float_array("w", w)]
    return [_checks.as_float_array(f"w[{name!r}]", v) for name, v in items]


def _penalty(w, strength, name, term):
    strength = _checks.check_nonnegative(name, strength)
    arrays = _weight_arrays(w)
    dtype = _checks.common_dtype(*arrays) if arrays else np.dtype(np.float64)
    total = sum((term(a).sum(dtype=a.dtype) for a in arrays), dtype.type(0))
    return dtype.type(dtype.type(strength) * total)


def l1_penalty(w, alpha):
    """alpha * sum(|w|) (over every array when w is a dict or list of arrays)."""
    return _penalty(w, alpha, "alpha", np.abs)


def l2_penalty(w, lam):
    """lam * sum(w**2) (over every array when w is a dict or list of arrays)."""
    return _penalty(w, lam, "lam", np.square)


def l1_grad(w, alpha):
    """Gradient of the L1 penalty: alpha * sign(w) (0 where w == 0)."""
    alpha = _checks.check_nonnegative("alpha", alpha)
    w = _checks.as_float_array("w", w)
    return w.dtype.type(alpha) * np.sign(w)


def l2_grad(w, lam):
    """Gradient of the L2 penalty lam * sum(w**2): 2 * lam * w."""
    lam = _checks.check_nonnegative("lam", lam)
    w = _checks.as_float_array("w", w)
    return w.dtype.type(2 * lam) * w


def weight_decay_step(w, grad, lr, lam):
    """One gradient step on J(w) + lam * sum(w**2): returns (1 - 2 lr lam) w - lr grad,
    where ``grad`` is dJ/dw of the unregularised cost. Returns a new array."""
    lr = _checks.check_nonnegative("lr", lr)
    lam = _checks.check_nonnegative("lam", lam)
    w = _checks.as_float_array("w", w)
    grad = _checks.as_float_array("grad", grad)
    _checks.check_same_shape("w", w, "grad", grad)
    dtype = _checks.common_dtype(w, grad)
    return dtype.type(1 - 2 * lr * lam) * w.astype(dtype, copy=False) - dtype.type(lr) * grad


def l1_soft_threshold(w_star, alpha, hessian_diag):
    """Minimiser of the L1-regularised quadratic approximation around the unregularised
    optimum w* with diagonal Hessian H: sign(w*) * max(|w*| - alpha / H, 0).

    Weights with |w*| <= alpha / H become exactly 0 (L1's sparsity). ``hessian_diag``:
    a scalar or an array of w_star's shape, every entry > 0.
    """
    alpha = _checks.check_nonnegative("alpha", alpha)
    w_star = _checks.as_float_array("w_star", w_star)
    h = _checks.as_float_array("hessian_diag", hessian_diag)
    if h.ndim and h.shape != w_star.shape:
        raise ValueError(f"w_star and hessian_diag: hessian_diag must be a scalar or have "
                         f"w_star's shape, got w_star {w_star.shape} and hessian_diag {h.shape}")
    if not np.all(h > 0):
        raise ValueError("hessian_diag: every diagonal entry must be > 0 (the expansion is "
                         f"around a minimum), got minimum {np.min(h)!r}")
    # a scalar H (like alpha) does not decide the dtype: float32 weights stay float32
    dtype = w_star.dtype if h.ndim == 0 else _checks.common_dtype(w_star, h)
    w_star = w_star.astype(dtype, copy=False)
    threshold = dtype.type(alpha) / h.astype(dtype, copy=False)
    return np.sign(w_star) * np.maximum(np.abs(w_star) - threshold, 0)

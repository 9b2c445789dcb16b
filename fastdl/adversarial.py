"""Adversarial examples: the fast gradient sign method (Goodfellow et al., 2015)."""

import numpy as np

from . import _checks


def fgsm(x, grad, eps):
    """FGSM: x_adv = x + eps * sign(grad), where ``grad`` is the gradient of the loss with
    respect to the input x (same shape). Each entry moves by exactly eps (0 where the
    gradient is 0), in the direction that increases the loss. ``eps`` >= 0. Returns a new
    array; no clipping to a valid pixel range (clip the result if your data needs it).
    """
    eps = _checks.check_nonnegative("eps", eps)
    x = _checks.as_float_array("x", x)
    grad = _checks.as_float_array("grad", grad)
    _checks.check_same_shape("x", x, "grad", grad)
    dtype = _checks.common_dtype(x, grad)
    return x.astype(dtype, copy=False) + dtype.type(eps) * np.sign(grad).astype(dtype, copy=False)

"""fastdl.regularization against element-by-element formulas."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastdl import regularization as reg
from helpers import assert_close, layout_variants


def _sign(v):
    return (v > 0) - (v < 0)


def test_penalties(rng, dtype):
    w = rng.standard_normal((4, 3)).astype(dtype)
    values = [float(v) for v in w.ravel()]
    assert_close(reg.l1_penalty(w, 0.3), 0.3 * sum(abs(v) for v in values), dtype)
    assert_close(reg.l2_penalty(w, 0.3), 0.3 * sum(v * v for v in values), dtype)
    b = rng.standard_normal(3).astype(dtype)
    both = values + [float(v) for v in b]
    assert_close(reg.l2_penalty({"W": w, "b": b}, 2.0), 2.0 * sum(v * v for v in both), dtype)
    assert_close(reg.l1_penalty([w, b], 2.0), 2.0 * sum(abs(v) for v in both), dtype)


def test_gradients(rng, dtype):
    w = rng.standard_normal(10).astype(dtype)
    w[3] = 0
    assert_close(reg.l1_grad(w, 0.5), [0.5 * _sign(float(v)) for v in w], dtype)
    assert_close(reg.l2_grad(w, 0.5), [2 * 0.5 * float(v) for v in w], dtype)


def test_l2_grad_is_derivative_of_penalty(rng):
    w = rng.standard_normal(5)
    h = 1e-6
    numeric = [(reg.l2_penalty(w + h * e, 0.7) - reg.l2_penalty(w - h * e, 0.7)) / (2 * h)
               for e in np.eye(5)]
    assert_close(reg.l2_grad(w, 0.7), numeric, np.float64, scale_tol=1e-6)


def test_weight_decay_step(rng, dtype):
    w = rng.standard_normal((3, 3)).astype(dtype)
    grad = rng.standard_normal((3, 3)).astype(dtype)
    lr, lam = 0.1, 0.05
    expected = [(1 - 2 * lr * lam) * float(a) - lr * float(g) for a, g in zip(w.ravel(), grad.ravel())]
    for name, variant in layout_variants(w):
        before = variant.copy()
        out = reg.weight_decay_step(variant, grad, lr, lam)
        assert_close(out, np.reshape(expected, (3, 3)), dtype)
        assert np.array_equal(variant, before), name
    # the same as a plain gradient step on J + lam * sum(w**2)
    assert_close(reg.weight_decay_step(w, grad, lr, lam),
                 w.astype(np.float64) - lr * (grad + reg.l2_grad(w, lam).astype(np.float64)), dtype)


@settings(max_examples=60, deadline=None)
@given(w=st.floats(-10, 10), alpha=st.floats(0, 5), h=st.floats(0.01, 10))
def test_l1_soft_threshold_formula(w, alpha, h):
    expected = _sign(w) * max(abs(w) - alpha / h, 0.0)
    got = reg.l1_soft_threshold(np.array([w]), alpha, h)
    assert_close(got, [expected], np.float64)


def test_l1_soft_threshold_minimises_the_objective(rng):
    # sum_i H_i/2 (w_i - w*_i)^2 + alpha |w_i|: the closed form beats a dense grid search
    w_star = rng.standard_normal(4)
    h = rng.uniform(0.5, 2, 4)
    alpha = 0.6
    solution = reg.l1_soft_threshold(w_star, alpha, h)
    grid = np.linspace(-4, 4, 80001)
    for i in range(4):
        objective = 0.5 * h[i] * (grid - w_star[i]) ** 2 + alpha * np.abs(grid)
        assert abs(solution[i] - grid[np.argmin(objective)]) <= 1e-4


def test_l1_soft_threshold_dtype_and_sparsity(dtype):
    w_star = np.array([0.05, -0.05, 2.0, -3.0], dtype)
    out = reg.l1_soft_threshold(w_star, 0.1, 1.0)
    assert out.dtype == dtype
    assert_close(out, [0.0, 0.0, 1.9, -2.9], dtype)


@pytest.mark.parametrize("call, error, match", [
    (lambda: reg.l1_penalty(np.ones(2), -1), ValueError, "alpha"),
    (lambda: reg.l2_grad(np.ones(2), float("inf")), ValueError, "lam"),
    (lambda: reg.weight_decay_step(np.ones(2), np.ones(3), 0.1, 0.1), ValueError,
     r"w \(2,\) and grad \(3,\)"),
    (lambda: reg.weight_decay_step(np.ones(2), np.ones(2), -0.1, 0.1), ValueError, "lr"),
    (lambda: reg.l1_soft_threshold(np.ones(2), 0.1, 0.0), ValueError, "hessian_diag"),
    (lambda: reg.l1_soft_threshold(np.ones(2), 0.1, np.ones(3)), ValueError, r"\(3,\)"),
    (lambda: reg.l1_grad(np.ones(2), "0.1"), TypeError, "alpha"),
    (lambda: reg.l2_penalty(np.ones(2, complex), 0.1), TypeError, "w"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()

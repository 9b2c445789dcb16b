"""fastdl.nn: dense, activations, softmax, dropout, clip_grad_norm.

Oracles: formulas written out with Python's math module element by element, and PyTorch
in float64 where it has the same function.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
from helpers import assert_close, assert_rejected_in_subprocess, layout_variants


def _elementwise(func, x):
    """Apply a scalar math function to every element, in float64 (the plain oracle)."""
    x = np.asarray(x, dtype=np.float64)
    return np.array([func(float(v)) for v in x.ravel()]).reshape(x.shape)


def _math_sigmoid(z):
    # the textbook formula, in two halves so that math.exp never overflows
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


# ---------------------------------------------------------------------------------------
# dense


def test_dense_matches_loops(rng, dtype):
    x = rng.standard_normal((5, 4)).astype(dtype)
    w = rng.standard_normal((4, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    expected = np.zeros((5, 3))
    for n in range(5):
        for o in range(3):
            expected[n, o] = b[o] + sum(float(x[n, i]) * float(w[i, o]) for i in range(4))
    assert_close(fastdl.dense(x, w, b), expected, dtype)
    assert_close(fastdl.dense(x, w), expected - b.astype(np.float64), dtype)
    assert_close(fastdl.dense(x[0], w, b), expected[0], dtype)


def test_dense_layouts_and_torch(rng, torch):
    x = rng.standard_normal((6, 5))
    w = rng.standard_normal((5, 2))
    b = rng.standard_normal(2)
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w.T.copy()),
                                          torch.from_numpy(b)).numpy()
    for name, variant in layout_variants(x):
        assert_close(fastdl.dense(variant, w, b), expected, np.float64), name
    for name, variant in layout_variants(w):
        assert_close(fastdl.dense(x, variant, b), expected, np.float64), name


def test_dense_dtype_rules(rng):
    x32 = rng.standard_normal((2, 3)).astype(np.float32)
    w64 = rng.standard_normal((3, 1))
    assert fastdl.dense(x32, w64).dtype == np.float64
    assert fastdl.dense(x32, w64.astype(np.float32)).dtype == np.float32
    assert fastdl.dense(np.ones((2, 3), int), np.ones((3, 1), int)).dtype == np.float64
    with pytest.raises(TypeError, match="x"):
        fastdl.dense(x32.astype(complex), w64)


@pytest.mark.parametrize("x_shape, w_shape, b_shape, match", [
    ((2, 3), (4, 1), None, r"\(2, 3\).*\(4, 1\)"),
    ((2, 3), (3,), None, "weight"),
    ((2, 3, 1), (3, 1), None, "x"),
    ((2, 3), (3, 2), (3,), r"bias.*\(2,\).*\(3,\)"),
])
def test_dense_bad_shapes(x_shape, w_shape, b_shape, match):
    bias = None if b_shape is None else np.zeros(b_shape)
    with pytest.raises(ValueError, match=match):
        fastdl.dense(np.zeros(x_shape), np.zeros(w_shape), bias)


# ---------------------------------------------------------------------------------------
# activations


def test_sigmoid_relu_tanh_match_math(rng, dtype):
    x = (rng.standard_normal(50) * 10).astype(dtype)
    assert_close(fastdl.sigmoid(x), _elementwise(_math_sigmoid, x), dtype)
    assert_close(fastdl.relu(x), _elementwise(lambda v: v if v > 0 else 0.0, x), dtype)
    assert_close(fastdl.tanh(x), _elementwise(math.tanh, x), dtype)


def test_sigmoid_extremes_no_warning(dtype):
    x = np.array([-1e6, -800.0, -50.0, 0.0, 50.0, 800.0, 1e6, np.inf, -np.inf, np.nan], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fastdl.sigmoid(x)
    assert out.dtype == dtype
    assert np.all((out[:-1] >= 0) & (out[:-1] <= 1))
    assert out[0] == 0 and out[6] == 1 and out[3] == 0.5
    assert out[7] == 1 and out[8] == 0 and np.isnan(out[9])
    # relative accuracy in the far tail (1 - sigmoid(50) computed naively would be 0)
    tail = math.exp(-50) / (1 + math.exp(-50))
    assert abs(float(out[2]) - tail) <= 1e-6 * tail


def test_activations_vs_torch(rng, torch):
    x = rng.standard_normal((4, 7)) * 30
    t = torch.from_numpy(x)
    assert_close(fastdl.sigmoid(x), torch.sigmoid(t).numpy(), np.float64)
    assert_close(fastdl.relu(x), torch.relu(t).numpy(), np.float64)
    assert_close(fastdl.tanh(x), torch.tanh(t).numpy(), np.float64)
    for axis in (0, 1, -1):
        assert_close(fastdl.softmax(x, axis=axis), torch.softmax(t, dim=axis).numpy(), np.float64)


def test_activations_do_not_modify_input(rng):
    x = rng.standard_normal(10)
    for name, variant in layout_variants(x):
        before = variant.copy()
        for func in (fastdl.sigmoid, fastdl.relu, fastdl.tanh, fastdl.softmax):
            assert_close(func(variant), func(x), np.float64)
        assert np.array_equal(variant, before), name


# ---------------------------------------------------------------------------------------
# softmax


def test_softmax_matches_formula(rng, dtype):
    x = rng.standard_normal((3, 5)).astype(dtype)
    expected = np.zeros((3, 5))
    for n in range(3):
        denominator = sum(math.exp(float(v)) for v in x[n])
        expected[n] = [math.exp(float(v)) / denominator for v in x[n]]
    assert_close(fastdl.softmax(x), expected, dtype)


@settings(max_examples=50, deadline=None)
@given(shift=st.floats(-1e4, 1e4), seed=st.integers(0, 2**32 - 1))
def test_softmax_shift_invariant(shift, seed):
    z = np.random.default_rng(seed).standard_normal(6) * 5
    assert_close(fastdl.softmax(z + shift), fastdl.softmax(z), np.float64, scale_tol=1e-9)


def test_softmax_large_logits(dtype):
    z = np.array([[1000.0, 999.0, -1000.0], [1e30, 1e30, 0.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fastdl.softmax(z)
    assert not np.isnan(out).any()
    e = math.exp(-1)
    assert_close(out, [[1 / (1 + e), e / (1 + e), 0.0], [0.5, 0.5, 0.0]], dtype)


def test_softmax_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        fastdl.softmax(np.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="scalar"):
        fastdl.softmax(1.0)


# ---------------------------------------------------------------------------------------
# dropout


def test_dropout_inverted_scaling(dtype):
    x = np.arange(1, 2001, dtype=dtype).reshape(40, 50)
    p = 0.3
    out = fastdl.dropout(x, p, rng=np.random.default_rng(0))
    assert out.dtype == dtype and out.shape == x.shape
    kept = out != 0
    # every kept unit is x / (1 - p), every other one is 0
    assert_close(out[kept], x[kept].astype(np.float64) / (1 - p), dtype)
    # the kept fraction is about 1 - p (2000 Bernoulli draws: 5 sigma is about 0.05)
    assert abs(kept.mean() - (1 - p)) < 0.05


def test_dropout_reproducible_and_identity(rng):
    x = rng.standard_normal((8, 9))
    a = fastdl.dropout(x, 0.5, rng=np.random.default_rng(7))
    b = fastdl.dropout(x, 0.5, rng=np.random.default_rng(7))
    c = fastdl.dropout(x, 0.5, rng=np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for out in (fastdl.dropout(x, 0.5, training=False), fastdl.dropout(x, 0.0)):
        assert np.array_equal(out, x) and out is not x


def test_dropout_mean_preserved():
    x = np.ones(200_000)
    out = fastdl.dropout(x, 0.2, rng=np.random.default_rng(1))
    # E[out] = 1; std of the mean is sqrt(p / (1 - p) / n) ~ 1.1e-3
    assert abs(out.mean() - 1) < 6e-3


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_bad_p(p):
    with pytest.raises(ValueError, match="p"):
        fastdl.dropout(np.ones(3), p)


def test_dropout_bad_types():
    with pytest.raises(TypeError, match="p"):
        fastdl.dropout(np.ones(3), "0.5")
    with pytest.raises(TypeError, match="rng"):
        fastdl.dropout(np.ones(3), 0.5, rng="seed")


# ---------------------------------------------------------------------------------------
# clip_grad_norm


def test_clip_grad_norm_vs_torch(rng, torch):
    for max_norm in (0.5, 1e3):
        grads = {"W1": rng.standard_normal((3, 4)), "b1": rng.standard_normal(4)}
        tensors = [torch.from_numpy(g.copy()).requires_grad_(False) for g in grads.values()]
        params = [torch.zeros_like(t, requires_grad=True) for t in tensors]
        for p, t in zip(params, tensors):
            p.grad = t
        expected_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        total = fastdl.clip_grad_norm(grads, max_norm)
        assert abs(total - expected_norm) <= 1e-12 * expected_norm
        for g, p in zip(grads.values(), params):
            assert_close(g, p.grad.numpy(), np.float64)


def test_clip_grad_norm_formula_list(rng, dtype):
    grads = [rng.standard_normal(5).astype(dtype), rng.standard_normal((2, 2)).astype(dtype)]
    original = [g.astype(np.float64) for g in grads]
    expected_total = math.sqrt(sum(float(v) ** 2 for g in original for v in g.ravel()))
    ids = [id(g) for g in grads]
    total = fastdl.clip_grad_norm(grads, 1.0)
    assert abs(total - expected_total) <= 1e-6 * expected_total
    assert [id(g) for g in grads] == ids  # scaled in place
    for g, o in zip(grads, original):
        assert_close(g, o * (1.0 / (expected_total + 1e-6)), dtype)
    clipped = math.sqrt(sum(float(v) ** 2 for g in grads for v in g.ravel()))
    assert abs(clipped - 1.0) < 1e-5


def test_clip_grad_norm_bad_input():
    with pytest.raises(ValueError, match="max_norm"):
        fastdl.clip_grad_norm([np.ones(2)], -1.0)
    with pytest.raises(TypeError, match="grads"):
        fastdl.clip_grad_norm([[1.0, 2.0]], 1.0)
    with pytest.raises(TypeError, match="grads"):
        fastdl.clip_grad_norm(np.ones(3), 1.0)
    readonly = np.ones(2)
    readonly.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        fastdl.clip_grad_norm([readonly], 0.1)


def test_bad_input_never_crashes():
    assert_rejected_in_subprocess(
        'import numpy as np, fastdl',
        ['fastdl.dense(np.zeros((2, 3)), np.zeros((4, 1)))',
         'fastdl.dropout(np.ones(3), 1.0)',
         'fastdl.softmax(np.zeros(3), axis=5)',
         'fastdl.clip_grad_norm({"a": "x"}, 1.0)'])

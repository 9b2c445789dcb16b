"""fastdl.metrics (precision / recall / F1) and fastdl.adversarial.fgsm vs plain formulas;
fastdl.params' dense / batch_norm / sliding_window_attention counts vs arrays' sizes."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
from fastdl import adversarial, metrics, params
from helpers import assert_close, assert_rejected_in_subprocess, layout_variants


def _counts(y_true, y_pred):
    tp = sum(1 for t, p in zip(y_true, y_pred) if t == 1 and p == 1)
    fp = sum(1 for t, p in zip(y_true, y_pred) if t == 0 and p == 1)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t == 1 and p == 0)
    return tp, fp, fn


@settings(max_examples=100, deadline=None)
@given(pairs=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), max_size=30))
def test_metrics_match_counts(pairs):
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    tp, fp, fn = _counts(y_true, y_pred)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    assert metrics.precision(y_true, y_pred) == pytest.approx(p, abs=1e-15)
    assert metrics.recall(y_true, y_pred) == pytest.approx(r, abs=1e-15)
    assert metrics.f1_score(y_true, y_pred) == pytest.approx(f1, abs=1e-15)


def test_metrics_known_values_and_zero_division():
    y_true = np.array([1, 1, 0, 0, 1])
    y_pred = np.array([1, 0, 1, 0, 1])
    assert metrics.precision(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.recall(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.f1_score(y_true, y_pred) == pytest.approx(2 / 3)
    assert metrics.precision([1, 0], [0, 0]) == 0.0  # no predicted positives
    assert metrics.recall([0, 0], [1, 0]) == 0.0  # no actual positives
    assert metrics.f1_score([0, 0], [0, 0]) == 0.0
    assert metrics.f1_score(np.array([True, False]), np.array([True, True])) == pytest.approx(2 / 3)


@pytest.mark.parametrize("y_true, y_pred, match", [
    ([0, 1], [0, 1, 1], r"y_true \(2,\) and y_pred \(3,\)"),
    ([0, 2], [0, 1], "y_true: expected binary labels"),
    ([0, 1], [0.5, 1], "y_pred: expected binary labels"),
])
def test_metrics_bad_input(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        metrics.f1_score(y_true, y_pred)


def test_fgsm_formula(rng, dtype):
    x = rng.standard_normal((3, 4)).astype(dtype)
    grad = rng.standard_normal((3, 4)).astype(dtype)
    grad[0, 0] = 0
    expected = [float(a) + 0.1 * (1 if g > 0 else -1 if g < 0 else 0)
                for a, g in zip(x.ravel(), grad.ravel())]
    for name, variant in layout_variants(x):
        before = variant.copy()
        assert_close(adversarial.fgsm(variant, grad, 0.1), np.reshape(expected, (3, 4)), dtype)
        assert np.array_equal(before, variant), name


def test_fgsm_bad_input():
    with pytest.raises(ValueError, match="eps"):
        adversarial.fgsm([1.0], [1.0], -0.1)
    with pytest.raises(ValueError, match=r"x \(2,\) and grad \(3,\)"):
        adversarial.fgsm([1.0, 2.0], [1.0, 2.0, 3.0], 0.1)


def test_param_counts_equal_array_sizes(rng):
    # the count of a layer is the number of entries of the arrays the layer's op takes
    x = rng.standard_normal((2, 7))
    w, b = rng.standard_normal((7, 5)), rng.standard_normal(5)
    fastdl.dense(x, w, b)  # the shapes really are the layer's
    assert params.dense(7, 5) == w.size + b.size
    assert params.dense(7, 5, bias=False) == w.size
    assert params.batch_norm(5) == 2 * b.size
    key, value = np.zeros((3, 3, 4, 6)), np.zeros((3, 3, 6))
    assert params.sliding_window_attention(3, 4, 6) == key.size + value.size
    assert params.sliding_window_attention((3, 5), 4, 6) == 3 * 5 * 4 * 6 + 3 * 5 * 6


@pytest.mark.parametrize("call, error, match", [
    (lambda: params.dense(3.5, 2), TypeError, "n_in"),
    (lambda: params.dense(3, -2), ValueError, "n_out"),
    (lambda: params.dense(3, 0), ValueError, "n_out"),
    (lambda: params.dense(3, 2, bias="no"), TypeError, "bias"),
    (lambda: params.batch_norm(True), TypeError, "num_features"),
    (lambda: params.sliding_window_attention((3, 3, 3), 1, 1), ValueError, "kernel_size"),
    (lambda: params.sliding_window_attention(3, -1, 1), ValueError, "in_channels"),
])
def test_param_counts_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_input_never_crashes():
    assert_rejected_in_subprocess(
        'import numpy as np; from fastdl import adversarial, metrics, params',
        ['adversarial.fgsm(np.ones(3), np.ones((3, 1)), 0.1)',
         'metrics.recall(np.ones(3), np.full(3, 2))',
         'params.dense(2**40, 2)'])

"""The per-call fast paths for small inputs: one-thread calls (numba runs the serial twin
of each parallel kernel) give the parallel results, and the memoised argument checks
(fastdl._checks.memoized_for_plain_arguments) never let a bad argument through because
an equal-comparing good one was seen before."""

import numpy as np
import pytest

import fastdl
import fastdl._dispatch as dispatch
from fastdl import _checks, _conv_plan, reference

from conftest import require
from helpers import assert_close

# Each conv path, steered as in test_conv_kernels (thresholds per path).
CONV_PATHS = {
    "small": dict(SMALL_MIN_OUT=1, SMALL_MAX_OUT=64, SMALL_MAX_REDUCTION=1024),
    "direct": dict(SMALL_MAX_REDUCTION=0, GEMM_MIN_OUT_PER_GROUP=10**9),
    "shifted": dict(SMALL_MAX_REDUCTION=0, GEMM_MIN_OUT_PER_GROUP=1, GEMM_MIN_REDUCTION=1,
                    SHIFTED_MIN_IN_PER_GROUP=1),
    "im2col": dict(SMALL_MAX_REDUCTION=0, GEMM_MIN_OUT_PER_GROUP=1, GEMM_MIN_REDUCTION=1,
                   SHIFTED_MIN_IN_PER_GROUP=10**9),
}


def _one_and_two_threads(call, monkeypatch):
    """call() on one thread (serial everywhere) and on two (parallel everywhere)."""
    monkeypatch.setattr(dispatch, "SERIAL_VALUES", 0)
    monkeypatch.setattr(_conv_plan, "SERIAL_MACS", 0)
    results = []
    for threads in (1, min(2, dispatch.max_num_threads())):
        fastdl.set_num_threads(threads)
        try:
            results.append(call())
        finally:
            monkeypatch.setattr(dispatch, "_num_threads", None)
    return results


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("path", sorted(CONV_PATHS))
def test_conv_on_one_thread_matches(path, layout, backend, dtype, rng, monkeypatch):
    for name, value in CONV_PATHS[path].items():
        monkeypatch.setattr(_conv_plan, name, value)
    x = rng.standard_normal((2, 7, 9, 5)).astype(dtype)
    w = rng.standard_normal((3, 3, 5, 6)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    expected = fastdl.conv2d(x, w, b, padding=1, backend="numpy")
    if layout == "NCHW":
        x, w = np.moveaxis(x, -1, 1), np.transpose(w, (3, 2, 0, 1))
        expected = np.moveaxis(expected, -1, 1)
    for got in _one_and_two_threads(
            lambda: fastdl.conv2d(x, w, b, padding=1, layout=layout, backend=backend),
            monkeypatch):
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("axis", [-1, 1])  # columns (B = 1) and segments (B = 64) kernels
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_one_thread_matches(axis, training, backend, dtype, rng, monkeypatch):
    x = (rng.standard_normal((3, 4, 8, 8)) * 2 + 5).astype(dtype)
    channels = x.shape[axis]
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.standard_normal(channels)
    stats = rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)

    def call():
        mean, var = (s.astype(dtype) for s in stats)
        out = fastdl.batch_norm(x, gamma.astype(dtype), beta.astype(dtype), training=training,
                                running_mean=mean, running_var=var, axis=axis,
                                backend=backend)
        return out, mean, var

    expected = reference.batch_norm(np.moveaxis(x, axis, -1), gamma, beta,
                                    training=training, running_mean=stats[0],
                                    running_var=stats[1])
    expected, expected_mean, expected_var = expected  # new running stats: training only
    for out, mean, var in _one_and_two_threads(call, monkeypatch):
        assert_close(np.moveaxis(out, axis, -1), expected, dtype)
        if training:
            assert_close(mean, expected_mean, dtype)
            assert_close(var, expected_var, dtype)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_pooling_on_one_thread_matches(op, layout, backend, dtype, rng, monkeypatch):
    x = rng.standard_normal((2, 9, 9, 3)).astype(dtype)
    expected = getattr(fastdl.reference, op)(x, 3, 2, 1)
    if layout == "NCHW":
        x, expected = np.moveaxis(x, -1, 1).copy(), np.moveaxis(expected, -1, 1)
    for got in _one_and_two_threads(
            lambda: getattr(fastdl, op)(x, 3, 2, 1, layout=layout, backend=backend),
            monkeypatch):
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_attention_on_one_thread_matches(layout, backend, dtype, rng, monkeypatch):
    x = rng.standard_normal((2, 6, 7, 3)).astype(dtype)
    key = rng.standard_normal((3, 3, 3, 4)).astype(dtype)
    value = rng.standard_normal((3, 3, 4)).astype(dtype)
    expected = fastdl.sliding_window_attention(x, key, value, padding=1, backend="numpy")
    if layout == "NCHW":
        x, key = np.moveaxis(x, -1, 1), np.transpose(key, (3, 2, 0, 1))
        value, expected = np.moveaxis(value, -1, 0), np.moveaxis(expected, -1, 1)
    for got in _one_and_two_threads(
            lambda: fastdl.sliding_window_attention(x, key, value, padding=1, layout=layout,
                                                    backend=backend),
            monkeypatch):
        assert_close(got, expected, dtype)


def test_numba_serial_twin_runs_on_one_thread(monkeypatch):
    """One thread: the serial twin runs, not the parallel kernel (and its results are
    checked above)."""
    numba_pool = pytest.importorskip("fastdl._numba.pool")
    status = fastdl.backends()["numba"]
    require(status == "available", f"backend numba is unavailable: {status}")
    calls = []
    twin = numba_pool._pool_nhwc.serial
    monkeypatch.setattr(numba_pool._pool_nhwc, "serial",
                        lambda *args: calls.append("serial") or twin(*args))
    fastdl.set_num_threads(1)
    try:
        fastdl.max_pool2d(np.ones((1, 4, 4, 2), np.float32), backend="numba")
    finally:
        monkeypatch.setattr(dispatch, "_num_threads", None)
    assert calls == ["serial"]


x = np.ones((1, 8, 8, 3))
w = np.ones((3, 3, 3, 4))


@pytest.mark.parametrize("good, bad, error", [
    (dict(stride=1), dict(stride=True), TypeError),
    (dict(stride=1), dict(stride=1.0), TypeError),
    (dict(stride=(1, 1)), dict(stride=(1, True)), TypeError),
    (dict(stride=(1, 1)), dict(stride=(1, 1.0)), TypeError),
    (dict(padding=1), dict(padding=1.0), TypeError),
    (dict(padding=(1, 1)), dict(padding=(1, np.float64(1))), TypeError),
    (dict(groups=1), dict(groups=True), TypeError),
    (dict(dilation=1), dict(dilation=np.True_), TypeError),
])
def test_memoised_conv_checks_still_reject(good, bad, error):
    """An argument equal to (and hashing like) an accepted one is still rejected: True ==
    1 == 1.0, also inside tuples."""
    for _ in range(2):  # the second good call is answered from the cache
        fastdl.conv2d(x, w, backend="numpy", **good)
        with pytest.raises(error):
            fastdl.conv2d(x, w, backend="numpy", **bad)


def test_memoised_pool_and_norm_checks_still_reject():
    for _ in range(2):
        fastdl.max_pool2d(x, 2, backend="numpy")
        with pytest.raises(TypeError, match="size"):
            fastdl.max_pool2d(x, True, backend="numpy")
        with pytest.raises(TypeError, match="stride"):
            fastdl.max_pool2d(x, 2, (2, 2.0), backend="numpy")
        fastdl.batch_norm(x, np.ones(3), np.zeros(3), axis=-1, backend="numpy")
        with pytest.raises(TypeError, match="axis"):
            fastdl.batch_norm(x, np.ones(3), np.zeros(3), axis=-1.0, backend="numpy")


def test_memoised_checks_accept_numpy_and_list_arguments():
    """Arguments that are not plain (NumPy integers, lists) are checked uncached, with
    the same results."""
    expected = fastdl.conv2d(x, w, stride=2, padding=(1, 0), backend="numpy")
    got = fastdl.conv2d(x, w, stride=np.int64(2), padding=[1, np.int32(0)], backend="numpy")
    np.testing.assert_array_equal(got, expected)


def test_plain_arguments():
    plain = _checks._is_plain
    assert plain(1) and plain("NHWC") and plain(None) and plain(True)
    assert plain((1, 2)) and plain(((1, 1), (0, 2))) and plain(np.dtype(np.float32))
    assert not plain(1.0) and not plain((1, True)) and not plain((1, 1.0))
    assert not plain([1, 1]) and not plain(np.int64(1)) and not plain(((1, 1), (0, 2.0)))


@pytest.mark.parametrize("params_dtype", [np.float32, np.float64])
def test_normalize_matches_numpy_per_channel_arithmetic(backend, dtype, params_dtype, rng):
    """Each backend's ``normalize`` computes the per-channel center, scale and shift itself
    (once NumPy calls in fastdl/norm.py): bitwise the NumPy float64 arithmetic followed by
    the backend's scale_shift, also for a negative, zero-after-eps or NaN variance, an
    infinite mean or gamma (NaN / inf, without warnings)."""
    from fastdl._dispatch import kernels
    module = kernels("norm", backend)
    compute = np.result_type(dtype, params_dtype)
    x3 = (rng.standard_normal((5, 7, 3)) * 3 + 1e3).astype(compute)
    mean, var = rng.standard_normal(7) * 1e3, np.abs(rng.standard_normal(7))
    var[0], var[1], var[2], mean[3] = -1.0, -1e-5, np.nan, np.inf
    gamma = rng.standard_normal(7).astype(params_dtype).astype(compute)
    beta = rng.standard_normal(7).astype(params_dtype).astype(compute)
    gamma[4] = np.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = gamma.astype(np.float64) / np.sqrt(var + 1e-5)
        center = mean.astype(compute)
        shift = beta.astype(np.float64) - (mean - center) * scale
    expected = np.empty_like(x3)
    module.scale_shift(x3, center, scale.astype(compute), shift.astype(compute), expected, 1)
    got = np.empty_like(x3)
    with np.errstate(all="raise"):
        module.normalize(x3, mean, var, gamma, beta, 1e-5, got, 1)
    assert np.array_equal(got, expected, equal_nan=True)

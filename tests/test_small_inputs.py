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


# batch norm below the size threshold: one backend call (batch_norm_serial) does the whole
# computation; it must be the general path on one thread, bit for bit. (The general path
# on one thread is checked against the references above and in test_norm.py.)
SERIAL_BN_CASES = [
    ((6, 5), -1),            # columns, one value per channel and row
    ((3, 4, 4, 5), 1),       # columns, 16 values per channel and row (parameters repeated)
    ((2, 3, 8, 9), 1),       # segments of 72 values
    ((1, 2, 5000), 1),       # segments of two pieces each
    # from FOLD_MIN_VALUES values on, numba takes short rows several at a time:
    ((1024, 16), -1),        # 4 (float32) or 2 (float64) rows at a time
    ((1030, 16), -1),        # rows not a multiple of 4: 2 at a time
    ((4099, 3), -1),         # a prime number of rows: one at a time
    ((700, 2, 3), 1),        # 10 or 5 rows of 2 channels x 3 values at a time
]
STATISTICS_DTYPES = {"f32": (np.float32, np.float32), "f64": (np.float64, np.float64),
                     "mixed": (np.float32, np.float64), "none": None}


def _general_path_on_one_thread(module, x3, gamma, beta, eps, training, running, decay):
    """What fastdl/norm.py's general path computes with one thread (running updated)."""
    from fastdl.norm import _blend_statistic as blend_statistic
    if training:
        mean, var = np.empty(x3.shape[1]), np.empty(x3.shape[1])
        module.channel_stats(x3, mean, var, 1)
        if running is not None:
            blend_statistic(running[0], mean, decay)
            blend_statistic(running[1], var, decay)
    else:
        mean, var = (r.astype(np.float64) for r in running)
    out = np.empty_like(x3)
    module.normalize(x3, mean, var, gamma, beta, eps, out, 1)
    return out


@pytest.mark.parametrize("training, statistics", [
    (training, statistics) for training in (True, False) for statistics in STATISTICS_DTYPES
    if training or statistics != "none"])  # eval needs running statistics
@pytest.mark.parametrize("shape, axis", SERIAL_BN_CASES, ids=[str(c[0]) for c in SERIAL_BN_CASES])
def test_batch_norm_serial_is_the_general_path_on_one_thread(
        backend, dtype, shape, axis, training, statistics, rng, monkeypatch):
    from fastdl._dispatch import kernels
    monkeypatch.setattr(dispatch, "SERIAL_VALUES", 1 << 16)  # the default threshold
    module = kernels("norm", backend)
    x = (rng.standard_normal(shape) * 3 + 50).astype(dtype)
    x.flat[1], x.flat[-1] = np.nan, np.inf  # propagate in their channels
    channels = shape[axis]
    gamma = rng.uniform(0.5, 1.5, 2 * channels).astype(dtype)[::2]  # strided: copied
    beta = rng.standard_normal(channels).astype(dtype)
    running = None
    if STATISTICS_DTYPES[statistics] is not None:
        running = tuple(values.astype(d) for values, d in zip(
            (rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)),
            STATISTICS_DTYPES[statistics]))
    x3 = x.reshape((-1, channels, 1) if axis == -1 else (shape[0], channels, -1))
    expected_running = None if running is None else tuple(r.copy() for r in running)
    expected = _general_path_on_one_thread(module, x3, np.ascontiguousarray(gamma), beta,
                                           1e-5, training, expected_running, 0.8)
    calls = []
    serial = module.batch_norm_serial
    monkeypatch.setattr(module, "batch_norm_serial",
                        lambda *args: calls.append(1) or serial(*args))
    got_running = None if running is None else tuple(r.copy() for r in running)
    with np.errstate(all="raise"):
        got = fastdl.batch_norm(x, gamma, beta, training=training, axis=axis, decay=0.8,
                                running_mean=None if running is None else got_running[0],
                                running_var=None if running is None else got_running[1],
                                backend=backend)
    assert calls == [1]
    assert got.dtype == dtype
    assert np.array_equal(got.reshape(x3.shape), expected, equal_nan=True)
    if running is not None:
        for got_r, expected_r, given in zip(got_running, expected_running, running):
            assert got_r.dtype == given.dtype
            assert np.array_equal(got_r, expected_r, equal_nan=True)
            if training:
                assert not np.array_equal(got_r, given)  # updated in place


def test_batch_norm_small_input_with_odd_running_statistics(backend, rng, monkeypatch):
    """Strided or byte-swapped running statistics take the general path (NumPy updates
    them in place), with the same results as plain ones."""
    monkeypatch.setattr(dispatch, "SERIAL_VALUES", 1 << 16)
    x = rng.standard_normal((4, 6, 6, 3)).astype(np.float32)
    gamma, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    plain = [np.zeros(3), np.ones(3)]
    expected = fastdl.batch_norm(x, gamma, beta, running_mean=plain[0], running_var=plain[1],
                                 backend=backend)
    strided = np.zeros(6)[::2], np.ones(6)[::2]
    swapped = np.zeros(3, ">f8"), np.ones(3, ">f8")
    for odd in (strided, swapped):
        got = fastdl.batch_norm(x, gamma, beta, running_mean=odd[0], running_var=odd[1],
                                backend=backend)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(odd[0], plain[0])
        np.testing.assert_array_equal(odd[1], plain[1])


def test_cython_batch_norm_serial_refuses_arrays_off_its_contract():
    """The C function reads raw data pointers: arrays the wrapper would never pass are
    refused with a ValueError, never read out of bounds."""
    status = fastdl.backends()["cython"]
    require(status == "available", f"backend cython is unavailable: {status}")
    from fastdl._cy.norm import batch_norm_serial
    x3 = np.ones((4, 3, 1), np.float32)
    ok = dict(x3=x3, gamma=np.ones(3, np.float32), beta=np.zeros(3, np.float32), eps=1e-5,
              training=True, running_mean=np.zeros(3), running_var=np.ones(3), decay=0.9,
              out=np.empty_like(x3))
    batch_norm_serial(**ok)
    read_only = np.zeros(3)
    read_only.flags.writeable = False
    for name, bad in [("x3", np.ones((4, 3, 2), np.float32)[:, :, ::2]),
                      ("x3", np.ones((4, 3), np.float32)),
                      ("out", np.empty((4, 3, 1))), ("out", np.empty((4, 4, 1), np.float32)),
                      ("gamma", np.ones(6, np.float32)[::2]), ("gamma", np.ones(4, np.float32)),
                      ("beta", np.zeros(3)), ("running_mean", np.zeros(3, ">f8")),
                      ("running_mean", np.zeros(2)), ("running_var", read_only),
                      ("running_var", None), ("running_var", np.zeros(3, np.int64))]:
        with pytest.raises(ValueError, match="contract"):
            batch_norm_serial(**dict(ok, **{name: bad}))
    with pytest.raises(ValueError, match="contract"):  # eval needs the statistics
        batch_norm_serial(**dict(ok, training=False, running_mean=None, running_var=None))


@pytest.mark.parametrize("kernel", ["max_pool_nhwc", "avg_pool_nhwc"])
def test_cython_pooling_refuses_arrays_off_its_contract(kernel):
    """As above, for the pooling kernels (ndarrays in, raw data pointers)."""
    status = fastdl.backends()["cython"]
    require(status == "available", f"backend cython is unavailable: {status}")
    import fastdl._cy.pool as cython_pool
    run = getattr(cython_pool, kernel)
    x = np.ones((2, 4, 4, 3), np.float32)
    out = np.empty((2, 2, 2, 3), np.float32)
    run(x, out, (2, 2), (2, 2), (0, 0), 1)
    np.testing.assert_array_equal(out, 1.0)
    read_only = out.copy()
    read_only.flags.writeable = False
    for bad_x, bad_out in [(x.astype(np.float64), out), (x, out.astype(np.float64)),
                           (x.astype(">f4"), out), (x[:, :, :, ::-1], out),
                           (np.asfortranarray(x), out), (x[0], out[0]), (x, read_only),
                           (x, np.empty((1, 2, 2, 3), np.float32)),
                           (x, np.empty((2, 2, 2, 4), np.float32)),
                           (x.astype(np.int32), out.astype(np.int32))]:
        with pytest.raises(ValueError, match="contract"):
            run(bad_x, bad_out, (2, 2), (2, 2), (0, 0), 1)

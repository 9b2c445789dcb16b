"""batch_norm and forward_batchnorm on every backend, against the naive loop reference,
PyTorch (float64) and the plain NumPy formula."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
from fastdl import reference

from helpers import assert_close, layout_variants, run_isolated

from conftest import require

# (name, shape, channel axis): an (N, F) matrix, NHWC and NCHW image batches, a 5-d volume
CASES = [
    ("NF", (9, 5), -1),
    ("NHWC", (3, 4, 5, 6), -1),
    ("NCHW", (3, 6, 5, 4), 1),
    ("NCHW_long_rows", (2, 3, 9, 10), 1),  # B = 90 >= 64: the per-segment kernels
    ("NCDHW", (2, 3, 4, 3, 5), 1),
]
CASE_IDS = [case[0] for case in CASES]


def _inputs(rng, shape, axis, dtype):
    channels = shape[axis]
    x = (rng.normal(size=shape) * 3 + 1.5).astype(dtype)
    gamma = rng.normal(size=channels).astype(dtype)
    beta = rng.normal(size=channels).astype(dtype)
    return x, gamma, beta


def _running(rng, channels, dtype):
    return (rng.normal(size=channels).astype(dtype),
            rng.uniform(0.5, 2.0, size=channels).astype(dtype))


def _numpy_formula(x, gamma, beta, axis, eps=1e-5):
    """The textbook formula in float64 with np.mean / np.var (an oracle for big shapes)."""
    x = np.asarray(x, np.float64)
    axis %= x.ndim
    others = tuple(i for i in range(x.ndim) if i != axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean, var = x.mean(axis=others, keepdims=True), x.var(axis=others, keepdims=True)
    return (np.asarray(gamma, np.float64).reshape(shape) * (x - mean) / np.sqrt(var + eps)
            + np.asarray(beta, np.float64).reshape(shape))


# ---------------------------------------------------------------------------------------
# Against the naive reference


@pytest.mark.parametrize("name, shape, axis", CASES, ids=CASE_IDS)
def test_training_matches_reference(backend, dtype, rng, name, shape, axis):
    x, gamma, beta = _inputs(rng, shape, axis, dtype)
    running_mean, running_var = _running(rng, shape[axis], dtype)
    expected, new_mean, new_var = reference.batch_norm(
        x, gamma, beta, eps=1e-3, running_mean=running_mean, running_var=running_var,
        decay=0.8, axis=axis)
    out = fastdl.batch_norm(x, gamma, beta, eps=1e-3, running_mean=running_mean,
                            running_var=running_var, decay=0.8, axis=axis, backend=backend)
    assert_close(out, expected, dtype)
    assert_close(running_mean, new_mean, dtype)
    assert_close(running_var, new_var, dtype)


@pytest.mark.parametrize("name, shape, axis", CASES, ids=CASE_IDS)
def test_eval_matches_reference(backend, dtype, rng, name, shape, axis):
    x, gamma, beta = _inputs(rng, shape, axis, dtype)
    running_mean, running_var = _running(rng, shape[axis], dtype)
    saved = running_mean.copy(), running_var.copy()
    expected, _, _ = reference.batch_norm(x, gamma, beta, training=False,
                                          running_mean=running_mean,
                                          running_var=running_var, axis=axis)
    out = fastdl.batch_norm(x, gamma, beta, training=False, running_mean=running_mean,
                            running_var=running_var, axis=axis, backend=backend)
    assert_close(out, expected, dtype)
    assert np.array_equal(running_mean, saved[0]) and np.array_equal(running_var, saved[1])


def test_statistics_reference_is_right():
    """The naive reference itself, against values worked out by hand."""
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 16.0]])
    mean, var = reference.channel_statistics(x, axis=-1)
    assert np.allclose(mean, [3.0, 12.0]) and np.allclose(var, [8 / 3, 8.0])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_generated_shapes(data):
    backend = data.draw(st.sampled_from(("numba", "cython", "numpy")), "backend")
    if fastdl.backends()[backend] != "available":
        backend = "numpy"
    dtype = np.dtype(data.draw(st.sampled_from((np.float32, np.float64)), "dtype"))
    rank = data.draw(st.integers(2, 5), "rank")
    shape = tuple(data.draw(st.lists(st.integers(1, 6), min_size=rank, max_size=rank), "shape"))
    if rank == 2 and data.draw(st.booleans(), "long rows"):
        shape = (shape[0], data.draw(st.integers(60, 300), "B"))  # around the kernel switch
    axis = data.draw(st.integers(-rank, rank - 1), "axis")
    training = data.draw(st.booleans(), "training")
    seed = data.draw(st.integers(0, 2**32 - 1), "seed")
    rng = np.random.default_rng(seed)
    x, gamma, beta = _inputs(rng, shape, axis, dtype)
    running_mean, running_var = _running(rng, shape[axis], dtype)
    expected, new_mean, new_var = reference.batch_norm(
        x, gamma, beta, training=training, running_mean=running_mean,
        running_var=running_var, axis=axis)
    out = fastdl.batch_norm(x, gamma, beta, training=training, running_mean=running_mean,
                            running_var=running_var, axis=axis, backend=backend)
    assert_close(out, expected, dtype)
    if training:
        assert_close(running_mean, new_mean, dtype)
        assert_close(running_var, new_var, dtype)


# ---------------------------------------------------------------------------------------
# Against PyTorch (float64)


@pytest.mark.parametrize("name, shape, axis", CASES, ids=CASE_IDS)
def test_matches_torch(backend, torch, rng, name, shape, axis):
    x, gamma, beta = _inputs(rng, shape, axis, np.float64)
    decay = 0.7
    ours_mean, ours_var = _running(rng, shape[axis], np.float64)
    start_mean, start_var = ours_mean.copy(), ours_var.copy()
    torch_mean, torch_var = torch.tensor(ours_mean), torch.tensor(ours_var)
    x_channels_first = torch.tensor(np.moveaxis(x, axis, 1).copy())
    for training in (True, False):
        expected = torch.nn.functional.batch_norm(
            x_channels_first, torch_mean, torch_var, torch.tensor(gamma), torch.tensor(beta),
            training=training, momentum=1 - decay, eps=1e-5)
        out = fastdl.batch_norm(x, gamma, beta, training=training, running_mean=ours_mean,
                                running_var=ours_var, decay=decay, axis=axis,
                                backend=backend)
        assert_close(out, np.moveaxis(expected.numpy(), 1, axis), np.float64)
        if training:
            # torch's running mean follows the same rule (momentum = 1 - decay) ...
            assert_close(ours_mean, torch_mean.numpy(), np.float64)
            # ... but it stores the UNBIASED variance: hold ours to the formula instead
            x64 = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
            assert_close(ours_var, decay * start_var + (1 - decay) * x64.var(axis=0),
                         np.float64)
            ours_var[...] = torch_var.numpy()  # same running stats for the eval step
    assert not np.array_equal(ours_mean, start_mean)


# ---------------------------------------------------------------------------------------
# Layouts, dtypes, numerical edge cases


@pytest.mark.parametrize("name, shape, axis", [CASES[1], CASES[3]], ids=[CASES[1][0], CASES[3][0]])
def test_memory_layouts(backend, dtype, rng, name, shape, axis):
    x, gamma, beta = _inputs(rng, shape, axis, dtype)
    expected = _numpy_formula(x, gamma, beta, axis)
    for x_name, x_variant in layout_variants(x):
        for g_name, g_variant in layout_variants(gamma)[::2]:  # contiguous, strided, readonly
            saved_x, saved_g = x_variant.copy(), g_variant.copy()
            out = fastdl.batch_norm(x_variant, g_variant, beta, axis=axis, backend=backend)
            assert_close(out, expected, dtype)
            assert np.array_equal(x_variant, saved_x), f"x ({x_name}) was modified"
            assert np.array_equal(g_variant, saved_g), f"gamma ({g_name}) was modified"


def test_running_statistics_in_odd_layouts(backend, rng):
    """Strided and byte-swapped running arrays are updated in place, through the view."""
    x, gamma, beta = _inputs(rng, (6, 4), -1, np.float64)
    storage = np.ones(8)
    running_mean = storage[::2]
    running_var = np.ones(4, dtype=">f8")
    fastdl.batch_norm(x, gamma, beta, running_mean=running_mean, running_var=running_var,
                      decay=0.5, backend=backend)
    assert_close(storage[::2], 0.5 + 0.5 * x.mean(axis=0), np.float64)
    assert np.array_equal(storage[1::2], np.ones(4))
    assert_close(running_var.astype(np.float64), 0.5 + 0.5 * x.var(axis=0), np.float64)


def test_memoised_checks_see_what_changed(backend, rng):
    """The checks are memoised on shapes, dtypes, flags and scalars: after a valid call,
    the same arrays with a flag or an argument changed must still be judged afresh."""
    x, gamma, beta = _inputs(rng, (6, 4), -1, np.float32)
    running_mean, running_var = np.zeros(4), np.ones(4)

    def call(**changes):
        kwargs = dict(running_mean=running_mean, running_var=running_var, backend=backend)
        return fastdl.batch_norm(x, gamma, beta, **{**kwargs, **changes})

    call()  # now memoised
    with pytest.raises(TypeError, match="training"):
        call(training=1)  # == True, but not a bool
    with pytest.raises(TypeError, match="axis"):
        call(axis=True)
    before = running_mean.copy()
    running_mean.setflags(write=False)  # the same array, now read-only
    with pytest.raises(ValueError, match="running_mean: is read-only"):
        call()
    assert np.array_equal(running_mean, before)
    running_mean.setflags(write=True)
    # a strided view of the same shape and dtype takes the general path, updated in place
    storage = np.zeros(8)
    call(running_mean=storage[::2], decay=0.5)
    assert_close(storage[::2], 0.5 * x.astype(np.float64).mean(axis=0), np.float64)
    assert np.array_equal(storage[1::2], np.zeros(4))


def test_dtype_rules(backend, rng):
    x = rng.normal(size=(5, 3))
    gamma, beta = np.ones(3), np.zeros(3)
    assert fastdl.batch_norm(x.astype(np.float32), gamma.astype(np.float32),
                             beta.astype(np.float32), backend=backend).dtype == np.float32
    assert fastdl.batch_norm(x.astype(np.float32), gamma, beta.astype(np.float32),
                             backend=backend).dtype == np.float64
    ints = fastdl.batch_norm(np.arange(15).reshape(5, 3), [1, 1, 1], [0, 0, 0], backend=backend)
    assert_close(ints, _numpy_formula(np.arange(15).reshape(5, 3), gamma, beta, -1), np.float64)


@pytest.mark.parametrize("shape, axis", [((4096, 3), -1), ((8, 3, 32, 32), 1),
                                         ((2, 3, 100000), 1), ((200000, 1), -1)],
                         ids=["NF", "NCHW", "long_rows", "one_channel"])
def test_large_mean_small_spread_is_stable(backend, rng, shape, axis):
    """float32 with mean 1e4 and std 1: E[x^2] - E[x]^2 would lose every digit."""
    x = (1e4 + rng.normal(size=shape)).astype(np.float32)
    channels = shape[axis]
    out = fastdl.batch_norm(x, np.ones(channels, np.float32), np.zeros(channels, np.float32),
                            axis=axis, backend=backend)
    assert out.dtype == np.float32
    others = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    out64 = out.astype(np.float64)
    assert np.max(np.abs(out64.mean(axis=others))) < 1e-3
    assert np.max(np.abs(out64.var(axis=others) - 1)) < 1e-3
    assert_close(out, _numpy_formula(x, np.ones(channels), np.zeros(channels), axis),
                 np.float32, scale_tol=1e-4)


@pytest.mark.parametrize("shape, axis", [((50, 4), -1), ((3, 4, 80), 1)])
def test_constant_channel(backend, dtype, shape, axis):
    x = np.full(shape, 7.25, dtype)
    x[(slice(None),) * (axis % x.ndim) + (0,)] = 3.0  # channel 0 constant too, other value
    gamma = np.arange(1, 5, dtype=dtype)
    beta = np.arange(4, dtype=dtype) - 1.5
    out = fastdl.batch_norm(x, gamma, beta, axis=axis, backend=backend)
    assert np.isfinite(out).all()
    shape_c = [1] * x.ndim
    shape_c[axis] = 4
    assert_close(out, np.broadcast_to(beta.reshape(shape_c), shape), dtype)


def test_nan_and_inf_propagate_per_channel(backend, dtype, rng):
    x = rng.normal(size=(40, 3)).astype(dtype)
    x[5, 0] = np.nan
    x[7, 2] = np.inf
    out = fastdl.batch_norm(x, np.ones(3, dtype), np.zeros(3, dtype), backend=backend)
    with np.errstate(invalid="ignore"):
        expected = _numpy_formula(x, np.ones(3), np.zeros(3), -1)
    assert np.isnan(out[:, 0]).all() and np.isnan(out[:, 2]).all()  # as in the formula
    assert np.isnan(expected[:, 0]).all() and np.isnan(expected[:, 2]).all()
    assert_close(out[:, 1], expected[:, 1], dtype)


@pytest.mark.parametrize("shape, axis", [
    ((30011, 1), -1),           # C=1, many rows: row chunks merged with Chan's formula
    ((10007, 3), -1),           # C=3 < threads
    ((1, 3, 3 * 4096 + 17), 1),  # one row per channel, split into pieces
    ((64, 2, 5000), 1),          # C=2, many long rows
    ((7, 5000), -1),            # large C, few rows: column tiles
    ((3, 700, 5), 1),           # large C, B < 64
], ids=["C1_rows", "C3_rows", "C3_pieces", "C2_segments", "C5000", "C700_B5"])
def test_chunked_and_wide_paths(backend, dtype, rng, shape, axis):
    x, gamma, beta = _inputs(rng, shape, axis, dtype)
    x += dtype.type(50)  # an offset, so that shifted sums and merges matter
    for threads in sorted({1, fastdl.get_num_threads()}):
        previous = fastdl.get_num_threads()
        fastdl.set_num_threads(threads)
        try:
            out = fastdl.batch_norm(x, gamma, beta, axis=axis, backend=backend)
        finally:
            fastdl.set_num_threads(previous)
        assert_close(out, _numpy_formula(x, gamma, beta, axis), dtype)


@pytest.mark.parametrize("build", ["generic", "avx2"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape, axis", [
    ((37, 5), -1),                  # columns, widths not a multiple of the vector
    ((3, 700, 5), 1),               # columns, B > 1
    ((2, 3, 4096 + 4096 + 21), 1),  # segments: pieces, a tail shorter than a vector
    ((5, 3, 77), 1),                # segments: many rows per task, several channels
], ids=["NF", "C700_B5", "pieces", "rows"])
def test_cython_simd_builds(build, training, dtype, rng, shape, axis):
    """Both builds of the C loops (kernels/norm_simd.h): the generic one runs on every
    x86-64, the AVX2+FMA one where the CPU has it."""
    require(fastdl.backends()["cython"] == "available", "backend cython is unavailable")
    from fastdl._cy import norm as cy_norm

    if build == "avx2":
        require(cy_norm._simd_build(True), "the AVX2+FMA build is not available on this CPU")
    x, gamma, beta = _inputs(rng, shape, axis, dtype)
    x += dtype.type(1000)  # an offset: the shifted sums must cancel it exactly enough
    running_mean, running_var = _running(rng, shape[axis], dtype)
    expected, new_mean, new_var = reference.batch_norm(
        x, gamma, beta, training=training, running_mean=running_mean,
        running_var=running_var, axis=axis)
    saved = cy_norm._simd_build()
    cy_norm._simd_build(build == "avx2")
    try:
        for threads in sorted({1, fastdl.get_num_threads()}):
            previous = fastdl.get_num_threads()
            fastdl.set_num_threads(threads)
            try:
                mean, var = running_mean.copy(), running_var.copy()
                out = fastdl.batch_norm(x, gamma, beta, training=training, running_mean=mean,
                                        running_var=var, axis=axis, backend="cython")
            finally:
                fastdl.set_num_threads(previous)
            assert_close(out, expected, dtype)
            if training:
                assert_close(mean, new_mean, dtype)
                assert_close(var, new_var, dtype)
    finally:
        cy_norm._simd_build(saved)


# ---------------------------------------------------------------------------------------
# Thread safety


@pytest.mark.parametrize("compiled", ["numba", "cython"])
def test_concurrent_calls(compiled, rng):
    status = fastdl.backends()[compiled]
    require(status == "available", f"backend {compiled} is unavailable: {status}")
    work = []
    for i in range(8):
        shape, axis = [((64, 6, 70), 1), ((300, 5), -1)][i % 2]
        x, gamma, beta = _inputs(rng, shape, axis, np.float32 if i % 4 < 2 else np.float64)
        work.append((x, gamma, beta, axis, _numpy_formula(x, gamma, beta, axis)))
    errors = []

    def run(x, gamma, beta, axis, expected):
        try:
            for _ in range(50):
                out = fastdl.batch_norm(x, gamma, beta, axis=axis, backend=compiled)
                assert_close(out, expected, x.dtype)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


# ---------------------------------------------------------------------------------------
# forward_batchnorm: the exams' drop-in


def _exam_forward_batchnorm(Z, gamma, beta, eps, cache_dict, beta_avg, mode):
    """The exam's plain NumPy version, as its solution writes it."""
    if mode == "train":
        mu = np.mean(Z, axis=0)
        var = np.var(Z, axis=0)
        cache_dict["mu"] = beta_avg * cache_dict["mu"] + (1 - beta_avg) * mu
        cache_dict["var"] = beta_avg * cache_dict["var"] + (1 - beta_avg) * var
    else:
        mu, var = cache_dict["mu"], cache_dict["var"]
    return gamma * (Z - mu) / np.sqrt(var + eps) + beta


@pytest.mark.parametrize("param_shape", ["flat", "row"])
def test_forward_batchnorm_matches_exam_formula(backend, dtype, rng, param_shape):
    features = 20  # the exam's dense layer of 20 outputs: 20 gammas and 20 betas
    shape = (features,) if param_shape == "flat" else (1, features)
    gamma = rng.normal(size=shape).astype(dtype)
    beta = rng.normal(size=shape).astype(dtype)
    ours = {"mu": np.zeros(shape, dtype), "var": np.ones(shape, dtype)}
    exam = {key: value.copy() for key, value in ours.items()}
    with fastdl.use_backend(backend):
        for step in range(3):
            Z = (rng.normal(size=(32, features)) * 2 + step).astype(dtype)
            out = fastdl.forward_batchnorm(Z, gamma, beta, 1e-5, ours, 0.9, "train")
            expected = _exam_forward_batchnorm(Z, gamma, beta, 1e-5, exam, 0.9, "train")
            assert_close(out, expected, dtype)
            for key in ("mu", "var"):
                assert ours[key].shape == exam[key].shape
                assert_close(ours[key], exam[key], dtype)
        Z = rng.normal(size=(5, features)).astype(dtype)
        out = fastdl.forward_batchnorm(Z, gamma, beta, 1e-5, ours, 0.9, "test")
        assert_close(out, _exam_forward_batchnorm(Z, gamma, beta, 1e-5, exam, 0.9, "test"), dtype)


def test_forward_batchnorm_missing_cache_counts_as_zero(backend, rng):
    Z = rng.normal(size=(16, 4))
    cache = {}
    with fastdl.use_backend(backend):
        out = fastdl.forward_batchnorm(Z, np.ones(4), np.zeros(4), 1e-5, cache, 0.9, "train")
    assert_close(out, _numpy_formula(Z, np.ones(4), np.zeros(4), -1), np.float64)
    assert_close(cache["mu"], 0.1 * Z.mean(axis=0), np.float64)
    assert_close(cache["var"], 0.1 * Z.var(axis=0), np.float64)


# ---------------------------------------------------------------------------------------
# Bad input: every case must raise the right error before any kernel runs


BAD_INPUT_SCRIPT = """
import numpy as np
import fastdl

BACKEND = {backend!r}
x = np.ones((4, 3))
g, b = np.ones(3), np.zeros(3)
rm, rv = np.zeros(3), np.ones(3)
readonly = np.zeros(3)
readonly.setflags(write=False)
cases = [
    (TypeError, "x", dict(x=np.ones((4, 3), complex))),
    (TypeError, "x", dict(x=np.array([["a", "b", "c"]]))),
    (TypeError, "x", dict(x=object())),
    (ValueError, "x", dict(x=np.ones(3), gamma=np.ones(3), beta=np.zeros(3))),
    (ValueError, "x", dict(x=np.ones((0, 3)))),
    (ValueError, "gamma", dict(gamma=np.ones(4))),
    (ValueError, "gamma", dict(gamma=np.ones((1, 3)))),
    (ValueError, "beta", dict(beta=np.zeros(2))),
    (TypeError, "gamma", dict(gamma=np.ones(3, complex))),
    (ValueError, "eps", dict(eps=0.0)),
    (ValueError, "eps", dict(eps=-1e-5)),
    (ValueError, "eps", dict(eps=float("nan"))),
    (ValueError, "eps", dict(eps=float("inf"))),
    (TypeError, "eps", dict(eps="1e-5")),
    (ValueError, "decay", dict(decay=1.5)),
    (ValueError, "decay", dict(decay=-0.1)),
    (ValueError, "axis", dict(axis=2)),
    (ValueError, "axis", dict(axis=-3)),
    (TypeError, "axis", dict(axis=1.0)),
    (TypeError, "training", dict(training="yes")),
    (ValueError, "running_mean", dict(training=False)),
    (ValueError, "running_mean", dict(running_mean=rm)),
    (ValueError, "running_mean", dict(running_mean=np.zeros(4), running_var=rv)),
    (ValueError, "running_var", dict(running_mean=rm, running_var=np.ones((3, 1)))),
    (TypeError, "running_mean", dict(running_mean=[0.0, 0.0, 0.0], running_var=rv)),
    (TypeError, "running_mean", dict(running_mean=np.zeros(3, int), running_var=rv)),
    (TypeError, "running_var", dict(running_mean=rm, running_var=np.ones(3, np.float16))),
    (ValueError, "running_mean", dict(running_mean=readonly, running_var=rv)),
]
for error, name, overrides in cases:
    kwargs = dict(x=x, gamma=g, beta=b, backend=BACKEND)
    kwargs.update(overrides)
    saved = rm.copy(), rv.copy()
    try:
        fastdl.batch_norm(kwargs.pop("x"), kwargs.pop("gamma"), kwargs.pop("beta"), **kwargs)
    except error as exc:
        assert name in str(exc), (name, str(exc))
    else:
        raise AssertionError(f"no {{error.__name__}} for {{name}}: {{overrides}}")
    assert np.array_equal(rm, saved[0]) and np.array_equal(rv, saved[1]), name

# forward_batchnorm
Z = np.ones((4, 3))
with fastdl.use_backend(BACKEND):
    fb_cases = [
        (ValueError, "mode", (Z, g, b, 1e-5, {{}}, 0.9, "eval")),
        (ValueError, "'train', 'test'", (Z, g, b, 1e-5, {{}}, 0.9, "Train")),
        (ValueError, "Z", (np.ones(3), g, b, 1e-5, {{}}, 0.9, "train")),
        (ValueError, "Z", (np.ones((2, 3, 1)), g, b, 1e-5, {{}}, 0.9, "train")),
        (ValueError, "gamma", (Z, np.ones(4), b, 1e-5, {{}}, 0.9, "train")),
        (ValueError, "gamma", (Z, np.ones((4, 3)), b, 1e-5, {{}}, 0.9, "train")),
        (ValueError, "beta", (Z, g, np.zeros((3, 1)), 1e-5, {{}}, 0.9, "train")),
        (ValueError, "eps", (Z, g, b, 0, {{}}, 0.9, "train")),
        (ValueError, "beta_avg", (Z, g, b, 1e-5, {{}}, 2.0, "train")),
        (TypeError, "cache_dict", (Z, g, b, 1e-5, None, 0.9, "train")),
        (ValueError, "'var'", (Z, g, b, 1e-5, {{"mu": np.zeros(3)}}, 0.9, "test")),
        (ValueError, "cache_dict['mu']", (Z, g, b, 1e-5, {{"mu": np.zeros(5)}}, 0.9, "train")),
    ]
    for error, name, args in fb_cases:
        try:
            fastdl.forward_batchnorm(*args)
        except error as exc:
            assert name in str(exc), (name, str(exc))
        else:
            raise AssertionError(f"no {{error.__name__}} for {{name}}")
print("ALL OK", len(cases) + len(fb_cases))
"""


def test_bad_input_raises_before_kernels(backend):
    code, stdout, stderr = run_isolated(BAD_INPUT_SCRIPT.format(backend=backend))
    assert code == 0, stderr[-3000:]
    assert "ALL OK 40" in stdout

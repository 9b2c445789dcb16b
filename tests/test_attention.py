"""sliding_window_attention: every backend x dtype x layout against the naive loops
(fastdl.reference) and against two independent vectorised formulations written here (a
NumPy sliding_window_view einsum, and PyTorch's unfold + softmax in float64)."""

import functools
import threading
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdl
from fastdl import reference
from helpers import assert_close, layout_variants, run_isolated

from conftest import BACKENDS, STRICT

LAYOUTS = ("NHWC", "NCHW")


def require_backend(name):
    """Skip (fail under FASTDL_TEST_STRICT) when a backend is unavailable here."""
    status = fastdl.backends()[name]
    if status != "available":
        (pytest.fail if STRICT else pytest.skip)(f"backend {name} is unavailable: {status}")


# ---------------------------------------------------------------------------------------
# Independent formulations (channels-last, float64)


def _pads(padding, window):
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return tuple(((k - 1) // 2, (k - 1) // 2) for k in window)
    padding = (padding, padding) if isinstance(padding, int) else padding
    return tuple((p, p) for p in padding)


def _normalized(x):
    norms = np.sqrt((x * x).sum(axis=(1, 2), keepdims=True))
    return np.divide(x, norms, out=np.zeros_like(x), where=norms != 0)


def numpy_oracle(x, key, value, stride=1, padding="valid", normalize=True):
    """All windows at once: a sliding_window_view einsum with a validity mask."""
    x = np.asarray(x, np.float64)
    key = np.asarray(key, np.float64)
    k_h, k_w, _, c_out = key.shape
    value = np.asarray(value, np.float64).reshape(k_h, k_w, c_out)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    (top, bottom), (left, right) = _pads(padding, (k_h, k_w))
    if normalize:
        x = _normalized(x)
    spatial = ((0, 0), (top, bottom), (left, right))
    xp = np.pad(x, spatial + ((0, 0),))
    inside = np.pad(np.ones(x.shape[:3], bool), spatial)
    view = np.lib.stride_tricks.sliding_window_view
    windows = view(xp, (k_h, k_w), axis=(1, 2))[:, ::sh, ::sw]  # (N, Ho, Wo, C, KH, KW)
    valid = view(inside, (k_h, k_w), axis=(1, 2))[:, ::sh, ::sw]  # (N, Ho, Wo, KH, KW)
    scores = np.einsum("nijcab,abco->nijabo", windows, key)
    scores = np.where(valid[..., None], scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=(3, 4), keepdims=True))
    weights /= weights.sum(axis=(3, 4), keepdims=True)
    return np.einsum("nijabo,abo->nijo", weights, value)


def torch_oracle(torch, x, key, value, stride=1, padding="valid", normalize=True):
    """PyTorch unfold + masked softmax in float64, channels-first inside."""
    functional = torch.nn.functional
    k_h, k_w, c_in, c_out = key.shape
    (top, bottom), (left, right) = _pads(padding, (k_h, k_w))
    xt = torch.tensor(np.asarray(x, np.float64)).permute(0, 3, 1, 2)  # N, C, H, W
    if normalize:
        norms = torch.linalg.vector_norm(xt, dim=(2, 3), keepdim=True)
        xt = torch.where(norms == 0, xt, xt / norms)
    n, _, h, w = xt.shape
    xt = functional.pad(xt, (left, right, top, bottom))
    ones = functional.pad(torch.ones(n, 1, h, w, dtype=torch.float64), (left, right, top, bottom))
    cols = functional.unfold(xt, (k_h, k_w), stride=stride)  # N, C*KH*KW, L
    inside = functional.unfold(ones, (k_h, k_w), stride=stride) > 0.5  # N, KH*KW, L
    keys = torch.tensor(np.asarray(key, np.float64)).permute(2, 0, 1, 3).reshape(
        c_in, k_h * k_w, c_out)
    scores = torch.einsum("nckl,cko->nklo", cols.reshape(n, c_in, k_h * k_w, -1), keys)
    scores = scores.masked_fill(~inside[..., None], float("-inf"))
    weights = torch.softmax(scores, dim=1)
    values = torch.tensor(np.asarray(value, np.float64)).reshape(k_h * k_w, c_out)
    out = torch.einsum("nklo,ko->nlo", weights, values)
    out_h = (h + top + bottom - k_h) // (stride if isinstance(stride, int) else stride[0]) + 1
    return out.reshape(n, out_h, -1, c_out).numpy()


# ---------------------------------------------------------------------------------------
# Cases: (x shape NHWC, window, C_out, stride, padding, normalize, value 4-d, zero channel)

CASES = {
    "exam_3x3_valid": ((2, 7, 8, 3), (3, 3), 4, 1, "valid", True, False, False),
    "stride2_pad1": ((2, 9, 8, 3), (3, 3), 2, 2, 1, True, False, False),
    "same_masked": ((1, 6, 7, 2), (3, 3), 3, 1, "same", True, False, False),
    "same_5x5_no_norm": ((1, 6, 6, 2), (5, 5), 2, 1, "same", False, False, False),
    "window_1x1": ((2, 4, 5, 3), (1, 1), 3, 1, "valid", True, False, False),
    "window_5x5_stride2": ((1, 9, 11, 2), (5, 5), 2, 2, "valid", True, False, False),
    "rect_window_tuples": ((1, 7, 9, 2), (2, 3), 2, (2, 1), (1, 2), True, False, False),
    "last_offsets_past_the_end": ((1, 3, 2, 2), (1, 4), 2, (1, 2), (0, 1), False, False, False),
    "value_4d": ((1, 6, 6, 3), (3, 3), 2, 1, "valid", True, True, False),
    "zero_channel": ((2, 6, 5, 3), (3, 3), 2, 1, 1, True, False, True),
    "zero_channel_no_norm": ((2, 6, 5, 3), (3, 3), 2, 1, "valid", False, False, True),
}


@functools.lru_cache(maxsize=None)
def case_data(name):
    shape, (k_h, k_w), c_out, stride, padding, normalize, value_4d, zero_channel = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = rng.standard_normal(shape) * 3
    if zero_channel:
        x[-1, :, :, 1] = 0
    key = rng.standard_normal((k_h, k_w, shape[-1], c_out))
    value = rng.standard_normal((k_h, k_w, 1, c_out) if value_4d else (k_h, k_w, c_out))
    kwargs = dict(stride=stride, padding=padding, normalize=normalize)
    expected = reference.sliding_window_attention(x, key, value, **kwargs)
    return x, key, value, kwargs, expected


def to_layout(layout, x, key, value):
    """Channels-last arrays in the layout the user would pass."""
    if layout == "NHWC":
        return x, key, value
    value_cf = value.transpose(2, 0, 1) if value.ndim == 3 else value.transpose(3, 2, 0, 1)
    return x.transpose(0, 3, 1, 2), key.transpose(3, 2, 0, 1), value_cf


def from_layout(layout, out):
    return out if layout == "NHWC" else np.moveaxis(out, 1, -1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_naive_and_vectorised_oracle(case, layout, backend, dtype):
    x, key, value, kwargs, expected = case_data(case)
    xs, ks, vs = (a.astype(dtype) for a in to_layout(layout, x, key, value))
    out = fastdl.sliding_window_attention(xs, ks, vs, layout=layout, backend=backend, **kwargs)
    assert out.flags.c_contiguous
    assert_close(from_layout(layout, out), expected, dtype)
    # the naive loops and the einsum agree with each other, so neither is wrong alone
    assert_close(numpy_oracle(x, key, value, **kwargs), expected, np.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ["stride2_pad1", "same_masked", "window_5x5_stride2",
                                  "zero_channel", "value_4d"])
def test_matches_torch_unfold(case, layout, backend, dtype, torch):
    x, key, value, kwargs, _ = case_data(case)
    expected = torch_oracle(torch, x, key, value, **kwargs)
    xs, ks, vs = (a.astype(dtype) for a in to_layout(layout, x, key, value))
    out = fastdl.sliding_window_attention(xs, ks, vs, layout=layout, backend=backend, **kwargs)
    assert_close(from_layout(layout, out), expected, dtype)


def test_larger_shape_matches_torch(backend, dtype, torch, rng):
    """More rows than threads and C_in > C_out, "same" padding, one zero channel."""
    x = rng.standard_normal((3, 17, 13, 6))
    x[1, ..., 4] = 0
    key, value = rng.standard_normal((3, 3, 6, 4)), rng.standard_normal((3, 3, 4))
    out = fastdl.sliding_window_attention(x.astype(dtype), key.astype(dtype),
                                          value.astype(dtype), padding="same", backend=backend)
    assert_close(out, torch_oracle(torch, x, key, value, padding="same"), dtype)


# The row kernels' paths: the 4-channel score pass (C_in 9: two passes and a rest), the
# ring of transposed channels-last input rows (reused by consecutive output rows, across
# image boundaries, with row strides 1 and 2 and masked top and bottom rows), and NCHW
# read and written in place; on 1 and 2 threads.
ROW_PATH_CASES = [
    ((3, 9, 10, 9), (3, 3), 1, 1),
    ((2, 11, 7, 5), (3, 2), (2, 1), (1, 0)),
    ((4, 5, 6, 4), (2, 3), 1, "valid"),
    ((10, 3, 6, 5), (3, 3), 1, "valid"),  # one output row per image, the same input rows
]


def _row_path_problem(shape, window, rng):
    x = rng.standard_normal(shape) * 2
    key = rng.standard_normal(window + (shape[-1], 3))
    value = rng.standard_normal(window + (3,))
    return x, key, value


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, window, stride, padding", ROW_PATH_CASES)
def test_row_kernel_paths(shape, window, stride, padding, layout, threads, backend, dtype,
                          rng):
    x, key, value = _row_path_problem(shape, window, rng)
    expected = numpy_oracle(x, key, value, stride=stride, padding=padding)
    xs, ks, vs = (np.ascontiguousarray(a.astype(dtype)) for a in to_layout(layout, x, key, value))
    old = fastdl.get_num_threads()
    fastdl.set_num_threads(min(threads, fastdl._dispatch.max_num_threads()))
    try:
        out = fastdl.sliding_window_attention(xs, ks, vs, stride=stride, padding=padding,
                                              layout=layout, backend=backend)
    finally:
        fastdl.set_num_threads(old)
    assert out.flags.c_contiguous
    assert_close(from_layout(layout, out), expected, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, window, stride, padding", ROW_PATH_CASES)
def test_cython_generic_row_build(shape, window, stride, padding, layout, dtype, rng):
    """The row function built without AVX2 (what CPUs without it run) gives the same."""
    require_backend("cython")
    from fastdl._cy import attention as cy_attention

    x, key, value = _row_path_problem(shape, window, rng)
    x[0, 1, 1, 0] = np.nan  # NaN reaches that image's outputs through the norm
    expected = numpy_oracle(x, key, value, stride=stride, padding=padding)
    xs, ks, vs = (a.astype(dtype) for a in to_layout(layout, x, key, value))
    saved = cy_attention._row_build()
    cy_attention._row_build(False)
    try:
        out = fastdl.sliding_window_attention(xs, ks, vs, stride=stride, padding=padding,
                                              layout=layout, backend="cython")
    finally:
        cy_attention._row_build(saved)
    assert np.isnan(expected[0]).all() and not np.isnan(expected[1:]).any()
    assert_close(from_layout(layout, out), expected, dtype)


def test_uniform_scores_average_the_valid_values(backend, dtype):
    """Zero keys give equal scores: each output is the mean of the values at the window
    positions inside the image. At a "same"-padded corner only 4 of 9 positions count,
    so treating padding as zero pixels (not masking) would average all 9."""
    x = np.ones((1, 4, 4, 2), dtype)
    key = np.zeros((3, 3, 2, 1), dtype)
    value = np.arange(9, dtype=dtype).reshape(3, 3, 1)
    out = fastdl.sliding_window_attention(x, key, value, padding="same", backend=backend)
    assert_close(out[0, 0, 0], [np.mean([4, 5, 7, 8])], dtype)  # offsets (1..2, 1..2)
    assert_close(out[0, 0, 1], [np.mean([3, 4, 5, 6, 7, 8])], dtype)
    assert_close(out[0, 1, 1], [4.0], dtype)
    assert_close(out[0, 3, 3], [np.mean([0, 1, 3, 4])], dtype)


def test_unbatched_and_exam_shape(backend, rng):
    x = rng.random((128, 128, 3)).astype(np.float32)
    key = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    value = rng.standard_normal((3, 3, 5)).astype(np.float32)
    out = fastdl.sliding_window_attention(x, key, value, backend=backend)
    assert out.shape == (126, 126, 5) and out.dtype == np.float32
    batched = fastdl.sliding_window_attention(x[None], key, value, backend=backend)
    np.testing.assert_array_equal(out, batched[0])
    expected = numpy_oracle(x[None, :20, :20], key, value)[0]
    # each image is normalised on its own, so compare a crop computed as its own image
    crop = fastdl.sliding_window_attention(x[:20, :20], key, value, backend=backend)
    assert_close(crop, expected, np.float32)
    cf = fastdl.sliding_window_attention(x.transpose(2, 0, 1), key.transpose(3, 2, 0, 1),
                                         value.transpose(2, 0, 1), layout="NCHW",
                                         backend=backend)
    assert cf.shape == (5, 126, 126)
    np.testing.assert_allclose(np.moveaxis(cf, 0, -1), out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("argument", ["x", "key", "value"])
def test_memory_layout_variants(argument, backend, dtype):
    x, key, value, kwargs, expected = case_data("stride2_pad1")
    arrays = {"x": x.astype(dtype), "key": key.astype(dtype), "value": value.astype(dtype)}
    for name, variant in layout_variants(arrays[argument]):
        before = variant.copy()
        call = dict(arrays, **{argument: variant})
        out = fastdl.sliding_window_attention(call["x"], call["key"], call["value"],
                                              backend=backend, **kwargs)
        assert_close(out, expected, dtype)
        np.testing.assert_array_equal(variant, before, err_msg=name)  # input not modified


def test_dtype_promotion(backend, rng):
    x = rng.integers(-3, 4, (1, 5, 5, 2))
    key = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    value = rng.standard_normal((3, 3, 2)).astype(np.float32)
    expected = reference.sliding_window_attention(x, key, value)
    assert_close(fastdl.sliding_window_attention(x, key, value, backend=backend),
                 expected, np.float64)  # int -> float64
    assert_close(fastdl.sliding_window_attention(x.astype(np.float32), key.astype(np.float64),
                                                 value, backend=backend),
                 expected, np.float64)  # np.result_type(float32, float64)
    assert_close(fastdl.sliding_window_attention(x.astype(np.float32), key, value,
                                                 backend=backend),
                 expected, np.float32)


def test_empty_batch(backend, dtype):
    out = fastdl.sliding_window_attention(np.zeros((0, 5, 5, 2), dtype),
                                          np.ones((3, 3, 2, 4), dtype),
                                          np.ones((3, 3, 4), dtype), backend=backend)
    assert out.shape == (0, 3, 3, 4) and out.dtype == dtype


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_propagate_like_the_definition(bad, normalize, backend, dtype, rng):
    x = rng.standard_normal((2, 6, 6, 2))
    x[0, 2, 3, 1] = bad
    key, value = rng.standard_normal((3, 3, 2, 2)), rng.standard_normal((3, 3, 2))
    kwargs = dict(padding=1, normalize=normalize)
    expected = reference.sliding_window_attention(x, key, value, **kwargs)
    # image 1 is untouched; image 0 has NaN outputs where the bad pixel is used
    assert np.isnan(expected[0]).any() and not np.isnan(expected[1]).any()
    out = fastdl.sliding_window_attention(x.astype(dtype), key.astype(dtype),
                                          value.astype(dtype), backend=backend, **kwargs)
    assert_close(out, expected, dtype)


def test_num_threads_do_not_change_results(backend, dtype):
    x, key, value, kwargs, _ = case_data("stride2_pad1")
    x, key, value = (a.astype(dtype) for a in (x, key, value))
    old = fastdl.get_num_threads()
    results = []
    try:
        for n in sorted({1, fastdl._dispatch.max_num_threads()}):
            fastdl.set_num_threads(n)
            results.append(fastdl.sliding_window_attention(x, key, value, backend=backend,
                                                           **kwargs))
    finally:
        fastdl.set_num_threads(old)
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


@pytest.mark.parametrize("compiled", ["numba", "cython"])
def test_thread_safety(compiled):
    require_backend(compiled)
    rng = np.random.default_rng(7)
    inputs = [(rng.standard_normal((2, 12, 10, 3)).astype(np.float32),
               rng.standard_normal((3, 3, 3, 4)).astype(np.float32),
               rng.standard_normal((3, 3, 4)).astype(np.float32)) for _ in range(8)]
    expected = [fastdl.sliding_window_attention(*args, padding="same", backend=compiled)
                for args in inputs]
    failures = []

    def worker(index):
        try:
            for _ in range(50):
                out = fastdl.sliding_window_attention(*inputs[index], padding="same",
                                                      backend=compiled)
                if not np.array_equal(out, expected[index]):
                    failures.append(f"thread {index}: wrong result")
                    return
        except Exception as exc:  # reported below; a thread's exception is otherwise lost
            failures.append(f"thread {index}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


@st.composite
def attention_problems(draw):
    k_h, k_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kind = draw(st.sampled_from(["valid", "same", "ints"]))
    if kind == "same" and k_h % 2 and k_w % 2:
        padding, stride, pads = "same", (1, 1), ((k_h - 1) // 2, (k_w - 1) // 2)
    elif kind == "ints":
        pads = (draw(st.integers(0, k_h - 1)), draw(st.integers(0, k_w - 1)))
        padding = pads
    else:
        padding, pads = "valid", (0, 0)
    h = draw(st.integers(max(1, k_h - 2 * pads[0]), 9))
    w = draw(st.integers(max(1, k_w - 2 * pads[1]), 9))
    shape = (draw(st.integers(1, 3)), h, w, draw(st.integers(1, 4)))
    c_out = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    normalize = draw(st.booleans())
    zero_channel = draw(st.booleans())
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    layout = draw(st.sampled_from(LAYOUTS))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    if zero_channel:
        x[0, ..., -1] = 0
    key = rng.standard_normal((k_h, k_w, shape[-1], c_out))
    value = rng.standard_normal((k_h, k_w, c_out))
    return x, key, value, dict(stride=stride, padding=padding, normalize=normalize), dtype, layout


@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=attention_problems())
def test_hypothesis_against_vectorised_oracle(backend_name, problem):
    require_backend(backend_name)
    x, key, value, kwargs, dtype, layout = problem
    expected = numpy_oracle(x, key, value, **kwargs)
    xs, ks, vs = (a.astype(dtype) for a in to_layout(layout, x, key, value))
    out = fastdl.sliding_window_attention(xs, ks, vs, layout=layout, backend=backend_name,
                                          **kwargs)
    assert_close(from_layout(layout, out), expected, dtype)


# ---------------------------------------------------------------------------------------
# Bad input: every case must raise the right error, in Python, on every backend. Run in a
# subprocess so a kernel reached by mistake crashes the child, not pytest.

BAD_INPUT_SCRIPT = """
import numpy as np
import fastdl

backend = {backend!r}
x = np.ones((2, 8, 8, 3)); key = np.ones((3, 3, 3, 5)); value = np.ones((3, 3, 5))
cases = [
    (dict(x=np.ones((2, 8, 8, 4))), ValueError, "C_in=3"),
    (dict(x=np.ones((8, 8))), ValueError, "x: expected a 3 or 4-d array"),
    (dict(x=np.ones((2, 8, 8, 0))), ValueError, "non-zero"),
    (dict(x=np.ones((2, 0, 8, 3))), ValueError, "non-zero"),
    (dict(key=np.ones((3, 3, 3))), ValueError, "key: expected a 4-d array"),
    (dict(key=np.ones((3, 3, 3, 0)), value=np.ones((3, 3, 0))), ValueError, "non-zero"),
    (dict(value=np.ones((3, 3, 4))), ValueError, "value: expected shape (3, 3, 5)"),
    (dict(value=np.ones((2, 3, 5))), ValueError, "got (2, 3, 5)"),
    (dict(value=np.ones((3, 3, 2, 5))), ValueError, "(3, 3, 1, 5)"),
    (dict(value=np.ones(5)), ValueError, "value: expected a 3 or 4-d array"),
    (dict(x=np.ones((2, 2, 8, 3))), ValueError, "larger than the padded input"),
    (dict(key=np.ones((9, 9, 3, 5)), value=np.ones((9, 9, 5)), padding=0), ValueError,
     "larger than the padded input"),
    (dict(key=np.ones((2, 2, 3, 5)), value=np.ones((2, 2, 5)), padding="same"), ValueError,
     "odd window"),
    (dict(padding="same", stride=2), ValueError, "stride 1"),
    (dict(padding=3), ValueError, "smaller than the window"),
    (dict(padding=(0, 5)), ValueError, "smaller than the window"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=-2), ValueError, "stride"),
    (dict(stride=(1, 0)), ValueError, "stride"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(stride=(1, 1, 1)), ValueError, "stride"),
    (dict(stride=2**40), ValueError, "stride"),
    (dict(layout="NWHC"), ValueError, "layout"),
    (dict(normalize="yes"), TypeError, "normalize"),
    (dict(x=np.ones((2, 8, 8, 3), complex)), TypeError, "x"),
    (dict(key=np.array([["a"]])), TypeError, "key"),
    (dict(value=np.ones((3, 3, 5), object)), TypeError, "value"),
    (dict(layout="NCHW"), ValueError, "C_in"),
    (dict(layout="NCHW", x=np.ones((2, 3, 8, 8)), key=np.ones((5, 3, 3, 3)),
          value=np.ones((3, 3, 5))), ValueError, "(5, 3, 3) or (5, 1, 3, 3)"),
]
for overrides, error, fragment in cases:
    args = dict(x=x, key=key, value=value)
    args.update(overrides)
    try:
        fastdl.sliding_window_attention(args.pop("x"), args.pop("key"), args.pop("value"),
                                        backend=backend, **args)
    except error as exc:
        assert fragment in str(exc), (overrides, str(exc))
    else:
        raise AssertionError(f"no {{error.__name__}} for {{overrides}}")
# the valid call still works after all that
assert fastdl.sliding_window_attention(x, key, value, backend=backend).shape == (2, 6, 6, 5)
print("all bad inputs rejected")
"""


def test_bad_input_rejected_before_the_kernel(backend):
    code, out, err = run_isolated(BAD_INPUT_SCRIPT.format(backend=backend))
    assert code == 0 and "all bad inputs rejected" in out, err[-3000:]

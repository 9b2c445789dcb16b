"""max_pool2d / avg_pool2d on every backend against the naive loop references
(fastdl.reference) and PyTorch in float64."""

import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastdl
from fastdl import reference

from conftest import BACKENDS, require
from helpers import assert_close, layout_variants, run_isolated

OPS = {
    "max": (fastdl.max_pool2d, reference.max_pool2d, "max_pool2d"),
    "avg": (fastdl.avg_pool2d, reference.avg_pool2d, "avg_pool2d"),
}
LAYOUTS = ("NHWC", "NCHW")

# (NHWC shape, size, stride, padding): sizes 1-4, default and explicit strides,
# paddings up to half the window, odd and non-square shapes.
CASES = [
    ((2, 5, 7, 3), 1, None, 0),
    ((2, 6, 6, 4), 2, None, 0),
    ((1, 7, 9, 5), 3, 2, 1),
    ((2, 8, 5, 3), (4, 2), (1, 3), (2, 1)),
    ((1, 5, 5, 17), 4, 1, 2),
    ((3, 4, 11, 2), (3, 1), (2, 1), (1, 0)),
    ((1, 9, 6, 1), 3, (3, 2), 0),
]


def to_layout(x_nhwc, layout):
    return np.moveaxis(x_nhwc, -1, 1) if layout == "NCHW" else x_nhwc


def torch_pool(torch, op, x_nhwc, size, stride, padding):
    """PyTorch's pooling in float64 on an NHWC array; returns NHWC."""
    fn = getattr(torch.nn.functional, OPS[op][2])
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x_nhwc.astype(np.float64), -1, 1)))
    y = fn(t, size, stride=size if stride is None else stride, padding=padding)
    return np.moveaxis(y.numpy(), 1, -1)


def _torch():
    try:
        import torch
    except ImportError:
        require(False, "torch is unavailable (pip install torch==2.13.0)")
    return torch


def _available(name):
    status = fastdl.backends()[name]
    require(status == "available", f"backend {name} is unavailable: {status}")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, size, stride, padding", CASES)
def test_matches_reference_and_torch(backend, dtype, layout, op, shape, size, stride,
                                     padding, rng, torch):
    x = rng.standard_normal(shape).astype(dtype)
    expected = OPS[op][1](x, size, stride, padding)
    assert_close(torch_pool(torch, op, x, size, stride, padding), expected, np.float64)
    # NCHW runs two paths: NCHW memory (pooled as planes) and a channels-last view
    inputs = [to_layout(x, layout), np.ascontiguousarray(to_layout(x, layout))]
    for x_in in inputs[: 1 + (layout == "NCHW")]:
        out = OPS[op][0](x_in, size, stride, padding, layout=layout, backend=backend)
        assert_close(out, to_layout(expected, layout), dtype)
        assert out.flags.c_contiguous


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_input_gives_unbatched_output(backend, dtype, layout, op, rng):
    x = rng.standard_normal((1, 6, 5, 3)).astype(dtype)
    batched = OPS[op][0](to_layout(x, layout), 3, 2, 1, layout=layout, backend=backend)
    single = OPS[op][0](to_layout(x, layout)[0], 3, 2, 1, layout=layout, backend=backend)
    assert single.shape == batched.shape[1:]
    assert_close(single, to_layout(OPS[op][1](x, 3, 2, 1), layout)[0], dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_padding(backend, layout, op, rng, torch):
    x = rng.standard_normal((2, 7, 6, 3))
    out = OPS[op][0](to_layout(x, layout), 3, 1, "same", layout=layout, backend=backend)
    assert out.shape == to_layout(x, layout).shape
    assert_close(out, to_layout(torch_pool(torch, op, x, 3, 1, 1), layout), np.float64)
    # an even window pads one cell after (bottom/right), as for convolutions
    out = OPS[op][0](x, (2, 1), 1, "same", backend=backend)
    padded = np.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)),
                    constant_values=-np.inf if op == "max" else 0)
    expected = np.maximum(padded[:, :-1], padded[:, 1:]) if op == "max" else (
        (padded[:, :-1] + padded[:, 1:]) / 2)
    assert_close(out, expected, np.float64)


@pytest.mark.parametrize("op", OPS)
def test_integer_and_bool_input_give_float64(backend, op, rng):
    x = rng.integers(-50, 50, (2, 4, 6, 3))
    assert_close(OPS[op][0](x, backend=backend), OPS[op][1](x, 2), np.float64)
    flags = x > 0
    assert_close(OPS[op][0](flags, backend=backend), OPS[op][1](flags, 2), np.float64)


@pytest.mark.parametrize("op", OPS)
def test_empty_batch_or_channels(backend, dtype, op):
    assert OPS[op][0](np.zeros((0, 4, 4, 3), dtype), backend=backend).shape == (0, 2, 2, 3)
    out = OPS[op][0](np.zeros((2, 0, 4, 4), dtype), layout="NCHW", backend=backend)
    assert out.shape == (2, 0, 2, 2) and out.dtype == dtype


def test_padded_cells_never_win_the_max(backend, dtype, rng, torch):
    # All inputs negative: a zero from the padding would win if it were counted.
    x = (-1 - np.abs(rng.standard_normal((2, 5, 6, 4)))).astype(dtype)
    for size, padding in ((2, 1), (3, 1), (4, 2), ((4, 2), (2, 1))):
        out = fastdl.max_pool2d(x, size, 1, padding, backend=backend)
        assert (out <= -1).all()
        assert_close(out, torch_pool(torch, "max", x, size, 1, padding), dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_and_inf_propagate(backend, dtype, layout, op, rng, torch):
    x = rng.standard_normal((2, 6, 7, 5)).astype(dtype)
    x[0, 1, 1, 0] = np.nan          # NaN among finite values
    x[0, 0, 0, 1] = np.nan          # NaN in a corner window next to padding
    x[0, 3, 4, 2] = np.inf
    x[1, 2, 2, 3] = -np.inf
    x[1, 2, 3, 3] = np.inf          # +inf and -inf in one window: avg gives NaN
    x[1, 4:6, 5:7, 4] = -np.inf     # a window of only -inf (max: -inf)
    x[1, 0, 0, 4] = np.nan          # NaN first, then larger values in the same window
    x[1, 0, 1, 4] = 100.0
    for size, stride, padding in ((2, None, 0), (3, 2, 1), (2, 1, 1)):
        expected = OPS[op][1](x, size, stride, padding)
        assert np.isnan(expected).any() and np.isinf(expected).any()
        assert_close(torch_pool(torch, op, x, size, stride, padding), expected, np.float64)
        for x_in in (to_layout(x, layout), np.ascontiguousarray(to_layout(x, layout))):
            out = OPS[op][0](x_in, size, stride, padding, layout=layout, backend=backend)
            assert_close(out, to_layout(expected, layout), dtype)


# The row kernels' paths: channels-last straight into the output; one channel (NCHW
# planes) through a scratch line, with its own loop for 2-wide stride-2 windows without
# left padding (odd widths leave a column out). NaN sits in either lane of a pair, and
# first or second in a column.
ROW_PATH_CASES = [
    ((2, 7, 9, 1), 2, 2, 0),         # NCHW-like single channel: the 2x2 stride-2 loop
    ((1, 6, 11, 1), (3, 2), 2, 0),   # 2-wide stride 2, 3 rows: the same loop
    ((1, 6, 8, 1), 2, 2, 1),         # left padding: the general column loop
    ((1, 5, 9, 1), (2, 3), (1, 2), (1, 1)),
    ((2, 7, 9, 6), 2, 2, 0),         # channels-last
    ((1, 6, 8, 9), 3, 1, 1),         # overlapping channels-last windows
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, size, stride, padding", ROW_PATH_CASES)
def test_row_kernel_paths_with_nan(backend, dtype, layout, op, shape, size, stride, padding,
                                   rng, torch):
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, 0] = np.nan     # the first lane of a column pair, in the first row
    x[0, 1, 3, -1] = np.nan    # the second lane, in the second row
    x[-1, 2, 4, 0] = np.inf
    x[-1, 4, 6, -1] = -np.inf
    expected = torch_pool(torch, op, x, size, stride, padding)
    assert np.isnan(expected).any()
    out = OPS[op][0](np.ascontiguousarray(to_layout(x, layout)), size, stride, padding,
                     layout=layout, backend=backend)
    assert_close(out, to_layout(expected, layout), dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape, size, stride, padding", ROW_PATH_CASES)
def test_cython_generic_row_build(dtype, op, shape, size, stride, padding, rng, torch):
    """The row functions built without AVX2 (what CPUs without it run) give the same."""
    _available("cython")
    from fastdl._cy import pool as cy_pool

    x = rng.standard_normal(shape).astype(dtype)
    x[0, 1, 1, 0] = np.nan
    expected = torch_pool(torch, op, x, size, stride, padding)
    saved = cy_pool._row_build()
    cy_pool._row_build(False)
    try:
        got = [OPS[op][0](np.ascontiguousarray(to_layout(x, layout)), size, stride, padding,
                          layout=layout, backend="cython") for layout in LAYOUTS]
    finally:
        cy_pool._row_build(saved)
    for layout, out in zip(LAYOUTS, got):
        assert_close(out, to_layout(expected, layout), dtype)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_memory_layouts_give_same_result_and_inputs_are_untouched(backend, dtype, layout,
                                                                  op, rng):
    x = rng.standard_normal((3, 7, 6, 5)).astype(dtype)
    expected = to_layout(OPS[op][1](x, 3, 2, 1), layout)
    for name, variant in layout_variants(np.ascontiguousarray(to_layout(x, layout))):
        before = variant.copy()
        out = OPS[op][0](variant, 3, 2, 1, layout=layout, backend=backend)
        assert_close(out, expected, dtype)
        assert np.array_equal(variant, before), f"{name} input was modified"


# ---------------------------------------------------------------------------------------
# Generated cases against PyTorch (float64 oracle): 3 backends x 70 examples per op.


@st.composite
def pool_cases(draw):
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in size)
    spatial = tuple(draw(st.integers(max(1, k - 2 * p), 10)) for k, p in zip(size, padding))
    stride = draw(st.none() | st.tuples(st.integers(1, 4), st.integers(1, 4)))
    shape = (draw(st.integers(1, 2)),) + spatial + (draw(st.integers(1, 6)),)
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    layout = draw(st.sampled_from(LAYOUTS))
    contiguous = draw(st.booleans())  # for NCHW: NCHW memory, or a channels-last view
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, size, stride, padding, dtype, layout, contiguous, seed


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("backend_name", BACKENDS)
@settings(max_examples=70, deadline=None)
@given(case=pool_cases())
def test_generated_cases_match_torch(backend_name, op, case):
    torch = _torch()
    _available(backend_name)
    shape, size, stride, padding, dtype, layout, contiguous, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    x_in = np.ascontiguousarray(to_layout(x, layout)) if contiguous else to_layout(x, layout)
    out = OPS[op][0](x_in, size, stride, padding, layout=layout,
                     backend=backend_name)
    expected = torch_pool(torch, op, x, size, stride, padding)
    assert expected.shape[1:3] == fastdl.shapes.pool_output(shape[1:3], size, stride, padding)
    assert_close(out, to_layout(expected, layout), dtype)


# ---------------------------------------------------------------------------------------
# Shapes


def test_pool_output():
    assert fastdl.shapes.pool_output((128, 128), 2) == (64, 64)
    assert fastdl.shapes.pool_output((7, 9), 3, 2, 1) == (4, 5)
    assert fastdl.shapes.pool_output((5, 8), (2, 3), (1, 2), (1, 0)) == (6, 3)
    assert fastdl.shapes.pool_output((6, 6), 3, 1, "same") == (6, 6)
    with pytest.raises(ValueError, match="padding"):
        fastdl.shapes.pool_output((8, 8), 2, padding=2)
    with pytest.raises(ValueError, match="size"):
        fastdl.shapes.pool_output((3, 3), 4)
    with pytest.raises(ValueError, match="input_size"):
        fastdl.shapes.pool_output((3, 3, 3), 2)


def test_exam_output_shapes_on_real_arrays(backend, exam_cases):
    cases = [c for c in exam_cases["output_shapes"] if "input_hwc" in c]
    assert cases
    for case in cases:
        # The exams' window geometry on an image with as many channels as filters:
        # pooling keeps the channels and shares the conv's output-size arithmetic.
        h, w, _ = case["input_hwc"]
        x = np.ones((h, w, case["filters"]), np.float32)
        out = fastdl.max_pool2d(x, case["kernel"], case["stride"], case["padding"],
                                backend=backend)
        assert list(out.shape) == case["output_hwc"], case
        assert (out == 1).all()


# ---------------------------------------------------------------------------------------
# Bad input: run in a subprocess so that a crash fails the test instead of pytest.

BAD_CALLS = [
    # (call, exception, fragments of the message)
    ("max_pool2d(np.zeros((4, 4)))", "ValueError", ["x", "(4, 4)"]),
    ("max_pool2d(np.zeros((1, 1, 4, 4, 4)))", "ValueError", ["x", "(1, 1, 4, 4, 4)"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), layout='NWC')", "ValueError", ["layout", "NWC"]),
    ("avg_pool2d(np.zeros((1, 4, 4, 1)), layout='nchw')", "ValueError", ["layout"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 0)", "ValueError", ["size", "0"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), -2)", "ValueError", ["size"]),
    ("avg_pool2d(np.zeros((1, 4, 4, 1)), (2, 0))", "ValueError", ["size[1]"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, 0)", "ValueError", ["stride"]),
    ("avg_pool2d(np.zeros((1, 4, 4, 1)), 2, (1, -1))", "ValueError", ["stride[1]"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, 1, -1)", "ValueError", ["padding"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 3, 1, 2)", "ValueError", ["padding", "half"]),
    ("avg_pool2d(np.zeros((1, 4, 4, 1)), 2, 1, (0, 2))", "ValueError", ["padding", "half"]),
    ("max_pool2d(np.zeros((1, 3, 8, 1)), 4)", "ValueError", ["size", "(3, 8)"]),
    ("avg_pool2d(np.zeros((1, 2, 5, 3)), 4, layout='NCHW')", "ValueError", ["size", "W"]),
    ("max_pool2d(np.zeros((1, 0, 4, 1)), 1)", "ValueError", ["x", "H"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2 ** 40)", "ValueError", ["size"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, 2 ** 40)", "ValueError", ["stride"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, padding='full')", "ValueError", ["padding"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, 2, 'same')", "ValueError", ["same"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), (2, 2, 2))", "ValueError", ["size"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2.0)", "TypeError", ["size"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), '2')", "TypeError", ["size"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), True)", "TypeError", ["size"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), None)", "TypeError", ["size"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, 1.5)", "TypeError", ["stride"]),
    ("avg_pool2d(np.zeros((1, 4, 4, 1)), 2, 1, 0.5)", "TypeError", ["padding"]),
    ("max_pool2d('abc')", "TypeError", ["x"]),
    ("max_pool2d(object())", "TypeError", ["x"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1), complex))", "TypeError", ["x", "complex"]),
    ("avg_pool2d(np.zeros((1, 4, 4, 1), object))", "TypeError", ["x", "object"]),
    ("max_pool2d(np.zeros((1, 4, 4, 1)), 2, backend='gpu')", "ValueError", ["backend"]),
]


def test_bad_input_raises_before_any_kernel_runs(backend):
    code = f"""
        import json
        import numpy as np
        import fastdl
        from fastdl import max_pool2d as _max, avg_pool2d as _avg
        backend = {backend!r}
        def max_pool2d(*args, **kwargs):
            kwargs.setdefault("backend", backend)
            return _max(*args, **kwargs)
        def avg_pool2d(*args, **kwargs):
            kwargs.setdefault("backend", backend)
            return _avg(*args, **kwargs)
        results = []
        for call in {[c[0] for c in BAD_CALLS]!r}:
            try:
                eval(call)
                results.append(["no exception", ""])
            except Exception as exc:
                results.append([type(exc).__name__, str(exc)])
        print(json.dumps(results))
    """
    returncode, stdout, stderr = run_isolated(code)
    assert returncode == 0, f"subprocess died ({returncode}): {stderr[-2000:]}"
    results = json.loads(stdout.strip().splitlines()[-1])
    for (call, exc_name, fragments), (got_name, message) in zip(BAD_CALLS, results):
        assert got_name == exc_name, f"{call}: expected {exc_name}, got {got_name}: {message}"
        for fragment in fragments:
            assert fragment in message, f"{call}: {fragment!r} not in {message!r}"


# ---------------------------------------------------------------------------------------
# Concurrency


@pytest.mark.parametrize("backend_name", ("numba", "cython"))
def test_concurrent_calls_from_python_threads(backend_name, rng):
    _available(backend_name)
    inputs = [rng.standard_normal((2, 16, 12, 8)).astype(np.float32) for _ in range(8)]
    expected = [(fastdl.max_pool2d(x, 3, 2, 1, backend="numpy"),
                 fastdl.avg_pool2d(x, 3, 2, 1, backend="numpy")) for x in inputs]
    failures = []

    def work(index):
        try:
            for call in range(50):
                op = fastdl.max_pool2d if call % 2 == 0 else fastdl.avg_pool2d
                out = op(inputs[index], 3, 2, 1, backend=backend_name)
                assert_close(out, expected[index][call % 2], np.float32)
        except Exception as exc:  # reported in the main thread
            failures.append(f"thread {index}: {exc!r}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures

"""conv1d / conv2d / conv3d on every backend, against the naive loop reference
(fastdl.reference.conv_nd) and PyTorch (float64), in both layouts and both dtypes.

All cases are built channels-last (x (N, *spatial, C_in), weight (*kernel, C_in/groups,
C_out)); the channels-first variants of a case are transposes of the same values, so one
reference answer serves both layouts.
"""

import functools
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastdl
from fastdl.reference import conv_nd

from conftest import BACKENDS
from helpers import assert_close, layout_variants

OPS = {1: fastdl.conv1d, 2: fastdl.conv2d, 3: fastdl.conv3d}
LAYOUTS = ("channels_last", "channels_first")
AVAILABLE = tuple(b for b in BACKENDS if fastdl.backends()[b] == "available")


@pytest.fixture(params=(1, 2, 3), ids=lambda nd: f"conv{nd}d")
def nd(request):
    return request.param


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


def layout_name(nd, channels_first):
    return {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}[nd][channels_first]


def to_channels_first(x, weight, nd, batched=True):
    """Channels-last x / HWIO weight -> channels-first x / OIHW weight (same values)."""
    x = np.moveaxis(x, -1, 1 if batched else 0)
    weight = np.transpose(weight, (nd + 1, nd) + tuple(range(nd)))
    return x, weight


def run_conv(nd, x, weight, layout, batched=True, **kwargs):
    """Call conv{nd}d on channels-last arrays in ``layout``; returns a channels-last result."""
    channels_first = layout == "channels_first"
    if channels_first:
        x, weight = to_channels_first(x, weight, nd, batched)
    out = OPS[nd](x, weight, layout=layout_name(nd, channels_first), **kwargs)
    return np.moveaxis(out, 1 if batched else 0, -1) if channels_first else out


def random_case(seed, batch, spatial, c_in, c_out, kernel, groups, bias, dtype):
    """Random channels-last x, weight and bias, rounded to ``dtype``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + tuple(spatial) + (c_in,)).astype(dtype)
    w = rng.standard_normal(tuple(kernel) + (c_in // groups, c_out)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype) if bias else None
    return x, w, b


# ---------------------------------------------------------------------------------------
# Small cases against the naive reference.  Per-dim values are given for 3 dims; a
# conv{nd}d case uses the last nd of them.

REFERENCE_CASES = {
    "k1_plain": dict(batch=2, spatial=(3, 4, 5), c_in=3, c_out=2, kernel=(1, 1, 1)),
    "k3_pad1_bias": dict(batch=2, spatial=(4, 5, 6), c_in=3, c_out=4, kernel=(3, 3, 3),
                         padding=1, bias=True),
    "k2_same_even": dict(batch=1, spatial=(3, 5, 4), c_in=2, c_out=3, kernel=(2, 2, 2),
                         padding="same", bias=True),
    "k4_same_dilated": dict(batch=1, spatial=(3, 6, 7), c_in=2, c_out=2, kernel=(2, 4, 4),
                            padding="same", dilation=(1, 2, 2)),
    "k5_valid_stride2": dict(batch=2, spatial=(5, 7, 9), c_in=2, c_out=3, kernel=(1, 5, 5),
                             padding="valid", stride=2),
    "tuples": dict(batch=1, spatial=(5, 7, 8), c_in=3, c_out=2, kernel=(2, 3, 2),
                   stride=(2, 1, 3), padding=(1, 0, 2), dilation=(2, 2, 1), bias=True),
    "groups2": dict(batch=2, spatial=(3, 5, 5), c_in=4, c_out=6, kernel=(2, 3, 3),
                    groups=2, padding=1, bias=True),
    "depthwise": dict(batch=1, spatial=(3, 6, 5), c_in=3, c_out=6, kernel=(3, 3, 3),
                      groups=3, padding=(1, 1, 1), stride=(1, 2, 1)),
    "odd_sizes_stride3": dict(batch=3, spatial=(7, 5, 11), c_in=5, c_out=1,
                              kernel=(3, 1, 4), stride=3, padding=2),
    "kernel_covers_input": dict(batch=1, spatial=(2, 3, 4), c_in=2, c_out=3,
                                kernel=(2, 3, 4), bias=True),
    "unbatched": dict(batch=None, spatial=(3, 5, 6), c_in=2, c_out=3, kernel=(2, 3, 3),
                      padding=1, bias=True),
    "empty_batch": dict(batch=0, spatial=(3, 4, 4), c_in=2, c_out=3, kernel=(2, 2, 2)),
}


def last(value, nd):
    return tuple(value[-nd:]) if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=None)
def reference_case(nd, name, dtype_name):
    """(x, weight, bias, kwargs, expected): arrays in channels-last, expected in float64."""
    case = REFERENCE_CASES[name]
    batched = case["batch"] is not None
    kwargs = {k: last(case[k], nd) for k in ("stride", "padding", "dilation", "groups")
              if k in case}
    x, w, b = random_case(zlib.crc32(f"{nd}{name}".encode()), case["batch"] if batched else 1,
                          case["spatial"][-nd:], case["c_in"], case["c_out"],
                          case["kernel"][-nd:], case.get("groups", 1), case.get("bias"),
                          np.dtype(dtype_name))
    expected = conv_nd(x, w, b, **kwargs)
    if not batched:
        x, expected = x[0], expected[0]
    return x, w, b, kwargs, expected


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_matches_reference(backend, dtype, layout, nd, name):
    x, w, b, kwargs, expected = reference_case(nd, name, dtype.name)
    batched = REFERENCE_CASES[name]["batch"] is not None
    out = run_conv(nd, x, w, layout, batched, bias=b, backend=backend, **kwargs)
    assert_close(out, expected, dtype)


# ---------------------------------------------------------------------------------------
# Realistic shapes against PyTorch (float64)

TORCH_CASES = {
    "conv1d_64to64_L256_k3": (1, dict(batch=2, spatial=(256,), c_in=64, c_out=64,
                                      kernel=(3,), padding=1, bias=True)),
    "conv2d_16to32_32x32_3x3": (2, dict(batch=2, spatial=(32, 32), c_in=16, c_out=32,
                                        kernel=(3, 3), padding=1, bias=True)),
    "conv2d_depthwise_32_3x3_s2": (2, dict(batch=2, spatial=(31, 30), c_in=32, c_out=32,
                                           kernel=(3, 3), stride=2, groups=32, bias=True)),
    "conv3d_8to8_8x16x16_3": (3, dict(batch=1, spatial=(8, 16, 16), c_in=8, c_out=8,
                                      kernel=(3, 3, 3), padding="same", bias=True)),
    # the reference shares fastdl's "same" arithmetic; check the odd cell's side here
    "conv2d_same_even_k4x2_dilated": (2, dict(batch=2, spatial=(17, 20), c_in=6, c_out=8,
                                              kernel=(4, 2), padding="same", dilation=(2, 3),
                                              groups=2, bias=True)),
    "conv1d_same_even_k2": (1, dict(batch=3, spatial=(33,), c_in=4, c_out=5, kernel=(2,),
                                    padding="same")),
    "exam_3x3_64": (2, dict(batch=2, spatial=(128, 128), c_in=3, c_out=64, kernel=(3, 3),
                            bias=True)),
    "exam_5x5_pad2_16": (2, dict(batch=2, spatial=(128, 128), c_in=3, c_out=16,
                                 kernel=(5, 5), padding=2, bias=True)),
    "exam_2x2_stride2_32": (2, dict(batch=2, spatial=(128, 128), c_in=3, c_out=32,
                                    kernel=(2, 2), stride=2)),
}


@functools.lru_cache(maxsize=None)
def torch_case(name, dtype_name):
    import torch

    nd, case = TORCH_CASES[name]
    kwargs = {k: case[k] for k in ("stride", "padding", "dilation", "groups") if k in case}
    x, w, b = random_case(sum(map(ord, name)), case["batch"], case["spatial"], case["c_in"],
                          case["c_out"], case["kernel"], case.get("groups", 1),
                          case.get("bias"), np.dtype(dtype_name))
    x_cf, w_cf = to_channels_first(x.astype(np.float64), w.astype(np.float64), nd)
    torch_conv = getattr(torch.nn.functional, f"conv{nd}d")
    with warnings.catch_warnings():  # torch notes that even-kernel "same" pads a copy
        warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)
        expected = torch_conv(torch.from_numpy(np.ascontiguousarray(x_cf)),
                              torch.from_numpy(np.ascontiguousarray(w_cf)),
                              None if b is None else torch.from_numpy(b.astype(np.float64)),
                              **kwargs).numpy()
    return nd, x, w, b, kwargs, np.moveaxis(expected, 1, -1)


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(backend, dtype, layout, name, torch):
    nd, x, w, b, kwargs, expected = torch_case(name, dtype.name)
    out = run_conv(nd, x, w, layout, bias=b, backend=backend, **kwargs)
    assert_close(out, expected, dtype)


# ---------------------------------------------------------------------------------------
# dtype rules


@pytest.mark.parametrize("x_dtype, w_dtype, b_dtype, expected", [
    (np.float32, np.float32, None, np.float32),
    (np.float32, np.float32, np.float32, np.float32),
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
    (np.int64, np.int32, None, np.float64),
    (np.int16, np.float32, None, np.float64),
    (np.bool_, np.float64, np.int8, np.float64),
    (np.uint8, np.uint8, np.uint8, np.float64),
    (np.float16, np.float16, None, np.float64),
])
def test_dtype_rules(backend, x_dtype, w_dtype, b_dtype, expected):
    rng = np.random.default_rng(7)
    x = (rng.random((2, 5, 6, 3)) * 4).astype(x_dtype)
    w = (rng.random((3, 2, 3, 4)) * 4).astype(w_dtype)
    b = None if b_dtype is None else (rng.random(4) * 4).astype(b_dtype)
    out = fastdl.conv2d(x, w, b, padding=1, backend=backend)
    assert out.dtype == np.dtype(expected)
    ref = conv_nd(x.astype(np.float64), w.astype(np.float64),
                  None if b is None else b.astype(np.float64), padding=1)
    assert_close(out, ref, expected)


def test_lists_are_accepted(backend):
    x = [[[1.0], [2.0], [3.0]]]  # (N=1, W=3, C=1)
    w = [[[1.0]], [[-1.0]]]  # (KW=2, C_in=1, C_out=1)
    out = fastdl.conv1d(x, w, backend=backend)
    assert_close(out, [[[-1.0], [-1.0]]], np.float64)


# ---------------------------------------------------------------------------------------
# Generated cases: >= 200 per op, across every backend, dtype and layout


@st.composite
def conv_cases(draw, nd):
    max_size = {1: 9, 2: 6, 3: 4}[nd]
    kernel = tuple(draw(st.integers(1, 5 if nd == 1 else 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = draw(st.one_of(
        st.sampled_from(["valid", "same"]),
        st.integers(0, 2),
        st.tuples(*[st.integers(0, 2)] * nd),
    ))
    if padding == "same":
        stride = 1
    else:
        stride = draw(st.one_of(st.integers(1, 3), st.tuples(*[st.integers(1, 3)] * nd)))
    pad_total = [0 if padding in ("valid", "same") else
                 2 * (padding if isinstance(padding, int) else padding[i]) for i in range(nd)]
    spatial = []
    for i in range(nd):
        span = dilation[i] * (kernel[i] - 1) + 1
        smallest = 1 if padding == "same" else max(1, span - pad_total[i])
        spatial.append(draw(st.integers(smallest, max(smallest, max_size))))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    return dict(
        backend=draw(st.sampled_from(AVAILABLE)),
        dtype=draw(st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])),
        layout=draw(st.sampled_from(LAYOUTS)),
        batch=draw(st.sampled_from([None, 1, 2])),
        spatial=tuple(spatial), c_in=c_in, c_out=c_out, kernel=kernel, groups=groups,
        bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
    )


def check_generated(nd, case):
    batched = case["batch"] is not None
    x, w, b = random_case(case["seed"], case["batch"] or 1, case["spatial"], case["c_in"],
                          case["c_out"], case["kernel"], case["groups"], case["bias"],
                          case["dtype"])
    expected = conv_nd(x, w, b, **case["kwargs"])
    if not batched:
        x, expected = x[0], expected[0]
    out = run_conv(nd, x, w, case["layout"], batched, bias=b, backend=case["backend"],
                   **case["kwargs"])
    assert_close(out, expected, case["dtype"])


GENERATED = settings(max_examples=200, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(case=conv_cases(1))
def test_generated_conv1d(case):
    check_generated(1, case)


@GENERATED
@given(case=conv_cases(2))
def test_generated_conv2d(case):
    check_generated(2, case)


@GENERATED
@given(case=conv_cases(3))
def test_generated_conv3d(case):
    check_generated(3, case)


# ---------------------------------------------------------------------------------------
# Memory layouts, read-only and byte-swapped inputs; inputs are never modified


# "tuples" is padded, "k5_valid_stride2" not (channels-first, few channels: the kernel
# reads x itself when it is C-contiguous in the compute dtype, see conv.py)
@pytest.mark.parametrize("case_name", ["tuples", "k5_valid_stride2"])
def test_memory_layouts(backend, dtype, layout, nd, case_name):
    x, w, b, kwargs, expected = reference_case(nd, case_name, dtype.name)
    channels_first = layout == "channels_first"
    if channels_first:
        x, w = to_channels_first(x, w, nd)
    call = functools.partial(OPS[nd], **kwargs, layout=layout_name(nd, channels_first),
                             backend=backend)
    baseline = call(x, w, b)
    assert_close(np.moveaxis(baseline, 1, -1) if channels_first else baseline, expected, dtype)
    variants = [(f"x {name}", xv, w, b) for name, xv in layout_variants(x)]
    variants += [(f"weight {name}", x, wv, b) for name, wv in layout_variants(w)]
    if b is not None:
        variants += [(f"bias {name}", x, w, bv) for name, bv in layout_variants(b)]
    for name, xv, wv, bv in variants:
        arrays = [a for a in (xv, wv, bv) if a is not None]
        copies = [(a, a.copy(), a.strides, a.flags.writeable) for a in arrays]
        out = call(xv, wv, bv)
        assert out.dtype == dtype, name
        assert np.array_equal(out, baseline), f"{name}: differs from the contiguous result"
        for array, copy, strides, writeable in copies:
            assert np.array_equal(array, copy), f"{name}: an input was modified"
            assert array.strides == strides and array.flags.writeable == writeable, name


# (C_in, C_out, spatial, kernel, padding, groups, fill): small inputs and scratch buffers
# on for every size, so each call's temporaries reuse the last call's memory: shapes that
# grow and shrink, padded and not, depthwise (padding in the kernel), and an all-NaN
# input whose leftovers must not leak into the next call's zero padding
SCRATCH_SEQUENCE = [
    (3, 8, (9, 11), 3, 1, 1, None),
    (8, 8, (12, 12), 3, 2, 8, None),
    (16, 24, (10, 13), 3, 1, 1, np.nan),
    (3, 8, (9, 11), 3, 1, 1, None),
    (16, 24, (10, 13), 1, 0, 1, None),
    (8, 8, (12, 12), 3, 2, 8, np.nan),
    (16, 24, (10, 13), 3, 1, 1, None),
]


def test_scratch_buffers_give_the_fresh_results(backend, dtype, layout, monkeypatch):
    """Temporaries in reused per-thread buffers (fastdl._scratch) give bit for bit the
    results of fresh arrays, call after call, and no result shares memory with them."""
    from fastdl import _scratch

    channels_first = layout == "channels_first"
    rng = np.random.default_rng(7)
    calls = []
    for c_in, c_out, spatial, k, padding, groups, fill in SCRATCH_SEQUENCE:
        x = rng.standard_normal((2,) + spatial + (c_in,)).astype(dtype)
        if fill is not None:
            x[...] = fill
        w = rng.standard_normal((k, k, c_in // groups, c_out)).astype(dtype)
        if channels_first:
            x, w = to_channels_first(x, w, 2)
        calls.append(functools.partial(fastdl.conv2d, x, w, padding=padding, groups=groups,
                                       layout=layout_name(2, channels_first), backend=backend))
    monkeypatch.setattr(_scratch, "MAX_BYTES", 0)  # every temporary a fresh array
    _scratch.release()
    fresh = [call() for call in calls]
    monkeypatch.setattr(_scratch, "MAX_BYTES", 1 << 30)
    monkeypatch.setattr(_scratch, "MIN_BYTES", 0)
    # (padded copies this small are np.zeros otherwise: zero only their padding here)
    monkeypatch.setattr(fastdl._checks, "PADDED_ZEROS_MAX_BYTES", 0)
    results = []
    with np.errstate(invalid="ignore"):
        for call, expected in zip(calls, fresh):
            got = call()
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, expected)
            results.append(got)
    buffers = _scratch._local.__dict__.get("buffers", {}).values()
    assert buffers, "no call used a scratch buffer"
    for i, got in enumerate(results):
        assert not any(np.shares_memory(got, buffer) for buffer in buffers)
        assert not any(np.shares_memory(got, other) for other in results[i + 1:])
    _scratch.release()


def test_scratch_buffers_are_per_thread(backend, monkeypatch):
    """Python threads calling conv at once each get their own scratch buffers."""
    from concurrent.futures import ThreadPoolExecutor

    from fastdl import _scratch

    monkeypatch.setattr(_scratch, "MIN_BYTES", 0)
    monkeypatch.setattr(fastdl._checks, "PADDED_ZEROS_MAX_BYTES", 0)
    rng = np.random.default_rng(8)
    jobs = []
    for c_in, c_out, spatial, k, padding, groups, _ in SCRATCH_SEQUENCE:
        x = np.moveaxis(rng.standard_normal((2,) + spatial + (c_in,)), -1, 1).copy()
        w = rng.standard_normal((c_out, c_in // groups, k, k))
        jobs.append(functools.partial(fastdl.conv2d, x, w, padding=padding, groups=groups,
                                      layout="NCHW", backend=backend))
    expected = [job() for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            futures = [pool.submit(job) for job in jobs * 4]
            for i, future in enumerate(futures):
                np.testing.assert_array_equal(future.result(), expected[i % len(jobs)])


def test_does_not_write_into_inputs_or_alias_them(backend, layout, nd):
    x, w, b, kwargs, _ = reference_case(nd, "k1_plain", "float64")
    channels_first = layout == "channels_first"
    if channels_first:  # (the kernel reads this x itself)
        x, w = to_channels_first(x, w, nd)
    copies = [a.copy() for a in (x, w)]
    # 1x1 kernel, no padding: the easy case to alias
    out = OPS[nd](x, w, backend=backend, layout=layout_name(nd, channels_first))
    assert not np.shares_memory(out, x) and not np.shares_memory(out, w)
    out[...] = 123.0
    assert np.array_equal(x, copies[0]) and np.array_equal(w, copies[1])


# ---------------------------------------------------------------------------------------
# NaN and Inf propagate as in the reference


def test_nan_and_inf_propagate(backend, dtype, layout, nd):
    x, w, b, kwargs, _ = reference_case(nd, "k3_pad1_bias", dtype.name)
    x = x.copy()
    x.reshape(-1, x.shape[-1])[1, 0] = np.nan  # first image, near the start
    x.reshape(-1, x.shape[-1])[-2, 1] = np.inf  # last image, near the end
    w = np.where(w == 0, 0.5, w).astype(dtype)  # no 0 * Inf = NaN surprises from zero taps
    expected = conv_nd(x, w, b, **kwargs)
    assert np.isnan(expected).any() and np.isinf(expected).any()
    out = run_conv(nd, x, w, layout, bias=b, backend=backend, **kwargs)
    assert np.array_equal(np.isnan(out), np.isnan(expected))
    assert np.array_equal(np.isinf(out), np.isinf(expected))
    assert_close(out, expected, dtype)


# ---------------------------------------------------------------------------------------
# The exams' output shapes, by running conv2d on real arrays

def test_exam_output_shapes(backend, exam_cases):
    cases = [c for c in exam_cases["output_shapes"] if "input_hwc" in c]
    assert cases
    for case in cases:
        h, w, c = case["input_hwc"]
        k = case["kernel"]
        image = np.ones((h, w, c), np.float32)
        weight = np.ones((k, k, c, case["filters"]), np.float32)
        out = fastdl.conv2d(image, weight, stride=case["stride"], padding=case["padding"],
                            backend=backend)
        assert out.shape == tuple(case["output_hwc"]), case
        # all-ones input: the centre pixel sees the full window
        assert out[out.shape[0] // 2, out.shape[1] // 2, 0] == k * k * c

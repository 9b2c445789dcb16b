"""The inline exp of the compiled backends (fastdl/_numba/fastmath.py and
kernels/fastmath.pxd) against a correctly rounded reference: np.exp evaluated in 80-bit
long double, then rounded to the tested dtype. Errors are measured in ulp of that
reference. The numba version is exercised the way kernels use it: inlined into a
parallel, fastmath-flagged loop, with the argument computed in the loop."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import prange

import fastdl
from conftest import require

numba_fastmath = pytest.importorskip("fastdl._numba.fastmath")
from fastdl._numba import njit_parallel  # noqa: E402

LONG_DOUBLE_IS_WIDER = np.finfo(np.longdouble).nmant >= 63
MAX_ULP = 2.0


@njit_parallel
def _numba_exp_shifted(x, shift, out):
    """out[i] = fast_exp(x[i] - shift[i]): the subtraction sits in the same fastmath
    expression as the inlined exp, as in a softmax."""
    for i in prange(x.size):
        out[i] = numba_fastmath.fast_exp(x[i] - shift[i])


def numba_exp(x):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _numba_exp_shifted(x, np.zeros_like(x), out)
    return out


def cython_exp(x):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _cython_module().exp_array(x, out, 2)
    return out


def _cython_module():
    try:
        from fastdl._cy import fastmath_check
    except ImportError as exc:
        require(False, f"fastdl._cy.fastmath_check is unavailable: {exc}")
    return fastmath_check


@pytest.fixture(params=["numba", "cython"])
def exp_impl(request):
    if request.param == "cython":
        _cython_module()
    return {"numba": numba_exp, "cython": cython_exp}[request.param]


def reference(x, dtype):
    """exp(x) correctly rounded to dtype (long double exp has 11+ spare bits)."""
    with np.errstate(over="ignore", under="ignore"):
        return np.exp(np.asarray(x, np.longdouble)).astype(dtype)


def ulp_errors(got, x, dtype):
    """|got - exp(x)| in ulp of the correctly rounded result (the spacing of a normal
    number), for the points whose result is a finite normal number."""
    exact = np.exp(np.asarray(x, np.longdouble))
    rounded = reference(x, dtype)
    normal = np.isfinite(rounded) & (rounded >= np.finfo(dtype).tiny)
    spacing = np.spacing(rounded[normal]).astype(np.longdouble)
    return np.abs(got[normal].astype(np.longdouble) - exact[normal]) / spacing


def check_normal_range(got, x, dtype):
    assert got.dtype == dtype
    errors = ulp_errors(got, x, dtype)
    assert errors.size > 0
    assert errors.max() <= MAX_ULP, f"max error {float(errors.max()):.3f} ulp"
    return float(errors.max())


def test_float32_dense_sweep(exp_impl):
    # ~4.2M points over the whole float32 domain where exp is neither 0 nor inf, plus
    # every float32 in a short stretch around 0 and around ln2/2 (range-reduction edge).
    sweep = np.linspace(-104.0, 89.0, 4_194_304, dtype=np.float32)
    around_zero = np.arange(-2**16, 2**16, dtype=np.int32).view(np.float32)  # tiny |x|
    near_half_ln2 = np.nextafter(np.float32(0.34657359), np.float32(1)) + np.arange(
        -50_000, 50_000, dtype=np.float32) * np.spacing(np.float32(0.34657359))
    x = np.concatenate([sweep, around_zero, -around_zero, near_half_ln2]).astype(np.float32)
    x = x[np.isfinite(x)]
    got = exp_impl(x)
    check_normal_range(got, x, np.float32)


@pytest.mark.skipif(not LONG_DOUBLE_IS_WIDER, reason="needs 80-bit long double as reference")
def test_float64_random_points(exp_impl, rng):
    x = np.concatenate([rng.uniform(-745.0, 710.0, 1_000_000), rng.uniform(-1, 1, 200_000),
                        rng.standard_normal(100_000) * 1e-8])
    got = exp_impl(x)
    check_normal_range(got, x, np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_special_values(exp_impl, dtype):
    info = np.finfo(dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, info.max, -info.max,
                         1e30, -1e30, 1000.0, -1000.0], dtype)
    got = exp_impl(specials)
    expected = np.array([1.0, 1.0, np.inf, 0.0, np.nan, np.inf, 0.0,
                         np.inf, 0.0, np.inf, 0.0], dtype)
    np.testing.assert_array_equal(got, expected)  # exact, NaN in the same place
    assert got.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tiny_arguments(exp_impl, dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([tiny, -tiny, np.finfo(dtype).tiny, 1e-30, -1e-30, np.finfo(dtype).eps / 4,
                  -np.finfo(dtype).eps / 4], dtype)
    got = exp_impl(x)
    np.testing.assert_array_equal(got, reference(x, dtype))  # all round to 1 or 1 -+ ulp


def _steps_around(threshold, dtype, steps=3):
    """threshold and the `steps` representable numbers either side of it."""
    x = [np.asarray(threshold, dtype)]
    for _ in range(steps):
        x = [np.nextafter(x[0], dtype(-np.inf))] + x + [np.nextafter(x[-1], dtype(np.inf))]
    return np.array(x, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_overflow_threshold(exp_impl, dtype):
    # ln(max) rounded to dtype: exp jumps from ~max to inf within these few ulp.
    threshold = np.log(np.longdouble(np.finfo(dtype).max)).astype(dtype)
    x = _steps_around(threshold, dtype)
    got = exp_impl(x)
    expected = reference(x, dtype)
    # The correctly rounded result becomes inf here; ours may reach inf one step early
    # only if it is within MAX_ULP of max (never a finite value where inf is right).
    assert np.array_equal(np.isinf(got) & np.isinf(expected), np.isinf(expected))
    finite = np.isfinite(got)
    assert finite.any()
    assert ulp_errors(got[finite], x[finite], dtype).max() <= MAX_ULP
    early_inf = np.isinf(got) & np.isfinite(expected)
    assert np.all(np.abs(expected[early_inf]) >= np.finfo(dtype).max * (1 - 2 * MAX_ULP
                                                                         * np.finfo(dtype).eps))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_underflow(exp_impl, dtype):
    """Documented: results in the subnormal range are within 2 subnormal ulps (absolute
    error <= 2 * smallest_subnormal); once exp(x) < smallest_subnormal / 2 the result
    is 0; the normal range still holds MAX_ULP up to the smallest normal result."""
    info = np.finfo(dtype)
    normal_edge = np.log(np.longdouble(info.tiny)).astype(dtype)
    zero_edge = np.log(np.longdouble(info.smallest_subnormal) / 2).astype(dtype)
    x = np.concatenate([np.linspace(zero_edge - 2, normal_edge + 2, 200_000, dtype=dtype),
                        _steps_around(normal_edge, dtype), _steps_around(zero_edge, dtype)])
    got = exp_impl(x)
    expected = reference(x, dtype)
    assert np.all(got >= 0)
    abs_err = np.abs(got.astype(np.longdouble) - np.exp(x.astype(np.longdouble)))
    subnormal = expected < info.tiny
    assert subnormal.sum() > 1000
    assert abs_err[subnormal].max() <= 2 * np.longdouble(info.smallest_subnormal)
    assert np.all(got[x < zero_edge - 1] == 0)
    check_normal_range(got[~subnormal], x[~subnormal], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_shifted_argument_in_fastmath_loop(dtype, rng):
    """fast_exp(x - m) inside the fastmath kernel: reassociation must not merge the
    caller's subtraction into the range reduction (the softmax pattern)."""
    x = rng.uniform(-80, 80, 500_000).astype(dtype)
    shift = rng.uniform(-5, 5, x.size).astype(dtype)
    out = np.empty_like(x)
    _numba_exp_shifted(x, shift, out)
    check_normal_range(out, x - shift, dtype)  # x - shift rounded exactly as in the kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_scalar_calls_match_parallel_loop(dtype, data):
    """exp32/exp64 called as scalar functions give bit-identical results to the
    vectorised, parallel loop (same algorithm whether or not LLVM vectorises it)."""
    scalar_exp = numba_fastmath.exp32 if dtype == np.float32 else numba_fastmath.exp64
    width = 32 if dtype == np.float32 else 64
    values = data.draw(st.lists(st.floats(width=width, allow_nan=True, allow_infinity=True),
                                min_size=1, max_size=64))
    x = np.array(values, dtype)
    scalar = np.array([scalar_exp(dtype(v)) for v in x], dtype)
    np.testing.assert_array_equal(numba_exp(x), scalar)


def test_scalar_call_types():
    assert isinstance(numba_fastmath.exp32(np.float32(1.0)), float)
    # e rounded to float32 (NumPy's own float32 exp(1) is 1 ulp off, so not that)
    assert np.float32(numba_fastmath.exp32(np.float32(1.0))) == reference(1.0, np.float32)
    assert numba_fastmath.exp64(0.0) == 1.0
    assert numba_fastmath.fast_exp(0.0) == 1.0  # plain-Python fallback


def test_cython_exp_array_length_mismatch():
    module = _cython_module()
    with pytest.raises(ValueError, match="out: expected length 3, got 2"):
        module.exp_array(np.zeros(3), np.zeros(2))
    module.exp_array(np.zeros(0, np.float32), np.zeros(0, np.float32))  # empty is fine


def test_fastmath_check_is_not_an_op_family():
    assert "fastmath_check" not in fastdl._dispatch.FAMILIES

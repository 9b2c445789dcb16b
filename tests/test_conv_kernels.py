"""Every compiled conv algorithm (small register-blocked, depthwise, direct, shifted GEMM,
im2col GEMM)
on every backend and dtype, against PyTorch in float64.

The path is chosen by shape in fastdl/_conv_plan.py; these tests move its thresholds so
that small inputs take each path, and shrink the tiles so tiles cross output rows and
planes and end in partial tiles.
"""

import itertools

import numpy as np
import pytest

import fastdl
from fastdl import _conv_plan
from fastdl._dispatch import kernels

from conftest import require
from helpers import assert_close

# (nd, batch shape or None for unbatched, C_in, C_out, spatial, kernel, stride, padding,
#  dilation, groups)
CASES = [
    (2, 3, 4, 6, (7, 9), (3, 3), 1, 1, 1, 1),
    (2, 3, 4, 6, (7, 9), (3, 3), 1, "same", 2, 1),
    (2, 2, 4, 8, (9, 8), (3, 2), (2, 1), 0, 1, 1),
    (2, 2, 6, 9, (11, 10), (5, 4), 3, 2, (1, 2), 1),
    (2, 2, 4, 8, (9, 10), (3, 3), 2, 1, 2, 2),
    (2, 3, 8, 8, (6, 7), (3, 3), 1, 1, 1, 2),
    (2, 2, 5, 10, (7, 7), (3, 3), 1, (1, 2), 1, 5),      # depthwise, multiplier 2
    (2, 2, 6, 6, (8, 9), (5, 5), 2, 2, 1, 6),            # depthwise, strided
    (2, None, 3, 16, (13, 11), (5, 5), 1, 2, 1, 1),      # exam-like, unbatched
    (2, 3, 3, 8, (12, 12), (2, 2), 2, 0, 1, 1),          # exam-like 2x2 stride 2
    (2, 2, 3, 40, (9, 14), (3, 3), 1, 1, 1, 1),          # SMALL: full + half chunks
    (2, 1, 1, 8, (10, 10), (1, 1), 1, 0, 1, 1),
    (1, 3, 4, 6, (17,), (3,), 1, 1, 1, 1),
    (1, 2, 6, 4, (19,), (5,), 3, 2, 2, 2),
    (1, None, 4, 4, (9,), (4,), 1, "same", 2, 1),
    (3, 2, 4, 6, (5, 6, 7), (3, 3, 3), 1, 1, 1, 1),
    (3, 1, 4, 4, (6, 7, 5), (2, 3, 2), (2, 1, 2), (1, 0, 1), (1, 2, 1), 2),
    (3, None, 3, 3, (5, 5, 6), (3, 3, 3), 1, "same", 1, 3),
]

PATHS = {
    # thresholds that send these small cases down each path (DEPTHWISE: its own test)
    "direct": dict(SMALL_MAX_REDUCTION=0, GEMM_MIN_OUT_PER_GROUP=1 << 30,
                   DEPTHWISE_MIN_CHANNELS=1 << 30),
    "shifted": dict(SMALL_MAX_REDUCTION=0, GEMM_MIN_OUT_PER_GROUP=1, GEMM_MIN_REDUCTION=1,
                    SHIFTED_MIN_IN_PER_GROUP=1, DEPTHWISE_MIN_CHANNELS=1 << 30),
    "im2col": dict(SMALL_MAX_REDUCTION=0, GEMM_MIN_OUT_PER_GROUP=1, GEMM_MIN_REDUCTION=1,
                   SHIFTED_MIN_IN_PER_GROUP=1 << 30, DEPTHWISE_MIN_CHANNELS=1 << 30),
    # grouped cases too (2+ output channels per group); depthwise ones stay DEPTHWISE
    "small": dict(SMALL_MAX_REDUCTION=1 << 30, SMALL_MIN_OUT=1, SMALL_MAX_OUT=1 << 30,
                  SMALL_MIN_OUT_PER_GROUP=2),
}


def _steer(monkeypatch, path):
    """Thresholds that send small inputs down `path` (a PATHS key; others: the default
    rules), every call threaded."""
    for name, value in PATHS.get(path, {}).items():
        monkeypatch.setattr(_conv_plan, name, value)
    monkeypatch.setattr(_conv_plan, "SERIAL_MACS", 0)


def _record_paths(monkeypatch):
    """A list that gets the path of every conv kernel call from now on."""
    seen = []
    original_choose = _conv_plan.choose
    monkeypatch.setattr(_conv_plan, "choose",
                        lambda *a: seen.append(original_choose(*a)[0]) or original_choose(*a))
    return seen


INPUT_MODES = ("transposed", "direct")


def _steer_input(monkeypatch, mode):
    """Channels-first SMALL-path calls read a transposed channels-last copy of x
    ("transposed") or x as it is, channels-first ("direct"), whatever their channels and
    padding."""
    limit = 1 << 30 if mode == "direct" else 0
    monkeypatch.setattr(_conv_plan, "FIRST_INPUT_MAX_CHANNELS", limit)
    monkeypatch.setattr(_conv_plan, "FIRST_INPUT_PADDED_MAX_CHANNELS", limit)


def _record_kernel_calls(monkeypatch, backend, describe):
    """A list that gets describe(arguments) of every conv kernel call from now on."""
    module = kernels("conv", backend)
    real_kernel, seen = module.conv_ndhwc, []

    def spy(*args):
        seen.append(describe(args))
        return real_kernel(*args)

    monkeypatch.setattr(module, "conv_ndhwc", spy)
    return seen


def _record_input_modes(monkeypatch, backend):
    """A list that gets, for every conv kernel call from now on, the mode of its input
    ("direct": channels-first, "transposed": channels-last)."""
    return _record_kernel_calls(monkeypatch, backend,
                                lambda args: "direct" if args[9] else "transposed")


def _record_kernel_padding(monkeypatch, backend):
    """A list that gets, for every conv kernel call from now on, whether the kernel pads
    (skips padded taps: the DEPTHWISE path) rather than reading a zero-padded copy."""
    return _record_kernel_calls(monkeypatch, backend, lambda args: any(args[10]))


def _each_c_build(backend):
    """Iterate once per build of the C kernels this CPU runs, each selected in turn, for
    the cython backend (the best build is restored after); once, as it is, otherwise."""
    if backend != "cython":
        yield None
        return
    cython_conv = kernels("conv", "cython")
    saved = cython_conv._small_kernel_build()
    try:
        for build in cython_conv._small_builds_available():
            cython_conv._small_kernel_build(build)
            yield build
    finally:
        cython_conv._small_kernel_build(saved)


def _torch_conv(torch, nd, x, w, b, stride, padding, dilation, groups):
    """float64 oracle on channels-first copies of channels-last x and weights."""
    x_t = torch.from_numpy(np.moveaxis(x, -1, 1).astype(np.float64))
    w_t = torch.from_numpy(np.moveaxis(np.moveaxis(w, -1, 0), -1, 1).astype(np.float64))
    b_t = torch.from_numpy(b.astype(np.float64))
    conv = getattr(torch.nn.functional, f"conv{nd}d")
    y = conv(x_t, w_t, b_t, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return np.moveaxis(y.numpy(), 1, -1)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}d-k{c[5]}-s{c[6]}-p{c[7]}-d{c[8]}-g{c[9]}")
def test_conv_path_matches_torch(case, path, backend, dtype, torch, rng, monkeypatch):
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, groups = case
    _steer(monkeypatch, path)
    # Small tiles (5 rows) so tiles straddle rows and planes and end part-full.
    monkeypatch.setattr(_conv_plan, "TILE_BYTES", 1)
    monkeypatch.setattr(_conv_plan, "TILE_MIN_ROWS", 5)
    n = 1 if batch is None else batch
    x = rng.standard_normal((n,) + spatial + (c_in,))
    w = rng.standard_normal(kernel + (c_in // groups, c_out))
    b = rng.standard_normal(c_out)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, groups)
    if batch is None:
        x, expected = x[0], expected[0]
    conv = getattr(fastdl, f"conv{nd}d")
    seen = _record_paths(monkeypatch)
    got = conv(x.astype(dtype), w.astype(dtype), b.astype(dtype), stride=stride,
               padding=padding, dilation=dilation, groups=groups, backend=backend)
    assert_close(got, expected, dtype)
    if backend != "numpy":
        strided = any(s != 1 for s in np.broadcast_to(stride, (nd,)))
        # under "small", groups of one input and one output channel are DEPTHWISE's
        depthwise = groups > 1 and c_in == groups == c_out
        want = {"direct": _conv_plan.DIRECT, "im2col": _conv_plan.IM2COL,
                "small": _conv_plan.DEPTHWISE if depthwise else _conv_plan.SMALL,
                "shifted": _conv_plan.IM2COL if strided else _conv_plan.SHIFTED}[path]
        assert seen == [want], f"kernel took path {seen}, expected {want}"


def test_cached_plans_follow_the_thresholds(monkeypatch):
    """choose() and the numba backend's call plan are cached per distinct call; setting
    any threshold of _conv_plan clears them, so a steered call never gets a plan made
    under the old thresholds (and undoing the change brings the old plan back)."""
    out_shape, w_shape, stride = (2, 1, 8, 8, 16), (1, 3, 3, 4, 16), (1, 1, 1)
    choose_args = (out_shape, w_shape, stride, 1, 2, 4)
    numba_conv = pytest.importorskip("fastdl._numba.conv")
    plan_args = ((2, 1, 10, 10, 4), w_shape, out_shape, stride, (1, 1, 1), 1, 2, 4, False,
                 False, (0, 0, 0), False)
    for steered in (False, True, False):
        if steered:
            monkeypatch.setattr(_conv_plan, "SMALL_MAX_REDUCTION", 0)
        else:
            monkeypatch.undo()
        plan, call_plan = _conv_plan.choose(*choose_args), numba_conv._call_plan(*plan_args)
        assert _conv_plan.choose(*choose_args) is plan  # answered from the cache
        assert numba_conv._call_plan(*plan_args) is call_plan
        want_small = not steered
        assert (plan[0] == _conv_plan.SMALL) == want_small
        assert (call_plan[0] == _conv_plan.SMALL) == want_small


CHANNELS_FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


@pytest.mark.parametrize("input_mode", INPUT_MODES)
@pytest.mark.parametrize("case", [c for c in CASES if c[9] == 1],
                         ids=lambda c: f"{c[0]}d-k{c[5]}-s{c[6]}-p{c[7]}-d{c[8]}-co{c[3]}")
def test_small_path_channels_first_matches_torch(case, input_mode, backend, dtype, torch, rng,
                                                 monkeypatch):
    """On the SMALL path channels-first calls get their output written channels-first by
    the kernel itself (no channels-last intermediate): every pixel/channel block edge; the
    kernel reads a transposed copy of x or x itself."""
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, _ = case
    _steer(monkeypatch, "small")
    _steer_input(monkeypatch, input_mode)
    modes = _record_input_modes(monkeypatch, backend)
    n = 1 if batch is None else batch
    x = rng.standard_normal((n, c_in) + spatial)
    w = rng.standard_normal((c_out, c_in) + kernel)
    b = rng.standard_normal(c_out)
    conv_t = getattr(torch.nn.functional, f"conv{nd}d")
    expected = conv_t(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                      stride=stride, padding=padding, dilation=dilation).numpy()
    if batch is None:
        x, expected = x[0], expected[0]
    seen = _record_paths(monkeypatch)
    got = getattr(fastdl, f"conv{nd}d")(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                        stride=stride, padding=padding, dilation=dilation,
                                        layout=CHANNELS_FIRST[nd], backend=backend)
    assert got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, expected, dtype)
    assert modes == [input_mode]
    if backend != "numpy":
        assert seen == [_conv_plan.SMALL]


# Rows wide enough for several 8-pixel blocks and 8 x 8 transposes (channels-first) plus
# remainders, and full + half + leftover channel chunks.
WIDE_ROW_CASES = [
    (2, 2, 3, 40, (9, 37), (3, 3), 1, 1, 1, 1),
    (1, 2, 5, 24, (45,), (3,), 1, 1, 1, 1),
    (2, 1, 3, 16, (11, 40), (2, 2), 2, 0, 1, 1),
    (3, 1, 2, 8, (3, 4, 19), (3, 3, 3), 1, 1, 1, 1),
    (2, 1, 3, 12, (6, 20), (3, 3), 1, 1, 1, 1),          # channels not a multiple of 8
    # numba's channels-first 8 x 16 blocks straight into the planes (wide, whole 16-channel
    # chunks): with and without the last out_w % 8 pixels, 1-d / 2-d / 3-d
    (2, 2, 3, 32, (9, 26), (3, 3), 1, 1, 1, 1),
    (3, 1, 3, 16, (3, 4, 16), (3, 3, 3), 1, 1, 1, 1),
    (1, 2, 4, 48, (35,), (5,), 1, 2, 1, 1),
]


@pytest.mark.parametrize("channels_first", [False, True], ids=["last", "first"])
@pytest.mark.parametrize("wide", [False, True], ids=["narrow", "wide"])
@pytest.mark.parametrize("case", [c for c in CASES if c[9] == 1] + WIDE_ROW_CASES,
                         ids=lambda c: f"{c[0]}d-k{c[5]}-s{c[6]}-p{c[7]}-w{c[4][-1]}-co{c[3]}")
def test_numba_small_block_shapes_match_torch(case, wide, channels_first, dtype, torch, rng,
                                              monkeypatch):
    """The numba SMALL kernel has two register-block shapes (the wide one is chosen for
    float32 on AVX-512 hosts); run both, whichever this host picks, on both layouts
    (channels-first: both input modes)."""
    numba_conv = pytest.importorskip("fastdl._numba.conv")
    monkeypatch.setattr(numba_conv, "SMALL_WIDE", wide)
    _steer(monkeypatch, "small")
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, _ = case
    n = 1 if batch is None else batch
    x = rng.standard_normal((n,) + spatial + (c_in,))
    w = rng.standard_normal(kernel + (c_in, c_out))
    b = rng.standard_normal(c_out)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, 1)
    layout = None
    if channels_first:
        x, expected = np.moveaxis(x, -1, 1), np.moveaxis(expected, -1, 1)
        w = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)
        layout = CHANNELS_FIRST[nd]
    if batch is None:
        x, expected = x[0], expected[0]
    kwargs = {} if layout is None else {"layout": layout}
    modes = _record_input_modes(monkeypatch, "numba")
    for input_mode in INPUT_MODES if channels_first else INPUT_MODES[:1]:
        _steer_input(monkeypatch, input_mode)
        got = getattr(fastdl, f"conv{nd}d")(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                            stride=stride, padding=padding, dilation=dilation,
                                            backend="numba", **kwargs)
        assert got.dtype == dtype and got.flags.c_contiguous
        assert_close(got, expected, dtype)
        assert modes.pop() == input_mode


# Output channel counts whose last 1-7 channels no full or half chunk covers (numba's
# _small_rest_channels, one inlined block per count), on rows with and without a
# partial last block (numba's blocks of 4, 8 and 16 pixels).
LEFTOVER_CHANNEL_CASES = [
    (2, 2, 3, c_out, (5, width), (3, 3), 1, 1, 1, 1)
    for c_out, width in ((1, 19), (2, 8), (3, 11), (4, 16), (5, 3), (6, 21), (7, 9))
] + [
    (2, 1, 4, 23, (4, 13), (3, 3), 1, 1, 1, 1),          # chunk + 7
    (1, 2, 5, 29, (20,), (3,), 1, 1, 1, 1),               # chunk + half + 5
    (3, 1, 4, 4, (4, 8, 8), (3, 3, 3), 1, 1, 1, 1),       # the small conv3d bench row
    (2, 1, 2, 3, (9, 12), (2, 2), 2, 0, 1, 1),            # strided
    (2, 2, 3, 8, (3, 21), (3, 3), 1, 1, 1, 1),            # half chunk only, partial block
]


@pytest.mark.parametrize("backend, wide", [("numba", False), ("numba", True),
                                           ("cython", None), ("numpy", None)],
                         ids=["numba-narrow", "numba-wide", "cython", "numpy"])
@pytest.mark.parametrize("case", LEFTOVER_CHANNEL_CASES,
                         ids=lambda c: f"{c[0]}d-s{c[6]}-w{c[4][-1]}-co{c[3]}")
def test_small_path_leftover_channels_match_torch(case, backend, wide, dtype, torch, rng,
                                                  monkeypatch):
    """SMALL path, channels-last, out_c with 1-7 leftover channels, every backend (numba
    with both of its block shapes)."""
    status = fastdl.backends()[backend]
    require(status == "available", f"backend {backend} is unavailable: {status}")
    if backend == "numba":
        numba_conv = pytest.importorskip("fastdl._numba.conv")
        monkeypatch.setattr(numba_conv, "SMALL_WIDE", wide)
    _steer(monkeypatch, "small")
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, _ = case
    x = rng.standard_normal((batch,) + spatial + (c_in,))
    w = rng.standard_normal(kernel + (c_in, c_out))
    b = rng.standard_normal(c_out)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, 1)
    got = getattr(fastdl, f"conv{nd}d")(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                        stride=stride, padding=padding, dilation=dilation,
                                        backend=backend)
    assert got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, expected, dtype)


# Wider output channel counts for the SMALL kernel's block shapes: 72 = AVX-512 fp32's
# 4-vector block + a half vector; 59 = 2-vector, 1-vector, half-vector and scalar leftovers
# in every build; output widths below and between the block widths (6 and 12 pixels).
SMALL_BUILD_CASES = [c for c in CASES if c[9] == 1][:6] + [
    (2, 2, 5, 72, (7, 15), (3, 3), 1, 1, 1, 1),
    (2, 1, 3, 59, (4, 26), (3, 3), 1, 1, 1, 1),
    (1, 2, 3, 59, (5,), (3,), 1, 1, 1, 1),
    # the quarter-vector leftover blocks (4 fp32 / 2 fp64 channels) with and without
    # scalar channels after them: 4, 6, 13, 14 channels
    (3, 1, 4, 4, (4, 8, 8), (3, 3, 3), 1, 1, 1, 1),
    (2, 1, 3, 6, (4, 21), (3, 3), 1, 1, 1, 1),
    (2, 2, 2, 13, (3, 19), (3, 3), 1, 1, 1, 1),
    (1, 1, 3, 14, (17,), (3,), 1, 1, 1, 1),
]


@pytest.mark.parametrize("layout", ["last", "first"])
@pytest.mark.parametrize("build", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("case", SMALL_BUILD_CASES,
                         ids=lambda c: f"{c[0]}d-k{c[5]}-s{c[6]}-p{c[7]}-d{c[8]}-co{c[3]}")
def test_small_path_c_builds_match_torch(case, build, layout, dtype, torch, rng, monkeypatch):
    """The Cython SMALL kernel is compiled generic, for AVX2+FMA and for AVX-512 (chosen
    by CPU); the tests above run the best build this CPU has, this runs each of them, with
    both layouts (channels-first: both input modes)."""
    cy_conv = pytest.importorskip("fastdl._cy.conv")
    if build == "avx512" and build not in cy_conv._small_builds_available():
        pytest.skip("the avx512 build is not available: this CPU has no AVX-512")  # no build failure
    require(build in cy_conv._small_builds_available(),
            f"the {build} build of the SMALL kernel is not available on this CPU")
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, _ = case
    _steer(monkeypatch, "small")
    n = 1 if batch is None else batch
    x = rng.standard_normal((n,) + spatial + (c_in,))
    x.flat[5] = np.nan
    x.flat[-9] = -np.inf
    w = rng.standard_normal(kernel + (c_in, c_out))
    b = rng.standard_normal(c_out)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, 1)
    if layout == "first":
        x, expected = np.moveaxis(x, -1, 1), np.moveaxis(expected, -1, 1)
        w = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)
    if batch is None:
        x, expected = x[0], expected[0]
    layout_arg = {"layout": CHANNELS_FIRST[nd]} if layout == "first" else {}
    modes = _record_input_modes(monkeypatch, "cython")
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    saved = cy_conv._small_kernel_build()
    cy_conv._small_kernel_build(build)
    try:
        for input_mode in INPUT_MODES if layout == "first" else INPUT_MODES[:1]:
            _steer_input(monkeypatch, input_mode)
            got = getattr(fastdl, f"conv{nd}d")(x.astype(dtype), w.astype(dtype),
                                                b.astype(dtype), stride=stride, padding=padding,
                                                dilation=dilation, backend="cython", **layout_arg)
            assert_close(got, expected, dtype)
            assert modes.pop() == input_mode
    finally:
        cy_conv._small_kernel_build(saved)


@pytest.mark.parametrize("channels_first", ["output", "input"])
@pytest.mark.parametrize("compiled", ["numba", "cython"])
def test_channels_first_only_on_the_small_path(compiled, channels_first, rng):
    """The kernels read or write channels-first arrays only on the SMALL path; asked to on
    another path they refuse rather than use a wrong layout."""
    status = fastdl.backends()[compiled]
    require(status == "available", f"backend {compiled} is unavailable: {status}")
    module = kernels("conv", compiled)
    first_out = channels_first == "output"
    xp = rng.standard_normal((1, 1, 6, 6, 32) if first_out else (1, 32, 1, 6, 6))
    w = rng.standard_normal((1, 3, 3, 32, 128))  # 128 > SMALL_MAX_OUT
    out = np.empty((1, 128, 1, 4, 4) if first_out else (1, 1, 4, 4, 128))
    with pytest.raises(ValueError, match="SMALL"):
        module.conv_ndhwc(xp, w, np.zeros(128), out, (1, 1, 1), (1, 1, 1), 1, 1,
                          first_out, not first_out)


@pytest.mark.parametrize("compiled", ["numba", "cython"])
def test_kernel_padding_only_on_the_depthwise_path(compiled, rng):
    """Only the DEPTHWISE kernel skips padded taps; given padding on another path the
    kernels refuse rather than read past the unpadded input."""
    status = fastdl.backends()[compiled]
    require(status == "available", f"backend {compiled} is unavailable: {status}")
    module = kernels("conv", compiled)
    xp = rng.standard_normal((1, 1, 4, 4, 8))
    w = rng.standard_normal((1, 3, 3, 8, 8))  # SMALL, not depthwise
    out = np.empty((1, 1, 4, 4, 8))
    with pytest.raises(ValueError, match="DEPTHWISE"):
        module.conv_ndhwc(xp, w, np.zeros(8), out, (1, 1, 1), (1, 1, 1), 1, 1, False, False,
                          (0, 1, 1))


@pytest.mark.parametrize("path", ["shifted", "im2col"])
def test_concurrent_calls_restore_blas_threads(path, backend, torch, rng, monkeypatch):
    """Overlapping calls from Python threads stay correct, and BLAS gets its own thread
    count back once the last GEMM-path call has left."""
    from concurrent.futures import ThreadPoolExecutor

    threadpoolctl = pytest.importorskip("threadpoolctl")
    _steer(monkeypatch, path)

    def blas_threads():
        return {info["filepath"]: info["num_threads"]
                for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"}

    fastdl.conv2d(np.ones((1, 3, 3, 6)), np.ones((1, 1, 6, 8)), backend=backend)  # load BLAS
    before = blas_threads()
    x = rng.standard_normal((2, 12, 13, 6))
    w = rng.standard_normal((3, 3, 6, 8))
    expected = _torch_conv(torch, 2, x, w, np.zeros(8), 1, 1, 1, 1)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(
            lambda _: fastdl.conv2d(x, w, padding=1, backend=backend), range(16)))
    for got in results:
        assert_close(got, expected, np.float64)
    assert blas_threads() == before


@pytest.mark.parametrize("path", sorted(PATHS))
def test_nan_and_inf_propagate_on_every_path(path, backend, dtype, torch, rng, monkeypatch):
    _steer(monkeypatch, path)
    x = rng.standard_normal((2, 9, 8, 4))
    x[0, 2, 3, 1] = np.nan
    x[1, 5, 5, 2] = np.inf
    w = rng.standard_normal((3, 3, 4, 8))
    b = rng.standard_normal(8)
    expected = _torch_conv(torch, 2, x, w, b, 1, 1, 1, 1)
    got = fastdl.conv2d(x.astype(dtype), w.astype(dtype), b.astype(dtype), padding=1,
                        backend=backend)
    assert np.isnan(expected).any() and np.isinf(expected).any()
    assert_close(got, expected, dtype)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape, offsets", [
    ((2, 3, 1, 5, 7), (0, 1, 2)),
    ((1, 5, 3, 4, 2), (1, 0, 3)),
    ((3, 1, 1, 1, 130), (0, 0, 0)),   # one channel, more than one pixel block
    ((2, 70, 1, 3, 3), (0, 2, 1)),
    # register-tile transposes (8 x 8 numba, vector-wide C) with tiles moved back at both
    # ends: channels and widths not multiples of 8 or 16, and exact multiples
    ((2, 20, 1, 3, 37), (0, 1, 1)),
    ((1, 16, 2, 2, 16), (1, 1, 0)),
    ((1, 33, 1, 1, 50), (0, 0, 2)),
])
def test_layout_transposes(backend, dtype, rng, shape, offsets, threads):
    """The cache-blocked transposes behind channels-first calls, against np.moveaxis:
    exact, and the padding around the interior is left untouched."""
    module = fastdl._dispatch.kernels("conv", backend)
    x = rng.standard_normal(shape).astype(dtype)
    n, c, d, h, w = shape
    od, oh, ow = offsets
    padded = np.full((n, d + 2 * od, h + 2 * oh, w + 2 * ow, c), -7.0, dtype)
    module.to_channels_last(x, padded, offsets, threads)
    expected = np.full_like(padded, -7.0)
    expected[:, od:od + d, oh:oh + h, ow:ow + w] = np.moveaxis(x, 1, -1)
    assert np.array_equal(padded, expected)

    y = rng.standard_normal((n, d * h * w, c)).astype(dtype)
    first = np.empty((n, c, d * h * w), dtype)
    module.to_channels_first(y, first, threads)
    assert np.array_equal(first, np.moveaxis(y, -1, 1))


@pytest.mark.parametrize("build", ["generic", "avx2", "avx512"])
def test_layout_transposes_c_builds(build, dtype, rng):
    """The Cython transposes run the SMALL kernel's build (its in-register transpose):
    each build, on tiles moved back at both ends."""
    cy_conv = pytest.importorskip("fastdl._cy.conv")
    if build == "avx512" and build not in cy_conv._small_builds_available():
        pytest.skip("the avx512 build is not available: this CPU has no AVX-512")
    require(build in cy_conv._small_builds_available(),
            f"the {build} build of the SMALL kernel is not available on this CPU")
    saved = cy_conv._small_kernel_build()
    cy_conv._small_kernel_build(build)
    try:
        x = rng.standard_normal((2, 21, 1, 2, 37)).astype(dtype)
        padded = np.full((2, 1, 4, 39, 21), -7.0, dtype)
        cy_conv.to_channels_last(x, padded, (0, 1, 1), 2)
        y = rng.standard_normal((2, 150, 19)).astype(dtype)
        first = np.empty((2, 19, 150), dtype)
        cy_conv.to_channels_first(y, first, 2)
    finally:
        cy_conv._small_kernel_build(saved)
    expected = np.full_like(padded, -7.0)
    expected[:, :, 1:3, 1:38] = np.moveaxis(x, 1, -1)
    assert np.array_equal(padded, expected)
    assert np.array_equal(first, np.moveaxis(y, -1, 1))


# Channels-first SMALL output through per-thread channels-last row tiles: rows of several
# tiles plus a short last one (tiles of 48 pixels with FIRST_TILE_BYTES = 1), channels not
# a multiple of the vector width, and rows narrower than the transposes' tiles.
FIRST_TILE_CASES = [
    (1, 2, 5, 40, (101,), (3,), 1, 1, 1, 1),
    (2, 1, 3, 20, (3, 100), (3, 3), 1, 1, 1, 1),
    (2, 2, 4, 72, (5, 61), (3, 3), (1, 2), 1, 1, 1),
    (3, 1, 2, 12, (2, 3, 7), (3, 3, 3), 1, 1, 1, 1),
    (1, 1, 3, 3, (50,), (3,), 1, 0, 2, 1),
]
FIRST_TILE_ENGINES = [("numba", "narrow"), ("numba", "wide"), ("cython", "generic"),
                      ("cython", "avx2"), ("cython", "avx512")]


@pytest.mark.parametrize("input_mode", INPUT_MODES)
@pytest.mark.parametrize("engine", FIRST_TILE_ENGINES, ids="-".join)
@pytest.mark.parametrize("case", FIRST_TILE_CASES,
                         ids=lambda c: f"{c[0]}d-k{c[5]}-s{c[6]}-w{c[4][-1]}-co{c[3]}")
def test_small_path_channels_first_tiles_match_torch(case, engine, input_mode, dtype, torch, rng,
                                                     monkeypatch):
    """Channels-first output computed channels-last into row tiles and transposed out
    (the compiled kernels' way for reductions of FIRST_TILE_MIN_REDUCTION and more; forced
    here for every reduction), from either input mode, with NaN and Inf propagating."""
    backend, variant = engine
    if backend == "numba":
        numba_conv = pytest.importorskip("fastdl._numba.conv")
        monkeypatch.setattr(numba_conv, "SMALL_WIDE", variant == "wide")
    else:
        cy_conv = pytest.importorskip("fastdl._cy.conv")
        if variant == "avx512" and variant not in cy_conv._small_builds_available():
            pytest.skip("the avx512 build is not available: this CPU has no AVX-512")
        require(variant in cy_conv._small_builds_available(),
                f"the {variant} build of the SMALL kernel is not available on this CPU")
    _steer(monkeypatch, "small")
    _steer_input(monkeypatch, input_mode)
    modes = _record_input_modes(monkeypatch, backend)
    monkeypatch.setattr(_conv_plan, "FIRST_TILE_MIN_REDUCTION", 0)
    monkeypatch.setattr(_conv_plan, "FIRST_TILE_BYTES", 1)
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, _ = case
    x = rng.standard_normal((batch, c_in) + spatial)
    x.flat[7] = np.nan
    x.flat[-11] = np.inf
    w = rng.standard_normal((c_out, c_in) + kernel)
    b = rng.standard_normal(c_out)
    conv_t = getattr(torch.nn.functional, f"conv{nd}d")
    expected = conv_t(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                      stride=stride, padding=padding, dilation=dilation).numpy()
    run = lambda: getattr(fastdl, f"conv{nd}d")(
        x.astype(dtype), w.astype(dtype), b.astype(dtype), stride=stride, padding=padding,
        dilation=dilation, layout=CHANNELS_FIRST[nd], backend=backend)
    if backend == "cython":
        saved = cy_conv._small_kernel_build()
        cy_conv._small_kernel_build(variant)
        try:
            got = run()
        finally:
            cy_conv._small_kernel_build(saved)
    else:
        got = run()
    assert np.isnan(expected).any() and np.isinf(expected).any()
    assert got.dtype == dtype and got.flags.c_contiguous
    assert_close(got, expected, dtype)
    assert modes == [input_mode]


# Depthwise convs (groups == C_in == C_out): channel counts around every vector width
# (full, half and quarter vectors, scalars: 1-3, 4, 7, 8, 13, 16, 24, 33, 40), rows
# narrower than a pixel block, strides, dilation, padding, 1-d / 2-d / 3-d.
DEPTHWISE_CASES = [
    (2, 2, 8, (7, 9), (3, 3), 1, 1, 1),
    (2, 1, 13, (6, 11), (3, 3), 2, 1, 1),
    (2, 2, 33, (5, 12), (5, 3), 1, (2, 1), (1, 2)),
    (2, 1, 3, (9, 3), (3, 3), 1, 1, 1),                  # rows narrower than a block
    (2, 1, 40, (4, 19), (2, 2), 2, 0, 1),
    (2, None, 16, (8, 8), (3, 3), 1, "same", 2),
    (2, 1, 1, (6, 7), (3, 3), 1, 1, 1),                  # one channel (groups 1: SMALL)
    (2, 1, 24, (3, 10), (1, 1), 1, 0, 1),
    (1, 2, 7, (21,), (5,), 1, 2, 1),
    (1, 1, 4, (30,), (3,), 3, 1, 2),
    (3, 1, 2, (4, 5, 9), (3, 3, 3), 1, 1, 1),
    (3, 1, 12, (3, 6, 6), (3, 1, 3), (1, 2, 1), (1, 0, 1), 1),
    # padding in the kernel: windows wholly in the padding, even "same" kernels (more
    # padding after than before), rows whose every pixel is an edge pixel, wide rows
    (2, 1, 16, (5, 6), (2, 2), 1, 3, 1),
    (2, 2, 19, (7, 9), (4, 4), 1, "same", 1),
    (2, 1, 8, (4, 2), (5, 5), 1, 2, 1),
    (2, 1, 24, (6, 2), (3, 5), 2, (1, 4), (1, 2)),
    (2, 1, 32, (3, 37), (3, 3), 2, 1, 1),
    (1, 1, 16, (3,), (7,), 1, 3, 1),
    (3, 1, 16, (3, 4, 11), (3, 3, 3), (2, 1, 1), (2, 1, 2), 1),
]


@pytest.mark.parametrize("layout", ["last", "first"])
@pytest.mark.parametrize("case", DEPTHWISE_CASES,
                         ids=lambda c: f"{c[0]}d-c{c[2]}-w{c[3][-1]}-k{c[4]}-s{c[5]}-p{c[6]}-d{c[7]}")
def test_depthwise_path_matches_torch(case, layout, backend, dtype, torch, rng, monkeypatch):
    nd, batch, channels, spatial, kernel, stride, padding, dilation = case
    monkeypatch.setattr(_conv_plan, "SERIAL_MACS", 0)
    n = 1 if batch is None else batch
    x = rng.standard_normal((n,) + spatial + (channels,))
    x.flat[3] = np.nan
    x.flat[-2] = np.inf
    w = rng.standard_normal(kernel + (1, channels))
    b = rng.standard_normal(channels)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, channels)
    if layout == "first":
        x, expected = np.moveaxis(x, -1, 1), np.moveaxis(expected, -1, 1)
        w = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)
    if batch is None:
        x, expected = x[0], expected[0]
    seen = _record_paths(monkeypatch)
    kernel_pads = _record_kernel_padding(monkeypatch, backend)
    layout_name = CHANNELS_FIRST[nd] if layout == "first" else CHANNELS_LAST[nd]
    for _ in _each_c_build(backend):
        got = getattr(fastdl, f"conv{nd}d")(
            x.astype(dtype), w.astype(dtype), b.astype(dtype), stride=stride,
            padding=padding, dilation=dilation, groups=channels, layout=layout_name,
            backend=backend)
        assert got.dtype == dtype
        assert_close(got, expected, dtype)
    # every weight is finite: the kernel skips the padded taps (no padded copy)
    padded = padding == "same" or np.any(np.asarray(padding) != 0)
    assert set(kernel_pads) == {padded and channels > 1}
    if backend != "numpy":
        want = _conv_plan.SMALL if channels == 1 else _conv_plan.DEPTHWISE
        assert set(seen) == {want}, f"kernel took path {seen}, expected {want}"


@pytest.mark.parametrize("case", [c for c in DEPTHWISE_CASES if c[6] != 0 and c[2] > 1],
                         ids=lambda c: f"{c[0]}d-c{c[2]}-w{c[3][-1]}-k{c[4]}-s{c[5]}-p{c[6]}"
                                       f"-d{c[7]}")
def test_depthwise_with_infinite_weights_reads_zero_padding(case, backend, dtype, torch, rng,
                                                            monkeypatch):
    """With an infinite weight the DEPTHWISE path reads a zero-padded copy (a padded cell
    times it is NaN, as in PyTorch's float64 conv) instead of skipping padded taps."""
    nd, batch, channels, spatial, kernel, stride, padding, dilation = case
    monkeypatch.setattr(_conv_plan, "SERIAL_MACS", 0)
    n = 1 if batch is None else batch
    x = rng.standard_normal((n,) + spatial + (channels,))
    w = rng.standard_normal(kernel + (1, channels))
    w.flat[0] = np.inf  # the first tap of channel 0
    w.flat[-1] = -np.inf  # the last tap of the last channel
    b = rng.standard_normal(channels)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, channels)
    assert np.isnan(expected).any()  # where the infinite tap meets the padding
    if batch is None:
        x, expected = x[0], expected[0]
    kernel_pads = _record_kernel_padding(monkeypatch, backend)
    with np.errstate(invalid="ignore"):
        got = getattr(fastdl, f"conv{nd}d")(x.astype(dtype), w.astype(dtype), b.astype(dtype),
                                            stride=stride, padding=padding, dilation=dilation,
                                            groups=channels, backend=backend)
    assert_close(got, expected, dtype)
    assert kernel_pads == [False]


@pytest.mark.parametrize("path", sorted(PATHS) + ["depthwise"])
def test_padding_is_ieee_zeros(path, backend, dtype, monkeypatch):
    """A padded cell is a zero that multiplies the weight: against an infinite weight it
    gives NaN on every path (the decision in README.md; PyTorch's float64 conv agrees)."""
    _steer(monkeypatch, path)
    groups = 4 if path == "depthwise" else 1
    x = np.ones((1, 5, 6, 4), dtype)
    w = np.ones((3, 3, 4 // groups, 4), dtype)
    w[0, 0, :, 0] = np.inf  # the top-left tap of output channel 0
    seen = _record_paths(monkeypatch)
    with np.errstate(invalid="ignore"):
        got = fastdl.conv2d(x, w, padding=1, groups=groups, backend=backend)
    assert np.isnan(got[0, 0, :, 0]).all() and np.isnan(got[0, :, 0, 0]).all()
    assert np.isposinf(got[0, 1:, 1:, 0]).all()  # its tap is inside the input there
    assert np.isfinite(got[..., 1:]).all()
    if backend != "numpy":
        want = {"direct": _conv_plan.DIRECT, "shifted": _conv_plan.SHIFTED,
                "im2col": _conv_plan.IM2COL, "small": _conv_plan.SMALL,
                "depthwise": _conv_plan.DEPTHWISE}[path]
        assert seen == [want]


# Grouped convs on the SMALL path (one row-kernel pass per group): output channels per
# group around every vector width (2, 3, 4, 8, 12, 16, 24, 40: quarter, half, full and
# multi-vector blocks, numba's half chunk and zero-padded leftovers), input channels per
# group 1-8 (1: depthwise with a multiplier), strides, dilation, padding, rows narrower
# than a pixel block, 1-d / 2-d / 3-d; one reduction (8 x 5 x 5 = 200) long enough for
# the C kernel's channels-first row tiles (FIRST_TILE_MIN_REDUCTION).
# (nd, batch, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
GROUPED_SMALL_CASES = [
    (2, 2, 16, 16, (7, 19), (3, 3), 1, 1, 1, 4),          # 4 in / 4 out per group
    (2, 1, 16, 64, (6, 13), (3, 3), 1, 1, 1, 2),          # 8 in / 32 out
    (2, 2, 8, 32, (5, 11), (3, 3), 2, 1, 1, 4),           # 2 / 8, strided
    (2, 1, 12, 36, (6, 9), (3, 2), 1, (1, 0), (2, 1), 3),  # 4 / 12, dilated
    (2, 1, 6, 48, (5, 21), (3, 3), 1, "same", 1, 3),      # 2 / 16
    (2, 2, 4, 48, (4, 3), (3, 3), 1, 1, 1, 2),            # 2 / 24, rows narrower than a block
    (2, 1, 5, 10, (7, 8), (3, 3), 1, 1, 1, 5),            # depthwise, multiplier 2
    (2, 1, 6, 18, (6, 17), (3, 3), 1, 1, 1, 6),           # depthwise, multiplier 3
    (2, 1, 16, 80, (3, 18), (5, 5), 1, 2, 1, 2),          # 8 / 40, K = 200
    (1, 2, 14, 24, (23,), (3,), 1, 1, 1, 2),              # 7 / 12
    (1, 1, 8, 32, (30,), (5,), 3, 2, 2, 2),               # 4 / 16, strided, dilated
    (3, 1, 6, 12, (3, 5, 9), (3, 3, 3), 1, 1, 1, 3),      # 2 / 4
    (3, 1, 8, 16, (4, 4, 6), (2, 3, 3), (1, 2, 1), 1, 1, 2),  # 4 / 8
]


@pytest.mark.parametrize("layout", ["last", "first"])
@pytest.mark.parametrize("case", GROUPED_SMALL_CASES,
                         ids=lambda c: f"{c[0]}d-ci{c[2]}-co{c[3]}-g{c[9]}-s{c[6]}-d{c[8]}")
def test_grouped_small_path_matches_torch(case, layout, backend, dtype, torch, rng, monkeypatch):
    """Grouped convs on the SMALL path, with NaN and Inf, in every variant of each
    compiled kernel: numba's two block shapes, every C build this CPU runs, and for
    channels-first output both the direct stores and the channels-last row tiles, from
    either input mode."""
    nd, batch, c_in, c_out, spatial, kernel, stride, padding, dilation, groups = case
    monkeypatch.setattr(_conv_plan, "SERIAL_MACS", 0)
    n = 1 if batch is None else batch
    x = rng.standard_normal((n,) + spatial + (c_in,))
    x.flat[4] = np.nan
    x.flat[-3] = np.inf
    w = rng.standard_normal(kernel + (c_in // groups, c_out))
    b = rng.standard_normal(c_out)
    expected = _torch_conv(torch, nd, x, w, b, stride, padding, dilation, groups)
    layout_name = CHANNELS_LAST[nd]
    if layout == "first":
        x, expected = np.moveaxis(x, -1, 1), np.moveaxis(expected, -1, 1)
        w = np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)
        layout_name = CHANNELS_FIRST[nd]
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    seen = _record_paths(monkeypatch)
    modes = _record_input_modes(monkeypatch, backend)
    # numba: both block shapes; cython: every C build, and for channels-first output the
    # default rule (direct stores, K < 200 but in one case) and row tiles for every K;
    # channels-first: both input modes
    wide_shapes = [False, True] if backend == "numba" else [None]
    first_tile_mins = [_conv_plan.FIRST_TILE_MIN_REDUCTION]
    if layout == "first" and backend == "cython":
        first_tile_mins.append(0)
    input_modes = INPUT_MODES if layout == "first" else INPUT_MODES[:1]
    for wide in wide_shapes:
        if wide is not None:
            monkeypatch.setattr(pytest.importorskip("fastdl._numba.conv"), "SMALL_WIDE", wide)
        for _ in _each_c_build(backend):
            for first_tile_min, input_mode in itertools.product(first_tile_mins, input_modes):
                monkeypatch.setattr(_conv_plan, "FIRST_TILE_MIN_REDUCTION", first_tile_min)
                _steer_input(monkeypatch, input_mode)
                got = getattr(fastdl, f"conv{nd}d")(
                    x.astype(dtype), w.astype(dtype), b.astype(dtype), stride=stride,
                    padding=padding, dilation=dilation, groups=groups, layout=layout_name,
                    backend=backend)
                assert got.dtype == dtype and got.flags.c_contiguous
                assert_close(got, expected, dtype)
                assert modes.pop() == input_mode
    if backend != "numpy":
        assert set(seen) == {_conv_plan.SMALL}, f"kernel took path {seen}, expected SMALL"

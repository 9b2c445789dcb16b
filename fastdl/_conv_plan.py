"""How the compiled conv kernels split the work: one rule shared by numba and Cython.

Five algorithms, chosen by shape (the thresholds are module attributes so tests can
steer tiny inputs onto each path):

- ``SMALL``: a short reduction (C_in/groups * taps <= SMALL_MAX_REDUCTION, like the
  3-channel first layers) and a few dozen output channels (per group): a register-blocked
  direct kernel. A block of output pixels x output channels stays in registers over the
  whole reduction (one broadcast input value times a contiguous weight row per step), and
  each output is written once -- these layers are bound by writing their output. Grouped
  convs (2+ output channels per group) run it once per group on each output row.
- ``DEPTHWISE``: groups == C_in == C_out (one input and one output channel per group):
  output channel c reads input channel c only, so a block of output pixels x channels
  stays in registers over the taps alone, with vectors along the channels. Its kernel
  can also skip the taps that fall in the padding (per-row tap lists) instead of reading
  a zero-padded copy.
- ``DIRECT``: plain loops vectorised along output channels, for the other convs whose
  per-group matrices are too thin for BLAS to pay off (few output channels per group).
- ``SHIFTED``: stride 1 (any dilation). Each kernel tap is one GEMM over the flattened
  padded channels-last grid shifted by the tap's offset (K = C_in/groups), accumulated
  in a per-thread tile buffer; no im2col copy. Rows that fall in the padding columns are
  computed and dropped on the copy-out.
- ``IM2COL``: everything else (strides > 1, or too few input channels per tap for a
  per-tap GEMM): a bounded per-thread patch buffer of
  up to TILE_MAX_ROWS output pixels, then one GEMM straight into the output.

Both GEMM paths split the output into tiles across our own threads and call BLAS on each
tile, so BLAS itself must run single-threaded meanwhile (see ``blas_single_threaded``).

A call's plan (``choose``, and the numba backend's argument tuple) is a pure function of
shapes, arguments and these thresholds, so it is cached per distinct call (``cached_plan``):
deriving it cost 1-3 us, a quarter of a small conv's whole call. Setting any attribute of
this module clears those caches, so a plan never outlives the thresholds it was made with.
"""

import contextlib
import functools
import sys
import threading
import types

import numpy as np

DIRECT, SHIFTED, IM2COL, SMALL, DEPTHWISE = 0, 1, 2, 3, 4
GEMM_PATHS = frozenset((SHIFTED, IM2COL))  # the paths that call BLAS

# SMALL: C_in/groups * taps at most this, and at most SMALL_MAX_OUT output channels (per
# group; more: GEMM reuses each patch better). The SMALL kernel keeps a block of output pixels x
# output channels in registers through the whole reduction (C: 6 px x 16 ch on AVX2, 4 x 64
# / 8 x 32 / 8 x 16 on AVX-512; numba: 4 x 16, 8 x 16 for float32 on AVX-512 hosts), reading
# a (reduction x block width) weight panel per block; up to 1024 that panel stays in L1/L2
# and the kernel beats per-tap BLAS GEMMs (one thread, AVX2, fp32: 64->64 3x3 94 vs 65
# GFLOP/s, conv3d 32->32 3^3 (864) 28 vs 35 ms; 128->128 3x3 (1152) 73 vs 78 GFLOP/s, so
# GEMM from there on). Fewer than 8 output channels leave vector lanes idle but still beat
# DIRECT (2 threads, fp32, cython / numba: N4 8->1 64^2 3x3 0.18 / 1.9 ms vs 1.8 / 2.1;
# N8 16->4 56^2 1.5 / 6.5 vs 5.9 / 6.6 ms), so there is no lower bound.
SMALL_MAX_REDUCTION = 1024
SMALL_MIN_OUT, SMALL_MAX_OUT = 1, 64
# Grouped convs (groups > 1) take SMALL, one pass of the row kernel per group, when the
# per-group reduction is as above and each group has SMALL_MIN_OUT_PER_GROUP to
# SMALL_MAX_OUT output channels. Kernel alone, one thread, N8 56^2 64->64 3x3, old path
# vs SMALL, ms, fp32 cython / numba:
#   g2  (32 ch/group, K 288) SHIFTED 12.7 / 12.8 vs 9.2 / 9.2
#   g4  (16, K 144)          SHIFTED  7.7 /  7.1 vs 7.6 / 6.7
#   g8  (8, K 72)            IM2COL  20.9 / 20.8 vs 5.6 / 7.4
#   g16 (4, K 36)            DIRECT  26.7 / 40.2 vs 4.8 / 6.0
#   g32 (2, K 18)            DIRECT  39.2 / 37.0 vs 7.5 / 6.8
# (fp64 alike: 1.0-1.3x at g2/g4, 2-5x from g8 on). One output channel per group still
# beat DIRECT's depthwise-like loop, but by less (64->32 g32 / 64->16 g16: cython 6.6 /
# 7.7 vs 4.9 / 4.9 ms, numba 8.9 / 9.2 vs 8.0 / 7.1), and with one input channel too it
# is the DEPTHWISE path's (3.5-6x faster than SMALL): groups of one output channel stay
# off SMALL.
SMALL_MIN_OUT_PER_GROUP = 2

# Depthwise convs (one input and one output channel per group) with at least this many
# channels take DEPTHWISE (2 threads, fp32, 8x56x56x64 3x3 pad 1, numba / cython, through
# conv2d: 2.5 / 3.8 ms on DIRECT; 0.71-0.93 / 0.66 ms on DEPTHWISE reading a zero-padded
# copy; 0.47 / 0.37 ms skipping the padded taps in the kernel, which it does when every
# weight is finite, see conv.py). Tests raise it to steer depthwise cases onto the other
# paths.
DEPTHWISE_MIN_CHANNELS = 1
# Fewer output channels per group than this: BLAS's N dimension is too thin -> DIRECT.
GEMM_MIN_OUT_PER_GROUP = 8
# Fewer input channels per group * taps than this: K too short for a GEMM -> DIRECT.
GEMM_MIN_REDUCTION = 8
# Per-tap GEMMs need at least this many input channels per group; else IM2COL.
SHIFTED_MIN_IN_PER_GROUP = 16
# Below this many multiply-adds a call runs on one thread (thread start-up dominates).
# At 2**18 no single GEMM of the call reaches OpenBLAS's own threading threshold
# (M*N*K > 65536 * 4), so such calls also skip limiting BLAS's threads (~10 us).
SERIAL_MACS = 1 << 18
# Bytes of the per-thread tile buffer (measured: 512K beats 32K and 128K by 0-10%).
TILE_BYTES = 512 * 1024
TILE_MIN_ROWS, TILE_MAX_ROWS = 16, 2048


# Channels-first calls on the SMALL path with at most this many input channels (padded
# inputs: FIRST_INPUT_PADDED_MAX_CHANNELS) read the channels-first input as it is, or a
# padded channels-first copy, with reduction offsets a channel plane apart, instead of a
# transposed channels-last copy. Through conv2d, 2 threads, fp32, transposed vs direct
# (min of 20, ms, numba / cython):
#   N32 3->32 128^2 2x2 s2       3.19 / 2.14 vs 1.99 / 1.47
#   N8 16->32 112^2 2x2 s2       0.82 / 1.10 vs 0.63 / 0.77
#   N8 16->32 56^2 3x3 pad 0     1.10 / 1.29 vs 1.06 / 1.26
#   N8 4->32 56^2 3x3 pad 1      0.46 / 0.40 vs 0.45 / 0.40
#   N32 3->64 128^2 3x3 pad 1    26.3 / 21.1 vs 25.5 / 21.0 (bound by its output)
#   N8 8->16 56^2 3x3 pad 1      0.36 / 0.37 vs 0.40 / 0.41 (the padded copy is NumPy's,
#   on one thread, where the transpose runs on all)
FIRST_INPUT_MAX_CHANNELS = 16
FIRST_INPUT_PADDED_MAX_CHANNELS = 4


_plan_caches = []


def cached_plan(function):
    """``functools.lru_cache`` for a plan function (hashable arguments only; exceptions
    are not cached, so a bad call raises every time), cleared with the others whenever
    this module's thresholds change."""
    cached = functools.lru_cache(maxsize=256)(function)
    _plan_caches.append(cached)
    return cached


class _PlanModule(types.ModuleType):
    """This module's type: setting a threshold (the tests steer paths that way) clears
    every cached plan."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        for cache in _plan_caches:
            cache.cache_clear()


sys.modules[__name__].__class__ = _PlanModule


def reads_channels_first(in_c, padded):
    """Whether a channels-first SMALL-path call reads its input channels-first."""
    return in_c <= (FIRST_INPUT_PADDED_MAX_CHANNELS if padded else FIRST_INPUT_MAX_CHANNELS)


def takes_small_path(reduction, out_c, groups):
    """Whether a conv with this reduction (C_in/groups * taps) takes the SMALL path, the
    one path that can also write channels-first output directly (see conv.py)."""
    if reduction > SMALL_MAX_REDUCTION:
        return False
    if groups == 1:
        return SMALL_MIN_OUT <= out_c <= SMALL_MAX_OUT
    o_per_group = out_c // groups
    return SMALL_MIN_OUT_PER_GROUP <= o_per_group <= SMALL_MAX_OUT


def takes_depthwise_path(c_per_group, out_c, groups):
    """Whether a conv (not on the SMALL path) takes the DEPTHWISE path, the one path that
    can skip padded taps instead of reading a zero-padded copy (see conv.py)."""
    return c_per_group == 1 and out_c == groups and groups >= DEPTHWISE_MIN_CHANNELS


@cached_plan
def choose(out_shape, w_shape, stride, groups, num_threads, itemsize):
    """Return (path, threads, tile_rows, limit_blas) for one conv call; limit_blas says
    whether BLAS must be held to one thread around the kernel."""
    n, out_d, out_h, out_w, out_c = out_shape
    k_d, k_h, k_w, c_per_group, _ = w_shape
    taps = k_d * k_h * k_w
    o_per_group = out_c // groups
    macs = n * out_d * out_h * out_w * out_c * taps * c_per_group
    tiny = macs < SERIAL_MACS
    threads = 1 if tiny else max(1, num_threads)
    if takes_small_path(c_per_group * taps, out_c, groups):
        path = SMALL
    elif takes_depthwise_path(c_per_group, out_c, groups):
        path = DEPTHWISE
    elif o_per_group < GEMM_MIN_OUT_PER_GROUP or c_per_group * taps < GEMM_MIN_REDUCTION:
        path = DIRECT
    elif all(s == 1 for s in stride) and c_per_group >= SHIFTED_MIN_IN_PER_GROUP:
        path = SHIFTED
    else:
        path = IM2COL
    # SHIFTED tiles hold tile_rows x C_out outputs; IM2COL tiles hold tile_rows x
    # (taps * C_in/groups) patches. Size whichever buffer the path uses to TILE_BYTES.
    width = out_c if path == SHIFTED else taps * c_per_group
    tile_rows = min(TILE_MAX_ROWS, max(TILE_MIN_ROWS, TILE_BYTES // (itemsize * max(1, width))))
    return path, threads, tile_rows, path in GEMM_PATHS and not tiny


def input_steps(x_shape, channels_first):
    """(pixel, channel) steps of the padded kernel input, x_shape in channels-last order
    (N, D, H, W, C): channels-last (C, 1), channels-first (1, D * H * W)."""
    _, in_d, in_h, in_w, in_c = x_shape
    return (1, in_d * in_h * in_w) if channels_first else (in_c, 1)


@functools.lru_cache(maxsize=256)
def reduction_offsets(x_shape, w_shape, dilation, channels_first=False):
    """SMALL path: offset of each reduction element (kd, kh, kw, c), in weight row order,
    from an output pixel's first input element in the padded input (x_shape in
    channels-last order (N, D, H, W, C); channels_first: the input is (N, C, D, H, W)).
    Shapes and dilation as tuples. Cached: calls on one shape (a training loop) skip the
    index arithmetic; the array is read-only, since every such call shares it."""
    _, in_d, in_h, in_w, in_c = x_shape
    k_d, k_h, k_w, c_per_group, _ = w_shape
    dd, dh, dw = dilation
    pixel_step, channel_step = input_steps(x_shape, channels_first)
    kd = np.arange(k_d).reshape(-1, 1, 1, 1)
    kh = np.arange(k_h).reshape(1, -1, 1, 1)
    kw = np.arange(k_w).reshape(1, 1, -1, 1)
    c = np.arange(c_per_group).reshape(1, 1, 1, -1)
    offsets = (((kd * dd * in_h + kh * dh) * in_w + kw * dw) * pixel_step
               + c * channel_step).astype(np.intp).ravel()
    offsets.flags.writeable = False
    return offsets


def depthwise_taps(x_shape, w_shape, out_shape, stride, dilation, pads):
    """DEPTHWISE path: the taps each output row reads when the kernel skips the ones in
    the padding. x_shape: the kernel's channels-last input (N, D, H, W, C), padded by
    pads = (front, top, left) more (zeros: none); out_shape (N, D, H, W, C); all tuples.

    Returns (ow_lo, ow_hi, edges, counts, toff, wtap). Output columns ow_lo .. ow_hi-1 read
    every kernel column inside the input row; each column in ``edges`` is done on its own.
    For output row r = od * out_h + oh and slot s (0: the columns ow_lo..ow_hi-1 together,
    1 + e: the edge column edges[e]) the kernel reads counts[r, s] taps: toff[r, s, t], the
    offset of tap t's input from the image's first element for the slot's first column
    (slot 0: column ow_lo, each next column sw pixels on), and wtap[r, s, t], its weight
    row. Cached, read-only (calls on one image shape share them, whatever the batch)."""
    return _depthwise_taps(x_shape[1:], w_shape[:3], out_shape[1:4], stride, dilation, pads)


@functools.lru_cache(maxsize=256)
def _depthwise_taps(x_shape, w_shape, out_shape, stride, dilation, pads):
    """depthwise_taps for one image: x_shape (D, H, W, C), w_shape (KD, KH, KW), out_shape
    (D, H, W)."""
    in_d, in_h, in_w, channels = x_shape
    k_d, k_h, k_w = w_shape
    out_d, out_h, out_w = out_shape
    (sd, sh, sw), (dd, dh, dw), (pd, ph, pw) = stride, dilation, pads
    # input coordinate of each (output coordinate, kernel tap) along each dim
    i_d = np.arange(out_d)[:, None] * sd - pd + np.arange(k_d) * dd
    i_h = np.arange(out_h)[:, None] * sh - ph + np.arange(k_h) * dh
    i_w = np.arange(out_w)[:, None] * sw - pw + np.arange(k_w) * dw
    # columns whose every tap lies inside the row: ow * sw >= pw, last tap < in_w
    inside_w = ((i_w >= 0) & (i_w < in_w)).all(axis=1)
    columns = np.flatnonzero(inside_w)
    ow_lo, ow_hi = (int(columns[0]), int(columns[-1]) + 1) if columns.size else (0, 0)
    edges = np.array([ow for ow in range(out_w) if not ow_lo <= ow < ow_hi], dtype=np.intp)
    # (rows, slots, kd, kh, kw): whether the tap is read, and its offset
    row_d = ((i_d >= 0) & (i_d < in_d))[:, None, :, None, None]
    row_h = ((i_h >= 0) & (i_h < in_h))[None, :, None, :, None]
    slot_w = np.concatenate([np.ones((1, k_w), bool), ((i_w >= 0) & (i_w < in_w))[edges]])
    valid = (row_d & row_h)[:, :, None] & slot_w[None, None, :, None, None, :]
    # each slot's input columns: column ow_lo's for the interior slot (unused when there
    # are no interior columns, ow_lo then 0), then each edge column's
    slot_col = np.concatenate([i_w[ow_lo:ow_lo + 1], i_w[edges]])
    offset = ((i_d[:, None, None, :, None, None] * in_h + i_h[None, :, None, None, :, None])
              * in_w + slot_col[None, None, :, None, None, :]) * channels
    rows, slots, taps = out_d * out_h, 1 + edges.size, k_d * k_h * k_w
    valid = valid.reshape(rows, slots, taps)
    offset = np.broadcast_to(offset, (out_d, out_h, slots, k_d, k_h, k_w))
    offset = offset.reshape(rows, slots, taps)
    order = np.argsort(~valid, axis=-1, kind="stable")  # each slot's read taps first, in order
    counts = valid.sum(axis=-1).astype(np.intp)
    toff = np.ascontiguousarray(np.take_along_axis(offset, order, axis=-1), dtype=np.intp)
    wtap = np.ascontiguousarray(order, dtype=np.intp)
    for array in (edges, counts, toff, wtap):
        array.flags.writeable = False
    return ow_lo, ow_hi, edges, counts, toff, wtap


_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None
_blas_controller = None


def _controller():
    global _blas_controller
    if _blas_controller is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS the kernels call)
            from threadpoolctl import ThreadpoolController
            _blas_controller = ThreadpoolController().select(user_api="blas")
        except Exception:  # threadpoolctl missing: BLAS may oversubscribe, still correct
            _blas_controller = False
    return _blas_controller


@contextlib.contextmanager
def blas_single_threaded(active=True):
    """Run BLAS on one thread while our own threads each call it on their tiles.

    Reference-counted so overlapping calls from several Python threads restore the
    user's BLAS thread counts only when the last one leaves."""
    global _blas_users, _blas_saved
    controller = _controller() if active else False
    if not controller:
        yield
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [lib.get_num_threads() for lib in controller.lib_controllers]
            for lib in controller.lib_controllers:
                lib.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for lib, saved in zip(controller.lib_controllers, _blas_saved):
                    lib.set_num_threads(saved)


# Channels-first output of the SMALL path (conv.py), grouped convs included (each group's
# channel planes; N8 56^2 64->64 3x3 g4..g32, one thread, kernel + layout change: 7-30%
# faster than computing channels-last and calling to_channels_first). The C kernel's
# LANES-pixel blocks, transposed in registers and stored straight into the channel
# planes, win on short reductions, where writing the output is the cost (3->64 3x3,
# K = 27; g16 above: 4.8 vs 5.2 ms through the row tiles); from this
# reduction length on both compiled kernels compute each output row channels-last, a tile
# of pixels at a time, into a per-thread buffer and transpose it out (numba does so for
# every length). The channels-last blocks are wider (AVX-512, one thread, fp32, 64->64
# 3x3, K = 576: 1.98 ms against 2.28 ms for direct channels-first stores).
FIRST_TILE_MIN_REDUCTION = 192
# The tile: at most this many bytes (in L1 with the inputs it reads), a multiple of 48
# pixels (whole blocks for every block width: 4, 6, 8, and the 8 / 16-wide transposes).
FIRST_TILE_BYTES = 24 * 1024


def first_tile_pixels(out_w, out_c, itemsize):
    """Pixels per tile of a channels-first SMALL row (the whole row when it fits)."""
    pixels = max(48, FIRST_TILE_BYTES // (out_c * itemsize) // 48 * 48)
    return max(1, min(out_w, pixels))

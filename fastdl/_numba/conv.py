"""Numba conv kernels: channels-last, the same algorithms as kernels/conv.pyx (SMALL,
DEPTHWISE, DIRECT, SHIFTED, IM2COL; see fastdl/_conv_plan.py).

The SMALL path can also read channels-first input (``channels_first_in``: its reduction
offsets and pixel step are then in channel planes) and write channels-first output
(``channels_first_out``): each
output row is computed channels-last, a tile of pixels at a time (_conv_plan's
first_tile_pixels), into a per-thread L1-sized buffer and transposed out 8 x 8 at a time
(``_transpose``, also behind to_channels_last / to_channels_first). Its register block
is 8 pixels x 16 channels for float32 on AVX-512 targets, 4 x 16 otherwise (see
_NARROW_PIXELS); a leftover half chunk of 8 channels runs in blocks of 16 pixels x 8,
and the last 1-7 channels the same way on zero-padded weights, storing only the real
ones. A row's last, partial block of each shape recomputes its last pixel in the missing
places and stores only the real pixels. Grouped convs run the row once per group, on
the group's input channels, weight columns and output channels (weight rows stay C_out
apart; each group's leftover channels get their own zero-padded weight columns).

The path, thread count and tile size come from fastdl/_conv_plan.py (one rule for both
compiled backends). The GEMM paths call scipy's BLAS (scipy.linalg.cython_blas) directly
from nopython code: its sgemm/dgemm addresses are registered with LLVM under our own
symbol names before the first GEMM-path call, and the kernels reference those names, so
``cache=True`` stays valid across processes (no address is baked into the cached code).

Arrays are passed flat with their shapes in ``dims``; hot loops index through ``_u``
(uint64): with signed indices numba adds a negative-index wraparound check to every
access, which stops LLVM vectorising the loop (7x slower copies, measured).
"""

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types, uint64 as _u
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic
from numba.np.numpy_support import carray

from .. import _conv_plan
from . import njit_parallel, njit_serial, run_parallel

_GEMM_SYMBOLS = {types.float32: "fastdl_cython_blas_sgemm", types.float64: "fastdl_cython_blas_dgemm"}
_blas_registered = False


def _register_blas():
    """Register scipy's sgemm/dgemm under our symbol names, before the first GEMM-path
    kernel is compiled or loaded from the cache. Not at import: importing scipy.linalg
    costs ~0.13 s, and the SMALL and DIRECT paths never call BLAS."""
    global _blas_registered
    if _blas_registered:
        return
    for dtype, symbol in _GEMM_SYMBOLS.items():
        llvm.add_symbol(symbol, get_cython_function_address(
            "scipy.linalg.cython_blas", "sgemm" if dtype == types.float32 else "dgemm"))
    _blas_registered = True


@intrinsic
def _gemm(typingctx, m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    """Row-major C[m, n] = A[m, k] @ B[k, n] + beta * C on flat arrays at element offsets
    (BLAS is column-major, where a row-major matrix is its transpose: C^T = B^T A^T)."""
    dtype = c.dtype
    sig = types.void(m, n, k, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)

    def codegen(context, builder, signature, args):
        m_, n_, k_, a_, a_off_, lda_, b_, b_off_, ldb_, beta_, c_, c_off_, ldc_ = args
        int32 = ir.IntType(32)
        real = context.get_value_type(dtype)
        real_ptr = real.as_pointer()

        def data(array, array_type, offset):
            base = context.make_array(array_type)(context, builder, array).data
            return builder.gep(base, [offset])

        def slot(value, from_type, to_type):
            converted = context.cast(builder, value, from_type, to_type)
            return cgutils.alloca_once_value(builder, converted)

        def int_slot(value, from_type):
            return slot(value, from_type, types.int32)

        no_trans = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(8), ord("N")))
        fnty = ir.FunctionType(ir.VoidType(), [no_trans.type, no_trans.type]
                               + [int32.as_pointer()] * 3 + [real_ptr] * 2 + [int32.as_pointer()]
                               + [real_ptr, int32.as_pointer(), real_ptr, real_ptr,
                                  int32.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _GEMM_SYMBOLS[dtype])
        ts = signature.args
        builder.call(fn, [
            no_trans, no_trans,
            int_slot(n_, ts[1]), int_slot(m_, ts[0]), int_slot(k_, ts[2]),
            cgutils.alloca_once_value(builder, ir.Constant(real, 1.0)),
            data(b_, ts[6], b_off_), int_slot(ldb_, ts[8]),
            data(a_, ts[3], a_off_), int_slot(lda_, ts[5]),
            slot(beta_, ts[9], dtype),
            data(c_, ts[10], c_off_), int_slot(ldc_, ts[12]),
        ])
        return context.get_dummy_value()

    return sig, codegen


@njit_serial
def _direct_row(xp, w, bias, out, row_out, n, od, oh, in_d, in_h, in_w, in_c, out_w, out_c,
                k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups):
    """DIRECT path: one output row, inner loop over output channels (contiguous)."""
    o_per_group = out_c // groups
    for ow in range(out_w):
        acc = _u(row_out + ow * out_c)
        for o in range(out_c):
            out[_u(acc + o)] = bias[o]
        for kd in range(k_d):
            for kh in range(k_h):
                for kw in range(k_w):
                    pixel = (((n * in_d + od * sd + kd * dd) * in_h
                              + oh * sh + kh * dh) * in_w + ow * sw + kw * dw) * in_c
                    tap = ((kd * k_h + kh) * k_w + kw) * c_per_group * out_c
                    if o_per_group == 1:
                        # depthwise-like: output o reads input channel o * c_per_group + c
                        for c in range(c_per_group):
                            for o in range(out_c):
                                out[_u(acc + o)] += (xp[_u(pixel + o * c_per_group + c)]
                                                     * w[_u(tap + c * out_c + o)])
                    else:
                        for g in range(groups):
                            for c in range(c_per_group):
                                v = xp[_u(pixel + g * c_per_group + c)]
                                w_row = tap + c * out_c
                                for o in range(g * o_per_group, (g + 1) * o_per_group):
                                    out[_u(acc + o)] += v * w[_u(w_row + o)]


@njit_parallel
def _conv_direct(x, w, bias, out, dims, threads):
    (n_batch, in_d, in_h, in_w, in_c, out_d, out_h, out_w, out_c,
     k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups) = dims
    rows = n_batch * out_d * out_h
    # One task per output row (n, od, oh): each thread writes only its own rows.
    for row in prange(rows):
        n = row // (out_d * out_h)
        od = (row // out_h) % out_d
        oh = row % out_h
        _direct_row(x, w, bias, out, row * out_w * out_c, n, od, oh, in_d, in_h, in_w, in_c,
                    out_w, out_c, k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups)


# SMALL path: a block of `pixels` output pixels x `chunk` output channels is accumulated
# in a stack buffer that LLVM promotes to vector registers (an alloca cannot alias the
# input or weights, and every index is constant once the pixel loops are fully unrolled:
# pixels and chunk are literals at each call site, so each inlined copy is specialised).
# Block shapes (one thread, float32, against a per-core FMA peak of ~115 GFLOP/s):
# - NARROW, 4 pixels x 16 channels: two AVX2 vectors per pixel, 8 accumulators (6
#   pixels measured 1.8x slower on AVX2: LLVM unrolls the reduction and spills). In
#   float64 it spills a little, but a 64-byte chunk of 8 doubles made LLVM vectorise the
#   reduction loop instead (measured 3x slower).
# - WIDE, 8 pixels x 16 channels, float32 on AVX-512 targets: one zmm per pixel, again
#   8 accumulators, the input value broadcast from memory inside the FMA. Measured on
#   Zen 4, one thread, against NARROW: 64->64 3x3 108-111 vs 98-100 GFLOP/s, conv3d
#   32->32 3^3 113 vs 97, conv1d 64->64 105-113 vs 94-98, 3->16 5x5 112 vs 104-106,
#   3->64 3x3 (27-long reduction) 80-100 vs 104-106. 12 x 16 spilled (2-3x slower);
#   8 x 32 (16 accumulators) was 0-40% slower; in float64 (16 accumulators) WIDE was
#   10-45% slower, so float64 stays NARROW.
_NARROW_PIXELS, _NARROW_CHUNK = 4, 16
_WIDE_PIXELS, _WIDE_CHUNK = 8, 16
# Both shapes leave the same half chunk and leftovers (_small_row).
assert _NARROW_CHUNK == _WIDE_CHUNK
_HALF_CHUNK = _WIDE_CHUNK // 2
# Block width of the half chunk (8 channels, also the leftover 1-7 zero-padded): with 4 or 8 pixels the block is small
# enough for LLVM to unroll its channel loop fully, after which it stays scalar or
# vectorises the tap loop with gathers (3->8 3x3 16^2, float32, one thread: 15.9 us
# against 3.2 us for 3->16); 16 pixels keep one vector per pixel.
_HALF_PIXELS = 16
_SMALL_ACC = max(_NARROW_PIXELS * _NARROW_CHUNK, _WIDE_PIXELS * _WIDE_CHUNK,
                 _HALF_PIXELS * _HALF_CHUNK)
_MAX_PIXELS = max(_NARROW_PIXELS, _WIDE_PIXELS, _HALF_PIXELS)


def _target_has_avx512():
    """Whether numba compiles for a CPU with AVX-512 (its 32 vector registers)."""
    name = numba.config.CPU_NAME
    if name and name != "host":  # a fixed target (e.g. portable caches): trust its features
        return "+avx512f" in (numba.config.CPU_FEATURES or "")
    try:
        return bool(llvm.get_host_cpu_features().get("avx512f", False))
    except Exception:  # feature query unavailable: keep the shape that suits every x86-64
        return False


# Whether conv_ndhwc asks for the WIDE block in float32; both shapes are compiled into
# _conv_small (the tests switch this to run each). The DEPTHWISE block width follows it
# once, at import (_DW_PIXELS, a compile-time constant).
SMALL_WIDE = _target_has_avx512()


def _stack_buffer(size):
    """An intrinsic: pointer to an uninitialised stack buffer of `size` elements of its
    argument's dtype."""
    @intrinsic
    def stack_buffer(typingctx, like):
        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_data_type(like.dtype), size=size)
        return types.CPointer(like.dtype)(like), codegen
    return stack_buffer


_stack_accumulators = _stack_buffer(_SMALL_ACC)
_stack_inputs = _stack_buffer(_MAX_PIXELS)


def _prefetch_intrinsic(write):
    """An intrinsic: prefetch the cache line of array[index] for writing or reading
    (prefetchw / prefetcht0; never faults, so index may lie past the end)."""
    @intrinsic
    def prefetch(typingctx, array, index):
        def codegen(context, builder, signature, args):
            array_type, index_type = signature.args
            base = context.make_array(array_type)(context, builder, args[0]).data
            offset = context.cast(builder, args[1], index_type, types.int64)
            ptr = builder.bitcast(builder.gep(base, [offset]), ir.IntType(8).as_pointer())
            int32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, int32, int32, int32]),
                "llvm.prefetch.p0i8")
            # read/write, keep in all cache levels, data cache
            builder.call(fn, [ptr, ir.Constant(int32, int(write)), ir.Constant(int32, 3),
                              ir.Constant(int32, 1)])
            return context.get_dummy_value()
        return types.void(array, index), codegen
    return prefetch


_prefetch_for_write = _prefetch_intrinsic(True)


@njit_serial(inline="always")
def _small_block(x, w, bias, out, koff, x_pix, pixel_step, out_pix, out_c, oc, pixels, chunk):
    """out[`pixels` pixels from out_pix, oc .. oc+chunk]
    = bias + sum_k x[pixel + koff[k]] * w[k]."""
    _block(x, w, out_c, oc, bias, out, koff, x_pix, pixel_step, out_pix, out_c, oc, pixels,
           pixels, chunk, chunk)


@njit_serial(inline="always")
def _block(x, w, w_stride, w_oc, bias, out, koff, x_pix, pixel_step, out_pix, out_c, oc,
           pixels, valid, chunk, stored):
    """out[`valid` pixels from out_pix, oc .. oc+stored] = the first `stored` of `chunk`
    channels computed from weight columns w_oc .. w_oc+chunk (rows w_stride apart) and
    bias[w_oc ..]. The block computes `pixels` pixels (a constant) whatever `valid`
    (1 .. pixels): the ones past `valid` repeat the last valid pixel and are not stored."""
    # The next block along the row writes these lines: fetch them while this one
    # computes (3->64 3x3 N4 128^2, one thread: 8x16 blocks 2.1-2.2 vs
    # 2.6-3.1 ms without; the 8 stores of a block otherwise wait on 8 line fills at once).
    for p in range(pixels):
        _prefetch_for_write(out, out_pix + (pixels + p) * out_c + oc)
    acc = _accumulate(x, w, w_stride, w_oc, bias, out, koff, x_pix, pixel_step, pixels, valid,
                      chunk)
    for p in range(pixels):
        if p < valid:
            for o in range(stored):
                out[_u(out_pix + p * out_c + oc + o)] = acc[p * chunk + o]


@njit_serial(inline="always")
def _first_block(x, w, bias, out, koff, x_pix, pixel_step, out_pix, plane, out_c, oc):
    """A wide block (8 pixels x 16 channels from oc) of channels-first output: out_pix is
    the block's first pixel in channel 0's plane, the planes `plane` apart. Its two 8 x 8
    halves are transposed in registers straight into the planes (3->32 2x2 s2 N32 128^2,
    2 threads: 1.15 ms, against 1.58 through a row tile and a transpose, _conv_small's
    other way; 3->64 3x3: 12.9 against 16.5 ms)."""
    acc = _accumulate(x, w, out_c, oc, bias, out, koff, x_pix, pixel_step, _WIDE_PIXELS,
                      _WIDE_PIXELS, _WIDE_CHUNK)
    _transpose8(acc, 0, _WIDE_CHUNK, out, out_pix + oc * plane, plane)
    _transpose8(acc, 8, _WIDE_CHUNK, out, out_pix + (oc + 8) * plane, plane)


@njit_serial(inline="always")
def _accumulate(x, w, w_stride, w_oc, bias, out, koff, x_pix, pixel_step, pixels, valid,
                chunk):
    """A block's accumulators (see _block), pixel-major: acc[p * chunk + o]."""
    acc = carray(_stack_accumulators(out), (_SMALL_ACC,))
    inputs = carray(_stack_inputs(out), (_MAX_PIXELS,))
    # Pixel loops innermost: LLVM unrolls them fully and vectorises the channel loop
    # (with the channel loop innermost it unrolled that one instead and left the code
    # scalar: 13x slower, measured).
    for o in range(chunk):
        v = bias[w_oc + o]
        for p in range(pixels):
            acc[p * chunk + o] = v
    for k in range(koff.shape[0]):
        w_row = k * w_stride + w_oc
        xk = x_pix + koff[k]
        for p in range(pixels):
            inputs[p] = x[_u(xk + min(p, valid - 1) * pixel_step)]
        # one input value per pixel, broadcast against the weight row
        for o in range(chunk):
            wv = w[_u(w_row + o)]
            for p in range(pixels):
                acc[p * chunk + o] += inputs[p] * wv
    return acc


@njit_serial(inline="always")
def _small_row(x, w, bias, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w,
               out_c, oc_begin, width, group, pixels, chunk):
    """Channels oc_begin .. oc_begin+width of one channels-last output row (all out_c of
    them, or one group's), from weight columns and biases oc_begin..: blocks of `pixels`
    pixels x chunk channels, then _HALF_PIXELS pixels x chunk // 2 channels, then the
    channels those leave over (_small_rest_channels, on `group`'s padded weights). The
    pixels past the last full block of each go through one block of the same shape that
    stores only them (one-pixel blocks instead, whose chains of one FMA per tap wait on
    latency: conv3d 4->4 3^3 on 4x8x8, 59 vs 25 us)."""
    blocked_w = out_w - out_w % pixels
    oc_rest = oc_begin + width - width % chunk
    oc_end = oc_begin + width
    half = oc_end - oc_rest >= chunk // 2
    for ow in range(0, blocked_w, pixels):
        for oc in range(oc_begin, oc_rest, chunk):
            _small_block(x, w, bias, out, koff, x_row + ow * pixel_step, pixel_step,
                         out_row + ow * out_c, out_c, oc, pixels, chunk)
    if blocked_w < out_w:
        for oc in range(oc_begin, oc_rest, chunk):
            _block(x, w, out_c, oc, bias, out, koff, x_row + blocked_w * pixel_step,
                   pixel_step, out_row + blocked_w * out_c, out_c, oc, pixels,
                   out_w - blocked_w, chunk, chunk)
    if half:
        half_w = out_w - out_w % _HALF_PIXELS
        for ow in range(0, half_w, _HALF_PIXELS):
            _small_block(x, w, bias, out, koff, x_row + ow * pixel_step, pixel_step,
                         out_row + ow * out_c, out_c, oc_rest, _HALF_PIXELS, chunk // 2)
        if half_w < out_w:
            _block(x, w, out_c, oc_rest, bias, out, koff, x_row + half_w * pixel_step,
                   pixel_step, out_row + half_w * out_c, out_c, oc_rest, _HALF_PIXELS,
                   out_w - half_w, chunk // 2, chunk // 2)
        oc_rest += chunk // 2
    if oc_rest < oc_end:
        _small_rest_channels(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w,
                             out_c, oc_rest, oc_end, group)


@njit_serial
def _padded_rest_weights(w, bias, out_c, groups, lanes):
    """Each group's last (out_c / groups) % lanes weight columns and biases, zero-padded to
    `lanes` columns ((k_total, groups * lanes) weights, group g's at column g * lanes):
    the leftover channels run as a half chunk (_small_rest_channels)."""
    o_per_group = out_c // groups
    channels = o_per_group % lanes
    k_total = w.shape[0] // out_c
    stride = groups * lanes
    w_pad = np.zeros(k_total * stride if channels else 0, w.dtype)
    b_pad = np.zeros(stride, bias.dtype)
    if channels:
        for g in range(groups):
            first = (g + 1) * o_per_group - channels
            for k in range(k_total):
                for o in range(channels):
                    w_pad[k * stride + g * lanes + o] = w[k * out_c + first + o]
            for o in range(channels):
                b_pad[g * lanes + o] = bias[first + o]
    return w_pad, b_pad


@njit_serial(inline="always")
def _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c, oc,
              pad_stride, pad_oc, lanes, channels):
    """Channels oc .. oc+channels of a row as `lanes` zero-padded ones (padded weight
    columns pad_oc.., rows pad_stride apart), _HALF_PIXELS-pixel blocks and one partial
    block; only the real channels and pixels are stored."""
    blocked_w = out_w - out_w % _HALF_PIXELS
    for ow in range(0, blocked_w, _HALF_PIXELS):
        _block(x, w_pad, pad_stride, pad_oc, b_pad, out, koff, x_row + ow * pixel_step,
               pixel_step, out_row + ow * out_c, out_c, oc, _HALF_PIXELS, _HALF_PIXELS,
               lanes, channels)
    if blocked_w < out_w:
        _block(x, w_pad, pad_stride, pad_oc, b_pad, out, koff, x_row + blocked_w * pixel_step,
               pixel_step, out_row + blocked_w * out_c, out_c, oc, _HALF_PIXELS,
               out_w - blocked_w, lanes, channels)


@njit_serial
def _small_rest_channels(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w,
                         out_c, oc_begin, oc_end, group):
    """Channels oc_begin .. oc_end (1 to 7 of them) of a row, computed as a half chunk of
    8 on zero-padded weights (the FMAs on padding cost less than narrower blocks: scalar
    channel-major 8-pixel blocks measured 2-3x slower, 3->4 and 3->13 3x3 16^2). Each
    count gets its own inlined copy of the stores, the count a constant. Not inlined into
    _conv_small: one compiled copy serves both block shapes."""
    channels = oc_end - oc_begin
    pad_stride = b_pad.shape[0]  # groups * _HALF_CHUNK
    pad_oc = group * _HALF_CHUNK
    if channels == 1:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 1)
    elif channels == 2:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 2)
    elif channels == 3:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 3)
    elif channels == 4:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 4)
    elif channels == 5:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 5)
    elif channels == 6:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 6)
    elif channels == 7:
        _rest_row(x, w_pad, b_pad, out, koff, x_row, pixel_step, out_row, out_w, out_c,
                  oc_begin, pad_stride, pad_oc, _HALF_CHUNK, 7)
    else:  # never: the blocks leave fewer than half a chunk
        raise ValueError("_small_rest_channels: 1 to 7 channels")


# Lane masks of an 8 x 8 transpose in three rounds of two-input shuffles: pairs of rows
# interleaved, then pairs of pairs, then the 4-lane halves.
_PAIR_LO, _PAIR_HI = (0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)
_QUAD_LO, _QUAD_HI = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)
_HALF_LO, _HALF_HI = (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)


@intrinsic
def _transpose8(typingctx, src, src_off, src_stride, dst, dst_off, dst_stride):
    """dst[dst_off + j * dst_stride + i] = src[src_off + i * src_stride + j] for i, j < 8:
    eight vector loads, 24 register shuffles, eight vector stores (LLVM leaves the
    equivalent scalar loop as 64 scalar loads and stores)."""
    sig = types.void(src, src_off, src_stride, dst, dst_off, dst_stride)

    def codegen(context, builder, signature, args):
        ts = signature.args
        element = context.get_data_type(ts[0].dtype)
        vector = ir.VectorType(element, 8)
        index = ir.IntType(64)

        def address(arg, i):
            """Vector pointer to row i of argument group arg (0: src, 3: dst)."""
            base = context.make_array(ts[arg])(context, builder, args[arg]).data
            offset = context.cast(builder, args[arg + 1], ts[arg + 1], types.int64)
            stride = context.cast(builder, args[arg + 2], ts[arg + 2], types.int64)
            start = builder.add(offset, builder.mul(stride, ir.Constant(index, i)))
            return builder.bitcast(builder.gep(base, [start]), vector.as_pointer())

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8),
                                                            list(mask)))

        rows = []
        for i in range(8):
            load = builder.load(address(0, i))
            load.align = 1  # unaligned: rows start at any element
            rows.append(load)
        pairs = []
        for i in range(0, 8, 2):
            pairs += [shuffle(rows[i], rows[i + 1], mask) for mask in (_PAIR_LO, _PAIR_HI)]
        quads = [None] * 8
        for i in (0, 4):
            quads[i] = shuffle(pairs[i], pairs[i + 2], _QUAD_LO)
            quads[i + 1] = shuffle(pairs[i], pairs[i + 2], _QUAD_HI)
            quads[i + 2] = shuffle(pairs[i + 1], pairs[i + 3], _QUAD_LO)
            quads[i + 3] = shuffle(pairs[i + 1], pairs[i + 3], _QUAD_HI)
        for j in range(4):
            for col, mask in ((j, _HALF_LO), (j + 4, _HALF_HI)):
                store = builder.store(shuffle(quads[j], quads[j + 4], mask), address(3, col))
                store.align = 1
        return context.get_dummy_value()

    return sig, codegen


@njit_serial
def _transpose(src, src_off, src_stride, dst, dst_off, dst_stride, rows, cols):
    """dst[dst_off + j * dst_stride + i] = src[src_off + i * src_stride + j] for i < rows,
    j < cols, in 8 x 8 register transposes. A dimension that is not a multiple of 8 ends
    with a tile moved back to end at its end (it rewrites a few values with the same
    values); only dimensions shorter than 8 are copied value by value. The C kernel's
    TRANSPOSE_FN (kernels/conv_small_body.h) is the same with vector-wide tiles."""
    if rows < 8 or cols < 8:
        for j in range(cols):
            for i in range(rows):
                dst[_u(dst_off + j * dst_stride + i)] = src[_u(src_off + i * src_stride + j)]
        return
    # the side whose rows are far apart (channel planes) is walked along its rows in the
    # inner loop: each of the 8 loads or stores then streams through one plane (the
    # hardware prefetchers follow it), rather than all planes stepping together
    rows_outer = src_stride > dst_stride
    outer_n = rows if rows_outer else cols
    inner_n = cols if rows_outer else rows
    for a in range((outer_n + 7) // 8):
        a0 = min(a * 8, outer_n - 8)
        for b in range((inner_n + 7) // 8):
            b0 = min(b * 8, inner_n - 8)
            i0 = a0 if rows_outer else b0
            j0 = b0 if rows_outer else a0
            _transpose8(src, src_off + i0 * src_stride + j0, src_stride,
                        dst, dst_off + j0 * dst_stride + i0, dst_stride)


@njit_parallel
def _conv_small(x, w, bias, out, koff, dims, in_steps, channels_first, first_blocks, tile_w,
                wide, threads):
    (n_batch, in_d, in_h, in_w, in_c, out_d, out_h, out_w, out_c,
     k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups) = dims
    in_pixel, in_channel = in_steps  # of the input: channels-last or channels-first
    pixel_step = sw * in_pixel
    plane = out_d * out_h * out_w
    rows = n_batch * out_d * out_h
    o_per_group = out_c // groups
    w_pad, b_pad = _padded_rest_weights(w, bias, out_c, groups, _HALF_CHUNK)
    # Channels-first output with first_blocks (the wide block shape, a short reduction and
    # whole 16-channel chunks per group): each row's whole 8-pixel blocks go straight
    # into the channel planes (_first_block), its last out_w % 8 pixels as below.
    first_w = out_w - out_w % _WIDE_PIXELS if first_blocks else 0
    # Output rows (n, od, oh), one run of consecutive rows per thread (each thread owns
    # one tile buffer).
    for chunk in prange(threads):
        # Channels-first output: each row is computed channels-last, tile_w pixels at a
        # time, into this L1-sized buffer and transposed out 8 x 8 at a time (storing
        # blocks straight into the channels-first output, 16 runs of 4-8 values each in
        # 16 planes a power of two apart, measured up to 1.9x slower on 3->64 3x3 and
        # 3->32 2x2 s2: scalar lane extracts, and the planes evict each other in L1; a
        # scalar transpose loop 5-20% slower than the 8 x 8 one). A tile rather than the
        # whole row: a conv1d row of 1024 pixels x 64 channels would not stay in L1.
        buf = np.empty(tile_w * out_c if channels_first else 0, out.dtype)
        dst = buf if channels_first else out
        for row in range(chunk * rows // threads, (chunk + 1) * rows // threads):
            n = row // (out_d * out_h)
            od = (row // out_h) % out_d
            oh = row % out_h
            x_row = n * in_d * in_h * in_w * in_c + (od * sd * in_h + oh * sh) * in_w * in_pixel
            if not channels_first:
                tile_w = out_w
            out_row = n * out_c * plane + (row - n * out_d * out_h) * out_w
            for ow in range(0, first_w, _WIDE_PIXELS):
                for g in range(groups):
                    for oc in range(g * o_per_group, (g + 1) * o_per_group, _WIDE_CHUNK):
                        _first_block(x, w, bias, out, koff,
                                     x_row + ow * pixel_step + g * c_per_group * in_channel,
                                     pixel_step, out_row + ow, plane, out_c, oc)
            for p0 in range(first_w, out_w, tile_w):
                pixels = min(tile_w, out_w - p0)
                x_tile = x_row + p0 * pixel_step
                dst_row = 0 if channels_first else row * out_w * out_c
                # one pass per group over its input channels, weight columns and output
                # channels; each branch inlines its own copy of the row, its block shape as
                # constants (a third copy for groups == 1, offsets constant, won back 3-5%
                # of a 0.27 ms 3->32 2x2 s2 call on one thread but doubled the compile
                # time, 16 -> 30 s)
                if wide:
                    for g in range(groups):
                        _small_row(x, w, bias, w_pad, b_pad, dst, koff,
                                   x_tile + g * c_per_group * in_channel, pixel_step, dst_row,
                                   pixels, out_c, g * o_per_group, o_per_group, g,
                                   _WIDE_PIXELS, _WIDE_CHUNK)
                else:
                    for g in range(groups):
                        _small_row(x, w, bias, w_pad, b_pad, dst, koff,
                                   x_tile + g * c_per_group * in_channel, pixel_step, dst_row,
                                   pixels, out_c, g * o_per_group, o_per_group, g,
                                   _NARROW_PIXELS, _NARROW_CHUNK)
                if channels_first:
                    _transpose(buf, 0, out_c, out, out_row + p0, plane, pixels, out_c)


@njit_serial
def _shifted_tile(x, w, bias, out, buf, x_plane, out_plane, p0, rows, in_h, in_w, in_c,
                  out_h, out_w, out_c, k_d, k_h, k_w, c_per_group, dd, dh, dw, groups):
    """SHIFTED path: grid positions p0 .. p0+rows of one (n, od) plane (flat offsets
    x_plane / out_plane). Grid position p is (oh, ow) = divmod(p, in_w); for tap
    (kd, kh, kw) its input pixel is the flattened padded grid shifted by
    ((kd*dd)*in_h + kh*dh)*in_w + kw*dw, so each tap is one GEMM on a contiguous run of
    pixels (lda = in_c)."""
    o_per_group = out_c // groups
    for kd in range(k_d):
        for kh in range(k_h):
            for kw in range(k_w):
                tap = (kd * k_h + kh) * k_w + kw
                a_off = x_plane + (((kd * dd) * in_h + kh * dh) * in_w + kw * dw + p0) * in_c
                beta = 0.0 if tap == 0 else 1.0
                for g in range(groups):
                    _gemm(rows, o_per_group, c_per_group, x, a_off + g * c_per_group, in_c,
                          w, tap * c_per_group * out_c + g * o_per_group, out_c,
                          beta, buf, g * o_per_group, out_c)
    # Copy the valid grid positions (not the padding columns) out, adding the bias.
    for p in range(p0, p0 + rows):
        oh = p // in_w
        ow = p - oh * in_w
        if ow < out_w:
            dst = out_plane + (oh * out_w + ow) * out_c
            src = (p - p0) * out_c
            for o in range(out_c):
                out[_u(dst + o)] = buf[_u(src + o)] + bias[o]


@njit_parallel
def _conv_shifted(x, w, bias, out, dims, tile_rows, threads):
    (n_batch, in_d, in_h, in_w, in_c, out_d, out_h, out_w, out_c,
     k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups) = dims
    # Tiles of grid positions inside one (n, od) plane; the last output pixel of a plane
    # is at grid position (out_h - 1) * in_w + out_w - 1.
    plane_len = (out_h - 1) * in_w + out_w
    tiles_per_plane = (plane_len + tile_rows - 1) // tile_rows
    n_tiles = n_batch * out_d * tiles_per_plane
    # One chunk of consecutive tiles per thread, each with its own tile buffer.
    for chunk in prange(threads):
        buf = np.empty(tile_rows * out_c, out.dtype)
        for tile in range(chunk * n_tiles // threads, (chunk + 1) * n_tiles // threads):
            plane = tile // tiles_per_plane
            p0 = (tile % tiles_per_plane) * tile_rows
            n = plane // out_d
            od = plane % out_d
            _shifted_tile(x, w, bias, out, buf, (n * in_d + od) * in_h * in_w * in_c,
                          plane * out_h * out_w * out_c, p0, min(tile_rows, plane_len - p0),
                          in_h, in_w, in_c, out_h, out_w, out_c, k_d, k_h, k_w,
                          c_per_group, dd, dh, dw, groups)


@njit_serial
def _im2col_tile(x, w, bias, out, patches, q0, rows, in_d, in_h, in_w, in_c, out_d, out_h,
                 out_w, out_c, k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups):
    """IM2COL path: output pixels q0 .. q0+rows (flat over n, od, oh, ow), one group at a
    time: gather their (tap, channel) patches, then one GEMM straight into out."""
    o_per_group = out_c // groups
    k_total = k_d * k_h * k_w * c_per_group
    # With groups == 1 and dw == 1 a kernel row's k_w taps are one contiguous run of
    # k_w * in_c input values: copy it in one loop.
    one_run = groups == 1 and dw == 1
    runs = 1 if one_run else k_w
    run_len = k_w * c_per_group if one_run else c_per_group
    for q in range(q0, q0 + rows):
        for o in range(out_c):
            out[_u(q * out_c + o)] = bias[o]
    for g in range(groups):
        # (n, od, oh, ow) of pixel q0, then stepped along (no divisions per pixel)
        ow = q0 % out_w
        rest = q0 // out_w
        oh = rest % out_h
        rest = rest // out_h
        od = rest % out_d
        n = rest // out_d
        for q in range(q0, q0 + rows):
            row = (q - q0) * k_total
            for kd in range(k_d):
                for kh in range(k_h):
                    pixel = ((((n * in_d + od * sd + kd * dd) * in_h + oh * sh + kh * dh)
                              * in_w + ow * sw) * in_c + g * c_per_group)
                    for kw in range(runs):
                        src = pixel + kw * dw * in_c
                        for c in range(run_len):
                            patches[_u(row + c)] = x[_u(src + c)]
                        row += run_len
            ow += 1
            if ow == out_w:
                ow = 0
                oh += 1
                if oh == out_h:
                    oh = 0
                    od += 1
                    if od == out_d:
                        od = 0
                        n += 1
        _gemm(rows, o_per_group, k_total, patches, 0, k_total, w, g * o_per_group, out_c,
              1.0, out, q0 * out_c + g * o_per_group, out_c)


@njit_parallel
def _conv_im2col(x, w, bias, out, dims, tile_rows, threads):
    (n_batch, in_d, in_h, in_w, in_c, out_d, out_h, out_w, out_c,
     k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups) = dims
    pixels = n_batch * out_d * out_h * out_w
    n_tiles = (pixels + tile_rows - 1) // tile_rows
    k_total = k_d * k_h * k_w * c_per_group
    for chunk in prange(threads):
        patches = np.empty(tile_rows * k_total, out.dtype)
        for tile in range(chunk * n_tiles // threads, (chunk + 1) * n_tiles // threads):
            q0 = tile * tile_rows
            _im2col_tile(x, w, bias, out, patches, q0, min(tile_rows, pixels - q0),
                         in_d, in_h, in_w, in_c, out_d, out_h, out_w, out_c, k_d, k_h, k_w,
                         c_per_group, sd, sh, sw, dd, dh, dw, groups)


# DEPTHWISE path (groups == C_in == C_out): output channel c reads input channel c only.
# Blocks of _DW_PIXELS pixels x _NARROW_CHUNK channels are summed over a list of taps in
# a stack buffer promoted to registers (as the SMALL blocks above, but each multiply-add
# reads an input vector along the channels instead of broadcasting one value); the
# channels the blocks leave go through a plain loop. 8 pixels where AVX-512's 32 vector
# registers hold them, as the C kernel's DW_P (8x56x56x64 float32, 2 threads, p10 of 3
# alternations: 0.40-0.41 ms against 0.46-0.47 with 4 pixels; float64 within the noise).
_DW_PIXELS = _WIDE_PIXELS if SMALL_WIDE else _NARROW_PIXELS


@njit_serial(inline="always")
def _depthwise_block(x, w, bias, out, toff, wtap, n_taps, x_pix, pixel_step, out_pix,
                     channels, c0, valid):
    """`valid` (1 .. _DW_PIXELS) pixels x _NARROW_CHUNK channels from c0. The block always
    computes _DW_PIXELS pixels, the ones past `valid` repeating the last valid one, and
    stores the valid ones: with fewer pixels the pixel loop no longer is the inner one
    LLVM unrolls, and it leaves the channel loop scalar (one-pixel blocks: 2 leftover
    pixels of each 54-pixel row of 8x56x56x64 took 0.15 ms more on 2 threads)."""
    chunk = _NARROW_CHUNK
    acc = carray(_stack_accumulators(out), (_SMALL_ACC,))
    for o in range(chunk):
        v = bias[c0 + o]
        for p in range(_DW_PIXELS):
            acc[p * chunk + o] = v
    for t in range(n_taps):
        xt = x_pix + toff[t] + c0
        wt = wtap[t] * channels + c0
        for o in range(chunk):
            wv = w[_u(wt + o)]
            for p in range(_DW_PIXELS):
                acc[p * chunk + o] += x[_u(xt + min(p, valid - 1) * pixel_step + o)] * wv
    for p in range(_DW_PIXELS):
        if p < valid:
            for o in range(chunk):
                out[_u(out_pix + p * channels + c0 + o)] = acc[p * chunk + o]


@njit_serial
def _depthwise_plain(x, w, bias, out, x_row, out_row, ow0, ow1, c0, c1, channels,
                     pixel_step, toff, wtap, n_taps):
    """Pixels ow0..ow1-1, channels c0..c1-1 of a depthwise output row, one at a time."""
    for ow in range(ow0, ow1):
        o = out_row + ow * channels
        xb = x_row + ow * pixel_step
        for c in range(c0, c1):
            v = bias[c]
            for t in range(n_taps):
                v += x[_u(xb + toff[t] + c)] * w[_u(wtap[t] * channels + c)]
            out[_u(o + c)] = v


@njit_serial
def _depthwise_row(x, w, bias, out, x_row, out_row, out_w, channels, pixel_step, toff, wtap,
                   n_taps):
    """out_w pixels from out_row over the n_taps taps listed (toff: input offsets from a
    pixel's first element, wtap: weight rows; see kernels/conv_small_body.h)."""
    blocked_c = channels - channels % _NARROW_CHUNK
    for ow in range(0, out_w, _DW_PIXELS):
        for c0 in range(0, blocked_c, _NARROW_CHUNK):
            _depthwise_block(x, w, bias, out, toff, wtap, n_taps, x_row + ow * pixel_step,
                             pixel_step, out_row + ow * channels, channels, c0,
                             min(_DW_PIXELS, out_w - ow))
    _depthwise_plain(x, w, bias, out, x_row, out_row, 0, out_w, blocked_c, channels,
                     channels, pixel_step, toff, wtap, n_taps)


@njit_parallel
def _conv_depthwise(x, w, bias, out, dims, columns, edges, tap_counts, toff, wtap, threads):
    """The DEPTHWISE path: for each output row, the columns whose taps all lie inside the
    input in one _depthwise_row call, each edge column in one of its own, over the taps
    _conv_plan.depthwise_taps lists (all, or those outside the padding)."""
    (n_batch, in_d, in_h, in_w, in_c, out_d, out_h, out_w, out_c,
     k_d, k_h, k_w, c_per_group, sd, sh, sw, dd, dh, dw, groups) = dims
    ow_lo, ow_hi = columns
    # One task per output row (n, od, oh): each thread writes only its own rows.
    for row in prange(n_batch * out_d * out_h):
        n = row // (out_d * out_h)
        r = row - n * out_d * out_h
        x_img = n * in_d * in_h * in_w * in_c
        out_row = row * out_w * out_c
        if ow_hi > ow_lo:
            _depthwise_row(x, w, bias, out, x_img, out_row + ow_lo * out_c, ow_hi - ow_lo,
                           out_c, sw * in_c, toff[r, 0], wtap[r, 0], tap_counts[r, 0])
        for e in range(edges.shape[0]):
            _depthwise_row(x, w, bias, out, x_img, out_row + edges[e] * out_c, 1, out_c, 0,
                           toff[r, 1 + e], wtap[r, 1 + e], tap_counts[r, 1 + e])


def _channels_last_shape(shape):
    """(N, C, D, H, W) -> (N, D, H, W, C)."""
    return shape[:1] + shape[2:] + shape[1:2]


def conv_ndhwc(xp, w, bias, out, stride, dilation, groups, num_threads, channels_first_out=False,
               channels_first_in=False, pads=(0, 0, 0)):
    """out[n, od, oh, ow, :] = bias + sum over taps and channels; xp is already padded,
    but by pads = (front, top, left) on the DEPTHWISE path, whose kernel skips the taps in
    that padding. channels_first_out: out is (N, C_out, D, H, W) instead;
    channels_first_in: xp is (N, C_in, D, H, W) (SMALL path only for both, see
    conv.py)."""
    path, threads, limit_blas, plan_args = _call_plan(
        xp.shape, w.shape, out.shape, tuple(stride), tuple(dilation), groups, num_threads,
        out.itemsize, channels_first_out, channels_first_in, tuple(pads), SMALL_WIDE)
    arrays = (xp.reshape(-1), w.reshape(-1), bias, out.reshape(-1))
    kernel = _PATH_KERNELS[path]
    if path in _conv_plan.GEMM_PATHS:
        _register_blas()
        with _conv_plan.blas_single_threaded(limit_blas):
            run_parallel(kernel, threads, *arrays, *plan_args)
    else:
        run_parallel(kernel, threads, *arrays, *plan_args)


@_conv_plan.cached_plan
def _call_plan(x_shape, w_shape, out_shape, stride, dilation, groups, num_threads, itemsize,
               channels_first_out, channels_first_in, pads, small_wide):
    """(path, threads, limit_blas, the path kernel's arguments after the four arrays):
    everything conv_ndhwc derives from the shapes and scalar arguments, cached (a training
    loop repeats its shapes; deriving it per call was 2.9 us of a 12 us small conv1d)."""
    # the plan and the kernels' dims take the channels-last shape (N, D, H, W, C)
    shape = _channels_last_shape(out_shape) if channels_first_out else out_shape
    if channels_first_in:
        x_shape = _channels_last_shape(x_shape)
    path, threads, tile_rows, limit_blas = _conv_plan.choose(shape, w_shape, stride, groups,
                                                             num_threads, itemsize)
    if (channels_first_out or channels_first_in) and path != _conv_plan.SMALL:
        raise ValueError("channels-first input or output: only the SMALL path reads or "
                         "writes that layout")
    if any(pads) and path != _conv_plan.DEPTHWISE:
        raise ValueError("padding in the kernel: only the DEPTHWISE path skips padded taps")
    # the kernels' dims: the shapes (channels-last), stride, dilation and groups
    dims = x_shape + shape[1:] + w_shape[:4] + stride + dilation + (groups,)
    if path == _conv_plan.DIRECT:
        return path, threads, limit_blas, (dims, threads)
    if path == _conv_plan.DEPTHWISE:
        ow_lo, ow_hi, *taps = _conv_plan.depthwise_taps(x_shape, w_shape, shape, stride,
                                                        dilation, pads)
        return path, threads, limit_blas, (dims, (ow_lo, ow_hi), *taps, threads)
    if path == _conv_plan.SMALL:
        koff = _conv_plan.reduction_offsets(x_shape, w_shape, dilation, channels_first_in)
        in_steps = _conv_plan.input_steps(x_shape, channels_first_in)
        wide = small_wide and itemsize == 4
        # (tile_w: channels-first rows only)
        tile_w = (_conv_plan.first_tile_pixels(shape[3], shape[4], itemsize)
                  if channels_first_out else 0)
        # channels-first output: wide blocks straight into the planes for short reductions
        # (as the C kernel's; longer ones go through row tiles, see _conv_plan)
        first_blocks = (channels_first_out and wide and (shape[4] // groups) % _WIDE_CHUNK == 0
                        and koff.size < _conv_plan.FIRST_TILE_MIN_REDUCTION)
        return path, threads, limit_blas, (koff, dims, in_steps, channels_first_out,
                                           first_blocks, tile_w, wide, threads)
    return path, threads, limit_blas, (dims, tile_rows, threads)


_PATH_KERNELS = {_conv_plan.DIRECT: _conv_direct, _conv_plan.DEPTHWISE: _conv_depthwise,
                 _conv_plan.SMALL: _conv_small, _conv_plan.SHIFTED: _conv_shifted,
                 _conv_plan.IM2COL: _conv_im2col}


# Layout changes for channels-first calls. NumPy's copy of a moveaxis view reads (or
# writes) with a stride of a whole channel plane, one TLB miss per value: 1.6-1.9 ms for
# an 8x64x56x56 float32 batch, ~10x a plain copy. These work on one (n, d, h) input row or
# one block of pixels at a time, so both sides stay in L1, and run on all threads.
PIXEL_BLOCK = 64  # pixels per task of to_channels_first (64 * C values in L1)


@njit_parallel
def _to_channels_last(x, out, od, oh, ow):
    n_batch, channels, depth, height, width = x.shape
    padded_d, padded_h, padded_w = out.shape[1:4]
    plane = depth * height * width
    src, dst = x.reshape(x.size), out.reshape(out.size)
    # one (n, d, h) row per task: a (channels x width) matrix, rows a plane apart,
    # transposed into the (width x channels) row of out
    for row in prange(n_batch * depth * height):
        n = row // (depth * height)
        d = (row // height) % depth
        h = row % height
        _transpose(src, n * channels * plane + (d * height + h) * width, plane, dst,
                   (((n * padded_d + d + od) * padded_h + h + oh) * padded_w + ow) * channels,
                   channels, channels, width)


@njit_parallel
def _to_channels_first(y, out):
    n_batch, pixels, channels = y.shape
    blocks = (pixels + PIXEL_BLOCK - 1) // PIXEL_BLOCK
    src, dst = y.reshape(y.size), out.reshape(out.size)
    for task in prange(n_batch * blocks):
        n = task // blocks
        s0 = (task % blocks) * PIXEL_BLOCK
        _transpose(src, (n * pixels + s0) * channels, channels, dst, n * channels * pixels + s0,
                   pixels, min(PIXEL_BLOCK, pixels - s0), channels)


def to_channels_last(x, out, offsets, num_threads):
    """out[n, d + od, h + oh, w + ow, c] = x[n, c, d, h, w]; the rest of out (the
    padding) is left as it is. offsets = (od, oh, ow), the leading padding."""
    run_parallel(_to_channels_last, num_threads, x, out, *offsets)


def to_channels_first(y, out, num_threads):
    """out[n, c, s] = y[n, s, c]: a channels-last result (pixels s) to channels-first."""
    run_parallel(_to_channels_first, num_threads, y, out)

"""Numba batch-norm kernels on a contiguous (A, C, B) view of the input: C channels,
A = prod(shape[:axis]) rows before the channel axis, B = prod(shape[axis+1:]) after it.

Statistics: float64 sums shifted by a value of the same chunk (so a channel with mean
1e4 and std 1 loses nothing to cancellation), one per work item, merged with Chan's
pairwise formula. Two decompositions, chosen by B:
- "columns" (B < SEGMENT_MIN, e.g. NHWC with B = 1): the input is an (A, C*B) matrix;
  tasks are (row chunk, column tile) blocks, the inner loop runs over contiguous columns.
- "segments" (B >= SEGMENT_MIN, e.g. NCHW): the input is A*C rows of B values, each cut
  into pieces of at most PIECE values; the pieces, in memory order, are split into one
  contiguous run per thread (streaming reads: walking channel by channel instead jumps
  between short rows and ran 2.5x slower), and each task merges its pieces into its own
  per-channel summaries, merged across tasks at the end.
``normalize`` turns the statistics into a per-channel center, scale and shift (float64,
C values, not fastmath); its scale/shift pass then uses the same two decompositions
(one run of rows or pieces per thread), each task walking its part of the output from
the end (see the note above _affine_run: it finds a new output array's freshly zeroed
pages in cache). Either way
there are at least num_threads tasks when the data allows it, also when C < num_threads.
Each task writes only its own slots of the partial-result arrays and its own part of the
output.
"""

import numba
import numpy as np
from numba import prange

from . import njit_parallel, njit_serial, run_parallel

SEGMENT_MIN = 64
PIECE = 4096
COLUMN_TILE = 1024
RUN_BYTES = 256  # the columns scale/shift walks rows in runs of this many bytes
FOLD_MIN_VALUES = 4096  # small inputs from this size fold short rows (_normalize_serial)


@njit_serial
def _chan_merge(n, mean, m2, n_b, mean_b, m2_b):
    """Merge two (count, mean, sum of squared deviations) summaries (Chan et al.)."""
    if n == 0.0:
        return n_b, mean_b, m2_b
    total = n + n_b
    delta = mean_b - mean
    return total, mean + delta * (n_b / total), m2 + m2_b + delta * delta * (n * n_b / total)


@njit_serial
def _column_block(x2, r0, r1, w0, w1, shift, sum1, sum2):
    """Shifted float64 sums of columns w0..w1-1 of x2 over rows r0..r1-1, into
    shift/sum1/sum2[w0:w1]. Fresh local accumulators: LLVM vectorises the row loop only
    when it can see they do not alias the input (4x faster than accumulating in place)."""
    width = w1 - w0
    local_shift = x2[r0, w0:w1].astype(np.float64)
    local_sum1 = np.zeros(width)
    local_sum2 = np.zeros(width)
    for r in range(r0, r1):
        row = x2[r, w0:w1]
        for w in range(width):
            d = np.float64(row[w]) - local_shift[w]
            local_sum1[w] += d
            local_sum2[w] += d * d
    shift[w0:w1] = local_shift
    sum1[w0:w1] = local_sum1
    sum2[w0:w1] = local_sum2


@njit_serial
def _merge_columns(per_channel, c, n_rows, shift, sum1, sum2):
    """Channel c's (count, mean, M2) from its columns' shifted sums in every row chunk."""
    row_chunks = shift.shape[0]
    n, m, m2 = 0.0, 0.0, 0.0
    for k in range(row_chunks):
        n_k = np.float64((k + 1) * n_rows // row_chunks - k * n_rows // row_chunks)
        for w in range(c * per_channel, (c + 1) * per_channel):
            s1 = sum1[k, w]
            n, m, m2 = _chan_merge(n, m, m2, n_k, shift[k, w] + s1 / n_k,
                                   max(sum2[k, w] - s1 * s1 / n_k, 0.0))
    return n, m, m2


@njit_serial
def _shifted_sums(values, shift):
    """Sums of values - shift and of their squares, in float64. An index loop from 0:
    LLVM vectorises it (iterating over the array, or from a start it cannot prove
    non-negative, it does not: 7x slower)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(values.shape[0]):
        d = np.float64(values[i]) - shift
        s1 += d
        s2 += d * d
    return s1, s2


@njit_serial
def _segment_run(x2, channels, item0, item1, part_n, part_mean, part_m2):
    """Pieces item0..item1-1 of the (A*C, B) rows, in memory order, each merged into
    its channel's summary in part_n/part_mean/part_m2 (this task's own (C,) slots)."""
    length = x2.shape[1]
    pieces = (length + PIECE - 1) // PIECE
    for item in range(item0, item1):
        row = item // pieces
        b0 = (item % pieces) * PIECE
        values = x2[row, b0:min(length, b0 + PIECE)]
        shift = np.float64(values[0])
        s1, s2 = _shifted_sums(values, shift)
        n_b = np.float64(values.shape[0])
        c = row % channels
        part_n[c], part_mean[c], part_m2[c] = _chan_merge(
            part_n[c], part_mean[c], part_m2[c], n_b, shift + s1 / n_b,
            max(s2 - s1 * s1 / n_b, 0.0))


# The scale/shift pass walks its output from the end (pieces and rows in descending
# order). A fresh output array takes its page faults in this pass, and walking down
# finds more of each newly zeroed (huge) page still in cache: measured, a 51 MB pass into
# a new array takes 5-7 ms instead of 8-9 (1 thread, both backends); into memory already
# faulted in it makes no difference. In training it also meets first the part of x that
# the statistics pass read last.


@njit_serial
def _affine_run(values, out, center, scale, shift):
    for i in range(values.shape[0] - 1, -1, -1):
        out[i] = (values[i] - center) * scale + shift


@njit_serial
def _affine_segment_run(x2, channels, item0, item1, center, scale, shift, out2):
    """out = (x - center[c]) * scale[c] + shift[c] on pieces item1-1 down to item0."""
    length = x2.shape[1]
    pieces = (length + PIECE - 1) // PIECE
    for j in range(item1 - item0):
        item = item1 - 1 - j
        row = item // pieces
        c = row % channels
        b0 = (item % pieces) * PIECE
        b1 = min(length, b0 + PIECE)
        _affine_run(x2[row, b0:b1], out2[row, b0:b1], center[c], scale[c], shift[c])


@njit_serial
def _affine_row_run(x2, r0, r1, center, scale, shift, out2, run):
    """Rows r1-1 down to r0 of out2 = (x2 - center) * scale + shift (per column), each
    row in runs of `run` values, the last run first; each run ascending (numba vectorises
    no descending loop with per-column parameters). Descending rows read ascending in
    one piece ran 3x slower once a row exceeded 256 bytes (float64, C = 64)."""
    width = x2.shape[1]
    runs = (width + run - 1) // run
    if runs == 1:
        # Rows of one run (NHWC float32 up to 64 channels): indexed in 2-d, no slices
        # (a slice per row and parameter is most of the time on narrow rows: 128 x 16
        # values 1.5 -> 0.9 us; 25088 x 64, 416 -> 296 us)
        for j in range(r1 - r0):
            r = r1 - 1 - j
            for w in range(width):
                out2[r, w] = (x2[r, w] - center[w]) * scale[w] + shift[w]
        return
    for j in range(r1 - r0):  # (range(r1 - 1, r0 - 1, -1) ran 1.5x slower)
        r = r1 - 1 - j
        for q in range(runs):
            w0 = (runs - 1 - q) * run
            w1 = min(width, w0 + run)
            row = x2[r, w0:w1]
            out_row = out2[r, w0:w1]
            c = center[w0:w1]
            s = scale[w0:w1]
            t = shift[w0:w1]
            for w in range(row.shape[0]):
                out_row[w] = (row[w] - c[w]) * s[w] + t[w]


# The hot loops live in the serial helpers above: inlined into a prange body, numba's
# parfor lowering left them unvectorised (4x slower).


@njit_parallel
def _column_stats(x2, per_channel, mean, var, row_chunks):
    n_rows, width = x2.shape
    tiles = (width + COLUMN_TILE - 1) // COLUMN_TILE
    shift = np.empty((row_chunks, width))
    sum1 = np.zeros((row_chunks, width))
    sum2 = np.zeros((row_chunks, width))
    for task in prange(row_chunks * tiles):
        k = task // tiles
        w0 = (task % tiles) * COLUMN_TILE
        w1 = min(width, w0 + COLUMN_TILE)
        r0 = k * n_rows // row_chunks
        r1 = (k + 1) * n_rows // row_chunks
        _column_block(x2, r0, r1, w0, w1, shift[k], sum1[k], sum2[k])
    # Serial merge (C * row_chunks tiny merges): a second parallel region would be one more
    # point where every thread waits for the slowest, costly on a busy machine.
    for c in range(width // per_channel):
        n, m, m2 = _merge_columns(per_channel, c, n_rows, shift, sum1, sum2)
        mean[c] = m
        var[c] = m2 / n


@njit_parallel
def _segment_stats(x2, channels, mean, var, tasks):
    items = x2.shape[0] * ((x2.shape[1] + PIECE - 1) // PIECE)
    part_n = np.zeros((tasks, channels))
    part_mean = np.zeros((tasks, channels))
    part_m2 = np.zeros((tasks, channels))
    for task in prange(tasks):
        _segment_run(x2, channels, task * items // tasks, (task + 1) * items // tasks,
                     part_n[task], part_mean[task], part_m2[task])
    for c in range(channels):
        n, m, m2 = 0.0, 0.0, 0.0
        for task in range(tasks):
            if part_n[task, c] > 0.0:
                n, m, m2 = _chan_merge(n, m, m2, part_n[task, c], part_mean[task, c],
                                       part_m2[task, c])
        mean[c] = m
        var[c] = m2 / n


@njit_parallel
def _affine_columns(x2, center, scale, shift, out2, tasks):
    n_rows = x2.shape[0]
    run = RUN_BYTES // x2.itemsize
    for task in prange(tasks):
        _affine_row_run(x2, task * n_rows // tasks, (task + 1) * n_rows // tasks,
                        center, scale, shift, out2, run)


@njit_parallel
def _affine_segments(x2, channels, center, scale, shift, out2, tasks):
    items = x2.shape[0] * ((x2.shape[1] + PIECE - 1) // PIECE)
    for task in prange(tasks):
        _affine_segment_run(x2, channels, task * items // tasks, (task + 1) * items // tasks,
                            center, scale, shift, out2)


def channel_stats(x3, mean, var, num_threads):
    """mean[c], var[c] (float64, biased) over axes 0 and 2 of the contiguous x3 (A, C, B)."""
    n_rows, channels, length = x3.shape
    if length < SEGMENT_MIN:
        width = channels * length
        tiles = -(-width // COLUMN_TILE)
        row_chunks = max(1, min(n_rows, -(-num_threads // tiles)))
        run_parallel(_column_stats, num_threads, x3.reshape(n_rows, width), length,
                     mean, var, row_chunks)
    else:
        rows = x3.reshape(n_rows * channels, length)
        run_parallel(_segment_stats, num_threads, rows, channels, mean, var,
                     _segment_tasks(rows, num_threads))


def scale_shift(x3, center, scale, shift, out, num_threads):
    """out[a, c, b] = (x3[a, c, b] - center[c]) * scale[c] + shift[c]; all in x3's dtype."""
    n_rows, channels, length = x3.shape
    if length < SEGMENT_MIN:  # per-column parameters: the inner loop runs over C*B values
        width = channels * length
        run_parallel(_affine_columns, num_threads, x3.reshape(n_rows, width),
                     _per_column(center, length), _per_column(scale, length),
                     _per_column(shift, length), out.reshape(n_rows, width),
                     max(1, min(num_threads, n_rows)))
    else:
        rows = x3.reshape(n_rows * channels, length)
        run_parallel(_affine_segments, num_threads, rows, channels, center, scale, shift,
                     out.reshape(rows.shape), _segment_tasks(rows, num_threads))


# Not fastmath: the same IEEE operations as the other backends (no FMA contraction);
# error_model="numpy": a zero or negative variance gives inf / NaN, not an exception.
# fastmath=False must be explicit: numba compiles a callee that leaves it unset with the
# flags of its (fastmath) caller, and caches that build for every later call.
@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=False)
def _affine_parameters(mean, var, gamma, beta, eps, parameters):
    """Rows center, scale, shift of ``parameters`` (x's dtype), computed in float64."""
    for c in range(mean.shape[0]):
        scale = np.float64(gamma[c]) / np.sqrt(var[c] + eps)
        parameters[0, c] = mean[c]  # rounded to x's dtype: the center
        parameters[1, c] = scale
        parameters[2, c] = np.float64(beta[c]) - (mean[c] - np.float64(parameters[0, c])) * scale


def normalize(x3, mean, var, gamma, beta, eps, out, num_threads):
    """out = gamma * (x3 - mean) / sqrt(var + eps) + beta per channel (see fastdl/norm.py):
    the per-channel center, scale and shift in float64, then scale_shift."""
    parameters = np.empty((3, x3.shape[1]), x3.dtype)
    _affine_parameters(mean, var, gamma, beta, eps, parameters)
    scale_shift(x3, parameters[0], parameters[1], parameters[2], out, num_threads)


def _per_column(per_channel, length):
    """Each channel's value repeated for its ``length`` columns (channels-last data,
    length 1, needs no copy)."""
    return per_channel if length == 1 else np.repeat(per_channel, length)


def _segment_tasks(rows, num_threads):
    """One contiguous run of pieces per thread (fewer when there are fewer pieces)."""
    return max(1, min(num_threads, rows.shape[0] * -(-rows.shape[1] // PIECE)))


# ---------------------------------------------------------------------------------------
# Small inputs: the whole batch norm in one call on the calling thread (fastdl/norm.py
# takes this path below its size threshold). It saves the dispatches of the general path
# (each numba call types its arguments: ~1 us for eight) and its NumPy calls on C values;
# the arithmetic is the general path's on one thread, so the results are bitwise the same.

_column_stats_serial = _column_stats.serial
_segment_stats_serial = _segment_stats.serial
_affine_columns_serial = _affine_columns.serial
_affine_segments_serial = _affine_segments.serial


@njit_serial
def _per_column_rows(parameters, length, fold):
    """(3, C) parameters -> (3, fold * C * length): each channel's values over its
    ``length`` columns, all of it ``fold`` times (one value per column of the folded rows)."""
    channels = parameters.shape[1]
    tiled = np.empty((3, fold * channels * length), parameters.dtype)
    for p in range(3):
        i = 0
        for _ in range(fold):
            for c in range(channels):
                for _ in range(length):
                    tiled[p, i] = parameters[p, c]
                    i += 1
    return tiled


@njit_serial
def _normalize_serial(x3, mean, var, gamma, beta, eps, out):
    n_rows, channels, length = x3.shape
    parameters = np.empty((3, channels), x3.dtype)
    _affine_parameters(mean, var, gamma, beta, eps, parameters)
    if length < SEGMENT_MIN:
        width = channels * length
        # Many short rows (NHWC with few channels) are taken `fold` at a time, up to one
        # run, with the parameters repeated as often: each row pays a few checks before
        # its vector loop (1024 x 16 float32: 4.6 -> 3.3 us; at 128 x 16 the repeating
        # costs what it saves). Same arithmetic per element.
        fold = 1
        if n_rows * width >= FOLD_MIN_VALUES:
            fold = max(1, min(n_rows, (RUN_BYTES // x3.itemsize) // width))
            while n_rows % fold:
                fold -= 1
        tiled = parameters if fold * length == 1 else _per_column_rows(parameters, length, fold)
        rows = n_rows // fold
        _affine_columns_serial(x3.reshape(rows, width * fold), tiled[0], tiled[1], tiled[2],
                               out.reshape(rows, width * fold), 1)
    else:
        _affine_segments_serial(x3.reshape(n_rows * channels, length), channels,
                                parameters[0], parameters[1], parameters[2],
                                out.reshape(n_rows * channels, length), 1)


# Not fastmath (as _affine_parameters): no FMA, the NumPy expression of fastdl/norm.py.
@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=False)
def _blend_statistic(running, batch, decay):
    """running = decay * running + (1 - decay) * batch in float64, rounded into running."""
    for c in range(batch.shape[0]):
        running[c] = np.float64(running[c]) * decay + (1.0 - decay) * batch[c]


@njit_serial
def _train_serial(x3, gamma, beta, eps, running_mean, running_var, decay, out):
    n_rows, channels, length = x3.shape
    mean = np.empty(channels)
    var = np.empty(channels)
    if length < SEGMENT_MIN:
        _column_stats_serial(x3.reshape(n_rows, channels * length), length, mean, var, 1)
    else:
        _segment_stats_serial(x3.reshape(n_rows * channels, length), channels, mean, var, 1)
    if running_mean is not None:  # (a None argument prunes the branch at compile time)
        _blend_statistic(running_mean, mean, decay)
        _blend_statistic(running_var, var, decay)
    _normalize_serial(x3, mean, var, gamma, beta, eps, out)


@njit_serial
def _eval_serial(x3, gamma, beta, eps, running_mean, running_var, out):
    # float32 statistics are read as float64 values by _affine_parameters, as the
    # general path's astype(np.float64) gives them, without two allocations
    _normalize_serial(x3, running_mean, running_var, gamma, beta, eps, out)


def batch_norm_serial(x3, gamma, beta, eps, training, running_mean, running_var, decay, out):
    """batch_norm (fastdl/norm.py) of the contiguous (A, C, B) x3 into out, on the calling
    thread: in training the batch statistics (running_mean / running_var, when given,
    blended in place), else the running statistics; then normalize()."""
    if training:
        _train_serial(x3, gamma, beta, eps, running_mean, running_var, decay, out)
    else:
        _eval_serial(x3, gamma, beta, eps, running_mean, running_var, out)

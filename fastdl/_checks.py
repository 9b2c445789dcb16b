"""Argument validation shared by every op: the one place that raises for bad user input.

Everything here runs in Python before any compiled kernel: the numba and Cython kernels
run without bounds checks, so a shape or index that gets past these functions could read
or write outside an array. Messages name the argument and state expected vs actual.

Each op's checks are split in two: the arrays (type, dtype, conversion; per call) and the
geometry (shapes, dtypes, the array flags that matter and the scalar arguments only),
which is memoised with ``memoized_for_plain_arguments`` -- a training loop calls an op on
the same shapes over and over, and re-deriving the geometry cost 5-10 us per call, more
than a small input's kernel.
"""

import functools
import math
import numbers
import operator
import os
from typing import NamedTuple

import numpy as np

from . import _scratch

# Sizes, strides and paddings beyond this are rejected: the compiled kernels index with
# 64-bit integers, but no real tensor dimension is this large, and products of such
# values could overflow.
MAX_DIM = 2**31 - 1

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# float32/float64 in native byte order (a byte-swapped dtype compares unequal): arrays
# of these are used as they are.
_NATIVE_FLOAT_DTYPES = frozenset(FLOAT_DTYPES)


def as_float_array(name, value):
    """``value`` as an ndarray of float32 or float64 (integers and bools -> float64).

    Does not copy unless a conversion is needed; the caller decides about contiguity.
    """
    if type(value) is np.ndarray and value.dtype in _NATIVE_FLOAT_DTYPES:
        return value  # the common case, before the general checks below
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (list, tuple, numbers.Number, np.generic)) or hasattr(
        value, "__array__"
    ):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name}: cannot be converted to an array ({exc})") from None
    else:
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(value).__name__}")
    kind = array.dtype.kind
    if kind == "f":
        if array.dtype.itemsize == 4:
            return array.astype(np.float32, copy=False)  # also fixes byte order
        if array.dtype.itemsize == 8:
            return array.astype(np.float64, copy=False)
        # float16 / longdouble: compute in float64, as NumPy would promote with float64
        return array.astype(np.float64)
    if kind in "biu":
        return array.astype(np.float64)
    raise TypeError(
        f"{name}: expected a real numeric array (float32, float64, int or bool), "
        f"got dtype {array.dtype}"
    )


def common_dtype(*arrays):
    """The float dtype a computation over these (already float) arrays returns."""
    return result_dtype(*[a.dtype for a in arrays if a is not None])


@functools.lru_cache(maxsize=64)
def result_dtype(*dtypes):
    """np.result_type of float dtypes, memoised (np.result_type costs ~1 us a call)."""
    return np.result_type(*dtypes)


def kernel_array(array, dtype):
    """A C-contiguous, native-order, writable-or-not copy-free-when-possible array."""
    return np.ascontiguousarray(array, dtype=dtype)


def check_rank(name, array, ranks, what):
    """Raise unless ``array.ndim`` is one of ``ranks``; ``what`` describes the layout."""
    check_shape_rank(name, array.shape, ranks, what)


def check_shape_rank(name, shape, ranks, what):
    """check_rank on an array's shape."""
    if len(shape) not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"{name}: expected a {expected}-d array ({what}), got shape {shape}"
        )


def _is_plain(value):
    """Whether equal values of this argument validate alike: exact ints, strs, None, bools
    and dtypes (lru_cache(typed=True) keeps True and 1 apart), and tuples, nested, of
    exact ints only (inside a tuple the types are not part of the key, and (1, True) ==
    (1, 1) == (1, 1.0)). Floats are not plain: -0.0 == 0.0, and NaN is itself."""
    kind = type(value)
    if kind is tuple:
        kinds = set(map(type, value))
        return kinds <= _INT or (kinds <= _INT_OR_TUPLE and all(map(_is_plain, value)))
    return kind in _PLAIN_SCALARS or isinstance(value, np.dtype)


_PLAIN_SCALARS = frozenset((int, str, bool, type(None)))
_INT, _INT_OR_TUPLE = frozenset((int,)), frozenset((int, tuple))


def memoized_for_plain_arguments(array_facts):
    """Memoise a validator, a pure function of shapes, dtypes and scalar arguments.

    Its first ``array_facts`` arguments are read off ndarrays (shapes: tuples of ints,
    dtypes, None), plain by construction; the others are the caller's own values. Calls
    whose own values are all plain (see _is_plain) are answered from the cache; any other
    call (a list, a NumPy integer, a float inside a tuple) runs the validator itself, so
    the cache never answers for a value that validation would treat differently.
    Exceptions are not cached: bad input raises on every call."""
    def decorate(validator):
        cached = functools.lru_cache(maxsize=512, typed=True)(validator)

        @functools.wraps(validator)
        def validate(*args):
            for arg in args[array_facts:]:
                if type(arg) not in _PLAIN_SCALARS and not _is_plain(arg):
                    return validator(*args)
            return cached(*args)

        validate.cache_clear = cached.cache_clear
        return validate
    return decorate


def check_nonempty(name, array):
    if array.size == 0:
        raise ValueError(f"{name}: must not be empty, got shape {array.shape}")


def as_int(name, value, minimum=None):
    """A Python int from an int-like (not bool, not float), within [minimum, MAX_DIM]."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {result}")
    if result > MAX_DIM:
        raise ValueError(f"{name}: {result} is too large (at most {MAX_DIM})")
    return result


def int_tuple(name, value, ndim, minimum):
    """An int or a length-``ndim`` sequence of ints, as a tuple of ``ndim`` ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != ndim:
            raise ValueError(
                f"{name}: expected an int or {ndim} values (one per spatial dim), got {value!r}"
            )
        return tuple(as_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))
    return (as_int(name, value, minimum),) * ndim


def check_layout(layout, allowed):
    if layout not in allowed:
        raise ValueError(f"layout: expected one of {', '.join(map(repr, allowed))}, got {layout!r}")
    return layout


def as_real(name, value):
    """A Python float from a real number (not a bool)."""
    if type(value) is float:  # the common case, without the slower ABC checks
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_positive_finite(name, value):
    """A float > 0 and finite (eps and friends)."""
    value = as_real(name, value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {value!r}")
    return value


def check_fraction(name, value, low_open=False, high_open=False):
    """A real number in [0, 1] (endpoints excluded where asked)."""
    value = as_real(name, value)
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (math.isfinite(value) and low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name}: must be in {interval}, got {value!r}")
    return value


def physical_memory_bytes():
    """Total RAM of the machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(name, nbytes, what):
    """Raise a ValueError naming ``name`` when ``what`` needs more bytes than the machine
    has: a clear message up front instead of a MemoryError, or an out-of-memory kill of
    the process while the kernel fills lazily-committed pages. ``what`` may be a callable
    returning the description (formatting it on every call costs microseconds)."""
    total = physical_memory_bytes()
    if total is not None and nbytes > total:
        if callable(what):
            what = what()
        raise ValueError(f"{name}: {what} would need {nbytes / 2**30:.4g} GiB, more than "
                         f"this machine's {total / 2**30:.4g} GiB of memory")


# ---------------------------------------------------------------------------------------
# Sliding-window geometry (convolution, pooling, attention)


def padding_pairs(padding, ndim, kernel, dilation, stride):
    """Normalise ``padding`` to ``ndim`` (before, after) pairs.

    Accepts an int, a tuple of ints (symmetric per dim), "valid" or "same". "same" pads
    d*(k-1) in total, the odd cell after, as PyTorch does, and needs stride 1.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
            pairs = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"padding: expected an int, a tuple, 'valid' or 'same', got {padding!r}")
    return tuple((p, p) for p in int_tuple("padding", padding, ndim, minimum=0))


def window_output_shape(spatial, kernel, stride, pads, dilation, names=None):
    """Output spatial sizes of a sliding window; raises if the window does not fit.

    The single implementation of ``(n + pad - d*(k-1) - 1) // s + 1`` used by the ops,
    ``fastdl.shapes`` and ``fastdl.params``.
    """
    out = []
    for axis, (n, k, s, (lo, hi), d) in enumerate(zip(spatial, kernel, stride, pads, dilation)):
        span = d * (k - 1) + 1
        padded = n + lo + hi
        if padded > MAX_DIM:
            raise ValueError(f"padding: padded size {padded} of spatial dim {axis} is too large")
        if span > padded:
            dim = names[axis] if names else f"spatial dim {axis}"
            raise ValueError(
                f"kernel size: the (dilated) window {span} (kernel {k}, dilation {d}) is "
                f"larger than the padded input {padded} ({dim}: size {n} + padding {lo}+{hi}); "
                f"input spatial shape {tuple(spatial)}, kernel {tuple(kernel)}"
            )
        out.append((padded - span) // s + 1)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Convolution

CONV_LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}
_SPATIAL_NAMES = {1: ("W",), 2: ("H", "W"), 3: ("D", "H", "W")}


class ConvSpec:
    """Validated convolution arguments: x (channels-last, batched) and weight
    ((K..., C_in/groups, C_out)) as views of the caller's arrays, bias, and the geometry."""

    __slots__ = ("x", "weight", "bias", "geometry")

    def __init__(self, x, weight, bias, geometry):
        self.x, self.weight, self.bias, self.geometry = x, weight, bias, geometry


class ConvGeometry(NamedTuple):
    """The shape side of a validated conv call (memoised per shapes and arguments)."""

    stride: tuple
    pads: tuple
    dilation: tuple
    groups: int
    out_spatial: tuple
    dtype: np.dtype
    batched: bool
    channels_first: bool
    out_channels: int
    padded_shape: tuple  # of the channels-last kernel input (N, *padded spatial, C_in)
    interior: tuple  # index of x's cells in it; None without padding


def conv_arguments(nd, x, weight, bias, stride, padding, dilation, groups, layout):
    """Validate a conv{nd}d call; return a ConvSpec (arrays not yet copied)."""
    layout = check_layout(layout, CONV_LAYOUTS[nd])
    x = as_float_array("x", x)
    weight = as_float_array("weight", weight)
    bias = None if bias is None else as_float_array("bias", bias)
    geometry = conv_geometry(x.shape, x.dtype, weight.shape, weight.dtype,
                             None if bias is None else bias.shape,
                             None if bias is None else bias.dtype,
                             nd, stride, padding, dilation, groups, layout)
    if not geometry.batched:
        x = x[np.newaxis]
    if geometry.channels_first:  # views only: the one copy happens when the kernel input is made
        x = np.moveaxis(x, 1, -1)
        weight = np.moveaxis(np.moveaxis(weight, 0, -1), 0, -2)
    return ConvSpec(x, weight, bias, geometry)


@memoized_for_plain_arguments(array_facts=6)
def conv_geometry(x_shape, x_dtype, w_shape, w_dtype, bias_shape, bias_dtype, nd, stride,
                  padding, dilation, groups, layout):
    """The checks of conv_arguments that need only shapes, dtypes and the scalar
    arguments (x float, layout valid); returns a ConvGeometry or raises."""
    channels_first = layout[1] == "C"
    check_shape_rank("x", x_shape, (nd + 1, nd + 2), f"{layout} or unbatched {layout[1:]}")
    wlayout = "O,C_in/groups," + ",".join("K" + s for s in _SPATIAL_NAMES[nd])
    if not channels_first:
        wlayout = ",".join("K" + s for s in _SPATIAL_NAMES[nd]) + ",C_in/groups,O"
    check_shape_rank("weight", w_shape, (nd + 2,), f"({wlayout})")
    batched = len(x_shape) == nd + 2
    if not batched:
        x_shape = (1,) + x_shape
    if channels_first:  # the shapes of the channels-last views conv_arguments makes
        x_shape = x_shape[:1] + x_shape[2:] + x_shape[1:2]
        w_shape = w_shape[2:] + (w_shape[1], w_shape[0])
    kernel = w_shape[:nd]
    in_per_group, out_channels = w_shape[nd], w_shape[nd + 1]
    in_channels = x_shape[-1]
    if min(kernel) == 0 or in_per_group == 0 or out_channels == 0:
        raise ValueError(f"weight: kernel and channel dims must be non-zero, got weight shape {w_shape} "
                         f"(as {wlayout} after layout {layout!r})")
    if in_channels == 0:
        raise ValueError(f"x: the channel dim must be non-zero, got x shape {x_shape}")

    groups = as_int("groups", groups, minimum=1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups: {groups} must divide both input channels ({in_channels}) "
                         f"and output channels ({out_channels})")
    if in_per_group * groups != in_channels:
        raise ValueError(
            f"x: given groups={groups} and weight of shape {tuple(w_shape)} "
            f"({wlayout}), expected input with {in_per_group * groups} channels, "
            f"but got {in_channels} channels (x shape {x_shape} as {layout})"
        )
    if bias_shape is not None and bias_shape != (out_channels,):
        raise ValueError(f"bias: expected shape ({out_channels},) (one per output channel), "
                         f"got {bias_shape}")

    stride = int_tuple("stride", stride, nd, minimum=1)
    dilation = int_tuple("dilation", dilation, nd, minimum=1)
    pads = padding_pairs(padding, nd, kernel, dilation, stride)
    out_spatial = window_output_shape(x_shape[1:-1], kernel, stride, pads, dilation,
                                      _SPATIAL_NAMES[nd])
    dtype = result_dtype(*(d for d in (x_dtype, w_dtype, bias_dtype) if d is not None))
    # The call allocates the padded copy of x and the output (Python ints: no overflow).
    n = x_shape[0]
    padded_shape = (n,) + padded_spatial(x_shape[1:-1], pads) + (in_channels,)
    out_shape = (n,) + out_spatial + (out_channels,)
    check_fits_in_memory(
        "padding" if any(lo or hi for lo, hi in pads) else "x",
        (math.prod(padded_shape) + math.prod(out_shape)) * dtype.itemsize,
        lambda: f"the padded input {padded_shape} and the output {out_shape} ({dtype}, channels-last)",
    )
    return ConvGeometry(stride, pads, dilation, groups, out_spatial, dtype, batched,
                        channels_first, out_channels, padded_shape,
                        interior_index(x_shape[1:-1], pads))


def padded_spatial(spatial, pads):
    """Spatial sizes after (before, after) padding pairs."""
    return tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pads))


def interior_index(spatial, pads):
    """Index of the input's cells in its padded (N, *padded spatial, C) copy, None when
    nothing is padded."""
    if not any(lo or hi for lo, hi in pads):
        return None
    return (slice(None),) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(spatial, pads))


def padded_copy(x, padded_shape, interior, dtype, role=None):
    """x zero-padded into a C-contiguous array of padded_shape (interior: x's cells in it;
    None: no padding, and x itself when it is C-contiguous in dtype already): the one copy
    of the input, which also fixes dtype, byte order and memory layout. role: the copy
    is a temporary of the call, made in this thread's scratch buffer for role."""
    if interior is None:
        if role is None or (x.flags.c_contiguous and x.dtype == dtype):
            return np.ascontiguousarray(x, dtype=dtype)
        out = _scratch.empty(role, x.shape, dtype)
        np.copyto(out, x)
        return out
    out = padded_empty(padded_shape, interior, dtype, role)
    out[interior] = x
    return out


PADDED_ZEROS_MAX_BYTES = 1 << 18


def padded_empty(padded_shape, interior, dtype, role=None):
    """An array whose padding (everything outside ``interior``; None: no padding) is zero
    and whose interior is left for the caller to fill: new, or with a role this thread's
    scratch buffer for it (see _scratch). Large arrays get only their padding slabs
    written (np.zeros then the copy would write the interior twice: 8x58x58x64 float32,
    0.30 -> 0.23 ms); small ones np.zeros (a slab assignment costs ~1-2 us)."""
    if interior is None:
        return _scratch.empty(role, padded_shape, dtype)
    if math.prod(padded_shape) * dtype.itemsize < PADDED_ZEROS_MAX_BYTES:
        return np.zeros(padded_shape, dtype=dtype)
    out = _scratch.empty(role, padded_shape, dtype)
    for axis, part in enumerate(interior):
        before = (slice(None),) * axis
        if part.start:
            out[before + (slice(0, part.start),)] = 0
        if part.stop is not None and part.stop < padded_shape[axis]:
            out[before + (slice(part.stop, None),)] = 0
    return out


# ---------------------------------------------------------------------------------------
# Batch normalization


class BatchNormLayout(NamedTuple):
    """What batch_norm's checks derive from shapes, dtypes, flags and scalars."""

    axis: int  # the channel axis, in range(x.ndim)
    view_shape: tuple  # (A, C, B): rows before the channel axis, channels, values after
    dtype: np.dtype  # the result's
    training: bool
    # No running statistics, or both contiguous, aligned and in native byte order: the
    # compiled batch_norm_serial takes them as they are.
    plain_statistics: bool


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_channel_vector(name, shape, channels):
    """A per-channel parameter's shape must be (channels,)."""
    if shape != (channels,):
        raise ValueError(f"{name}: expected shape ({channels},) (one value per channel), "
                         f"got shape {shape}")


def running_facts(value):
    """What the checks read off a running-statistics argument, hashable for the memo:
    None, the type of a value that is not an ndarray, or (dtype, shape, writeable, plain)
    where plain = contiguous, aligned and in native byte order (a plain tuple: a NamedTuple
    costs 0.3 us more)."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        return type(value)
    flags = value.flags
    plain = flags.c_contiguous and flags.aligned and value.dtype.isnative
    return value.dtype, value.shape, flags.writeable, plain


def check_running_statistic(name, facts, channels, writable):
    """A running-statistics array (``facts`` from running_facts): a float32/float64
    ndarray of shape (channels,), written in place when ``writable`` (so it must be an
    ndarray we may write, not a copy)."""
    if not isinstance(facts, tuple):
        raise TypeError(f"{name}: expected a float32 or float64 numpy array of shape "
                        f"({channels},), got {facts.__name__}")
    dtype, shape, writeable, _ = facts
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {dtype}")
    if shape != (channels,):
        raise ValueError(f"{name}: expected shape ({channels},) (one value per channel), "
                         f"got shape {shape}")
    if writable and not writeable:
        raise ValueError(f"{name}: is read-only, but training updates it in place")


def batch_norm_arguments(x, gamma, beta, eps, training, running_mean, running_var, decay,
                         axis):
    """Validate a batch_norm call; return (x, gamma, beta, eps, running_mean, running_var,
    decay, layout): float arrays not yet made contiguous, and the BatchNormLayout the
    memoised checks derived (a tuple: a class instance cost 0.2 us more per call)."""
    x = as_float_array("x", x)
    gamma = as_float_array("gamma", gamma)
    beta = as_float_array("beta", beta)
    layout = batch_norm_layout(x.shape, x.dtype, gamma.shape, gamma.dtype, beta.shape,
                               beta.dtype, running_facts(running_mean),
                               running_facts(running_var), training, axis)
    eps = check_positive_finite("eps", eps)
    decay = check_fraction("decay", decay)
    return x, gamma, beta, eps, running_mean, running_var, decay, layout


@memoized_for_plain_arguments(array_facts=8)
def batch_norm_layout(x_shape, x_dtype, gamma_shape, gamma_dtype, beta_shape, beta_dtype,
                      mean_facts, var_facts, training, axis):
    """The checks of batch_norm_arguments on shapes, dtypes, flags, ``training`` and
    ``axis``; returns a BatchNormLayout."""
    ndim = len(x_shape)
    if ndim < 2:
        raise ValueError(f"x: expected at least 2 dims (a batch and a channel axis), "
                         f"got shape {x_shape}")
    if math.prod(x_shape) == 0:
        raise ValueError(f"x: must not be empty, got shape {x_shape}")
    axis = as_int("axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis: {axis} is out of range for x of shape {x_shape} "
                         f"(expected -{ndim} <= axis < {ndim})")
    axis %= ndim
    channels = x_shape[axis]
    check_channel_vector("gamma", gamma_shape, channels)
    check_channel_vector("beta", beta_shape, channels)
    training = check_bool("training", training)
    if (mean_facts is None) != (var_facts is None):
        raise ValueError("running_mean, running_var: give both or neither, got "
                         f"running_mean={'None' if mean_facts is None else 'an array'}, "
                         f"running_var={'None' if var_facts is None else 'an array'}")
    if mean_facts is None:
        if not training:
            raise ValueError("training=False normalises with the running statistics: "
                             "running_mean and running_var are required")
        plain_statistics = True
    else:
        check_running_statistic("running_mean", mean_facts, channels, training)
        check_running_statistic("running_var", var_facts, channels, training)
        plain_statistics = mean_facts[3] and var_facts[3]
    view_shape = (math.prod(x_shape[:axis]), channels, math.prod(x_shape[axis + 1:]))
    return BatchNormLayout(axis, view_shape, result_dtype(x_dtype, gamma_dtype, beta_dtype),
                           training, plain_statistics)


BATCHNORM_MODES = ("train", "test")


def per_feature(name, value, features):
    """The exams' gamma / beta / cached statistics: anything that broadcasts against
    (1, features) as one value per feature (a scalar, (F,), (1, F)); returns shape (F,)."""
    array = as_float_array(name, value)
    try:
        fits = array.ndim <= 2 and np.broadcast_shapes(array.shape, (1, features)) == (1, features)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: expected one value per feature, shape ({features},) or "
                         f"(1, {features}) (or a scalar), got shape {array.shape}")
    return np.broadcast_to(array, (1, features))[0]


def forward_batchnorm_arguments(Z, gamma, beta, eps, cache_dict, beta_avg, mode):
    """Validate a forward_batchnorm call; returns (Z, gamma, beta, eps, beta_avg, mode,
    cached) where cached is (mu, var) as per-feature arrays in test mode, else None."""
    if not isinstance(mode, str) or mode not in BATCHNORM_MODES:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, BATCHNORM_MODES))}, "
                         f"got {mode!r}")
    Z = as_float_array("Z", Z)
    if Z.ndim != 2:
        raise ValueError(f"Z: expected a 2-d array (num_examples, num_features), got shape {Z.shape}")
    check_nonempty("Z", Z)
    features = Z.shape[1]
    gamma = per_feature("gamma", gamma, features)
    beta = per_feature("beta", beta, features)
    eps = check_positive_finite("eps", eps)
    beta_avg = check_fraction("beta_avg", beta_avg)
    if not isinstance(cache_dict, dict):
        raise TypeError(f"cache_dict: expected a dict, got {type(cache_dict).__name__}")
    cached = None
    if mode == "test":
        missing = [key for key in ("mu", "var") if key not in cache_dict]
        if missing:
            raise ValueError(f"cache_dict: mode 'test' needs the moving averages, missing "
                             f"key(s) {', '.join(map(repr, missing))}")
        cached = tuple(per_feature(f"cache_dict[{key!r}]", cache_dict[key], features)
                       for key in ("mu", "var"))
    else:
        for key in ("mu", "var"):  # check now, before the cache is written
            if key in cache_dict:
                per_feature(f"cache_dict[{key!r}]", cache_dict[key], features)
    return Z, gamma, beta, eps, beta_avg, mode, cached


# ---------------------------------------------------------------------------------------
# Pooling

POOL_LAYOUTS = ("NHWC", "NCHW")


def pool_geometry(spatial, size, stride, padding, names=None):
    """Validated 2-d pooling geometry: (size, stride, pads, out_spatial).

    ``size``/``stride``/``padding`` are ints or (h, w) tuples; ``stride=None`` means
    ``size``; ``padding`` also takes "valid" and "same" (as for convolutions). As in
    PyTorch, each padding may be at most half the window, so every window holds at
    least one real input cell.
    """
    size = int_tuple("size", size, 2, minimum=1)
    stride = size if stride is None else int_tuple("stride", stride, 2, minimum=1)
    pads = padding_pairs(padding, 2, size, (1, 1), stride)
    for (lo, hi), k in zip(pads, size):
        if 2 * max(lo, hi) > k:
            raise ValueError(
                f"padding: must be at most half the window size {size} in each dim, got "
                f"{padding!r} ((before, after) per dim: {pads})"
            )
    for axis, n in enumerate(spatial):
        if n < 1:
            dim = names[axis] if names else f"spatial dim {axis}"
            raise ValueError(f"x: spatial dims must be non-empty, got {dim} = {n} "
                             f"(input spatial shape {tuple(spatial)})")
    for axis, (n, k, (lo, hi)) in enumerate(zip(spatial, size, pads)):
        if k > n + lo + hi:  # checked here too, for a message that names `size`
            dim = names[axis] if names else f"spatial dim {axis}"
            raise ValueError(f"size: the window {size} is larger than the padded input "
                             f"({dim}: size {n} + padding {lo}+{hi}); input spatial shape "
                             f"{tuple(spatial)}")
    out_spatial = window_output_shape(spatial, size, stride, pads, (1, 1), names)
    return size, stride, pads, out_spatial


class PoolCallGeometry(NamedTuple):
    """The shape side of a validated pooling call (memoised per shape and arguments)."""

    size: tuple
    stride: tuple
    pads: tuple  # (before, after) per spatial dim
    kernel_pads: tuple  # (top, left): the kernels' bottom/right padding follows from out
    out_spatial: tuple
    batched: bool
    channels_first: bool


def pool_arguments(x, size, stride, padding, layout):
    """Validate a max_pool2d / avg_pool2d call; return (x as a float array, not copied
    and in the caller's layout and rank, its PoolCallGeometry)."""
    x = as_float_array("x", x)
    return x, pool_call_geometry(x.shape, layout, size, stride, padding)


@memoized_for_plain_arguments(array_facts=1)
def pool_call_geometry(x_shape, layout, size, stride, padding):
    """The checks of pool_arguments that need only x's shape and the scalar arguments."""
    layout = check_layout(layout, POOL_LAYOUTS)
    channels_first = layout == "NCHW"
    check_shape_rank("x", x_shape, (3, 4), f"{layout} or unbatched {layout[1:]}")
    batched = len(x_shape) == 4
    spatial = x_shape[-2:] if channels_first else x_shape[-3:-1]
    size, stride, pads, out_spatial = pool_geometry(spatial, size, stride, padding, ("H", "W"))
    return PoolCallGeometry(size, stride, pads, (pads[0][0], pads[1][0]), out_spatial,
                            batched, channels_first)


# ---------------------------------------------------------------------------------------
# Exam functions: nn, losses, regularization, optim, adversarial, metrics (plain NumPy)

REDUCTIONS = ("mean", "sum", "none")


def check_nonnegative(name, value):
    """A finite real number >= 0 (learning rates, eps of FGSM, penalty strengths)."""
    value = as_real(name, value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
    return value


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduction!r}")
    return reduction


def check_same_shape(name_a, a, name_b, b):
    """Raise unless two arrays have exactly the same shape (no silent broadcasting: an
    (N,) target against (N, 1) predictions would otherwise give an (N, N) loss)."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got "
                         f"{name_a} {a.shape} and {name_b} {b.shape}")


def as_target_array(name, value, like):
    """Labels/targets as a float array. Integer and bool targets (0/1 labels, one-hot)
    take the predictions' dtype ``like`` so that they never upcast float32 predictions;
    float targets are kept and follow np.result_type with the predictions."""
    array = as_float_array(name, value)
    source = value if isinstance(value, np.ndarray) else np.asarray(value)
    if source.dtype.kind in "biu":
        array = array.astype(like, copy=False)
    return array


def check_probabilities(name, array):
    """Raise if any value lies outside [0, 1] (NaN is let through, to propagate)."""
    bad = (array < 0) | (array > 1)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected probabilities in [0, 1], got {array[index]!r} "
                         f"at index {index} (shape {array.shape})")


def check_binary_labels(name, array):
    """Raise unless every value is 0 or 1."""
    bad = (array != 0) & (array != 1)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected binary labels (0 or 1), got {array[index]!r} "
                         f"at index {index} (shape {array.shape})")


def writable_float_array(name, value):
    """An ndarray that an in-place update can write to: float32/float64, writable."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array (updated in place), got "
                        f"{type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array (updated in place), "
                        f"got dtype {value.dtype}")
    if not value.flags.writeable:
        raise ValueError(f"{name}: the array is read-only, but it is updated in place")
    return value


def check_gradients_cover(params, grads, params_name="params", grads_name="grads"):
    """Raise unless ``grads`` holds a gradient for every name in ``params``, of the same
    shape; returns {name: gradient as a float array}."""
    if not isinstance(params, dict):
        raise TypeError(f"{params_name}: expected a dict of arrays, got {type(params).__name__}")
    if not isinstance(grads, dict):
        raise TypeError(f"{grads_name}: expected a dict of arrays, got {type(grads).__name__}")
    missing = [name for name in params if name not in grads]
    if missing:
        raise ValueError(f"{grads_name}: no gradient for parameter(s) {missing}; "
                         f"{grads_name} has {sorted(map(str, grads))}")
    out = {}
    for name, param in params.items():
        grad = as_float_array(f"{grads_name}[{name!r}]", grads[name])
        if grad.shape != np.shape(param):
            raise ValueError(f"{grads_name}[{name!r}]: expected shape {np.shape(param)} "
                             f"(the shape of {params_name}[{name!r}]), got {grad.shape}")
        out[name] = grad
    return out


# ---------------------------------------------------------------------------------------
# Sliding-window attention

ATTENTION_LAYOUTS = ("NHWC", "NCHW")


class AttentionSpec:
    """Validated sliding_window_attention arguments: channels-last, batched views
    (x (N, H, W, C_in), key (KH, KW, C_in, C_out), value (KH, KW, C_out)), not yet copied."""

    __slots__ = ("x", "key", "value", "stride", "pads", "out_spatial", "normalize",
                 "dtype", "batched", "channels_first")

    def __init__(self, **fields):
        for name, field in fields.items():
            setattr(self, name, field)


def attention_arguments(x, key, value, stride, padding, normalize, layout):
    """Validate a sliding_window_attention call; return an AttentionSpec.

    Beyond the conv rules: "same" needs an odd window (it must be centred), and each side's
    padding must be smaller than the window, so that every window holds at least one
    input pixel (padded positions are masked out of the softmax, so a window of padding
    only would have nothing to attend to).
    """
    layout = check_layout(layout, ATTENTION_LAYOUTS)
    channels_first = layout == "NCHW"
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"normalize: expected a bool, got {type(normalize).__name__} {normalize!r}")
    x = as_float_array("x", x)
    key = as_float_array("key", key)
    value = as_float_array("value", value)
    # shapes as the caller wrote them, for the messages
    x_shape, key_shape, value_shape = x.shape, key.shape, value.shape
    key_layout = "(C_out, C_in, KH, KW)" if channels_first else "(KH, KW, C_in, C_out)"
    check_rank("x", x, (3, 4), f"{layout} or unbatched {layout[1:]}")
    check_rank("key", key, (4,), key_layout)
    check_rank("value", value, (3, 4), "(C_out, KH, KW) or (C_out, 1, KH, KW)" if channels_first
               else "(KH, KW, C_out) or (KH, KW, 1, C_out)")
    batched = x.ndim == 4
    if not batched:
        x = x[np.newaxis]
    if channels_first:  # views only: the one copy happens when the kernel input is made
        x = np.moveaxis(x, 1, -1)
        key = key.transpose(2, 3, 1, 0)
        value = value.transpose(1, 2, 0) if value.ndim == 3 else value.transpose(2, 3, 1, 0)
    kh, kw, in_channels, out_channels = key.shape
    if 0 in key.shape:
        raise ValueError(f"key: every dim must be non-zero, got key shape {key_shape} {key_layout}")
    if 0 in x.shape[1:]:
        raise ValueError(f"x: spatial and channel dims must be non-zero, got x shape {x_shape} "
                         f"({layout})")
    if x.shape[-1] != in_channels:
        raise ValueError(
            f"x: key of shape {key_shape} {key_layout} expects input with C_in={in_channels} "
            f"channels, but x of shape {x_shape} ({layout}) has {x.shape[-1]}")
    if value.shape not in ((kh, kw, out_channels), (kh, kw, 1, out_channels)):
        expected = ((out_channels, kh, kw), (out_channels, 1, kh, kw)) if channels_first else (
            (kh, kw, out_channels), (kh, kw, 1, out_channels))
        raise ValueError(
            f"value: expected shape {expected[0]} or {expected[1]} to match key of shape "
            f"{key_shape} {key_layout}, got {value_shape}")
    value = value.reshape(kh, kw, out_channels)

    stride = int_tuple("stride", stride, 2, minimum=1)
    if isinstance(padding, str) and padding == "same" and (kh % 2 == 0 or kw % 2 == 0):
        raise ValueError(f"padding='same' needs an odd window (centred on the pixel), "
                         f"got window {(kh, kw)}")
    pads = padding_pairs(padding, 2, (kh, kw), (1, 1), stride)
    for axis, (k, (lo, hi)) in enumerate(zip((kh, kw), pads)):
        if lo >= k or hi >= k:
            raise ValueError(
                f"padding: each side must be smaller than the window so that every window "
                f"holds an input pixel; got padding {lo}+{hi} for window size {k} "
                f"({'HW'[axis]} axis)")
    out_spatial = window_output_shape(x.shape[1:3], (kh, kw), stride, pads, (1, 1), ("H", "W"))
    return AttentionSpec(x=x, key=key, value=value, stride=stride, pads=pads,
                         out_spatial=out_spatial, normalize=bool(normalize),
                         dtype=common_dtype(x, key, value), batched=batched,
                         channels_first=channels_first)

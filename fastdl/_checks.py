"""Argument validation shared by every op: the one place that raises for bad user input.

Everything here runs in Python before any compiled kernel: the numba and Cython kernels
run without bounds checks, so a shape or index that gets past these functions could read
or write outside an array. Messages name the argument and state expected vs actual.
"""

import numbers
import operator

import numpy as np

# Sizes, strides and paddings beyond this are rejected: the compiled kernels index with
# 64-bit integers, but no real tensor dimension is this large, and products of such
# values could overflow.
MAX_DIM = 2**31 - 1

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(name, value):
    """``value`` as an ndarray of float32 or float64 (integers and bools -> float64).

    Does not copy unless a conversion is needed; the caller decides about contiguity.
    """
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
    return np.result_type(*[a.dtype for a in arrays if a is not None])


def kernel_array(array, dtype):
    """A C-contiguous, native-order, writable-or-not copy-free-when-possible array."""
    return np.ascontiguousarray(array, dtype=dtype)


def check_rank(name, array, ranks, what):
    """Raise unless ``array.ndim`` is one of ``ranks``; ``what`` describes the layout."""
    if array.ndim not in ranks:
        expected = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"{name}: expected a {expected}-d array ({what}), got shape {array.shape}"
        )


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


def check_positive_finite(name, value):
    """A float > 0 and finite (eps and friends)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {value!r}")
    return value


def check_fraction(name, value, low_open=False, high_open=False):
    """A real number in [0, 1] (endpoints excluded where asked)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (np.isfinite(value) and low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name}: must be in {interval}, got {value!r}")
    return value


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
    """Validated convolution arguments, channels-last, batched, in the compute dtype."""

    __slots__ = ("x", "weight", "bias", "stride", "pads", "dilation", "groups",
                 "out_spatial", "dtype", "batched", "channels_first")

    def __init__(self, **fields):
        for key, value in fields.items():
            setattr(self, key, value)


def conv_arguments(nd, x, weight, bias, stride, padding, dilation, groups, layout):
    """Validate a conv{nd}d call; return a ConvSpec (arrays not yet copied)."""
    layout = check_layout(layout, CONV_LAYOUTS[nd])
    channels_first = layout[1] == "C"
    x = as_float_array("x", x)
    weight = as_float_array("weight", weight)
    bias = None if bias is None else as_float_array("bias", bias)

    check_rank("x", x, (nd + 1, nd + 2), f"{layout} or unbatched {layout[1:]}")
    wlayout = "O,C_in/groups," + ",".join("K" + s for s in _SPATIAL_NAMES[nd])
    if not channels_first:
        wlayout = ",".join("K" + s for s in _SPATIAL_NAMES[nd]) + ",C_in/groups,O"
    check_rank("weight", weight, (nd + 2,), f"({wlayout})")
    batched = x.ndim == nd + 2
    if not batched:
        x = x[np.newaxis]
    if channels_first:  # views only: the one copy happens when the kernel input is made
        x = np.moveaxis(x, 1, -1)
        weight = np.moveaxis(np.moveaxis(weight, 0, -1), 0, -2)
    kernel = weight.shape[:nd]
    in_per_group, out_channels = weight.shape[nd], weight.shape[nd + 1]
    in_channels = x.shape[-1]
    if min(kernel) == 0 or in_per_group == 0 or out_channels == 0:
        raise ValueError(f"weight: kernel and channel dims must be non-zero, got weight shape {weight.shape} "
                         f"(as {wlayout} after layout {layout!r})")
    if in_channels == 0:
        raise ValueError(f"x: the channel dim must be non-zero, got x shape {x.shape}")

    groups = as_int("groups", groups, minimum=1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups: {groups} must divide both input channels ({in_channels}) "
                         f"and output channels ({out_channels})")
    if in_per_group * groups != in_channels:
        raise ValueError(
            f"x: given groups={groups} and weight of shape {tuple(weight.shape)} "
            f"({wlayout}), expected input with {in_per_group * groups} channels, "
            f"but got {in_channels} channels (x shape {x.shape} as {layout})"
        )
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias: expected shape ({out_channels},) (one per output channel), "
                         f"got {bias.shape}")

    stride = int_tuple("stride", stride, nd, minimum=1)
    dilation = int_tuple("dilation", dilation, nd, minimum=1)
    pads = padding_pairs(padding, nd, kernel, dilation, stride)
    out_spatial = window_output_shape(x.shape[1:-1], kernel, stride, pads, dilation,
                                      _SPATIAL_NAMES[nd])
    return ConvSpec(x=x, weight=weight, bias=bias, stride=stride, pads=pads,
                    dilation=dilation, groups=groups, out_spatial=out_spatial,
                    dtype=common_dtype(x, weight, bias), batched=batched,
                    channels_first=channels_first)


def padded_channels_last(x, pads, dtype):
    """A new C-contiguous (N, *padded spatial, C) array: the one copy of the input,
    which also fixes dtype, byte order and memory layout."""
    if not any(lo or hi for lo, hi in pads):
        return np.ascontiguousarray(x, dtype=dtype)
    shape = (x.shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], pads)) + (x.shape[-1],)
    out = np.zeros(shape, dtype=dtype)
    interior = (slice(None),) + tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[1:-1], pads))
    out[interior] = x
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

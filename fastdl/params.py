"""Trainable-parameter counts of the layers fastdl implements (each returns an int)."""

import numpy as np

from . import _checks


def conv(kernel_size, in_channels, out_channels, bias=True, groups=1):
    """Parameters of a convolution: prod(kernel) * in/groups * out (+ out biases).

    ``kernel_size`` is a tuple whose length is the spatial rank, or an int for a square
    2-d kernel.
    """
    if isinstance(kernel_size, (tuple, list)):
        kernel = _checks.int_tuple("kernel_size", kernel_size, len(kernel_size), minimum=1)
    else:
        kernel = _checks.int_tuple("kernel_size", kernel_size, 2, minimum=1)
    in_channels = _checks.as_int("in_channels", in_channels, minimum=1)
    out_channels = _checks.as_int("out_channels", out_channels, minimum=1)
    groups = _checks.as_int("groups", groups, minimum=1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups: {groups} must divide in_channels ({in_channels}) "
                         f"and out_channels ({out_channels})")
    taps = 1
    for k in kernel:
        taps *= k
    return taps * (in_channels // groups) * out_channels + (out_channels if bias else 0)


def dense(n_in, n_out, bias=True):
    """Parameters of a dense layer: n_in * n_out weights (+ n_out biases)."""
    n_in = _checks.as_int("n_in", n_in, minimum=1)
    n_out = _checks.as_int("n_out", n_out, minimum=1)
    return n_in * n_out + (n_out if _bias_flag(bias) else 0)


def batch_norm(num_features):
    """Parameters of batch normalization: a gamma and a beta per feature (2 * F). The
    running mean and variance are statistics, not trainable parameters."""
    return 2 * _checks.as_int("num_features", num_features, minimum=1)


def sliding_window_attention(kernel_size, in_channels, out_channels):
    """Parameters of ``fastdl.sliding_window_attention``: the key (KH, KW, C_in, C_out)
    plus the value (KH, KW, C_out): KH*KW*C_in*C_out + KH*KW*C_out. ``kernel_size`` is
    an int (square window) or a (KH, KW) pair."""
    kh, kw = _checks.int_tuple("kernel_size", kernel_size, 2, minimum=1)
    in_channels = _checks.as_int("in_channels", in_channels, minimum=1)
    out_channels = _checks.as_int("out_channels", out_channels, minimum=1)
    return kh * kw * in_channels * out_channels + kh * kw * out_channels


def _bias_flag(bias):
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias: expected a bool, got {type(bias).__name__} {bias!r}")
    return bool(bias)

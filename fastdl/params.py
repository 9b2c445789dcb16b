"""Trainable-parameter counts of the layers fastdl implements (each returns an int)."""

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

"""Output sizes of sliding-window ops: the same arithmetic the ops use (fastdl._checks)."""

from . import _checks


def _as_sizes(name, value):
    if isinstance(value, (tuple, list)):
        return tuple(_checks.as_int(f"{name}[{i}]", v, minimum=0) for i, v in enumerate(value))
    return (_checks.as_int(name, value, minimum=0),)


def conv_output(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """Spatial output size of a convolution, e.g. ``conv_output((32, 32), 5) == (28, 28)``.

    ``input_size`` is a tuple of spatial sizes (an int means one spatial dim);
    ``kernel_size``, ``stride``, ``padding`` and ``dilation`` are ints or per-dim tuples;
    ``padding`` also takes "valid" and "same". Raises ValueError if the window does not fit.
    """
    spatial = _as_sizes("input_size", input_size)
    nd = len(spatial)
    kernel = _checks.int_tuple("kernel_size", kernel_size, nd, minimum=1)
    stride = _checks.int_tuple("stride", stride, nd, minimum=1)
    dilation = _checks.int_tuple("dilation", dilation, nd, minimum=1)
    pads = _checks.padding_pairs(padding, nd, kernel, dilation, stride)
    return _checks.window_output_shape(spatial, kernel, stride, pads, dilation)


def pool_output(input_size, size, stride=None, padding=0):
    """Spatial output size of a 2-d pooling, e.g. ``pool_output((128, 128), 2) == (64, 64)``.

    ``input_size`` is an (H, W) tuple; ``size``, ``stride`` (default: ``size``) and
    ``padding`` are ints or (h, w) tuples, with the rules of ``fastdl.max_pool2d``
    (padding at most half the window). Raises ValueError if the window does not fit.
    """
    spatial = _as_sizes("input_size", input_size)
    if len(spatial) != 2:
        raise ValueError(f"input_size: expected (H, W), got {input_size!r}")
    return _checks.pool_geometry(spatial, size, stride, padding)[3]

"""fastdl: fast CPU deep-learning kernels behind one NumPy-style API.

Backends: "numba" and "cython" (compiled, multi-threaded) and "numpy" (reference). See
``backends()`` for which are available here and ``use_backend`` to choose one.
"""

from ._dispatch import (
    BackendUnavailable,
    backends,
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    use_backend,
)
from .conv import conv1d, conv2d, conv3d
from .attention import sliding_window_attention
from . import params, shapes

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "backends", "get_backend", "get_num_threads", "set_backend",
    "set_num_threads", "use_backend",
    "conv1d", "conv2d", "conv3d",
    "sliding_window_attention",
    "params", "shapes",
]

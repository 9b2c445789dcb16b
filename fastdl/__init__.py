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
from .norm import batch_norm, forward_batchnorm
from .pool import avg_pool2d, max_pool2d
from .attention import sliding_window_attention
from . import params, shapes

# --- exam functions (nn, losses, optim, regularization, adversarial, metrics) ---
from .nn import clip_grad_norm, dense, dropout, relu, sigmoid, softmax, tanh
from .optim import optim_adam
from . import adversarial, losses, metrics, nn, optim, regularization

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable", "backends", "get_backend", "get_num_threads", "set_backend",
    "set_num_threads", "use_backend",
    "conv1d", "conv2d", "conv3d",
    "batch_norm", "forward_batchnorm",
    "max_pool2d", "avg_pool2d",
    "sliding_window_attention",
    "params", "shapes",
    # exam functions
    "dense", "sigmoid", "relu", "tanh", "softmax", "dropout", "clip_grad_norm", "optim_adam",
    "nn", "losses", "optim", "regularization", "adversarial", "metrics",
]

"""Numba backend: one module per op family, each with the same signatures as the other
backends. This package holds the one configuration every numba kernel shares."""

import os
import threading

import numba

# Numba's default "workqueue" threading layer aborts when two Python threads launch
# parallel kernels at once. Ask for a thread-safe layer (tbb or omp) unless the user has
# explicitly chosen one; if numba still ends up on workqueue (the user launched parallel
# numba code before importing fastdl), run_parallel() serialises our kernels instead.
_SAFE_LAYERS = ("omp", "tbb", "safe", "threadsafe")
if os.environ.get("NUMBA_THREADING_LAYER", "").lower() not in _SAFE_LAYERS:
    numba.config.THREADING_LAYER = "threadsafe"

# fastmath without "nnan"/"ninf": NaN and Inf keep their IEEE meaning.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def njit_parallel(*args, **kwargs):
    """``@njit(parallel=True)`` with the project's cache and fastmath settings."""
    return numba.njit(*args, parallel=True, cache=True, fastmath=FASTMATH, nogil=True, **kwargs)


def njit_serial(*args, **kwargs):
    """``@njit`` for helpers and small-input paths, same settings, no threading."""
    return numba.njit(*args, cache=True, fastmath=FASTMATH, nogil=True, **kwargs)


_workqueue_lock = threading.Lock()
_safe_layer_running = False  # set once a parallel kernel ran on a thread-safe layer


def run_parallel(kernel, num_threads, *args):
    """Call a parallel kernel on ``num_threads`` threads (numba's count is thread-local)."""
    global _safe_layer_running
    numba.set_num_threads(num_threads)
    if _safe_layer_running:  # the layer never changes once chosen: skip the lookup
        return kernel(*args)
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        layer = None
    if layer == "workqueue" or layer is None:
        # The first launch picks the layer; serialise it, and every later one if the
        # layer turned out to be the unsafe workqueue.
        with _workqueue_lock:
            return kernel(*args)
    _safe_layer_running = True
    return kernel(*args)

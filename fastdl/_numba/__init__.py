"""Numba backend: one module per op family, each with the same signatures as the other
backends. This package holds the one configuration every numba kernel shares."""

import os
import threading
import types

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


def njit_parallel(function):
    """``@njit(parallel=True)`` with the project's cache and fastmath settings.

    The kernel also gets a serial twin, ``kernel.serial``: the same function compiled
    without threading (prange runs as range), which run_parallel() calls for one thread.
    Entering a parallel region costs 1-2 us even on one thread, a third of a tiny call's
    kernel time (measured: batch-norm statistics of 128x16 values 3.7 vs 1.3 us). The twin
    compiles on its first call only."""
    kernel = numba.njit(function, parallel=True, cache=True, fastmath=FASTMATH, nogil=True)
    kernel.serial = njit_serial(_renamed(function, "_serial"))
    return kernel


def njit_serial(*args, **kwargs):
    """``@njit`` for helpers and small-input paths, same settings, no threading."""
    return numba.njit(*args, cache=True, fastmath=FASTMATH, nogil=True, **kwargs)


def _renamed(function, suffix):
    """A copy of ``function`` under another name: numba's on-disk cache is keyed by the
    qualified name and the code, not the compile flags, so the serial twin must not share
    the parallel kernel's name (each would load the other's machine code)."""
    twin = types.FunctionType(function.__code__, function.__globals__,
                              function.__name__ + suffix, function.__defaults__,
                              function.__closure__)
    twin.__qualname__ = function.__qualname__ + suffix
    twin.__doc__ = function.__doc__
    return twin


_workqueue_lock = threading.Lock()
_safe_layer_running = False  # set once a parallel kernel ran on a thread-safe layer
_pool_started = False


def run_parallel(kernel, num_threads, *args):
    """Call a parallel kernel on ``num_threads`` threads (numba's count is thread-local);
    one thread runs its serial twin instead."""
    global _safe_layer_running, _pool_started
    if not _pool_started:
        # The first call starts numba's pool, which fixes the threading layer (the one
        # asked for above), also when the call itself runs serially.
        numba.set_num_threads(num_threads)
        _pool_started = True
    if num_threads == 1:
        return kernel.serial(*args)
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

"""Concurrent calls from several Python threads are safe and right on every backend.

Numba's default workqueue threading layer aborts the process when two threads launch
parallel kernels at once, so each scenario runs in a subprocess (run_isolated): an abort
fails the test instead of killing pytest. The very first kernel launch happens inside
the threads, which is when numba picks its threading layer.
"""

from pathlib import Path

import pytest

from helpers import run_isolated

ROOT = Path(__file__).resolve().parents[1]
N_THREADS, CALLS_PER_THREAD = 8, 50

SCRIPT = """
import os, sys, threading
{environment}
sys.path.insert(0, {root!r})
import numpy as np
import fastdl
from fastdl.reference import conv_nd

backend = {backend!r}
fastdl.set_num_threads(min(2, fastdl._dispatch.max_num_threads()))
rng = np.random.default_rng(0)
# Different inputs (and dtypes) per call, so results crossing between threads show up.
problems = []
for i in range(4):
    dtype = (np.float32, np.float64)[i % 2]
    x = rng.standard_normal((2, 10 + i, 9, 3)).astype(dtype)
    w = rng.standard_normal((3, 3, 3, 4 + i)).astype(dtype)
    problems.append((x, w, conv_nd(x, w, padding=1)))

failures = []
def worker(t):
    try:
        for call in range({calls}):
            x, w, expected = problems[(t + call) % len(problems)]
            out = fastdl.conv2d(x, w, padding=1, backend=backend)
            tol = (1e-4 if x.dtype == np.float32 else 1e-12) * np.abs(expected).max()
            if out.dtype != x.dtype or out.shape != expected.shape or \\
                    not np.max(np.abs(out - expected)) <= tol:
                failures.append((t, call, "wrong result"))
    except Exception as exc:
        failures.append((t, call, repr(exc)))

threads = [threading.Thread(target=worker, args=(t,)) for t in range({threads})]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("failures:", failures[:5], len(failures))
if backend == "numba":
    import numba
    print("threading layer:", numba.threading_layer())
print("done")
"""


USER_KERNEL_ON_WORKQUEUE = """
import numba, numpy
numba.config.THREADING_LAYER = "workqueue"
@numba.njit(parallel=True)
def user_kernel(a):
    for i in numba.prange(a.size):
        a[i] += 1.0
user_kernel(numpy.zeros(64))
"""


def run_threads(backend, environment=""):
    rc, out, err = run_isolated(SCRIPT.format(
        environment=environment, root=str(ROOT), backend=backend, calls=CALLS_PER_THREAD,
        threads=N_THREADS), timeout=240)
    assert rc == 0, f"subprocess died with code {rc}\nstdout: {out[-1000:]}\nstderr: {err[-3000:]}"
    lines = out.splitlines()
    assert lines[0] == "failures: [] 0" and lines[-1] == "done", out
    print(out)  # the threading layer, visible with -s
    return lines


def test_concurrent_calls(backend):
    lines = run_threads(backend)
    if backend == "numba":
        # the layer fastdl asks for is thread-safe
        assert lines[1] in ("threading layer: omp", "threading layer: tbb"), lines


@pytest.mark.parametrize("backend", ["numba"], indirect=True)
def test_concurrent_calls_on_the_unsafe_workqueue_layer(backend):
    """A program that launched its own parallel numba code on the workqueue layer before
    fastdl loaded its kernels gets serialised fastdl kernels, not an abort."""
    lines = run_threads(backend, USER_KERNEL_ON_WORKQUEUE)
    assert lines[1] == "threading layer: workqueue", lines

"""pytest-benchmark suite: the cases of ``fastdl.bench`` (the one registry), one group per
op x shape x layout x dtype, one entry per backend plus "torch" and "naive".

    pytest benchmarks/ --benchmark-only                  # full suite, float32 and float64
    FASTDL_BENCH_QUICK=1 pytest benchmarks/ --benchmark-only   # the --quick cases, float32

FASTDL_BENCH_DTYPES=float32,float64 overrides the dtypes; FASTDL_BENCH_THREADS the thread
count (default: the usable cores), applied to fastdl and torch alike.

For clean numbers run one backend per pytest process. This suite runs every entry in
one process, and on few cores the OpenMP / BLAS thread pools of one library (torch's
own libgomp, the system libgomp of numba's omp layer and the Cython extension, numpy's
OpenBLAS) keep spinning after its calls and steal the cores from the next library's
threads (a small numba conv2d: 126 us alone, 7.9 ms right after a torch conv).
``python -m fastdl.bench`` avoids that with a worker process per backend; here, select
one entry kind per run (the test ids end in the entry's name) and compare saved runs:

    for entry in numba cython numpy torch naive; do
        pytest benchmarks/ --benchmark-only -k "$entry" --benchmark-save="$entry"
    done
    pytest-benchmark compare --group-by=group     # or compare the saved JSON files
"""

import os

import pytest

import fastdl
from fastdl import bench


@pytest.fixture(scope="session", autouse=True)
def same_threads_everywhere():
    threads = int(os.environ.get("FASTDL_BENCH_THREADS", 0)) or fastdl.get_num_threads()
    with bench.same_threads(threads):
        yield threads


_inputs_cache = {}


@pytest.fixture(scope="session")
def case_inputs():
    """Inputs of one (case, dtype); only the latest pair is kept, since the exam-sized
    cases hold hundreds of MB and the entries of a case run one after another."""

    def get(case, dtype):
        key = (case, dtype)
        if key not in _inputs_cache:
            _inputs_cache.clear()
            _inputs_cache[key] = bench.make_inputs(case, dtype)
        return _inputs_cache[key]

    return get

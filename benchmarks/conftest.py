"""pytest-benchmark suite: the cases of ``fastdl.bench`` (the one registry), one group per
op x shape x layout x dtype, one entry per backend plus "torch" and "naive".

    pytest benchmarks/ --benchmark-only                  # full suite, float32 and float64
    FASTDL_BENCH_QUICK=1 pytest benchmarks/ --benchmark-only   # the --quick cases, float32

FASTDL_BENCH_DTYPES=float32,float64 overrides the dtypes; FASTDL_BENCH_THREADS the thread
count (default: the usable cores), applied to fastdl and torch alike.
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

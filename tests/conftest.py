"""Shared fixtures: every op test is parametrized over backend and dtype.

A backend that is not available here is skipped, unless FASTDL_TEST_STRICT=1 (CI sets
it): then a missing backend, or missing torch for the oracle tests, is a failure, so CI
can never pass by skipping.
"""

import json
import os

import numpy as np
import pytest

import fastdl
from helpers import exam_cases_path

STRICT = os.environ.get("FASTDL_TEST_STRICT", "") not in ("", "0")
BACKENDS = ("numba", "cython", "numpy")
DTYPES = (np.float32, np.float64)


def require(available, why):
    if available:
        return
    if STRICT:
        pytest.fail(f"FASTDL_TEST_STRICT=1 but {why}")
    pytest.skip(f"{why} (not available)")


@pytest.fixture(autouse=True)
def parallel_even_when_small(monkeypatch):
    """Tests use small arrays; without this, batch norm and pooling would run them on one
    thread (fastdl._dispatch.SERIAL_VALUES) and never exercise the parallel code paths
    (chunk merges, C < threads). test_dispatch.py tests the threshold itself."""
    import fastdl._dispatch
    monkeypatch.setattr(fastdl._dispatch, "SERIAL_VALUES", 0)


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each backend name; skipped (failed under strict) where unavailable."""
    status = fastdl.backends()[request.param]
    require(status == "available", f"backend {request.param} is unavailable: {status}")
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def torch():
    """The torch module, as oracle: float64 computations only."""
    try:
        import torch as torch_module
    except ImportError:
        torch_module = None
    require(torch_module is not None, "torch is not installed (pip install torch==2.13.0)")
    return torch_module


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def exam_cases():
    """The exams' worked answers (shared/exam_cases.json); skipped if absent, failed
    under FASTDL_TEST_STRICT=1."""
    path = exam_cases_path()
    require(path is not None, "shared/exam_cases.json was not found (set FASTDL_EXAM_CASES)")
    return json.loads(path.read_text())

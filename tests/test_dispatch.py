"""Backend registry and selection, thread count, and what ``import fastdl`` costs."""

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import fastdl
import fastdl._dispatch as dispatch

from conftest import BACKENDS, require
from helpers import run_isolated

ROOT = Path(__file__).resolve().parents[1]
AVAILABLE = [b for b in BACKENDS if fastdl.backends()[b] == "available"]


@pytest.fixture(autouse=True)
def clean_selection(monkeypatch):
    """Every test starts from the default selection and leaves no global state behind."""
    monkeypatch.delenv("FASTDL_BACKEND", raising=False)
    monkeypatch.setattr(dispatch, "_global_backend", None)
    monkeypatch.setattr(dispatch, "_num_threads", None)
    yield


@pytest.fixture
def kernel_calls(monkeypatch):
    """Records which backend's conv kernel each call actually ran."""
    calls = []
    for name in AVAILABLE:
        module = dispatch.kernels("conv", name)
        real = module.conv_ndhwc

        def spy(*args, _name=name, _real=real):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(module, "conv_ndhwc", spy)
    return calls


def small_conv(**kwargs):
    return fastdl.conv2d(np.ones((1, 4, 4, 2)), np.ones((3, 3, 2, 1)), **kwargs)


def need(*names):
    missing = [n for n in names if n not in AVAILABLE]
    require(not missing, f"backends {missing} are unavailable")


def test_backends_lists_every_backend_with_status():
    status = fastdl.backends()
    assert list(status) == ["numba", "cython", "numpy"]
    for name, value in status.items():
        assert isinstance(value, str) and value, name
        if value != "available":
            assert len(value) > 10, f"{name}: reason {value!r} says too little"
    assert status["numpy"] == "available"


def test_default_is_first_available():
    assert fastdl.get_backend() == AVAILABLE[0]


def test_set_backend_and_reset():
    for name in AVAILABLE:
        fastdl.set_backend(name)
        assert fastdl.get_backend() == name
    fastdl.set_backend("auto")
    assert fastdl.get_backend() == AVAILABLE[0]
    fastdl.set_backend("numpy")
    fastdl.set_backend(None)
    assert fastdl.get_backend() == AVAILABLE[0]


def test_use_backend_nests_and_restores():
    need("cython")
    fastdl.set_backend("cython")
    with fastdl.use_backend("numpy"):
        assert fastdl.get_backend() == "numpy"
        with fastdl.use_backend("cython"):
            assert fastdl.get_backend() == "cython"
            with fastdl.use_backend("auto"):
                assert fastdl.get_backend() == AVAILABLE[0]
            assert fastdl.get_backend() == "cython"
        assert fastdl.get_backend() == "numpy"
    assert fastdl.get_backend() == "cython"


def test_use_backend_restores_on_exception():
    with pytest.raises(KeyError):
        with fastdl.use_backend("numpy"):
            with fastdl.use_backend("numpy"):
                raise KeyError("boom")
    assert fastdl.get_backend() == AVAILABLE[0]


def test_use_backend_is_local_to_a_thread():
    need("numpy")
    entered, checked = threading.Event(), threading.Event()
    seen = {}

    def inside():
        with fastdl.use_backend("numpy"):
            seen["inside"] = fastdl.get_backend()
            entered.set()
            checked.wait(10)

    def outside():
        entered.wait(10)
        seen["other thread"] = fastdl.get_backend()
        checked.set()

    threads = [threading.Thread(target=inside), threading.Thread(target=outside)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"inside": "numpy", "other thread": AVAILABLE[0]}
    assert fastdl.get_backend() == AVAILABLE[0]


def test_most_specific_selection_wins(kernel_calls, monkeypatch):
    need("cython", "numpy")
    fallback = AVAILABLE[0]
    small_conv()
    monkeypatch.setenv("FASTDL_BACKEND", "numpy")
    small_conv()
    fastdl.set_backend("cython")  # beats the environment variable
    small_conv()
    with fastdl.use_backend("numpy"):  # beats set_backend
        small_conv()
        small_conv(backend="cython")  # the call's own backend= beats everything
    small_conv()
    assert kernel_calls == [fallback, "numpy", "cython", "numpy", "cython", "cython"]


def test_environment_variable_is_read_on_every_call(monkeypatch):
    """Set, changed, emptied and removed while the process runs (the variable is looked
    up without os.environ.get when unset, see _dispatch._environment_backend)."""
    need("numpy")
    monkeypatch.delenv("FASTDL_BACKEND", raising=False)
    assert fastdl.get_backend() == AVAILABLE[0]
    monkeypatch.setenv("FASTDL_BACKEND", "numpy")
    assert fastdl.get_backend() == "numpy"
    monkeypatch.setenv("FASTDL_BACKEND", AVAILABLE[0])
    assert fastdl.get_backend() == AVAILABLE[0]
    monkeypatch.setenv("FASTDL_BACKEND", "")  # empty: not set
    assert fastdl.get_backend() == AVAILABLE[0]
    monkeypatch.setenv("FASTDL_BACKEND", "fortran")
    with pytest.raises(ValueError, match="FASTDL_BACKEND.*fortran"):
        fastdl.get_backend()
    monkeypatch.delenv("FASTDL_BACKEND")
    assert fastdl.get_backend() == AVAILABLE[0]


def test_environment_variable_in_a_fresh_process():
    code = f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import fastdl
        print(fastdl.get_backend())
        fastdl.set_backend("numpy")
        fastdl.set_backend(None)  # back to "not set": the variable counts again
        print(fastdl.get_backend())
        with fastdl.use_backend("auto"):
            print(fastdl.get_backend())
        print(fastdl.get_backend() == fastdl.get_backend())
    """
    for name in AVAILABLE:
        env = dict(os.environ, FASTDL_BACKEND=name)
        rc, out, err = run_env(code, env)
        assert rc == 0, err
        lines = out.split()
        assert lines[0] == name and lines[1] == name and lines[3] == "True"
        # use_backend("auto") is explicit: the default order, whatever the variable says
        assert lines[2] == AVAILABLE[0]
    rc, out, err = run_env(code, dict(os.environ, FASTDL_BACKEND="fortran"))
    assert rc != 0 and "ValueError" in err and "FASTDL_BACKEND" in err and "fortran" in err


def run_env(code, env):
    import subprocess
    import textwrap

    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("bad", ["bogus", "Numba", "", 1, 2.5])
def test_unknown_backend_name(bad):
    with pytest.raises(ValueError, match="backend"):
        fastdl.set_backend(bad)
    with pytest.raises(ValueError, match="backend"):
        with fastdl.use_backend(bad):
            pass
    with pytest.raises(ValueError, match="backend"):
        small_conv(backend=bad)
    assert fastdl.get_backend() == AVAILABLE[0]


def test_unavailable_backend_names_the_reason(monkeypatch):
    fastdl.backends()  # fill the cache, then pretend the C extension did not build
    reason = "the C extension failed to build: conv: no C compiler found"
    monkeypatch.setitem(dispatch._status, "cython", reason)
    assert fastdl.backends()["cython"] == reason
    with pytest.raises(fastdl.BackendUnavailable, match="no C compiler found"):
        small_conv(backend="cython")
    with fastdl.use_backend("cython"):
        with pytest.raises(fastdl.BackendUnavailable, match="use_backend.*no C compiler"):
            small_conv()
    fastdl.set_backend("cython")  # accepted (the name is right); the call says why not
    with pytest.raises(fastdl.BackendUnavailable, match="set_backend.*no C compiler"):
        small_conv()
    fastdl.set_backend(None)
    # "auto" skips what is unavailable
    monkeypatch.setitem(dispatch._status, "numba", "numba is not importable: ImportError: x")
    assert fastdl.get_backend() == "numpy"
    assert small_conv().shape == (1, 2, 2, 1)
    monkeypatch.setitem(dispatch._status, "numpy", "pretend")
    with pytest.raises(fastdl.BackendUnavailable, match="no backend is available"):
        small_conv()


def test_num_threads_validation():
    default = fastdl.get_num_threads()
    assert isinstance(default, int) and default >= 1
    top = dispatch.max_num_threads()
    assert default <= top
    for n in (1, top):
        fastdl.set_num_threads(n)
        assert fastdl.get_num_threads() == n
    for bad in (0, -1, top + 1, 2**70, 1.0, 1.5, True, "2", None):
        with pytest.raises((ValueError, TypeError), match="set_num_threads"):
            fastdl.set_num_threads(bad)
        assert fastdl.get_num_threads() == top  # unchanged by a rejected value


@pytest.mark.parametrize("name", ["numba", "cython"])
def test_thread_count_does_not_change_results(name):
    need(name)
    if dispatch.max_num_threads() < 2:
        pytest.skip("a second thread is not available on this machine")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 17, 19, 5)).astype(np.float32)
    w = rng.standard_normal((3, 4, 5, 8)).astype(np.float32)
    results = []
    for n in (1, 2, 1):
        fastdl.set_num_threads(n)
        results.append(fastdl.conv2d(x, w, padding=(1, 2), stride=(2, 1), backend=name))
    # each output element is computed by one thread in the same order: bitwise equal
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])
    ref = fastdl.conv2d(x.astype(np.float64), w.astype(np.float64), padding=(1, 2),
                        stride=(2, 1), backend="numpy")
    assert np.max(np.abs(results[1] - ref)) < 1e-4 * np.max(np.abs(ref))


@pytest.mark.parametrize("name", ["numba", "cython"])
def test_small_inputs_run_serially_with_the_same_results(name, monkeypatch):
    """Below SERIAL_VALUES, memory-bound ops run on the calling thread only (waking the
    pool costs more than it saves); the results are those of the parallel run."""
    need(name)
    threshold = 1 << 16
    monkeypatch.setattr(dispatch, "SERIAL_VALUES", threshold)
    assert dispatch.threads_for(threshold - 1) == 1
    assert dispatch.threads_for(threshold) == fastdl.get_num_threads()
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 9, 9, 4)) * 3 + 7).astype(np.float32)
    gamma, beta = np.full(4, 1.5, np.float32), np.full(4, -0.5, np.float32)
    serial = (fastdl.batch_norm(x, gamma, beta, backend=name),
              fastdl.max_pool2d(x, 3, 2, 1, backend=name))
    monkeypatch.setattr(dispatch, "SERIAL_VALUES", 0)
    parallel = (fastdl.batch_norm(x, gamma, beta, backend=name),
                fastdl.max_pool2d(x, 3, 2, 1, backend=name))
    np.testing.assert_allclose(serial[0], parallel[0], rtol=1e-5, atol=1e-5)
    assert np.array_equal(serial[1], parallel[1])  # max is exact whatever the split


def test_import_is_lazy():
    """``import fastdl`` imports neither numba nor any kernel module; asking which
    backends are available imports them but compiles no numba kernel."""
    rc, out, err = run_isolated(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import fastdl
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("numba", "llvmlite")
                        or m.startswith(("fastdl._numba", "fastdl._cy.", "fastdl._numpy")))
        print("after import:", loaded)
        status = fastdl.backends()
        if status["numba"] == "available":
            from numba.core.dispatcher import Dispatcher
            from fastdl._numba import conv
            kernels = [v for v in vars(conv).values() if isinstance(v, Dispatcher)]
            assert kernels, "no numba kernels found in fastdl._numba.conv"
            print("compiled:", [s for k in kernels for s in k.signatures])
        else:
            print("compiled:", [])
    """)
    assert rc == 0, err
    assert out.splitlines() == ["after import: []", "compiled: []"]


def test_a_cython_call_loads_neither_numba_nor_scipy_blas():
    """A call on the cython backend probes that backend only, and paths that need no
    GEMM do not import scipy.linalg (together ~0.3 s of a fresh process's first call);
    a GEMM-path call then loads BLAS and is right."""
    need("cython")
    rc, out, err = run_isolated(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        import numpy as np
        import fastdl
        x = np.arange(2 * 9 * 9 * 3, dtype=np.float32).reshape(2, 9, 9, 3) / 100
        w = np.ones((3, 3, 3, 8), np.float32)
        y = fastdl.conv2d(x, w, padding=1, backend="cython")
        print(sorted({{m.split(".")[0] for m in sys.modules if m.split(".")[0] == "numba"}}
                     | {{m for m in sys.modules if m == "scipy.linalg"}}))
        x = np.ones((1, 12, 12, 32), np.float32)
        w = np.ones((3, 3, 32, 72), np.float32)  # more than SMALL_MAX_OUT channels
        plan = fastdl._conv_plan.choose((1, 1, 10, 10, 72), (1, 3, 3, 32, 72), (1, 1, 1), 1, 1, 4)
        assert plan[0] == fastdl._conv_plan.SHIFTED, plan
        y = fastdl.conv2d(x, w, backend="cython")  # a GEMM path: BLAS
        print("scipy.linalg" in sys.modules, float(y.min()), float(y.max()))
    """)
    assert rc == 0, err
    assert out.splitlines() == ["[]", "True 288.0 288.0"]


def test_auto_and_none_both_restore_the_default(monkeypatch):
    monkeypatch.setenv("FASTDL_BACKEND", "numpy")
    for reset in ("auto", None):
        fastdl.set_backend(AVAILABLE[0] if AVAILABLE[0] != "numpy" else "cython")
        fastdl.set_backend(reset)
        assert fastdl.get_backend() == "numpy", reset  # the variable applies again
    with fastdl.use_backend(None):  # None: no override inside the block
        assert fastdl.get_backend() == "numpy"


def test_set_num_threads_types():
    before = fastdl.get_num_threads()
    try:
        fastdl.set_num_threads(np.int64(1))
        assert fastdl.get_num_threads() == 1
        for bad in ("2", 1.5, True):
            with pytest.raises(TypeError, match="set_num_threads"):
                fastdl.set_num_threads(bad)
    finally:
        fastdl.set_num_threads(before)


@pytest.mark.parametrize("family", dispatch.FAMILIES)
def test_every_backend_of_a_family_has_the_same_functions(family):
    """One module per backend with identical public functions (names and parameters):
    the op wrappers call them without asking which backend they got."""
    import inspect

    def public(module):
        functions = {}
        for name in dir(module):
            value = getattr(module, name)
            if name.startswith("_") or not callable(value) or isinstance(value, type):
                continue
            if getattr(value, "__module__", module.__name__) not in (module.__name__, None):
                continue  # imported helpers (np, prange, ...)
            try:
                functions[name] = list(inspect.signature(value).parameters)
            except (TypeError, ValueError):  # a C function without a signature
                functions[name] = None
        return functions

    available = [b for b in BACKENDS if fastdl.backends()[b] == "available"]
    require(len(available) == len(BACKENDS), f"not every backend is available: {fastdl.backends()}")
    found = {b: public(dispatch.kernels(family, b)) for b in available}
    names = {b: sorted(f) for b, f in found.items()}
    assert names["numba"] == names["cython"] == names["numpy"], names
    for name in names["numpy"]:
        signatures = {b: found[b][name] for b in available if found[b][name] is not None}
        assert len({tuple(s) for s in signatures.values()}) == 1, (name, signatures)

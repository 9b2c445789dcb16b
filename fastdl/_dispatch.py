"""Backend registry and selection, and the thread count the compiled backends use.

Every op family (``conv``, ``norm``, ...) has one module per backend with identical
function signatures: ``fastdl._numba.<family>``, ``fastdl._cy.<family>`` (compiled from
``kernels/<family>.pyx``) and ``fastdl._numpy.<family>``. Public functions validate their
arguments, then call ``kernels(family, backend)`` and run the function of that name.

Selection, most specific first: the call's ``backend=``; ``use_backend(...)`` (a context
variable, so it is local to the thread / task that entered it); ``set_backend(...)``;
the FASTDL_BACKEND environment variable; ``"auto"`` = numba, else cython, else numpy.
"""

import contextlib
import contextvars
import importlib
import json
import os
import sys
import threading

BACKENDS = ("numba", "cython", "numpy")
# The op families whose kernels every backend provides. A backend is available only when
# all of them import, so a partial build never answers some calls and fails others.
FAMILIES = ("conv", "norm", "pool", "attention")
_PACKAGES = {"numba": "fastdl._numba", "cython": "fastdl._cy", "numpy": "fastdl._numpy"}


class BackendUnavailable(RuntimeError):
    """Raised when a backend that was asked for cannot be used; says what is missing."""


_global_backend = None  # set_backend(); None means "not set"
_context_backend = contextvars.ContextVar("fastdl_backend", default=None)
_lock = threading.Lock()
_status = {}  # backend -> "available" | reason, filled lazily
_num_threads = None


def _probe(backend):
    """Import every family of one backend; return "available" or the reason it is not."""
    if backend == "numba":
        try:
            import numba  # noqa: F401
        except Exception as exc:  # ImportError, or a broken llvmlite
            return f"numba is not importable: {type(exc).__name__}: {exc}"
    if backend == "cython":
        failures = _cython_build_failures()
        if failures:
            return "the C extension failed to build: " + "; ".join(
                f"{name}: {why}" for name, why in sorted(failures.items())
            )
    for family in FAMILIES:
        module = f"{_PACKAGES[backend]}.{family}"
        try:
            importlib.import_module(module)
        except Exception as exc:
            if backend == "cython":
                return (
                    f"{module} is not built ({type(exc).__name__}: {exc}); reinstall "
                    "with a C compiler and OpenMP, e.g. FASTDL_REQUIRE_EXTENSIONS=1 "
                    "pip install fastdl, to see the build error"
                )
            return f"{module} failed to import: {type(exc).__name__}: {exc}"
    return "available"


def _cython_build_failures():
    path = os.path.join(os.path.dirname(__file__), "_cy", "_build_failures.json")
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def backends():
    """Map each backend, in preference order, to "available" or why it is not."""
    return {name: _status_of(name) for name in BACKENDS}


_NAMES = frozenset(BACKENDS + ("auto",))


def _check_name(backend, source):
    if not isinstance(backend, str) or backend not in _NAMES:
        raise ValueError(
            f"{source}: unknown backend {backend!r}; expected one of "
            f"{', '.join(repr(b) for b in BACKENDS + ('auto',))}"
        )
    return backend


def set_backend(backend):
    """Choose the backend for every later call ("auto" or None restores the default)."""
    global _global_backend
    if backend is not None:
        _check_name(backend, "set_backend")
    # "auto" means "not set": FASTDL_BACKEND, if given, applies again.
    _global_backend = None if backend in (None, "auto") else backend


def get_backend():
    """The backend a call without ``backend=`` would use now (resolved, never "auto")."""
    return resolve(None)


@contextlib.contextmanager
def use_backend(backend):
    """Context manager: calls inside the block use ``backend`` unless they name one."""
    if backend is not None:  # None: no override inside the block
        _check_name(backend, "use_backend")
    token = _context_backend.set(backend)
    try:
        yield
    finally:
        _context_backend.reset(token)


# os.environ.get of an unset variable costs ~0.7 us (a KeyError raised and caught), a
# quarter of a small call; os.environ keeps its encoded items in _data (CPython since 3.2),
# which a plain dict lookup reads in 0.04 us and which os.environ's writes keep current.
_ENVIRON_DATA = getattr(os.environ, "_data", None)
try:
    _ENVIRON_KEY = os.environ.encodekey("FASTDL_BACKEND")
except AttributeError:
    _ENVIRON_DATA = None


def _environment_backend():
    """The FASTDL_BACKEND variable's current value, or None (also when empty)."""
    if type(_ENVIRON_DATA) is dict and _ENVIRON_KEY not in _ENVIRON_DATA:
        return None  # unset, the common case, answered without os.environ.get
    return os.environ.get("FASTDL_BACKEND") or None


def resolve(backend=None):
    """The concrete backend name for a call; raises BackendUnavailable if unusable."""
    if backend is not None:
        requested, source = _check_name(backend, "backend="), "backend="
    elif _context_backend.get() is not None:
        requested, source = _context_backend.get(), "use_backend()"
    elif _global_backend is not None:
        requested, source = _global_backend, "set_backend()"
    elif (environment := _environment_backend()) is not None:
        requested, source = _check_name(environment, "FASTDL_BACKEND"), "FASTDL_BACKEND"
    else:
        requested, source = "auto", "default"
    if requested == "auto":
        for name in BACKENDS:
            if _status_of(name) == "available":
                return name
        raise BackendUnavailable(f"no backend is available: {backends()}")
    status = _status_of(requested)
    if status != "available":
        raise BackendUnavailable(
            f"backend {requested!r} (chosen by {source}) is unavailable: {status}"
        )
    return requested


def _status_of(backend):
    """"available" or why not, probing only this backend (a call on cython must not pay
    for importing numba) and taking the lock only the first time."""
    status = _status.get(backend)
    if status is None:
        with _lock:
            status = _status.get(backend)
            if status is None:
                status = _status[backend] = _probe(backend)
    return status


_modules = {}  # (package, family) -> imported kernel module
# (family, backend named in the call) -> its module, once resolved: a call naming an
# available backend then skips resolve() (0.2 us of a 3 us small call).
_named_modules = {}


def kernels(family, backend=None):
    """The kernel module of ``family`` for the resolved backend."""
    module = _named_modules.get((family, backend))
    if module is not None and _status.get(backend) == "available":
        return module
    key = (_PACKAGES[resolve(backend)], family)
    module = _modules.get(key)
    if module is None:
        module = _modules[key] = importlib.import_module(f"{key[0]}.{family}")
    if backend is not None and backend != "auto":
        _named_modules[(family, backend)] = module
    return module


def default_num_threads():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_num_threads():
    """The most threads the compiled backends can use (numba's pool size)."""
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            return int(numba.config.NUMBA_NUM_THREADS)
        except Exception:
            return default_num_threads()
    # numba not imported yet (a cython- or numpy-only process need not pay ~0.15 s for
    # it): numba's own default, the NUMBA_NUM_THREADS variable or the usable cores.
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        return default_num_threads()


def set_num_threads(n):
    """Threads used by the numba and cython kernels (1 .. the machine's cores)."""
    global _num_threads
    from ._checks import as_int  # _checks imports numpy only; keep this module light

    n = as_int("set_num_threads: n", n, minimum=1)
    if n > max_num_threads():
        raise ValueError(f"set_num_threads: n must be in [1, {max_num_threads()}], got {n}")
    _num_threads = n


_default_threads = None


def get_num_threads():
    """Threads the compiled kernels use; defaults to the cores available to the process."""
    global _default_threads
    if _num_threads is not None:
        return _num_threads
    if _default_threads is None:  # affinity is read once: a syscall per call is overhead
        _default_threads = min(default_num_threads(), max_num_threads())
    return _default_threads


# Below this many array values, a memory-bound kernel (batch norm, pooling) runs on the
# calling thread alone: waking the thread pool costs 10-30 us on an idle machine and far
# more on a loaded one, while one core streams 64K float32 values in about 20 us.
SERIAL_VALUES = 1 << 16


def threads_for(values):
    """Threads for a memory-bound kernel call that streams ``values`` array values."""
    return 1 if values < SERIAL_VALUES else get_num_threads()

"""Benchmarks: every backend of every hot op against PyTorch and the naive references.

``python -m fastdl.bench`` prints one table (op, shape, layout, dtype, backend, median
time, first-call time, GFLOP/s or GB/s, speedup vs the naive loop reference and vs
PyTorch); ``python -m fastdl.bench --help`` lists the options. The pytest-benchmark suite
in ``benchmarks/`` runs the very same cases (``CASES`` below is the one registry).

How an entry is timed (``measure``): its first call is timed on its own and reported as
"first call" (it includes Numba's compile or cache load), one more untimed warm-up call
follows, then the call repeats back to back until ``budget`` seconds have passed and it
ran at least 3 times (or 3 budgets passed); the median is reported (the minimum too, in
JSON). The whole list runs in 3 interleaved rounds (``--rounds``), each entry getting
budget / 3 per round, and the table reports the lowest of an entry's round medians (all
of them are in the JSON): on a shared virtual machine, stalls of a second or more
otherwise slow single entries 10x. Each entry kind (numba, cython, numpy, torch, naive) is timed in its own
worker process, which builds the case's inputs itself (seeded, so every worker gets the
same arrays); one worker runs at a time, the case's entries one after another: the
OpenMP / BLAS thread pools of one library keep spinning after a call and, on few cores,
steal them from the next library's threads, so sharing a process distorts the ratios
(see ``_Worker``). The workers live for the whole run (numba compiles once). PyTorch
gets the same input layout (channels-last arrays are handed to it as ``channels_last``
tensors without a copy, channels-first ones as plain contiguous tensors) and the same
thread count. The naive references are plain Python loops: they run only on the cases
marked ``naive`` (small shapes, about a second per call at most), and the "vs naive"
column compares them with each backend on that same small shape. After the table comes
the start-up (``measure_startup``): ``import fastdl`` and a first conv2d call in fresh
processes, per compiled backend (numba cold, on an empty cache, once; with a warm cache,
STARTUP_REPEATS processes and their medians).

Ops that are not in this build of fastdl (``getattr(fastdl, op)`` missing), reference
functions that do not exist yet, torch when it is not installed, and unavailable backends
are reported as skipped; an entry that raises is reported as an error row, and the
table goes on.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastdl
from . import reference, shapes

COMPILED_BACKENDS = ("numba", "cython")
PEERS = ("torch", "naive")
ALL_BACKENDS = fastdl._dispatch.BACKENDS + PEERS
DTYPES = ("float32", "float64")
SEED = 20261124

# ---------------------------------------------------------------------------------------
# The case registry


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark: an op on one shape and layout.

    ``dims`` holds the op family's shape parameters (see the ``_Family`` classes).
    ``suites`` says where the case runs: "full" (``python -m fastdl.bench``), "quick"
    (``--quick`` and ``FASTDL_BENCH_QUICK=1``). ``naive``: small enough for the plain-loop
    reference, which is then timed too.
    """

    op: str
    label: str
    layout: str
    dims: tuple  # sorted (key, value) pairs, so the case is hashable
    suites: tuple = ("full",)
    naive: bool = False

    @property
    def family(self):
        return _FAMILIES[self.op]

    @property
    def params(self):
        return dict(self.dims)

    @property
    def id(self):
        """A stable name usable as a pytest id and in JSON."""
        return f"{self.op}[{self.label}|{self.layout}]".replace(" ", "_")

    @property
    def channels_last(self):
        return self.layout.endswith("C")


def _cases(op, label, suites=("full",), naive=False, layouts="both", **dims):
    """The case in channels-last and channels-first layout (``layouts="last"``: only the
    channels-last one)."""
    nd = dims.get("nd", 2)
    last, first = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}[nd]
    chosen = (last, first) if layouts == "both" else (last,)
    return [Case(op, label, layout, tuple(sorted(dims.items())), tuple(suites), naive)
            for layout in chosen]


def _conv_cases(suites, naive=False, layouts="both", **kw):
    nd = len(kw["spatial"])
    kernel = kw.pop("kernel")
    dims = dict(dict(nd=nd, stride=1, padding=0, groups=1), **kw)
    dims["kernel"] = (kernel,) * nd if isinstance(kernel, int) else tuple(kernel)
    label = (f"N{dims['n']} {dims['c_in']}->{dims['c_out']} {'x'.join(map(str, dims['spatial']))}"
             f" k{'x'.join(map(str, dims['kernel']))}")
    if dims["stride"] != 1:
        label += f" s{dims['stride']}"
    if dims["padding"] != 0:
        label += f" p{dims['padding']}"
    if dims["groups"] != 1:
        label += f" g{dims['groups']}"
    return _cases(f"conv{nd}d", label, suites, naive, layouts, **dims)


def _build_registry():
    """Every case. "full" shapes follow DESIGN.md (the exams' layers and realistic ones);
    "quick" ones are smaller and fewer (one layout where the other adds little), so that
    ``--quick`` runs in under a minute on 2 cores; the small "naive" cases run in both."""
    full, quick, both = ("full",), ("quick",), ("full", "quick")
    cases = []
    # conv2d: the exams' layers on a batch of 32 128x128 RGB images, then realistic ones.
    exam_batch = dict(n=32, c_in=3, spatial=(128, 128))
    cases += _conv_cases(full, c_out=64, kernel=3, padding=1, **exam_batch)
    cases += _conv_cases(full, c_out=64, kernel=3, padding=0, **exam_batch)
    cases += _conv_cases(full, c_out=16, kernel=5, padding=2, **exam_batch)
    cases += _conv_cases(full, c_out=32, kernel=2, stride=2, **exam_batch)
    cases += _conv_cases(full, n=8, c_in=64, c_out=64, spatial=(56, 56), kernel=3, padding=1)
    cases += _conv_cases(both, n=1, c_in=64, c_out=64, spatial=(56, 56), kernel=3, padding=1)
    cases += _conv_cases(full, n=4, c_in=16, c_out=32, spatial=(64, 64), kernel=3, padding=1)
    cases += _conv_cases(full, n=1, c_in=1, c_out=8, spatial=(128, 128), kernel=3, padding=1)
    # grouped layers: depthwise (MobileNet-style) and 8 groups of 8 channels
    cases += _conv_cases(both, n=8, c_in=64, c_out=64, spatial=(56, 56), kernel=3, padding=1,
                         groups=64)
    cases += _conv_cases(full, n=8, c_in=64, c_out=64, spatial=(56, 56), kernel=3, padding=1,
                         groups=8)
    cases += _conv_cases(quick, layouts="last",
                         n=4, c_in=3, c_out=64, spatial=(128, 128), kernel=3, padding=1)
    cases += _conv_cases(both, naive=True, layouts="last",
                         n=1, c_in=3, c_out=8, spatial=(16, 16), kernel=3, padding=1)
    # conv1d / conv3d
    cases += _conv_cases(full, n=8, c_in=64, c_out=64, spatial=(1024,), kernel=3, padding=1)
    cases += _conv_cases(quick, layouts="last",
                         n=2, c_in=64, c_out=64, spatial=(1024,), kernel=3, padding=1)
    cases += _conv_cases(both, naive=True, layouts="last",
                         n=1, c_in=8, c_out=8, spatial=(128,), kernel=3, padding=1)
    cases += _conv_cases(full, n=1, c_in=32, c_out=32, spatial=(16, 56, 56), kernel=3, padding=1)
    cases += _conv_cases(quick, layouts="last",
                         n=1, c_in=16, c_out=16, spatial=(8, 28, 28), kernel=3, padding=1)
    cases += _conv_cases(both, naive=True, layouts="last",
                         n=1, c_in=4, c_out=4, spatial=(4, 8, 8), kernel=3, padding=1)
    # batch_norm: layout "NHWC" = channel axis -1, "NCHW" = channel axis 1.
    op = "batch_norm"
    for training in (True, False):
        mode = "train" if training else "eval"
        for n, suites in ((64, full), (8, quick)):
            cases += [Case(op, f"({n},56,56,64) axis=-1 {mode}", "NHWC",
                           (("axis", -1), ("shape", (n, 56, 56, 64)), ("training", training)),
                           suites)]
            if training or suites == full:
                cases += [Case(op, f"({n},64,56,56) axis=1 {mode}", "NCHW",
                               (("axis", 1), ("shape", (n, 64, 56, 56)), ("training", training)),
                               suites)]
        cases += [Case(op, f"(2,8,8,16) axis=-1 {mode}", "NHWC",
                       (("axis", -1), ("shape", (2, 8, 8, 16)), ("training", training)),
                       both, naive=True)]
    # pooling: 2x2, stride 2 on a (8, 112, 112, 64) activation.
    for op in ("max_pool2d", "avg_pool2d"):
        cases += _cases(op, "N8 112x112 C64 2x2", full, n=8, h=112, w=112, c=64, size=2)
        cases += _cases(op, "N2 112x112 C64 2x2", quick, layouts="both" if op == "max_pool2d"
                        else "last", n=2, h=112, w=112, c=64, size=2)
        cases += _cases(op, "N1 16x16 C8 2x2", both, naive=True, layouts="last",
                        n=1, h=16, w=16, c=8, size=2)
    # sliding-window attention: the exams' layer (C_in 3, C_out 5, 3x3) on 32 images.
    op = "sliding_window_attention"
    for c_in in (3, 64):
        cases += _cases(op, f"N32 128x128 {c_in}->5 k3", full,
                        n=32, h=128, w=128, c_in=c_in, c_out=5, k=3)
        cases += _cases(op, f"N4 64x64 {c_in}->5 k3", quick, layouts="both" if c_in == 3 else "last",
                        n=4, h=64, w=64, c_in=c_in, c_out=5, k=3)
    cases += _cases(op, "N1 12x12 3->5 k3", both, naive=True, layouts="last",
                    n=1, h=12, w=12, c_in=3, c_out=5, k=3)
    return tuple(cases)


def cases(quick=False, ops=None):
    """The registered cases of one suite, optionally only the ops named in ``ops``."""
    suite = "quick" if quick else "full"
    return [c for c in CASES if suite in c.suites and (ops is None or c.op in ops)]


# ---------------------------------------------------------------------------------------
# Op families: inputs, calls and work counts


def _moveaxis_copy(a, source, destination):
    return np.ascontiguousarray(np.moveaxis(a, source, destination))


class _Family:
    """How to build inputs for, call and count the work of one op family.

    ``inputs`` returns a dict of arrays in the case's own layout; ``fastdl`` / ``torch`` /
    ``naive`` return zero-argument callables (``naive`` gets channels-last copies, the
    layout of fastdl.reference); ``work`` returns (amount, "flop" | "byte").
    """

    reference_names = ()

    def reference_function(self, case):
        for name in self.reference_names or (case.op,):
            function = getattr(reference, name, None)
            if function is not None:
                return function
        return None


class _ConvFamily(_Family):
    reference_names = ("conv_nd",)

    def inputs(self, case, dtype, rng):
        d = case.params
        x = rng.standard_normal((d["n"],) + d["spatial"] + (d["c_in"],)).astype(dtype)
        c_per_group = d["c_in"] // d["groups"]
        w = (rng.standard_normal(d["kernel"] + (c_per_group, d["c_out"]))
             / math.sqrt(c_per_group * math.prod(d["kernel"]))).astype(dtype)
        b = rng.standard_normal(d["c_out"]).astype(dtype)
        if case.channels_last:
            return dict(x=x, weight=w, bias=b)
        nd = d["nd"]
        return dict(x=_moveaxis_copy(x, -1, 1),
                    weight=np.ascontiguousarray(np.transpose(w, (nd + 1, nd) + tuple(range(nd)))),
                    bias=b)

    def channels_last_inputs(self, case, arrays):
        if case.channels_last:
            return arrays
        nd = case.params["nd"]
        return dict(x=_moveaxis_copy(arrays["x"], 1, -1),
                    weight=np.ascontiguousarray(np.transpose(arrays["weight"],
                                                             tuple(range(2, nd + 2)) + (1, 0))),
                    bias=arrays["bias"])

    def fastdl(self, case, arrays, backend):
        d, op = case.params, getattr(fastdl, case.op)
        x, w, b = arrays["x"], arrays["weight"], arrays["bias"]
        return lambda: op(x, w, b, stride=d["stride"], padding=d["padding"],
                          groups=d["groups"], layout=case.layout, backend=backend)

    def torch(self, case, arrays, torch):
        d = case.params
        nd = d["nd"]
        function = getattr(torch.nn.functional, f"conv{nd}d")
        x = torch.from_numpy(arrays["x"])
        b = torch.from_numpy(arrays["bias"])
        if case.channels_last:
            # The same NHWC memory seen as a logical NCHW tensor: torch.channels_last.
            x = x.permute(0, nd + 1, *range(1, nd + 1))
            w = torch.from_numpy(np.ascontiguousarray(
                np.transpose(arrays["weight"], (nd + 1, nd) + tuple(range(nd)))))
            memory_format = {2: torch.channels_last, 3: torch.channels_last_3d}.get(nd)
            if memory_format is not None:
                w = w.contiguous(memory_format=memory_format)
        else:
            w = torch.from_numpy(arrays["weight"])
        return lambda: function(x, w, b, stride=d["stride"], padding=d["padding"],
                                groups=d["groups"])

    def naive(self, case, arrays):
        function = self.reference_function(case)
        if function is None:
            return None
        d = case.params
        a = self.channels_last_inputs(case, arrays)
        return lambda: function(a["x"], a["weight"], a["bias"], d["stride"], d["padding"],
                                groups=d["groups"])

    def work(self, case, dtype):
        d = case.params
        out = shapes.conv_output(d["spatial"], d["kernel"], d["stride"], d["padding"])
        macs = (d["n"] * math.prod(out) * d["c_out"] * (d["c_in"] // d["groups"])
                * math.prod(d["kernel"]))
        return 2 * macs, "flop"


class _BatchNormFamily(_Family):
    def inputs(self, case, dtype, rng):
        d = case.params
        channels = d["shape"][d["axis"]]
        x = (rng.standard_normal(d["shape"]) * 2.0 + 0.5).astype(dtype)
        return dict(x=x, gamma=rng.uniform(0.5, 1.5, channels).astype(dtype),
                    beta=rng.standard_normal(channels).astype(dtype),
                    running_mean=rng.standard_normal(channels).astype(dtype) * 0.1,
                    running_var=rng.uniform(0.5, 2.0, channels).astype(dtype))

    def channels_last_inputs(self, case, arrays):
        if case.params["axis"] in (-1, len(case.params["shape"]) - 1):
            return arrays
        return dict(arrays, x=_moveaxis_copy(arrays["x"], case.params["axis"], -1))

    @staticmethod
    def _stats(arrays):
        # Fresh copies: training updates the running statistics in place on every call.
        return arrays["running_mean"].copy(), arrays["running_var"].copy()

    def fastdl(self, case, arrays, backend):
        d, op = case.params, getattr(fastdl, case.op)
        mean, var = self._stats(arrays)
        return lambda: op(arrays["x"], arrays["gamma"], arrays["beta"], training=d["training"],
                          running_mean=mean, running_var=var, decay=0.9, axis=d["axis"],
                          backend=backend)

    def torch(self, case, arrays, torch):
        d = case.params
        x = torch.from_numpy(arrays["x"])
        if d["axis"] != 1:  # channels-last memory seen as a logical NCHW tensor
            x = x.movedim(d["axis"], 1)
        mean, var = (torch.from_numpy(a) for a in self._stats(arrays))
        gamma, beta = torch.from_numpy(arrays["gamma"]), torch.from_numpy(arrays["beta"])
        # PyTorch's momentum is 1 - decay.
        return lambda: torch.nn.functional.batch_norm(
            x, mean, var, gamma, beta, training=d["training"], momentum=0.1, eps=1e-5)

    def naive(self, case, arrays):
        function = self.reference_function(case)
        if function is None:
            return None
        d = case.params
        a = self.channels_last_inputs(case, arrays)
        mean, var = self._stats(a)
        return lambda: function(a["x"], a["gamma"], a["beta"], eps=1e-5, training=d["training"],
                                running_mean=mean, running_var=var, decay=0.9, axis=-1)

    def work(self, case, dtype):
        # Compulsory traffic: read x once, write y once (training also reads x a second
        # time for its statistics pass unless it stays in cache; not counted).
        return 2 * math.prod(case.params["shape"]) * np.dtype(dtype).itemsize, "byte"


class _PoolFamily(_Family):
    def inputs(self, case, dtype, rng):
        d = case.params
        x = rng.standard_normal((d["n"], d["h"], d["w"], d["c"])).astype(dtype)
        return dict(x=x if case.channels_last else _moveaxis_copy(x, -1, 1))

    def channels_last_inputs(self, case, arrays):
        return arrays if case.channels_last else dict(x=_moveaxis_copy(arrays["x"], 1, -1))

    def fastdl(self, case, arrays, backend):
        op, size = getattr(fastdl, case.op), case.params["size"]
        return lambda: op(arrays["x"], size, layout=case.layout, backend=backend)

    def torch(self, case, arrays, torch):
        function = getattr(torch.nn.functional, case.op)
        x = torch.from_numpy(arrays["x"])
        if case.channels_last:
            x = x.permute(0, 3, 1, 2)
        return lambda: function(x, case.params["size"])

    def naive(self, case, arrays):
        function = self.reference_function(case)
        if function is None:
            return None
        x, size = self.channels_last_inputs(case, arrays)["x"], case.params["size"]
        return lambda: function(x, size)

    def work(self, case, dtype):
        d = case.params
        out = (d["h"] // d["size"]) * (d["w"] // d["size"])
        return (d["h"] * d["w"] + out) * d["n"] * d["c"] * np.dtype(dtype).itemsize, "byte"


class _AttentionFamily(_Family):
    def inputs(self, case, dtype, rng):
        d = case.params
        k = d["k"]
        x = rng.standard_normal((d["n"], d["h"], d["w"], d["c_in"])).astype(dtype)
        key = rng.standard_normal((k, k, d["c_in"], d["c_out"])).astype(dtype)
        value = rng.standard_normal((k, k, d["c_out"])).astype(dtype)
        if case.channels_last:
            return dict(x=x, key=key, value=value)
        return dict(x=_moveaxis_copy(x, -1, 1), key=np.ascontiguousarray(key.transpose(3, 2, 0, 1)),
                    value=np.ascontiguousarray(value.transpose(2, 0, 1)))

    def channels_last_inputs(self, case, arrays):
        if case.channels_last:
            return arrays
        return dict(x=_moveaxis_copy(arrays["x"], 1, -1),
                    key=np.ascontiguousarray(arrays["key"].transpose(2, 3, 1, 0)),
                    value=np.ascontiguousarray(arrays["value"].transpose(1, 2, 0)))

    def fastdl(self, case, arrays, backend):
        op = getattr(fastdl, case.op)
        x, key, value = arrays["x"], arrays["key"], arrays["value"]
        return lambda: op(x, key, value, layout=case.layout, backend=backend)

    def torch(self, case, arrays, torch):
        """The best composition found: normalise, unfold, one einsum for the scores, softmax
        over the window, one einsum with the values."""
        d = case.params
        k, c_out = d["k"], d["c_out"]
        x = torch.from_numpy(arrays["x"])
        if case.channels_last:
            x = x.permute(0, 3, 1, 2)
            key = torch.from_numpy(np.ascontiguousarray(arrays["key"].transpose(3, 2, 0, 1)))
            value = torch.from_numpy(np.ascontiguousarray(arrays["value"].transpose(2, 0, 1)))
        else:
            key, value = torch.from_numpy(arrays["key"]), torch.from_numpy(arrays["value"])
        key = key.reshape(c_out, d["c_in"], k * k)
        value = value.reshape(c_out, k * k)
        out_h, out_w = d["h"] - k + 1, d["w"] - k + 1
        functional = torch.nn.functional

        def attention():
            norm = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True)
            xn = x / torch.where(norm == 0, torch.ones_like(norm), norm)
            windows = functional.unfold(xn, k).view(x.shape[0], d["c_in"], k * k, -1)
            scores = torch.einsum("nckl,ock->nokl", windows, key)
            weights = torch.softmax(scores, dim=2)
            # logical (N, C_out, Ho, Wo), as torch's conv and pooling return
            return torch.einsum("nokl,ok->nol", weights, value).view(-1, c_out, out_h, out_w)

        return attention

    def naive(self, case, arrays):
        function = self.reference_function(case)
        if function is None:
            return None
        a = self.channels_last_inputs(case, arrays)
        return lambda: function(a["x"], a["key"], a["value"])

    def work(self, case, dtype):
        d = case.params
        window = d["k"] ** 2
        outputs = d["n"] * (d["h"] - d["k"] + 1) * (d["w"] - d["k"] + 1) * d["c_out"]
        # scores (C_in MACs per window position) + the weighted sum of the values
        return 2 * outputs * window * (d["c_in"] + 1), "flop"


_FAMILIES = {
    "conv1d": _ConvFamily(), "conv2d": _ConvFamily(), "conv3d": _ConvFamily(),
    "batch_norm": _BatchNormFamily(),
    "max_pool2d": _PoolFamily(), "avg_pool2d": _PoolFamily(),
    "sliding_window_attention": _AttentionFamily(),
}
OPS = tuple(_FAMILIES)
CASES = _build_registry()


def make_inputs(case, dtype):
    """Seeded inputs of one case in its layout (the same arrays on every run)."""
    seed = SEED + sum(map(ord, case.id))
    return case.family.inputs(case, np.dtype(dtype), np.random.default_rng(seed))


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def entry_call(case, arrays, backend):
    """(callable, None) for one entry of a case, or (None, why it is skipped)."""
    if backend == "torch":
        torch = _import_torch()
        if torch is None:
            return None, "torch is not installed"
        return case.family.torch(case, arrays, torch), None
    if backend == "naive":
        if not case.naive:
            return None, "naive reference runs on the small cases only"
        call = case.family.naive(case, arrays)
        return (call, None) if call is not None else (None, f"no reference for {case.op}")
    if getattr(fastdl, case.op, None) is None:
        return None, f"fastdl.{case.op} is not available in this build"
    status = fastdl.backends().get(backend, f"unknown backend {backend!r}")
    if status != "available":
        return None, status
    return case.family.fastdl(case, arrays, backend), None


# ---------------------------------------------------------------------------------------
# Timing


def time_call(call):
    """Seconds one call of ``call()`` takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(call, budget, warmup=True):
    """Time ``call``: (first-call seconds, median seconds, min seconds, timed repeats).

    The first call is timed alone (JIT compile or cache load lands there). With
    ``warmup`` (compiled code, torch) it is not a sample: one more untimed call follows,
    then calls repeat back to back until ``budget`` seconds have passed and at least 3
    ran (or 3 budgets passed, for slow entries). Without it (the naive loops: nothing to
    warm up) the first call is the first sample and one over the budget is the whole
    measurement.

    Repeats run back to back, not interleaved with other entries: OpenBLAS and OpenMP
    worker threads keep spinning for a while after a call, and on a 2-core machine the
    pool of the previous entry then steals a core from the next one (which is also why
    ``run`` times each library in its own process).
    """
    first = time_call(call)
    times = [] if warmup else [first]
    if warmup:
        call()
    spent = sum(times)
    while len(times) < 10000:
        if spent >= budget and (len(times) >= 3 or spent >= 3 * budget or not warmup):
            break
        times.append(time_call(call))
        spent += times[-1]
    return first, statistics.median(times), min(times), len(times)


@contextlib.contextmanager
def same_threads(threads, libraries=("fastdl", "torch", "blas")):
    """Within the block, the same thread count for fastdl's compiled backends, PyTorch
    and (through threadpoolctl, when installed) the BLAS behind the numpy backend; the
    previous counts come back afterwards. ``libraries`` limits which of the three are
    touched (a worker sets only its own: setting torch's would import it)."""
    previous = fastdl.get_num_threads() if "fastdl" in libraries else None
    torch = _import_torch() if "torch" in libraries else None
    torch_previous = torch.get_num_threads() if torch is not None else None
    blas_limits = contextlib.nullcontext()
    if "blas" in libraries:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            blas_limits = threadpool_limits(limits=threads, user_api="blas")
    with blas_limits:
        if previous is not None:
            fastdl.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield threads
        finally:
            if previous is not None:
                fastdl.set_num_threads(previous)
            if torch is not None:
                torch.set_num_threads(torch_previous)


class _Progress:
    """tqdm on stderr when installed, else a one-line counter; one step per case."""

    def __init__(self, total, enabled=True):
        self.total, self.done, self.bar, self.enabled = total, 0, None, enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self.bar = tqdm(total=total, file=sys.stderr, unit="case", dynamic_ncols=True)

    def show(self, text):
        """Name the case being measured now."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text[-60:])
        else:
            sys.stderr.write(f"\r[{self.done + 1}/{self.total}] {text[-60:]:<60}")
            sys.stderr.flush()

    def step(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def run(case_list, backends, dtype="float32", threads=None, budget=1.0, progress=True,
        isolated=True, worker_info=None, rounds=1):
    """Measure every (case, backend) entry; returns a list of result dicts (one per
    entry, in order; skipped and failed entries say so in "status").

    ``isolated`` (the default): each entry kind runs in its own worker process (see
    ``_Worker``), one worker at a time; otherwise everything runs in this process.
    ``rounds`` (isolated only): the whole list is measured that many times, each time
    with ``budget / rounds``, and an entry's median is the lowest of its rounds' medians.
    On a shared virtual machine, every call of whatever entry is running can be 10x slower
    for a second or more (seen after another process freed a lot of memory: the guest's
    next page faults are slow); spread over rounds, such a stall spoils one round of an
    entry, not the entry. Every entry, PyTorch's too, is treated the same way.
    ``worker_info``: a dict to fill with what each worker reports about itself (its pid,
    which heavy libraries it imported, numba's threading layer)."""
    threads = threads or fastdl.get_num_threads()
    results = []
    if not isolated:
        bar = _Progress(len(case_list), progress)
        with same_threads(threads), contextlib.closing(bar):
            for case in case_list:
                bar.show(case.id)
                arrays = make_inputs(case, dtype)
                results += [_measure_entry(case, backend, dtype, budget, arrays)
                            for backend in _entries(case, backends)]
                bar.step()
        _add_ratios(results)
        return results
    workers = {}
    bar = _Progress(len(case_list) * rounds, progress)
    per_round = []
    try:
        with contextlib.closing(bar):
            for round_index in range(rounds):
                rows = []
                for case in case_list:
                    for backend in _entries(case, backends):
                        bar.show(f"{case.id} {backend}"
                                 + (f" (round {round_index + 1}/{rounds})" if rounds > 1 else ""))
                        rows.append(_ask_worker(workers, backend, threads, dict(
                            case=case.id, dtype=dtype, budget=budget / rounds), case))
                    bar.step()
                per_round.append(rows)
        results = [_combine_rounds(entry_rounds) for entry_rounds in zip(*per_round)]
        if worker_info is not None:
            for kind, worker in workers.items():
                with contextlib.suppress(_WorkerDied):
                    worker_info[kind] = worker.ask(dict(info=True))
    finally:
        for worker in workers.values():
            worker.close()
    _add_ratios(results)
    return results


def _combine_rounds(rows):
    """One entry's row from its rounds: the lowest round median (a slower round met
    interference; as timeit advises for repeats), the fastest call, all repeats, and the
    first call of the first round (later ones are warm)."""
    failed = [row for row in rows if row["median_s"] is None]
    if failed:
        return failed[0]
    medians = [row["median_s"] for row in rows]
    combined = dict(rows[0], median_s=min(medians),
                    min_s=min(row["min_s"] for row in rows),
                    repeats=sum(row["repeats"] for row in rows))
    combined["rate"] = combined["work"] / combined["median_s"] / 1e9
    if len(rows) > 1:
        combined["round_medians_s"] = medians
    return combined


def _entries(case, backends):
    """The entries of a case: the naive loops are an entry of the small cases only."""
    return [b for b in backends if b != "naive" or case.naive]


def _new_row(case, backend, dtype):
    work, unit = case.family.work(case, dtype)
    return dict(
        op=case.op, case=case.id, label=case.label, layout=case.layout, dtype=dtype,
        backend=backend, work=work, unit=unit, status="ok", first_call_s=None,
        median_s=None, min_s=None, repeats=0, rate=None, vs_naive=None, vs_torch=None)


def _measure_entry(case, backend, dtype, budget, arrays):
    """The result row of one entry, measured in this process."""
    row = _new_row(case, backend, dtype)
    call, why = entry_call(case, arrays, backend)
    if call is None:
        row["status"] = f"skipped: {why}"
        return row
    try:
        first, median, fastest, repeats = measure(call, budget, warmup=backend != "naive")
    except Exception as exc:  # a peer that cannot run this case must not stop the table
        row["status"] = f"error: {type(exc).__name__}: {exc}"
        return row
    row.update(first_call_s=first, median_s=median, min_s=fastest, repeats=repeats,
               rate=row["work"] / median / 1e9)
    return row


# ---------------------------------------------------------------------------------------
# Worker processes: one per entry kind
#
# Why: on a machine with few cores, the OpenMP / BLAS thread pools of one library keep
# spinning for a while after a call (torch bundles its own libgomp; numba's omp layer and
# the Cython extension use the system one; numpy has OpenBLAS's) and steal the cores from
# the next library's threads: a small numba conv2d measured 126 us alone and 7.9 ms right
# after a torch conv in the same process. So the worker of kind X is the only process
# that runs X's code, and only one worker works at a time (the others block on a read).
# Workers persist over the whole run, so numba compiles (or loads its cache) once.


class _WorkerDied(RuntimeError):
    pass


class _Worker:
    """``python -m fastdl.bench --worker KIND THREADS``: one JSON request per line on its
    stdin, one JSON reply per line on its stdout."""

    def __init__(self, kind, threads):
        env = dict(os.environ)
        path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env.get("PYTHONPATH")]))
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastdl.bench", "--worker", kind, str(threads)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, request):
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise _WorkerDied(f"the {self.kind} worker process died "
                              f"(exit code {self.proc.wait()})")
        return json.loads(line)

    def close(self):
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _ask_worker(workers, kind, threads, request, case):
    """The worker's result row; a worker that died (a crash in compiled code) gives an
    error row and is started afresh for the next case."""
    if kind not in workers:
        workers[kind] = _Worker(kind, threads)
    try:
        return workers[kind].ask(request)["row"]
    except _WorkerDied as exc:
        workers.pop(kind).close()
        return dict(_new_row(case, kind, request["dtype"]), status=f"error: {exc}")


def _serve(kind, threads):
    """The worker's loop (see ``_Worker``): it builds each case's inputs itself from the
    seeded registry, measures its one entry and forgets the inputs."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed, by Python or C code, goes to stderr
    by_id = {case.id: case for case in CASES}
    # Each worker sets only the thread counts of what it runs (setting torch's would
    # import torch); numpy is everywhere, so BLAS's is set in every worker.
    libraries = {"torch": ("torch", "blas"), "naive": ("blas",)}.get(kind, ("fastdl", "blas"))
    with same_threads(threads, libraries):
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("info"):
                reply = _worker_self_report(kind)
            else:
                case = by_id[request["case"]]
                arrays = make_inputs(case, request["dtype"])
                reply = dict(row=_measure_entry(case, kind, request["dtype"],
                                                request["budget"], arrays))
                del arrays
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    return 0


def _worker_self_report(kind):
    info = dict(kind=kind, pid=os.getpid(),
                modules=[m for m in ("numba", "torch", "scipy") if m in sys.modules])
    if kind == "numba":
        with contextlib.suppress(Exception):  # no parallel kernel ran (e.g. all skipped)
            info["numba_threading_layer"] = sys.modules["numba"].threading_layer()
    if kind == "numpy":
        info["blas"] = _blas_info()
    return info


def _add_ratios(results):
    """Speedups from the same run: peer time / this entry's time (> 1 = faster)."""
    by_case = {}
    for row in results:
        by_case.setdefault(row["case"], {})[row["backend"]] = row
    for entries in by_case.values():
        for peer in PEERS:
            reference_row = entries.get(peer)
            if not reference_row or reference_row["median_s"] is None:
                continue
            for row in entries.values():
                if row["median_s"] is not None:
                    row[f"vs_{peer}"] = reference_row["median_s"] / row["median_s"]


# ---------------------------------------------------------------------------------------
# The machine header and the start-up measurement


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name):
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return getattr(module, "__version__", "?")


def machine_info(threads):
    """What the numbers depend on: CPU, cores, versions, threading layers."""
    info = dict(
        cpu=_cpu_model(), logical_cpus=os.cpu_count(),
        usable_cpus=fastdl._dispatch.default_num_threads(), threads=threads,
        platform=platform.platform(), python=platform.python_version(),
        fastdl=fastdl.__version__, numpy=np.__version__, numba=_version("numba"),
        scipy=_version("scipy"), torch=_version("torch"), backends=fastdl.backends(),
        numba_threading_layer=None, torch_parallel=None,
    )
    try:
        import numba

        info["numba_threading_layer"] = numba.threading_layer()
    except Exception:  # no parallel numba kernel ran yet, or numba is missing
        try:
            import numba

            info["numba_threading_layer"] = f"not started (requested {numba.config.THREADING_LAYER})"
        except ImportError:
            pass
    info["blas"] = _blas_info()
    torch = _import_torch()
    if torch is not None:
        lines = torch.__config__.parallel_info().splitlines()
        info["torch_parallel"] = next((l.strip() for l in lines if "backend" in l), None)
    return info


def _blas_info():
    """The BLAS libraries loaded in this process (numpy's, scipy's), or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return ", ".join(sorted({f"{p.get('internal_api')} {p.get('version')}"
                             for p in threadpool_info() if p.get("user_api") == "blas"})) or None


_STARTUP_SCRIPT = """
import json, sys, time
start = time.perf_counter()
import fastdl
imported = time.perf_counter()
import numpy as np
x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
w = np.random.default_rng(1).standard_normal((3, 3, 3, 8)).astype(np.float32)
called = time.perf_counter()
fastdl.conv2d(x, w, padding=1, backend=sys.argv[1])
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "first_call_s": done - called}))
"""


STARTUP_REPEATS = 3  # cached start-ups per backend: one fresh process varies by ~25%


def measure_startup(cold=True):
    """``import fastdl`` and the first conv2d call, in fresh subprocesses, per compiled
    backend. Numba: "cold" uses an empty NUMBA_CACHE_DIR (so it compiles), "cached" runs
    again on that same directory (loads what the cold run saved); without ``cold`` the
    cached run uses the normal cache, already warm from this process. A cached start-up
    runs STARTUP_REPEATS times and reports the medians (each run's times in "runs")."""
    rows = []
    env_base = dict(os.environ)
    path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env_base["PYTHONPATH"] = os.pathsep.join(filter(None, [path, env_base.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="fastdl-numba-cache-") as cache_dir:
        for backend in COMPILED_BACKENDS:
            if fastdl.backends()[backend] != "available":
                rows.append(dict(backend=backend, cache="-", status="skipped: unavailable"))
                continue
            runs = ["cold", "cached"] if backend == "numba" and cold else ["cached"]
            for which in runs:
                env = dict(env_base)
                if backend == "numba" and cold:
                    env["NUMBA_CACHE_DIR"] = cache_dir
                row = dict(backend=backend, cache=which if backend == "numba" else "-")
                row.update(_startup_runs(backend, env, 1 if which == "cold" else STARTUP_REPEATS))
                rows.append(row)
    return rows


def _startup_runs(backend, env, repeats):
    """The start-up script run ``repeats`` times: median times, each run's, and status."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT, backend], env=env,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            last_line = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return dict(status=f"error (exit {proc.returncode}): {last_line}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return dict(status="ok", runs=runs,
                **{key: statistics.median(run[key] for run in runs)
                   for key in ("import_s", "first_call_s")})


# ---------------------------------------------------------------------------------------
# Output: table, JSON, plot


def _fmt_time(seconds):
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _fmt_ratio(ratio):
    if ratio is None:
        return "-"
    return f"{ratio:.3g}x" if ratio < 1000 else f"{ratio:.0f}x"


def format_header(info):
    versions = ", ".join(f"{name} {info[name]}" for name in ("numpy", "numba", "scipy", "torch")
                         if info.get(name))
    lines = [
        f"fastdl {info['fastdl']} benchmarks | python {info['python']} | {versions}",
        f"CPU: {info['cpu']} | {info['logical_cpus']} logical CPUs, {info['usable_cpus']} usable"
        f" | threads: {info['threads']} (fastdl and torch)",
        f"numba threading layer: {info['numba_threading_layer']}"
        + (f" | torch: {info['torch_parallel']}" if info.get("torch_parallel") else "")
        + (f" | numpy BLAS: {info['blas']}" if info.get("blas") else ""),
        "each backend, torch and the naive loops are timed in their own process, one at a "
        "time: OpenMP/BLAS pools keep spinning after a call and would steal the next one's cores",
        "backends: " + ", ".join(f"{k}={v if v == 'available' else 'unavailable'}"
                                 for k, v in info["backends"].items()),
    ]
    return "\n".join(lines)


def _merge_skipped(results):
    """One row for consecutive entries of a case skipped for the same reason (an op not
    in this build skips every backend)."""
    merged = []
    for row in results:
        last = merged[-1] if merged else None
        if (last is not None and row["status"].startswith("skipped") and
                (last["case"], last["status"]) == (row["case"], row["status"])):
            merged[-1] = dict(last, backend=f"{last['backend']},{row['backend']}")
        else:
            merged.append(row)
    return merged


def format_table(results):
    header = ("op", "shape", "layout", "dtype", "backend", "median", "first call",
              "rate", "vs naive", "vs torch")
    rows = []
    results = _merge_skipped(results)
    for r in results:
        if r["median_s"] is None:
            rows.append((r["op"], r["label"], r["layout"], r["dtype"], r["backend"],
                         r["status"], "", "", "", ""))
            continue
        unit = "GFLOP/s" if r["unit"] == "flop" else "GB/s"
        rows.append((r["op"], r["label"], r["layout"], r["dtype"], r["backend"],
                     _fmt_time(r["median_s"]), _fmt_time(r["first_call_s"]),
                     f"{r['rate']:.3g} {unit}", _fmt_ratio(r["vs_naive"]),
                     _fmt_ratio(r["vs_torch"])))
    # a long "skipped: ..." message spans the columns after it, so don't size them by it
    widths = [max(len(str(row[i])) for row in [header] + [r for r in rows if r[6] or i < 5])
              for i in range(len(header))]
    out, previous_case = [], None
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    out += [line, "-" * len(line)]
    for r, row in zip(results, rows):
        if previous_case is not None and r["case"] != previous_case:
            out.append("")
        previous_case = r["case"]
        out.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(out)


def format_startup(rows):
    lines = ["start-up (fresh subprocess, conv2d 1x32x32x3 -> 8 float32):"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"  {r['backend']:<7} {r['cache']:<7} {r.get('status')}")
        else:
            spread = ""
            if len(r["runs"]) > 1:
                firsts = [run["first_call_s"] for run in r["runs"]]
                spread = (f" (median of {len(firsts)} runs, {_fmt_time(min(firsts))}"
                          f" to {_fmt_time(max(firsts))})")
            lines.append(f"  {r['backend']:<7} {r['cache']:<7} import fastdl {_fmt_time(r['import_s'])}"
                         f", first call {_fmt_time(r['first_call_s'])}{spread}")
    return "\n".join(lines)


def write_plot(results, path, threads=None):
    """A PNG bar chart of each backend's speedup over PyTorch per case (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib "
                           "(or pip install 'fastdl[bench]')") from None
    backends = [b for b in fastdl._dispatch.BACKENDS
                if any(r["backend"] == b and r["vs_torch"] for r in results)]
    case_ids = list(dict.fromkeys(r["case"] for r in results
                                  if r["vs_torch"] and r["backend"] in backends))
    if not case_ids:
        raise RuntimeError("nothing to plot: no case has both a fastdl and a torch time")
    ratios = {(r["case"], r["backend"]): r["vs_torch"] for r in results}
    labels = {r["case"]: f"{r['op']} {r['label']} {r['layout']}" for r in results}
    # horizontal bars, one group per case top to bottom, so long labels stay readable
    bar_height = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.22 * len(case_ids) * len(backends)))
    for i, backend in enumerate(backends):
        widths = [ratios.get((c, backend)) or 0 for c in case_ids]
        ax.barh([j + i * bar_height for j in range(len(case_ids))], widths, bar_height,
                label=backend)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speedup vs PyTorch, same layout (torch time / fastdl time; > 1: faster)")
    ax.set_yticks([j + bar_height * (len(backends) - 1) / 2 for j in range(len(case_ids))])
    ax.set_yticklabels([labels[c] for c in case_ids], fontsize=8)
    ax.invert_yaxis()
    ax.legend(loc="lower right")
    ax.set_title(f"fastdl vs PyTorch ({results[0]['dtype']}"
                 + (f", {threads} threads)" if threads else ")"))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------
# Command line


def _csv(choices, what):
    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown) or repr(text)}; choose from {', '.join(choices)}")
        return items
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastdl.bench",
        description="Time fastdl's hot ops on every backend against PyTorch and the naive "
                    "loop references, and print one table.")
    parser.add_argument("--quick", action="store_true",
                        help="a subset on smaller shapes, 0.25 s per entry (under a minute)")
    parser.add_argument("--ops", type=_csv(OPS, "op"), default=list(OPS),
                        help=f"comma-separated ops (default all: {','.join(OPS)})")
    parser.add_argument("--backends", type=_csv(ALL_BACKENDS, "backend"),
                        default=list(ALL_BACKENDS),
                        help=f"comma-separated entries (default all: {','.join(ALL_BACKENDS)})")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastdl and torch (default: the usable cores)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of repeats per entry (default 1, 0.3 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measure the whole list this many times, interleaved, each "
                             "with budget/rounds, and report each entry's lowest round median "
                             "(default 3, 1 with --quick): a stall of the machine spoils a "
                             "round, not the entry")
    parser.add_argument("--json", metavar="PATH", help="write machine info and all results")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG bar chart of the speedups vs PyTorch (matplotlib)")
    parser.add_argument("--no-startup", action="store_true",
                        help="skip the import / first-call measurement in subprocesses")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    most = fastdl._dispatch.max_num_threads()
    if args.threads is not None and not 1 <= args.threads <= most:
        parser.error(f"--threads must be in [1, {most}], got {args.threads}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.budget is not None and args.budget <= 0:
        parser.error(f"--budget must be > 0, got {args.budget}")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:  # internal: one entry kind's process, see _Worker
        return _serve(argv[1], int(argv[2]))
    args = parse_args(argv)
    selected = cases(quick=args.quick, ops=set(args.ops))
    if args.list:
        for case in selected:
            print(case.id + ("  (naive)" if case.naive else ""))
        return 0
    if args.plot:  # fail before the long run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib, which is not installed: pip install matplotlib",
                  file=sys.stderr)
            return 2
    threads = args.threads or fastdl.get_num_threads()
    budget = args.budget if args.budget is not None else (0.25 if args.quick else 1.0)
    started = time.perf_counter()
    worker_info = {}
    rounds = args.rounds or (1 if args.quick else 3)
    results = run(selected, args.backends, args.dtype, threads, budget,
                  progress=not args.no_progress, worker_info=worker_info, rounds=rounds)
    info = machine_info(threads)
    # what the workers saw: numba's threading layer is known only where a parallel kernel
    # ran, the BLAS libraries only where the numpy backend loaded them
    for kind, key in (("numba", "numba_threading_layer"), ("numpy", "blas")):
        if worker_info.get(kind, {}).get(key):
            info[key] = worker_info[kind][key]
    startup = [] if args.no_startup else measure_startup(cold=not args.quick)
    print(format_header(info))
    print()
    print(format_table(results))
    if startup:
        print()
        print(format_startup(startup))
    elapsed = time.perf_counter() - started
    print(f"\n{len(selected)} cases, {len(results)} entries in {elapsed:.1f} s; budget "
          f"{budget} s per entry in {rounds} interleaved round(s), the lowest round median "
          f"reported; speedup = other time / this time (> 1: this is faster); "
          "vs naive only on the small cases")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(machine=info, settings=dict(
                quick=args.quick, ops=args.ops, backends=args.backends, dtype=args.dtype,
                threads=threads, budget_s=budget, rounds=rounds), results=results, startup=startup,
                elapsed_s=elapsed), fh, indent=1)
    if args.plot:
        try:
            write_plot(results, args.plot, threads)
        except RuntimeError as exc:
            print(f"--plot: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

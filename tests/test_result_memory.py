"""Results in recycled memory (fastdl._scratch.result): a result the caller dropped gives
its memory to the next call, a live result never shares memory with another array, and
what an earlier result left in the memory never shows in a later one."""

import threading

import numpy as np
import pytest

import fastdl
from fastdl import _scratch

# (name, call(backend, inputs), inputs(rng, dtype)): every op whose wrapper takes its
# result from _scratch.result, in both layouts where the wrapper differs.


def _conv_inputs(rng, dtype, channels_first, groups=1, c_out=8):
    x = rng.standard_normal((2, 9, 11, 4)).astype(dtype)
    w = rng.standard_normal((3, 3, 4 // groups, c_out)).astype(dtype)
    if channels_first:
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))
        w = np.ascontiguousarray(w.transpose(3, 2, 0, 1))
    return x, w


OPS = {
    "conv2d_NHWC": (lambda be, a: fastdl.conv2d(*a, padding=1, backend=be),
                    lambda rng, dt: _conv_inputs(rng, dt, False)),
    # SMALL path: the kernel writes the channels-first result itself
    "conv2d_NCHW_small": (lambda be, a: fastdl.conv2d(*a, padding=1, layout="NCHW", backend=be),
                          lambda rng, dt: _conv_inputs(rng, dt, True)),
    # DEPTHWISE path: channels-last output in a scratch buffer, transposed into the result
    "conv2d_NCHW_depthwise": (
        lambda be, a: fastdl.conv2d(*a, padding=1, groups=4, layout="NCHW", backend=be),
        lambda rng, dt: _conv_inputs(rng, dt, True, groups=4, c_out=4)),
    "conv1d": (lambda be, a: fastdl.conv1d(a[0][:, 0], a[1][0], padding=1, backend=be),
               lambda rng, dt: _conv_inputs(rng, dt, False)),
    "batch_norm_NHWC": (lambda be, a: fastdl.batch_norm(*a, axis=-1, backend=be),
                        lambda rng, dt: (rng.standard_normal((4, 6, 7, 5)).astype(dt),
                                         np.ones(5, dt), np.zeros(5, dt))),
    "batch_norm_NCHW": (lambda be, a: fastdl.batch_norm(*a, axis=1, backend=be),
                        lambda rng, dt: (rng.standard_normal((4, 5, 6, 7)).astype(dt),
                                         np.ones(5, dt), np.zeros(5, dt))),
    "max_pool2d_NHWC": (lambda be, a: fastdl.max_pool2d(a[0], 2, backend=be),
                        lambda rng, dt: (rng.standard_normal((2, 8, 10, 3)).astype(dt),)),
    "avg_pool2d_NCHW": (lambda be, a: fastdl.avg_pool2d(a[0], 2, layout="NCHW", backend=be),
                        lambda rng, dt: (rng.standard_normal((2, 3, 8, 10)).astype(dt),)),
    "attention_NHWC": (lambda be, a: fastdl.sliding_window_attention(*a, backend=be),
                       lambda rng, dt: (rng.standard_normal((2, 7, 8, 3)).astype(dt),
                                        rng.standard_normal((3, 3, 3, 5)).astype(dt),
                                        rng.standard_normal((3, 3, 5)).astype(dt))),
    "attention_NCHW": (lambda be, a: fastdl.sliding_window_attention(*a, layout="NCHW",
                                                                     backend=be),
                       lambda rng, dt: (rng.standard_normal((2, 3, 7, 8)).astype(dt),
                                        rng.standard_normal((5, 3, 3, 3)).astype(dt),
                                        rng.standard_normal((5, 3, 3)).astype(dt))),
}


def _address(array):
    return array.__array_interface__["data"][0]


@pytest.fixture
def recycle_everything(monkeypatch):
    """Every result recycled, however small (the tests' arrays are), from empty slots."""
    monkeypatch.setattr(_scratch, "MIN_BYTES", 0)
    monkeypatch.setattr(_scratch, "RECYCLES_RESULTS", True)
    _scratch.release()
    yield
    _scratch.release()


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_dropped_result_gives_its_memory_to_the_next_call(op, backend, recycle_everything):
    call, make = OPS[op]
    inputs = make(np.random.default_rng(1), np.float32)
    first = call(backend, inputs)
    address = _address(first)
    del first
    assert _address(call(backend, inputs)) == address
    kept = call(backend, inputs)  # held: the next call gets other memory
    assert not np.shares_memory(call(backend, inputs), kept)


@pytest.mark.parametrize("op", sorted(OPS))
def test_stale_memory_never_shows(op, backend, dtype, recycle_everything, monkeypatch):
    """Each call after a result full of NaN (dropped, so its memory is reused) gives bit for
    bit the result of a fresh array."""
    call, make = OPS[op]
    rng = np.random.default_rng(2)
    inputs = make(rng, dtype)
    poisoned = [a.copy() for a in inputs]
    poisoned[0][...] = np.nan
    monkeypatch.setattr(_scratch, "RECYCLES_RESULTS", False)
    expected = call(backend, inputs)
    monkeypatch.setattr(_scratch, "RECYCLES_RESULTS", True)
    with np.errstate(invalid="ignore"):
        for _ in range(2):
            stale = call(backend, poisoned)
            assert np.isnan(stale).all()
            address = _address(stale)
            del stale
            got = call(backend, inputs)
            assert _address(got) == address  # the poisoned memory, reused
            assert got.dtype == dtype and got.flags.c_contiguous and got.flags.writeable
            np.testing.assert_array_equal(got, expected)
            del got


def test_live_results_and_their_views_never_share_memory(backend, recycle_everything):
    """Results kept alive -- whole, as a view, through a memoryview -- are never handed
    out again; once every holder is gone the memory is reused."""
    rng = np.random.default_rng(3)
    calls = [(OPS[op][0], OPS[op][1](rng, np.float64)) for op in sorted(OPS)]
    held = []
    for call, inputs in calls * 2:
        result = call(backend, inputs)
        assert not any(np.shares_memory(result, a) for a in inputs)
        assert not any(np.shares_memory(result, h) for h in held)
        held.append(result)
    snapshot = [h.copy() for h in held]
    # a view and a memoryview outlive their results
    call, inputs = calls[0]
    first = call(backend, inputs)
    view, address = first[0], _address(first)
    del first
    second = call(backend, inputs)
    assert not np.shares_memory(second, view)
    buffer_view = memoryview(second)
    del second
    third = call(backend, inputs)
    assert not np.shares_memory(third, view) and not np.shares_memory(third, buffer_view)
    del view, buffer_view, third
    assert _address(call(backend, inputs)) in _held_addresses()
    for h, s in zip(held, snapshot):  # later calls never wrote into a live result
        np.testing.assert_array_equal(h, s)
    assert address in _held_addresses()


def _held_addresses():
    return {_address(b) for b in _scratch._local.__dict__.get("results", [])}


def test_slots_are_bounded_and_free_ones_are_replaced_first(recycle_everything):
    f64 = np.dtype(np.float64)
    live = [_scratch.result((10 * (i + 1),), f64) for i in range(_scratch.RESULT_SLOTS)]
    assert len(_scratch._local.results) == _scratch.RESULT_SLOTS
    small = live.pop(0)
    small_address = _address(small)
    del small
    big = _scratch.result((1000,), f64)  # no free slot fits: the free, too small one goes
    assert len(_scratch._local.results) == _scratch.RESULT_SLOTS
    assert small_address not in _held_addresses()
    assert all(_address(a) in _held_addresses() for a in live + [big])
    extra = _scratch.result((1000,), f64)  # all in use: the oldest slot is dropped
    assert len(_scratch._local.results) == _scratch.RESULT_SLOTS
    assert not any(np.shares_memory(extra, a) for a in live + [big])
    assert _address(live[0]) not in _held_addresses()
    live[0][...] = 1.0  # still the caller's array, alive and intact
    assert (live[0] == 1.0).all()


def _owner(array):
    while array.base is not None:
        array = array.base
    return array


def test_result_buffers_stay_within_their_total(recycle_everything, monkeypatch):
    monkeypatch.setattr(_scratch, "RESULT_TOTAL_BYTES", 2500)
    f64 = np.dtype(np.float64)
    for _ in range(2):
        live = [_scratch.result((125,), f64) for _ in range(4)]  # 1000 bytes each
        held = _scratch._local.results
        assert len(held) == 2 and sum(b.size for b in held) <= 2500
        assert all(_address(a) in _held_addresses() for a in live[-2:])
        for i, a in enumerate(live):
            a[...] = i  # each its own memory
        assert [a[0] for a in live] == [0, 1, 2, 3]
        del live, a


def test_results_own_their_memory_without_recycling(backend, monkeypatch):
    """Where reference counts cannot tell (RECYCLES_RESULTS False), results are new arrays."""
    monkeypatch.setattr(_scratch, "RECYCLES_RESULTS", False)
    monkeypatch.setattr(_scratch, "MIN_BYTES", 0)
    _scratch.release()
    for op in sorted(OPS):
        call, make = OPS[op]
        got = call(backend, make(np.random.default_rng(4), np.float32))
        assert _owner(got).dtype == got.dtype  # not a byte buffer of _scratch
    assert not _held_addresses()


def test_default_sizes_recycle_large_results_only(backend):
    """With the default MIN_BYTES: a 512 KB result is recycled, a 4 KB one is new."""
    _scratch.release()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 64, 64, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 16)).astype(np.float32)  # result 2x64x64x16: 512 KB
    first = fastdl.conv2d(x, w, padding=1, backend=backend)
    assert first.nbytes >= _scratch.MIN_BYTES and _owner(first).dtype == np.uint8
    address = _address(first)
    del first
    assert _address(fastdl.conv2d(x, w, padding=1, backend=backend)) == address
    small = fastdl.conv2d(x[:1, :8, :8], w, padding=1, backend=backend)
    assert small.nbytes < _scratch.MIN_BYTES and _owner(small).dtype == small.dtype
    _scratch.release()


def test_threads_recycle_only_their_own_results(backend, recycle_everything):
    """Four Python threads calling at once: each result right and, while alive, alone in
    its memory."""
    call, make = OPS["conv2d_NHWC"]
    inputs = make(np.random.default_rng(6), np.float64)
    expected = call(backend, inputs)
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                got = call(backend, inputs)
                np.testing.assert_array_equal(got, expected)
                results.append(got)
                if len(results) > 8:
                    results.pop(0)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, a in enumerate(results):
        assert not any(np.shares_memory(a, b) for b in results[i + 1:])

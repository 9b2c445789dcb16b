"""Reused memory for large arrays: a call's temporaries, and the memory of its result once
the caller has let go of it.

A fresh multi-megabyte array pays its page faults on every call: the kernel zeroes each
new page on its first write, and glibc hands freed blocks above its mmap threshold (at
most 32 MB) back to the system, so the next call's array starts over. Measured on this
VM: the padded copy and the channels-last output of an 8x64x56x56 depthwise NCHW conv
took it from 1.4-1.6 ms to 4.2-5.3 ms; writing a fresh 33.5 MB result (the exams' 3->16
5x5 layer on 32 128x128 images) costs 2.5 ms on top of the kernel's 6 ms.

Temporaries (``empty``): the conv's padded or transposed copy of its input and its
channels-last output before the transpose to channels-first, arrays the caller never
sees. Each Python thread keeps one buffer per role, grown to the largest request up to
MAX_BYTES (larger ones are allocated per call); the thread's next request for a role
reuses it, so a role's array must be dead by then -- true of conv, whose temporaries
live within one call.

Results (``result``): each Python thread keeps up to RESULT_SLOTS buffers that earlier
results were views of. A buffer is handed out again only when no array uses it any
more: its reference count says that only this module holds it (every view of a buffer,
and every view of those, references the buffer itself, as does anything that holds a
view, e.g. a memoryview or torch.from_numpy). So a live result never shares memory with
another one, and a result the caller dropped gives its memory, already faulted in, to
the next call -- what a caching allocator does (glibc does the same below 32 MB). Where
reference counts cannot tell (no sys.getrefcount, or free-threaded CPython), results
are new arrays. A result is then a view: ``result.base`` is the byte buffer.

Temporaries between MIN_BYTES and MAX_BYTES, results between MIN_BYTES and
RESULT_MAX_BYTES: smaller arrays come from malloc's reused blocks anyway. Threads never
share a buffer. ``release()`` drops this thread's buffers.
"""

import math
import sys
import threading

import numpy as np

MAX_BYTES = 64 << 20
# Below this an array comes from malloc's reused small blocks anyway.
MIN_BYTES = 1 << 18
# Buffers kept for results per thread: a chain of calls (y = conv(x); z = conv(y)) needs
# two, one still the input of the next call; one more for a second op in the chain. A
# result may be larger than a temporary (float64: the exams' 3->64 layer on 32 images
# gives 268 MB, a batch norm of 64x56x56x64 103 MB); the thread's result buffers
# together stay within RESULT_TOTAL_BYTES.
RESULT_SLOTS = 3
RESULT_MAX_BYTES = 256 << 20
RESULT_TOTAL_BYTES = 256 << 20
# Reference counts tell whether a buffer is free only with a GIL.
RECYCLES_RESULTS = hasattr(sys, "getrefcount") and getattr(sys, "_is_gil_enabled", lambda: True)()

_local = threading.local()


def empty(role, shape, dtype):
    """An uninitialised C-contiguous array of `shape` and `dtype`: this thread's buffer
    for `role` (a string) when the size is between MIN_BYTES and MAX_BYTES, else (and
    for role None) a new array."""
    nbytes = math.prod(shape) * dtype.itemsize
    if role is None or not MIN_BYTES <= nbytes <= MAX_BYTES:
        return np.empty(shape, dtype=dtype)
    buffers = _local.__dict__.setdefault("buffers", {})
    buffer = buffers.get(role)
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[role] = np.empty(nbytes, dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def result(shape, dtype):
    """An uninitialised C-contiguous array of `shape` and `dtype` for a call's result:
    the memory of an earlier result no array uses any more, when there is one of the
    size (see the module docstring), else new memory. `dtype`: a np.dtype."""
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or nbytes > RESULT_MAX_BYTES or not RECYCLES_RESULTS:
        return np.empty(shape, dtype)
    slots = _local.__dict__.setdefault("results", [])
    chosen = None
    for buffer in slots:
        # Referenced by `slots`, `buffer` and getrefcount's argument only: unused. (No
        # enumerate: its reused result tuple would hold one more reference.)
        if buffer.size >= nbytes and sys.getrefcount(buffer) == 3:
            if chosen is None or buffer.size < chosen.size:
                chosen = buffer
    if chosen is None:
        chosen = np.empty(nbytes, dtype=np.uint8)
        # Make room: drop buffers no array uses (too small for this call), then the
        # oldest ones (their arrays keep them alive until they die).
        while slots and (len(slots) == RESULT_SLOTS or
                         sum(b.size for b in slots) + nbytes > RESULT_TOTAL_BYTES):
            unused = [i for i in range(len(slots)) if sys.getrefcount(slots[i]) == 2]
            del slots[unused[0] if unused else 0]
        slots.append(chosen)
    return chosen[:nbytes].view(dtype).reshape(shape)


def release():
    """Drop this thread's buffers (tests; a long-lived thread done with large calls)."""
    _local.__dict__.pop("buffers", None)
    _local.__dict__.pop("results", None)

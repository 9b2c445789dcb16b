"""Reused memory for the large temporaries of a call, arrays the caller never sees: the
conv's padded or transposed copy of its input and its channels-last output before the
transpose to channels-first.

A fresh multi-megabyte array pays its page faults on every call: glibc hands freed blocks
above its trim threshold back to the system (the padded copy and the channels-last output
of an 8x64x56x56 depthwise NCHW conv took it from 1.4-1.6 ms to 4.2-5.3 ms on this VM,
2 threads; PyTorch keeps such workspaces too). So each Python thread keeps one buffer per
role, grown to the largest request up to MAX_BYTES (larger ones are allocated per call);
the thread's next request for a role reuses it, so a role's array must be dead by then --
true of conv, whose temporaries live within one call. Threads never share a buffer.
"""

import math
import threading

import numpy as np

MAX_BYTES = 64 << 20
# Below this a temporary comes from malloc's reused small blocks anyway.
MIN_BYTES = 1 << 18

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


def release():
    """Drop this thread's buffers (tests; a long-lived thread done with large convs)."""
    _local.__dict__.pop("buffers", None)

# Test-only entry point for the inline exp in kernels/fastmath.pxd; not an op family, so
# it is not in _dispatch.FAMILIES. (It cannot be called fastmath.pyx: that module would
# be fastdl._cy.fastmath, and Cython then resolves `from fastmath cimport` to itself.)
from cython.parallel cimport prange

from fastmath cimport exp32, exp64

ctypedef fused real:
    float
    double


def exp_array(const real[::1] x not None, real[::1] out not None, int num_threads=1):
    """out[i] = exp32(x[i]) or exp64(x[i]) (by dtype); x and out have the same length."""
    cdef Py_ssize_t n = x.shape[0], i
    if out.shape[0] != n:
        raise ValueError(f"out: expected length {n}, got {out.shape[0]}")
    if n == 0:
        return
    cdef const real* xp = &x[0]
    cdef real* op = &out[0]
    for i in prange(n, nogil=True, num_threads=num_threads, schedule="static"):
        if real is float:
            op[i] = exp32(xp[i])
        else:
            op[i] = exp64(xp[i])

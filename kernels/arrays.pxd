# The contract check of kernel entry points that take ndarrays and read their data
# pointers instead of typed memoryviews (each memoryview costs ~0.2-0.5 us to acquire,
# a good part of a small input's call). The Python wrappers have already made the arrays
# fit; the check keeps a misuse of the private functions from reading out of bounds.
# Header-only (no kernels/arrays.pyx may exist); a module that cimports this must call
# cnp.import_array() once.
cimport numpy as cnp


cdef inline bint plain_array(cnp.ndarray a, int type_num, int ndim) noexcept:
    """a is a C-contiguous, aligned, native-byte-order array of this dtype and ndim."""
    return (cnp.PyArray_TYPE(a) == type_num and cnp.PyArray_NDIM(a) == ndim
            and cnp.PyArray_ISCARRAY_RO(a) and cnp.PyArray_ISNOTSWAPPED(a))

"""Vectorised NumPy reference backend: one module per op family, same signatures as the
compiled backends. It ignores the thread count (NumPy/BLAS manage their own)."""

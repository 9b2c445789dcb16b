"""Cython/OpenMP backend: extension modules compiled from kernels/<family>.pyx by
setup.py. If the build failed, _build_failures.json beside this file says why."""

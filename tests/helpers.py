"""Test utilities: tolerances, memory-layout variants and a crash-proof subprocess runner."""

import os
import subprocess
import sys
import textwrap

from pathlib import Path

import numpy as np

# Relative to the scale of the expected output (max |expected|, at least 1).
RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, dtype, scale_tol=None):
    """Compare with a dtype-aware tolerance relative to the output's scale; also checks
    the returned dtype and shape."""
    dtype = np.dtype(dtype)
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.dtype == dtype, f"dtype {actual.dtype} != {dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    tol = (scale_tol or RTOL[dtype]) * scale
    nan_mismatch = np.isnan(actual) != np.isnan(expected)
    assert not nan_mismatch.any(), "NaN positions differ"
    finite = np.isfinite(expected)
    err = float(np.max(np.abs(actual[finite] - expected[finite]), initial=0.0))
    assert err <= tol, f"max abs error {err:.3g} > tol {tol:.3g} (scale {scale:.3g})"
    inf = np.isinf(expected)
    assert np.array_equal(actual[inf], expected[inf]), "Inf values differ"
    return err


def layout_variants(array):
    """(name, variant) pairs holding the same values as ``array`` in odd memory layouts."""
    array = np.ascontiguousarray(array)
    fortran = np.asfortranarray(array)
    wide = np.zeros(array.shape[:-1] + (array.shape[-1] * 2,), array.dtype)
    wide[..., ::2] = array
    strided = wide[..., ::2]
    flipped = array[::-1].copy()[::-1]  # negative stride on axis 0, same values
    assert flipped.strides[0] < 0 or array.shape[0] <= 1
    readonly = array.copy()
    readonly.setflags(write=False)
    swapped = array.astype(array.dtype.newbyteorder(">" if array.dtype.byteorder != ">" else "<"))
    out = [("contiguous", array), ("fortran", fortran), ("strided", strided),
           ("negative_stride", flipped), ("readonly", readonly), ("byteswapped", swapped)]
    for name, variant in out:
        assert np.array_equal(variant, array), name
    return out


def run_isolated(code, timeout=300):
    """Run ``code`` in a fresh interpreter; returns (returncode, stdout, stderr). A
    segfault or abort shows up as a negative return code instead of killing pytest."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def exam_cases_path():
    """Where shared/exam_cases.json is: $FASTDL_EXAM_CASES, else a shared/ folder beside
    the checkout (CI, a developer's checkout), inside it (a device machine's copy) or two
    levels up (a git worktree under the checkout's parent). None if absent."""
    root = Path(__file__).resolve().parents[1]
    candidates = [os.environ.get("FASTDL_EXAM_CASES")]
    candidates += [base / "shared" / "exam_cases.json"
                   for base in (root.parent, root, root.parent.parent)]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def assert_rejected_in_subprocess(imports, calls):
    """Each source string in ``calls`` must raise ValueError or TypeError when evaluated
    after ``imports`` in one fresh interpreter; a crash of that interpreter fails too."""
    code = f"""
{textwrap.dedent(imports)}
for source in {list(calls)!r}:
    try:
        eval(source)
    except (ValueError, TypeError):
        continue
    raise SystemExit("no error raised by " + source)
print("ok")
"""
    returncode, stdout, stderr = run_isolated(code)
    assert returncode == 0 and "ok" in stdout, (returncode, stdout, stderr)

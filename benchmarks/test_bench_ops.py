"""Every case of fastdl.bench's registry, timed per backend, PyTorch and naive reference."""

import os

import pytest

from fastdl import bench

QUICK = os.environ.get("FASTDL_BENCH_QUICK", "") not in ("", "0")
DTYPES = [d.strip() for d in os.environ.get(
    "FASTDL_BENCH_DTYPES", "float32" if QUICK else "float32,float64").split(",") if d.strip()]
# seconds of timed rounds per entry, as in `python -m fastdl.bench` (--quick: 0.25)
BUDGET = 0.25 if QUICK else 1.0


# Entries vary fastest, so each case's inputs are built once for all its entries; the
# naive reference is an entry of the small cases only.
PARAMS = [pytest.param(case, dtype, entry, id=f"{case.id}-{dtype}-{entry}")
          for case in bench.cases(quick=QUICK) for dtype in DTYPES
          for entry in bench.ALL_BACKENDS if entry != "naive" or case.naive]


@pytest.mark.parametrize(("case", "dtype", "entry"), PARAMS)
def test_op(benchmark, case_inputs, case, dtype, entry):
    arrays = case_inputs(case, dtype)
    call, why = bench.entry_call(case, arrays, entry)
    if call is None:
        pytest.skip(why)
    work, unit = case.family.work(case, dtype)
    benchmark.group = f"{case.id} {dtype}"
    # Warm-up before pedantic: the first call (numba compile or cache load) is timed apart
    # and kept in extra_info, a second one sizes the rounds. The naive loops have nothing
    # to warm up: their first call sizes the rounds.
    first_call = bench.time_call(call)
    per_call = first_call if entry == "naive" else bench.time_call(call)
    rounds = max(1 if entry == "naive" else 3, min(1000, int(BUDGET / max(per_call, 1e-6))))
    benchmark.extra_info.update(op=case.op, layout=case.layout, work=work, unit=unit,
                                first_call_s=first_call)
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)

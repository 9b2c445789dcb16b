"""fastdl.bench: the CLI's JSON and plot, the timing protocol, skipping, and that every
benchmark peer (PyTorch, naive reference) computes what the fastdl call computes."""

import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest

import fastdl
from fastdl import bench

from helpers import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_KEYS = {"op", "case", "label", "layout", "dtype", "backend", "work", "unit", "status",
               "first_call_s", "median_s", "min_s", "repeats", "rate", "vs_naive", "vs_torch"}


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_quick_conv2d_writes_json_and_plot(tmp_path):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [sys.executable, "-m", "fastdl.bench", "--quick", "--ops", "conv2d",
               "--budget", "0.01", "--no-progress", "--json", str(json_path)]
    if _has_matplotlib():
        command += ["--plot", str(png_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "vs torch" in proc.stdout and "start-up" in proc.stdout
    assert "timed in their own process" in proc.stdout

    data = json.loads(json_path.read_text())
    assert set(data) >= {"machine", "settings", "results", "startup", "elapsed_s"}
    assert data["machine"]["threads"] >= 1 and data["machine"]["numpy"] == np.__version__
    assert data["settings"]["quick"] is True and data["settings"]["ops"] == ["conv2d"]
    quick_conv2d = bench.cases(quick=True, ops={"conv2d"})
    expected = [(case.id, entry) for case in quick_conv2d for entry in bench.ALL_BACKENDS
                if entry != "naive" or case.naive]
    assert [(row["case"], row["backend"]) for row in data["results"]] == expected
    for row in data["results"]:
        assert set(row) >= RESULT_KEYS
        assert row["op"] == "conv2d" and row["dtype"] == "float32"
        if row["status"] != "ok":
            assert row["status"].startswith("skipped"), row
            continue
        assert row["median_s"] > 0 and row["first_call_s"] > 0 and row["repeats"] >= 1
        assert row["min_s"] <= row["median_s"]
        assert row["rate"] == pytest.approx(row["work"] / row["median_s"] / 1e9)
    measured = {row["backend"] for row in data["results"] if row["status"] == "ok"}
    available = {b for b, s in fastdl.backends().items() if s == "available"}
    assert available <= measured and "naive" in measured
    for entry in data["startup"]:
        if entry["status"] == "ok":
            assert entry["import_s"] > 0 and entry["first_call_s"] > 0
            firsts = [run["first_call_s"] for run in entry["runs"]]
            assert len(firsts) == (1 if entry["cache"] == "cold" else bench.STARTUP_REPEATS)
            assert entry["first_call_s"] == statistics.median(firsts)
    if _has_matplotlib():
        assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratios_come_from_the_same_run():
    small = [c for c in bench.cases(quick=True, ops={"conv2d"}) if c.naive]
    results = bench.run(small, ["numpy", "torch", "naive"], "float64", budget=0.01,
                        progress=False)
    rows = {row["backend"]: row for row in results}
    for row in results:
        for peer in ("torch", "naive"):
            if rows[peer]["median_s"] is None or row["median_s"] is None:
                assert row[f"vs_{peer}"] is None
            else:
                assert row[f"vs_{peer}"] == pytest.approx(rows[peer]["median_s"] / row["median_s"])


def test_rounds_report_the_lowest_round_and_drop_a_stall():
    """Three rounds of one entry, one of them stalled 10x: the lowest round median is
    reported, the first call comes from the first round, repeats add up, the rate follows
    the reported median."""
    case = bench.cases(quick=True, ops={"conv2d"})[0]
    base = bench._new_row(case, "numba", "float32")
    rounds = [dict(base, first_call_s=f, median_s=m, min_s=m * 0.9, repeats=r)
              for f, m, r in ((0.5, 1.0e-3, 10), (1e-3, 10.0e-3, 2), (1e-3, 1.2e-3, 9))]
    row = bench._combine_rounds(rounds)
    assert row["median_s"] == 1.0e-3 and row["first_call_s"] == 0.5
    assert row["min_s"] == pytest.approx(0.9e-3) and row["repeats"] == 21
    assert row["rate"] == pytest.approx(row["work"] / 1.0e-3 / 1e9)
    assert row["round_medians_s"] == [1.0e-3, 10.0e-3, 1.2e-3]
    failed = dict(base, status="error: boom")
    assert bench._combine_rounds([rounds[0], failed, rounds[2]])["status"] == "error: boom"


def test_rounds_run_the_list_interleaved():
    small = [c for c in bench.cases(quick=True, ops={"conv2d"}) if c.naive]
    results = bench.run(small, ["numpy", "torch"], "float64", budget=0.02, progress=False,
                        rounds=2)
    assert [row["backend"] for row in results] == ["numpy", "torch"]
    for row in results:
        if row["median_s"] is not None:
            assert len(row["round_medians_s"]) == 2
            assert row["median_s"] == min(row["round_medians_s"])


def test_measure_times_first_call_apart(monkeypatch):
    """A fake clock: the first call "takes" 10 s (a compile), later ones 1 s."""
    clock = {"now": 0.0, "calls": 0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])

    def call():
        clock["calls"] += 1
        clock["now"] += 10.0 if clock["calls"] == 1 else 1.0

    first, median, fastest, repeats = bench.measure(call, budget=5.0)
    assert (first, median, fastest, repeats) == (10.0, 1.0, 1.0, 5)
    assert clock["calls"] == 1 + 1 + 5  # first, warm-up, timed repeats

    clock.update(now=0.0, calls=0)
    first, median, _, repeats = bench.measure(call, budget=5.0, warmup=False)
    assert (first, median, repeats) == (10.0, 10.0, 1)  # a naive call over budget: one sample


def test_an_entry_that_raises_is_an_error_row(monkeypatch):
    case = bench.cases(quick=True, ops={"conv1d"})[0]

    def broken(*args, **kwargs):
        raise RuntimeError("no such kernel")

    monkeypatch.setattr(fastdl, "conv1d", broken)
    # in this process, where the patch applies (the workers import fastdl afresh)
    results = bench.run([case], ["numpy", "torch"], budget=0.01, progress=False, isolated=False)
    assert results[0]["status"] == "error: RuntimeError: no such kernel"
    assert results[1]["status"] == "ok" and results[1]["median_s"] > 0


def test_missing_op_is_skipped_not_an_error(monkeypatch):
    case = bench.cases(quick=True, ops={"conv1d"})[0]
    monkeypatch.delattr(fastdl, "conv1d")
    results = bench.run([case], ["numpy"], budget=0.01, progress=False, isolated=False)
    assert results[0]["status"] == "skipped: fastdl.conv1d is not available in this build"
    assert "skipped" in bench.format_table(results)


def test_each_entry_kind_runs_in_its_own_process():
    """The workers: one process per entry kind, and only the torch worker imports torch,
    so no library's spinning thread pool shares the cores of another's timed calls."""
    case = next(c for c in bench.cases(quick=True, ops={"conv2d"}) if c.naive)
    kinds = ["numba", "cython", "numpy", "torch", "naive"]
    info = {}
    results = bench.run([case], kinds, budget=0.01, progress=False, worker_info=info)
    assert [row["backend"] for row in results] == kinds
    assert set(info) == set(kinds)
    pids = {info[kind]["pid"] for kind in kinds}
    assert len(pids) == len(kinds) and os.getpid() not in pids
    for kind in kinds:
        assert info[kind]["kind"] == kind
        assert ("torch" in info[kind]["modules"]) == (kind == "torch"), info[kind]
    assert "numba" not in info["torch"]["modules"]  # so no numba kernel ran there either
    measured = {row["backend"] for row in results if row["status"] == "ok"}
    available = {b for b, s in fastdl.backends().items() if s == "available"}
    assert available | {"naive"} <= measured


def test_a_worker_that_dies_gives_an_error_row():
    case = bench.cases(quick=True, ops={"conv1d"})[0]
    workers = {}
    # an unknown case id makes the worker raise and exit, as a crash in a kernel would
    row = bench._ask_worker(workers, "numpy", 1, dict(case="no-such-case", dtype="float32",
                                                      budget=0.01), case)
    assert row["status"].startswith("error: the numpy worker process died (exit code")
    assert row["backend"] == "numpy" and row["median_s"] is None and not workers


def test_plot_without_matplotlib_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code = bench.main(["--quick", "--ops", "conv1d", "--plot", str(tmp_path / "x.png")])
    assert code == 2 and "needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_registry_covers_every_op():
    ids = [case.id for case in bench.CASES]
    assert len(ids) == len(set(ids))
    for quick in (False, True):
        assert {case.op for case in bench.cases(quick=quick)} == set(bench.OPS)
    assert {case.op for case in bench.CASES if case.naive} == set(bench.OPS)


@pytest.mark.parametrize("case", [c for c in bench.CASES if c.naive], ids=lambda c: c.id)
def test_peers_compute_the_same_thing(case, torch):
    """On the small cases: the benchmark's torch call, its naive reference call and its
    fastdl call (numpy backend) agree, so the speedups compare equal work."""
    assert case.channels_last  # the references' layout: outputs compare as they are
    arrays = bench.make_inputs(case, "float64")
    # torch returns logical N, C, spatial... (channels-last memory for these cases)
    torch_out = case.family.torch(case, arrays, torch)().movedim(1, -1).numpy()
    naive = case.family.naive(case, arrays)
    has_op = getattr(fastdl, case.op, None) is not None
    assert naive is not None or has_op, f"neither fastdl.{case.op} nor its reference exists"
    if naive is not None:
        assert_close(torch_out, _main_output(naive()), np.float64)
    if has_op:
        assert_close(_main_output(case.family.fastdl(case, arrays, "numpy")()), torch_out,
                     np.float64)


def _main_output(result):
    """The output array of a call that may also return extras, e.g. the reference
    batch_norm's (out, new_running_mean, new_running_var)."""
    return np.asarray(result[0] if isinstance(result, tuple) else result)

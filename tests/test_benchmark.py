"""The benchmark suite's fixed inputs and its report (timings themselves are never asserted)."""

from __future__ import annotations

import json
import math
import os

import pytest

from mxopt.cli import bench as benchmark
from mxopt.cli import bench_report


def test_bert_base_shapes_count_the_published_parameters():
    shapes = benchmark.bert_base_shapes()
    # embeddings + 12 layers x 16 tensors + pooler (2)
    assert len(shapes) == 5 + 12 * 16 + 2
    sizes = [math.prod(s) for s in shapes]
    # by hand: embeddings 23,837,184; a layer 7,087,872; pooler 590,592
    assert sum(sizes) == 23_837_184 + 12 * 7_087_872 + 590_592 == 109_482_240


def _row(regime, optimizer, implementation, ms, percent):
    return {
        "regime": regime, "optimizer": optimizer, "implementation": implementation,
        "tensors": 1, "elements": 1 << 24, "ms": ms, "GB/s": 1.0,
        "percent_of_memory_limit": percent, "mxopt_speedup": 1.0,
    }  # fmt: skip


def test_report_summarises_the_targets():
    rows = [
        _row("16M", "adam", "mxopt packed", 16.0, 80.0),
        _row("16M", "adam", "mxopt packed, unchecked", 12.0, 100.0),
        _row("16M", "adam", "memory limit", 12.0, 100.0),
        # torch fused ran in another group, whose memory limit took 15 ms
        _row("16M", "adam", "torch fused", 15.0, 100.0),
    ]
    data = {
        "machine": {"cpu_count": 2},
        "repeats": 3,
        "rows": rows,
        "gpu": [],
        "startup": {"import_s": 0.25},
        "peak_extra_memory_bytes": {"mxopt packed (adam)": 0},
    }
    text = bench_report.report(json.loads(json.dumps(data)))  # the report reads saved JSON
    assert text.startswith("machine: cpu_count=2\n")
    # times: torch fused / unchecked = 15 / 12 and torch fused / packed = 15 / 16;
    # against the limits of their own groups: 100% / 100% for torch fused / unchecked
    assert "| 16M | adam | 80% | 100% | 1.25 | 1.00 | 0.94 |" in text
    assert "| import_s | 0.250 s |" in text
    assert "| peak extra memory, mxopt packed (adam) | 0.00 MiB |" in text


def test_suite_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    code = benchmark.main(["--regimes", "per-call-16", "--optimizers", "sgd-momentum",
                           "--repeats", "1", "--no-startup", "--out", str(out)])  # fmt: skip
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    implementations = {r["implementation"] for r in data["rows"]}
    assert "mxopt, 1000 weights per step" in implementations
    assert bench_report.DIRECT_KERNEL in implementations
    assert all(r["us"] > 0 for r in data["rows"])
    direct = next(line for line in (out / "bench.md").read_text().splitlines()
                  if bench_report.DIRECT_KERNEL in line)  # fmt: skip
    assert direct.endswith("| 1.00 |")  # the floor, against itself
    assert (out / "bench.md").read_text() == bench_report.report(data)
    # the chart leaves out the per-call regime, so a run of it alone writes no PNG, and says so
    assert not (out / "bench.png").exists()
    assert "no PNG: the per-call regime is only a table" in capsys.readouterr().out


def test_report_says_when_figures_are_not_trustworthy():
    from mxopt.cli.bench_report import report, trust

    calm = _row("1M", "adam", "mxopt packed", 1.0, 90.0) | {"spread": 1.05}
    noisy = _row("1M", "adam", "numpy", 3.0, 30.0) | {"spread": 1.8}
    impossible = _row("1M", "adam", "torch fused", 0.5, 180.0) | {"spread": 1.1}
    base = {"machine": {}, "repeats": 5, "gpu": [], "startup": {}, "peak_extra_memory_bytes": {}}
    quiet = base | {"rows": [calm], "load": {"before": 0.1, "after": 0.2, "cpus": 2}}
    assert trust(quiet) == ""
    assert "Not trustworthy" not in report(quiet)
    # the load average after a run counts the run's own threads: only others' time counts
    itself = base | {"rows": [calm], "load": {"before": 0.1, "after": 2.4, "others": 0.05,
                                              "cpus": 2}}  # fmt: skip
    assert trust(itself) == ""
    shared = base | {"rows": [calm], "load": {"before": 0.1, "others": 0.4, "cpus": 2}}
    assert "other processes took 40% of it)" in trust(shared)
    loud = base | {"rows": [calm, noisy, impossible],
                   "load": {"before": 1.9, "after": 0.3, "cpus": 2}}  # fmt: skip
    text = report(loud)
    assert "the machine was busy (load average 1.9 before the run" in text
    assert "1 of 3 figures (marked ~) varied by more than 1.3x" in text
    assert "1 figures (marked !) are faster than the memory limit" in text
    assert "| 3.000~ |" in text and "| 0.500! |" in text and "| 1.000 |" in text


def test_the_gpu_check_runs_on_the_emulated_gpu(monkeypatch, tmp_path):
    import importlib.util
    import pathlib

    from tests import cuda_tools, fake_cupy

    if not cuda_tools.have_cxx():
        pytest.skip("g++ not on PATH")
    path = pathlib.Path(__file__).parent.parent / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    fake_cupy.install(monkeypatch)
    rows = gpu_check.run_bench(tmp_path, True, ["1000x1k"], ["adam"], 1)
    assert {r["implementation"] for r in rows} >= {
        "mxopt packed (GPU)", "mxopt packed, unchecked (GPU)", "device copy bandwidth"
    }  # fmt: skip
    table = (tmp_path / "gpu_bench.md").read_text()
    assert "| 1000x1k | adam | mxopt packed (GPU) |" in table and "Emulated" in table
    assert json.loads((tmp_path / "gpu_bench.json").read_text())["emulated"] is True
    result = gpu_check.run_low_precision_bench(tmp_path, True, ["1M"], 1)
    assert {row["case"] for row in result["rows"]} >= {"bfloat16 + master", "float32, int8 state"}
    assert result["device"] == "gpu" and not result["busy"]
    assert "| 1M | bfloat16 + master |" in (tmp_path / "gpu_low_precision.md").read_text()


def test_cpu_time_of_other_processes_is_told_apart_from_the_runs_own():
    # a process this one has not waited for yet is another process: its spinning shows in
    # the others' time; this process's own spinning does not
    import subprocess
    import sys
    import time

    from mxopt.cli.bench import cpu_seconds, others_share

    if cpu_seconds() is None:
        pytest.skip("no /proc/stat here")
    cpus = os.cpu_count() or 1
    start, started = cpu_seconds(), time.perf_counter()
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5:\n    pass\n"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(1.2)
        end, wall = cpu_seconds(), time.perf_counter() - started
    finally:
        spinner.wait()
    assert others_share(start, end, wall, cpus) * wall * cpus >= 0.5  # CPU-seconds of others
    start, started = cpu_seconds(), time.perf_counter()
    while time.perf_counter() - started < 0.5:  # spin here
        pass
    end = cpu_seconds()
    mine = end[1] - start[1]
    assert mine >= 0.3
    assert others_share(None, end, 1.0, cpus) is None

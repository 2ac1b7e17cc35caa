"""The GPU check: the GPU tests and the GPU part of the benchmark, in under 8 minutes.

    python benchmarks/gpu_check.py OUT_DIR             # on a machine with an NVIDIA GPU and CuPy
    python benchmarks/gpu_check.py OUT_DIR --emulate   # anywhere: CuPy emulated on the CPU

Writes to ``OUT_DIR``: ``device.txt`` (the device and the versions), ``tests.log`` (pytest
on ``tests/test_gpu.py``, the GPU tests of ``tests/test_low_precision.py`` and
``tests/test_state_dtype.py`` on the device, and ``tests/test_cuda_sources.py`` (NVRTC's
compile checks); at most 4 minutes, in parallel when pytest-xdist is there),
``gpu_bench.md`` and ``gpu_bench.json`` (one step of each optimizer on the GPU against the
device's copy bandwidth and torch fused CUDA when installed, the functions of ``mxopt
bench``'s GPU section), ``gpu_low_precision.md`` and ``.json`` (ADAM on 16-bit weights and
8-bit and bfloat16 state against the copy bandwidth for the bytes each step moves,
benchmarks/bench_low_precision.py). Exits non-zero when the tests fail.

``--emulate`` installs the CPU stand-in for CuPy of the test suite (``tests/fake_cupy``:
mxopt's real CUDA sources built with g++), runs the emulated tests and one small regime of
each benchmark: it checks that the script works, and its timings mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: On a GPU: the real device's tests, and NVRTC's compile checks with the device's CUDA
#: (the emulated tests are CI's: they need no GPU).
TEST_FILES = ["tests/test_gpu.py", "tests/test_cuda_sources.py"]
#: The GPU tests of these run on the emulation and on the device (the ``gpu`` fixture).
GPU_FIXTURE_TESTS = ["tests/test_low_precision.py", "tests/test_state_dtype.py"]
TESTS_TIMEOUT_S = 240


def _install_fake_cupy():
    sys.path.insert(0, str(ROOT))
    from tests import fake_cupy

    sys.modules["cupy"] = fake_cupy
    sys.modules["cupy.cuda"] = fake_cupy.cuda
    sys.modules["cupy.cuda.runtime"] = fake_cupy.cuda.runtime
    return fake_cupy


def describe_device(emulate: bool) -> str:
    import numpy as np

    import mxopt

    lines = [f"mxopt {mxopt.__version__}, NumPy {np.__version__}, Python {sys.version.split()[0]}"]
    if emulate:
        lines.append("device: emulated (tests/fake_cupy, CUDA sources built with g++ on the CPU)")
        return "\n".join(lines)
    try:
        import cupy

        properties = cupy.cuda.runtime.getDeviceProperties(0)
        name = properties["name"]
        name = name.decode() if isinstance(name, bytes) else name
        lines.append(f"device: {name}, CuPy {cupy.__version__}, "
                     f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")  # fmt: skip
    except Exception as error:  # noqa: BLE001 - reported, the tests will say more
        lines.append(f"device: none usable ({type(error).__name__}: {error})")
    return "\n".join(lines)


def run_tests(out: pathlib.Path, emulate: bool) -> int:
    files = ["tests/test_gpu_emulated.py"] if emulate else TEST_FILES
    files += [f"{path}::test_{name}" for path in GPU_FIXTURE_TESTS for name in _gpu_tests(path)]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    if not emulate:  # their emulated halves are CI's
        command += ["-k", "not emulated"]
    if importlib.util.find_spec("xdist") and (os.cpu_count() or 1) > 2:
        command += ["-n", str(min(8, os.cpu_count()))]
    with open(out / "tests.log", "w") as log:
        try:
            result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=TESTS_TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            log.write(f"\nstopped after {TESTS_TIMEOUT_S} s\n")
            return 124
    return result.returncode


def _gpu_tests(path: str) -> list:
    """The names (after ``test_``) of the tests in ``path`` that take the ``gpu`` fixture."""
    source = (ROOT / path).read_text()
    return re.findall(r"^def test_(\w+)\([^)]*\bgpu\b", source, flags=re.MULTILINE)


def run_low_precision_bench(out: pathlib.Path, emulate: bool, sizes, repeats: int) -> dict:
    """ADAM on low-precision weights and state on the GPU (benchmarks/bench_low_precision.py)."""
    import cupy

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_low_precision

    result = bench_low_precision.run(sizes, repeats, cupy)
    text = bench_low_precision.table(result) + "\n"
    if emulate:
        text += "\nEmulated: these timings measure the CPU stand-in, not a GPU.\n"
    (out / "gpu_low_precision.md").write_text(text)
    result = {"emulated": emulate, **result}
    (out / "gpu_low_precision.json").write_text(json.dumps(result, indent=1))
    return result


def run_bench(out: pathlib.Path, emulate: bool, regimes, optimizers, repeats: int) -> list:
    from mxopt.cli import bench

    rows = bench.gpu_rows(regimes, optimizers, repeats)
    lines = ["| regime | optimizer | implementation | ms | GB/s | % of copy bandwidth |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        percent = r["percent_of_memory_limit"]
        lines.append(f"| {r['regime']} | {r['optimizer']} | {r['implementation']} | "
                     f"{r['ms']:.3f} | {r['GB/s']:.1f} | {percent:.0f}% |")  # fmt: skip
    if emulate:
        lines.append("\nEmulated: these timings measure the CPU stand-in, not a GPU.")
    text = "\n".join(lines) + "\n"
    (out / "gpu_bench.md").write_text(text)
    (out / "gpu_bench.json").write_text(json.dumps({"emulated": emulate, "rows": rows}, indent=1))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for the table and the logs")
    parser.add_argument("--emulate", action="store_true", help="CuPy emulated on the CPU")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.emulate:
        _install_fake_cupy()
        regimes, optimizers, repeats = ["1000x1k"], ["adam"], args.repeats or 1
        low_precision_sizes = ["1M"]
    else:
        regimes = ["1M", "16M", "64M", "bert-base", "1000x1k"]
        optimizers, repeats = ["sgd-momentum", "adam", "adamw"], args.repeats or 7
        low_precision_sizes = ["16M", "64M"]
    (out / "device.txt").write_text(describe_device(args.emulate) + "\n")
    print((out / "device.txt").read_text(), end="", flush=True)
    tests = run_tests(out, args.emulate)
    print(f"tests: exit {tests} (log in {out / 'tests.log'})", flush=True)
    rows = run_bench(out, args.emulate, regimes, optimizers, repeats)
    print((out / "gpu_bench.md").read_text(), end="", flush=True)
    if not rows:
        print("no GPU rows: CuPy found no device")
    else:
        run_low_precision_bench(out, args.emulate, low_precision_sizes, repeats)
        print((out / "gpu_low_precision.md").read_text(), end="")
    print(f"done in {time.perf_counter() - started:.0f} s; files in {out}")
    return tests if tests else (0 if rows else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())

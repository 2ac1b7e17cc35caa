"""Adam on low-precision weights and state: speed against the memory limit, state bytes.

Every case is ADAM's step on one flat weight, timed in one process with the cases
alternating (medians of the repeats, and their spread), next to a *memory-limit* kernel
of its own: a Numba loop that reads and writes exactly the arrays the case's step must
(the weight, the gradient, the master copy, the moments, in their dtypes) and nothing
else. ``% limit`` is the limit's time over the step's, so 100% means the step runs at the
speed of memory for the bytes it cannot avoid moving.

The cases: float32 weights with float32, bfloat16 and 8-bit moments
(``state_dtype``); bfloat16 weights with a float32 master copy (``multi_precision``),
without one, and with stochastic rounding; float16 weights with a master copy;
bfloat16 weights with a master copy and 8-bit moments. ``state B/param`` is the optimizer
state (master copy included) per parameter.

The machine's load is read before and after: when other processes take cores this run
needs (the load before it above the cores it leaves free, or after it above the number of
cores), the table says the figures are not trustworthy, and a case whose spread is above
15% of its median is marked noisy (this 2-core VM is shared).

On the GPU (``--gpu``, CuPy and a device) the limit is the device's copy bandwidth: one
``cupy.copyto`` moving the bytes the step must move (benchmarks/gpu_check.py runs this).

    NUMBA_NUM_THREADS=1 MXOPT_NUM_THREADS=1 python benchmarks/bench_low_precision.py
    python benchmarks/bench_low_precision.py --sizes 16M 64M --repeats 9
    python benchmarks/bench_low_precision.py --gpu

Writes ``benchmarks/results/bench_low_precision.json`` (``bench_low_precision_gpu.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics

import ml_dtypes
import numba
import numpy as np

import mxopt
from mxopt.cli.bench import _load, _repeat_times, machine_info
from mxopt.kernels import threads

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
SIZES = {"1M": 1 << 20, "16M": 16 << 20, "64M": 64 << 20}
#: Spread (max - min over the repeats, over the median) above which a figure is flagged.
NOISY_SPREAD = 0.15

#: label -> (weight dtype, ADAM options)
CASES = {
    "float32": (F32, {}),
    "float32, bfloat16 state": (F32, {"state_dtype": "bfloat16"}),
    "float32, int8 state": (F32, {"state_dtype": "int8"}),
    "bfloat16 + master": (BF16, {"multi_precision": True}),
    "bfloat16, no master": (BF16, {}),
    "bfloat16 + master, stochastic": (BF16, {"multi_precision": True, "stochastic_rounding": True}),
    "float16 + master": (F16, {"multi_precision": True}),
    "bfloat16 + master, int8 state": (BF16, {"multi_precision": True, "state_dtype": "int8"}),
}


def adam_step(dtype, options: dict, n: int, xp=np):
    """ADAM's step on a weight of ``n`` elements of ``dtype``, state made; and the updater.
    With ``xp`` CuPy, on the GPU (the step waits for the device)."""
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_batch()
    updater = mxopt.get_updater(mxopt.ADAM(state=state, **options), nonfinite="apply")
    rng = np.random.default_rng(0)
    weight = xp.asarray(rng.standard_normal(n, dtype=np.float32).astype(dtype))
    grad = xp.asarray((rng.standard_normal(n, dtype=np.float32) * 0.01).astype(dtype))
    updater(0, grad, weight)  # creates the state
    if xp is np:
        return (lambda: updater(0, grad, weight)), updater

    def step():
        updater(0, grad, weight)
        xp.cuda.Device().synchronize()

    return step, updater


def stored_arrays(dtype, options: dict, n: int) -> list:
    """``[(dtype, read, written)]``: the arrays an ADAM step must move, as stored."""
    arrays = [(dtype, True, False)]  # the gradient
    lowp = dtype != F32
    if lowp and options.get("multi_precision"):
        arrays += [(F32, True, True), (dtype, False, True)]  # master in and out, weight out
    else:
        arrays.append((dtype, True, True))
    moment = {"float32": F32, "bfloat16": BF16, "int8": np.dtype(np.uint8)}
    arrays += [(moment[options.get("state_dtype", "float32")], True, True)] * 2
    return arrays


_limit_kernels: dict = {}


def limit_kernel(layout: tuple):
    """A Numba loop reading (``x = x + a[i]``) and writing (``a[i] = ...``) the arrays of
    ``layout`` (``(read, written)`` per array) once per element: no more, no less."""
    kernel = _limit_kernels.get(layout)
    if kernel is None:
        names = [f"a{k}" for k in range(len(layout))]
        namespace = {"np": np}
        source = _limit_source(names, layout)
        exec(compile(source, "<limit kernel>", "exec"), namespace)
        kernel = _limit_kernels[layout] = numba.njit(nogil=True, error_model="numpy")(
            namespace["limit"]
        )
    return kernel


def _limit_source(names, layout) -> str:
    # Every array is passed as unsigned integers of its width (the bits, as the steps see
    # them); what is read feeds what is written, so nothing is optimised away.
    lines = [f"def limit({', '.join(names)}):", "    for i in range(a0.size):", "        x = 0"]
    for name, (read, _) in zip(names, layout, strict=True):
        if read:
            lines.append(f"        x = x ^ np.uint32({name}[i])")
    for name, (_, written) in zip(names, layout, strict=True):
        if written:
            lines.append(f"        {name}[i] = x")
    return "\n".join([*lines, ""])


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def limit_step(arrays: list, n: int):
    """The memory-limit step of ``arrays`` (see :func:`stored_arrays`) on ``n`` elements."""
    data = [np.zeros(n, _UNSIGNED[dtype.itemsize]) for dtype, _, _ in arrays]
    layout = tuple((read, written) for _, read, written in arrays)
    kernel = limit_kernel(layout)
    pool = threads.pool()
    from mxopt.kernels import cpu

    if n < cpu.parallel_min_size() or not pool.parallel:
        return lambda: kernel(*data)
    pieces = cpu._chunks(n, pool)  # cut as mxopt cuts its own steps
    return lambda: pool.run(lambda k: kernel(*(a[slice(*pieces[k])] for a in data)), len(pieces))


def gpu_copy_step(cupy, arrays: list, n: int):
    """The GPU's limit for ``arrays`` on ``n`` elements: one device copy moving the same
    bytes (half of them read, half written), the device's copy bandwidth."""
    moved = sum(dtype.itemsize * (read + written) for dtype, read, written in arrays) * n
    source, target = cupy.zeros(moved // 2, np.uint8), cupy.empty(moved // 2, np.uint8)

    def copy():
        cupy.copyto(target, source)
        cupy.cuda.Device().synchronize()

    return copy


def state_bytes(updater) -> float:
    """Optimizer state bytes per parameter (master copy included)."""
    state = updater.states[0]
    size = max(1, int(np.prod(state.shape)))
    return sum(a.nbytes for a in state.flat.values()) / size


def run(sizes, repeats: int, cupy=None) -> dict:
    """Every case at every size, on the CPU or (``cupy`` given) on the GPU."""
    load_before = _load()
    rows = []
    for label in sizes:
        n = SIZES[label]
        for case, (dtype, options) in CASES.items():
            step, updater = adam_step(dtype, options, n, cupy or np)
            arrays = stored_arrays(dtype, options, n)
            limit = gpu_copy_step(cupy, arrays, n) if cupy else limit_step(arrays, n)
            times = _repeat_times({"step": step, "limit": limit}, repeats, 1)
            median = statistics.median(times["step"])
            limit_median = statistics.median(times["limit"])
            spread = (max(times["step"]) - min(times["step"])) / median
            rows.append({
                "size": label, "case": case, "weight": dtype.name, "options": options,
                "ms": median * 1e3, "limit_ms": limit_median * 1e3,
                "percent_of_limit": 100 * limit_median / median, "spread": spread,
                "bytes_per_element": sum(d.itemsize * (r + w) for d, r, w in arrays),
                "state_bytes_per_param": state_bytes(updater),
                "repeats_ms": [t * 1e3 for t in times["step"]],
                "limit_repeats_ms": [t * 1e3 for t in times["limit"]],
            })  # fmt: skip
            del step, updater, limit
    load_after = _load()
    # other processes on the cores this run needs: before it, the load is theirs; after it,
    # the last minute's load includes this run's own threads
    used, cores = threads.pool().threads, os.cpu_count()
    busy = cupy is None and (
        (load_before is not None and load_before > cores - used)
        or (load_after is not None and load_after > cores)
    )
    return {
        "machine": machine_info(),
        "device": "gpu" if cupy else "cpu",
        "load": [load_before, load_after],
        "busy": busy,
        "rows": rows,
    }


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"  # GPU steps take under 1 ms


def table(result: dict) -> str:
    lines = ["| size | case | ms | spread | limit ms | % limit | bytes/elem | state B/param |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in result["rows"]:
        flag = " (noisy)" if row["spread"] > NOISY_SPREAD else ""
        lines.append(
            f"| {row['size']} | {row['case']} | {_ms(row['ms'])} | {100 * row['spread']:.0f}%"
            f"{flag} | {_ms(row['limit_ms'])} | {row['percent_of_limit']:.0f}% | "
            f"{row['bytes_per_element']} | {row['state_bytes_per_param']:.2f} |"
        )
    if result["busy"]:
        lines.append(f"\nNOT TRUSTWORTHY: the machine's load was {result['load']} (before, after).")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["16M", "64M"], choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--gpu", action="store_true", help="on the GPU (CuPy)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    info = machine_info()
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items() if v is not None))
    cupy = None
    if args.gpu:
        import cupy
    result = run(args.sizes, args.repeats, cupy)
    print(table(result))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_low_precision_gpu.json" if args.gpu else "bench_low_precision.json"
    (out / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

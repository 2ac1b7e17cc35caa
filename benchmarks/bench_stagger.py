"""Packed ADAM and SGD-momentum steps with state arrays staggered within a page, or not.

mxopt starts each large NumPy state array at another offset within a 4096-byte page than
the weight (``mxopt.kernels.backends.full``, against 4K aliasing). This times the packed step,
unchecked, both ways in one process (alternating, medians) and writes
``benchmarks/results/bench_stagger.json``::

    python benchmarks/bench_stagger.py            # 0.25M, 1M, 16M and 64M elements
"""

from __future__ import annotations

import json
import pathlib
import statistics
import time

import mxopt
from mxopt.cli.bench import _mxopt_optimizer, _state, machine_info
from mxopt.kernels import backends as _backend

SIZES = {"0.25M": 1 << 18, "1M": 1 << 20, "16M": 16 << 20, "64M": 64 << 20}
STAGGERED_MIN_BYTES = _backend.STAGGER_MIN_BYTES


def packed_step(optimizer: str, elements: int, staggered: bool):
    # the threshold is read when state is created: no staggering above any real size
    _backend.STAGGER_MIN_BYTES = STAGGERED_MIN_BYTES if staggered else 1 << 62
    try:
        updater = mxopt.get_updater(_mxopt_optimizer(optimizer, _state()), nonfinite="apply")
        buffer = mxopt.ParameterBuffer({0: (elements,)})
        buffer.weight[...] = 1.0
        buffer.grad[...] = 0.5
        updater.update_buffer(buffer)  # creates the state
    finally:
        _backend.STAGGER_MIN_BYTES = STAGGERED_MIN_BYTES
    return lambda: updater.update_buffer(buffer)


def main() -> None:
    print("machine:", ", ".join(f"{k}={v}" for k, v in machine_info().items()))
    rows = []
    print("| size | optimizer | plain ms | staggered ms | plain / staggered |")
    print("|---|---|---:|---:|---:|")
    for label, elements in SIZES.items():
        repeats = 15 if elements > (4 << 20) else 300
        for optimizer in ("adam", "sgd-momentum"):
            steps = {s: packed_step(optimizer, elements, s) for s in (False, True)}
            times = {s: [] for s in steps}
            for _ in range(repeats):
                for s, step in steps.items():
                    started = time.perf_counter()
                    step()
                    times[s].append(time.perf_counter() - started)
            plain, staggered = (statistics.median(times[s]) * 1e3 for s in (False, True))
            rows.append(
                {
                    "size": label,
                    "optimizer": optimizer,
                    "plain_ms": plain,
                    "staggered_ms": staggered,
                }
            )
            print(f"| {label} | {optimizer} | {plain:.3f} | {staggered:.3f} | "
                  f"{plain / staggered:.2f} |")  # fmt: skip
            del steps
    out = pathlib.Path(__file__).parent / "results" / "bench_stagger.json"
    out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Time one optimizer step over a Thinc-like set of parameters: Thinc's Adam against
mxopt's adapter (``mxopt.thinc.Adam``, same arguments, same results).

    python benchmarks/bench_thinc.py [--arrays 200] [--repeats 15] [--threads 1 0] [--json PATH]

A step is what ``model.finish_update(optimizer)`` does: one
``optimizer(key, weights, gradient)`` call per parameter, each updating the
weights in place and zeroing the gradient. Two parameter sets, each of
``--arrays`` float32 arrays (fixed seed):

* ``mixed``: sizes log-uniform between 64 and 1M elements (biases, layer
  weights and embedding tables; about 29M elements in all);
* ``small``: sizes log-uniform between 16 and 4096 (where per-call overhead
  dominates).

Settings: Thinc's defaults (``grad_clip=1.0``, ``use_averages=True``) and
``use_averages=False``. Gradients are refilled (not timed) before every step.
Each figure is the median of ``--repeats`` steps after a warm-up, Thinc and
mxopt alternating. The script also checks that both give the same weights
after the timed steps (``max |diff|``).

``--threads``: the Numba thread counts to run mxopt's kernels with (0: all);
Thinc's CPU Adam is single-threaded, so ``1`` is the like-for-like figure. On a
small shared machine parallel kernels can stall when another process takes a
core; the ``1`` rows are then the reliable ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def parameter_set(kind: str, count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    low, high = (64, 1 << 20) if kind == "mixed" else (16, 4096)
    sizes = np.exp(rng.uniform(np.log(low), np.log(high), count)).astype(int)
    weights = [rng.normal(scale=0.1, size=int(n)).astype(np.float32) for n in sizes]
    grads = [rng.normal(scale=0.01, size=int(n)).astype(np.float32) for n in sizes]
    return weights, grads


def one_step(optimizer, keys, weights, grads, sources):
    for g, s in zip(grads, sources, strict=True):
        np.copyto(g, s)  # not timed: finish_update hands over fresh gradients
    start = time.perf_counter()
    for key, w, g in zip(keys, weights, grads, strict=True):
        optimizer(key, w, g)
    optimizer.step_schedules()
    return time.perf_counter() - start


def bench(kind: str, count: int, settings: dict, repeats: int, threads: int) -> dict:
    import thinc.api

    import mxopt.thinc

    start_weights, sources = parameter_set(kind, count)
    keys = [(i, "W") for i in range(count)]
    runs = {}
    for name, factory in (("thinc", thinc.api.Adam), ("mxopt", mxopt.thinc.Adam)):
        runs[name] = {
            "optimizer": factory(**settings),
            "weights": [w.copy() for w in start_weights],
            "grads": [np.empty_like(s) for s in sources],
            "times": [],
        }
    for _ in range(2):  # warm-up (kernel compilation, state allocation)
        for run in runs.values():
            one_step(run["optimizer"], keys, run["weights"], run["grads"], sources)
    for _ in range(repeats):
        for run in runs.values():
            run["times"].append(
                one_step(run["optimizer"], keys, run["weights"], run["grads"], sources)
            )
    thinc_ms = statistics.median(runs["thinc"]["times"]) * 1e3
    mxopt_ms = statistics.median(runs["mxopt"]["times"]) * 1e3
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(runs["thinc"]["weights"], runs["mxopt"]["weights"], strict=True)
    )
    return {
        "parameters": kind,
        "arrays": count,
        "elements": int(sum(w.size for w in start_weights)),
        "settings": settings,
        "numba_threads": threads,
        "thinc_ms": thinc_ms,
        "mxopt_ms": mxopt_ms,
        "speedup": thinc_ms / mxopt_ms,
        "max_abs_weight_diff": diff,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arrays", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    parser.add_argument(
        "--json",
        default=os.path.join(os.path.dirname(__file__), "results", "bench_thinc.json"),
    )
    args = parser.parse_args(argv)
    try:
        import thinc  # noqa: F401
    except ImportError:
        print("bench_thinc needs thinc: pip install thinc", file=sys.stderr)
        return 1
    from mxopt.cli.bench import machine_info

    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    rows = []
    header = (
        f"{'parameters':<10} {'elements':>10} {'settings':<34} {'threads':>7} "
        f"{'thinc ms':>9} {'mxopt ms':>9} {'speed-up':>8} {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    import numba

    available = numba.config.NUMBA_NUM_THREADS
    for threads in args.threads:
        threads = available if threads <= 0 else min(threads, available)
        numba.set_num_threads(threads)
        for kind in ("mixed", "small"):
            for settings in ({}, {"use_averages": False}):
                row = bench(kind, args.arrays, settings, args.repeats, threads)
                rows.append(row)
                label = (
                    "Thinc defaults (clip 1, averages)" if not settings else "use_averages=False"
                )
                print(
                    f"{kind:<10} {row['elements']:>10} {label:<34} {threads:>7} "
                    f"{row['thinc_ms']:>9.2f} {row['mxopt_ms']:>9.2f} {row['speedup']:>7.1f}x "
                    f"{row['max_abs_weight_diff']:>10.1e}"
                )
    numba.set_num_threads(available)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": info, "repeats": args.repeats, "rows": rows}, f, indent=2)
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each optimizer costs per step: time relative to SGD with momentum, and state bytes
per parameter, on one float32 weight (the table of "Choosing an optimizer").

    NUMBA_NUM_THREADS=1 MXOPT_NUM_THREADS=1 python benchmarks/bench_step_cost.py \
        [--shape 1024 1024] [--repeats 9] [--json docs/_data/step_cost.json]

Every optimizer of ``mxopt.OPTIMIZERS`` with its defaults (Lookahead around AdamW; LBFGS is
left out: it is meant for ``mxopt.minimize``, and its state is ``2 * history_size`` copies
of the weight) updates its own copy of one matrix; each figure is the median of
``--repeats`` rounds after a warm-up (compilation, first touches), the optimizers taking
turns within each round so that a busy moment of a shared machine hits them alike. The
ratio column divides by SGD with momentum's median of the same run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import numpy as np

import mxopt

#: Left out of the table, with the reason the page gives.
SKIPPED = {"LBFGS": "a full-batch method for mxopt.minimize"}
BASELINE = "SGD(momentum=0.9)"


def _optimizers(state) -> dict:
    made = {BASELINE: mxopt.SGD(momentum=0.9, state=state)}
    for name, cls in sorted(mxopt.OPTIMIZERS.items(), key=lambda item: item[0].lower()):
        if name in SKIPPED:
            continue
        if name == "Lookahead":
            made["Lookahead(AdamW())"] = cls(mxopt.AdamW(state=state))
        elif name != "SGD":
            made[f"{name}()"] = cls(state=state)
    return made


def measure(shape: tuple, repeats: int) -> dict:
    state = mxopt.OptimizationState(1, 1, 1, 1)
    rng = np.random.default_rng(0)
    start = rng.standard_normal(shape, dtype=np.float32)
    grad = 1e-3 * rng.standard_normal(shape, dtype=np.float32)
    runs = {}
    for label, optimizer in _optimizers(state).items():
        updater, weight = mxopt.get_updater(optimizer), start.copy()
        runs[label] = (updater, weight)
    times = {label: [] for label in runs}
    for updater, weight in runs.values():  # warm-up: a first update may take another kernel
        for _ in range(2):
            updater(0, grad, weight)
    for _ in range(repeats):
        for label, (updater, weight) in runs.items():
            started = time.perf_counter()
            updater(0, grad, weight)
            times[label].append(time.perf_counter() - started)
    medians = {label: statistics.median(t) for label, t in times.items()}
    baseline = medians[BASELINE]
    rows = {}
    for label, (updater, weight) in runs.items():
        arrays = updater.states[0].arrays
        state_bytes = sum(a.nbytes for a in arrays.values())
        rows[label] = {
            "ms": medians[label] * 1e3,
            "ratio": medians[label] / baseline,
            "bytes_per_parameter": state_bytes / weight.size,
        }
    return {"shape": list(shape), "repeats": repeats, "baseline": BASELINE, "rows": rows,
            "skipped": SKIPPED}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[1024, 1024])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    result = measure(tuple(args.shape), args.repeats)
    print(f"one float32 weight of shape {tuple(args.shape)}, median of {args.repeats}")
    print(f"| {'optimizer':24} | {'ms':>8} | {'x ' + BASELINE:>22} | {'state B/param':>13} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 24}|{'-' * 15}|")
    for label, row in result["rows"].items():
        print(f"| {label:24} | {row['ms']:8.2f} | {row['ratio']:22.2f} | "
              f"{row['bytes_per_parameter']:13.3g} |")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

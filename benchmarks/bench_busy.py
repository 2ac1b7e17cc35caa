"""Steps on a busy machine: each thread setting against one thread, with every core busy.

    python benchmarks/bench_busy.py [--trees OLD NEW] [--rounds 5] [--out FILE.json]

A laptop, a shared server or a spaCy run keeps cores busy. This starts one busy process
per core (a pure-Python loop), then times, in a subprocess per setting and alternating
settings in every round, an ADAM step over:

* one weight of 100,000 elements (``updater(index, grad, weight)``): the per-call stall;
* one weight of 2^20 elements;
* 50 weights of 2^20 elements, one step over all of them (``update_many``).

for each source tree (``PYTHONPATH``; default: this checkout only) with the default
threads and with one thread (``MXOPT_NUM_THREADS=1`` and ``NUMBA_NUM_THREADS=1``). The
table gives the median over rounds of the per-step time of each, the default/one-thread
ratio (1.0 = threads cost nothing on a busy machine; above 1, they stall) and, for the
default setting, the spread (max/min over rounds). It also times the same with the
machine idle, as the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
import numpy as np
import mxopt

repeats = int(sys.argv[1])
cases = {"100k": [(100_000,)], "1M": [(1 << 20,)], "50x1M": [(1 << 20,)] * 50}
rng = np.random.default_rng(0)
out = {}
for name, shapes in cases.items():
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.ADAM(lr=1e-3, state=state))
    weights = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * 1e-3 for s in shapes]
    indices = list(range(len(shapes)))
    if len(shapes) == 1:
        step = lambda: updater(0, grads[0], weights[0])
    else:
        step = lambda: updater.update_many(indices, grads, weights)
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    times.sort()
    out[name] = times[len(times) // 2]
print(json.dumps(out))
"""

SETTINGS = {
    "default threads": {},
    "one thread": {"MXOPT_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
}


def _busy(stop):
    x = 0
    while not stop.is_set():
        x += 1


def _run(tree, setting, repeats):
    env = {k: v for k, v in os.environ.items() if k not in ("MXOPT_NUM_THREADS",
                                                           "NUMBA_NUM_THREADS")}  # fmt: skip
    env.update(SETTINGS[setting])
    if tree is not None:
        env["PYTHONPATH"] = tree
    result = subprocess.run([sys.executable, "-c", CHILD, str(repeats)], env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(trees, rounds, repeats, busy):
    stop = multiprocessing.Event()
    workers = []
    if busy:
        for _ in range(os.cpu_count() or 1):
            worker = multiprocessing.Process(target=_busy, args=(stop,), daemon=True)
            worker.start()
            workers.append(worker)
        time.sleep(0.5)
    samples = {}
    try:
        for _ in range(rounds):
            for tree in trees:
                for setting in SETTINGS:
                    for case, value in _run(tree, setting, repeats).items():
                        samples.setdefault((tree, setting, case), []).append(value)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    return samples


def table(samples, trees, title):
    lines = [f"### {title}", "",
             "| tree | case | default threads (ms) | one thread (ms) | default / one | spread |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    rows = []
    for tree in trees:
        for case in ("100k", "1M", "50x1M"):
            default = samples[(tree, "default threads", case)]
            one = samples[(tree, "one thread", case)]
            d, o = statistics.median(default), statistics.median(one)
            spread = max(default) / min(default)
            label = tree or "this checkout"
            lines.append(f"| {label} | {case} | {d * 1e3:.2f} | {o * 1e3:.2f} | {d / o:.2f} | "
                         f"{spread:.2f} |")  # fmt: skip
            rows.append({"tree": label, "case": case, "default_s": default, "one_thread_s": one,
                         "ratio": d / o})  # fmt: skip
    return "\n".join(lines), rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="*", default=[None], help="source trees (PYTHONPATH)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=21, help="timed steps per subprocess")
    parser.add_argument("--out", default=None, help="write every sample as JSON here")
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds of {args.repeats} steps; ADAM float32")
    report = {}
    for busy in (False, True):
        title = f"{'busy: one busy process per core' if busy else 'idle'}"
        samples = measure(args.trees, args.rounds, args.repeats, busy)
        text, rows = table(samples, args.trees, title)
        print(text + "\n", flush=True)
        report[title] = rows
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

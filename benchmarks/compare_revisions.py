"""Time mxopt's own paths in two source trees, alternating, and print new/old ratios.

    python benchmarks/compare_revisions.py OLD_TREE NEW_TREE [--rounds 5] [--out FILE]

Each round runs, for every regime and optimizer, one subprocess per tree (``PYTHONPATH``
set to the tree), old then new, so the machine's drift hits both alike; each subprocess
warms up and times every path with the public API only (nothing tree-specific), and
prints the medians as JSON. The table gives, per regime, optimizer and path, the median
over the rounds of each tree and their ratio (new / old; below 1 is faster). Threads
follow the environment (set ``NUMBA_NUM_THREADS`` and say which you quote).

Paths: ``updater(index, grad, weight)`` per tensor; ``update_many`` on the list of
tensors; ``update_buffer`` on a packed buffer, checked and unchecked
(``nonfinite="apply"``); and for the per-call regime, one 16-element call with 1000
weights per step and with one weight per step (every call a new step).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import numpy as np
import mxopt

regime, name, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])

def bert():
    h, i, layers = 768, 3072, 12
    shapes = [(30522, h), (512, h), (2, h), (h,), (h,)]
    for _ in range(layers):
        for _ in range(4):
            shapes += [(h, h), (h,)]
        shapes += [(h,), (h,), (h, i), (i,), (i, h), (h,), (h,), (h,)]
    return shapes + [(h, h), (h,)]

SHAPES = {"1M": [(1 << 20,)], "16M": [(16 << 20,)], "64M": [(64 << 20,)],
          "bert-base": bert(), "1000x1k": [(1024,)] * 1000, "per-call-16": [(16,)] * 1000}[regime]

def optimizer(state):
    if name == "sgd-momentum":
        return mxopt.SGD(lr=1e-3, momentum=0.9, weight_decay=1e-2, state=state)
    if name == "adam":
        return mxopt.ADAM(lr=1e-3, weight_decay=1e-2, epsilon_hat=False, state=state)
    return mxopt.AdamW(lr=1e-3, state=state)

def fresh(nonfinite="raise"):
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch(); state.begin_batch()
    return state, mxopt.get_updater(optimizer(state), nonfinite=nonfinite)

rng = np.random.default_rng(0)

def arrays():
    return ([rng.standard_normal(s, dtype=np.float32) for s in SHAPES],
            [rng.standard_normal(s, dtype=np.float32) * 1e-3 for s in SHAPES])

def timed(step, inner=1):
    step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            step()
        times.append((time.perf_counter() - t) / inner)
    return statistics.median(times)

results = {}
if regime == "per-call-16":
    weights, grads = arrays()
    for per_step in (1000, 1):
        state, updater = fresh()
        for k in range(per_step):
            updater(k, grads[k], weights[k])
        calls = 2000
        def step(per_step=per_step, state=state, updater=updater):
            for c in range(calls // per_step):
                state.begin_batch()
                for k in range(per_step):
                    updater(k, grads[k], weights[k])
        results[f"updater(), {per_step} weight(s) per step, us/call"] = timed(step) / calls * 1e6
else:
    weights, grads = arrays()
    state, updater = fresh()
    pairs = list(enumerate(zip(grads, weights)))
    def per_tensor():
        for k, (g, w) in pairs:
            updater(k, g, w)
    inner = 20 if regime in ("1M", "1000x1k") else 1
    results["per-tensor updater(), ms"] = timed(per_tensor, inner) * 1e3
    state, updater = fresh()
    indices = list(range(len(SHAPES)))
    many = lambda: updater.update_many(indices, grads, weights)
    results["update_many, ms"] = timed(many, inner) * 1e3
    del weights, grads, pairs
    for nonfinite in ("raise", "apply"):
        buffer = mxopt.ParameterBuffer({k: s for k, s in enumerate(SHAPES)})
        buffer.weight[...] = rng.standard_normal(buffer.weight.size, dtype=np.float32)
        buffer.grad[...] = rng.standard_normal(buffer.grad.size, dtype=np.float32) * 1e-3
        state, updater = fresh(nonfinite)
        label = "update_buffer, ms" if nonfinite == "raise" else "update_buffer unchecked, ms"
        results[label] = timed(lambda: updater.update_buffer(buffer), inner) * 1e3
        del buffer
print(json.dumps(results))
"""

REGIMES = ["1M", "16M", "64M", "bert-base", "1000x1k", "per-call-16"]
OPTIMIZERS = ["sgd-momentum", "adam", "adamw"]


def run(tree: str, regime: str, optimizer: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, "-c", CHILD, regime, optimizer, str(repeats)],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per subprocess")
    parser.add_argument("--regimes", nargs="+", default=REGIMES, choices=REGIMES)
    parser.add_argument("--optimizers", nargs="+", default=OPTIMIZERS, choices=OPTIMIZERS)
    parser.add_argument("--out", help="write every figure as JSON here")
    args = parser.parse_args(argv)
    figures = {}
    for regime in args.regimes:
        for optimizer in args.optimizers:
            rounds = {"old": [], "new": []}
            for _ in range(args.rounds):
                for which in ("old", "new"):
                    tree = args.old if which == "old" else args.new
                    rounds[which].append(run(tree, regime, optimizer, args.repeats))
            figures[(regime, optimizer)] = rounds
            for path in rounds["old"][0]:
                old = statistics.median(r[path] for r in rounds["old"])
                new = statistics.median(r[path] for r in rounds["new"])
                print(f"| {regime} | {optimizer} | {path} | {old:.3f} | {new:.3f} | "
                      f"{new / old:.2f} |", flush=True)  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({f"{r}/{o}": v for (r, o), v in figures.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

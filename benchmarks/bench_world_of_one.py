"""The cost of ``ShardedUpdater`` on one process: its ``step()`` against the plain
``get_updater(optimizer).update_buffer(buffer)`` it promises to behave like.

    python benchmarks/bench_world_of_one.py [--optimizers adam lamb] [--repeats 7] [--json PATH]

The model is BERT-base's 199 tensors (110M float32 parameters) in one ParameterBuffer,
twice (one per updater, the same values); each figure is the median of ``--repeats`` steps
after a warm-up, the two updaters alternating. A world of one (no ``mpiexec``, or
``LocalCollectives``) should cost what ``update_buffer`` costs: the ratio column. Run with
``NUMBA_NUM_THREADS=1 MXOPT_NUM_THREADS=1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import mxopt
from mxopt.cli.bench import bert_base_shapes
from mxopt.distributed import LocalCollectives, ShardedUpdater

OPTIMIZERS = {"adam": mxopt.ADAM, "lamb": mxopt.LAMB, "sgd": mxopt.SGD}


def _buffer(shapes: dict, seed: int) -> mxopt.ParameterBuffer:
    buffer = mxopt.ParameterBuffer(shapes)
    rng = np.random.default_rng(seed)
    buffer.weight[:] = rng.standard_normal(buffer.weight.size, dtype=np.float32)
    buffer.grad[:] = 1e-3 * rng.standard_normal(buffer.grad.size, dtype=np.float32)
    return buffer


def measure(name: str, repeats: int) -> dict:
    shapes = dict(enumerate(bert_base_shapes()))
    plain_buffer, sharded_buffer = _buffer(shapes, 0), _buffer(shapes, 0)
    make = OPTIMIZERS[name]
    plain = mxopt.get_updater(make(state=mxopt.OptimizationState(1, 1, 1, 1)))
    sharded = ShardedUpdater(make(state=mxopt.OptimizationState(1, 1, 1, 1)), sharded_buffer,
                             LocalCollectives())  # fmt: skip
    steps = {
        "update_buffer": lambda: plain.update_buffer(plain_buffer),
        "world of one": sharded.step,
    }
    times = {label: [] for label in steps}
    for step in steps.values():  # warm-up: compilation and first touches
        step()
    for _ in range(repeats):
        for label, step in steps.items():
            started = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - started)
    same = np.array_equal(plain_buffer.weight, sharded_buffer.weight)
    medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
    return {"optimizer": name, "ms": medians, "repeats_ms": times, "same_weights": same,
            "ratio": medians["world of one"] / medians["update_buffer"]}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=["adam"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    results = [measure(name, args.repeats) for name in args.optimizers]
    print("| optimizer | update_buffer ms | world of one ms | world of one / update_buffer "
          "| same weights |")  # fmt: skip
    print("|---|---:|---:|---:|---|")
    for r in results:
        ms = r["ms"]
        print(f"| {r['optimizer']} | {ms['update_buffer']:.1f} | {ms['world of one']:.1f} | "
              f"{r['ratio']:.3f} | {r['same_weights']} |")  # fmt: skip
    if args.json:
        for r in results:
            r["repeats_ms"] = {k: [t * 1e3 for t in v] for k, v in r["repeats_ms"].items()}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Lazy row updates of an embedding against a dense update of the whole table.

A 1M x 128 float32 embedding (512 MB, and 1 GB of Adam moments) whose mini-batch looked
up 4,096 rows. Timed in one process, alternating, medians of every repeat:

* ``SparseAdam``, a ``RowSparse`` gradient of 4,096 distinct rows (the lazy update);
* the same with 4,096 lookups drawn with replacement (duplicates summed first);
* ``ADAM`` over the whole table with the dense gradient (what an update without lazy
  rows costs: every element read and written);
* ``torch.optim.SparseAdam`` on the same rows, when torch is importable (threads set to
  mxopt's), its sparse gradient built outside the timing.

The ratios are against the lazy update, measured in the same run. Writes
``benchmarks/results/bench_sparse_rows.json``::

    NUMBA_NUM_THREADS=1 MXOPT_NUM_THREADS=1 python benchmarks/bench_sparse_rows.py
"""

from __future__ import annotations

import json
import pathlib
import statistics
import time

import numpy as np

import mxopt
from mxopt.cli.bench import machine_info
from mxopt.kernels import threads

ROWS, DIM, TOUCHED = 1 << 20, 128, 4096
REPEATS = 7


def _state():
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    return state


def lazy_step(rng, *, duplicates: bool):
    state = _state()
    updater = mxopt.get_updater(mxopt.SparseAdam(lr=1e-3, state=state), nonfinite="apply")
    table = np.zeros((ROWS, DIM), np.float32)
    if duplicates:
        rows = rng.integers(0, ROWS, size=TOUCHED)
    else:
        rows = rng.choice(ROWS, size=TOUCHED, replace=False)
    values = rng.standard_normal((TOUCHED, DIM), dtype=np.float32)
    grad = mxopt.RowSparse(rows, values)

    def step():
        state.begin_batch()
        updater("embedding", grad, table)

    step()  # compiles, creates the state
    return step


def dense_step(rng):
    state = _state()
    updater = mxopt.get_updater(mxopt.ADAM(lr=1e-3, state=state), nonfinite="apply")
    table = np.zeros((ROWS, DIM), np.float32)
    grad = np.zeros((ROWS, DIM), np.float32)
    rows = rng.choice(ROWS, size=TOUCHED, replace=False)
    grad[rows] = rng.standard_normal((TOUCHED, DIM), dtype=np.float32)

    def step():
        state.begin_batch()
        updater("embedding", grad, table)

    step()
    return step


def torch_step(rng):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads.pool().threads)
    param = torch.nn.Parameter(torch.zeros(ROWS, DIM))
    optimizer = torch.optim.SparseAdam([param], lr=1e-3)
    rows = torch.from_numpy(rng.choice(ROWS, size=TOUCHED, replace=False))
    values = torch.from_numpy(rng.standard_normal((TOUCHED, DIM), dtype=np.float32))
    grad = torch.sparse_coo_tensor(rows[None], values, (ROWS, DIM), check_invariants=True)

    def step():
        param.grad = grad
        optimizer.step()

    step()
    return step


def main() -> None:
    print("machine:", ", ".join(f"{k}={v}" for k, v in machine_info().items()))
    rng = np.random.default_rng(0)
    steps = {
        "SparseAdam, RowSparse (4,096 distinct rows)": lazy_step(rng, duplicates=False),
        "SparseAdam, RowSparse (4,096 lookups, duplicates)": lazy_step(rng, duplicates=True),
        "ADAM, dense gradient (every row)": dense_step(rng),
    }
    peer = torch_step(rng)
    if peer is not None:
        steps["torch.optim.SparseAdam (4,096 distinct rows)"] = peer
    times = {label: [] for label in steps}
    for _ in range(REPEATS):
        for label, step in steps.items():
            started = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - started)
    baseline = statistics.median(next(iter(times.values())))
    rows = []
    print(f"\n{ROWS:,} x {DIM} float32 embedding, {TOUCHED:,} touched rows, "
          f"{threads.pool().threads} thread(s), median of {REPEATS}")  # fmt: skip
    print("| update | ms | / lazy |")
    print("|---|---:|---:|")
    for label, measured in times.items():
        median = statistics.median(measured)
        rows.append({"update": label, "median_ms": median * 1e3,
                     "times_ms": [t * 1e3 for t in measured],
                     "ratio_to_lazy": median / baseline})  # fmt: skip
        print(f"| {label} | {median * 1e3:.3f} | {median / baseline:.1f} |")
    out = pathlib.Path(__file__).parent / "results" / "bench_sparse_rows.json"
    setup = {"rows": ROWS, "dim": DIM, "touched": TOUCHED, "dtype": "float32"}
    out.write_text(json.dumps({"machine": machine_info(), "setup": setup, "rows": rows},
                              indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

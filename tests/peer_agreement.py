"""What the agreement runs with torch.optim and optax share: the random problem, the mxopt
side of each step and the report.

A run is 50 float32 steps on the same random weights and gradients (one all-zero gradient
by default); mxopt uses ``batch_size=1`` (the peers do not divide by a batch size) and
counts ``curr_iter`` from 1, like the peers' step counts.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

import mxopt

__all__ = ["call_text", "mxopt_steps", "random_problem", "report"]


def random_problem(case, steps: int, size: int, seed: int):
    """``(start, grads)``: float32 starting weights and one gradient per step (all zero at
    ``case.zero_steps``)."""
    rng = np.random.default_rng(seed)
    start = rng.normal(size=size).astype(np.float32)
    grads = []
    for step in range(1, steps + 1):
        grad = rng.normal(size=size).astype(np.float32)
        if step in case.zero_steps:
            grad[...] = 0
        grads.append(grad)
    return start, grads


def mxopt_steps(case, start, grads):
    """Yields ``(step, grad, updater, weight)`` after each mxopt update of a copy of
    ``start``."""
    weight = start.copy()
    state = mxopt.OptimizationState(batch_size=1)
    optimizer = mxopt.OPTIMIZERS[case.mxopt_name](**case.mxopt_options, state=state)
    updater = mxopt.get_updater(optimizer)
    state.begin_epoch()
    for step, grad in enumerate(grads, 1):
        state.begin_batch()
        updater(0, grad, weight)
        yield step, grad, updater, weight


def call_text(name: str, options: dict) -> str:
    """`name(k=v, ...)`, as the tables show a call."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


def report(description: str, cases, max_deviation, peer_call, argv=None) -> None:
    """The command line of an agreement script: a table of every case's deviation, or
    ``--json PATH`` to write ``{label: deviation}`` (what the documentation shows)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=pathlib.Path,
        help="write {case label: max abs deviation} for every case to PATH instead",
    )
    args = parser.parse_args(argv)
    if args.json is not None:
        deviations = {case.label: max_deviation(case) for case in cases}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(deviations, indent=2) + "\n")
        return
    print(f"| {'case':20} | {'mxopt settings':60} | {'peer':50} | {'max abs deviation':>17} |")
    print(f"|{'-' * 22}|{'-' * 62}|{'-' * 52}|{'-' * 19}|")
    for case in cases:
        mine = call_text(case.mxopt_name, case.mxopt_options)
        print(f"| {case.label:20} | {mine:60} | {peer_call(case):50} | "
              f"{max_deviation(case):17.2e} |")  # fmt: skip

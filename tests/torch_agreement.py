"""mxopt settings that reproduce torch.optim, and how far the two drift in 50 float32 steps.

Each :class:`~tests.reference.table.TorchCase` pairs an mxopt optimizer configuration
with the torch.optim one it reproduces; the oracle files declare them. Both run the same
50 steps on the same random float32 weights and gradients; mxopt uses ``batch_size=1``
(torch does not divide by the batch size) and counts ``curr_iter`` from 1 like torch's
step count. ``python tests/torch_agreement.py`` prints the deviation table;
``python tests/torch_agreement.py --json docs/_data/torch_agreement.json`` writes
``{label: max deviation}``, which the documentation's torch table shows;
``tests/test_torch_agreement.py`` asserts it.

torch is an optional comparison, never a dependency: ``pip install torch``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

import mxopt
from tests.reference import TORCH_CASES
from tests.reference.table import TorchCase

#: Every pairing, declared next to each optimizer's oracle (``TORCH`` in
#: ``tests/reference/<name>.py``).
__all__ = ["TORCH_CASES", "TorchCase", "max_deviation", "paired_steps"]


def paired_steps(case: TorchCase, steps: int = 50, size: int = 1000, seed: int = 0):
    """Run mxopt and torch side by side on the same gradients.

    Yields ``(step, updater, weight, torch_optimizer, param)`` after each of ``steps``
    updates: ``weight`` is mxopt's array, ``param`` torch's parameter.
    """
    import torch

    rng = np.random.default_rng(seed)
    start = rng.normal(size=size).astype(np.float32)
    weight = start.copy()
    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    torch_optimizer = getattr(torch.optim, case.torch_name)([param], **case.torch_options)
    state = mxopt.OptimizationState(batch_size=1)
    optimizer = mxopt.OPTIMIZERS[case.mxopt_name](**case.mxopt_options, state=state)
    updater = mxopt.get_updater(optimizer)
    state.begin_epoch()
    for step in range(1, steps + 1):
        grad = rng.normal(size=size).astype(np.float32)
        if step in case.zero_steps:
            grad[...] = 0
        state.begin_batch()
        updater(0, grad, weight)
        param.grad = torch.from_numpy(grad.copy())
        torch_optimizer.step()
        yield step, updater, weight, torch_optimizer, param


def max_deviation(case: TorchCase, steps: int = 50) -> float:
    """max over steps and elements of |w_mxopt - w_torch|."""
    return max(
        float(np.max(np.abs(weight - param.detach().numpy())))
        for _, _, weight, _, param in paired_steps(case, steps)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=pathlib.Path,
        help="write {case label: max abs deviation} for every case to PATH instead",
    )
    args = parser.parse_args(argv)
    if args.json is not None:
        deviations = {case.label: max_deviation(case) for case in TORCH_CASES}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(deviations, indent=2) + "\n")
        return
    print(f"| {'optimizer':16} | {'mxopt settings':70} | {'max abs deviation':>17} |")
    print(f"|{'-' * 18}|{'-' * 72}|{'-' * 19}|")
    for case in TORCH_CASES:
        settings = ", ".join(f"{k}={v!r}" for k, v in case.mxopt_options.items())
        call = f"{case.mxopt_name}({settings})"
        print(f"| {case.label:16} | {call:70} | {max_deviation(case):17.2e} |")


if __name__ == "__main__":
    main()

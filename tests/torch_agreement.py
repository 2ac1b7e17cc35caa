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

import numpy as np

from tests.peer_agreement import call_text, mxopt_steps, random_problem, report
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

    start, grads = random_problem(case, steps, size, seed)
    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    torch_optimizer = getattr(torch.optim, case.torch_name)([param], **case.torch_options)
    for step, grad, updater, weight in mxopt_steps(case, start, grads):
        param.grad = torch.from_numpy(grad.copy())
        if case.torch_name == "SparseAdam":  # sparse gradients only: every row, explicitly
            every_row = torch.arange(grad.shape[0])[None]
            param.grad = torch.sparse_coo_tensor(
                every_row, param.grad, param.grad.shape, check_invariants=True
            )
        # LBFGS needs a closure (its loss); param.grad is set, and with max_iter=1 the
        # loss changes nothing
        torch_optimizer.step((lambda: 0.0) if case.torch_name == "LBFGS" else None)
        yield step, updater, weight, torch_optimizer, param


def max_deviation(case: TorchCase, steps: int = 50) -> float:
    """max over steps and elements of |w_mxopt - w_torch|."""
    return max(
        float(np.max(np.abs(weight - param.detach().numpy())))
        for _, _, weight, _, param in paired_steps(case, steps)
    )


def main(argv: list[str] | None = None) -> None:
    report(
        __doc__.splitlines()[0],
        TORCH_CASES,
        max_deviation,
        lambda case: call_text(f"torch.optim.{case.torch_name}", case.torch_options),
        argv,
    )


if __name__ == "__main__":
    main()

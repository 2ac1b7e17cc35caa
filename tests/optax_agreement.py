"""mxopt settings that reproduce optax, and how far the two drift in 50 float32 steps.

Each :class:`~tests.reference.table.OptaxCase` pairs an mxopt optimizer configuration with
the optax transformation it reproduces; the oracle files declare them (``OPTAX``). Both run
the same 50 steps on the same random float32 weights and gradients (see
:mod:`tests.peer_agreement`); optax runs on JAX's CPU backend in float32.
``python tests/optax_agreement.py`` prints the deviation table;
``python tests/optax_agreement.py --json docs/_data/optax_agreement.json`` writes
``{label: max deviation}``, which the documentation's optax table shows;
``tests/test_optax_agreement.py`` asserts it.

optax is a test extra, never a dependency of mxopt.
"""

from __future__ import annotations

import functools

import numpy as np

from tests.peer_agreement import call_text, mxopt_steps, random_problem, report
from tests.reference import OPTAX_CASES
from tests.reference.table import OptaxCase

__all__ = ["OPTAX_CASES", "OptaxCase", "max_deviation", "optax_transformation", "paired_steps"]


def optax_transformation(case: OptaxCase):
    """The optax ``GradientTransformation`` of ``case``."""
    import optax

    make = functools.reduce(getattr, case.optax_name.split("."), optax)
    return make(**case.optax_options)


def paired_steps(case: OptaxCase, steps: int = 50, size: int = 1000, seed: int = 0):
    """Run mxopt and optax side by side on the same gradients.

    Yields ``(step, updater, weight, optax_state, params)`` after each of ``steps``
    updates: ``weight`` is mxopt's array, ``params`` optax's (a float32 JAX array).
    """
    import jax
    import jax.numpy as jnp
    import optax

    start, grads = random_problem(case, steps, size, seed)
    transformation = optax_transformation(case)
    params = jnp.asarray(start)
    optax_state = transformation.init(params)

    @jax.jit
    def optax_step(params, optax_state, grad):
        updates, optax_state = transformation.update(grad, optax_state, params)
        return optax.apply_updates(params, updates), optax_state

    for step, grad, updater, weight in mxopt_steps(case, start, grads):
        params, optax_state = optax_step(params, optax_state, jnp.asarray(grad))
        yield step, updater, weight, optax_state, params


def max_deviation(case: OptaxCase, steps: int = 50) -> float:
    """max over steps and elements of |w_mxopt - w_optax|."""
    return max(
        float(np.max(np.abs(weight - np.asarray(params))))
        for _, _, weight, _, params in paired_steps(case, steps)
    )


def main(argv: list[str] | None = None) -> None:
    report(
        __doc__.splitlines()[0],
        OPTAX_CASES,
        max_deviation,
        lambda case: call_text(f"optax.{case.optax_name}", case.optax_options),
        argv,
    )


if __name__ == "__main__":
    main()

"""Every optimizer converges: a convex quadratic and the 2-D Rosenbrock function.

:data:`SETTINGS` is the table of settings, declared next to each optimizer's oracle
(``CONVERGENCE`` in ``tests/reference/<name>.py``), at least one per optimizer of
``mxopt.OPTIMIZERS`` (Lookahead twice: around SGD with momentum and around RAdam).
Every run is float64, ``batch_size=1``, with exact analytic gradients and
``weight_decay=0`` where an optimizer decays by default, so that the minimum is the
function's own.

* Quadratic: :math:`f(w) = \\frac12 \\sum_i a_i w_i^2` on a 4 x 4 weight (so
  Adafactor keeps its factored second moment), :math:`a` spread geometrically
  over [0.1, 10], from a fixed random start. After :data:`QUADRATIC_STEPS`
  updates ``f`` must be below :data:`QUADRATIC_FRACTION` of its start, and it
  must never be NaN nor above its start.
* Rosenbrock: :math:`f(x, y) = (1-x)^2 + 100 (y-x^2)^2` from (-1.5, 2.0),
  where f = 12.5. ``f`` must drop below the row's ``target`` within the row's
  ``steps`` (the budget) and never be NaN over the whole budget.

The settings are what a user would try, not tuned to the problem (round
learning rates, the optimizer's other defaults); where a method cannot get
close to the minimum (sign-like and trust-ratio steps, AdaDelta) the target is
looser and the row's note says why. Everything is deterministic.

``PYTHONPATH=. python tests/test_convergence.py`` prints the table (settings, budget,
target, steps needed, quadratic ratio) that the docs build generates in
docs/optimizers.md (``<!-- mxopt:convergence-table -->``).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import mxopt
from tests.reference import CONVERGENCE
from tests.reference.table import Setting

#: The settings, one at least per optimizer of ``mxopt.OPTIMIZERS``, declared in the
#: oracle files (``CONVERGENCE``).
SETTINGS = CONVERGENCE

#: Quadratic: updates, and the largest allowed f(after) / f(start).
QUADRATIC_STEPS = 2000
QUADRATIC_FRACTION = 0.05

ROSENBROCK_START = (-1.5, 2.0)
QUADRATIC_A = np.geomspace(0.1, 10.0, 16).reshape(4, 4)
QUADRATIC_START = np.random.default_rng(0).uniform(-2.0, 2.0, size=(4, 4))


def rosenbrock(w) -> float:
    x, y = w
    return float((1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2)


def rosenbrock_grad(w) -> np.ndarray:
    x, y = w
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


def quadratic(w) -> float:
    return float(0.5 * np.sum(QUADRATIC_A * w * w))


def quadratic_grad(w) -> np.ndarray:
    return QUADRATIC_A * w


def trajectory(setting: Setting, f, grad, start, steps: int) -> np.ndarray:
    """``f`` at the start and after each of ``steps`` updates (float64, batch_size=1).

    A non-finite ``f`` ends the run: the rest of the values are NaN.
    """
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(setting.build(state))
    w = np.array(start, dtype=np.float64)
    values = np.full(steps + 1, np.nan)
    values[0] = f(w)
    state.begin_epoch()
    for step in range(1, steps + 1):
        g = grad(w)
        state.begin_batch()
        updater(0, g, w)
        values[step] = f(w)
        if not np.isfinite(values[step]):
            break
    return values


def steps_needed(values: np.ndarray, target: float) -> int | None:
    """The first update after which ``f < target``, or None."""
    below = np.nonzero(values < target)[0]
    return int(below[0]) if below.size else None


BY_LABEL = {s.label: s for s in SETTINGS}


@functools.cache
def rosenbrock_run(label: str) -> np.ndarray:
    s = BY_LABEL[label]
    return trajectory(s, rosenbrock, rosenbrock_grad, ROSENBROCK_START, s.steps)


@functools.cache
def quadratic_run(label: str) -> np.ndarray:
    s = BY_LABEL[label]
    return trajectory(s, quadratic, quadratic_grad, QUADRATIC_START, QUADRATIC_STEPS)


def _first_nonfinite(values: np.ndarray) -> int | None:
    bad = np.nonzero(~np.isfinite(values))[0]
    return int(bad[0]) if bad.size else None


def test_every_optimizer_has_a_setting():
    assert len(BY_LABEL) == len(SETTINGS), "labels must be unique"
    assert {s.optimizer for s in SETTINGS} == set(mxopt.OPTIMIZERS)
    inners = {s.inner[0] for s in SETTINGS if s.optimizer == "Lookahead"}
    assert inners == {"SGD", "RAdam"}
    lookahead_sgd = BY_LABEL["Lookahead(SGD)"].inner[1]
    assert lookahead_sgd["momentum"] > 0


def test_settings_have_no_weight_decay():
    """The minimum must be the function's own: weight_decay=0 wherever it exists."""
    state = mxopt.OptimizationState(batch_size=1)
    for s in SETTINGS:
        optimizer = s.build(state)
        opts = optimizer.inner.opts if s.inner is not None else optimizer.opts
        assert getattr(opts, "weight_decay", 0.0) == 0.0, s.label


@pytest.mark.parametrize("label", list(BY_LABEL))
def test_quadratic_decreases(label):
    values = quadratic_run(label)
    bad = _first_nonfinite(values)
    assert bad is None, f"{label}: f became non-finite at update {bad}"
    assert np.max(values) <= values[0], f"{label}: f rose above its start"
    ratio = values[-1] / values[0]
    assert ratio < QUADRATIC_FRACTION, (
        f"{label}: f after {QUADRATIC_STEPS} updates is {ratio:.3g} of its start "
        f"(must be < {QUADRATIC_FRACTION})"
    )


@pytest.mark.parametrize("label", list(BY_LABEL))
def test_rosenbrock_reaches_target(label):
    s = BY_LABEL[label]
    values = rosenbrock_run(label)
    bad = _first_nonfinite(values)
    assert bad is None, f"{label}: f became non-finite at update {bad}"
    needed = steps_needed(values, s.target)
    assert needed is not None, (
        f"{label}: f did not drop below {s.target:g} in {s.steps} updates "
        f"(smallest {np.min(values):.3g})"
    )


def test_the_checks_catch_divergence_and_slowness():
    """The harness can fail: plain SGD with lr=0.01 diverges on Rosenbrock (lr * 1000 > 2
    near the minimum), and with lr=1e-5 it does not reach 1e-4 in 1000 updates."""
    diverging = Setting("SGD-large", "SGD", {"lr": 1e-2, "weight_decay": 0.0}, 200, 1e-4)
    with np.errstate(over="ignore", invalid="ignore"):
        values = trajectory(diverging, rosenbrock, rosenbrock_grad, ROSENBROCK_START, 200)
    assert _first_nonfinite(values) is not None
    slow = Setting("SGD-small", "SGD", {"lr": 1e-5, "weight_decay": 0.0}, 1000, 1e-4)
    values = trajectory(slow, rosenbrock, rosenbrock_grad, ROSENBROCK_START, 1000)
    assert steps_needed(values, slow.target) is None


def table() -> list[dict]:
    """One row per setting: what docs/optimizers.md shows."""
    rows = []
    for s in SETTINGS:
        rosen = rosenbrock_run(s.label)
        quad = quadratic_run(s.label)
        rows.append(
            {
                "label": s.label,
                "call": s.call,
                "steps": s.steps,
                "target": s.target,
                "needed": steps_needed(rosen, s.target),
                "quadratic": quad[-1] / quad[0],
                "note": s.note,
            }
        )
    return rows


def markdown() -> str:
    lines = [
        "| optimizer | mxopt settings | Rosenbrock budget | target | steps needed "
        f"| quadratic f({QUADRATIC_STEPS}) / f(0) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table():
        lines.append(
            f"| {r['label']} | `{r['call']}` | {r['steps']} | {r['target']:g} | "
            f"{r['needed']} | {r['quadratic']:.1e} | {r['note']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())

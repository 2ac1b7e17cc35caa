"""Any float option of any optimizer may be a schedule, read at every update.

For every optimizer in ``mxopt.OPTIMIZERS`` and every schedulable float option
(``hyperparameter()`` fields), a run whose option is a schedule must match, bit
for bit, a run whose option is a number reassigned to the same value before each
update. Each option must also change the result in at least one case, so the
comparison cannot pass by ignoring the option.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

import mxopt
from mxopt import LearningRate, Momentum, OptimizationState
from mxopt.core.checks import Interval
from tests import cases

STEPS = 6
#: The weight's shape where (37,) would not do: Muon and SOAP hand vectors to their fallback.
SHAPES = {"Muon": (5, 8), "SOAP": (5, 8)}


def _schedulable(optimizer) -> list[tuple[str, Interval]]:
    return [
        (f.name, f.metadata["interval"])
        for f in attrs.fields(type(optimizer.opts))
        if f.metadata.get("schedulable")
    ]


def _candidates(default: float, interval: Interval):
    """Sets of per-step values inside ``interval``, tried in order until one matters."""
    sets = []
    if default != 0:
        sets += [[default * f for f in (0.5, 0.6, 0.7, 0.8, 0.55, 0.65)]]
        sets += [[default * f for f in (1.5, 1.6, 1.7, 1.8, 1.55, 1.65)]]
    sets += [[0.3, 0.4, 0.5, 0.6, 0.35, 0.45], [1.5, 2.0, 2.5, 3.0, 1.75, 2.25]]
    sets += [[-0.3, -0.4, -0.5, -0.6, -0.35, -0.45]]
    return [s for s in sets if all(interval.contains(v) for v in s)]


def _build(case: cases.Case, name: str, value, state):
    options = dict(case.options)
    if case.inner is not None:
        inner_name, inner_options = case.inner
        inner = mxopt.OPTIMIZERS[inner_name](**inner_options, state=state)
        return mxopt.OPTIMIZERS[case.optimizer](inner, **{**options, name: value})
    options.update(cases.required_options(case.optimizer))
    options.update(case.options)
    options[name] = value
    return mxopt.OPTIMIZERS[case.optimizer](**options, state=state)


def _run(case, name, values, scheduled: bool):
    """Weights and every state array after STEPS updates with per-step ``values``."""
    rng = np.random.default_rng(7)
    shape = SHAPES.get(case.optimizer, 37)
    weight = rng.normal(size=shape) * 3.0
    grads = [rng.normal(size=shape) * 10.0 for _ in range(STEPS)]
    state = OptimizationState(batch_size=1)
    if scheduled:
        option = LearningRate.FromCallable(lambda s: values[s.curr_iter - 1])
    else:
        option = values[0]
    optimizer = _build(case, name, option, state)
    updater = mxopt.get_updater(optimizer)
    state.begin_epoch()
    for k in range(STEPS):
        state.begin_batch()
        if not scheduled:
            setattr(optimizer.opts, name, values[k])
        updater(0, grads[k], weight)
    arrays = updater.states[0].arrays if hasattr(updater, "states") else {}
    return weight, {k: np.array(v) for k, v in arrays.items()}


def _cases_of(optimizer_name: str):
    own = [c for c in cases.CASES if c.optimizer == optimizer_name]
    return own or [cases.Case(optimizer_name, "default")]


def _same(a, b) -> bool:
    return (
        np.array_equal(a[0], b[0])
        and a[1].keys() == b[1].keys()
        and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    )


#: (optimizer, option) pairs known not to accept a schedule yet, with the reason. The
#: test xfails while they fail and fails once they work, so the entry gets removed.
KNOWN: dict = {}


def _check_option(case, name, default, interval) -> tuple[str | None, bool]:
    """``(problem, mattered)`` for one option of one case."""
    mattered = False
    for values in _candidates(default, interval):
        try:
            by_number = _run(case, name, values, scheduled=False)
        except ValueError:
            continue  # a combination the optimizer rejects (e.g. nesterov + dampening)
        try:
            by_schedule = _run(case, name, values, scheduled=True)
        except Exception as error:  # reported below
            return f"{case.label}: {type(error).__name__}: {error}", mattered
        if not _same(by_schedule, by_number):
            return (
                f"{case.label}: the schedule does not give the same updates as the same "
                f"values given as numbers",
                mattered,
            )
        if not _same(by_schedule, _run(case, name, [default] * STEPS, scheduled=False)):
            return None, True
    return None, mattered


@pytest.mark.parametrize("optimizer_name", sorted(mxopt.OPTIMIZERS))
def test_every_float_option_may_be_a_schedule(optimizer_name):
    mattered: dict[str, bool] = {}
    problems: dict[str, str] = {}
    for case in _cases_of(optimizer_name):
        base = cases.make_optimizer(case, {}, OptimizationState(batch_size=1))
        for name, interval in _schedulable(base):
            default = getattr(base.opts, name)
            if not isinstance(default, float) or name in problems:
                continue  # already a schedule in this case, or already reported
            problem, seen = _check_option(case, name, default, interval)
            mattered[name] = mattered.get(name, False) or seen
            if problem:
                problems[name] = problem
    known = {n: r for (o, n), r in KNOWN.items() if o == optimizer_name}
    unexpected = {n: p for n, p in problems.items() if n not in known}
    assert not unexpected, f"{optimizer_name}: options that do not work as schedules: {unexpected}"
    fixed = sorted(set(known) - set(problems))
    assert not fixed, f"{optimizer_name}: {fixed} now work as schedules; remove them from KNOWN"
    ignored = sorted(n for n, seen in mattered.items() if not seen and n not in problems)
    assert not ignored, (
        f"{optimizer_name}: changing {ignored} over {STEPS} steps changed nothing in any "
        f"case of tests/cases.py, so this test cannot show that their schedules are read"
    )
    if known:
        pytest.xfail(f"{optimizer_name}: {sorted(known)}: {sorted(set(known.values()))}")


def test_out_of_range_schedule_value_is_reported_and_nothing_changes():
    state = OptimizationState(batch_size=1)
    adam = mxopt.ADAM(beta1=LearningRate.Linear(0.9, 1.5, 4), state=state)
    updater = mxopt.get_updater(adam)
    weight = np.ones(5)
    state.begin_epoch()
    state.begin_batch()
    updater(0, np.ones(5), weight)  # t = 0: beta1 = 0.9
    state.begin_batch()  # t = 1: beta1 = 0.9 + 0.6 / 4 = 1.05, outside [0, 1)
    before = weight.copy()
    with pytest.raises(ValueError, match=r"ADAM: beta1 \(from its schedule\).*\[0, 1\).*1\.05"):
        updater(0, np.ones(5), weight)
    np.testing.assert_array_equal(weight, before)


def test_momentum_given_as_a_schedule_is_the_momentum_scheduler():
    schedule = Momentum.Linear(0.5, 0.9, 10)
    sgd = mxopt.SGD(momentum=schedule)
    assert sgd.momentum_scheduler is schedule
    assert mxopt.Momentum.get_momentum_scheduler(None, 0.0) == Momentum.Null()


def test_a_schedule_of_pairs_is_rejected_with_the_option_name():
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    adam = mxopt.ADAM(beta2=Momentum.NadamScheduler(), state=state)
    with pytest.raises(
        TypeError, match="ADAM: beta2 is given by the schedule .*must give a number"
    ):
        mxopt.get_updater(adam)(0, np.ones(3), np.ones(3))

"""Momentum schedulers: closed forms, the inverse cycles, and SGD reading them."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mxopt
from mxopt import LearningRate, Momentum, OptimizationState

HUGE = 10**12


def it(t: int) -> OptimizationState:
    return OptimizationState(batch_size=1, curr_epoch=1, curr_batch=t + 1, curr_iter=t + 1)


def test_linear_and_cosine():
    lin = Momentum.Linear(0.95, 0.85, 10)
    assert [lin.value(it(t)) for t in (0, 5, 10, HUGE)] == pytest.approx([0.95, 0.9, 0.85, 0.85])
    cos = Momentum.Cosine(0.85, 0.95, 20)
    for t in (0, 1, 7, 10, 19, 20, 21, HUGE):
        expected = 0.95 + (0.85 - 0.95) * (1 + math.cos(math.pi * min(t, 20) / 20)) / 2
        assert cos.value(it(t)) == pytest.approx(expected, rel=1e-14)
    assert cos.value(it(0)) == 0.85 and cos.value(it(10)) == pytest.approx(0.9)


@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_momentum_is_inverse_to_the_learning_rate(anneal, three_phase):
    total, pct = 100, 0.25
    lr = LearningRate.OneCycle(1.0, total, pct, anneal, div_factor=10.0, three_phase=three_phase)
    mom = Momentum.OneCycle(total, pct, 0.85, 0.95, anneal, three_phase=three_phase)
    assert mom.value(it(0)) == 0.95
    assert mom.value(it(24)) == pytest.approx(0.85)  # at the learning rate's peak
    assert mom.value(it(99)) == pytest.approx(0.95) == mom.value(it(HUGE))
    # the momentum mirrors the rate within each phase: down while it rises, up while it falls
    end = 48 if three_phase else 99
    for t in range(0, end + 1):
        low = 0.1 if t <= 24 or three_phase else 0.1 / 1e4  # the phase's other end
        rise = (lr.value(it(t)) - low) / (1.0 - low)
        assert mom.value(it(t)) == pytest.approx(0.95 - 0.1 * rise, rel=1e-12, abs=1e-12), t
    if three_phase:
        assert all(mom.value(it(t)) == 0.95 for t in range(49, 100))


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_momentum_is_inverse_to_the_cyclic_rate(mode):
    lr = LearningRate.Cyclic(0.0, 1.0, 5, 7, mode=mode, gamma=0.98)
    mom = Momentum.Cyclic(0.8, 0.9, 5, 7, mode=mode, gamma=0.98)
    for t in range(60):
        assert mom.value(it(t)) == pytest.approx(0.9 - 0.1 * lr.value(it(t)), rel=1e-13)
    top = 0.98**5 if mode == "exp_range" else 1.0
    assert mom.value(it(0)) == 0.9 and mom.value(it(5)) == pytest.approx(0.9 - 0.1 * top)


def test_list_callable_and_join():
    assert [Momentum.FromList([0.9, 0.8]).value(it(t)) for t in (0, 1, 2, HUGE)] == [
        0.9,
        0.8,
        0.8,
        0.8,
    ]
    assert Momentum.FromCallable(lambda s: 0.5 + 0.1 * s.curr_epoch).value(it(3)) == 0.6
    join = Momentum.Join([Momentum.Linear(0.95, 0.85, 4), Momentum.Fixed(0.85)], [4])
    assert [join.value(it(t)) for t in range(6)] == pytest.approx(
        [0.95, 0.925, 0.9, 0.875, 0.85, 0.85]
    )


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: Momentum.Linear(0.9, 1.0, 5), ["Momentum.Linear", "end", "[0, 1)"]),
        (lambda: Momentum.Cosine(-0.1, 0.9, 5), ["Momentum.Cosine", "start"]),
        (lambda: Momentum.Linear(0.9, 0.8, 0), ["steps", ">= 1"]),
        (lambda: Momentum.Cyclic(max_momentum=1.2), ["Momentum.Cyclic", "max_momentum"]),
        (lambda: Momentum.OneCycle(100, pct_start=0), ["Momentum.OneCycle", "pct_start"]),
        (lambda: Momentum.OneCycle(2, pct_start=0.5), ["phase 1 empty"]),
        (
            lambda: Momentum.FromList([0.9, 1.0]),
            ["Momentum.FromList", "values", "in [0, 1)", "got 1.0"],
        ),
        (lambda: Momentum.Join([Momentum.Fixed(0.9)], [3]), ["Momentum.Join", "one more"]),
    ],
)
def test_invalid(make, words):
    with pytest.raises(ValueError) as raised:
        make()
    for word in words:
        assert word in str(raised.value)


def _sgd_momentum_reference(w, grads, lrs, mus):
    """v <- mu v - lr g; W <- W + v (no weight decay, batch_size 1)."""
    w, v = w.copy(), np.zeros_like(w)
    for g, lr, mu in zip(grads, lrs, mus, strict=True):
        v = mu * v - lr * g
        w = w + v
    return w, v


def test_sgd_reads_a_momentum_schedule_at_every_update():
    state = OptimizationState(batch_size=1)
    mom = Momentum.OneCycle(6, 0.5)
    lr = LearningRate.OneCycle(0.1, 6, 0.5)
    sgd = mxopt.SGD(lr_scheduler=lr, momentum_scheduler=mom, weight_decay=0.0, state=state)
    updater = mxopt.get_updater(sgd)
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=11)
    grads = [rng.normal(size=11) for _ in range(6)]
    weight = w0.copy()
    state.begin_epoch()
    for g in grads:
        state.begin_batch()
        updater(0, g, weight)
    lrs = [lr.value(it(t)) for t in range(6)]
    mus = [mom.value(it(t)) for t in range(6)]
    assert len(set(mus)) > 2
    w, v = _sgd_momentum_reference(w0, grads, lrs, mus)
    np.testing.assert_allclose(weight, w, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(updater.states[0].arrays["velocity"], v, rtol=1e-13, atol=1e-15)


def test_null_is_still_the_no_buffer_marker():
    assert (
        mxopt.create_state(mxopt.SGD(momentum_scheduler=Momentum.Null()), 0, np.ones(3)).arrays
        == {}
    )
    with_schedule = mxopt.SGD(momentum_scheduler=Momentum.Linear(0.0, 0.5, 3))
    assert set(mxopt.create_state(with_schedule, 0, np.ones(3)).arrays) == {"velocity"}

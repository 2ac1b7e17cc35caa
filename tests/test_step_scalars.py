"""A new update of the same options recomputes only the scalars that change with the step
(``step_scalars``): the result must be, bit for bit, what the optimizer's full ``prepare``
gives for that step, for every optimizer that names such scalars, under every option set
that changes them (the oracle is the full computation, which every other path uses)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mxopt
from mxopt.optimizers.base import NO_MULTIPLIERS, Multipliers
from mxopt.training.engine import host_scalars

#: Option sets beyond each optimizer's documented examples.
EXTRA = {
    "ADAM": [
        {"epsilon_hat": False},
        {"amsgrad": True, "epsilon_hat": False, "weight_decay": 0.1},
        {"decoupled_weight_decay": True, "weight_decay": 0.01, "beta1": 0.5, "beta2": 0.9},
        {"cautious": True},
        {"lr_scheduler": mxopt.LearningRate.Exp(0.1, gamma=0.9)},
    ],
    "SGD": [
        {"momentum": 0.9, "dampening": 0.5},
        {"momentum": 0.9, "nesterov": True, "dampening": 0.0},
        {"momentum": 0.9, "cautious": True},
        {"momentum_scheduler": mxopt.Momentum.Fixed(0.8), "dampening": 0.25},
        {"momentum": 0.0},
    ],
}
MULTIPLIERS = [NO_MULTIPLIERS, Multipliers(lr=0.5, wd=2.0, grad=0.25)]
STEPS = [1, 2, 3, 10, 1000, 123_457]


def _cases():
    for name, cls in sorted(mxopt.OPTIMIZERS.items()):
        for k, options in enumerate([*cls.about.examples, *EXTRA.get(name, [])]):
            made = {key: value() if callable(value) and key == "inner" else value
                    for key, value in options.items()}  # fmt: skip
            yield pytest.param(cls, made, id=f"{name}-{k}")


def _same(a, b):
    assert type(a) is type(b) and len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x == y or (math.isnan(x) and math.isnan(y))) and type(x) is type(y), (a, b)


@pytest.mark.parametrize(("cls", "options"), list(_cases()))
def test_a_new_step_gives_the_scalars_of_the_full_computation(cls, options):
    state = mxopt.OptimizationState(batch_size=4)
    state.begin_epoch()
    state.begin_batch()
    state.begin_batch()
    optimizer = cls(state=state, **options)
    if optimizer.has_memory or optimizer.step_scalars() is None:
        pytest.skip("recomputes everything at each step")
    for mult in MULTIPLIERS:
        for first in STEPS:
            host_scalars(optimizer, state, first, None, mult)  # the cache of another step
            for step in STEPS:
                fast = host_scalars(optimizer, state, step, None, mult)
                full = optimizer.prepare(optimizer.values(state, mult), step, None)
                _same(fast, full)
                host_scalars(optimizer, state, first, None, mult)


def test_adam_and_sgd_name_their_step_scalars():
    # the two this exists for: a step of one weight per call recomputes only these
    assert mxopt.ADAM().step_scalars() == ("lr_t", "eps")
    assert mxopt.AdamW().step_scalars() == ("lr_t", "eps")
    assert mxopt.SGD(momentum=0.9).step_scalars() == ("lr_damped",)
    assert mxopt.SGD().step_scalars() == ()
    assert mxopt.ADAM(cautious=True).step_scalars() is None


def test_one_weight_per_call_keeps_the_bits_of_the_full_computation():
    # every call is a new update of the one weight: the cached path against an updater
    # whose cache is emptied before each call (so it computes everything)
    runs = []
    for fresh in (False, True):
        state = mxopt.OptimizationState(batch_size=1)
        state.begin_epoch()
        state.begin_batch()
        updater = mxopt.get_updater(mxopt.ADAM(epsilon_hat=False, state=state))
        weight = np.linspace(-1, 1, 16, dtype=np.float32)
        rng = np.random.default_rng(0)
        for _ in range(50):
            if fresh:
                updater.optimizer.__dict__.pop("_scalars_cache", None)
            updater(0, rng.normal(size=16).astype(np.float32), weight)
        runs.append(weight)
    np.testing.assert_array_equal(runs[0].view(np.uint32), runs[1].view(np.uint32))


#: Optimizers whose direct calls compute the step scalars themselves, with option sets
#: that change the formula's inputs.
COMPILED = [
    (mxopt.ADAM, {}),
    (mxopt.ADAM, {"epsilon_hat": False, "beta1": 0.5, "beta2": 0.9}),
    (mxopt.AdamW, {"beta1": 0.0, "beta2": 0.25, "lr": 3.0}),
    (mxopt.SGD, {"momentum": 0.9, "dampening": 0.3}),
    (mxopt.SGD, {"momentum": 0.9, "dampening": 1.0 / 3.0, "lr": 0.7}),
]


@pytest.mark.parametrize(("cls", "options"), [*_cases(), *COMPILED])
def test_the_compiled_step_formula_gives_the_bits_of_python(cls, options):
    # the formula compiled as a direct call compiles it (libm's pow through LLVM) against
    # the same formula run by CPython, over steps far beyond a training run
    import numba

    optimizer = cls(state=mxopt.OptimizationState(batch_size=1), **options)
    if optimizer.has_memory or not optimizer.step_scalars():
        pytest.skip("no step formula")
    compiled = numba.njit(type(optimizer).step_formula)
    rng = np.random.default_rng(1)
    steps = [*range(1, 200), *rng.integers(200, 10**9, 300).tolist()]
    inputs = [optimizer.step_inputs(optimizer.values(optimizer.require_state()))]
    for _ in range(20):  # random rates and decays of the same shape
        base = inputs[0]
        inputs.append(tuple(float(rng.uniform(0.0, 1.0)) if isinstance(x, float) and 0 < x < 1
                            else x for x in base))  # fmt: skip
    for values in inputs:
        for step in steps:
            _same(compiled(values, step), type(optimizer).step_formula(values, step))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("cls", "options"), COMPILED)
def test_direct_calls_compute_a_new_steps_scalars_with_the_bits_of_the_full_computation(
    cls, options, dtype
):
    # one weight updated per step: its direct call gets another step's scalars and computes
    # the step's own; against an updater whose cache is emptied before each call (so
    # Python computes every scalar, and the call takes them as they are)
    runs = []
    for fresh in (False, True):
        state = mxopt.OptimizationState(batch_size=1)
        state.begin_epoch()
        state.begin_batch()
        updater = mxopt.get_updater(cls(state=state, **options))
        weight = np.linspace(-1, 1, 24, dtype=dtype).reshape(4, 6)
        rng = np.random.default_rng(0)
        for _ in range(60):
            if fresh:
                updater.optimizer.__dict__.pop("_scalars_cache", None)
            updater(0, rng.normal(size=(4, 6)).astype(dtype), weight)
        if not fresh:  # the direct call did compute them: the cache stayed at an early step
            assert updater.states[0].plan.direct is not None
            assert updater.optimizer.__dict__["_scalars_cache"][4] <= 2
        runs.append(weight)
    np.testing.assert_array_equal(runs[0], runs[1], strict=True)
    assert runs[0].tobytes() == runs[1].tobytes()

"""Generic optimizer tests, driven by the case table in tests/cases.py."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest

import mxopt
from tests.cases import (
    CASES,
    SHAPES,
    TOLERANCE,
    VARIANTS,
    Case,
    make_optimizer,
    required_options,
    trajectory,
)
from tests.conftest import BACKENDS, to_numpy
from tests.reference import ORACLES


def test_every_optimizer_has_an_oracle_and_a_case():
    names = set(mxopt.OPTIMIZERS)
    assert names == set(ORACLES), "each optimizer needs an oracle in tests/reference/"
    assert names == {case.optimizer for case in CASES}, "each optimizer needs a case"


@pytest.mark.parametrize("xp", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_oracle_after_every_step(case, variant, dtype, shape, xp):
    rtol, atol = TOLERANCE[dtype]
    steps = 0
    for step, weight, state, ref_weight, ref_state in trajectory(
        case, VARIANTS[variant], dtype, shape, xp
    ):
        steps += 1
        assert state.step == step
        assert to_numpy(weight).dtype == dtype
        np.testing.assert_allclose(
            to_numpy(weight), ref_weight, rtol=rtol, atol=atol, err_msg=f"weight, step {step}"
        )
        assert set(state.arrays) == set(ref_state), "state arrays differ from the oracle's"
        for name, expected in ref_state.items():
            actual = state.arrays[name]
            assert actual.shape == expected.shape and to_numpy(actual).dtype == dtype
            np.testing.assert_allclose(
                to_numpy(actual), expected, rtol=rtol, atol=atol, err_msg=f"{name}, step {step}"
            )
    assert steps >= 7


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradient_is_never_modified(case):
    state = mxopt.OptimizationState(batch_size=2, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(make_optimizer(case, {"grad_clip": 0.1}, state))
    weight = np.linspace(-1, 1, 11, dtype=np.float32)
    grad = np.linspace(3, -3, 11, dtype=np.float32)
    before = grad.copy()
    for _ in range(3):
        updater(0, grad, weight)
    np.testing.assert_array_equal(grad, before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_read_only_gradient_is_accepted(case):
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(make_optimizer(case, {}, state))
    weight = np.ones(5, np.float32)
    grad = np.full(5, 0.5, np.float32)
    grad.flags.writeable = False
    for _ in range(2):  # ADOPT's first update only initialises its state
        updater(0, grad, weight)
    assert (weight != 1).all()


def _hyperparameter_fields(cls):
    return [a for a in attrs.fields(cls.Options) if "interval" in a.metadata]


def _bad_values(interval):
    values = [math.nan, math.inf, -math.inf]
    if interval.ge is not None:
        values.append(interval.ge - 0.5)
    if interval.gt is not None:
        values.append(interval.gt)
    if interval.le is not None:
        values.append(interval.le + 0.5)
    if interval.lt is not None:
        values.append(interval.lt)
    return values


@pytest.mark.parametrize("name", sorted(mxopt.OPTIMIZERS))
def test_invalid_hyperparameters_are_rejected_with_a_clear_message(name):
    cls = mxopt.OPTIMIZERS[name]
    fields = _hyperparameter_fields(cls)
    assert fields
    for a in fields:
        for value in _bad_values(a.metadata["interval"]):
            with pytest.raises(ValueError) as error:
                cls(**{**required_options(name), a.name: value})
            message = str(error.value)
            assert name in message and a.name in message and repr(float(value)) in message
            assert str(a.metadata["interval"]) in message
        for value in ["0.1", None, True, [0.1]]:
            with pytest.raises(TypeError, match=a.name):
                cls(**{**required_options(name), a.name: value})


@pytest.mark.parametrize("name", sorted(mxopt.OPTIMIZERS))
def test_assigning_an_invalid_option_is_rejected_and_leaves_it_unchanged(name):
    optimizer = mxopt.OPTIMIZERS[name](**required_options(name))
    field = _hyperparameter_fields(type(optimizer))[0]
    before = getattr(optimizer.opts, field.name)
    with pytest.raises(ValueError, match=field.name):
        setattr(optimizer.opts, field.name, math.nan)
    assert getattr(optimizer.opts, field.name) == before


@pytest.mark.parametrize("name", sorted(mxopt.OPTIMIZERS))
def test_unknown_option_names_the_known_ones(name):
    first = attrs.fields(mxopt.OPTIMIZERS[name].Options)[0].name
    with pytest.raises(TypeError, match=f"unknown option.*learning_rate.*the options are: {first}"):
        mxopt.OPTIMIZERS[name](**required_options(name), learning_rate=0.1)


@pytest.mark.parametrize("name", sorted(mxopt.OPTIMIZERS))
def test_update_without_state_is_a_clear_error(name):
    updater = mxopt.get_updater(mxopt.OPTIMIZERS[name](**required_options(name)))
    weight = np.ones(3, np.float32)
    with pytest.raises(RuntimeError, match="no OptimizationState"):
        updater(0, np.ones(3, np.float32), weight)
    np.testing.assert_array_equal(weight, 1)
    assert updater.states == {}


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert all(isinstance(c, Case) for c in CASES)

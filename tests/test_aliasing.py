"""Overlapping memory in a step is refused before anything is written: a gradient that is a
view of its weight, one array (or overlapping views) under two indices, a gradient that
is another index's weight; on the single path, the general list path and the compiled
list path alike. Reading one gradient array for two indices is fine."""

from __future__ import annotations

import numpy as np
import pytest

import mxopt


def _updater():
    return mxopt.get_updater(mxopt.SGD(lr=0.1, momentum=0.9, state=mxopt.OptimizationState(1)))


def test_a_gradient_that_overlaps_its_weight_is_refused():
    updater = _updater()
    memory = np.ones(10, np.float32)
    weight, grad = memory[:6], memory[4:]
    with pytest.raises(ValueError, match="index 'w': grad overlaps the memory of weight"):
        updater("w", grad, weight)
    np.testing.assert_array_equal(memory, np.ones(10, np.float32))
    assert updater.states == {}


def _lists(case, memory):
    if case == "same weight twice":
        return [memory, memory], [np.ones(8, np.float32), np.ones(8, np.float32)]
    if case == "overlapping views":
        return [memory[:5], memory[3:]], [np.ones(5, np.float32), np.ones(5, np.float32)]
    return [memory, np.ones(8, np.float32)], [np.ones(8, np.float32), memory]  # grad of a


CASES = {
    "same weight twice": "the weight of index 'b' overlaps the weight of index 'a'",
    "overlapping views": "the weight of index 'b' overlaps the weight of index 'a'",
    "another index's weight as grad": "the grad of index 'b' overlaps the weight of index 'a'",
}


@pytest.mark.parametrize("steady", [False, True], ids=["first-step", "list-path"])
@pytest.mark.parametrize("case", CASES)
def test_overlapping_members_of_a_list_step_are_refused(case, steady):
    updater = _updater()
    memory = np.ones(8, np.float32)
    weights, grads = _lists(case, memory)
    if steady:  # states exist and the list has a compiled plan: the overlap is new
        separate = [w.copy() for w in weights]
        for _ in range(2):
            updater.update_many(["a", "b"], [g.copy() for g in grads], separate)
        assert updater._list_plans[("a", "b")].kernel is not None
    steps = {k: s.step for k, s in updater.states.items()}
    with pytest.raises(ValueError, match=CASES[case]):
        updater.update_many(["a", "b"], grads, weights)
    np.testing.assert_array_equal(memory, np.ones(8, np.float32))
    assert {k: s.step for k, s in updater.states.items()} == steps


@pytest.mark.parametrize("steps", [1, 3])
def test_one_gradient_read_for_two_indices_is_fine(steps):
    many, single = _updater(), _updater()
    grad = np.linspace(-1, 1, 6, dtype=np.float32)
    many_weights = [np.ones(6, np.float32), np.full(6, 2.0, np.float32)]
    single_weights = [w.copy() for w in many_weights]
    for _ in range(steps):
        assert many.update_many(["a", "b"], [grad, grad], many_weights)
        for name, weight in zip(["a", "b"], single_weights, strict=True):
            single(name, grad, weight)
    for a, b in zip(many_weights, single_weights, strict=True):
        np.testing.assert_array_equal(a, b)

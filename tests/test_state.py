"""Counting rules of OptimizationState (mxnet-semantics.md section 1.2 and 1.8)."""

import warnings

import numpy as np
import pytest

import mxopt
from mxopt import OptimizationState


def test_starts_before_training():
    state = OptimizationState(32)
    assert (state.batch_size, state.curr_epoch, state.curr_batch, state.curr_iter) == (32, 0, 0, 0)


def test_counts_like_a_training_loop():
    state = OptimizationState(batch_size=8)
    seen = []
    for _ in range(3):
        state.begin_epoch()
        assert state.curr_batch == 0
        for _ in range(4):
            state.begin_batch()
            seen.append((state.curr_epoch, state.curr_batch, state.curr_iter))
    # The first update sees epoch 1, batch 1, iteration 1; batches reset, iterations do not.
    assert seen[0] == (1, 1, 1)
    assert seen[3] == (1, 4, 4)
    assert seen[4] == (2, 1, 5)
    assert seen[-1] == (3, 4, 12)


def test_positional_order_is_batch_epoch_batch_iter():
    state = OptimizationState(16, 2, 3, 40)
    assert (state.curr_epoch, state.curr_batch, state.curr_iter) == (2, 3, 40)


def test_numpy_integers_are_accepted():
    state = OptimizationState(np.int64(4), curr_iter=np.int32(7))
    assert state.batch_size == 4 and type(state.batch_size) is int
    assert state.curr_iter == 7


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"batch_size": 0}, ValueError, ["batch_size", ">= 1", "0"]),
        ({"batch_size": -3}, ValueError, ["batch_size", "-3"]),
        ({"batch_size": 2.5}, TypeError, ["batch_size", "2.5"]),
        ({"batch_size": True}, TypeError, ["batch_size"]),
        ({"batch_size": "32"}, TypeError, ["batch_size"]),
        ({"batch_size": 4, "curr_epoch": -1}, ValueError, ["curr_epoch", ">= 0", "-1"]),
        ({"batch_size": 4, "curr_batch": -1}, ValueError, ["curr_batch"]),
        ({"batch_size": 4, "curr_iter": -2}, ValueError, ["curr_iter", "-2"]),
    ],
)
def test_invalid_values_are_rejected(kwargs, error, words):
    with pytest.raises(error) as raised:
        OptimizationState(**kwargs)
    for word in words:
        assert word in str(raised.value)


def test_assignment_is_validated_and_leaves_the_value_unchanged():
    state = OptimizationState(4)
    with pytest.raises(ValueError, match="batch_size"):
        state.batch_size = 0
    assert state.batch_size == 4
    state.batch_size = 8
    assert state.batch_size == 8


# -- a state never advanced ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["single", "many", "buffer", "memory"])
def test_updates_on_a_state_never_advanced_warn_once_at_the_callers_line(path):

    state = mxopt.OptimizationState(batch_size=1)
    # Nadam keeps per-weight scalars: its host scalars take the other branch
    optimizer = mxopt.Nadam(state=state) if path == "memory" else mxopt.ADAM(state=state)
    updater = mxopt.get_updater(optimizer)
    buffer = mxopt.ParameterBuffer({"a": (3,), "b": (2,)}, dtype=np.float64)

    def step():
        if path == "many":
            return updater.update_many(["a"], [np.ones(3)], [weight])
        if path == "buffer":
            return updater.update_buffer(buffer)
        return updater("a", np.ones(3), weight)

    weight = np.ones(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            step()
    mine = [w for w in caught if issubclass(w.category, mxopt.StateNotAdvancedWarning)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    assert mine[0].filename == __file__  # points at the training loop, not into mxopt
    assert "begin_batch()" in str(mine[0].message)
    # a second state warns again; an advanced one never does
    with pytest.warns(mxopt.StateNotAdvancedWarning):
        updater.optimizer.state = mxopt.OptimizationState(batch_size=1)
        step()
    advanced = mxopt.OptimizationState(batch_size=1)
    advanced.begin_epoch()
    advanced.begin_batch()
    updater.optimizer.state = advanced
    with warnings.catch_warnings():
        warnings.simplefilter("error", mxopt.StateNotAdvancedWarning)
        step()


def test_the_thinc_adapter_and_schedule_sampling_do_not_warn():

    with warnings.catch_warnings():
        warnings.simplefilter("error", mxopt.StateNotAdvancedWarning)
        mxopt.schedule_values(mxopt.LearningRate.Exp(lr=0.1, gamma=0.5), 5, 2)
        try:
            from mxopt.integrations.thinc import ThincOptimizer
        except ImportError:
            return
        optimizer = ThincOptimizer(mxopt.ADAM())
        weight = np.ones(4, dtype=np.float32)
        optimizer((0, "W"), weight, np.ones(4, dtype=np.float32))

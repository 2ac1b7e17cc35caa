"""Updaters and the Thinc adapter can be deep-copied and pickled: a copy continues exactly
as the original would, and shares nothing with it (Thinc's own optimizer can be copied,
and users do)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import mxopt
from mxopt.kernels.kernel import KERNELS

COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


def _trained():
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(mxopt.AdamW(lr=0.01, state=state), averaging=mxopt.EMA(0.9))
    rng = np.random.default_rng(0)
    weights = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": np.ones(5, np.float32)}
    buffer = mxopt.ParameterBuffer.from_arrays({"c": np.ones(7, np.float32)})
    state.begin_epoch()
    for _ in range(3):  # single calls, the list path and the packed path have all run
        state.begin_batch()
        grads = [rng.normal(size=w.shape).astype(np.float32) for w in weights.values()]
        updater.update_many(list(weights), grads, list(weights.values()))
        updater("d", np.ones(2, np.float32), np.zeros(2, np.float32))
        buffer.grad[:] = rng.normal(size=7)
        updater.update_buffer(buffer)
    return updater, weights, buffer


@pytest.mark.parametrize("how", COPIES)
def test_a_copied_updater_continues_exactly_and_shares_nothing(how):
    original, weights, buffer = _trained()
    duplicate = COPIES[how](original)
    copied_weights = {k: w.copy() for k, w in weights.items()}
    copied_buffer = mxopt.ParameterBuffer.from_arrays(dict(buffer.weights))
    rng = np.random.default_rng(1)
    for _ in range(2):
        grads = [rng.normal(size=w.shape).astype(np.float32) for w in weights.values()]
        for updater, ws, buf in ((original, weights, buffer),
                                 (duplicate, copied_weights, copied_buffer)):  # fmt: skip
            updater.optimizer.state.begin_batch()
            updater.update_many(list(ws), [g.copy() for g in grads], list(ws.values()))
            buf.grad[:] = 0.5
            updater.update_buffer(buf)
    for k in weights:
        np.testing.assert_array_equal(weights[k], copied_weights[k])
    np.testing.assert_array_equal(buffer.weight, copied_buffer.weight)
    for k, state in original.states.items():
        twin = duplicate.states[k]
        assert twin.step == state.step
        for name, array in state.arrays.items():
            np.testing.assert_array_equal(twin.arrays[name], array)
            assert not np.shares_memory(twin.arrays[name], array)
            assert np.shares_memory(twin.arrays[name], twin.flat[name])  # still its view
    assert duplicate.optimizer is not original.optimizer
    assert duplicate.optimizer.state is not original.optimizer.state


def test_kernels_are_found_again_by_name():
    for kernel in list(KERNELS.values())[:5]:
        assert pickle.loads(pickle.dumps(kernel)) is kernel
        assert copy.deepcopy(kernel) is kernel


@pytest.mark.parametrize("how", COPIES)
def test_the_thinc_adapter_can_be_copied(how):
    from mxopt.thinc import Adam

    optimizer = Adam(0.01, use_averages=True)
    weight, grad = np.ones(6, np.float32), np.linspace(-1, 1, 6, dtype=np.float32)
    optimizer((1, "W"), weight, grad.copy())
    duplicate = COPIES[how](optimizer)
    a, b = weight.copy(), weight.copy()
    optimizer((1, "W"), a, grad.copy())
    duplicate((1, "W"), b, grad.copy())
    np.testing.assert_array_equal(a, b)
    assert duplicate.averages is not None

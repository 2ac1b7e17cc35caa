"""The states of small weights made by one ``update_many`` come from an arena: each state
array of the list is one stream in memory (weight after weight, 64-byte aligned), none
overlaps another, large ones are made as before, and an arena that runs short grows."""

from __future__ import annotations

import numpy as np

import mxopt
from mxopt.kernels import backends


def _updater():
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    state.begin_batch()
    return mxopt.get_updater(mxopt.ADAM(state=state))


def test_the_state_arrays_of_one_list_are_consecutive_per_name():
    sizes = [1024, 7, 300, 1, 4096]
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=n).astype(np.float32) for n in sizes]
    grads = [rng.normal(size=n).astype(np.float32) for n in sizes]
    updater = _updater()
    updater.update_many(list(range(len(sizes))), grads, weights)
    for name in ("mean", "var"):
        arrays = [updater.states[k].flat[name] for k in range(len(sizes))]
        starts = [a.ctypes.data for a in arrays]
        assert all(start % 64 == 0 for start in starts)
        for a, b in zip(arrays, arrays[1:], strict=False):
            padded = -(-a.nbytes // 64) * 64
            assert b.ctypes.data == a.ctypes.data + padded  # the next slice of one arena
    everything = [a for k in range(len(sizes)) for a in updater.states[k].flat.values()]
    for i, a in enumerate(everything):
        for b in everything[i + 1 :]:
            assert not np.shares_memory(a, b)
    # and the step is ADAM's first: m = (1 - beta1) g, v = (1 - beta2) g^2 (weight decay
    # 1e-5 folded into g), from zeros
    g = grads[0].astype(np.float64) + 1e-5 * weights[0].astype(np.float64)
    np.testing.assert_allclose(updater.states[0].flat["mean"], 0.1 * g, rtol=1e-5, atol=1e-8)


def test_large_weights_keep_their_own_staggered_arrays():
    big = (backends.STAGGER_MIN_BYTES // 4) + 1
    weights = [np.zeros(big, np.float32), np.zeros(5, np.float32)]
    updater = _updater()
    updater.update_many([0, 1], [np.ones_like(w) for w in weights], weights)
    mean = updater.states[0].flat["mean"]
    wanted = (weights[0].ctypes.data + backends.STAGGER_STEP_BYTES) % 4096
    assert mean.ctypes.data % 4096 == wanted  # made by backends.full as before


def test_an_arena_that_runs_short_grows():
    arena = backends.StateArena(10)
    first = arena.take(0, np.dtype(np.float32), 8, 0.0)
    second = arena.take(0, np.dtype(np.float32), 40, 1.5)  # more than is left
    assert second.size == 40 and np.all(second == 1.5) and np.all(first == 0.0)
    assert not np.shares_memory(first, second) and second.ctypes.data % 64 == 0
    other = arena.take(1, np.dtype(np.float64), 3, -2.0)  # another slot, another dtype
    assert other.dtype == np.float64 and np.all(other == -2.0)

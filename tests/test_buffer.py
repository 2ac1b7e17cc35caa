"""ParameterBuffer and the packed update path: the same bits as per-tensor updates."""

from __future__ import annotations

import numpy as np
import pytest

import mxopt
from mxopt.kernels import cpu as _cpu
from tests.cases import CASES, make_optimizer
from tests.parallel_tools import cut_everything, cut_nothing

SHAPES = {"a": (40, 30), "b": (30,), "c": (0,), "d": (7, 3, 2), "e": (1,)}


def _pair(case, **updater_options):
    """A per-tensor updater and a packed one, each with its own state."""
    states = mxopt.OptimizationState(4), mxopt.OptimizationState(4)
    updaters = [
        mxopt.get_updater(make_optimizer(case, {}, state), **updater_options) for state in states
    ]
    for state in states:
        state.begin_epoch()
    return states, updaters


def _per_tensor_step(updater, grads: dict, weights: dict) -> None:
    """Each weight's update on its own; for an optimizer whose step reads sums over all
    its weights (Prodigy), a single update_many of plain lists (calls of one weight each
    would be steps of their own)."""
    if updater.optimizer.step_sums_kernel is None:
        for k in grads:
            updater(k, grads[k], weights[k])
    else:
        updater.update_many(list(grads), list(grads.values()), [weights[k] for k in grads])


def _compare(single, packed, weights, buffer):
    for k in buffer.indices:
        np.testing.assert_array_equal(buffer.weights[k], weights[k], err_msg=k)
        assert packed.states[k].step == single.states[k].step
        for name, a in single.states[k].arrays.items():
            np.testing.assert_array_equal(packed.states[k].arrays[name], a, err_msg=f"{k} {name}")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_packed_updates_give_the_bits_of_per_tensor_updates(case):
    rng = np.random.default_rng(0)
    (s1, s2), (single, packed) = _pair(case, averaging=mxopt.EMA(0.9))
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    for _ in range(5):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
        s1.begin_batch()
        s2.begin_batch()
        _per_tensor_step(single, grads, weights)
        for k in SHAPES:
            buffer.grads[k][...] = grads[k]
        assert packed.update_buffer(buffer)
    _compare(single, packed, weights, buffer)
    with packed.averaged(buffer.weights):
        np.testing.assert_array_equal(buffer.weights["a"], single.averages["a"])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_buffer_of_vectors_only_gives_the_bits_of_per_tensor_updates(case):
    # Without a matrix, even Adafactor's state packs: its per-tensor RMS must stay per
    # tensor (it was taken over the whole run of vectors once).
    shapes = {"b": (30,), "f": (9,), "c": (0,), "e": (1,)}
    rng = np.random.default_rng(1)
    (s1, s2), (single, packed) = _pair(case)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    for _ in range(3):
        s1.begin_batch()
        s2.begin_batch()
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        _per_tensor_step(single, grads, weights)
        for k in shapes:
            buffer.grads[k][...] = grads[k]
        assert packed.update_buffer(buffer)
    _compare(single, packed, weights, buffer)


def test_update_many_with_a_buffers_lists_takes_the_packed_path(monkeypatch):
    calls = []
    real = _cpu.run
    monkeypatch.setattr(_cpu, "run", lambda *a: calls.append(a[0].name) or real(*a))
    state = mxopt.OptimizationState(2, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    shapes = {i: (10,) for i in range(200)}
    buffer = mxopt.ParameterBuffer(shapes)
    buffer.grad[...] = 1.0
    updater.update_many(buffer.indices, buffer.grad_list, buffer.weight_list)
    assert calls == ["adam"]  # one kernel call for 200 weights
    assert len(updater.states) == 200 and updater.states[7].step == 1


@pytest.mark.parametrize("name", ["LAMB", "LARS"])
def test_per_tensor_norms_take_segmented_kernels(name, monkeypatch):
    calls = []
    real = _cpu.run_segments
    monkeypatch.setattr(_cpu, "run_segments", lambda *a: calls.append(a[0].name) or real(*a))
    state = mxopt.OptimizationState(2, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.OPTIMIZERS[name](state=state))
    buffer = mxopt.ParameterBuffer({i: (64,) for i in range(50)})
    buffer.weight[...] = np.linspace(-1, 1, buffer.weight.size)
    buffer.grad[...] = 0.5
    updater.update_buffer(buffer)
    assert len(calls) == 2  # norms of every tensor, then the step of every tensor


def test_clipping_and_loss_scaling_match_update_many():
    rng = np.random.default_rng(1)
    case = next(c for c in CASES if c.optimizer == "ADAM")
    options = {"max_grad_norm": 0.3, "loss_scaler": None}
    (s1, s2), (lists, packed) = _pair(case, **options)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    for _ in range(4):
        grads = {k: rng.normal(size=s).astype(np.float32) * 5 for k, s in SHAPES.items()}
        s1.begin_batch()
        s2.begin_batch()
        lists.update_many(list(SHAPES), [grads[k] for k in SHAPES], [weights[k] for k in SHAPES])
        for k in SHAPES:
            buffer.grads[k][...] = grads[k]
        packed.update_buffer(buffer)
    _compare(lists, packed, weights, buffer)


def test_non_finite_gradients_in_a_buffer():
    state = mxopt.OptimizationState(1, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.SGD(momentum=0.9, state=state))
    buffer = mxopt.ParameterBuffer({"x": (3,), "y": (4,)})
    buffer.grad[...] = 1.0
    updater.update_buffer(buffer)
    before = buffer.weight.copy()
    buffer.grads["y"][2] = np.nan
    with pytest.raises(FloatingPointError, match="index 'y'"):
        updater.update_buffer(buffer)
    np.testing.assert_array_equal(buffer.weight, before)
    assert updater.states["x"].step == 1
    skipper = mxopt.get_updater(mxopt.SGD(state=state), nonfinite="skip")
    assert not skipper.update_buffer(buffer)
    np.testing.assert_array_equal(buffer.weight, before)


def test_weights_updated_on_their_own_still_match():
    rng = np.random.default_rng(2)
    case = next(c for c in CASES if c.optimizer == "ADAM")
    (s1, s2), (single, packed) = _pair(case)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    for step in range(4):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
        s1.begin_batch()
        s2.begin_batch()
        if step == 1:  # only "a" moves this step, in both
            single("a", grads["a"], weights["a"])
            packed("a", grads["a"], buffer.weights["a"])
            continue
        for k in SHAPES:
            single(k, grads[k], weights[k])
            buffer.grads[k][...] = grads[k]
        packed.update_buffer(buffer)
    _compare(single, packed, weights, buffer)


def test_packed_state_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(3)
    case = next(c for c in CASES if c.optimizer == "LAMB")
    (s1, s2), (reference, first) = _pair(case)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    ref_buffer = mxopt.ParameterBuffer.from_arrays(weights)
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    grads = [
        {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(6)
    ]
    for step, g in enumerate(grads):
        s1.begin_batch()
        for k in SHAPES:
            ref_buffer.grads[k][...] = g[k]
        reference.update_buffer(ref_buffer)
        if step < 3:
            s2.begin_batch()
            for k in SHAPES:
                buffer.grads[k][...] = g[k]
            first.update_buffer(buffer)
    first.save(tmp_path / "b.ckpt")
    resumed = mxopt.load_updater(tmp_path / "b.ckpt", weights=buffer.weights)
    for g in grads[3:]:
        resumed.optimizer.state.begin_batch()
        for k in SHAPES:
            buffer.grads[k][...] = g[k]
        resumed.update_buffer(buffer)
    np.testing.assert_array_equal(buffer.weight, ref_buffer.weight)


def test_parallel_packed_path_matches_serial(monkeypatch):
    rng = np.random.default_rng(4)
    shapes = {i: (3000,) for i in range(40)}
    results = []
    for cut in (cut_nothing, cut_everything):
        cut(monkeypatch)
        state = mxopt.OptimizationState(3, 1, 1, 1)
        updater = mxopt.get_updater(mxopt.LAMB(state=state))
        buffer = mxopt.ParameterBuffer(shapes)
        buffer.weight[...] = np.random.default_rng(5).normal(size=buffer.weight.size)
        for _ in range(3):
            buffer.grad[...] = rng.normal(size=buffer.grad.size)
            updater.update_buffer(buffer)
        results.append(buffer.weight.copy())
        rng = np.random.default_rng(4)
    np.testing.assert_array_equal(results[0].view(np.uint32), results[1].view(np.uint32))


def test_adafactor_falls_back_to_per_tensor_updates():
    rng = np.random.default_rng(6)
    case = next(c for c in CASES if c.optimizer == "Adafactor")
    (s1, s2), (single, packed) = _pair(case)
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    for _ in range(3):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
        s1.begin_batch()
        s2.begin_batch()
        for k in SHAPES:
            single(k, grads[k], weights[k])
            buffer.grads[k][...] = grads[k]
        packed.update_buffer(buffer)
    _compare(single, packed, weights, buffer)


def test_buffer_validation():
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        mxopt.ParameterBuffer({"a": (2,)}, dtype=np.int32)
    with pytest.raises(ValueError, match="shapes must be an"):
        mxopt.ParameterBuffer([("a", (2,))])
    with pytest.raises(ValueError, match="bad shape"):
        mxopt.ParameterBuffer({"a": (2, -1)})
    with pytest.raises(TypeError, match="ParameterBuffer"):
        mxopt.get_updater(mxopt.SGD()).update_buffer([np.zeros(2)])
    buffer = mxopt.ParameterBuffer({"a": (2, 3), "b": 4})
    assert buffer.weights["a"].shape == (2, 3) and buffer.weights["b"].shape == (4,)
    assert list(buffer.offsets) == [0, 6, 10] and np.shares_memory(
        buffer.weights["b"], buffer.weight
    )


def test_an_empty_buffer_updates_nothing_and_still_decides():
    buffer = mxopt.ParameterBuffer({})
    assert buffer.weight.shape == buffer.grad.shape == (0,) and buffer.indices == ()
    state = mxopt.OptimizationState(1, 1, 1, 1)
    scaler = mxopt.DynamicLossScaler(init_scale=8.0)
    updater = mxopt.get_updater(mxopt.ADAM(state=state), loss_scaler=scaler)
    assert updater.update_buffer(buffer) is True and updater.states == {}
    # a decision made elsewhere (a distributed step's global statistics) is taken and counted
    bad = mxopt.StepStatistics(0.0, 3, ["elsewhere"])
    assert updater.update_buffer(buffer, statistics=bad) is False
    assert scaler.scale == 4.0 and scaler.skipped == 1


def test_a_buffer_packs_into_given_flat_arrays():
    big_weight = np.arange(12, dtype=np.float64)
    big_grad = np.zeros(12)
    buffer = mxopt.ParameterBuffer({"a": (2, 2), "b": (3,)}, np.float64,
                                   weight=big_weight[3:10], grad=big_grad[3:10])  # fmt: skip
    assert np.shares_memory(buffer.weights["a"], big_weight)
    np.testing.assert_array_equal(buffer.weights["b"], [7.0, 8.0, 9.0])
    buffer.grads["b"][...] = 1.0
    state = mxopt.OptimizationState(1, 1, 1, 1)
    mxopt.get_updater(mxopt.SGD(lr=0.5, weight_decay=0.0, state=state)).update_buffer(buffer)
    # only the slice moved: w - lr * g (hand-computed)
    np.testing.assert_array_equal(big_weight, [0, 1, 2, 3, 4, 5, 6, 6.5, 7.5, 8.5, 10, 11])
    for weight, grad, match in [
        (np.zeros(6), np.zeros(7), "weight must be 1-D of 7 float64"),
        (np.zeros(7, np.float32), np.zeros(7), "weight must be 1-D of 7 float64"),
        (np.zeros((7, 1)), np.zeros(7), "1-D"),
        (np.zeros(14)[::2], np.zeros(7), "C-contiguous"),
        (np.zeros(7), [0.0] * 7, "grad must be a NumPy or CuPy array"),
    ]:
        with pytest.raises((TypeError, ValueError), match=match):
            mxopt.ParameterBuffer({"a": (2, 2), "b": (3,)}, np.float64, weight=weight, grad=grad)
    read_only = np.zeros(7)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        mxopt.ParameterBuffer({"a": (7,)}, np.float64, weight=read_only)


def test_large_state_arrays_start_at_other_offsets_in_a_page_than_the_weight():
    """Large state arrays are staggered within a 4096-byte page (against 4K aliasing):
    array k starts (k + 1) * 1088 bytes after the weight's offset, holds its start value,
    and the update is the same as with plainly allocated state."""
    n = (1 << 18) // 4  # the smallest staggered size for float32
    rng = np.random.default_rng(3)
    weight = rng.standard_normal(n, dtype=np.float32)
    grad = rng.standard_normal(n, dtype=np.float32)
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    state.begin_batch()
    optimizer = mxopt.ADAM(lr=1e-2, state=state)
    weight_state = mxopt.create_state(optimizer, "w", weight)
    offsets = [(a.ctypes.data - weight.ctypes.data) % 4096 for a in weight_state.flat.values()]
    assert offsets == [1088, 2176]
    for array in weight_state.flat.values():
        assert array.shape == (n,) and array.flags.c_contiguous and not array.any()

    plain = mxopt.create_state(optimizer, "p", weight)
    for name, array in plain.flat.items():
        plain.flat[name] = np.zeros_like(array)  # unstaggered copies of the same state
    expected = weight.copy()
    mxopt.update(optimizer, "p", expected, grad.copy(), plain)
    mxopt.update(optimizer, "w", weight, grad, weight_state)
    np.testing.assert_array_equal(weight, expected)

    small = mxopt.create_state(optimizer, "s", weight[:16].copy())
    assert all(a.base is None for a in small.flat.values())  # small arrays: no padding


def _running(optimizer, **options):
    state = mxopt.OptimizationState(1)
    state.begin_epoch()
    state.begin_batch()
    optimizer.state = state
    return mxopt.get_updater(optimizer, **options)


def test_a_frozen_index_gets_no_state_on_the_packed_path_as_on_the_others():
    for path in ("buffer", "many"):
        updater = _running(mxopt.ADAM())
        updater.set_groups([["a"], ["b"]])
        updater.freeze()
        buffer = mxopt.ParameterBuffer({"a": (3,), "b": (2,)})
        buffer.grad[:] = 1.0
        if path == "buffer":
            assert updater.update_buffer(buffer)
        else:
            assert updater.update_many(buffer.indices, list(buffer.grad_list),
                                       [w for w in buffer.weights.values()])  # fmt: skip
        assert {k: s.step for k, s in updater.states.items()} == {"b": 1}, path
        np.testing.assert_array_equal(buffer.weights["a"], 0.0)
    updater.unfreeze()  # then it joins, from a first step
    assert updater.update_buffer(buffer)
    assert {k: s.step for k, s in updater.states.items()} == {"a": 1, "b": 2}


def test_a_state_array_the_options_no_longer_use_is_kept_on_the_packed_path():
    # as update_many keeps it: momentum off, then on again, reuses the velocity; the
    # packed state is rebuilt in between (a step of the weight on its own)
    results = {}
    for paths in (("buffer", "many", "buffer", "buffer"), ("many",) * 4):
        updater = _running(mxopt.SGD(lr=0.1, momentum=0.9, weight_decay=0.0))
        buffer = mxopt.ParameterBuffer({"a": (3,)})
        buffer.grad[:] = 1.0
        for k, path in enumerate(paths):
            if path == "buffer":
                assert updater.update_buffer(buffer)
            else:
                grad = buffer.grads["a"].copy()
                assert updater.update_many(["a"], [grad], [buffer.weights["a"]])
            assert list(updater.states["a"].arrays) == ["velocity"]
            updater.optimizer.momentum = {0: 0.0, 2: 0.9}.get(k, updater.optimizer.momentum)
        results[paths[0]] = buffer.weights["a"].copy()
    # by hand: v1 = 1, w1 = -0.1; plain steps w2 = -0.2, w3 = -0.3; v4 = 0.9 * 1 + 1 = 1.9,
    # w4 = -0.3 - 0.19
    np.testing.assert_allclose(results["buffer"], -0.49, rtol=1e-6)
    np.testing.assert_array_equal(results["buffer"], results["many"])


def test_a_failed_packed_step_leaves_no_stale_group_behind():
    for fail in ("nonfinite", "read-only"):
        updater = _running(mxopt.ADAM(lr=0.1))
        buffer = mxopt.ParameterBuffer({"a": (2,)}, dtype=np.float64)
        buffer.grad[:] = [1.0, np.nan] if fail == "nonfinite" else 1.0
        buffer.weight.flags.writeable = fail != "read-only"
        with pytest.raises((FloatingPointError, ValueError)):
            updater.update_buffer(buffer)
        buffer.weight.flags.writeable = True
        assert updater.states == {}
        updater("a", np.ones(2), buffer.weights["a"])  # the index's real first step
        buffer.grad[:] = 1.0
        assert updater.update_buffer(buffer)
        assert updater.states["a"].step == 2, fail

"""Gradient accumulation: ``get_updater(optimizer, accumulate=k, accumulate_mode=...)``.

References: (a) a plain updater stepping once per k micro-batches on the float32 sum of
the micro-gradients (with ``multiplier=1/k`` for "mean", the factor the accumulating
step applies inside its kernels, so the arithmetic is the same and the weights agree bit
for bit), its OptimizationState advanced once per optimizer step; (b) optax's
``MultiSteps`` around ``optax.adam``.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

import mxopt
from mxopt import LearningRate, OptimizationState, get_updater, load_updater
from mxopt.core.state import OptimizerSteps
from mxopt.training.accumulation import ACCUMULATOR

K = 3
SHAPES = {"a": (3, 5), "b": (7,)}
EPOCH = 6  # micro-batches per epoch (two optimizer steps)


def make_optimizer(name: str, state: OptimizationState):
    if name == "sgd-momentum":
        return mxopt.SGD(lr=0.1, momentum=0.9, state=state)
    if name == "adam-warmup":  # a schedule of curr_iter: it must count optimizer steps
        schedule = LearningRate.WarmupCosine(peak_lr=0.05, warmup_steps=3, decay_steps=10)
        return mxopt.ADAM(lr_scheduler=schedule, state=state)
    if name == "nadam":  # per-weight memory, a momentum schedule of curr_iter
        return mxopt.Nadam(lr=0.01, state=state)
    raise AssertionError(name)


def micro_gradients(seed: int, count: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {i: rng.standard_normal(shape).astype(np.float32) for i, shape in SHAPES.items()}
        for _ in range(count)
    ]


def initial_weights(seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(shape).astype(np.float32) for i, shape in SHAPES.items()}


def advance(state: OptimizationState, position: int) -> None:
    """The loop's counters before the updates of ``position`` (0-based)."""
    if position % EPOCH == 0:
        state.begin_epoch()
    state.begin_batch()


def reference_run(name, grads, mode, k=K, batch_size=2):
    """A plain updater, one step per k micro-batches on their float32 sum."""
    state = OptimizationState(batch_size=batch_size)
    updater = get_updater(make_optimizer(name, state))
    weights = initial_weights()
    for step in range(len(grads) // k):
        advance_by = step * k  # the state counts optimizer steps: one epoch = EPOCH / k
        if advance_by % EPOCH == 0:
            state.begin_epoch()
        state.begin_batch()
        for index in SHAPES:
            total = np.zeros(SHAPES[index], np.float32)
            for g in grads[step * k : (step + 1) * k]:
                total += g[index]
            updater.update_one(index, total, weights[index],
                               multiplier=1.0 / k if mode == "mean" else 1.0)  # fmt: skip
    return weights, updater


def accumulated_run(name, grads, mode, path, k=K, batch_size=2):
    state = OptimizationState(batch_size=batch_size)
    updater = get_updater(make_optimizer(name, state), accumulate=k, accumulate_mode=mode)
    weights = initial_weights()
    buffer = None
    if path == "buffer":
        buffer = mxopt.ParameterBuffer(SHAPES)
        for index in SHAPES:
            buffer.weights[index][...] = weights[index]
        weights = buffer.weights
    applied = []
    for position, g in enumerate(grads):
        advance(state, position)
        if path == "one":
            results = {updater(index, g[index], weights[index]) for index in SHAPES}
            assert len(results) == 1
            applied.append(results.pop())
        elif path == "many":
            indices = list(SHAPES)
            applied.append(updater.update_many(indices, [g[i] for i in indices],
                                               [weights[i] for i in indices]))  # fmt: skip
        else:
            for index in SHAPES:
                buffer.grads[index][...] = g[index]
            applied.append(updater.update_buffer(buffer))
    return {i: np.array(w) for i, w in weights.items()}, updater, applied


@pytest.mark.parametrize("path", ["one", "many", "buffer"])
@pytest.mark.parametrize("mode", ["mean", "sum"])
@pytest.mark.parametrize("name", ["sgd-momentum", "adam-warmup", "nadam"])
def test_equals_one_step_per_k_micro_batches_on_their_sum(name, mode, path):
    grads = micro_gradients(0, 4 * K)
    expected, reference = reference_run(name, grads, mode)
    got, updater, applied = accumulated_run(name, grads, mode, path)
    assert applied == [False, False, True] * 4
    for index in SHAPES:
        np.testing.assert_array_equal(got[index], expected[index])  # bit for bit
        assert updater.states[index].step == reference.states[index].step == 4
        for array in reference.states[index].arrays:
            np.testing.assert_array_equal(updater.states[index].arrays[array],
                                          reference.states[index].arrays[array])  # fmt: skip
        assert updater.states[index].memory == reference.states[index].memory
        assert not updater.states[index].arrays[ACCUMULATOR].any()  # emptied after the step
    assert updater.micro_steps == {}


def test_schedules_read_optimizer_steps():
    seen = []

    def record(state):
        seen.append((state.curr_epoch, state.curr_batch, state.curr_iter))
        return 0.1

    state = OptimizationState(batch_size=1)
    updater = get_updater(mxopt.SGD(lr_scheduler=LearningRate.FromCallable(record),
                                    state=state), accumulate=K)  # fmt: skip
    w = np.zeros(4, np.float32)
    for position in range(4 * K):
        advance(state, position)
        updater(0, np.ones(4, np.float32), w)
    # epochs of 6 micro-batches: two optimizer steps each; read only in the applying calls
    assert sorted(set(seen)) == [(1, 1, 1), (1, 2, 2), (2, 1, 3), (2, 2, 4)]


def test_view_is_read_only_and_counts_up():
    state = OptimizationState(batch_size=8)
    state.begin_epoch()
    for _ in range(7):
        state.begin_batch()
    view = OptimizerSteps.of(state, 3)
    assert (view.batch_size, view.curr_epoch, view.curr_batch, view.curr_iter) == (8, 1, 3, 3)
    assert isinstance(view, OptimizationState) and view.scores is state.scores
    with pytest.raises(AttributeError, match="read-only"):
        view.curr_iter = 1
    with pytest.raises(AttributeError, match="read-only"):
        view.begin_batch()
    assert state.curr_iter == 7


def test_agrees_with_optax_multisteps():
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    k, lr, steps = 4, 1e-2, 60
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(11).astype(np.float32)
    grads = rng.standard_normal((steps, 11)).astype(np.float32)
    grads[8:12] = 0.0  # a whole window of zero gradients

    state = OptimizationState(batch_size=1)
    opt = mxopt.ADAM(lr=lr, weight_decay=0.0, epsilon_hat=False, state=state)
    updater = get_updater(opt, accumulate=k)
    w = w0.copy()

    multi = optax.MultiSteps(optax.adam(lr), every_k_schedule=k)
    params = jnp.asarray(w0)
    opt_state = multi.init(params)
    worst = 0.0
    state.begin_epoch()
    for g in grads:
        state.begin_batch()
        updater(0, g, w)
        updates, opt_state = multi.update(jnp.asarray(g), opt_state, params)
        params = optax.apply_updates(params, updates)
        worst = max(worst, float(np.max(np.abs(w - np.asarray(params)))))
    print(f"max |mxopt - optax.MultiSteps| over {steps} micro-steps: {worst:.3g}")
    assert worst < 1e-6
    assert updater.states[0].step == steps // k


def test_update_many_leaves_a_frozen_index_untouched():
    state = OptimizationState(batch_size=1)
    updater = get_updater(mxopt.ADAM(lr=0.1, state=state), accumulate=2)
    updater.set_groups([["frozen"], ["live"]])
    updater.freeze()
    weights = {"frozen": np.ones(3, np.float32), "live": np.ones(3, np.float32)}
    state.begin_epoch()
    results = []
    for _ in range(4):
        state.begin_batch()
        g = [np.full(3, 0.5, np.float32)] * 2
        results.append(updater.update_many(list(weights), g, list(weights.values())))
    assert results == [False, True, False, True]
    np.testing.assert_array_equal(weights["frozen"], np.ones(3, np.float32))
    assert "frozen" not in updater.states and "frozen" not in updater.micro_steps
    assert updater.states["live"].step == 2
    assert updater("frozen", np.ones(3, np.float32), weights["frozen"]) is False


def test_the_callers_gradient_is_not_modified():
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.SGD(lr=0.1, state=state), accumulate=2)
    w = np.zeros(5, np.float32)
    g = np.arange(5, dtype=np.float32)
    for _ in range(4):
        updater(0, g, w)
        np.testing.assert_array_equal(g, np.arange(5, dtype=np.float32))


def _window_state(updater, index):
    state = updater.states[index]
    return state.arrays[ACCUMULATOR].copy(), updater.micro_steps.get(index, 0), state.step


@pytest.mark.parametrize("call", ["one", "many"])
def test_nonfinite_raise_leaves_everything_unchanged(call):
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.ADAM(state=state), accumulate=3, nonfinite="raise")
    w = np.ones(4, np.float32)
    updater(0, np.ones(4, np.float32), w)
    before, w_before = _window_state(updater, 0), w.copy()
    bad = np.array([1.0, np.nan, 1.0, 1.0], np.float32)
    with pytest.raises(FloatingPointError, match="index 0"):
        if call == "one":
            updater(0, bad, w)
        else:
            updater.update_many([0], [bad], [w])
    after = _window_state(updater, 0)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:] and np.array_equal(w, w_before)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_a_failing_applying_step_leaves_the_window_unchanged():
    # finite micro-gradients whose float32 sum overflows: the step (not the micro-step)
    # raises, after the last gradient would have been added
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.SGD(lr=0.1, state=state), accumulate=2, nonfinite="raise")
    w = np.ones(2, np.float32)
    big = np.full(2, 3e38, np.float32)
    assert updater(0, big, w) is False
    before = _window_state(updater, 0)
    with pytest.raises(FloatingPointError):
        updater(0, big, w)
    after = _window_state(updater, 0)
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1:] == before[1:] == (1, 0) and np.array_equal(w, np.ones(2, np.float32))


def test_nonfinite_skip_drops_the_micro_step():
    grads = micro_gradients(5, 2 * K)
    bad = {i: np.full(s, np.inf, np.float32) for i, s in SHAPES.items()}
    expected, _ = reference_run("adam-warmup", grads, "mean")

    state = OptimizationState(batch_size=2)
    updater = get_updater(make_optimizer("adam-warmup", state), accumulate=K, nonfinite="skip")
    weights = initial_weights()
    position = 0
    for n, g in enumerate(grads[:2] + [bad] + grads[2:]):
        indices = list(SHAPES)
        if n != 2:  # the loop does not count a dropped micro-batch
            advance(state, position)
            position += 1
        result = updater.update_many(
            indices, [g[i] for i in indices], [weights[i] for i in indices]
        )
        assert result is (n in (3, 6))
    assert updater.skipped == len(SHAPES)
    for index in SHAPES:
        np.testing.assert_array_equal(weights[index], expected[index])


def test_nonfinite_apply_accumulates_the_values():
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.SGD(lr=0.1, state=state), accumulate=2, nonfinite="apply")
    w = np.ones(2, np.float32)
    assert updater(0, np.array([np.nan, 1.0], np.float32), w) is False
    assert updater(0, np.array([1.0, 1.0], np.float32), w) is True
    assert np.isnan(w[0]) and np.isfinite(w[1])


@pytest.mark.parametrize("how", ["file", "state_dict"])
def test_resume_in_the_middle_of_a_window_is_bit_identical(how, tmp_path):
    grads = micro_gradients(7, 4 * K)
    whole, _, _ = accumulated_run("nadam", grads, "mean", "one")

    state = OptimizationState(batch_size=2)
    updater = get_updater(make_optimizer("nadam", state), accumulate=K)
    weights = initial_weights()
    stop = K + 1  # one micro-step into the second window
    for position in range(stop):
        advance(state, position)
        for index in SHAPES:
            updater(index, grads[position][index], weights[index])
    assert updater.micro_steps == {"a": 1, "b": 1}
    if how == "file":
        updater.save(tmp_path / "ckpt.mxopt")
        resumed = load_updater(tmp_path / "ckpt.mxopt")
    else:
        resumed = get_updater(make_optimizer("nadam", OptimizationState(batch_size=5)))
        resumed.load_state_dict(updater.state_dict())
    assert (resumed.accumulate, resumed.accumulate_mode) == (K, "mean")
    assert resumed.micro_steps == {"a": 1, "b": 1}
    state = resumed.optimizer.state
    weights = {i: w.copy() for i, w in weights.items()}
    for position in range(stop, len(grads)):
        advance(state, position)
        for index in SHAPES:
            resumed(index, grads[position][index], weights[index])
    for index in SHAPES:
        np.testing.assert_array_equal(weights[index], whole[index])


def test_a_checkpoint_without_accumulation_still_loads():
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.ADAM(state=state))
    updater(0, np.ones(3, np.float32), np.ones(3, np.float32))
    d = updater.state_dict()
    assert (d["accumulate"], d["accumulate_mode"], d["micro_steps"]) == (1, "mean", [])
    for key in ("accumulate", "accumulate_mode", "micro_steps"):  # a file from before
        del d[key]
    fresh = get_updater(mxopt.ADAM(state=OptimizationState(batch_size=1)), accumulate=4)
    fresh.load_state_dict(d)
    assert fresh.accumulate == 1 and ACCUMULATOR not in fresh.states[0].flat


def test_float16_weights_accumulate_in_float32():
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.SGD(lr=1.0, weight_decay=0.0, state=state), accumulate=3,
                          accumulate_mode="sum")  # fmt: skip
    w = np.zeros(4, np.float16)
    g = np.full(4, 1e-4, np.float16)  # too small to change a float16 sum of 1.0 ...
    updater(0, np.ones(4, np.float16), w)
    updater(0, g, w)
    acc = updater.states[0].arrays[ACCUMULATOR]
    assert acc.dtype == np.float32
    np.testing.assert_array_equal(acc, np.float32(1.0) + np.float32(g[0]))  # ... but float32
    assert updater(0, g, w) is True
    expected = -(np.float32(1.0) + np.float32(g[0]) + np.float32(g[0]))
    np.testing.assert_array_equal(w, np.full(4, expected, np.float32).astype(np.float16))


def test_max_grad_norm_clips_the_accumulated_gradient():
    grads = micro_gradients(9, 2 * K)
    indices = list(SHAPES)

    state = OptimizationState(batch_size=1)
    reference = get_updater(mxopt.ADAM(lr=0.1, state=state), max_grad_norm=0.5)
    expected = initial_weights()
    state.begin_epoch()
    for step in range(2):
        state.begin_batch()
        totals = [sum(g[i] for g in grads[step * K : (step + 1) * K]) for i in indices]
        reference.update_many(indices, totals, [expected[i] for i in indices],
                              multiplier=1.0 / K)  # fmt: skip

    state = OptimizationState(batch_size=1)
    updater = get_updater(mxopt.ADAM(lr=0.1, state=state), max_grad_norm=0.5, accumulate=K)
    weights = initial_weights()
    state.begin_epoch()
    for g in grads:
        state.begin_batch()
        updater.update_many(indices, [g[i] for i in indices], [weights[i] for i in indices])
    for index in indices:
        np.testing.assert_array_equal(weights[index], expected[index])


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"accumulate": 0}, ValueError, "accumulate must be an integer >= 1"),
        ({"accumulate": 2.0}, TypeError, "accumulate must be an integer"),
        ({"accumulate": True}, TypeError, "accumulate must be an integer"),
        ({"accumulate_mode": "avg"}, ValueError, "accumulate_mode must be one of"),
        ({"accumulate": 2, "loss_scaler": mxopt.DynamicLossScaler()}, ValueError,
         "loss_scaler"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(options, error, match):
    with pytest.raises(error, match=match):
        get_updater(mxopt.SGD(state=OptimizationState(batch_size=1)), **options)


def test_step_arguments_are_refused_while_accumulating():
    state = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = get_updater(mxopt.SGD(state=state), accumulate=2)
    w, g = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="multiplier cannot be used with accumulate > 1"):
        updater.update_one(0, g, w, multiplier=0.5)
    with pytest.raises(ValueError, match="statistics"):
        updater.update_many([0], [g], [w], statistics=mxopt.training.engine.StepStatistics())
    with pytest.raises(TypeError, match=r"index must be hashable, got \[1\]"):
        updater([1], g, w)
    updater(0, g, w)
    with pytest.raises(ValueError, match="different points of their accumulation windows"):
        updater.update_many([0, 1], [g, g], [w, np.zeros(3, np.float32)])
    assert updater.micro_steps == {0: 1} and 1 not in updater.states


def test_accumulate_1_is_the_plain_updater():
    grads = micro_gradients(2, 4)
    runs = []
    for options in ({}, {"accumulate": 1}):
        state = OptimizationState(batch_size=2)
        updater = get_updater(make_optimizer("adam-warmup", state), **options)
        weights = initial_weights()
        for position, g in enumerate(grads):
            advance(state, position)
            for index in SHAPES:
                assert updater(index, g[index], weights[index]) is True
        assert all(ACCUMULATOR not in s.flat for s in updater.states.values())
        runs.append(weights)
    for index in SHAPES:
        np.testing.assert_array_equal(runs[0][index], runs[1][index])


def test_ceil_counts():
    state = OptimizationState(batch_size=1)
    for n in range(1, 10):
        state.begin_batch()
        assert OptimizerSteps.of(state, 4).curr_iter == math.ceil(n / 4)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")
@pytest.mark.parametrize("path", ["one", "many"])
def test_the_gpu_path_gives_the_cpu_bits(path, monkeypatch):
    """On the fake CuPy of tests/fake_cupy (mxopt's CUDA kernels built with g++)."""
    from mxopt.kernels import cuda as _cuda
    from tests import fake_cupy

    grads = micro_gradients(11, 2 * K)
    expected, _, _ = accumulated_run("adam-warmup", grads, "mean", path)
    cupy = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(_cuda, "_modules", {})
    monkeypatch.setattr(_cuda, "_launch_limits", {})
    state = OptimizationState(batch_size=2)
    updater = get_updater(make_optimizer("adam-warmup", state), accumulate=K)
    weights = {i: cupy.asarray(w) for i, w in initial_weights().items()}
    indices = list(SHAPES)
    for position, g in enumerate(grads):
        advance(state, position)
        g = {i: cupy.asarray(a) for i, a in g.items()}
        if path == "one":
            for index in indices:
                updater(index, g[index], weights[index])
        else:
            updater.update_many(indices, [g[i] for i in indices], [weights[i] for i in indices])
    for index in indices:
        assert isinstance(updater.states[index].flat[ACCUMULATOR], fake_cupy.ndarray)
        np.testing.assert_array_equal(weights[index].get(), expected[index])

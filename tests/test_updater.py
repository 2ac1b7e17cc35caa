"""get_updater, create_state, update, normalized_gradient and the checks on arrays."""

from __future__ import annotations

import math

import ml_dtypes  # also makes "bfloat16" and "float8_e4m3fn" NumPy dtype names
import numpy as np
import pytest

import mxopt
from mxopt import LearningRate, Momentum, OptimizationState
from tests.reference import adam as adam_oracle


def running_state(batch_size=2):
    state = OptimizationState(batch_size)
    state.begin_epoch()
    state.begin_batch()
    return state


# ------------------------------------------------------------------ normalized_gradient


def test_normalized_gradient_by_hand():
    state = OptimizationState(batch_size=4)
    opts = mxopt.SGD(grad_clip=1.0, weight_decay=0.5, grad_scale=2.0).opts
    weight = np.array([1.0, -2.0, 4.0, 0.0])
    grad = np.array([1.0, 8.0, -8.0, 0.5])
    # grad * 2 / 4 = [0.5, 4, -4, 0.25] -> clip 1 -> [0.5, 1, -1, 0.25] -> + 0.5 w
    expected = np.array([1.0, 0.0, 1.0, 0.25])
    result = mxopt.normalized_gradient(opts, state, weight, grad)
    np.testing.assert_array_equal(result, expected)
    assert result is not grad
    np.testing.assert_array_equal(grad, [1.0, 8.0, -8.0, 0.5])


def test_normalized_gradient_clips_only_when_positive_and_never_clips_decay():
    state = OptimizationState(batch_size=1)
    weight = np.array([100.0], np.float32)
    grad = np.array([50.0], np.float32)
    no_clip = mxopt.ADAM(grad_clip=0.0, weight_decay=0.0).opts
    assert mxopt.normalized_gradient(no_clip, state, weight, grad)[0] == 50.0
    clip_and_decay = mxopt.ADAM(grad_clip=1.0, weight_decay=0.1).opts
    result = mxopt.normalized_gradient(clip_and_decay, state, weight, grad)
    assert result.dtype == np.float32
    assert result[0] == pytest.approx(1.0 + 10.0)


def test_normalized_gradient_needs_a_state():
    with pytest.raises(RuntimeError, match="state"):
        mxopt.normalized_gradient(mxopt.SGD().opts, None, np.ones(2), np.ones(2))


# ------------------------------------------------------------------ updater and state


def test_each_index_gets_its_own_state_created_once(monkeypatch):
    created = []
    real = mxopt.training.updater.create_state

    def counting(optimizer, index, weight, **kwargs):
        created.append(index)
        return real(optimizer, index, weight, **kwargs)

    monkeypatch.setattr(mxopt.training.updater, "create_state", counting)
    state = running_state()
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    weights = {key: np.ones(4, np.float32) for key in (0, "fc1_weight", ("layer", 2))}
    for _ in range(3):
        for key, weight in weights.items():
            updater(key, np.full(4, 0.1, np.float32), weight)
    assert created == [0, "fc1_weight", ("layer", 2)]
    assert set(updater.states) == set(weights)
    assert all(s.step == 3 for s in updater.states.values())
    means = [s.arrays["mean"] for s in updater.states.values()]
    assert means[0] is not means[1]
    # Identical inputs through separate state give identical results.
    np.testing.assert_array_equal(weights[0], weights["fc1_weight"])


def test_indices_are_independent():
    state = running_state()
    updater = mxopt.get_updater(mxopt.SGD(momentum=0.9, state=state))
    a, b = np.ones(3, np.float32), np.ones(3, np.float32)
    updater("a", np.ones(3, np.float32), a)
    updater("a", np.ones(3, np.float32), a)
    updater("b", np.ones(3, np.float32), b)
    assert updater.states["a"].step == 2 and updater.states["b"].step == 1
    assert not np.array_equal(a, b)


def test_unhashable_index_is_rejected():
    updater = mxopt.get_updater(mxopt.SGD(state=running_state()))
    with pytest.raises(TypeError, match="hashable"):
        updater([1, 2], np.ones(2, np.float32), np.ones(2, np.float32))


def test_create_state_and_update_functions():
    state = running_state(batch_size=1)
    optimizer = mxopt.SGD(lr=0.5, momentum=0.5, weight_decay=0.0, state=state)
    weight = np.array([1.0, 2.0])
    wstate = mxopt.create_state(optimizer, 7, weight)
    assert list(wstate.arrays) == ["velocity"] and wstate.step == 0
    mxopt.update(optimizer, 7, weight, np.array([1.0, -1.0]), wstate)  # weight before grad
    np.testing.assert_allclose(weight, [0.5, 2.5])
    np.testing.assert_allclose(wstate.arrays["velocity"], [-0.5, 0.5])
    mxopt.update(optimizer, 7, weight, np.array([1.0, -1.0]), wstate)
    # v = 0.5 * -0.5 - 0.5 = -0.75
    np.testing.assert_allclose(weight, [-0.25, 3.25])
    assert wstate.step == 2


def test_momentum_buffer_exists_unless_the_scheduler_is_null():
    weight = np.ones(2, np.float32)
    states = {
        "default": mxopt.create_state(mxopt.SGD(), 0, weight),
        "momentum": mxopt.create_state(mxopt.SGD(momentum=0.9), 0, weight),
        "fixed0": mxopt.create_state(mxopt.SGD(momentum_scheduler=Momentum.Fixed(0.0)), 0, weight),
        "null": mxopt.create_state(
            mxopt.SGD(momentum=0.9, momentum_scheduler=Momentum.Null()), 0, weight
        ),
    }
    assert {k: list(s.arrays) for k, s in states.items()} == {
        "default": [],
        "momentum": ["velocity"],
        "fixed0": ["velocity"],
        "null": [],
    }


def test_state_can_be_assigned_after_construction():
    optimizer = mxopt.SGD()
    updater = mxopt.get_updater(optimizer)
    optimizer.state = running_state()
    weight = np.ones(2, np.float32)
    updater(0, np.ones(2, np.float32), weight)
    assert (weight < 1).all()
    with pytest.raises(TypeError, match="OptimizationState"):
        optimizer.state = {"batch_size": 2}


def test_adam_reads_its_scheduler_at_every_update():
    # MXNet.jl froze ADAM's rate at the first update; mxopt follows the schedule.
    state = OptimizationState(batch_size=1)
    scheduler = LearningRate.Exp(0.1, gamma=0.5, decay_on_iteration=True)
    optimizer = mxopt.ADAM(lr_scheduler=scheduler, weight_decay=0.0, state=state)
    updater = mxopt.get_updater(optimizer)
    weight = np.array([1.0, -1.0])
    grads = [np.array([0.5, 2.0]), np.array([-1.0, 0.25]), np.array([0.3, 0.3])]
    followed, frozen = weight.copy(), weight.copy()
    ref_followed, ref_frozen = adam_oracle.init(2, None), adam_oracle.init(2, None)
    state.begin_epoch()
    for k, grad in enumerate(grads, start=1):
        state.begin_batch()
        updater(0, grad, weight)
        common = dict(
            beta1=0.9,
            beta2=0.999,
            epsilon=1e-8,
            grad_scale=1.0,
            grad_clip=0.0,
            weight_decay=0.0,
            batch_size=1,
            k=k,
        )
        import types

        adam_oracle.step(
            followed, grad, ref_followed, types.SimpleNamespace(lr=0.1 * 0.5**k, **common)
        )
        adam_oracle.step(frozen, grad, ref_frozen, types.SimpleNamespace(lr=0.1 * 0.5, **common))
    np.testing.assert_allclose(weight, followed, rtol=1e-13)
    assert not np.allclose(weight, frozen, rtol=1e-3)


# ------------------------------------------------------------------ bad input


class FakeCupyArray:
    """Looks like a cupy.ndarray to the type check, without CuPy."""


FakeCupyArray.__module__ = "cupy"
FakeCupyArray.__name__ = "ndarray"
FakeCupyArray.__qualname__ = "ndarray"


def _bad_calls():
    f32 = np.float32
    return {
        "grad shape": (np.ones(4, f32), np.ones(5, f32), ValueError, "grad shape \\(5,\\)"),
        "grad transposed": (np.ones((2, 3), f32), np.ones((3, 2), f32), ValueError, "shape"),
        "grad dtype": (np.ones(4, f32), np.ones(4, np.float64), TypeError, "grad dtype float64"),
        "integer weight": (np.ones(4, np.int32), np.ones(4, np.int32), TypeError, "int32"),
        "float8 weight": (
            np.ones(4, "float8_e4m3fn"),
            np.ones(4, "float8_e4m3fn"),
            TypeError,
            "float8_e4m3fn.*float16 or bfloat16",
        ),  # fmt: skip
        "float16 grad of a bfloat16 weight": (
            np.ones(4, "bfloat16"),
            np.ones(4, np.float16),
            TypeError,
            "grad dtype float16",
        ),
        "list grad": (np.ones(4, f32), [1.0] * 4, TypeError, "grad must be a numpy"),
        "list weight": ([1.0] * 4, np.ones(4, f32), TypeError, "weight must be a numpy"),
        "mixed backends": (np.ones(4, f32), FakeCupyArray(), TypeError, "same backend"),
        "same array": ("same", None, ValueError, "same array"),
        "non-contiguous weight": (
            np.ones(8, f32)[::2],
            np.ones(4, f32),
            ValueError,
            "not C-contiguous",
        ),
        "fortran weight": (
            np.asfortranarray(np.ones((3, 4), f32)),
            np.ones((3, 4), f32),
            ValueError,
            "not C-contiguous",
        ),
        "read-only weight": ("readonly", np.ones(4, f32), ValueError, "read-only"),
    }


@pytest.mark.parametrize("name", _bad_calls())
@pytest.mark.parametrize("first_call", [True, False], ids=["new-index", "existing-index"])
@pytest.mark.parametrize("make", [lambda: mxopt.SGD(momentum=0.9), mxopt.ADAM], ids=["sgd", "adam"])
def test_bad_arrays_raise_naming_the_index_and_change_nothing(name, first_call, make):
    weight, grad, error, pattern = _bad_calls()[name]
    if isinstance(weight, str) and weight == "same":
        weight = np.ones(4, np.float32)
        grad = weight
    elif isinstance(weight, str) and weight == "readonly":
        weight = np.ones(4, np.float32)
        weight.flags.writeable = False
    updater = mxopt.get_updater(make())
    updater.optimizer.state = running_state()
    shape = getattr(weight, "shape", (4,))
    if not first_call:
        supported = (np.float32, np.float64, np.float16, ml_dtypes.bfloat16)
        if isinstance(weight, np.ndarray) and weight.dtype in supported:
            dtype = weight.dtype
        else:
            dtype = np.float32
        good = np.ones(shape, dtype)
        updater("layer1", np.ones(shape, dtype), good)
        updater.states["layer1"]  # exists
    before_states = {
        k: (s.step, {n: a.copy() for n, a in s.arrays.items()}) for k, s in updater.states.items()
    }
    before_weight = np.array(weight, copy=True) if not isinstance(weight, list) else list(weight)
    with pytest.raises(error, match=pattern) as raised:
        updater("layer1", grad, weight)
    assert "'layer1'" in str(raised.value)
    if isinstance(weight, np.ndarray):
        np.testing.assert_array_equal(weight, before_weight)
    after_states = {k: (s.step, s.arrays) for k, s in updater.states.items()}
    assert after_states.keys() == before_states.keys()
    for key, (step, arrays) in before_states.items():
        assert after_states[key][0] == step
        for n, a in arrays.items():
            np.testing.assert_array_equal(after_states[key][1][n], a)


def test_grad_whose_shape_changed_for_an_existing_index():
    updater = mxopt.get_updater(mxopt.ADAM(state=running_state()))
    updater(3, np.ones(6, np.float32), np.ones(6, np.float32))
    other = np.ones((2, 3), np.float32)
    with pytest.raises(
        ValueError,
        match="index 3: the state of this index was created for a weight of shape \\(6,\\)",
    ):
        updater(3, np.ones((2, 3), np.float32), other)
    np.testing.assert_array_equal(other, 1)
    assert updater.states[3].step == 1


def test_changed_options_that_need_other_state_are_a_clear_error():
    optimizer = mxopt.SGD(state=running_state())
    updater = mxopt.get_updater(optimizer)
    weight = np.ones(3, np.float32)
    updater(0, np.ones(3, np.float32), weight)
    optimizer.opts.momentum = 0.9
    before = weight.copy()
    with pytest.raises(ValueError, match="sgd_momentum"):
        updater(0, np.ones(3, np.float32), weight)
    np.testing.assert_array_equal(weight, before)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_gradient_raises_and_changes_nothing(bad):
    updater = mxopt.get_updater(mxopt.ADAM(state=running_state()))
    weight = np.linspace(0, 1, 9, dtype=np.float32)
    updater(0, np.ones(9, np.float32), weight)
    before = weight.copy()
    mean = updater.states[0].arrays["mean"].copy()
    grad = np.ones(9, np.float32)
    grad[4] = bad
    grad[7] = bad
    with pytest.raises(FloatingPointError, match="index 0: grad holds 2 NaN or infinite"):
        updater(0, grad, weight)
    np.testing.assert_array_equal(weight, before)
    np.testing.assert_array_equal(updater.states[0].arrays["mean"], mean)
    assert updater.states[0].step == 1


# ------------------------------------------------------------------ unusual but valid arrays


def test_strided_gradient_gives_the_same_result_as_a_contiguous_one():
    state = running_state()
    base = np.arange(24, dtype=np.float32).reshape(4, 6) / 10
    a, b = np.ones((4, 3), np.float32), np.ones((4, 3), np.float32)
    mxopt.get_updater(mxopt.ADAM(state=state))(0, base[:, ::2], a)
    mxopt.get_updater(mxopt.ADAM(state=state))(0, np.ascontiguousarray(base[:, ::2]), b)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, 1)


def test_fortran_ordered_gradient_follows_the_weight_layout():
    state = running_state(batch_size=1)
    grad = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    weight = np.zeros((2, 3))
    mxopt.get_updater(mxopt.SGD(lr=1.0, weight_decay=0.0, state=state))(0, grad, weight)
    np.testing.assert_array_equal(weight, -grad)


def test_memmap_and_zero_dimensional_weights(tmp_path):
    state = running_state(batch_size=1)
    updater = mxopt.get_updater(mxopt.SGD(lr=1.0, weight_decay=0.0, state=state))
    mapped = np.memmap(tmp_path / "w.bin", dtype=np.float32, mode="w+", shape=(5,))
    mapped[:] = 1
    updater("m", np.full(5, 0.25, np.float32), mapped)
    np.testing.assert_array_equal(np.asarray(mapped), 0.75)
    scalar = np.array(2.0)
    updater("s", np.array(0.5), scalar)
    assert scalar == 1.5


def test_options_set_on_the_optimizer_go_to_its_options_checked():
    optimizer = mxopt.ADAM(lr=0.1, state=running_state())
    optimizer.lr = 0.5  # not a plain attribute that every update would ignore
    assert optimizer.opts.lr == 0.5 and optimizer.lr == 0.5
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got nan"):
        optimizer.lr = float("nan")
    assert optimizer.opts.lr == 0.5
    updater = mxopt.get_updater(optimizer)
    weight = np.ones(3, np.float32)
    updater(0, np.ones(3, np.float32), weight)
    optimizer.lr = 0.25  # seen by the next step, like opts.lr
    before = weight.copy()
    updater(0, np.zeros(3, np.float32), weight)  # zero gradient: only the moments decay
    reference = mxopt.get_updater(mxopt.ADAM(lr=0.5, state=running_state()))
    other = np.ones(3, np.float32)
    reference(0, np.ones(3, np.float32), other)
    reference.optimizer.opts.lr = 0.25
    reference(0, np.zeros(3, np.float32), other)
    np.testing.assert_array_equal(weight, other)
    assert not np.array_equal(weight, before)
    with pytest.raises(AttributeError, match="'ADAM' object has no attribute 'learning_rat'"):
        optimizer.learning_rat  # noqa: B018


@pytest.mark.parametrize("index", [float("nan"), ("layer", float("nan"))], ids=["nan", "tuple"])
def test_a_nan_index_is_refused(index):
    updater = mxopt.get_updater(mxopt.SGD(state=running_state()))
    weight = np.ones(3, np.float32)
    grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="holds a NaN, which never equals itself"):
        updater(index, grad, weight)
    with pytest.raises(ValueError, match="holds a NaN, which never equals itself"):
        updater.update_many([index], [grad], [weight])
    assert updater.states == {}
    np.testing.assert_array_equal(weight, np.ones(3, np.float32))


@pytest.mark.parametrize("argument", ["multiplier", "lr_scale"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "0.5", None])
def test_a_bad_gradient_or_learning_rate_factor_is_refused_before_anything_is_written(
    argument, bad
):
    # a NaN, infinite or negative factor would write NaN into the weights or reverse the
    # step; it must be refused with its name and value, the weight and state untouched
    state = OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    weight = np.linspace(-1, 1, 8, dtype=np.float32)
    grad = np.full(8, 0.5, np.float32)
    updater(0, grad, weight)
    before = weight.copy(), updater.states[0].arrays["mean"].copy(), updater.states[0].step
    error = TypeError if isinstance(bad, str) or bad is None else ValueError
    for index in (0, 1):  # an existing state and a new one
        with pytest.raises(error, match=f"{argument} must be a .*number >= 0, got"):
            updater.update_one(index, grad, weight, **{argument: bad})
    np.testing.assert_array_equal(weight, before[0])
    np.testing.assert_array_equal(updater.states[0].arrays["mean"], before[1])
    assert updater.states[0].step == before[2] and 1 not in updater.states
    if argument == "multiplier":
        with pytest.raises(error, match="multiplier must be"):
            updater.update_many([0], [grad], [weight], multiplier=bad)
        np.testing.assert_array_equal(weight, before[0])


def test_numpy_factors_are_taken_as_the_floats_they_hold():
    # Thinc and user code may pass NumPy scalars: the same step as with Python floats
    weights = []
    for factor in (0.25, np.float32(0.25)):
        state = OptimizationState(batch_size=1)
        updater = mxopt.get_updater(mxopt.ADAM(state=state))
        weight = np.linspace(-1, 1, 8, dtype=np.float32)
        for _ in range(3):
            updater.update_one(0, np.full(8, 0.5, np.float32), weight, multiplier=factor,
                               lr_scale=factor)  # fmt: skip
        weights.append(weight)
    assert weights[0].tobytes() == weights[1].tobytes()


@pytest.mark.parametrize("bad", ["x", 3, (0.0, 0)])
def test_statistics_that_are_not_step_statistics_are_refused(bad):
    updater = mxopt.get_updater(mxopt.ADAM(state=OptimizationState(batch_size=1)))
    weight = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="statistics must be None or a StepStatistics, got"):
        updater.update_many([0], [np.ones(4, np.float32)], [weight], statistics=bad)
    assert updater.states == {} and (weight == 1).all()

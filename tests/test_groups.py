"""Per-index multipliers, name rules, fastai groups, freezing."""

from __future__ import annotations

import numpy as np
import pytest

import mxopt
from mxopt.training.groups import mxnet_wd_mult
from tests.cases import CASES, make_optimizer


def running(batch_size=1):
    state = mxopt.OptimizationState(batch_size)
    state.begin_epoch()
    state.begin_batch()
    return state


def test_lr_mult_scales_the_learning_rate_exactly():
    state = running()
    updater = mxopt.get_updater(mxopt.SGD(lr=0.4, weight_decay=0.0, state=state))
    updater.set_lr_mult({"slow": 0.25})
    fast, slow = np.ones(3), np.ones(3)
    updater("fast", np.ones(3), fast)
    updater("slow", np.ones(3), slow)
    np.testing.assert_array_equal(fast, 1 - 0.4)
    np.testing.assert_array_equal(slow, 1 - 0.4 * 0.25)


def test_wd_mult_patterns_and_exact_keys():
    state = running()
    updater = mxopt.get_updater(mxopt.SGD(lr=1.0, weight_decay=0.5, state=state))
    updater.set_wd_mult({"*bias": 0.0, "fc1_bias": 2.0})  # the exact key wins
    weights = {n: np.ones(2) for n in ("fc1_weight", "fc1_bias", "fc2_bias")}
    for name, weight in weights.items():
        updater(name, np.zeros(2), weight)
    np.testing.assert_array_equal(weights["fc1_weight"], 1 - 0.5)
    np.testing.assert_array_equal(weights["fc1_bias"], 1 - 1.0)
    np.testing.assert_array_equal(weights["fc2_bias"], 1.0)


def test_decoupled_decay_and_lamb_follow_wd_mult():
    for optimizer in (mxopt.AdamW(lr=0.1, weight_decay=0.5), mxopt.LAMB(weight_decay=0.5)):
        state = running()
        optimizer.state = state
        updater = mxopt.get_updater(optimizer)
        updater.exclude_from_weight_decay()
        with_decay, without = np.full(4, 2.0), np.full(4, 2.0)
        updater("layer_weight", np.zeros(4), with_decay)
        updater("layer_bias", np.zeros(4), without)
        assert (with_decay < 2.0).all()
        np.testing.assert_array_equal(without, 2.0)


def test_mxnet_default_rule():
    names = ["fc1_weight", "fc1_bias", "bn_gamma", "bn_beta", "bn_moving_mean"]
    assert mxnet_wd_mult(names) == {"fc1_bias": 0.0, "bn_beta": 0.0, "bn_moving_mean": 0.0}


def test_discriminative_learning_rates_like_fastai():
    updater = mxopt.get_updater(mxopt.SGD(lr=1e-2))
    updater.set_groups([["a"], ["b"], ["c"]])
    rates = updater.discriminative_lr(slice(1e-4, 1e-2))
    assert rates == pytest.approx([1e-4, 1e-3, 1e-2])
    assert [updater.groups.resolve(i)[0] for i in "abc"] == pytest.approx([1e-2, 1e-1, 1.0])
    assert updater.discriminative_lr(slice(1e-2)) == pytest.approx([1e-3, 1e-3, 1e-2])
    assert updater.discriminative_lr([1.0, 2.0, 4.0], base_lr=4.0) == [1.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="2 rates for 3 groups"):
        updater.discriminative_lr([1.0, 2.0])


def test_freezing_leaves_weights_and_state_untouched():
    state = running()
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    updater.set_groups([["body"], ["head"]])
    body, head = np.ones(3), np.ones(3)
    updater.freeze()
    updater("body", np.ones(3), body)
    updater("head", np.ones(3), head)
    np.testing.assert_array_equal(body, 1.0)
    assert "body" not in updater.states and updater.states["head"].step == 1
    updater.unfreeze()
    state.begin_batch()
    updater.update_many(["body", "head"], [np.ones(3)] * 2, [body, head])
    assert updater.states["body"].step == 1 and updater.states["head"].step == 2
    updater.freeze_to(2)  # both groups frozen
    state.begin_batch()
    before = (body.copy(), head.copy())
    updater.update_many(["body", "head"], [np.ones(3)] * 2, [body, head])
    np.testing.assert_array_equal(body, before[0])
    np.testing.assert_array_equal(head, before[1])


@pytest.mark.parametrize("case", CASES[::3], ids=[c.id for c in CASES[::3]])
def test_packed_buffers_follow_groups_with_the_bits_of_single_updates(case):
    shapes = {"w1": (6, 4), "b1": (4,), "w2": (4, 3), "b2": (3,), "w3": (3, 2)}
    rng = np.random.default_rng(0)
    states = mxopt.OptimizationState(2), mxopt.OptimizationState(2)
    single, packed = (mxopt.get_updater(make_optimizer(case, {}, s)) for s in states)
    for updater in (single, packed):
        updater.set_groups([["w1", "b1"], ["w2", "b2"], ["w3"]])
        updater.discriminative_lr(slice(1e-3, 1e-1))
        updater.exclude_from_weight_decay(["b*"])
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    buffer = mxopt.ParameterBuffer.from_arrays(weights)
    for s in states:
        s.begin_epoch()
    for step in range(6):
        if step == 2:
            for updater in (single, packed):
                updater.freeze_to(1)
        if step == 4:
            for updater in (single, packed):
                updater.unfreeze()
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        for s in states:
            s.begin_batch()
        single.update_many(list(shapes), [grads[k] for k in shapes], [weights[k] for k in shapes])
        for k in shapes:
            buffer.grads[k][...] = grads[k]
        packed.update_buffer(buffer)
    for k in shapes:
        np.testing.assert_array_equal(buffer.weights[k], weights[k], err_msg=k)
        assert packed.states[k].step == single.states[k].step


def test_groups_are_saved_in_checkpoints(tmp_path):
    updater = mxopt.get_updater(mxopt.SGD(state=running()))
    updater.set_groups([["a", ("b", 1)], ["c"]])
    updater.set_lr_mult({"a": 0.5, "*x*": 2.0})
    updater.exclude_from_weight_decay()
    updater.freeze()
    updater("c", np.ones(2), np.ones(2))
    updater.save(tmp_path / "g.ckpt")
    loaded = mxopt.load_updater(tmp_path / "g.ckpt")
    for attribute in ("lr_mult", "wd_mult", "groups", "frozen"):
        assert getattr(loaded.groups, attribute) == getattr(updater.groups, attribute)


def test_invalid_groups_and_multipliers():
    updater = mxopt.get_updater(mxopt.SGD())
    with pytest.raises(ValueError, match="lr_mult\\['a'\\] must be a finite number >= 0"):
        updater.set_lr_mult({"a": -1.0})
    with pytest.raises(TypeError, match="mapping"):
        updater.set_wd_mult([0.0])
    with pytest.raises(ValueError, match="more than one group"):
        updater.set_groups([["a"], ["a"]])
    with pytest.raises(ValueError, match="no groups"):
        updater.freeze()

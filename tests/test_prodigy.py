"""Prodigy's one step size per step: sums over every weight the step updates (the generic
tests check single-index calls, where each weight is a step of its own, against
tests/reference/prodigy.py, and the packed path against update_many)."""

import math
import types

import numpy as np
import pytest

import mxopt
from tests.reference import prodigy as oracle

SHAPES = {"a": (6, 4), "b": (5,), "c": (1,)}


def _inputs(k, **options):
    x = dict(lr=1.0, beta1=0.9, beta2=0.999, beta3=0.0, epsilon=1e-8, d0=1e-3, d_coef=1.0,
             growth_rate=None, weight_decay=0.0, safeguard_warmup=False, bias_correction=True,
             grad_scale=1.0, batch_size=1, grad_clip=0.0, maximize=False, k=k)  # fmt: skip
    return types.SimpleNamespace(**{**x, **options})


@pytest.mark.parametrize("options", [{}, {"weight_decay": 0.1, "growth_rate": 1.2}])
def test_update_many_is_the_oracle_on_all_weights_at_once(options):
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    flat = np.concatenate([w.reshape(-1) for w in weights.values()])
    reference = oracle.init(flat.shape, None)
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.Prodigy(d0=1e-3, bias_correction=True, **options,
                                              state=state))  # fmt: skip
    state.begin_epoch()
    for k in range(1, 9):
        # the gradient of |w|^2 / 2 with noise: d grows as the weights move downhill
        grads = {key: weights[key] + 0.1 * rng.normal(size=s) for key, s in SHAPES.items()}
        if k == 3:
            grads = {key: np.zeros(s) for key, s in SHAPES.items()}
        state.begin_batch()
        assert updater.update_many(list(grads), list(grads.values()), list(weights.values()))
        oracle.step(flat, np.concatenate([g.reshape(-1) for g in grads.values()]), reference,
                    _inputs(k, **options))  # fmt: skip
        mine = np.concatenate([w.reshape(-1) for w in weights.values()])
        np.testing.assert_allclose(mine, flat, rtol=1e-12, atol=1e-15)
    ds = {updater.states[key].memory["d"] for key in SHAPES}
    assert len(ds) == 1 and ds.pop() == pytest.approx(reference.d, rel=1e-12)
    assert reference.d > 1e-3  # d has grown from d0


def test_single_calls_learn_a_step_size_per_weight():
    rng = np.random.default_rng(1)
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.Prodigy(d0=1e-3, state=state))
    a, b = rng.normal(size=50), rng.normal(size=3)
    state.begin_epoch()
    for _ in range(5):
        state.begin_batch()
        updater("a", rng.normal(size=50), a)
        updater("b", 10 * rng.normal(size=3), b)
    assert updater.states["a"].memory["d"] != updater.states["b"].memory["d"]


def test_only_zero_gradients_keep_d():
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.Prodigy(d0=1e-3, state=state))
    w = np.ones(4)
    state.begin_epoch()
    state.begin_batch()
    updater(0, np.zeros(4), w)
    assert updater.states[0].memory["d"] == 1e-3
    np.testing.assert_array_equal(w, np.ones(4))


def test_growth_rate_inf_means_no_limit_and_round_trips():
    assert mxopt.Prodigy(growth_rate=math.inf).growth_rate is None
    assert mxopt.Prodigy(growth_rate=2).growth_rate == 2.0
    with pytest.raises(ValueError, match="growth_rate"):
        mxopt.Prodigy(growth_rate=1.0)
    with pytest.raises(ValueError, match="growth_rate"):
        mxopt.Prodigy(growth_rate=math.nan)
    optimizer = mxopt.Prodigy(growth_rate=1.5, bias_correction=True)
    assert mxopt.from_config(mxopt.to_config(optimizer)) == optimizer
    assert mxopt.from_config(mxopt.to_config(mxopt.Prodigy())) == mxopt.Prodigy()

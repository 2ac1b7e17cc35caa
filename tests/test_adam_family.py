"""What the generic tests cannot see in Nadam, RAdam and Lion: Nadam's momentum schedule
(its type, the global iteration, the per-weight product), RAdam's switch and the CUDA
twin after it, Lion's sign(0)."""

from __future__ import annotations

import numpy as np
import pytest

import mxopt
from mxopt import Momentum, OptimizationState
from mxopt.optimizers.radam import RADAM_KERNEL, rectification
from tests import cuda_tools
from tests.cases import oracle_inputs
from tests.conftest import record_cpu_kernel_calls
from tests.reference import nadam as nadam_oracle


def _state(curr_iter=1):
    return OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=curr_iter)


@pytest.mark.parametrize("scheduler", [Momentum.Fixed(0.9), Momentum.Null()])
def test_Nadam_rejects_schedulers_without_a_pair(scheduler):
    with pytest.raises(TypeError, match="momentum_scheduler must be None or a scheduler giving"):
        mxopt.Nadam(momentum_scheduler=scheduler)
    optimizer = mxopt.Nadam()
    with pytest.raises(TypeError, match="pair"):
        optimizer.opts.momentum_scheduler = scheduler
    assert optimizer.opts.momentum_scheduler is None


def test_Nadam_rejects_a_scheduler_whose_value_is_not_a_pair():
    class Single(mxopt.AbstractMomentumScheduler):
        def value(self, state):
            return 0.9

    with pytest.raises(TypeError, match="must give a pair"):
        mxopt.Nadam(momentum_scheduler=Single())


def test_Nadam_default_schedule_follows_beta1_at_update_time():
    optimizer = mxopt.Nadam(beta1=0.9, state=_state())
    optimizer.opts.beta1 = 0.5
    assert optimizer.opts.momentum_scheduler is None
    expected = Momentum.NadamScheduler(mu0=0.5).value(_state())
    assert optimizer.next_memory(optimizer.values(_state()), 1, {}) == {"mu_product": expected[0]}


def test_Nadam_schedule_reads_the_global_iteration():
    # A weight first updated at curr_iter=5 uses (mu_5, mu_6), with k = 1 for its moments.
    state = _state(curr_iter=5)
    optimizer = mxopt.Nadam(lr=0.01, state=state)
    updater = mxopt.get_updater(optimizer)
    rng = np.random.default_rng(3)
    weight = rng.normal(size=17)
    grad = rng.normal(size=17)
    expected = weight.copy()
    x = oracle_inputs(optimizer, state, 1)
    oracle_state = nadam_oracle.init(weight.shape, x)
    nadam_oracle.step(expected, grad, oracle_state, x)
    updater(0, grad, weight)
    np.testing.assert_allclose(weight, expected, rtol=1e-13)
    mu_5 = Momentum.NadamScheduler(mu0=0.99).momentum_at(5)
    assert updater.states[0].memory == {"mu_product": pytest.approx(mu_5, rel=1e-15)}


def test_Nadam_keeps_its_momentum_product_only_after_a_successful_update():
    state = _state()
    updater = mxopt.get_updater(mxopt.Nadam(state=state))
    weight = np.ones(4)
    updater(0, np.full(4, 0.5), weight)
    memory, before = dict(updater.states[0].memory), weight.copy()
    state.begin_batch()
    with pytest.raises(FloatingPointError):
        updater(0, np.array([0.5, np.nan, 0.5, 0.5]), weight)
    assert updater.states[0].memory == memory and updater.states[0].step == 1
    np.testing.assert_array_equal(weight, before)


def test_Nadam_momentum_product_of_one_is_a_clear_error_and_changes_nothing():
    scheduler = Momentum.NadamScheduler(mu0=1.0, gamma=0.0)
    updater = mxopt.get_updater(mxopt.Nadam(momentum_scheduler=scheduler, state=_state()))
    weight = np.ones(3)
    with pytest.raises(ValueError, match="bias correction 1 - product is 0"):
        updater(0, np.ones(3), weight)
    np.testing.assert_array_equal(weight, 1)
    assert updater.states == {}


def test_RAdam_switches_to_the_adaptive_step_at_step_6_with_default_betas():
    optimizer = mxopt.RAdam(state=_state())
    roots = [
        optimizer.kernel_scalars(optimizer.values(_state(k)), k, {})["root"] for k in range(1, 10)
    ]
    assert roots == [0.0] * 5 + [1.0] * 4
    assert all(rectification(2 / 3, k) is None for k in range(1, 1000))
    assert 0 < rectification(0.999, 6) < rectification(0.999, 50) < 1


def test_Lion_sign_of_zero_is_zero():
    state = _state()
    updater = mxopt.get_updater(mxopt.Lion(lr=0.1, weight_decay=0.5, state=state))
    weight = np.array([1.0, -2.0, 3.0], np.float32)
    updater(0, np.zeros(3, np.float32), weight)  # m = 0 and g = 0: only the decay acts
    np.testing.assert_array_equal(weight, np.array([1.0, -2.0, 3.0], np.float32) * np.float32(0.95))
    updater(0, np.array([1.0, 0.0, -1.0], np.float32), weight)
    np.testing.assert_allclose(weight, [0.95 * 0.95 - 0.1, -2 * 0.95 * 0.95, 3 * 0.95 * 0.95 + 0.1])


@pytest.mark.skipif(not cuda_tools.have_cxx(), reason="g++ not on PATH")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_RAdam_rectified_steps_match_the_cuda_twin_bit_for_bit(dtype, monkeypatch, tmp_path):
    # The generic replay trains 5 steps, all before RAdam's switch at k = 6.
    from tests.test_cuda_sources import _run_twin, serial_cpu_run

    calls = record_cpu_kernel_calls(  # root = 1: the rectified steps
        monkeypatch, keep=lambda kernel, scalars: kernel is RADAM_KERNEL and scalars[-2] == 1.0
    )
    rng = np.random.default_rng(1)
    for decoupled in (False, True):
        state = OptimizationState(batch_size=3)
        optimizer = mxopt.RAdam(
            lr=0.01, weight_decay=0.1, grad_clip=0.5, decoupled_weight_decay=decoupled, state=state
        )
        updater = mxopt.get_updater(optimizer)
        weight = rng.normal(size=257).astype(dtype)
        state.begin_epoch()
        for step in range(1, 10):
            state.begin_batch()
            grad = (rng.normal(size=257) * 3).astype(dtype) * (step != 7)
            grad[:5] = 0
            updater(0, grad, weight)
    assert len(calls) == 8
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for kernel, w, g, state, scalars in calls:
        cpu_w, cpu_state = w.copy(), tuple(a.copy() for a in state)
        serial_cpu_run(kernel, cpu_w, g, cpu_state, scalars)
        gpu_w, gpu_state = w.copy(), [a.copy() for a in state]
        _run_twin(kernel, dtype, gpu_w, g, gpu_state, scalars, str(tmp_path))
        np.testing.assert_array_equal(gpu_w.view(bits), cpu_w.view(bits))
        for a, b in zip(gpu_state, cpu_state, strict=True):
            np.testing.assert_array_equal(a.view(bits), b.view(bits))

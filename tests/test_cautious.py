"""Cautious updates (``cautious=True``, Liang et al. 2024, arXiv:2411.16085): what the
generic oracle tests do not show (their cases are in tests/reference/adam.py, lion.py,
sgd.py and ademamix.py), and agreement with pytorch_optimizer's C-Lion when it is
installed (not a dependency)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

import mxopt
from mxopt.kernels import cpu as _cpu
from tests.peer_agreement import mxopt_steps, random_problem

CAUTIOUS = {
    "ADAM": {},
    "AdamW": {"amsgrad": True},
    "Lion": {},
    "SGD": {"momentum": 0.9},
    "AdEMAMix": {},
}


def _updater(name, **options):
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    optimizer = mxopt.OPTIMIZERS[name](**{**CAUTIOUS[name], **options}, state=state)
    return state, mxopt.get_updater(optimizer)


@pytest.mark.parametrize("name", CAUTIOUS)
def test_the_option_decides_the_paths(name):
    optimizer = mxopt.OPTIMIZERS[name](**CAUTIOUS[name])
    assert not optimizer.per_tensor and optimizer.single_kernel
    optimizer.cautious = True
    assert optimizer.per_tensor and not optimizer.single_kernel
    assert optimizer.state_spec((3,)) == mxopt.OPTIMIZERS[name](**CAUTIOUS[name]).state_spec((3,))


def test_sgd_without_momentum_is_unchanged():
    plain = mxopt.SGD()
    cautious = mxopt.SGD(cautious=True)
    assert cautious.single_kernel and not cautious.per_tensor
    rng = np.random.default_rng(0)
    start = rng.normal(size=9).astype(np.float32)
    weights = [start.copy(), start.copy()]
    grads = [rng.normal(size=9).astype(np.float32) for _ in range(3)]
    for optimizer, w in zip((plain, cautious), weights, strict=True):
        state = mxopt.OptimizationState(1, 1, 1, 1)
        optimizer.state = state
        updater = mxopt.get_updater(optimizer)
        for g in grads:
            updater(0, g, w)
            state.begin_batch()
    np.testing.assert_array_equal(weights[0], weights[1])


def test_first_lion_step_is_scaled_by_n_over_kept_plus_one():
    # With m = 0, c = (1 - beta1) g agrees with g wherever g != 0.
    state, updater = _updater("Lion", lr=0.125, cautious=True)
    w = np.zeros(7)
    g = np.array([1.0, -2.0, 0.0, 3.0, -1.0, 0.5, 0.0])
    state.begin_batch()
    updater(0, g, w)
    np.testing.assert_allclose(w, -0.125 * 7 / (5 + 1) * np.sign(g), rtol=1e-15)


@pytest.mark.parametrize("name", CAUTIOUS)
def test_a_zero_gradient_moves_nothing(name):
    state, updater = _updater(name, cautious=True, weight_decay=0.0)
    rng = np.random.default_rng(1)
    w = rng.normal(size=11)
    state.begin_batch()
    updater(0, rng.normal(size=11), w)
    before = w.copy()
    state.begin_batch()
    updater(0, np.zeros(11), w)
    np.testing.assert_array_equal(w, before)


@pytest.mark.parametrize("name", CAUTIOUS)
def test_packed_tensors_take_two_segmented_calls(name, monkeypatch):
    calls = []
    real = _cpu.run_segments
    monkeypatch.setattr(_cpu, "run_segments", lambda *a: calls.append(a[0].name) or real(*a))
    state, updater = _updater(name, cautious=True)
    buffer = mxopt.ParameterBuffer({i: (16,) for i in range(20)})
    buffer.grad[...] = np.sin(np.arange(buffer.grad.size))
    state.begin_batch()
    assert updater.update_buffer(buffer)
    assert len(calls) == 2 and calls[0].endswith("_cautious_count")


def test_switching_the_option_between_steps():
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=13) for _ in range(4)]
    start = rng.normal(size=13)
    runs = []
    for switch in (True, False):
        state, updater = _updater("AdamW")
        w = start.copy()
        for k, g in enumerate(grads):
            if k == 2:
                if switch:
                    updater.optimizer.cautious = True
                else:  # a fresh optimizer from the same state, cautious from the start
                    fresh = mxopt.AdamW(**CAUTIOUS["AdamW"], cautious=True, state=state)
                    states = updater.states
                    updater = mxopt.get_updater(fresh)
                    updater.states.update(states)
            state.begin_batch()
            updater(0, g, w)
        runs.append(w)
    np.testing.assert_array_equal(*runs)


def test_lookahead_and_muon_pass_the_option_through():
    rng = np.random.default_rng(3)
    shapes = {"a": (12,), "b": (5,)}
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    for make in (
        lambda: mxopt.Lookahead(mxopt.AdamW(cautious=True), k=2),
        lambda: mxopt.Muon(fallback=mxopt.AdamW(cautious=True)),
    ):
        single_state, packed_state = mxopt.OptimizationState(1), mxopt.OptimizationState(1)
        single, packed = make(), make()
        single.state, packed.state = single_state, packed_state
        assert packed.per_tensor
        single_updater, packed_updater = mxopt.get_updater(single), mxopt.get_updater(packed)
        buffer = mxopt.ParameterBuffer.from_arrays({k: w.copy() for k, w in weights.items()})
        ws = {k: w.copy() for k, w in weights.items()}
        for state in (single_state, packed_state):
            state.begin_epoch()
        for _ in range(3):
            single_state.begin_batch()
            packed_state.begin_batch()
            for k in shapes:
                single_updater(k, grads[k], ws[k])
                buffer.grads[k][...] = grads[k]
            assert packed_updater.update_buffer(buffer)
        for k in shapes:
            np.testing.assert_array_equal(buffer.weights[k], ws[k])


# -- the peer: pytorch_optimizer's Lion(cautious=True) -----------------------------------


@dataclass(frozen=True)
class PeerCase:
    label: str
    mxopt_name: str
    mxopt_options: dict
    peer_options: dict
    tolerance: float = 2e-5
    zero_steps: tuple = field(default=(7,))


LION_CASES = [
    PeerCase("C-Lion", "Lion", {"lr": 1e-3, "weight_decay": 0.1, "cautious": True},
             {"lr": 1e-3, "weight_decay": 0.1, "cautious": True}),
    PeerCase("C-Lion betas maximize", "Lion",
             {"lr": 3e-3, "beta1": 0.5, "beta2": 0.9, "maximize": True, "cautious": True},
             {"lr": 3e-3, "betas": (0.5, 0.9), "maximize": True, "cautious": True}),
]  # fmt: skip


def lion_deviation(case, steps=50, size=257, seed=0) -> float:
    """max |w_mxopt - w_peer| over ``steps`` float32 steps of pytorch_optimizer's Lion."""
    torch = pytest.importorskip("torch")
    peer = pytest.importorskip("pytorch_optimizer")
    start, grads = random_problem(case, steps, size, seed)
    param = torch.nn.Parameter(torch.tensor(start))
    optimizer = peer.Lion([param], foreach=False, **case.peer_options)
    deviation = 0.0
    for _, grad, _, weight in mxopt_steps(case, start, grads):
        param.grad = torch.tensor(grad)
        optimizer.step()
        deviation = max(deviation, float(np.max(np.abs(weight - param.detach().numpy()))))
    return deviation


@pytest.mark.parametrize("case", LION_CASES, ids=[c.label for c in LION_CASES])
def test_lion_matches_pytorch_optimizer(case):
    deviation = lion_deviation(case)
    assert deviation <= case.tolerance, f"{case.label}: {deviation:.2e}"

"""Non-finite gradients, all-or-nothing updates, global norm clipping, loss scaling,
threads and determinism."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import mxopt
from tests.cases import CASES, make_optimizer


def running(batch_size=1):
    state = mxopt.OptimizationState(batch_size)
    state.begin_epoch()
    state.begin_batch()
    return state


# -- non-finite policies -----------------------------------------------------------------


def test_skip_policy_leaves_everything_untouched_and_counts():
    state = running()
    updater = mxopt.get_updater(mxopt.ADAM(state=state), nonfinite="skip")
    weight = np.linspace(0, 1, 6)
    updater(0, np.ones(6), weight)
    before = (weight.copy(), updater.states[0].arrays["mean"].copy(), updater.states[0].step)
    bad = np.ones(6)
    bad[2] = np.nan
    state.begin_batch()
    updater(0, bad, weight)
    np.testing.assert_array_equal(weight, before[0])
    np.testing.assert_array_equal(updater.states[0].arrays["mean"], before[1])
    assert updater.states[0].step == before[2] == 1
    assert updater.states[0].skipped == 1 and updater.skipped == 1
    # a new index whose first gradient is bad: skipped and counted, its state kept at step 0
    new_weight = np.ones(6)
    assert updater("new", bad, new_weight) is False
    np.testing.assert_array_equal(new_weight, np.ones(6))
    assert updater.states["new"].step == 0 and updater.states["new"].skipped == 1
    assert not any(a.any() for a in updater.states["new"].arrays.values())
    assert updater.skipped == 2


@pytest.mark.parametrize("path", ["single", "many", "buffer"])
@pytest.mark.parametrize("scaled", [False, True], ids=["skip", "loss-scaler"])
def test_a_skipped_first_update_is_counted_and_the_next_is_a_first_update(path, scaled):
    """The skip of a weight's first update is counted like any other; the state it leaves
    (step 0, zero moments) makes the next good step exactly a first step."""

    def make(scale):
        # the loss scaler backs off on the skip: the fresh run starts at the scale it reaches
        options = {"loss_scaler": mxopt.DynamicLossScaler(init_scale=scale)} if scaled else {}
        nonfinite = "raise" if scaled else "skip"
        return mxopt.get_updater(mxopt.ADAM(state=running()), nonfinite=nonfinite, **options)

    shapes = {"a": (3,), "b": (2, 2)}
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s) for k, s in shapes.items()}
    good = {k: rng.normal(size=s) for k, s in shapes.items()}
    bad = {k: g.copy() for k, g in good.items()}
    bad["a"][0], bad["b"][1, 1] = np.nan, np.inf  # every weight's first call is skipped

    def step(updater, grads, weights, buffer=None):
        if path == "single" and not scaled:
            return all([updater(k, grads[k], weights[k]) for k in shapes])
        if path == "buffer":
            for k in shapes:
                buffer.grads[k][...] = grads[k]
            return updater.update_buffer(buffer)
        return updater.update_many(list(shapes), [grads[k] for k in shapes],
                                   [weights[k] for k in shapes])  # fmt: skip

    def run(skip_first, scale):
        updater = make(scale)
        weights = {k: v.copy() for k, v in start.items()}
        buffer = None
        if path == "buffer":
            buffer = mxopt.ParameterBuffer.from_arrays(weights)
            weights = buffer.weights
        if skip_first:
            assert step(updater, bad, weights, buffer) is False
            for k in shapes:
                np.testing.assert_array_equal(weights[k], start[k])
                assert updater.states[k].step == 0 and updater.states[k].skipped == 1
            assert updater.skipped == 2
        assert step(updater, good, weights, buffer) is True
        return updater, weights

    skipped, after_skip = run(True, 1.0)
    fresh, no_skip = run(False, 0.5)
    for k in shapes:
        np.testing.assert_array_equal(after_skip[k], no_skip[k])
        assert skipped.states[k].step == fresh.states[k].step == 1


def test_apply_policy_lets_nan_through():
    updater = mxopt.get_updater(mxopt.SGD(state=running()), nonfinite="apply")
    weight = np.ones(3)
    updater(0, np.array([1.0, np.nan, np.inf]), weight)
    assert np.isfinite(weight[0]) and np.isnan(weight[1]) and np.isinf(weight[2])


def test_invalid_policy_and_options():
    with pytest.raises(ValueError, match="nonfinite must be one of 'raise', 'skip', 'apply'"):
        mxopt.get_updater(mxopt.SGD(), nonfinite="ignore")
    with pytest.raises(ValueError, match="max_grad_norm must be a finite number > 0"):
        mxopt.get_updater(mxopt.SGD(), max_grad_norm=0.0)
    with pytest.raises(TypeError, match="loss_scaler"):
        mxopt.get_updater(mxopt.SGD(), loss_scaler=2.0)
    with pytest.raises(ValueError, match="update_many"):
        mxopt.get_updater(mxopt.SGD(state=running()), max_grad_norm=1.0)(0, np.ones(2), np.ones(2))


# -- update_many -------------------------------------------------------------------------


def _model(rng, dtype=np.float32):
    shapes = {"a": (4, 3), "b": (5,), "c": (1,), "d": (2, 2, 2)}
    weights = {k: rng.normal(size=s).astype(dtype) for k, s in shapes.items()}
    return shapes, weights


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_update_many_gives_the_bits_of_single_updates(case):
    if mxopt.OPTIMIZERS[case.optimizer].step_sums_kernel is not None:
        pytest.skip("one step over all weights reads sums across them: tests/test_prodigy.py")
    rng = np.random.default_rng(0)
    shapes, single_weights = _model(rng)
    many_weights = {k: w.copy() for k, w in single_weights.items()}
    state_a, state_b = mxopt.OptimizationState(2), mxopt.OptimizationState(2)
    single = mxopt.get_updater(make_optimizer(case, {}, state_a))
    many = mxopt.get_updater(make_optimizer(case, {}, state_b))
    for state in (state_a, state_b):
        state.begin_epoch()
    for _ in range(5):
        grads = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
        state_a.begin_batch()
        state_b.begin_batch()
        for k in shapes:
            single(k, grads[k], single_weights[k])
        assert many.update_many(list(shapes), [grads[k] for k in shapes],
                                [many_weights[k] for k in shapes])  # fmt: skip
    for k in shapes:
        np.testing.assert_array_equal(many_weights[k], single_weights[k])
        for name, a in single.states[k].arrays.items():
            np.testing.assert_array_equal(many.states[k].arrays[name], a)


def test_update_many_is_all_or_nothing():
    rng = np.random.default_rng(1)
    shapes, weights = _model(rng)
    updater = mxopt.get_updater(mxopt.ADAM(state=running()))
    grads = {k: np.ones(s, np.float32) for k, s in shapes.items()}
    updater.update_many(list(shapes), list(grads.values()), list(weights.values()))
    before = {k: w.copy() for k, w in weights.items()}
    steps = {k: s.step for k, s in updater.states.items()}
    bad_grads = dict(grads)
    bad_grads["d"] = np.ones((2, 2), np.float32)  # wrong shape, last in the list
    with pytest.raises(ValueError, match="index 'd'"):
        updater.update_many(
            [*shapes, "new"],
            [*bad_grads.values(), np.ones(3, np.float32)],
            [*weights.values(), np.ones(3, np.float32)],
        )
    for k in shapes:
        np.testing.assert_array_equal(weights[k], before[k])
    assert {k: s.step for k, s in updater.states.items()} == steps
    assert "new" not in updater.states


def test_update_many_names_the_indices_with_non_finite_values():
    rng = np.random.default_rng(2)
    shapes, weights = _model(rng)
    updater = mxopt.get_updater(mxopt.SGD(momentum=0.9, state=running()))
    grads = [np.ones(s, np.float32) for s in shapes.values()]
    grads[1][3] = np.inf
    grads[3][0, 1, 1] = np.nan
    before = {k: w.copy() for k, w in weights.items()}
    # out of the 5 + 8 values of the gradients named, not the 26 of the whole step
    with pytest.raises(
        FloatingPointError, match=r"indices 'b', 'd': grad holds 2 NaN .* out of 13;"
    ):
        updater.update_many(list(shapes), grads, list(weights.values()))
    for k in shapes:
        np.testing.assert_array_equal(weights[k], before[k])
    assert updater.states == {}


def test_update_many_skip_policy_skips_the_whole_step():
    rng = np.random.default_rng(3)
    shapes, weights = _model(rng)
    updater = mxopt.get_updater(mxopt.SGD(state=running()), nonfinite="skip")
    good = [np.ones(s, np.float32) for s in shapes.values()]
    assert updater.update_many(list(shapes), good, list(weights.values()))
    before = {k: w.copy() for k, w in weights.items()}
    bad = [g.copy() for g in good]
    bad[0][0, 0] = np.nan
    assert not updater.update_many(list(shapes), bad, list(weights.values()))
    for k in shapes:
        np.testing.assert_array_equal(weights[k], before[k])
    assert all(s.skipped == 1 and s.step == 1 for s in updater.states.values())


def test_update_many_argument_errors():
    updater = mxopt.get_updater(mxopt.SGD(state=running()))
    with pytest.raises(ValueError, match="parallel lists"):
        updater.update_many([0, 1], [np.ones(2)], [np.ones(2)])
    with pytest.raises(ValueError, match="more than once"):
        updater.update_many([0, 0], [np.ones(2)] * 2, [np.ones(2), np.ones(2)])


# -- global norm ---------------------------------------------------------------------------


def test_global_norm_matches_numpy_in_float64():
    rng = np.random.default_rng(4)
    grads = [rng.normal(size=s).astype(np.float32) * 10 for s in [(300, 7), (13,), (0,), (1,)]]
    expected = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
    assert mxopt.global_norm(grads) == pytest.approx(expected, rel=1e-13)
    grads[1][4] = np.nan
    assert mxopt.global_norm(grads) == math.inf
    with pytest.raises(TypeError, match="gradient 0 must be a float32 or float64"):
        mxopt.global_norm([np.ones(3, np.int64)])


def test_gradient_sums_give_each_gradients_statistics_and_the_engines_total():
    from mxopt.kernels import backend_module
    from mxopt.kernels.statistics import segment_statistics

    rng = np.random.default_rng(6)
    grads = [rng.normal(size=s).astype(np.float32) * 10 for s in [(300, 7), (13,), (0,), (9000,)]]
    grads[1][[2, 5]] = [np.nan, -np.inf]
    sums, counts = mxopt.gradient_sums(grads)
    # the oracle: float64 sums of the finite values' squares, and a count of the others
    for grad, total, count in zip(grads, sums, counts, strict=True):
        values = grad.astype(np.float64).ravel()
        finite = values[np.isfinite(values)]
        assert total == pytest.approx(np.sum(finite**2), rel=1e-13, abs=0.0)
        assert count == np.count_nonzero(~np.isfinite(values))
    assert counts.tolist() == [0, 2, 0, 0] and sums.dtype == np.float64
    # one flat array cut in segments gives every segment the same bits
    flat = np.concatenate([g.ravel() for g in grads])
    offsets = np.cumsum([0] + [g.size for g in grads])
    segment_sums, segment_counts = segment_statistics(backend_module("numpy"), flat, offsets)
    assert segment_sums.tolist() == sums.tolist() and segment_counts.tolist() == counts.tolist()
    # the global norm is the square root of their sum in order (when all are finite)
    del grads[1]
    sums, _ = mxopt.gradient_sums(grads)
    assert mxopt.global_norm(grads) == math.sqrt(np.cumsum(sums)[-1])
    with pytest.raises(TypeError, match="gradient_sums: gradient 0 must be a float32"):
        mxopt.gradient_sums([np.ones(3, np.int64)])


def test_max_grad_norm_scales_every_gradient_by_the_same_factor():
    rng = np.random.default_rng(5)
    shapes, weights = _model(rng, np.float64)
    start = {k: w.copy() for k, w in weights.items()}
    batch_size, lr, limit = 4, 0.1, 0.5
    state = mxopt.OptimizationState(batch_size)
    state.begin_epoch()
    state.begin_batch()
    updater = mxopt.get_updater(
        mxopt.SGD(lr=lr, weight_decay=0.0, state=state), max_grad_norm=limit
    )
    grads = {k: rng.normal(size=s) * 3 for k, s in shapes.items()}
    updater.update_many(list(shapes), list(grads.values()), list(weights.values()))
    norm = math.sqrt(sum(np.sum((g / batch_size) ** 2) for g in grads.values()))
    assert norm > limit
    factor = limit / (norm + 1e-6)
    for k in shapes:
        np.testing.assert_allclose(weights[k], start[k] - lr * factor * grads[k] / batch_size,
                                   rtol=1e-13)  # fmt: skip


def test_max_grad_norm_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    shapes = [(20, 10), (10,), (7, 3)]
    weights = [rng.normal(size=s).astype(np.float32) for s in shapes]
    params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in weights]
    torch_sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    state = mxopt.OptimizationState(1)
    updater = mxopt.get_updater(
        mxopt.SGD(lr=0.1, momentum=0.9, weight_decay=0.0, state=state), max_grad_norm=1.0
    )
    state.begin_epoch()
    for _ in range(20):
        grads = [(rng.normal(size=s) * 2).astype(np.float32) for s in shapes]
        state.begin_batch()
        updater.update_many(range(3), grads, weights)
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        torch_sgd.step()
    for w, p in zip(weights, params, strict=True):
        np.testing.assert_allclose(w, p.detach().numpy(), atol=2e-6)


# -- loss scaling --------------------------------------------------------------------------


def test_loss_scaler_backs_off_skips_and_grows():
    state = mxopt.OptimizationState(1)
    scaler = mxopt.DynamicLossScaler(init_scale=8.0, growth_factor=2.0, backoff_factor=0.25,
                                     growth_interval=2)  # fmt: skip
    updater = mxopt.get_updater(mxopt.SGD(lr=1.0, weight_decay=0.0, state=state),
                                loss_scaler=scaler)  # fmt: skip
    weight = np.zeros(2)
    state.begin_epoch()
    history = []
    for value in (8.0, np.inf, 2.0, 2.0, 4.0):
        state.begin_batch()
        applied = updater.update_many(["w"], [np.full(2, value)], [weight])
        history.append((applied, scaler.scale, weight[0]))
    # grads are divided by the scale in force: 8/8 -> 1; skip (scale 8 -> 2); 2/2 -> 1;
    # 2/2 -> 1 (2 clean steps: scale 2 -> 4); 4/4 -> 1
    assert history == [
        (True, 8.0, -1.0),
        (False, 2.0, -1.0),
        (True, 2.0, -2.0),
        (True, 4.0, -3.0),
        (True, 4.0, -4.0),
    ]
    assert scaler.skipped == 1 and updater.states["w"].skipped == 1
    assert updater.states["w"].step == 4


def test_loss_scaler_validation():
    with pytest.raises(ValueError, match="DynamicLossScaler: growth_factor must be"):
        mxopt.DynamicLossScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="growth_interval"):
        mxopt.DynamicLossScaler(growth_interval=0)


# -- threads and determinism ---------------------------------------------------------------


def test_concurrent_updates_of_different_indices_give_serial_bits():
    rng = np.random.default_rng(7)
    sizes = [5, 300_000, 17, 300_000, 1000, 64, 2, 300_000]  # some above the parallel threshold
    grads = [[rng.normal(size=n).astype(np.float32) for n in sizes] for _ in range(4)]
    start = [rng.normal(size=n).astype(np.float32) for n in sizes]

    def run(threaded):
        state = mxopt.OptimizationState(8)
        updater = mxopt.get_updater(mxopt.ADAM(state=state))
        weights = [w.copy() for w in start]
        state.begin_epoch()
        for step_grads in grads:
            state.begin_batch()
            if threaded:
                threads = [
                    threading.Thread(target=updater, args=(i, step_grads[i], weights[i]))
                    for i in range(len(sizes))
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            else:
                for i in range(len(sizes)):
                    updater(i, step_grads[i], weights[i])
        return weights

    serial, threaded = run(False), run(True)
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


_DETERMINISM_SCRIPT = """
import numpy as np, mxopt
rng = np.random.default_rng(0)
grads = [rng.normal(size=n).astype(np.float32) for n in (1_000_003, 4097, 300_000)]
state = mxopt.OptimizationState(1, 1, 1, 1)
weights = [rng.normal(size=g.size).astype(np.float32) for g in grads]
updater = mxopt.get_updater(mxopt.LAMB(state=state), max_grad_norm=0.1)
updater.update_many(range(3), grads, weights)
print(repr(mxopt.global_norm(grads)), *(w.view(np.uint32).sum(dtype=np.uint64) for w in weights))
"""


def test_same_bits_across_thread_counts():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, MXOPT_PARALLEL_MIN_SIZE="1000")
        result = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT],
            cwd=root, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]


def test_an_option_assignment_is_checked_with_the_others_as_the_constructor_checks_it():
    optimizer = mxopt.SGD()
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        mxopt.SGD(nesterov=True)
    with pytest.raises(ValueError, match="nesterov=True needs momentum"):
        optimizer.nesterov = True
    assert optimizer.nesterov is False  # refused: left as it was
    optimizer.momentum = 0.9
    optimizer.nesterov = True
    with pytest.raises(ValueError, match="needs dampening=0"):
        optimizer.dampening = 0.5
    assert optimizer.dampening == 0.0 and optimizer.nesterov is True

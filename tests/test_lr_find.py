"""mxopt.lr_find (fastai's learning-rate finder) against hand-written references."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest

import mxopt
from mxopt import OptimizationState
from mxopt.cli.main import main
from mxopt.training.lr_find import steepest, valley


def sweep_lrs(start, end, n):
    return np.array([start * (end / start) ** (i / (n - 1)) for i in range(n)])


def quadratic(weights, w0):
    """loss = 0.5 * |w|^2, grad = w: plain SGD with lr_k gives w_k+1 = (1 - lr_k) w_k."""

    def loss_and_grad(step):
        w = weights["w"]
        return 0.5 * float(w @ w), {"w": w.copy()}

    return loss_and_grad


def plain_sgd():
    return mxopt.SGD(lr=0.5, momentum=0.0, weight_decay=0.0)


def known_losses(w0, lrs):
    """The loss before each update of the quadratic under plain SGD, in closed form."""
    base = 0.5 * float(w0 @ w0)
    return np.array([base * np.prod((1 - lrs[:k]) ** 2) for k in range(len(lrs))])


def ema(losses, beta):
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return np.array(out)


def test_lrs_follow_the_exponential_formula_exactly_and_losses_the_closed_form():
    w0 = np.array([1.0, -2.0, 0.5])
    weights = {"w": w0.copy()}
    result = mxopt.lr_find(
        quadratic(weights, w0), weights, plain_sgd(), start_lr=1e-4, end_lr=0.5, num_steps=30
    )
    expected = sweep_lrs(1e-4, 0.5, 30)
    assert result.lrs.dtype == np.float64
    assert np.array_equal(result.lrs, expected)
    assert result.lrs[-1] == pytest.approx(0.5, rel=1e-15)
    assert not result.diverged
    np.testing.assert_allclose(result.losses, known_losses(w0, expected), rtol=1e-12)


def test_smoothing_is_the_bias_corrected_ema():
    losses = np.random.default_rng(3).uniform(1.0, 2.0, size=40)
    weights = {"a": np.zeros(2)}

    def loss_and_grad(step):
        return losses[step], {"a": np.zeros(2)}

    for beta in (0.98, 0.5, 0.0):
        result = mxopt.lr_find(loss_and_grad, weights, plain_sgd(), num_steps=40, beta=beta,
                               divergence=None)  # fmt: skip
        assert np.array_equal(result.losses, losses)
        np.testing.assert_allclose(result.smoothed, ema(losses, beta), rtol=1e-13)
    assert np.array_equal(ema(losses, 0.0), losses)


def test_stops_at_the_first_divergence():
    # lr > 2 makes |1 - lr| > 1: the quadratic's loss then grows without bound
    w0 = np.array([3.0, 1.0])
    weights = {"w": w0.copy()}
    lrs = sweep_lrs(1e-3, 100.0, 60)
    smoothed = ema(known_losses(w0, lrs), 0.98)
    best = np.minimum.accumulate(smoothed)
    stop = int(np.flatnonzero(smoothed > 4 * best)[0])
    result = mxopt.lr_find(quadratic(weights, w0), weights, plain_sgd(), start_lr=1e-3,
                           end_lr=100.0, num_steps=60)  # fmt: skip
    assert result.diverged
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == stop + 1
    np.testing.assert_allclose(result.smoothed, smoothed[: stop + 1], rtol=1e-10)
    assert np.array_equal(weights["w"], w0)
    # a larger factor stops later; None never stops on a finite loss
    later = mxopt.lr_find(quadratic(weights, w0), weights, plain_sgd(), start_lr=1e-3,
                          end_lr=100.0, num_steps=60, divergence=50.0)  # fmt: skip
    assert len(later.lrs) >= len(result.lrs)
    # up to 20, the smoothed loss passes 4x its best only at step 58 (by the reference)
    stopped = mxopt.lr_find(quadratic(weights, w0), weights, plain_sgd(), start_lr=1e-3,
                            end_lr=20.0, num_steps=60)  # fmt: skip
    full = mxopt.lr_find(quadratic(weights, w0), weights, plain_sgd(), start_lr=1e-3,
                         end_lr=20.0, num_steps=60, divergence=None)  # fmt: skip
    assert stopped.diverged and len(stopped.lrs) == 59
    assert len(full.lrs) == 60 and not full.diverged


def test_a_nan_loss_stops_the_sweep():
    weights = {"w": np.ones(2)}

    def loss_and_grad(step):
        return (math.nan if step == 7 else 1.0), {"w": np.zeros(2)}

    result = mxopt.lr_find(loss_and_grad, weights, plain_sgd(), num_steps=30)
    assert result.diverged and len(result.losses) == 8


def test_weights_and_optimizer_are_left_bit_for_bit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = x @ np.array([1, -1, 2, 0.5], np.float32)
    weights = {"w": rng.normal(size=4).astype(np.float32), "b": np.array([-0.0], np.float32)}
    before = {k: v.copy() for k, v in weights.items()}
    arrays = {k: v for k, v in weights.items()}

    def loss_and_grad(step):
        xb, yb = x[(step % 4) * 16 :][:16], y[(step % 4) * 16 :][:16]
        err = xb @ weights["w"] + weights["b"] - yb
        return float((err**2).mean()), {"w": 2 * xb.T @ err, "b": 2 * err.sum(keepdims=True)}

    schedule = mxopt.LearningRate.Exp(0.1, gamma=0.9)
    state = OptimizationState(batch_size=16)
    state.begin_epoch()
    for _ in range(3):
        state.begin_batch()
    optimizer = mxopt.SGD(lr=0.05, momentum=0.9, lr_scheduler=schedule, state=state)
    opts_before = attrs.asdict(optimizer.opts, recurse=False)
    revision = optimizer.revision()
    counters = (state.curr_epoch, state.curr_batch, state.curr_iter, state.batch_size)

    result = mxopt.lr_find(loss_and_grad, weights, optimizer, batch_size=16, num_steps=50)
    assert len(result.lrs) > 10
    for k in weights:
        assert weights[k] is arrays[k]
        assert weights[k].tobytes() == before[k].tobytes()
    assert attrs.asdict(optimizer.opts, recurse=False) == opts_before
    assert optimizer.opts.lr_scheduler is schedule
    assert optimizer.revision() == revision
    assert optimizer.state is state
    assert (state.curr_epoch, state.curr_batch, state.curr_iter, state.batch_size) == counters


def test_weights_are_restored_when_loss_and_grad_raises():
    w0 = np.array([1.0, 2.0])
    weights = {"w": w0.copy()}

    def loss_and_grad(step):
        if step == 5:
            raise KeyError("boom")
        return 1.0, {"w": np.ones(2)}

    with pytest.raises(KeyError, match="boom"):
        mxopt.lr_find(loss_and_grad, weights, plain_sgd(), start_lr=0.1, end_lr=1.0)
    assert weights["w"].tobytes() == w0.tobytes()


def test_default_optimizer_is_adam_and_wrappers_work():
    w0 = np.array([1.0, -1.0])
    weights = {"w": w0.copy()}
    result = mxopt.lr_find(quadratic(weights, w0), weights, num_steps=20)
    assert len(result.lrs) >= 2 and np.array_equal(weights["w"], w0)
    wrapped = mxopt.Lookahead(inner=plain_sgd())
    result = mxopt.lr_find(quadratic(weights, w0), weights, wrapped, start_lr=1e-3,
                           end_lr=1.0, num_steps=20)  # fmt: skip
    assert np.array_equal(result.lrs, sweep_lrs(1e-3, 1.0, 20))
    assert wrapped.opts.inner.opts.lr_scheduler is None


def test_valley_on_a_curve_known_by_hand():
    lrs = np.logspace(-5, 0, 10)
    # the longest decreasing run: 6, 5, 4, 3, 2, 1, 0.5 at indices 1..7; 2/3 of the way: 5
    losses = [5, 6, 5, 4, 3, 2, 1, 0.5, 3, 8]
    assert valley(lrs, losses) == lrs[5]
    # a flat curve: the valley is the first point; a falling one: index 2 * 9 // 3 = 6
    assert valley(lrs, np.ones(10)) == lrs[0]
    assert valley(lrs, -np.arange(10.0)) == lrs[6]
    # the run need not be contiguous (fastai's longest decreasing subsequence): 9, 8, 7, 6
    # ends at index 4 and is 4 long, so it starts at 1; 2/3 of the way: 1 + 2 = 3
    assert valley(lrs[:7], [9, 8, 8.5, 7, 6, 10, 11]) == lrs[3]
    assert valley(lrs[:1], [1.0]) is None
    # a curve ends at its first NaN
    assert valley(lrs, [4, 3, 2, 1, np.nan, 0, -1, -2, -3, -4]) == lrs[2]


def test_steepest_on_a_curve_known_by_hand():
    lrs = np.logspace(-6, 1, 8)  # equal steps in log lr
    losses = [2.0, 1.9, 1.7, 1.0, 0.9, 0.95, 3.0, 9.0]  # biggest drop: 1.7 -> 1.0
    assert steepest(lrs, losses) == lrs[2]
    uneven = np.array([1e-3, 1e-2, 1.1e-2, 1e-1])
    # drops of 1, 0.1 and 1 per step; per unit of log lr the middle one is steepest
    assert steepest(uneven, [3.0, 2.0, 1.9, 0.9]) == uneven[1]
    assert steepest(lrs[:1], [1.0]) is None
    with pytest.raises(ValueError, match="one length"):
        steepest(lrs, [1.0, 2.0])


def test_suggestions_use_the_trimmed_smoothed_curve():
    w0 = np.array([3.0, 1.0])
    weights = {"w": w0.copy()}
    result = mxopt.lr_find(quadratic(weights, w0), weights, plain_sgd(), start_lr=1e-3,
                           end_lr=100.0, num_steps=60)  # fmt: skip
    kept = slice(6, len(result.lrs) - 5)
    assert result.valley == valley(result.lrs[kept], result.smoothed[kept])
    assert result.steepest == steepest(result.lrs[kept], result.smoothed[kept])
    assert 1e-3 < result.valley < 2 and 1e-3 < result.steepest < 2
    short = mxopt.lr_find(quadratic(weights, w0), weights, plain_sgd(), num_steps=6)
    assert short.valley is None and short.steepest is None


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, ValueError, "start_lr must be below end_lr"),
        ({"start_lr": 2.0, "end_lr": 1.0}, ValueError, "start_lr must be below end_lr"),
        ({"start_lr": 0.0}, ValueError, "start_lr must be positive"),
        ({"start_lr": -1e-3}, ValueError, "start_lr must be positive"),
        ({"end_lr": math.inf}, ValueError, "end_lr must be positive and finite"),
        ({"end_lr": "10"}, TypeError, "end_lr must be a number"),
        ({"num_steps": 1}, ValueError, "num_steps must be at least 2"),
        ({"num_steps": 2.5}, TypeError, "num_steps must be an integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be at least 1"),
        ({"divergence": 0.0}, ValueError, "divergence must be positive"),
        ({"divergence": 1.0}, ValueError, "divergence must be greater than 1"),
        ({"beta": 1.0}, ValueError, r"beta must be a number in \[0, 1\)"),
        ({"beta": -0.1}, ValueError, "beta must be"),
        ({"optimizer": "sgd"}, TypeError, "optimizer must be an mxopt optimizer"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, message):
    weights = {"w": np.ones(2)}
    with pytest.raises(error, match=message):
        mxopt.lr_find(lambda step: (1.0, {"w": np.ones(2)}), weights, **kwargs)


def test_wrong_gradient_keys_are_reported():
    w0 = np.ones(2)
    weights = {"w": w0.copy(), "b": np.zeros(1)}
    with pytest.raises(ValueError, match=r"loss_and_grad\(0\) must return .*'b'.*got \['w'\]"):
        mxopt.lr_find(lambda step: (1.0, {"w": np.ones(2)}), weights, plain_sgd())
    with pytest.raises(ValueError, match="loss_and_grad"):
        mxopt.lr_find(lambda step: (1.0, [np.ones(2)]), weights, plain_sgd())
    with pytest.raises(TypeError, match="loss_and_grad must be callable"):
        mxopt.lr_find(None, weights)
    with pytest.raises(TypeError, match="weights must be a non-empty dict"):
        mxopt.lr_find(lambda step: (1.0, {}), {})
    assert np.array_equal(weights["w"], w0)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    weights = {"w": np.array([1.0, 2.0])}
    result = mxopt.lr_find(quadratic(weights, None), weights, plain_sgd(), num_steps=40)
    path = tmp_path / "lr.png"
    result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lr_find(capsys, tmp_path):
    code = main(["lr-find", "--optimizer", "sgd", "--num-steps", "40"])
    assert code == 0
    out = capsys.readouterr().out
    assert "lr-find on the demo MLP: SGD" in out
    assert "suggested: valley " in out and ", steepest " in out
    assert main(["lr-find", "--num-steps", "1"]) == 1
    assert "--num-steps must be at least 2" in capsys.readouterr().err

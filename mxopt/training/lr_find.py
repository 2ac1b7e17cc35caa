"""A learning-rate finder: fastai's ``lr_find`` (Smith 2015, "Cyclical Learning Rates").

:func:`lr_find` trains for a few mini-batches while the learning rate grows
exponentially from ``start_lr`` to ``end_lr``, records the loss of every mini-batch,
smooths it, stops once the loss diverges, then puts the weights back as they were.
The optimizer passed in is never touched: the sweep runs on a deep copy with a fresh
:class:`~mxopt.OptimizationState` and fresh per-weight state.

:func:`valley` and :func:`steepest` are the two suggestion rules, usable on any curve.
"""

from __future__ import annotations

import copy
import math
import numbers
import os

import attrs
import numpy as np

from mxopt.core.checks import shown
from mxopt.core.state import OptimizationState
from mxopt.optimizers.adam import ADAM
from mxopt.optimizers.base import AbstractOptimizer
from mxopt.schedules.compose import FromCallable
from mxopt.training.updater import get_updater

__all__ = ["LRFindResult", "lr_find", "steepest", "valley"]

#: Mini-batches left out at the end of the curve before suggesting (fastai's ``[:-5]``).
SKIP_END = 5


def valley(lrs, losses) -> float | None:
    """The learning rate 2/3 of the way into the longest valley of ``losses``.

    The valley is fastai's: the longest strictly decreasing subsequence of the losses
    (the first one when several are as long), taken as the stretch from its last point
    ``end`` back over its length, ``start = end - length + 1``; the suggestion is the lr
    at ``start + (2 * (end - start)) // 3``, 2/3 of the way in, as fastai's documentation
    words it (fastai's code takes ``start + L/3 + L/6`` from ``start = end - length``,
    about halfway and one point earlier). ``None`` for fewer than 2 points.
    """
    lrs, losses = _curve(lrs, losses)
    n = len(losses)
    if n < 2:
        return None
    lds = np.ones(n, np.int64)  # length of the longest decreasing run ending at i
    for i in range(1, n):
        before = lds[:i][losses[:i] > losses[i]]
        if before.size:
            lds[i] = before.max() + 1
    end = int(np.argmax(lds))
    start = max(0, end - int(lds[end]) + 1)
    return float(lrs[start + (2 * (end - start)) // 3])


def steepest(lrs, losses) -> float | None:
    """The learning rate where the loss falls fastest against ``log(lr)``.

    As fastai's ``steep``: the slopes ``(loss[i+1] - loss[i]) / (log lr[i+1] - log lr[i])``,
    and the lr at the left end of the most negative one. ``None`` for fewer than 2 points.
    """
    lrs, losses = _curve(lrs, losses)
    if len(losses) < 2:
        return None
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))])


def _curve(lrs, losses):
    lrs = np.asarray(lrs, np.float64)
    losses = np.asarray(losses, np.float64)
    if lrs.ndim != 1 or lrs.shape != losses.shape:
        raise ValueError(
            f"lrs and losses must be 1-D and of one length, got shapes {lrs.shape} "
            f"and {losses.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(losses))  # a curve ends at its first NaN
    if bad.size:
        lrs, losses = lrs[: bad[0]], losses[: bad[0]]
    return lrs, losses


@attrs.frozen(eq=False)
class LRFindResult:
    """What :func:`lr_find` recorded, and the learning rates it suggests.

    ``lrs[i]`` is the learning rate of the update after mini-batch ``i``, ``losses[i]``
    the loss of that mini-batch (before the update), ``smoothed[i]`` its bias-corrected
    exponential moving average. ``valley`` and ``steepest`` are :func:`valley` and
    :func:`steepest` of the smoothed curve without its first ``num_steps // 10`` and
    last 5 points (as fastai), or ``None`` when too few points are left.
    """

    lrs: np.ndarray = attrs.field(metadata={"doc": "learning rate per mini-batch"})
    losses: np.ndarray = attrs.field(metadata={"doc": "raw loss per mini-batch"})
    smoothed: np.ndarray = attrs.field(metadata={"doc": "smoothed loss per mini-batch"})
    valley: float | None = attrs.field(metadata={"doc": "suggestion of the valley rule"})
    steepest: float | None = attrs.field(metadata={"doc": "suggestion of the steepest rule"})
    diverged: bool = attrs.field(metadata={"doc": "whether the sweep stopped early"})

    def plot(self, path=None, *, title: str | None = None):
        """Draw the loss and smoothed loss against the learning rate (log scale) with
        the suggestions; written to ``path`` when given. Needs matplotlib (pyplot is not
        used). Returns the matplotlib ``Figure``."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError(
                'LRFindResult.plot needs matplotlib: pip install "mxopt[plot]"'
            ) from None
        figure = Figure(figsize=(7, 4.5))
        axes = figure.subplots()
        axes.plot(self.lrs, self.losses, color="0.8", lw=1, label="loss")
        axes.plot(self.lrs, self.smoothed, color="C0", label="smoothed loss")
        for name, lr, color in (("valley", self.valley, "C1"), ("steepest", self.steepest, "C2")):
            if lr is not None:
                y = np.interp(np.log(lr), np.log(self.lrs), self.smoothed)
                axes.plot([lr], [y], "o", color=color, label=f"{name} {lr:.3g}")
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("loss")
        finite = self.smoothed[np.isfinite(self.smoothed)]
        raw = self.losses[np.isfinite(self.losses)]
        if finite.size:
            low = min(finite.min(), raw.min())
            high = min(finite.max(), 2 * finite[0] - finite.min())
            if high > low:
                axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        axes.legend()
        if title:
            axes.set_title(title)
        figure.tight_layout()
        if path is not None:
            figure.savefig(os.fspath(path), dpi=120)
        return figure


def _positive_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"lr_find: {name} must be a number, got {shown(value)}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"lr_find: {name} must be positive and finite, got {value!r}")
    return value


def _integer(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"lr_find: {name} must be an integer, got {shown(value)}")
    if value < low:
        raise ValueError(f"lr_find: {name} must be at least {low}, got {value}")
    return int(value)


def _keys(mapping) -> str:
    return "[" + ", ".join(sorted(map(repr, mapping))) + "]"


def _lr_options(opts):
    """The options that hold the learning rate (a wrapper's inner optimizer's)."""
    while not hasattr(opts, "lr_scheduler") and hasattr(opts, "inner"):
        opts = opts.inner.opts
    return opts if hasattr(opts, "lr_scheduler") else None


def lr_find(
    loss_and_grad,
    weights,
    optimizer=None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    batch_size: int = 1,
    divergence: float | None = 4.0,
    beta: float = 0.98,
) -> LRFindResult:
    """Sweep the learning rate exponentially and record the loss (fastai's ``lr_find``).

    For ``i = 0 .. num_steps - 1``: ``loss, grads = loss_and_grad(i)`` (the loss and the
    gradients of the current ``weights`` on the ``i``-th mini-batch, gradients summed
    over the batch as everywhere in mxopt), then one update of every weight with the
    learning rate ``start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``.
    The loss is smoothed as ``avg = beta * avg + (1 - beta) * loss`` (``avg`` starts at
    0), ``smoothed = avg / (1 - beta ** (i + 1))``; the sweep stops after a mini-batch
    whose smoothed loss exceeds ``divergence`` times the lowest so far, or is not finite
    (``divergence=None``: only then), or whose update raises ``FloatingPointError``.

    Args:
        loss_and_grad: ``step -> (loss, {index: grad})``, with the indices of ``weights``.
        weights: ``{index: array}``, NumPy or CuPy, updated in place during the sweep
            and restored bit for bit afterwards (from copies made first), also on error.
        optimizer: any mxopt optimizer (default ``mxopt.ADAM()``, as fastai's default
            Adam). It is left as it was: the sweep runs on a deep copy whose
            ``lr_scheduler`` is replaced by the sweep, with a fresh
            ``OptimizationState(batch_size)`` and fresh per-weight state.
        start_lr, end_lr: the first and last learning rate, ``0 < start_lr < end_lr``.
        num_steps: mini-batches in a full sweep, at least 2.
        batch_size: the ``OptimizationState``'s batch size (the gradients are divided
            by it).
        divergence: the early-stopping factor (greater than 1), or ``None``.
        beta: the smoothing factor, ``0 <= beta < 1``.

    Returns:
        An :class:`LRFindResult`.
    """
    start_lr = _positive_number("start_lr", start_lr)
    end_lr = _positive_number("end_lr", end_lr)
    if start_lr >= end_lr:
        raise ValueError(
            f"lr_find: start_lr must be below end_lr, got start_lr={start_lr!r} and "
            f"end_lr={end_lr!r}"
        )
    num_steps = _integer("num_steps", num_steps, 2)
    batch_size = _integer("batch_size", batch_size, 1)
    if divergence is not None:
        divergence = _positive_number("divergence", divergence)
        if divergence <= 1:
            raise ValueError(f"lr_find: divergence must be greater than 1, got {divergence!r}")
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 1:
        raise ValueError(f"lr_find: beta must be a number in [0, 1), got {shown(beta)}")
    beta = float(beta)
    if not callable(loss_and_grad):
        raise TypeError(f"lr_find: loss_and_grad must be callable, got {shown(loss_and_grad)}")
    if not isinstance(weights, dict) or not weights:
        raise TypeError(
            f"lr_find: weights must be a non-empty dict {{index: array}}, got {shown(weights)}"
        )
    if optimizer is None:
        optimizer = ADAM()
    if not isinstance(optimizer, AbstractOptimizer):
        raise TypeError(f"lr_find: optimizer must be an mxopt optimizer, got {shown(optimizer)}")

    schedule_lrs = [
        start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)) for i in range(num_steps)
    ]
    sweep = copy.deepcopy(optimizer)
    opts = _lr_options(sweep.opts)
    if opts is None:
        raise TypeError(f"lr_find: {type(optimizer).__name__} has no lr_scheduler option to sweep")
    state = OptimizationState(batch_size=batch_size)
    sweep.state = state
    opts.lr_scheduler = FromCallable(lambda s: schedule_lrs[min(s.curr_iter, num_steps) - 1])
    updater = get_updater(sweep)

    saved = {index: weight.copy() for index, weight in weights.items()}
    lrs, losses, smoothed = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    state.begin_epoch()
    try:
        for step in range(num_steps):
            loss, grads = loss_and_grad(step)
            if not isinstance(grads, dict) or grads.keys() != weights.keys():
                got = _keys(grads) if isinstance(grads, dict) else shown(grads)
                raise ValueError(
                    f"lr_find: loss_and_grad({step}) must return (loss, {{index: grad}}) with "
                    f"the indices of weights {_keys(weights)}, got {got}"
                )
            loss = float(loss)
            avg = beta * avg + (1 - beta) * loss
            smooth = avg / (1 - beta ** (step + 1))
            state.begin_batch()
            lrs.append(sweep.lr_value(state))
            losses.append(loss)
            smoothed.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(smooth) or (divergence is not None and smooth > divergence * best):
                diverged = True
                break
            try:
                for index, weight in weights.items():
                    updater(index, grads[index], weight)
            except FloatingPointError:
                diverged = True
                break
    finally:
        for index, weight in weights.items():
            weight[...] = saved[index]

    lrs, losses, smoothed = (np.array(v, np.float64) for v in (lrs, losses, smoothed))
    kept = slice(num_steps // 10, max(num_steps // 10, len(smoothed) - SKIP_END))
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        valley=valley(lrs[kept], smoothed[kept]),
        steepest=steepest(lrs[kept], smoothed[kept]),
        diverged=diverged,
    )

"""Gradient accumulation: one optimizer step per ``k`` micro-batches.

``get_updater(optimizer, accumulate=k)`` gives an updater whose calls add each gradient
into a per-index accumulator (the state array :data:`ACCUMULATOR`, in the weight's
compute dtype: float32 for float16/bfloat16 weights) and count the micro-step; the
k-th call of an index runs the optimizer's step on the accumulated gradient, through
the step engine like any other step, and empties the accumulator. With
``accumulate_mode="mean"`` the step's gradient is the sum times ``1 / k`` (a factor
applied inside the kernels, as ``multiplier`` is), with ``"sum"`` the sum itself.

During that step the optimizer reads an :class:`~mxopt.core.state.OptimizerSteps`
view of its OptimizationState, which counts optimizer steps: a loop that calls
``begin_batch()`` once per micro-batch gives the schedules ``ceil(curr_iter / k)``,
as optax's ``MultiSteps`` gives its inner optimizer its own update count. The
per-weight update count (bias corrections) counts optimizer steps by itself.

Every call is all or nothing: the arrays and the micro-gradient's values are checked
before anything is added, and the k-th call adds into a new array (the accumulator is
emptied only once the step has succeeded), so an exception leaves the accumulators,
the counts and the weights as they were.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.checks import check_integer, shown
from mxopt.core.state import OptimizerSteps
from mxopt.kernels import backend_module, backends, precision_module
from mxopt.kernels.statistics import GRAD_SQUARES_KERNEL
from mxopt.training import precision
from mxopt.training.engine import nonfinite_error, run_step

__all__ = ["ACCUMULATE_MODES", "ACCUMULATOR", "check_accumulate", "micro_step"]

#: The state array that holds an index's accumulated gradient (outside the optimizer's
#: own arrays: kernels take their arrays by name and never see it).
ACCUMULATOR = "grad_sum"

#: ``"mean"``: the step's gradient is the sum of the k micro-gradients divided by k;
#: ``"sum"``: their sum.
ACCUMULATE_MODES = ("mean", "sum")


def check_accumulate(accumulate, accumulate_mode, loss_scaler=None) -> None:
    """Clear errors for bad ``accumulate`` / ``accumulate_mode`` values, and for a loss
    scaler together with accumulation (each micro-gradient would carry the scale of its
    own micro-step, and a skipped micro-step would change the scale mid-window)."""
    check_integer("Updater", "accumulate", accumulate, 1)
    if accumulate_mode not in ACCUMULATE_MODES:
        raise ValueError(
            f"Updater: accumulate_mode must be one of "
            f"{', '.join(map(repr, ACCUMULATE_MODES))}, got {shown(accumulate_mode)}"
        )
    if accumulate > 1 and loss_scaler is not None:
        raise ValueError(
            f"Updater: accumulate={accumulate} cannot be combined with a loss_scaler (each "
            f"micro-batch's gradient would carry its own loss scale); use accumulate=1, or "
            f"no loss scaler (float32 or bfloat16 weights)"
        )


def refuse_step_arguments(where: str, **given) -> None:
    """A clear error for step arguments that accumulation does not support."""
    unsupported = [name for name, value in given.items() if value]
    if unsupported:
        raise ValueError(
            f"{where}: {', '.join(unsupported)} cannot be used with accumulate > 1 (they act "
            f"on one step's gradients; an accumulating call may not be a step)"
        )


def _accumulator(state):
    """``state``'s accumulator, made (zeros, in the compute dtype) if it has none: states
    made before accumulation was switched on, or loaded without one, get theirs here."""
    acc = state.flat.get(ACCUMULATOR)
    if acc is None:
        size = math.prod(state.shape)
        zeros = np.zeros(size, dtype=backends.compute_dtype(state.dtype))
        acc = backends.to_backend(zeros, state.backend, state.device)
        state.flat[ACCUMULATOR] = acc
        state.arrays[ACCUMULATOR] = acc.reshape(state.shape)
    return acc


def _micro_gradient(item):
    """The item's flat gradient in the accumulator's dtype (a 16-bit one widened)."""
    if item.store is None:
        return item.g
    _, bits, fmt = item.store
    return precision_module(item.state.backend).widen(bits, fmt)


def _count_nonfinite(items, grads) -> tuple[int, list]:
    bad, culprits = 0, []
    for item, g in zip(items, grads, strict=True):
        backend = backend_module(item.state.backend)
        _, _, count = backend.run(GRAD_SQUARES_KERNEL, g, g, (), (), False)
        if count:
            bad += int(count)
            culprits.append(item.index)
    return bad, culprits


def steps_view(updater, opt_state) -> OptimizerSteps:
    """The updater's view of ``opt_state`` counting optimizer steps, made again only when
    the state has changed (so host scalars stay cached across the indices of a step)."""
    view = updater.__dict__.get("_steps_view")
    if (
        view is None
        or view.source is not opt_state
        or view._revision != opt_state._revision
        or view.every != updater.accumulate
    ):
        view = OptimizerSteps.of(opt_state, updater.accumulate)
        updater.__dict__["_steps_view"] = view
    return view


def micro_step(updater, items) -> bool:
    """One accumulating call of ``updater`` over ``items`` (single weights, checked,
    frozen ones left out, new states not stored yet): add every gradient into its
    index's accumulator, or on the k-th micro-step of the indices run the optimizer's
    step on the accumulated gradients. Returns whether an optimizer step was applied."""
    optimizer = updater.optimizer
    opt_state = optimizer.require_state()  # before anything: as a step would
    check_accumulate(updater.accumulate, updater.accumulate_mode, updater.loss_scaler)
    counts = updater.micro_steps
    if not items:
        return False  # every index frozen
    for item in items:
        if item.rows is not None:
            raise ValueError(
                f"index {shown(item.index)}: a RowSparse gradient cannot be accumulated "
                f"(accumulate > 1); pass it dense"
            )
    done = {counts.get(item.index, 0) for item in items}
    if len(done) != 1:
        raise ValueError(
            f"update_many: the indices are at different points of their accumulation "
            f"windows (micro-steps done: "
            f"{ {item.index: counts.get(item.index, 0) for item in items} }); accumulate "
            f"the same indices together in every call"
        )
    done = done.pop()
    grads = [_micro_gradient(item) for item in items]
    if updater.nonfinite != "apply":
        bad, culprits = _count_nonfinite(items, grads)
        if bad:
            if updater.nonfinite == "raise":
                raise nonfinite_error(bad, sum(g.size for g in grads), culprits)
            for item in items:  # "skip": the micro-step is dropped, and counted
                item.state.skipped += 1
            _store_new(updater, items)
            return False
    accumulators = [_accumulator(item.state) for item in items]
    if done + 1 < updater.accumulate:
        for acc, g in zip(accumulators, grads, strict=True):
            acc += g
        _store_new(updater, items)
        for item in items:
            counts[item.index] = done + 1
        return False

    # The k-th micro-step: the optimizer's step on (accumulator + this gradient), in new
    # arrays, so that a step that fails leaves the accumulators as they were.
    for item, acc, g in zip(items, accumulators, grads, strict=True):
        if item.store is not None:
            precision.materialize(optimizer, item)  # float32 working weight and gradient
            item.g += acc  # a new widened array
        else:
            item.g = acc + g
    multiplier = 1.0 / updater.accumulate if updater.accumulate_mode == "mean" else 1.0
    applied = run_step(updater, items, multiplier=multiplier,
                       opt_state=steps_view(updater, opt_state))  # fmt: skip
    _store_new(updater, items)
    for item, acc in zip(items, accumulators, strict=True):
        acc.fill(0)  # the window is over, applied or skipped (a non-finite sum)
        counts.pop(item.index, None)
    return applied


def _store_new(updater, items) -> None:
    for item in items:
        if item.new:
            updater.states[item.index] = item.state

"""Seeing a schedule: its values over a whole training run."""

from __future__ import annotations

import numbers

from mxopt.core.checks import check_integer, shown, to_int
from mxopt.core.schedule import AbstractSchedule
from mxopt.core.state import OptimizationState

__all__ = ["schedule_values"]


def schedule_values(scheduler, epochs: int, batches_per_epoch: int, *, scores=None):
    """The values ``scheduler`` gives at every update of a training run, as a NumPy array.

    The run is ``epochs`` epochs of ``batches_per_epoch`` mini-batches, counted as a
    training loop counts them (``begin_epoch()``, then ``begin_batch()`` before each
    batch's updates): element ``i`` is the value the updates of iteration ``i + 1`` use.
    ``scores``, if given, has one evaluation score per epoch, recorded with
    ``state.record_score`` after that epoch's batches (for
    :class:`~mxopt.LearningRate.Plateau`). A plain number gives a constant array;
    a schedule whose values are pairs (``Momentum.NadamScheduler``) gives shape
    ``(n, 2)``.

    Example:
        >>> from mxopt import LearningRate, schedule_values
        >>> schedule_values(LearningRate.Step(1.0, step_size=2, gamma=0.5), 2, 2)
        array([1. , 1. , 0.5, 0.5])
    """
    import numpy as np

    for name, n in (("epochs", epochs), ("batches_per_epoch", batches_per_epoch)):
        check_integer("schedule_values", name, to_int(n), 0 if name == "epochs" else 1)
    if scores is not None:
        scores = list(scores)
        if len(scores) < epochs - 1:
            raise ValueError(
                f"schedule_values: scores needs one score per epoch (at least {epochs - 1} "
                f"for {epochs} epochs), got {len(scores)}"
            )
    if not isinstance(scheduler, AbstractSchedule):
        if isinstance(scheduler, bool) or not isinstance(scheduler, numbers.Real):
            raise TypeError(
                f"schedule_values: scheduler must be a schedule or a number, got {shown(scheduler)}"
            )
    state = OptimizationState(batch_size=1)
    values = []
    for epoch in range(epochs):
        state.begin_epoch()
        for _ in range(batches_per_epoch):
            state.begin_batch()
            if isinstance(scheduler, AbstractSchedule):
                values.append(scheduler.value(state))
            else:
                values.append(float(scheduler))
        if scores is not None and epoch < len(scores):
            state.record_score(scores[epoch])
    return np.asarray(values, dtype=np.float64)

"""The abstract schedule: a value that is a pure function of the training progress.

Schedules sit at the bottom because any float option of any optimizer may be one
(see :func:`mxopt.core.fields.hyperparameter`); the families themselves live in
:mod:`mxopt.schedules`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from mxopt.core.state import OptimizationState

__all__ = [
    "AbstractLearningRateScheduler",
    "AbstractMomentumScheduler",
    "AbstractSchedule",
    "value_at",
]


class AbstractSchedule(abc.ABC):
    """A value that is a pure function of an :class:`~mxopt.OptimizationState`.

    Subclasses implement :meth:`value`. They keep no counter of their own: the
    same state always gives the same value, whatever was asked before.
    """

    #: What the schedule counts: ``"epoch"`` (``curr_epoch``) or ``"iteration"``
    #: (``curr_iter``). Subclasses whose unit depends on an option override it.
    unit: ClassVar[str] = "iteration"

    @abc.abstractmethod
    def value(self, state: OptimizationState) -> Any:
        """The scheduled value for ``state``."""


class AbstractLearningRateScheduler(AbstractSchedule):
    """Base class of learning-rate schedulers (``mxopt.LearningRate``)."""


class AbstractMomentumScheduler(AbstractSchedule):
    """Base class of momentum schedulers (``mxopt.Momentum``)."""


def value_at(value, state: OptimizationState):
    """``value`` itself, or its value at ``state`` if it is a schedule."""
    if isinstance(value, AbstractSchedule):
        return value.value(state)
    return value

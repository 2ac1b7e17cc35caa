"""The abstract schedule: a value that is a pure function of the training progress.

Schedules sit at the bottom because any float option of any optimizer may be one
(see :func:`mxopt.core.fields.hyperparameter`); the families themselves live in
:mod:`mxopt.schedules`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import attrs

from mxopt.core.state import OptimizationState

__all__ = [
    "MAX_NESTING",
    "AbstractLearningRateScheduler",
    "AbstractMomentumScheduler",
    "AbstractSchedule",
    "nesting_depth",
    "value_at",
]

#: How deep schedules may nest (``Warmup(Warmup(...))``): far beyond any real schedule, and
#: far below the depth at which Python's recursion in copies, pickles, reprs, comparisons
#: and configs of the chain would fail.
MAX_NESTING = 32


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


def nesting_depth(schedule: AbstractSchedule) -> int:
    """How many schedules deep ``schedule`` goes: 1, plus the deepest schedule it holds in an
    attrs field (alone or in a tuple). Each held schedule was checked when it was set, so
    the walk is at most :data:`MAX_NESTING` deep."""
    if not attrs.has(type(schedule)):
        return 1
    deepest = 0
    for field in attrs.fields(type(schedule)):
        value = getattr(schedule, field.name, None)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, AbstractSchedule):
                deepest = max(deepest, nesting_depth(item))
    return 1 + deepest


def value_at(value, state: OptimizationState):
    """``value`` itself, or its value at ``state`` if it is a schedule."""
    if isinstance(value, AbstractSchedule):
        return value.value(state)
    return value

"""Schedule shapes that the learning-rate and momentum namespaces both offer.

Each class here holds the arithmetic of one shape; the classes of
:mod:`mxopt.schedules.learning_rate` and :mod:`mxopt.schedules.momentum` subclass it,
adding their fields (a rate >= 0 or a momentum in [0, 1)), their namespace and their
docstring, so the two families cannot drift apart.
"""

from __future__ import annotations

import array
import bisect
import threading
from collections.abc import Callable, Iterable

import attrs

from mxopt.core.checks import owner_name, shown
from mxopt.core.schedule import AbstractSchedule
from mxopt.core.state import OptimizationState
from mxopt.schedules.fields import (
    check_real,
    count,
    counted_unit,
    invalid,
    numbers_list,
    schedules_list,
    shifted,
    steps_list,
    unit_field,
)
from mxopt.schedules.formulas import (
    cyclic_amplitude,
    cyclic_position,
    one_cycle_phases,
    one_cycle_value,
)

__all__ = [
    "CyclicShape", "FromCallableBase", "FromGeneratorBase", "FromListBase", "JoinBase",
    "LinearShape", "OneCycleShape", "ProductBase",
]  # fmt: skip


class LinearShape:
    """A straight line from ``start`` to ``end`` over ``steps`` (fields of the subclass)."""

    def value(self, state: OptimizationState) -> float:
        t = min(count(state, self.unit), self.steps)
        return self.start + (self.end - self.start) * t / self.steps


class CyclicShape:
    """torch.optim's CyclicLR triangle: :meth:`cycle_height` is the fraction of the
    cycle's height reached at the state, scaled by the mode's amplitude."""

    def cycle_height(self, state: OptimizationState) -> tuple[float, float]:
        """``(scale, amplitude)`` at ``state``: the subclass moves ``scale * amplitude``
        of the way from one end of its range to the other."""
        t = count(state, self.unit)
        down = self.step_size_down if self.step_size_down is not None else self.step_size_up
        cycle, scale = cyclic_position(t, self.step_size_up, down)
        return scale, cyclic_amplitude(self.mode, self.gamma, self.scale_mode, cycle, t)


class OneCycleShape:
    """torch.optim's OneCycleLR phases over the subclass's three ``cycle_values()``."""

    def value(self, state: OptimizationState) -> float:
        phases = one_cycle_phases(self.total_steps, self.pct_start, self.three_phase)
        t = min(count(state, self.unit), self.total_steps - 1)
        return one_cycle_value(t, phases, self.cycle_values(), self.anneal)


@attrs.frozen
class JoinBase(AbstractSchedule):
    """Pieces joined at boundaries; each piece restarts its count at its boundary."""

    schedules: tuple = schedules_list(doc="the pieces, in order")
    boundaries: tuple = steps_list(doc="where piece i + 1 takes over (in unit)")
    unit: str = unit_field()

    def __attrs_post_init__(self):
        if len(self.schedules) != len(self.boundaries) + 1:
            raise invalid(
                self,
                f"needs one more schedule than boundaries, got {len(self.schedules)} "
                f"schedules and {len(self.boundaries)} boundaries",
            )

    def value(self, state: OptimizationState):
        i = bisect.bisect_right(self.boundaries, count(state, self.unit))
        offset = self.boundaries[i - 1] if i else 0
        return self.schedules[i].value(shifted(state, self.unit, offset))


@attrs.frozen
class ProductBase(AbstractSchedule):
    """The product of the values of several schedules."""

    schedules: tuple = schedules_list(doc="the factors")

    @property
    def unit(self) -> str:
        return counted_unit(self.schedules)

    def value(self, state: OptimizationState) -> float:
        result = 1.0
        for s in self.schedules:
            result *= float(s.value(state))
        return result


@attrs.frozen
class FromListBase(AbstractSchedule):
    """``values[t]``; the last value repeats once the list is exhausted (Thinc)."""

    values: tuple = numbers_list(ge=0.0, doc="the value at t = 0, 1, 2, ...")
    unit: str = unit_field()

    def value(self, state: OptimizationState) -> float:
        return self.values[min(count(state, self.unit), len(self.values) - 1)]


class _Drawn:
    """Values drawn so far from an iterator, shared by all queries of one schedule."""

    def __init__(self, iterable):
        self.iterable = iterable
        self.iterator = None  # made on the first draw
        self.values = array.array("d")
        self.exhausted = False
        self.lock = threading.Lock()


def _check_iterable(instance, attribute, value):
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"{owner_name(instance)}: {attribute.name} must be an iterable or a generator "
            f"of numbers, got {shown(value)} of type {type(value).__name__}"
        )


@attrs.frozen(eq=False)
class FromGeneratorBase(AbstractSchedule):
    """Values drawn from an iterable or generator (Thinc); the last repeats when it ends."""

    values: Iterable = attrs.field(validator=_check_iterable)
    unit: str = unit_field()
    _drawn: _Drawn = attrs.field(init=False, repr=False)

    @_drawn.default
    def _start(self):
        return _Drawn(self.values)

    def value(self, state: OptimizationState) -> float:
        t = count(state, self.unit)
        drawn = self._drawn
        with drawn.lock:
            while len(drawn.values) <= t and not drawn.exhausted:
                if drawn.iterator is None:
                    drawn.iterator = iter(drawn.iterable)
                try:
                    item = next(drawn.iterator)
                except StopIteration:
                    drawn.exhausted = True
                    break
                drawn.values.append(
                    check_real(owner_name(self), f"value {len(drawn.values)}", item, ge=0.0)
                )
            if not drawn.values:
                raise invalid(self, "the iterable gave no values")
            return drawn.values[min(t, len(drawn.values) - 1)]


def _check_callable(instance, attribute, value):
    if not callable(value):
        raise TypeError(
            f"{owner_name(instance)}: {attribute.name} must be a callable of the "
            f"OptimizationState, got {shown(value)} of type {type(value).__name__}"
        )


@attrs.frozen
class FromCallableBase(AbstractSchedule):
    """``fn(state)``: any function of the state."""

    fn: Callable = attrs.field(validator=_check_callable)
    unit: str = unit_field()

    def value(self, state: OptimizationState) -> float:
        return float(self.fn(state))

"""Checks of plain values, with messages that name the owner, the option and the value.

The lowest helpers of the package: :mod:`mxopt.core.state` and the option fields of
:mod:`mxopt.core.fields` use them.
"""

from __future__ import annotations

import math
import numbers
import operator
import reprlib

import attrs

__all__ = [
    "Interval",
    "check_integer",
    "clipped",
    "check_number",
    "owner_name",
    "shown",
    "to_float",
    "to_int",
]


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x, level):
        if x.bit_length() > 128:  # repr of an int over 4300 digits raises; cut before it
            digits = int(x.bit_length() * 0.30103) + 1
            return f"{'-' if x < 0 else ''}<an integer of about {digits} digits>"
        return super().repr_int(x, level)


#: How values quoted in messages are shortened: a 10 MB string, a 10**400 step count or a
#: list nested 1,000 deep must give a message of a line, not of the value's size.
_SHORT = _ShortRepr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 10
_SHORT.maxlevel = 4


def shown(value) -> str:
    """``repr(value)`` for a message, shortened: long strings and numbers are cut in the
    middle (with the string's length), long or deep containers elided; a ``__repr__`` that
    raises gives a placeholder instead of a second error."""
    text = _SHORT.repr(value)
    if isinstance(value, str) and len(value) > _SHORT.maxstring:
        text += f" ({len(value)} characters)"
    return text


def clipped(text: str, limit: int = 500) -> str:
    """``text`` (another library's error message, say) cut to ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def owner_name(instance) -> str:
    """How messages name the object a field belongs to, e.g. ``SGD`` or ``LearningRate.Exp``."""
    cls = type(instance)
    name = cls.__name__
    if name.endswith("Options"):
        return name[: -len("Options")]
    namespace = getattr(cls, "namespace", None)
    return f"{namespace}.{name}" if namespace else name


@attrs.frozen
class Interval:
    """An interval of allowed values, with a readable form for messages."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, x: float) -> bool:
        return not (
            (self.ge is not None and not x >= self.ge)
            or (self.gt is not None and not x > self.gt)
            or (self.le is not None and not x <= self.le)
            or (self.lt is not None and not x < self.lt)
        )

    def __str__(self) -> str:
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt)
        high = ("]", self.le) if self.le is not None else (")", self.lt)
        if low[1] is not None and high[1] is not None:
            return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        if low[1] is not None:
            return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
        if high[1] is not None:
            return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
        return "finite"


def check_number(owner: str, name: str, value, interval: Interval) -> None:
    """Raise a clear error unless ``value`` is a finite real number in ``interval``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: {name} must be a number {interval}, got {shown(value)} "
            f"of type {type(value).__name__}"
        )
    if not math.isfinite(value) or not interval.contains(value):
        raise ValueError(f"{owner}: {name} must be a finite number {interval}, got {shown(value)}")


def to_float(value):
    """Convert real numbers (Python or NumPy) to ``float``; leave anything else as is."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def to_int(value):
    """Convert Python and NumPy integers to ``int``; leave anything else (bools too) as is."""
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        return value


def check_integer(owner: str, name: str, value, ge: int) -> None:
    """Raise a clear error unless ``value`` is an ``int`` (not a bool) ``>= ge``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{owner}: {name} must be an integer >= {ge}, "
            f"got {shown(value)} of type {type(value).__name__}"
        )
    if value < ge:
        raise ValueError(f"{owner}: {name} must be an integer >= {ge}, got {shown(value)}")

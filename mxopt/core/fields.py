"""Option fields and their validation, shared by optimizers, schedules and averaging rules.

Every option in mxopt is an attrs field made by one of the helpers below. Values
are validated when an object is built and whenever a field is assigned, with
messages that name the owner (``SGD``, ``LearningRate.Exp``), the option, the
value and the allowed range.
"""

from __future__ import annotations

import math

import attrs

from mxopt.core.checks import (
    Interval,
    check_integer,
    check_number,
    owner_name,
    shown,
    to_float,
    to_int,
)
from mxopt.core.schedule import AbstractSchedule

__all__ = ["choice", "flag", "hyperparameter", "integer", "optional_instance", "optional_limit"]


def hyperparameter(
    default: float = attrs.NOTHING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    schedulable: bool = True,
    doc: str = "",
):
    """An attrs field for a float hyperparameter with a checked range.

    The value may also be an :class:`~mxopt.AbstractSchedule` when ``schedulable``;
    its value is then read at every update and checked against the same range.
    """
    interval = Interval(ge=ge, gt=gt, le=le, lt=lt)

    def validate(instance, attribute, value):
        if schedulable and isinstance(value, AbstractSchedule):
            return
        check_number(owner_name(instance), attribute.name, value, interval)

    return attrs.field(
        default=default,
        converter=to_float,
        validator=validate,
        metadata={"interval": interval, "doc": doc, "schedulable": schedulable},
    )


def flag(default: bool, *, doc: str = ""):
    """An attrs field for a boolean option."""

    def validate(instance, attribute, value):
        if not isinstance(value, bool):
            raise TypeError(
                f"{owner_name(instance)}: {attribute.name} must be True or False, "
                f"got {shown(value)} of type {type(value).__name__}"
            )

    return attrs.field(default=default, validator=validate, metadata={"doc": doc})


def integer(default: int = attrs.NOTHING, *, ge: int = 0, doc: str = ""):
    """An attrs field for an integer option ``>= ge`` (NumPy integers accepted, bools not)."""

    def validate(instance, attribute, value):
        check_integer(owner_name(instance), attribute.name, value, ge)

    return attrs.field(
        default=default,
        converter=to_int,
        validator=validate,
        metadata={"doc": doc, "integer_ge": ge},
    )


def optional_limit(*, gt: float, doc: str = ""):
    """An attrs field for a limit that can be switched off: ``None`` (no limit, the
    default) or a finite number ``> gt``; ``inf`` is taken as ``None``, so configs and
    checkpoints, which hold finite numbers only, can write it."""
    interval = Interval(gt=gt)

    def convert(value):
        value = to_float(value)
        return None if value == math.inf else value

    def validate(instance, attribute, value):
        if value is not None:
            check_number(owner_name(instance), f"{attribute.name} (None for no limit)", value,
                         interval)  # fmt: skip

    return attrs.field(default=None, converter=convert, validator=validate, metadata={"doc": doc})


def optional_instance(cls, *, doc: str = ""):
    """An attrs field holding ``None`` or an instance of ``cls``."""

    def validate(instance, attribute, value):
        if value is not None and not isinstance(value, cls):
            raise TypeError(
                f"{owner_name(instance)}: {attribute.name} must be None or a "
                f"{cls.__name__}, got {shown(value)} of type {type(value).__name__}"
            )

    return attrs.field(default=None, validator=validate, metadata={"doc": doc})


def choice(default: str, choices: tuple, *, doc: str = ""):
    """An attrs field holding one of the strings ``choices``."""

    def validate(instance, attribute, value):
        if not isinstance(value, str) or value not in choices:
            raise ValueError(
                f"{owner_name(instance)}: {attribute.name} must be one of "
                f"{', '.join(map(repr, choices))}, got {shown(value)}"
            )

    metadata = {"doc": doc, "choices": choices}
    return attrs.field(default=default, validator=validate, metadata=metadata)

"""Field helpers and counting shared by every schedule family.

Counting convention of every scheduler added after MXNet.jl's (see ``docs/schedules.md``):
a scheduler counts either iterations (``curr_iter``) or epochs (``curr_epoch``), its
``unit``, and works from the zero-based count

.. math:: t = \\max(\\text{curr\\_iter} - 1, 0) \\quad\\text{or}\\quad
          t = \\max(\\text{curr\\_epoch} - 1, 0),

so the first update of a run (``curr_iter == 1``, ``curr_epoch == 1``) gets the
schedule's value at ``t = 0``: the same value ``torch.optim.lr_scheduler`` gives before
its first ``scheduler.step()``, ``optax`` gives at ``count == 0`` and Thinc at step 0.
Before training (counters at 0) a scheduler gives its ``t = 0`` value too. MXNet's
Python schedulers (``Factor``, ``MultiFactor``, ``Poly``, ``Cosine``) keep their own
convention, ``num_update = curr_iter``, and Exp/Inv keep MXNet.jl's.

Messages name the scheduler, e.g. ``LearningRate.Cosine: max_update ...``.
"""

from __future__ import annotations

import numbers

import attrs

from mxopt.core.checks import Interval, check_integer, check_number, owner_name, shown, to_int
from mxopt.core.fields import hyperparameter
from mxopt.core.fields import integer as integer  # the schedules' integer field
from mxopt.core.schedule import MAX_NESTING, AbstractSchedule, nesting_depth
from mxopt.core.state import OptimizationState

__all__ = [
    "UNITS", "choice", "count", "counted_unit", "integer", "invalid", "learning_rate_schedule",
    "momentum_schedule", "number", "numbers_list", "rate", "momentum", "schedule",
    "schedules_list", "shifted", "steps_list", "unit_field",
]  # fmt: skip


def learning_rate_schedule(cls=None, **kwargs):
    """Class decorator of the learning-rate schedules: immutable attrs classes named
    ``LearningRate.<Name>`` in messages and configs."""

    def wrap(cls):
        cls.namespace = "LearningRate"
        return attrs.frozen(cls, **kwargs)

    return wrap(cls) if cls is not None else wrap


def momentum_schedule(cls):
    """Class decorator of the momentum schedules (``Momentum.<Name>``)."""
    cls.namespace = "Momentum"
    return attrs.frozen(cls)


def rate(default=attrs.NOTHING, doc: str = ""):
    """A learning-rate field: a finite number >= 0."""
    return number(default, ge=0.0, doc=doc)


def momentum(default=attrs.NOTHING, doc: str = ""):
    """A momentum field: a finite number in [0, 1)."""
    return number(default, ge=0.0, lt=1.0, doc=doc)


#: The counters a scheduler can count.
UNITS = ("iteration", "epoch")

#: MXNet's warm-up modes (and those of :class:`~mxopt.LearningRate.Warmup`).
WARMUP_MODES = ("linear", "constant")


def invalid(instance, message: str) -> ValueError:
    """A ``ValueError`` whose message starts with the scheduler's name."""
    return ValueError(f"{owner_name(instance)}: {message}")


def number(default=attrs.NOTHING, **interval):
    """A float field with a checked range that is not itself schedulable."""
    return hyperparameter(default, schedulable=False, **interval)


def choice(default, options: tuple, *, doc: str = ""):
    """A string field that must be one of ``options``."""

    def validate(instance, attribute, value):
        if value not in options:
            allowed = ", ".join(repr(o) for o in options)
            raise ValueError(
                f"{owner_name(instance)}: {attribute.name} must be one of {allowed}, got "
                f"{shown(value)}"
            )

    return attrs.field(default=default, validator=validate, metadata={"doc": doc})


def unit_field(default: str = "iteration"):
    """The ``unit`` field: count ``"iteration"`` (``curr_iter``) or ``"epoch"`` (``curr_epoch``)."""
    return choice(default, UNITS, doc="count iterations (curr_iter) or epochs (curr_epoch)")


def _as_tuple(value):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return value
    return tuple(value)


def steps_list(*, ge: int = 1, doc: str = ""):
    """A non-empty, strictly increasing sequence of integers ``>= ge``, stored as a tuple."""

    def validate(instance, attribute, value):
        owner = owner_name(instance)
        if not isinstance(value, tuple) or not value:
            raise ValueError(
                f"{owner}: {attribute.name} must be a non-empty list of integers, got "
                f"{shown(value)}"
            )
        for item in value:
            check_integer(owner, f"every entry of {attribute.name}", item, ge)
        if any(b <= a for a, b in zip(value[:-1], value[1:], strict=True)):
            raise ValueError(
                f"{owner}: {attribute.name} must be strictly increasing, got {list(value)}"
            )

    def convert(value):
        value = _as_tuple(value)
        return tuple(to_int(v) for v in value) if isinstance(value, tuple) else value

    return attrs.field(converter=convert, validator=validate, metadata={"doc": doc})


def numbers_list(*, ge: float | None = None, lt: float | None = None, doc: str = ""):
    """A non-empty sequence of finite floats in a range, stored as a tuple of floats."""

    def validate(instance, attribute, value):
        owner = owner_name(instance)
        if not isinstance(value, tuple) or not value:
            raise ValueError(
                f"{owner}: {attribute.name} must be a non-empty list of numbers, got {shown(value)}"
            )
        for item in value:
            check_real(owner, f"every entry of {attribute.name}", item, ge, lt)

    def convert(value):
        value = _as_tuple(value)
        if isinstance(value, tuple):
            return tuple(
                float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else v
                for v in value
            )
        return value

    return attrs.field(converter=convert, validator=validate, metadata={"doc": doc})


def check_real(owner, name, value, ge=None, lt=None) -> float:
    """``value`` as a float, after :func:`~mxopt.core.checks.check_number` (NumPy reals
    accepted)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
    check_number(owner, name, value, Interval(ge=ge, lt=lt))
    return value


def schedule(*, doc: str = ""):
    """A field holding another schedule (any :class:`~mxopt.AbstractSchedule`)."""

    def validate(instance, attribute, value):
        if not isinstance(value, AbstractSchedule):
            raise TypeError(
                f"{owner_name(instance)}: {attribute.name} must be a schedule "
                f"(e.g. mxopt.LearningRate.CosineAnnealing), got {shown(value)} "
                f"of type {type(value).__name__}"
            )
        _check_nesting(instance, attribute, (value,))

    return attrs.field(validator=validate, metadata={"doc": doc})


def schedules_list(*, doc: str = ""):
    """A non-empty sequence of schedules, stored as a tuple."""

    def validate(instance, attribute, value):
        owner = owner_name(instance)
        if not isinstance(value, tuple) or not value:
            raise ValueError(
                f"{owner}: {attribute.name} must be a non-empty list of schedules, got "
                f"{shown(value)}"
            )
        for item in value:
            if not isinstance(item, AbstractSchedule):
                raise TypeError(
                    f"{owner}: every entry of {attribute.name} must be a schedule, "
                    f"got {shown(item)} of type {type(item).__name__}"
                )
        _check_nesting(instance, attribute, value)

    return attrs.field(converter=_as_tuple, validator=validate, metadata={"doc": doc})


def _check_nesting(instance, attribute, schedules) -> None:
    depth = 1 + max(nesting_depth(s) for s in schedules)
    if depth > MAX_NESTING:
        raise ValueError(
            f"{owner_name(instance)}: {attribute.name} nests schedules {depth} deep; at most "
            f"{MAX_NESTING} levels are allowed (copies, configs and checkpoints of a deeper "
            f"chain would overflow Python's recursion)"
        )


def optional_integer(instance, attribute, value):
    if value is not None:
        check_integer(owner_name(instance), attribute.name, value, 1)


def count(state: OptimizationState, unit: str) -> int:
    """The zero-based count ``t`` of ``unit``: 0 at the first update (and before training)."""
    n = state.curr_iter if unit == "iteration" else state.curr_epoch
    return n - 1 if n > 0 else 0


def shifted(state: OptimizationState, unit: str, by: int) -> OptimizationState:
    """A copy of ``state`` whose ``unit`` counter is ``by`` less: a piece of a join sees
    its own count restart at its boundary. The other counters are unchanged."""
    if by == 0:
        return state
    if unit == "iteration":
        return attrs.evolve(state, curr_iter=state.curr_iter - by)
    return attrs.evolve(state, curr_epoch=state.curr_epoch - by)


def counted_unit(schedules) -> str:
    """The unit of a combination: the one unit its parts count, ``"iteration"`` if mixed."""
    units = {s.unit for s in schedules} & set(UNITS)
    return units.pop() if len(units) == 1 else "iteration"

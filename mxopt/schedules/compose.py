"""Learning rates from data (a list, a generator, a function) and from other schedules
(a warmup before one, pieces joined, a product)."""

from __future__ import annotations

from mxopt.core.schedule import AbstractLearningRateScheduler
from mxopt.core.state import OptimizationState
from mxopt.schedules import fields as _s
from mxopt.schedules import shapes

__all__ = ["FromList", "FromGenerator", "FromCallable", "Warmup", "Join", "Product"]


@_s.learning_rate_schedule
class FromList(shapes.FromListBase, AbstractLearningRateScheduler):
    """``values[t]``, the last value repeating once the list is exhausted (Thinc's lists).

    ``t = curr_iter - 1`` (or ``curr_epoch - 1``).

    Unit: ``unit``. Value at the first update: ``values[0]``.
    """


@_s.learning_rate_schedule(eq=False)
class FromGenerator(shapes.FromGeneratorBase, AbstractLearningRateScheduler):
    """Values drawn from any iterable or generator (Thinc's generator schedules).

    The ``t``-th value drawn (``t = curr_iter - 1``) is the value at ``t``; the
    last value repeats once the iterable is exhausted. Drawn values are kept, so
    the schedule stays a function of the state (queries in any order agree),
    at the cost of memory proportional to the largest ``t`` asked. A Thinc v8
    schedule (e.g. ``thinc.api.decaying(0.001, 1e-4)``) can be passed as is.
    Not saved in checkpoints or configs: it holds a live iterator.

    Unit: ``unit``. Value at the first update: the iterable's first value.
    """


@_s.learning_rate_schedule
class FromCallable(shapes.FromCallableBase, AbstractLearningRateScheduler):
    """``fn(state)``: a learning rate computed by any function of the state.

    ``fn`` receives the :class:`~mxopt.OptimizationState` and returns a number;
    it should be a pure function of it (as every mxopt schedule is). The
    ``unit`` field only documents what ``fn`` counts. Not saved in checkpoints
    or configs: it holds a Python function. Like ``torch.optim.lr_scheduler.
    LambdaLR(lambda k: f(k))`` with ``fn = lambda s: lr * f(s.curr_iter - 1)``,
    and like an optax schedule ``fn = lambda s: schedule(s.curr_iter - 1)``.

    Unit: ``unit``. Value at the first update: ``fn`` of the first update's state.
    """


@_s.learning_rate_schedule
class Warmup(AbstractLearningRateScheduler):
    """A warmup of ``steps`` before ``inner``, which then starts its own count.

    With ``t = curr_iter - 1`` (or ``curr_epoch - 1``, ``unit="epoch"``) and
    ``v0`` the value ``inner`` has at its start: for ``t < steps``,
    ``begin + (v0 - begin) * t / steps`` (``mode="linear"``) or ``begin``
    (``"constant"``); from ``t = steps`` on, ``inner`` at ``t - steps`` (it sees
    the counter of ``unit`` shifted by ``steps``, so it runs in full after the
    warmup; the other counter is not shifted). This is
    ``Join([Linear(begin, v0, steps), inner], [steps])`` and optax's
    ``join_schedules([linear_schedule(begin, v0, steps), inner], [steps])``.

    Unit: ``unit``. Value at the first update: ``begin`` (``inner``'s first
    value when ``steps == 0``).
    """

    inner: object = _s.schedule(doc="the schedule after the warmup")
    steps: int = _s.integer(ge=0, doc="length of the warmup")
    begin: float = _s.rate(0.0, doc="value at t = 0")
    mode: str = _s.choice("linear", _s.WARMUP_MODES, doc="'linear' ramp or 'constant' begin")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        t = _s.count(state, self.unit)
        if t >= self.steps:
            return self.inner.value(_s.shifted(state, self.unit, self.steps))
        if self.mode == "constant":
            return self.begin
        v0 = float(self.inner.value(_s.shifted(state, self.unit, t)))
        return self.begin + (v0 - self.begin) * t / self.steps


@_s.learning_rate_schedule
class Join(shapes.JoinBase, AbstractLearningRateScheduler):
    """Schedules joined at boundaries; each piece restarts its count at its boundary.

    With ``t = curr_iter - 1`` (or ``curr_epoch - 1``, ``unit="epoch"``) and
    boundaries ``b_1 < b_2 < ...``: piece ``i`` is used for ``b_i <= t <
    b_{i+1}`` and sees the counter of ``unit`` reduced by ``b_i`` (so its own
    ``t`` is ``t - b_i``; the other counter is not shifted). Same as
    ``optax.join_schedules(schedules, boundaries)`` and
    ``torch.optim.lr_scheduler.SequentialLR(schedulers, milestones)``.

    Unit: ``unit``. Value at the first update: the first piece's first value.
    """


@_s.learning_rate_schedule
class Product(shapes.ProductBase, AbstractLearningRateScheduler):
    """The product of several schedules' values (e.g. a per-epoch decay times a warmup).

    Every factor reads the same state. Like ``torch.optim.lr_scheduler.
    ChainedScheduler`` for multiplicative schedulers.

    Unit: the unit the factors count (iteration if they count different ones).
    Value at the first update: the product of the factors' first values.
    """

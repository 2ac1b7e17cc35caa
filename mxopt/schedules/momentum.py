"""Momentum schedulers, exported as ``mxopt.Momentum``.

Like learning-rate schedulers they are pure functions of the
:class:`~mxopt.OptimizationState`. :class:`Null` is special: besides giving 0 it
tells an optimizer to keep no momentum buffer at all (MXNet.jl's rule, decided
by the scheduler's type, so ``Fixed(0.0)`` still keeps a buffer).

Besides MXNet.jl's :class:`Null`, :class:`Fixed` and :class:`NadamScheduler`:
:class:`Linear`, :class:`Cosine`, :class:`Cyclic` and :class:`OneCycle` (the
last two inverse to the learning rate, as torch.optim's ``cycle_momentum`` and
fastai's ``fit_one_cycle``), :class:`FromList`, :class:`FromCallable` and
:class:`Join`. They count the zero-based ``t = curr_iter - 1`` (or
``curr_epoch - 1`` with ``unit="epoch"``), so the first update gets the value
at ``t = 0`` (see :mod:`mxopt.schedules`). Their values are in [0, 1).
"""

from __future__ import annotations

import attrs

from mxopt.core.checks import shown, to_int
from mxopt.core.fields import flag, hyperparameter
from mxopt.core.schedule import AbstractMomentumScheduler, AbstractSchedule
from mxopt.core.state import OptimizationState
from mxopt.schedules import fields as _s
from mxopt.schedules import formulas, shapes

__all__ = [
    "Null",
    "Fixed",
    "NadamScheduler",
    "Linear",
    "Cosine",
    "Cyclic",
    "OneCycle",
    "FromList",
    "FromCallable",
    "Join",
    "get_momentum",
    "get_momentum_scheduler",
]


@_s.momentum_schedule
class Null(AbstractMomentumScheduler):
    """No momentum: always 0, and no momentum buffer is allocated.

    Unit: none. Value at the first update: 0.
    """

    unit = "none"

    def value(self, state: OptimizationState) -> float:
        return 0.0


@_s.momentum_schedule
class Fixed(AbstractMomentumScheduler):
    """A constant momentum :math:`\\mu`, in [0, 1).

    Unit: none. Value at the first update: ``momentum``.
    """

    unit = "none"
    momentum: float = hyperparameter(ge=0.0, lt=1.0, schedulable=False, doc="the momentum")

    def value(self, state: OptimizationState) -> float:
        return self.momentum


@_s.momentum_schedule
class NadamScheduler(AbstractMomentumScheduler):
    """Nadam's momentum schedule (Dozat 2016), a pair :math:`(\\mu_t, \\mu_{t+1})`.

    .. math:: \\mu_s = \\mu_0 \\left(1 - \\gamma\\, \\alpha^{s \\delta}\\right)

    with ``t = curr_iter`` (unit: iteration). At the first update ``t = 1``, so
    the value is :math:`(\\mu_1, \\mu_2)`.

    Unit: iteration. Value at the first update: :math:`(\\mu_1, \\mu_2)`.

    Args:
        mu0: in [0, 1].
        delta: >= 0.
        gamma: in [0, 1].
        alpha: in [0, 1].
    """

    unit = "iteration"
    mu0: float = hyperparameter(0.99, ge=0.0, le=1.0, schedulable=False)
    delta: float = hyperparameter(0.004, ge=0.0, schedulable=False)
    gamma: float = hyperparameter(0.5, ge=0.0, le=1.0, schedulable=False)
    alpha: float = hyperparameter(0.96, ge=0.0, le=1.0, schedulable=False)

    def momentum_at(self, s: int) -> float:
        """:math:`\\mu_s`."""
        return self.mu0 * (1.0 - self.gamma * self.alpha ** (s * self.delta))

    def value(self, state: OptimizationState) -> tuple[float, float]:
        t = state.curr_iter
        return (self.momentum_at(t), self.momentum_at(t + 1))


@_s.momentum_schedule
class Linear(shapes.LinearShape, AbstractMomentumScheduler):
    """A straight line from ``start`` to ``end`` over ``steps``, then ``end``.

    :math:`\\text{start} + (\\text{end} - \\text{start}) \\min(t, \\text{steps}) /
    \\text{steps}`, ``t = curr_iter - 1`` (or ``curr_epoch - 1``).

    Unit: ``unit``. Value at the first update: ``start``.
    """

    start: float = _s.momentum(doc="value at t = 0")
    end: float = _s.momentum(doc="value from t = steps on")
    steps: int = _s.integer(ge=1, doc="length of the ramp")
    unit: str = _s.unit_field()


@_s.momentum_schedule
class Cosine(AbstractMomentumScheduler):
    """Half a cosine from ``start`` to ``end`` over ``steps``, then ``end``.

    :math:`\\text{end} + (\\text{start} - \\text{end})(1 + \\cos(\\pi \\min(t,
    \\text{steps}) / \\text{steps}))/2`, ``t = curr_iter - 1`` (or ``curr_epoch -
    1``). ``start < end`` gives a rising momentum (fastai's ``SchedCos``).

    Unit: ``unit``. Value at the first update: ``start``.
    """

    start: float = _s.momentum(doc="value at t = 0")
    end: float = _s.momentum(doc="value from t = steps on")
    steps: int = _s.integer(ge=1, doc="length of the half cosine")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        t = min(_s.count(state, self.unit), self.steps)
        return formulas.cos_anneal(self.start, self.end, t / self.steps)


@_s.momentum_schedule
class Cyclic(shapes.CyclicShape, AbstractMomentumScheduler):
    """The momentum cycle of ``torch.optim.lr_scheduler.CyclicLR`` (``cycle_momentum``).

    Inverse to :class:`mxopt.LearningRate.Cyclic` with the same cycle settings:
    ``max_momentum - (max_momentum - base_momentum) * scale * amplitude``, from
    ``max_momentum`` down to ``base_momentum`` while the learning rate goes up
    (``t = curr_iter - 1``).

    Unit: ``unit``. Value at the first update: ``max_momentum``.
    """

    base_momentum: float = _s.momentum(0.8, doc="momentum at the top of the lr cycle")
    max_momentum: float = _s.momentum(0.9, doc="momentum at the bottom of the lr cycle")
    step_size_up: int = _s.integer(2000, ge=1, doc="t from bottom to top of the lr cycle")
    step_size_down: int | None = attrs.field(
        default=None, converter=attrs.converters.optional(to_int), validator=_s.optional_integer
    )
    mode: str = _s.choice("triangular", ("triangular", "triangular2", "exp_range"))
    gamma: float = _s.number(1.0, gt=0.0, le=1.0, doc="exp_range's decay per t")
    scale_mode: str | None = attrs.field(default=None)
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        formulas.check_scale_mode(self)

    def value(self, state: OptimizationState) -> float:
        scale, amplitude = self.cycle_height(state)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * scale * amplitude


@_s.momentum_schedule
class OneCycle(shapes.OneCycleShape, AbstractMomentumScheduler):
    """The momentum of the 1cycle policy, inverse to :class:`mxopt.LearningRate.OneCycle`.

    With the same ``total_steps``, ``pct_start``, ``anneal`` and ``three_phase``
    as the learning rate: from ``max_momentum`` down to ``base_momentum`` while
    the rate rises, then back up to ``max_momentum`` (three phases: back up,
    then constant), exactly as ``torch.optim.lr_scheduler.OneCycleLR``'s
    ``cycle_momentum`` and like fastai's ``moms=(0.95, 0.85, 0.95)``. After
    ``total_steps - 1``, ``max_momentum`` holds.

    Unit: ``unit``. Value at the first update: ``max_momentum``.
    """

    total_steps: int = _s.integer(ge=2, doc="length of the cycle")
    pct_start: float = _s.number(0.3, gt=0.0, lt=1.0, doc="fraction of the cycle going down")
    base_momentum: float = _s.momentum(0.85, doc="momentum at the learning rate's peak")
    max_momentum: float = _s.momentum(0.95, doc="momentum at the start and the end")
    anneal: str = _s.choice("cos", ("cos", "linear"), doc="'cos' or 'linear' phases")
    three_phase: bool = flag(False, doc="as the learning rate's three_phase")
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        formulas.check_one_cycle(self, self.total_steps, self.pct_start, self.three_phase)

    def cycle_values(self) -> tuple:
        """The momenta at the start, at the learning rate's peak, and at the end."""
        return (self.max_momentum, self.base_momentum, self.max_momentum)


@_s.momentum_schedule
class FromList(shapes.FromListBase, AbstractMomentumScheduler):
    """``values[t]``, the last value repeating once the list is exhausted (Thinc's lists).

    ``t = curr_iter - 1`` (or ``curr_epoch - 1``); every value in [0, 1).

    Unit: ``unit``. Value at the first update: ``values[0]``.
    """

    values: tuple = _s.numbers_list(ge=0.0, lt=1.0, doc="the value at t = 0, 1, 2, ...")
    unit: str = _s.unit_field()


@_s.momentum_schedule
class FromCallable(shapes.FromCallableBase, AbstractMomentumScheduler):
    """``fn(state)``: a momentum computed by any function of the state.

    ``fn`` receives the :class:`~mxopt.OptimizationState` and returns a number;
    it should be a pure function of it. ``unit`` only documents what it counts.
    Not saved in checkpoints or configs: it holds a Python function.

    Unit: ``unit``. Value at the first update: ``fn`` of the first update's state.
    """


@_s.momentum_schedule
class Join(shapes.JoinBase, AbstractMomentumScheduler):
    """Momentum schedules joined at boundaries; each restarts its count at its boundary.

    As :class:`mxopt.LearningRate.Join`: piece ``i`` is used for ``b_i <= t <
    b_{i+1}`` (``t = curr_iter - 1``, or ``curr_epoch - 1``) and sees its own
    count start at 0 there.

    Unit: ``unit``. Value at the first update: the first piece's first value.
    """


def get_momentum(scheduler: AbstractMomentumScheduler, state: OptimizationState):
    """The momentum ``scheduler`` gives at ``state`` (a pair for :class:`NadamScheduler`)."""
    if not isinstance(scheduler, AbstractMomentumScheduler):
        raise TypeError(
            f"get_momentum: scheduler must be a momentum scheduler "
            f"(e.g. mxopt.Momentum.Fixed), got {shown(scheduler)}"
        )
    if not isinstance(state, OptimizationState):
        raise TypeError(f"get_momentum: state must be an OptimizationState, got {shown(state)}")
    return scheduler.value(state)


def get_momentum_scheduler(scheduler: AbstractMomentumScheduler | None, momentum: float):
    """``scheduler`` if given; else ``Null()`` when ``momentum == 0``, else ``Fixed(momentum)``.

    A ``momentum`` that is itself a schedule (any float option may be one) is
    returned as is: it is the schedule in effect.
    """
    if scheduler is not None:
        return scheduler
    if isinstance(momentum, AbstractSchedule):
        return momentum
    return Null() if momentum == 0 else Fixed(momentum)

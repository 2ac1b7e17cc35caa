"""Learning-rate schedules that rise and fall: SGDR's restarts, the 1cycle policy,
cyclical rates and ULMFiT's slanted triangle (zero-based ``t = curr_iter - 1``)."""

from __future__ import annotations

import math

import attrs

from mxopt.core.checks import shown, to_int
from mxopt.core.fields import flag
from mxopt.core.schedule import AbstractLearningRateScheduler
from mxopt.core.state import OptimizationState
from mxopt.schedules import fields as _s
from mxopt.schedules import formulas, shapes

__all__ = ["CosineRestarts", "OneCycle", "Cyclic", "SlantedTriangular"]


@_s.learning_rate_schedule
class CosineRestarts(AbstractLearningRateScheduler):
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    The run is cut into periods of length :math:`T_0, T_0 m, T_0 m^2, \\ldots`
    (``period``, ``period_mult``); inside a period of length :math:`T_i`, at
    position :math:`t_{cur}` (0 at its start),
    :math:`\\eta_{min} + (\\text{lr} - \\eta_{min})(1 + \\cos(\\pi t_{cur}/T_i))/2`.
    ``t = curr_iter - 1`` (or ``curr_epoch - 1``). Same as
    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=period,
    T_mult=period_mult, eta_min=min_lr)`` stepped once per unit.

    Unit: ``unit``. Value at the first update: ``lr`` (and again at each restart).
    """

    lr: float = _s.rate(doc="value at the start of every period")
    period: int = _s.integer(ge=1, doc="length of the first period (torch's T_0)")
    period_mult: int = _s.integer(1, ge=1, doc="growth of the period (torch's T_mult)")
    min_lr: float = _s.rate(0.0, doc="value approached at the end of every period")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        t = _s.count(state, self.unit)
        period = self.period
        if self.period_mult == 1:
            t %= period
        else:
            while t >= period:
                t -= period
                period *= self.period_mult
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / period)) / 2


@_s.learning_rate_schedule
class OneCycle(shapes.OneCycleShape, AbstractLearningRateScheduler):
    """The 1cycle policy (Smith 2018), exactly as ``torch.optim.lr_scheduler.OneCycleLR``.

    From ``initial = max_lr / div_factor`` up to ``max_lr`` at ``t = pct_start *
    total_steps - 1``, then down to ``initial / final_div_factor`` at ``t =
    total_steps - 1`` (``t = curr_iter - 1``), each phase a cosine (``anneal=
    "cos"``) or a line (``"linear"``). ``three_phase``: up, back down to
    ``initial`` at ``2 * pct_start * total_steps - 2``, then down to the final
    value. After ``total_steps - 1`` the final value holds (torch raises).
    Pair it with :class:`mxopt.Momentum.OneCycle` for the inverse momentum cycle.

    Unit: ``unit``. Value at the first update: ``max_lr / div_factor``.
    """

    max_lr: float = _s.rate(doc="the peak")
    total_steps: int = _s.integer(ge=2, doc="length of the cycle")
    pct_start: float = _s.number(0.3, gt=0.0, lt=1.0, doc="fraction of the cycle going up")
    anneal: str = _s.choice("cos", tuple(formulas.ANNEAL), doc="'cos' or 'linear' phases")
    div_factor: float = _s.number(25.0, gt=0.0, doc="initial = max_lr / div_factor")
    final_div_factor: float = _s.number(1e4, gt=0.0, doc="final = initial / final_div_factor")
    three_phase: bool = flag(False, doc="go back to initial before the final annealing")
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        formulas.check_one_cycle(self, self.total_steps, self.pct_start, self.three_phase)

    def cycle_values(self) -> tuple:
        """``(initial, peak, final)`` learning rates."""
        initial = self.max_lr / self.div_factor
        return (initial, self.max_lr, initial / self.final_div_factor)


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


@_s.learning_rate_schedule
class Cyclic(shapes.CyclicShape, AbstractLearningRateScheduler):
    """Cyclical learning rate (Smith 2017), as ``torch.optim.lr_scheduler.CyclicLR``.

    A triangle from ``base_lr`` up to ``max_lr`` over ``step_size_up`` and back
    over ``step_size_down`` (default: the same), repeated; the triangle's height
    is scaled by 1 (``"triangular"``), halved every cycle (``"triangular2"``), or
    by ``gamma ** t`` (``"exp_range"``). ``t = curr_iter - 1``. With
    ``step_size_up = P``, Thinc's ``cyclic_triangular(base_lr, max_lr, P)`` at
    its step ``s`` is this schedule at ``t = s + 1``. Pair it with
    :class:`mxopt.Momentum.Cyclic` for torch's ``cycle_momentum``.

    Unit: ``unit``. Value at the first update: ``base_lr``.
    """

    base_lr: float = _s.rate(doc="bottom of the cycle")
    max_lr: float = _s.rate(doc="top of the cycle (before scaling)")
    step_size_up: int = _s.integer(2000, ge=1, doc="t from bottom to top")
    step_size_down: int | None = attrs.field(
        default=None, converter=attrs.converters.optional(to_int), validator=_s.optional_integer
    )
    mode: str = _s.choice("triangular", _CYCLIC_MODES, doc="how the height changes")
    gamma: float = _s.number(1.0, gt=0.0, le=1.0, doc="exp_range's decay per t")
    scale_mode: str | None = attrs.field(default=None)
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        formulas.check_scale_mode(self)

    def value(self, state: OptimizationState) -> float:
        scale, amplitude = self.cycle_height(state)
        return self.base_lr + (self.max_lr - self.base_lr) * scale * amplitude


@_s.learning_rate_schedule
class SlantedTriangular(AbstractLearningRateScheduler):
    """Thinc's ``slanted_triangular`` (Howard & Ruder's ULMFiT schedule).

    With ``s = t + 1`` (``t = curr_iter - 1``; Thinc increments before its first
    value), ``cut = int(num_steps * cut_frac)``:
    ``p = s / cut`` for ``s < cut``, else ``p = 1 - (s - cut) / (cut * (1 /
    cut_frac - 1))``, and the value is ``max_lr * (1 + p * (ratio - 1)) /
    ratio``: up from ``max_lr / ratio`` to ``max_lr`` at ``s = cut``, then down
    to ``max_lr / ratio`` at ``s ~ num_steps``. After that it stays at
    ``max_lr / ratio`` (``p >= 0``); Thinc's keeps falling and turns negative.

    Unit: ``unit``. Value at the first update: ``max_lr * (1 + (ratio - 1) /
    cut) / ratio``.
    """

    max_lr: float = _s.rate(doc="the peak")
    num_steps: int = _s.integer(ge=1, doc="length of the schedule")
    cut_frac: float = _s.number(0.1, gt=0.0, lt=1.0, doc="fraction of the steps going up")
    ratio: float = _s.number(32.0, ge=1.0, doc="max_lr / lowest value")
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        if int(self.num_steps * self.cut_frac) < 1:
            raise _s.invalid(
                self,
                f"num_steps * cut_frac must be >= 1, got num_steps={shown(self.num_steps)} and "
                f"cut_frac={shown(self.cut_frac)}",
            )

    def value(self, state: OptimizationState) -> float:
        s = _s.count(state, self.unit) + 1
        cut = int(self.num_steps * self.cut_frac)
        if s < cut:
            p = s / cut
        else:
            p = max(1 - ((s - cut) / (cut * (1 / self.cut_frac - 1))), 0.0)
        return self.max_lr * (1 + p * (self.ratio - 1)) * (1 / self.ratio)

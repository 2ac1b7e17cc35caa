"""Decaying learning-rate schedules of torch.optim, optax and Thinc.

They count the zero-based ``t = curr_iter - 1`` (or ``curr_epoch - 1`` with
``unit="epoch"``), so the first update gets the value at ``t = 0``, as torch
(``last_epoch`` 0), optax (``count`` 0) and Thinc (step 0) do. :class:`Plateau` reads the
scores the loop records instead.
"""

from __future__ import annotations

import bisect

import attrs

from mxopt.core.checks import owner_name, shown, to_float
from mxopt.core.fields import flag, hyperparameter
from mxopt.core.schedule import AbstractLearningRateScheduler, value_at
from mxopt.core.state import OptimizationState
from mxopt.schedules import fields as _s
from mxopt.schedules import formulas, shapes

__all__ = [
    "Step",
    "MultiStep",
    "Exponential",
    "Linear",
    "Polynomial",
    "CosineAnnealing",
    "WarmupCosine",
    "Decaying",
    "Compounding",
    "WarmupLinear",
    "PiecewiseConstant",
    "Plateau",
]


@_s.learning_rate_schedule
class Step(AbstractLearningRateScheduler):
    """Step decay: :math:`\\text{lr}\\cdot\\gamma^{\\lfloor t / \\text{step\\_size}\\rfloor}`.

    ``t = curr_iter - 1`` (``curr_epoch - 1`` with ``unit="epoch"``). Same as
    ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` after ``t`` calls of
    ``scheduler.step()``.

    Unit: ``unit`` (iteration by default). Value at the first update: ``lr``.
    """

    lr: float = _s.rate(doc="learning rate at t = 0")
    step_size: int = _s.integer(ge=1, doc="t between two decays")
    gamma: float = _s.number(0.1, gt=0.0, doc="multiplier at each decay")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        return self.lr * formulas.safe_pow(self.gamma, _s.count(state, self.unit) // self.step_size)


@_s.learning_rate_schedule
class MultiStep(AbstractLearningRateScheduler):
    """Decay at milestones: :math:`\\text{lr}\\cdot\\gamma^{\\#\\{m \\le t\\}}`.

    ``t = curr_iter - 1`` (or ``curr_epoch - 1``). Same as
    ``torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)``.

    Unit: ``unit``. Value at the first update: ``lr``.
    """

    lr: float = _s.rate(doc="learning rate at t = 0")
    milestones: tuple = _s.steps_list(doc="t at which the rate is multiplied by gamma")
    gamma: float = _s.number(0.1, gt=0.0, doc="multiplier at each milestone")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        k = bisect.bisect_right(self.milestones, _s.count(state, self.unit))
        return self.lr * formulas.safe_pow(self.gamma, k)


def _optional_rate(instance, attribute, value):
    if value is not None:
        _s.check_real(owner_name(instance), attribute.name, value, ge=0.0)


@_s.learning_rate_schedule
class Exponential(AbstractLearningRateScheduler):
    """Exponential decay from ``t = 0``: :math:`\\text{lr}\\cdot\\gamma^{t / \\text{steps}}`.

    ``t = curr_iter - 1`` (or ``curr_epoch - 1``); the exponent is
    :math:`\\lfloor t/\\text{steps}\\rfloor` with ``staircase``. With ``end``,
    the value is clipped there (a floor when ``gamma < 1``, a ceiling when
    ``gamma > 1``). This is ``optax.exponential_decay(lr, steps, gamma,
    staircase=staircase, end_value=end)`` and, with ``steps=1``,
    ``torch.optim.lr_scheduler.ExponentialLR(gamma)``. Unlike MXNet.jl's
    :class:`Exp` (whose first update already sees ``gamma ** 1``), the first
    update gets ``lr``.

    Unit: ``unit``. Value at the first update: ``lr`` (or ``end`` if that is
    past ``lr`` in the direction of the decay).
    """

    lr: float = _s.rate(doc="learning rate at t = 0")
    gamma: float = _s.number(gt=0.0, doc="decay rate per `steps`")
    steps: int = _s.integer(1, ge=1, doc="t over which the rate is multiplied by gamma")
    staircase: bool = flag(False, doc="decay in whole multiples of steps")
    end: float | None = attrs.field(
        default=None, converter=attrs.converters.optional(to_float), validator=_optional_rate
    )
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        t = _s.count(state, self.unit)
        p = t // self.steps if self.staircase else t / self.steps
        lr = self.lr * formulas.safe_pow(self.gamma, p)
        if self.end is not None:
            lr = max(lr, self.end) if self.gamma < 1 else min(lr, self.end)
        return lr


@_s.learning_rate_schedule
class Linear(shapes.LinearShape, AbstractLearningRateScheduler):
    """A straight line from ``start`` to ``end`` over ``steps``, then ``end``.

    :math:`\\text{start} + (\\text{end} - \\text{start}) \\min(t, \\text{steps}) /
    \\text{steps}` with ``t = curr_iter - 1`` (or ``curr_epoch - 1``). Same as
    ``optax.linear_schedule(start, end, steps)`` and, for ``start = lr * a``,
    ``end = lr * b``, ``torch.optim.lr_scheduler.LinearLR(start_factor=a,
    end_factor=b, total_iters=steps)``.

    Unit: ``unit``. Value at the first update: ``start``.
    """

    start: float = _s.rate(doc="value at t = 0")
    end: float = _s.rate(doc="value from t = steps on")
    steps: int = _s.integer(ge=1, doc="length of the ramp")
    unit: str = _s.unit_field()


@_s.learning_rate_schedule
class Polynomial(AbstractLearningRateScheduler):
    """Polynomial decay: :math:`(\\text{start} - \\text{end})(1 - \\min(t, S)/S)^p + \\text{end}`.

    ``S = steps``, ``p = power``, ``t = curr_iter - 1`` (or ``curr_epoch - 1``).
    Same as ``optax.polynomial_schedule(start, end, power, steps)``; with
    ``end = 0``, ``torch.optim.lr_scheduler.PolynomialLR(total_iters=steps,
    power=power)``.

    Unit: ``unit``. Value at the first update: ``start``.
    """

    start: float = _s.rate(doc="value at t = 0")
    end: float = _s.rate(doc="value from t = steps on")
    steps: int = _s.integer(ge=1, doc="length of the decay")
    power: float = _s.number(1.0, gt=0.0, doc="exponent")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        t = min(_s.count(state, self.unit), self.steps)
        return (self.start - self.end) * (1 - t / self.steps) ** self.power + self.end


@_s.learning_rate_schedule
class CosineAnnealing(AbstractLearningRateScheduler):
    """Half a cosine from ``lr`` to ``min_lr`` over ``steps``, then ``min_lr``.

    :math:`\\eta_{min} + (\\text{lr} - \\eta_{min})(1 + \\cos(\\pi t / \\text{steps}))/2`
    for ``t = curr_iter - 1 <= steps`` (or ``curr_epoch - 1``). Same as
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=steps, eta_min=min_lr)``
    up to ``T_max`` (after it torch's cosine climbs back up; this one stays at
    ``min_lr``, use :class:`CosineRestarts` for restarts) and as
    ``optax.cosine_decay_schedule(lr, steps, alpha=min_lr / lr)``.

    Unit: ``unit``. Value at the first update: ``lr``.
    """

    lr: float = _s.rate(doc="value at t = 0")
    steps: int = _s.integer(ge=1, doc="length of the half cosine (torch's T_max)")
    min_lr: float = _s.rate(0.0, doc="value from t = steps on (torch's eta_min)")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        return formulas.cosine(self.lr, self.min_lr, _s.count(state, self.unit), self.steps)


@_s.learning_rate_schedule
class WarmupCosine(AbstractLearningRateScheduler):
    """Linear warmup from ``init_lr`` to ``peak_lr``, then a cosine down to ``end_lr``.

    With ``t = curr_iter - 1`` (or ``curr_epoch - 1``), ``W = warmup_steps``
    and ``D = decay_steps`` (the whole schedule, warmup included, as optax):

    * ``t < W``: :math:`\\text{init} + (\\text{peak} - \\text{init})\\, t / W`;
    * ``t >= W``: :math:`\\text{end} + (\\text{peak} - \\text{end})
      (1 + \\cos(\\pi \\min(t - W, D - W) / (D - W)))/2`.

    Same as ``optax.warmup_cosine_decay_schedule(init_lr, peak_lr, W, D,
    end_lr)``, and as ``Warmup(CosineAnnealing(peak_lr, D - W, end_lr), W,
    begin=init_lr)``.

    Unit: ``unit``. Value at the first update: ``init_lr`` (``peak_lr`` when
    ``warmup_steps == 0``).
    """

    peak_lr: float = _s.rate(doc="value at the end of the warmup")
    warmup_steps: int = _s.integer(ge=0, doc="length of the warmup")
    decay_steps: int = _s.integer(ge=1, doc="length of warmup and decay together")
    init_lr: float = _s.rate(0.0, doc="value at t = 0")
    end_lr: float = _s.rate(0.0, doc="value from t = decay_steps on")
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        if self.decay_steps <= self.warmup_steps:
            raise _s.invalid(
                self,
                f"decay_steps must be > warmup_steps (it includes the warmup), got "
                f"decay_steps={shown(self.decay_steps)} and "
                f"warmup_steps={shown(self.warmup_steps)}",
            )

    def value(self, state: OptimizationState) -> float:
        t = _s.count(state, self.unit)
        w = self.warmup_steps
        if t < w:
            return self.init_lr + (self.peak_lr - self.init_lr) * t / w
        return formulas.cosine(self.peak_lr, self.end_lr, t - w, self.decay_steps - w)


@_s.learning_rate_schedule
class Decaying(AbstractLearningRateScheduler):
    """Thinc's ``decaying``: :math:`\\text{lr} / (1 + \\text{decay}\\,(t_0 + t))`.

    ``t = curr_iter - 1`` (Thinc's step; or ``curr_epoch - 1``), ``t0`` is
    Thinc's ``t`` argument. ``Decaying(lr, decay)`` at the ``k``-th update is
    the ``k``-th value of ``thinc.api.decaying(lr, decay)``.

    Unit: ``unit``. Value at the first update: ``lr / (1 + decay * t0)``.
    """

    lr: float = _s.rate(doc="value at t0 + t = 0")
    decay: float = _s.number(gt=0.0, doc="decay rate")
    t0: int = _s.integer(0, ge=0, doc="Thinc's t: where the count starts")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        return self.lr * (1.0 / (1.0 + self.decay * (self.t0 + _s.count(state, self.unit))))


@_s.learning_rate_schedule
class Compounding(AbstractLearningRateScheduler):
    """Thinc's ``compounding``: ``start * compound ** t`` clipped at ``stop``.

    ``t = curr_iter - 1`` (or ``curr_epoch - 1``). The clip is a ceiling when
    ``start < stop`` and a floor otherwise. ``thinc.api.compounding(start,
    stop, compound)`` gives the same sequence (Thinc multiplies one step at a
    time; the values agree to rounding). Often used for batch sizes.

    Unit: ``unit``. Value at the first update: ``start`` (clipped at ``stop``).
    """

    start: float = _s.rate(doc="value at t = 0")
    stop: float = _s.rate(doc="value the sequence stops at")
    compound: float = _s.number(gt=0.0, doc="multiplier per t")
    unit: str = _s.unit_field()

    def value(self, state: OptimizationState) -> float:
        value = self.start * formulas.safe_pow(self.compound, _s.count(state, self.unit))
        return max(value, self.stop) if self.start > self.stop else min(value, self.stop)


@_s.learning_rate_schedule
class WarmupLinear(AbstractLearningRateScheduler):
    """Thinc's ``warmup_linear``: a linear warmup from 0, then a linear decline to 0.

    With ``t = curr_iter - 1`` (or ``curr_epoch - 1``): ``lr * t / W`` for
    ``t < W = warmup_steps``, then ``lr * max(0, (T - t) / (T - W))`` with
    ``T = total_steps``. ``thinc.api.warmup_linear(lr, W, T)`` gives the same
    sequence.

    Unit: ``unit``. Value at the first update: 0 (``lr`` when ``warmup_steps == 0``).
    """

    lr: float = _s.rate(doc="the peak, reached at t = warmup_steps")
    warmup_steps: int = _s.integer(ge=0, doc="length of the warmup")
    total_steps: int = _s.integer(ge=1, doc="t at which the value reaches 0")
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        if self.total_steps <= self.warmup_steps:
            raise _s.invalid(
                self,
                f"total_steps must be > warmup_steps, got total_steps={shown(self.total_steps)} "
                f"and warmup_steps={shown(self.warmup_steps)}",
            )

    def value(self, state: OptimizationState) -> float:
        t = _s.count(state, self.unit)
        if t < self.warmup_steps:
            factor = t / max(1, self.warmup_steps)
        else:
            factor = max(
                0.0, (self.total_steps - t) / max(1.0, self.total_steps - self.warmup_steps)
            )
        return factor * self.lr


@_s.learning_rate_schedule
class PiecewiseConstant(AbstractLearningRateScheduler):
    """``values[i]`` where ``i`` is the number of ``boundaries`` ``<= t``.

    ``t = curr_iter - 1`` (or ``curr_epoch - 1``); ``values`` has one more
    entry than ``boundaries``. optax's ``piecewise_constant_schedule(v0, {b:
    scale})`` is this with ``values`` the running products of the scales.

    Unit: ``unit``. Value at the first update: ``values[0]``.
    """

    values: tuple = _s.numbers_list(ge=0.0, doc="value before the first boundary, then after each")
    boundaries: tuple = _s.steps_list(doc="t at which the next value starts")
    unit: str = _s.unit_field()

    def __attrs_post_init__(self):
        if len(self.values) != len(self.boundaries) + 1:
            raise _s.invalid(
                self,
                f"needs one more value than boundaries, got {len(self.values)} values and "
                f"{len(self.boundaries)} boundaries",
            )

    def value(self, state: OptimizationState) -> float:
        return self.values[bisect.bisect_right(self.boundaries, _s.count(state, self.unit))]


_PLATEAU_MODES = ("min", "max")


@_s.learning_rate_schedule
class Plateau(AbstractLearningRateScheduler):
    """Reduce the learning rate when a score stops improving (torch's ReduceLROnPlateau).

    The loop reports scores with ``state.record_score(value)`` (e.g. the
    validation loss after each epoch); the history lives in the state, so this
    stays a pure function of it and survives saving and restoring the state.
    Replaying the history as torch does: a score is an improvement when it beats
    the best so far by ``threshold`` (relative: ``best * (1 - threshold)`` in
    ``"min"`` mode, ``best * (1 + threshold)`` in ``"max"`` mode; absolute:
    ``best -/+ threshold``); more than ``patience`` scores in a row without an
    improvement reduce the rate once, then ``cooldown`` scores are ignored. After
    ``k`` reductions the value is ``lr`` (a number, or any schedule's value, as
    Thinc's ``plateau`` wrapping a schedule) multiplied ``k`` times by
    ``factor``, never below ``min_lr``, a reduction smaller than ``eps`` being
    skipped (as torch). NaN scores are never improvements.

    Same as ``torch.optim.lr_scheduler.ReduceLROnPlateau(mode, factor,
    patience, threshold, threshold_mode, cooldown, min_lr, eps)`` with
    ``scheduler.step(score)`` where the loop calls ``state.record_score(score)``.

    Unit: epoch (it changes only when a score is recorded, usually once per
    epoch). Value at the first update: ``lr`` (no scores yet).
    """

    unit = "epoch"
    lr: float = hyperparameter(ge=0.0, doc="the rate before any reduction (or a schedule)")
    mode: str = _s.choice("min", _PLATEAU_MODES, doc="lower scores are better ('min') or higher")
    factor: float = _s.number(0.1, gt=0.0, lt=1.0, doc="multiplier at each reduction")
    patience: int = _s.integer(10, ge=0, doc="scores without improvement tolerated")
    threshold: float = _s.number(1e-4, ge=0.0, doc="how much better a score must be")
    threshold_mode: str = _s.choice("rel", ("rel", "abs"), doc="threshold relative or absolute")
    cooldown: int = _s.integer(0, ge=0, doc="scores ignored after a reduction")
    min_lr: float = _s.rate(0.0, doc="the rate never goes below it")
    eps: float = _s.number(1e-8, ge=0.0, doc="smaller reductions are skipped")

    def reductions(self, state: OptimizationState) -> int:
        """How many reductions the recorded scores have caused."""
        return formulas.plateau_reductions(
            state.scores,
            self.mode,
            self.threshold,
            self.threshold_mode,
            self.patience,
            self.cooldown,
        )

    def value(self, state: OptimizationState) -> float:
        lr = float(value_at(self.lr, state))
        for _ in range(self.reductions(state)):
            new = max(lr * self.factor, self.min_lr)
            if lr - new > self.eps:
                lr = new
        return lr

"""MXNet.jl's learning-rate schedules and MXNet's (Python) ones, exactly as they count.

* MXNet.jl's :class:`Fixed`, :class:`Exp`, :class:`Inv`: ``t = curr_epoch`` or
  ``curr_iter``, so the first update sees ``t = 1``.
* MXNet's :class:`Factor`, :class:`MultiFactor`, :class:`Poly`, :class:`Cosine`, counting
  ``n = curr_iter`` (MXNet's ``num_update``, 1 at the first update), with the values
  MXNet gives for increasing queries.
"""

from __future__ import annotations

import bisect
import math

from mxopt.core.checks import shown
from mxopt.core.fields import flag, hyperparameter
from mxopt.core.schedule import AbstractLearningRateScheduler
from mxopt.core.state import OptimizationState
from mxopt.schedules import fields as _s
from mxopt.schedules import formulas

__all__ = ["Fixed", "Exp", "Inv", "Factor", "MultiFactor", "Poly", "Cosine"]


@_s.learning_rate_schedule
class Fixed(AbstractLearningRateScheduler):
    """A constant learning rate: :math:`\\eta_t = \\eta_0`.

    Unit: none. Value at the first update: ``lr``.
    """

    unit = "none"
    lr: float = hyperparameter(ge=0.0, schedulable=False, doc="the learning rate")

    def value(self, state: OptimizationState) -> float:
        return self.lr


def _decay_count(state: OptimizationState, on_iteration: bool) -> int:
    return state.curr_iter if on_iteration else state.curr_epoch


@_s.learning_rate_schedule
class Exp(AbstractLearningRateScheduler):
    """Exponential decay: :math:`\\eta_t = \\eta_0 \\gamma^t`.

    ``t`` is ``curr_epoch``, or ``curr_iter`` when ``decay_on_iteration`` is
    true. Because the training loop advances the state before the updates, the
    first update already sees ``t = 1``: the whole first epoch uses
    :math:`\\eta_0 \\gamma` (epoch decay), and the first update uses
    :math:`\\eta_0 \\gamma` (iteration decay). :math:`\\eta_0` itself is only
    the value before training (``t = 0``). This is MXNet.jl's rule.

    Unit: epoch (iteration with ``decay_on_iteration``). Value at the first
    update: ``lr * gamma``.

    Args:
        lr: :math:`\\eta_0`, the learning rate at ``t = 0`` (>= 0).
        gamma: decay factor in (0, 1).
        decay_on_iteration: count iterations instead of epochs.
    """

    lr: float = hyperparameter(ge=0.0, schedulable=False, doc="learning rate at t = 0")
    gamma: float = hyperparameter(0.9, gt=0.0, lt=1.0, schedulable=False, doc="decay factor")
    decay_on_iteration: bool = flag(False, doc="decay on curr_iter instead of curr_epoch")

    @property
    def unit(self) -> str:
        return "iteration" if self.decay_on_iteration else "epoch"

    def value(self, state: OptimizationState) -> float:
        return self.lr * self.gamma ** _decay_count(state, self.decay_on_iteration)


@_s.learning_rate_schedule
class Inv(AbstractLearningRateScheduler):
    """Inverse decay: :math:`\\eta_t = \\eta_0 (1 + \\gamma t)^{-p}`.

    ``t`` is ``curr_epoch``, or ``curr_iter`` when ``decay_on_iteration`` is
    true. The first update sees ``t = 1``, so its value is
    :math:`\\eta_0 (1 + \\gamma)^{-p}` (see :class:`Exp`).

    Unit: epoch (iteration with ``decay_on_iteration``). Value at the first
    update: ``lr * (1 + gamma) ** -power``.

    Args:
        lr: :math:`\\eta_0` (>= 0).
        gamma: in (0, 1).
        power: :math:`p` (>= 0).
        decay_on_iteration: count iterations instead of epochs.
    """

    lr: float = hyperparameter(ge=0.0, schedulable=False, doc="learning rate at t = 0")
    gamma: float = hyperparameter(0.9, gt=0.0, lt=1.0, schedulable=False, doc="decay rate")
    power: float = hyperparameter(0.5, ge=0.0, schedulable=False, doc="decay exponent p")
    decay_on_iteration: bool = flag(False, doc="decay on curr_iter instead of curr_epoch")

    @property
    def unit(self) -> str:
        return "iteration" if self.decay_on_iteration else "epoch"

    def value(self, state: OptimizationState) -> float:
        t = _decay_count(state, self.decay_on_iteration)
        return self.lr * (1.0 + self.gamma * t) ** (-self.power)


def _check_mxnet_warmup(self) -> None:
    if self.warmup_begin_lr > self.base_lr:
        raise _s.invalid(
            self,
            f"warmup_begin_lr must be <= base_lr, got warmup_begin_lr="
            f"{shown(self.warmup_begin_lr)} and base_lr={shown(self.base_lr)}",
        )


def _mxnet_warmup(self, n: int) -> float:
    """MXNet's ``LRScheduler.get_warmup_lr(n)`` for ``n < warmup_steps``."""
    if self.warmup_mode == "constant":
        return self.warmup_begin_lr
    increase = (self.base_lr - self.warmup_begin_lr) * float(n) / float(self.warmup_steps)
    return self.warmup_begin_lr + increase


@_s.learning_rate_schedule
class Factor(AbstractLearningRateScheduler):
    """MXNet's ``FactorScheduler``: multiply by ``factor`` every ``step`` updates.

    With ``n = curr_iter`` (MXNet's ``num_update``; 1 at the first update):

    * ``n < warmup_steps``: the warmup, ``warmup_begin_lr + (base_lr -
      warmup_begin_lr) * n / warmup_steps`` (``"linear"``) or ``warmup_begin_lr``
      (``"constant"``);
    * otherwise :math:`\\max(\\text{base\\_lr}\\cdot\\text{factor}^{k},
      \\text{stop\\_factor\\_lr})` with :math:`k = \\lfloor (n-1)/\\text{step}
      \\rfloor`, computed as MXNet does, by repeated multiplication.

    The first decay is at ``n = step + 1`` (MXNet's docstring says
    ``floor(n/step)``, which is off by one), and ``k`` is not offset by the
    warmup. MXNet's object mutates itself and returns stale values for
    decreasing queries; this one gives, for every ``n``, the value MXNet gives
    when queried with increasing ``n``.

    Unit: iteration. Value at the first update (``n = 1``): ``base_lr``, or
    ``warmup_begin_lr + (base_lr - warmup_begin_lr) / warmup_steps`` with a
    linear warmup of more than one step.

    Args:
        step: updates between decays (>= 1).
        factor: in (0, 1].
        stop_factor_lr: the floor (>= 0).
        base_lr: the learning rate after warmup (>= 0).
        warmup_steps: (>= 0), warmup_begin_lr (<= base_lr), warmup_mode
            (``"linear"`` or ``"constant"``): as MXNet.
    """

    unit = "iteration"
    step: int = _s.integer(ge=1, doc="updates between two decays")
    factor: float = _s.number(1.0, gt=0.0, le=1.0, doc="multiplier at each decay")
    stop_factor_lr: float = _s.rate(1e-8, doc="the learning rate never goes below it")
    base_lr: float = _s.rate(0.01, doc="learning rate after the warmup")
    warmup_steps: int = _s.integer(0, ge=0, doc="updates of warmup")
    warmup_begin_lr: float = _s.rate(0.0, doc="learning rate at n = 0 of the warmup")
    warmup_mode: str = _s.choice("linear", _s.WARMUP_MODES)

    __attrs_post_init__ = _check_mxnet_warmup

    def value(self, state: OptimizationState) -> float:
        n = state.curr_iter
        if n < self.warmup_steps:
            return _mxnet_warmup(self, n)
        k = (n - 1) // self.step if n > 0 else 0
        return formulas.sequential_decay(self.base_lr, self.factor, k, self.stop_factor_lr)


@_s.learning_rate_schedule
class MultiFactor(AbstractLearningRateScheduler):
    """MXNet's ``MultiFactorScheduler``: multiply by ``factor`` after each step in ``step``.

    With ``n = curr_iter``: the MXNet warmup (see :class:`Factor`) for
    ``n < warmup_steps``, then :math:`\\text{base\\_lr}\\cdot\\text{factor}^{k}`,
    ``k`` the number of entries of ``step`` strictly below ``n`` (so each decay
    happens at ``n = s + 1``), by repeated multiplication as MXNet. No floor.

    Unit: iteration. Value at the first update: ``base_lr`` (or the warmup's
    ``n = 1`` value).

    Args:
        step: strictly increasing list of integers >= 1.
        factor: in (0, 1].
        base_lr, warmup_steps, warmup_begin_lr, warmup_mode: as :class:`Factor`.
    """

    unit = "iteration"
    step: tuple = _s.steps_list(doc="updates after which the rate is multiplied by factor")
    factor: float = _s.number(1.0, gt=0.0, le=1.0, doc="multiplier at each decay")
    base_lr: float = _s.rate(0.01, doc="learning rate after the warmup")
    warmup_steps: int = _s.integer(0, ge=0, doc="updates of warmup")
    warmup_begin_lr: float = _s.rate(0.0, doc="learning rate at n = 0 of the warmup")
    warmup_mode: str = _s.choice("linear", _s.WARMUP_MODES)

    __attrs_post_init__ = _check_mxnet_warmup

    def value(self, state: OptimizationState) -> float:
        n = state.curr_iter
        if n < self.warmup_steps:
            return _mxnet_warmup(self, n)
        k = bisect.bisect_left(self.step, n)
        return formulas.sequential_decay(self.base_lr, self.factor, k)


def _check_max_update(self) -> None:
    _check_mxnet_warmup(self)
    if self.max_update <= self.warmup_steps:
        raise _s.invalid(
            self,
            f"max_update must be > warmup_steps, got max_update={shown(self.max_update)} "
            f"and warmup_steps={shown(self.warmup_steps)}",
        )


@_s.learning_rate_schedule
class Poly(AbstractLearningRateScheduler):
    """MXNet's ``PolyScheduler``: polynomial decay to ``final_lr`` at ``max_update``.

    With ``n = curr_iter``, ``w = warmup_steps`` and ``M = max_update - w``:
    the MXNet warmup (see :class:`Factor`) for ``n < w``, then

    .. math:: \\text{final} + (\\text{base} - \\text{final})
              \\left(1 - \\frac{n - w}{M}\\right)^{\\text{pwr}}

    for ``w <= n <= max_update``, and ``final_lr`` after (MXNet returns whatever
    it computed last there, which is ``final_lr`` for increasing queries).

    Unit: iteration. Value at the first update (``n = 1``, no warmup):
    ``final + (base - final) * (1 - 1/max_update) ** pwr``.

    Args:
        max_update: the update at which ``final_lr`` is reached (> warmup_steps).
        base_lr: (>= 0). pwr: the power (> 0). final_lr: (>= 0).
        warmup_steps, warmup_begin_lr, warmup_mode: as :class:`Factor`.
    """

    unit = "iteration"
    max_update: int = _s.integer(ge=1, doc="update at which final_lr is reached")
    base_lr: float = _s.rate(0.01, doc="learning rate at the end of the warmup")
    pwr: float = _s.number(2.0, gt=0.0, doc="power of the decay")
    final_lr: float = _s.rate(0.0, doc="learning rate from max_update on")
    warmup_steps: int = _s.integer(0, ge=0, doc="updates of warmup")
    warmup_begin_lr: float = _s.rate(0.0, doc="learning rate at n = 0 of the warmup")
    warmup_mode: str = _s.choice("linear", _s.WARMUP_MODES)

    __attrs_post_init__ = _check_max_update

    def value(self, state: OptimizationState) -> float:
        n = state.curr_iter
        if n < self.warmup_steps:
            return _mxnet_warmup(self, n)
        if n > self.max_update:
            return self.final_lr
        max_steps = self.max_update - self.warmup_steps
        return self.final_lr + (self.base_lr - self.final_lr) * pow(
            1 - float(n - self.warmup_steps) / float(max_steps), self.pwr
        )


@_s.learning_rate_schedule
class Cosine(AbstractLearningRateScheduler):
    """MXNet's ``CosineScheduler``: half a cosine from ``base_lr`` to ``final_lr``.

    With ``n = curr_iter``, ``w = warmup_steps`` and ``M = max_update - w``:
    the MXNet warmup (see :class:`Factor`) for ``n < w``, then

    .. math:: \\text{final} + (\\text{base} - \\text{final})
              \\frac{1 + \\cos(\\pi (n - w) / M)}{2}

    for ``w <= n <= max_update``, and ``final_lr`` after.

    Unit: iteration. Value at the first update (``n = 1``, no warmup):
    ``final + (base - final) * (1 + cos(pi / max_update)) / 2``, just below
    ``base_lr``. For torch.optim's cosine (first update exactly at the peak) see
    :class:`CosineAnnealing`.

    Args:
        max_update: (> warmup_steps). base_lr, final_lr: (>= 0).
        warmup_steps, warmup_begin_lr, warmup_mode: as :class:`Factor`.
    """

    unit = "iteration"
    max_update: int = _s.integer(ge=1, doc="update at which final_lr is reached")
    base_lr: float = _s.rate(0.01, doc="learning rate at the end of the warmup")
    final_lr: float = _s.rate(0.0, doc="learning rate from max_update on")
    warmup_steps: int = _s.integer(0, ge=0, doc="updates of warmup")
    warmup_begin_lr: float = _s.rate(0.0, doc="learning rate at n = 0 of the warmup")
    warmup_mode: str = _s.choice("linear", _s.WARMUP_MODES)

    __attrs_post_init__ = _check_max_update

    def value(self, state: OptimizationState) -> float:
        n = state.curr_iter
        if n < self.warmup_steps:
            return _mxnet_warmup(self, n)
        if n > self.max_update:
            return self.final_lr
        max_steps = self.max_update - self.warmup_steps
        return (
            self.final_lr
            + (self.base_lr - self.final_lr)
            * (1 + math.cos(math.pi * (n - self.warmup_steps) / max_steps))
            / 2
        )

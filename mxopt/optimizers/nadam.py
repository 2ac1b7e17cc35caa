"""Nadam: Adam with Nesterov momentum (Dozat, "Incorporating Nesterov Momentum into
Adam", ICLR 2016 workshop), in MXNet.jl's classic form.

A momentum schedule gives the pair :math:`(\\mu_t, \\mu_{t+1})` at the global
iteration ``t = curr_iter``; each weight keeps the running product :math:`P`
of the :math:`\\mu_t` it has seen (a per-weight scalar, committed only when an
update succeeds). For the ``k``-th update of a weight, with :math:`g` the
:func:`~mxopt.normalized_gradient`:

.. math::

    P &\\leftarrow P \\mu_t, \\qquad P' = P \\mu_{t+1} \\\\
    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
    n \\leftarrow \\beta_2 n + (1-\\beta_2) g^2 \\\\
    \\bar m &= (1-\\mu_t) \\frac{g}{1-P} + \\mu_{t+1} \\frac{m}{1-P'} \\\\
    W &\\leftarrow W - \\eta \\frac{\\bar m}{\\sqrt{n / (1-\\beta_2^k)} + \\epsilon}

The kernel gets the two coefficients of :math:`g` and :math:`m` and the
bias correction of :math:`n` folded on the host:
:math:`W \\leftarrow W - (a g + b m) / (\\sqrt{n} + \\epsilon\\sqrt{1-\\beta_2^k})`.
"""

from __future__ import annotations

import math
import numbers

import attrs
import numpy as np

from mxopt.core.checks import shown
from mxopt.core.fields import hyperparameter
from mxopt.core.schedule import AbstractMomentumScheduler
from mxopt.core.state import OptimizationState
from mxopt.kernels.kernel import Kernel, adam_moments_element, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
    state_dtype_option,
)
from mxopt.schedules.momentum import Fixed, NadamScheduler, Null

__all__ = ["Nadam", "NadamOptions"]


def nadam_element(
    i, w, g, mean, var, rescale, clip, wd, decay, lr_g, lr_m, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    mean[i] = m
    var[i] = v
    w[i] = wi - (lr_g * gi + lr_m * m) / (np.sqrt(v) + eps)


NADAM_KERNEL = Kernel(
    name="nadam",
    state=("mean", "var"),
    cpu=nadam_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    mean[i] = m;
    var[i] = v;
    w[i] = wi - (lr_g * gi + lr_m * m) / (sqrt(v) + eps);
""",
)

#: The state a scheduler is probed at when it is set: the first update of a run.
_PROBE_STATE = OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)


def _momentum_pair(scheduler, state) -> tuple[float, float]:
    """``(mu_t, mu_{t+1})`` from ``scheduler`` at ``state``, checked."""
    pair = scheduler.value(state)
    if not (
        isinstance(pair, tuple)
        and len(pair) == 2
        and all(isinstance(mu, numbers.Real) and not isinstance(mu, bool) for mu in pair)
    ):
        raise TypeError(
            f"Nadam: momentum_scheduler must give a pair (mu_t, mu_t+1) like "
            f"Momentum.NadamScheduler, but {shown(scheduler)} gave {shown(pair)}"
        )
    mu_t, mu_next = float(pair[0]), float(pair[1])
    if not (0.0 <= mu_t <= 1.0 and 0.0 <= mu_next <= 1.0):
        raise ValueError(
            f"Nadam: momentum_scheduler {shown(scheduler)} gave ({shown(mu_t)}, {shown(mu_next)}) "
            f"at "
            f"curr_iter={state.curr_iter}; both momenta must be in [0, 1]"
        )
    return mu_t, mu_next


def _check_momentum_scheduler(instance, attribute, value):
    if value is None:
        return
    if not isinstance(value, AbstractMomentumScheduler) or isinstance(value, (Null, Fixed)):
        raise TypeError(
            f"Nadam: momentum_scheduler must be None or a scheduler giving a pair "
            f"(mu_t, mu_t+1), such as Momentum.NadamScheduler(mu0=0.99); got {shown(value)} "
            f"of type {type(value).__name__}"
        )
    _momentum_pair(value, _PROBE_STATE)


@options
class NadamOptions(AbstractOptimizerOptions):
    """Options of :class:`Nadam` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(
        0.99, ge=0.0, lt=1.0, doc="decay of the first moment; mu0 of the default schedule"
    )
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the root of the corrected n")
    weight_decay: float = hyperparameter(1e-5, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(False)
    momentum_scheduler: AbstractMomentumScheduler | None = attrs.field(
        default=None,
        validator=_check_momentum_scheduler,
        metadata={"doc": "gives (mu_t, mu_t+1); None: Momentum.NadamScheduler(mu0=beta1)"},
    )
    state_dtype: str = state_dtype_option()


@register
class Nadam(AbstractOptimizer):
    """Nadam (Dozat 2016) as MXNet.jl: Adam with a scheduled Nesterov momentum.

    ``Nadam(*, lr=1e-3, beta1=0.99, beta2=0.999, epsilon=1e-8, state_dtype="float32", grad_clip=0.0,
    weight_decay=1e-5, decoupled_weight_decay=False, grad_scale=1.0, maximize=False,
    lr_scheduler=None, momentum_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Timothy Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016
    workshop (no arXiv id), in MXNet.jl's form. For the ``k``-th update of a
    weight, with :math:`g` the :func:`~mxopt.normalized_gradient` and
    :math:`(\\mu_t, \\mu_{t+1})` the momentum scheduler's pair at the global
    ``t = curr_iter`` (by default ``Momentum.NadamScheduler(mu0=beta1)``:
    :math:`\\mu_s = \\beta_1(1 - 0.5 \\cdot 0.96^{0.004 s})`):

    .. math::

        P &\\leftarrow P\\mu_t, \\quad P' = P\\mu_{t+1}, \\quad
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        n \\leftarrow \\beta_2 n + (1-\\beta_2) g^2 \\\\
        W &\\leftarrow \\rho W - \\eta \\frac{(1-\\mu_t)\\, g/(1-P) + \\mu_{t+1}\\, m/(1-P')}
        {\\sqrt{n/(1-\\beta_2^k)} + \\epsilon}

    :math:`P` is the running product of the :math:`\\mu_t` this weight has
    seen (``WeightState.memory["mu_product"]``, starting at 1, kept only when
    an update succeeds). :math:`\\rho = 1 - \\eta\\lambda` with
    ``decoupled_weight_decay`` (and then :math:`g` has no L2 term), else 1.

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`n`), 8 bytes per float32
    parameter, plus :math:`P` as one Python float per weight.

    ``momentum_scheduler`` must give a pair, e.g.
    ``Momentum.NadamScheduler(mu0, delta, gamma, alpha)``; by default (None) it
    is ``Momentum.NadamScheduler(mu0=beta1)``, built from ``beta1`` at each
    update. ``Momentum.Fixed`` and ``Momentum.Null`` are rejected.

    Equivalents: ``torch.optim.NAdam(lr, betas=(b1, b2), eps, weight_decay,
    momentum_decay, decoupled_weight_decay)`` is ``Nadam(lr=lr, beta1=b1,
    beta2=b2, epsilon=eps, weight_decay=weight_decay,
    decoupled_weight_decay=decoupled_weight_decay,
    momentum_scheduler=Momentum.NadamScheduler(mu0=b1, delta=momentum_decay))``
    with ``batch_size=1`` and every weight updated once per iteration from
    ``curr_iter=1`` (torch counts steps per parameter; its 0.5 and 0.96 are
    NadamScheduler's ``gamma`` and ``alpha`` defaults). optax's ``nadam`` has
    no momentum schedule and is a different update.

    Deliberate differences from torch: MXNet.jl's ``beta1=0.99``, ``lr=1e-3`` and
    ``weight_decay=1e-5`` (torch: 0.9, 2e-3, 0).
    """

    Options = NadamOptions
    moment_signs = {"mean": True, "var": False}
    about = About(
        family="adam-family",
        same_as="MXNet.jl's `Nadam`; `torch.optim.NAdam` with a `NadamScheduler`",
        weight_decay="coupled, or decoupled",
        epsilon="outside the root",
        examples=({},),
    )
    has_memory = True

    def kernel(self) -> Kernel:
        return NADAM_KERNEL

    def _momenta(self, v) -> tuple[float, float]:
        scheduler = self.opts.momentum_scheduler
        if scheduler is None:
            scheduler = NadamScheduler(mu0=v.beta1)
        return _momentum_pair(scheduler, v.state)

    def next_memory(self, v, step, memory):
        mu_t, _ = self._momenta(v)
        return {"mu_product": memory.get("mu_product", 1.0) * mu_t}

    def kernel_scalars(self, v, step, memory):
        mu_t, mu_next = self._momenta(v)
        product = memory.get("mu_product", 1.0) * mu_t
        if not product < 1.0:
            raise ValueError(
                f"Nadam: the running product of the momenta reached {shown(product)} at "
                f"curr_iter={v.state.curr_iter}, so its bias correction 1 - product is 0; "
                f"use a schedule whose momenta stay below 1"
            )
        root = math.sqrt(1.0 - v.beta2**step)
        lr_root = v.lr * root
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "lr_g": lr_root * (1.0 - mu_t) / (1.0 - product),
            "lr_m": lr_root * mu_next / (1.0 - product * mu_next),
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "eps": v.epsilon * root,
        }  # fmt: skip

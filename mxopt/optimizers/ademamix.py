"""AdEMAMix (Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster,
Older", arXiv:2409.03137, 2024).

Adam whose first moment is a mixture of two exponential moving averages of the
gradient: Adam's fast one (bias-corrected) and a very slow one (decay
:math:`\\beta_3 \\approx 0.9999`, not bias-corrected, so it fills slowly) weighted by
:math:`\\alpha`. For the ``k``-th update of a weight:

.. math::

    m_1 &\\leftarrow \\beta_1 m_1 + (1-\\beta_1) g, \\qquad
    m_2 \\leftarrow \\beta_3 m_2 + (1-\\beta_3) g, \\qquad
    \\nu \\leftarrow \\beta_2 \\nu + (1-\\beta_2) g^2 \\\\
    W &\\leftarrow (1-\\eta\\lambda) W - \\eta
    \\frac{m_1/(1-\\beta_1^k) + \\alpha m_2}{\\sqrt{\\nu/(1-\\beta_2^k)} + \\epsilon}

The paper warms :math:`\\alpha` up linearly and :math:`\\beta_3` up from
:math:`\\beta_1` (linearly in the half-life) over the first updates; both are options.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.fields import hyperparameter, integer
from mxopt.kernels.kernel import (
    Kernel,
    adam_moments_element,
    cautious_keeps,
    ema_element,
    normalize_gradient_element,
)
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.cautious import CautiousUpdates, cautious_option, cautious_pair
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
    state_dtype_option,
)

__all__ = ["AdEMAMix", "AdEMAMixOptions", "alpha_warmup", "beta3_warmup"]


def alpha_warmup(k: int, alpha: float, steps: int) -> float:
    """The paper's linear warm-up of ``alpha``: ``min(k * alpha / steps, alpha)`` at
    update ``k`` (1 at the first); ``alpha`` itself when ``steps`` is 0."""
    if steps <= 0 or k >= steps:
        return alpha
    return k * alpha / steps


def beta3_warmup(k: int, beta1: float, beta3: float, steps: int) -> float:
    """The paper's warm-up of ``beta3`` at update ``k`` (1 at the first).

    .. math::

        \\beta_3(k) = \\min\\left(\\exp\\left(\\frac{\\ln\\beta_1 \\ln\\beta_3}
        {(1-k/T)\\ln\\beta_3 + (k/T)\\ln\\beta_1}\\right), \\beta_3\\right)

    that is, :math:`1/\\ln\\beta_3(k)` (proportional to the half-life of the average)
    goes linearly from :math:`1/\\ln\\beta_1` at :math:`k=0` to :math:`1/\\ln\\beta_3` at
    :math:`k=T`. ``beta3`` itself when ``steps`` (:math:`T`) is 0.
    """
    if steps <= 0 or k >= steps or beta3 <= beta1:
        return beta3  # the min() of the formula: it never exceeds beta3
    s = k / steps
    if beta1 == 0.0:  # the formula's limit as ln(beta1) -> -inf
        return beta3 ** (1.0 / s)
    log1, log3 = math.log(beta1), math.log(beta3)
    return min(math.exp(log1 * log3 / ((1.0 - s) * log3 + s * log1)), beta3)


def ademamix_element(
    i, w, g, mean, slow_mean, var, rescale, clip, wd, decay, lr, beta1, one_minus_beta1,
    beta2, one_minus_beta2, beta3, one_minus_beta3, alpha, correction1, correction2, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    s = beta3 * slow_mean[i] + one_minus_beta3 * gi
    mean[i] = m
    slow_mean[i] = s
    var[i] = v
    # the slow average is not bias-corrected: it is meant to fill in slowly
    w[i] = wi - lr * (m / correction1 + alpha * s) / (np.sqrt(v / correction2) + eps)


ADEMAMIX_KERNEL = Kernel(
    name="ademamix",
    state=("mean", "slow_mean", "var"),
    cpu=ademamix_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    const T s = beta3 * slow_mean[i] + one_minus_beta3 * gi;
    mean[i] = m;
    slow_mean[i] = s;
    var[i] = v;
    w[i] = wi - lr * (m / correction1 + alpha * s) / (sqrt(v / correction2) + eps);
""",
)


# -- cautious updates (mxopt.optimizers.cautious): u has the sign of its numerator
# m1 / (1 - beta1^k) + alpha m2, kept where that agrees with g.


def ademamix_cautious_count_element(
    i, w, g, mean, slow_mean, var, rescale, clip, wd, beta1, one_minus_beta1, beta2,
    one_minus_beta2, beta3, one_minus_beta3, alpha, correction1,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    s = ema_element(slow_mean[i], gi, beta3, one_minus_beta3)
    return np.float64(cautious_keeps(m / correction1 + alpha * s, gi)), np.float64(0)


ADEMAMIX_CAUTIOUS_COUNT_KERNEL = Kernel(
    name="ademamix_cautious_count",
    state=("mean", "slow_mean", "var"),
    cpu=ademamix_cautious_count_element,
    reduces=True,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    const T s = ema_element(slow_mean[i], gi, beta3, one_minus_beta3);
    return mx_pair{cautious_keeps(m / correction1 + alpha * s, gi) ? 1.0 : 0.0, 0.0};
""",
)


def ademamix_cautious_element(
    i, w, g, mean, slow_mean, var, rescale, clip, wd, decay, lr, beta1, one_minus_beta1,
    beta2, one_minus_beta2, beta3, one_minus_beta3, alpha, correction1, correction2, eps, scale,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    s = ema_element(slow_mean[i], gi, beta3, one_minus_beta3)
    mean[i] = m
    slow_mean[i] = s
    var[i] = v
    numerator = m / correction1 + alpha * s
    if cautious_keeps(numerator, gi):
        wi = wi - scale * lr * numerator / (np.sqrt(v / correction2) + eps)
    w[i] = wi


ADEMAMIX_CAUTIOUS_KERNEL = Kernel(
    name="ademamix_cautious",
    state=("mean", "slow_mean", "var"),
    cpu=ademamix_cautious_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    const T s = ema_element(slow_mean[i], gi, beta3, one_minus_beta3);
    mean[i] = m;
    slow_mean[i] = s;
    var[i] = v;
    const T numerator = m / correction1 + alpha * s;
    if (cautious_keeps(numerator, gi))
        wi = wi - scale * lr * numerator / (sqrt(v / correction2) + eps);
    w[i] = wi;
""",
)

ADEMAMIX_CAUTIOUS = cautious_pair(ADEMAMIX_CAUTIOUS_COUNT_KERNEL, ADEMAMIX_CAUTIOUS_KERNEL)


@options
class AdEMAMixOptions(AbstractOptimizerOptions):
    """Options of :class:`AdEMAMix` (defaults from the paper and optax.contrib.ademamix)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the fast first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    beta3: float = hyperparameter(0.9999, ge=0.0, lt=1.0, doc="decay of the slow first moment")
    alpha: float = hyperparameter(5.0, ge=0.0, doc="weight of the slow first moment")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the root of the second moment")
    alpha_warmup_steps: int = integer(
        0, ge=0, doc="updates of a weight over which alpha grows linearly from 0 (0: off)"
    )
    beta3_warmup_steps: int = integer(
        0, ge=0, doc="updates of a weight over which beta3 grows from beta1 (0: off)"
    )
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(True)
    cautious: bool = cautious_option()
    state_dtype: str = state_dtype_option()


@register
class AdEMAMix(CautiousUpdates, AbstractOptimizer):
    """AdEMAMix (Pagliardini et al. 2024): Adam with a second, very slow momentum.

    ``AdEMAMix(*, lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.9999, alpha=5.0,
    epsilon=1e-8, alpha_warmup_steps=0, beta3_warmup_steps=0, cautious=False, state_dtype="float32",
    grad_clip=0.0,
    weight_decay=0.0, decoupled_weight_decay=True, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Matteo Pagliardini, Pierre Ablin, David Grangier, "The AdEMAMix Optimizer:
    Better, Faster, Older", arXiv:2409.03137, 2024 (Algorithm 1). For the ``k``-th
    update of a weight (``k`` counts that weight's updates), with :math:`g` the
    :func:`~mxopt.normalized_gradient`:

    .. math::

        m_1 &\\leftarrow \\beta_1 m_1 + (1-\\beta_1) g, \\quad
        m_2 \\leftarrow \\beta_3(k) m_2 + (1-\\beta_3(k)) g, \\quad
        \\nu \\leftarrow \\beta_2 \\nu + (1-\\beta_2) g^2 \\\\
        W &\\leftarrow \\rho W - \\eta \\frac{\\hat m_1 + \\alpha(k) m_2}
        {\\sqrt{\\hat\\nu} + \\epsilon}

    with :math:`\\hat m_1 = m_1/(1-\\beta_1^k)` and :math:`\\hat\\nu = \\nu/(1-\\beta_2^k)`;
    the slow average :math:`m_2` is not bias-corrected (it fills in slowly, by
    design). :math:`\\rho = 1-\\eta\\lambda` with ``decoupled_weight_decay`` (the
    default, AdamW's decay as in the paper), and :math:`g` then has no L2 term; else
    :math:`\\rho = 1` and :math:`\\lambda W` is in :math:`g`.

    Warm-ups (the paper's schedulers, for long runs where a slow average that starts
    large is unstable), both off by default:

    * ``alpha_warmup_steps`` :math:`T_\\alpha > 0`:
      :math:`\\alpha(k) = \\min(k\\alpha/T_\\alpha, \\alpha)`, else :math:`\\alpha`;
    * ``beta3_warmup_steps`` :math:`T_\\beta > 0`: :math:`\\beta_3(k) =
      \\min(\\exp(\\ln\\beta_1\\ln\\beta_3 / ((1-k/T_\\beta)\\ln\\beta_3 +
      (k/T_\\beta)\\ln\\beta_1)), \\beta_3)`: it starts from :math:`\\beta_1` and its
      half-life grows linearly to :math:`\\beta_3`'s at :math:`k = T_\\beta`
      (:func:`beta3_warmup`), else :math:`\\beta_3`.

    The paper uses :math:`T_\\alpha = T_\\beta` = the length of the run. The warm-ups
    count the weight's own updates ``k`` (like the bias corrections, and like
    optax, whose schedules see its update count), not the global iteration; for a
    warm-up on the global iteration, give ``alpha`` or ``beta3`` a schedule instead.

    ``cautious=True``: cautious updates (Liang, Chen, Liu & Liu, "Cautious Optimizers",
    arXiv:2411.16085, 2024; :mod:`mxopt.optimizers.cautious`): with :math:`u` the fraction
    above, the weight moves by :math:`-\\eta\\, \\frac{n}{\\lVert\\phi\\rVert_0 + 1}
    (u \\odot \\phi)`, :math:`\\phi = [u \\odot g > 0]`, per tensor of :math:`n` elements;
    the three averages and the decay are as without it. (pytorch_optimizer's
    ``AdEMAMix(cautious=True)`` masks only the fast average's part of :math:`u`.)

    State: ``"mean"`` (:math:`m_1`), ``"slow_mean"`` (:math:`m_2`) and ``"var"``
    (:math:`\\nu`), 12 bytes per float32 parameter (Adam's plus 4).

    Equivalents, with ``batch_size=1`` (torch.optim has no AdEMAMix):
    ``optax.contrib.ademamix(learning_rate, b1, b2, b3, alpha, eps,
    weight_decay=wd)`` is ``AdEMAMix(lr=learning_rate, beta1=b1, beta2=b2,
    beta3=b3, alpha=alpha, epsilon=eps, weight_decay=wd)`` (optax's defaults are
    the same). optax calls its ``alpha`` and ``b3`` schedules
    with its update count, 0 at the first update, so the warm-ups here are optax
    with schedules whose value at ``c`` is :func:`alpha_warmup` and
    :func:`beta3_warmup` at ``k = c + 1`` (written with ``jax.numpy``). The paper's
    PyTorch code is the same update, its step counting from 1 as ``k`` does.
    """

    Options = AdEMAMixOptions
    moment_signs = {"mean": True, "slow_mean": True, "var": False}
    about = About(
        family="recent",
        same_as="`optax.contrib.ademamix` (with `batch_size=1`)",
        weight_decay="decoupled: `W *= 1 - lr * weight_decay` (coupled L2 with "
        "`decoupled_weight_decay=False`)",
        epsilon="added to `sqrt(nu_hat)`",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADEMAMIX_KERNEL

    def cautious_kernels(self):
        return ADEMAMIX_CAUTIOUS if self.opts.cautious else None

    def kernel_scalars(self, v, step, memory):
        alpha = alpha_warmup(step, v.alpha, v.alpha_warmup_steps)
        beta3 = beta3_warmup(step, v.beta1, v.beta3, v.beta3_warmup_steps)
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "lr": v.lr, "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "beta3": beta3, "one_minus_beta3": 1.0 - beta3, "alpha": alpha,
            "correction1": 1.0 - v.beta1**step, "correction2": 1.0 - v.beta2**step,
            "eps": v.epsilon,
        }  # fmt: skip

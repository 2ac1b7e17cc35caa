"""RAdam: rectified Adam (Liu et al., "On the Variance of the Adaptive Learning Rate and
Beyond", ICLR 2020, arXiv:1908.03265), as torch.optim.RAdam.

Adam's adaptive step is used only once the variance of its adaptive learning
rate is tractable, i.e. once the length of the approximated simple moving
average :math:`\\rho_k` exceeds 5; before that the update is SGD with a
bias-corrected momentum. For the ``k``-th update of a weight, with :math:`g`
the :func:`~mxopt.normalized_gradient`:

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
    \\rho_\\infty &= \\frac{2}{1-\\beta_2} - 1, \\qquad
    \\rho_k = \\rho_\\infty - \\frac{2 k \\beta_2^k}{1-\\beta_2^k} \\\\
    W &\\leftarrow W - \\eta\\, r_k \\frac{m}{1-\\beta_1^k}
        \\frac{\\sqrt{1-\\beta_2^k}}{\\sqrt{v}+\\epsilon}
        \\quad\\text{if } \\rho_k > 5, \\qquad
    W \\leftarrow W - \\eta \\frac{m}{1-\\beta_1^k} \\quad\\text{otherwise,} \\\\
    r_k &= \\sqrt{\\frac{(\\rho_k-4)(\\rho_k-2)\\rho_\\infty}
        {(\\rho_\\infty-4)(\\rho_\\infty-2)\\rho_k}}

(epsilon is added to the root of the uncorrected :math:`v`, as torch does).
:math:`\\rho_k` starts near ``k`` whatever the betas, so the switch comes at
``k = 6`` with the default betas.

Both regimes run one kernel, ``W -= lr_t * m / (sqrt(v) * root + eps)``:
rectified with ``root = 1, eps = epsilon``, warm-up with ``root = 0, eps = 1`` (a
division by exactly 1), so the same code, and the check of its CUDA twin against
it on the first updates, covers both.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, adam_moments_element, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
    state_dtype_option,
)

__all__ = ["RAdam", "RAdamOptions"]


def radam_element(
    i, w, g, mean, var, rescale, clip, wd, decay, lr_t, beta1, one_minus_beta1, beta2,
    one_minus_beta2, root, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    mean[i] = m
    var[i] = v
    w[i] = wi - lr_t * m / (np.sqrt(v) * root + eps)


RADAM_KERNEL = Kernel(
    name="radam",
    state=("mean", "var"),
    cpu=radam_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    mean[i] = m;
    var[i] = v;
    w[i] = wi - lr_t * m / (sqrt(v) * root + eps);
""",
)


def rectification(beta2: float, step: int) -> float | None:
    """RAdam's :math:`r_k` for the ``step``-th update, or None while :math:`\\rho_k \\le 5`."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    power = beta2**step
    rho = rho_inf - 2.0 * step * power / (1.0 - power)
    if not rho > 5.0:
        return None
    # rho_inf > rho > 5 here, so no factor of the denominator is 0.
    ratio = (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
    return math.sqrt(ratio)


@options
class RAdamOptions(AbstractOptimizerOptions):
    """Options of :class:`RAdam` (defaults as torch.optim.RAdam)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the root of the second moment")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(False)
    state_dtype: str = state_dtype_option()


@register
class RAdam(AbstractOptimizer):
    """Rectified Adam (Liu et al. 2019), as torch.optim.RAdam.

    ``RAdam(*, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, state_dtype="float32", grad_clip=0.0,
    weight_decay=0.0, decoupled_weight_decay=False, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Liyuan Liu, Haoming Jiang, Pengcheng He, Weizhu Chen, Xiaodong Liu,
    Jianfeng Gao, Jiawei Han, "On the Variance of the Adaptive Learning Rate
    and Beyond", ICLR 2020, arXiv:1908.03265. For the ``k``-th update of a weight,
    with :math:`g` the :func:`~mxopt.normalized_gradient`,
    :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`,
    :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`,
    :math:`\\rho_\\infty = 2/(1-\\beta_2) - 1` and
    :math:`\\rho_k = \\rho_\\infty - 2k\\beta_2^k/(1-\\beta_2^k)`:

    .. math::

        W \\leftarrow W - \\eta \\frac{m}{1-\\beta_1^k} \\times
        \\begin{cases}
        r_k \\sqrt{1-\\beta_2^k} / (\\sqrt{v} + \\epsilon) & \\rho_k > 5 \\\\
        1 & \\text{otherwise}
        \\end{cases}, \\qquad
        r_k = \\sqrt{\\frac{(\\rho_k-4)(\\rho_k-2)\\rho_\\infty}
        {(\\rho_\\infty-4)(\\rho_\\infty-2)\\rho_k}}

    With ``decoupled_weight_decay``, :math:`W \\leftarrow (1 - \\eta\\lambda) W` first
    and :math:`g` has no L2 term. Epsilon is added to the root of
    the uncorrected :math:`v` (torch's placement). The switch comes at
    ``k = 6`` with the default betas (:math:`\\rho_k \\approx k` early on for any
    :math:`\\beta_2`, and :math:`\\rho_k \\le \\rho_\\infty`, so a
    :math:`\\beta_2 \\le 2/3` never rectifies). The first updates (:math:`k \\le 5`
    with the default betas) are momentum-SGD steps whose size is not normalized
    by :math:`\\sqrt v`: with a large learning rate and large gradients they can
    jump far (on Rosenbrock with ``lr=0.01``, f goes from 12.5 to 625 before
    converging).

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`v`), 8 bytes per float32
    parameter.

    Equivalents: with ``batch_size=1`` this is exactly ``torch.optim.RAdam(lr,
    betas=(beta1, beta2), eps=epsilon, weight_decay=weight_decay,
    decoupled_weight_decay=decoupled_weight_decay)``: defaults and epsilon
    placement are torch's. fastai's ``RAdam(lr, mom, sqr_mom, eps, wd)`` adds
    epsilon after the bias correction, :math:`\\sqrt{v/(1-\\beta_2^k)} + \\epsilon`,
    so it matches only while :math:`\\sqrt v \\gg \\epsilon`; its SAdam option
    ``beta`` has no counterpart. Thinc's ``RAdam`` is the same algorithm (ported
    from the authors' code) but not bit-for-bit: it switches at
    :math:`\\rho_k \\ge 5`, its bias corrections count one step ahead, it decays
    weights after the step and clips gradients by norm.
    """

    Options = RAdamOptions
    moment_signs = {"mean": True, "var": False}
    about = About(
        family="adam-family",
        same_as="`torch.optim.RAdam`",
        weight_decay="coupled, or decoupled",
        epsilon="torch's placement (added to `sqrt(v)` of the uncorrected `v`)",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return RADAM_KERNEL

    def kernel_scalars(self, v, step, memory):
        lr_m = v.lr / (1.0 - v.beta1**step)
        rect = rectification(v.beta2, step)
        if rect is None:
            lr_t, root, eps = lr_m, 0.0, 1.0
        else:
            lr_t = lr_m * rect * math.sqrt(1.0 - v.beta2**step)
            root, eps = 1.0, v.epsilon
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "lr_t": lr_t, "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2, "root": root, "eps": eps,
        }  # fmt: skip

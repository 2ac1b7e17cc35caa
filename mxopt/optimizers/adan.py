"""Adan: adaptive Nesterov momentum (Xie, Zhou, Li, Lin & Yan, "Adan: Adaptive Nesterov
Momentum Algorithm for Faster Optimizing Deep Models", arXiv:2208.06677, 2022; TPAMI 2024).

Adan estimates the gradient at a Nesterov look-ahead point without computing it
there: it keeps moving averages of the gradient, of the difference of successive
gradients, and of the square of their look-ahead combination. With the betas as
weights of the old values (the authors' code; the paper writes :math:`1-\\beta`),
:math:`g` the clipped, rescaled gradient and :math:`d = g - g_{\\text{prev}}`
(0 at a weight's first update):

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) d, \\qquad
    n \\leftarrow \\beta_3 n + (1-\\beta_3) (g + \\beta_2 d)^2 \\\\
    W &\\leftarrow \\frac{W - \\eta (\\hat m + \\beta_2 \\hat v) / (\\sqrt{\\hat n} + \\epsilon)}
    {1 + \\eta\\lambda}

with the hats the usual bias corrections.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import Kernel, clip_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["Adan", "AdanOptions"]


def adan_element(
    i, w, g, mean, diff_mean, var, prev_grad, rescale, clip, decay, shrink, lr, keep_diff,
    beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3, correction1,
    correction2, correction3, eps,
):  # fmt: skip
    gi = clip_gradient_element(g[i], rescale, clip)
    # keep_diff is 0 at a weight's first update: there is no previous gradient yet
    d = keep_diff * (gi - prev_grad[i])
    look_ahead = gi + beta2 * d
    m = beta1 * mean[i] + one_minus_beta1 * gi
    v = beta2 * diff_mean[i] + one_minus_beta2 * d
    n = beta3 * var[i] + one_minus_beta3 * look_ahead * look_ahead
    mean[i] = m
    diff_mean[i] = v
    var[i] = n
    prev_grad[i] = gi
    update = (m / correction1 + beta2 * (v / correction2)) / (np.sqrt(n / correction3) + eps)
    w[i] = (w[i] * decay - lr * update) / shrink


ADAN_KERNEL = Kernel(
    name="adan",
    state=("mean", "diff_mean", "var", "prev_grad"),
    cpu=adan_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T d = keep_diff * (gi - prev_grad[i]);
    const T look_ahead = gi + beta2 * d;
    const T m = beta1 * mean[i] + one_minus_beta1 * gi;
    const T v = beta2 * diff_mean[i] + one_minus_beta2 * d;
    const T n = beta3 * var[i] + one_minus_beta3 * look_ahead * look_ahead;
    mean[i] = m;
    diff_mean[i] = v;
    var[i] = n;
    prev_grad[i] = gi;
    const T update = (m / correction1 + beta2 * (v / correction2)) / (sqrt(n / correction3) + eps);
    w[i] = (w[i] * decay - lr * update) / shrink;
""",
)


@options
class AdanOptions(AbstractOptimizerOptions):
    """Options of :class:`Adan` (defaults from the authors' code and optax.adan)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.98, ge=0.0, lt=1.0, doc="decay of the gradient average")
    beta2: float = hyperparameter(
        0.92, ge=0.0, lt=1.0, doc="decay of the gradient-difference average, and its weight"
    )
    beta3: float = hyperparameter(0.99, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the root of the second moment")
    proximal_weight_decay: bool = flag(
        True, doc="W = (W - lr*u) / (1 + lr*wd) (the paper), else W = (1 - lr*wd) W - lr*u"
    )
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="decoupled weight decay lambda")


@register
class Adan(AbstractOptimizer):
    """Adan (Xie et al. 2022): adaptive Nesterov momentum from gradient differences.

    ``Adan(*, lr=1e-3, beta1=0.98, beta2=0.92, beta3=0.99, epsilon=1e-8,
    proximal_weight_decay=True, grad_clip=0.0, weight_decay=0.0, grad_scale=1.0,
    maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Xingyu Xie, Pan Zhou, Huan Li, Zhouchen Lin, Shuicheng Yan, "Adan: Adaptive
    Nesterov Momentum Algorithm for Faster Optimizing Deep Models",
    arXiv:2208.06677, 2022 (Algorithm 1), as in the authors' code: the betas are
    the weights of the old values (the paper's :math:`1-\\beta_i`: its
    :math:`\\beta_1, \\beta_2, \\beta_3 = 0.02, 0.08, 0.01` are the defaults 0.98,
    0.92, 0.99 here), with bias corrections, and epsilon outside the root. For the
    ``k``-th update of a weight, with :math:`g = \\pm\\operatorname{clip}(\\nabla
    \\cdot \\text{grad\\_scale}/\\text{batch\\_size})` (no L2 term) and
    :math:`d = g - g_{\\text{prev}}`, where :math:`g_{\\text{prev}}` is the same
    normalized gradient at the weight's previous update and :math:`d = 0` at its
    first:

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) d, \\quad
        n \\leftarrow \\beta_3 n + (1-\\beta_3)(g + \\beta_2 d)^2 \\\\
        u &= \\frac{m/(1-\\beta_1^k) + \\beta_2\\, v/(1-\\beta_2^k)}
        {\\sqrt{n/(1-\\beta_3^k)} + \\epsilon} \\\\
        W &\\leftarrow \\frac{W - \\eta u}{1 + \\eta\\lambda}
        \\quad\\text{or, with } \\texttt{proximal\\_weight\\_decay=False}, \\quad
        W \\leftarrow (1 - \\eta\\lambda) W - \\eta u

    The weight decay is always decoupled; the default is the paper's proximal form
    (the authors' ``no_prox=False``), the other one is AdamW's (``no_prox=True``,
    and optax's). The two agree to first order in :math:`\\eta\\lambda`.

    State: ``"mean"`` (:math:`m`), ``"diff_mean"`` (:math:`v`), ``"var"``
    (:math:`n`) and ``"prev_grad"`` (:math:`g_{\\text{prev}}`: the gradient as the
    update saw it, after ``grad_scale / batch_size``, the clip and the sign of
    ``maximize``), 16 bytes per float32 parameter (twice Adam's).

    Equivalents, with ``batch_size=1`` (torch.optim has no Adan): the authors'
    ``Adan(params, lr, betas=(b1, b2, b3), eps, weight_decay, no_prox)`` is
    ``Adan(lr=lr, beta1=b1, beta2=b2, beta3=b3, epsilon=eps,
    weight_decay=weight_decay, proximal_weight_decay=not no_prox)`` (without its
    ``max_grad_norm``). ``optax.adan`` (0.2.8) weighs the gradient difference by
    ``1 - b2`` where the paper and the authors' code use ``b2`` (optax pull request
    1715), so it is this update only with ``b2=0.5``: ``optax.adan(learning_rate,
    b1, 0.5, b3, eps, eps_root=0.0, weight_decay=wd)`` is ``Adan(lr=learning_rate,
    beta1=b1, beta2=0.5, beta3=b3, epsilon=eps, weight_decay=wd,
    proximal_weight_decay=False)`` (optax's ``eps_root`` defaults to 1e-8).
    """

    Options = AdanOptions
    about = About(
        family="recent",
        same_as="the authors' `Adan`; `optax.adan` only with `b2=0.5` (see the docstring)",
        weight_decay="decoupled: `W = (W - lr * u) / (1 + lr * weight_decay)` (the paper), "
        "or `W *= 1 - lr * weight_decay` with `proximal_weight_decay=False`",
        epsilon="added to `sqrt(n_hat)`",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADAN_KERNEL

    def kernel_scalars(self, v, step, memory):
        decay = v.lr * v.weight_decay
        proximal = v.proximal_weight_decay
        return {  # the decay never enters g
            "rescale": v.rescale, "clip": v.grad_clip,
            "decay": 1.0 if proximal else 1.0 - decay, "shrink": 1.0 + decay if proximal else 1.0,
            "lr": v.lr, "keep_diff": 0.0 if step == 1 else 1.0,
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "beta3": v.beta3, "one_minus_beta3": 1.0 - v.beta3,
            "correction1": 1.0 - v.beta1**step, "correction2": 1.0 - v.beta2**step,
            "correction3": 1.0 - v.beta3**step, "eps": v.epsilon,
        }  # fmt: skip

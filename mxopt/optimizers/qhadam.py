"""QHAdam: quasi-hyperbolic Adam (Ma & Yarats, "Quasi-hyperbolic momentum and Adam for
deep learning", ICLR 2019, arXiv:1810.06801), as fastai's ``QHAdam``.

Both of Adam's moment estimates are replaced by a weighted average of the
bias-corrected moment and the current gradient. For the ``k``-th update of a
weight, with :math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
    W &\\leftarrow W - \\eta \\frac{(1-\\nu_1) g + \\nu_1 m / (1-\\beta_1^k)}
        {\\sqrt{(1-\\nu_2) g^2 + \\nu_2 v / (1-\\beta_2^k)} + \\epsilon}

``nu1 = nu2 = 1`` is Adam (with epsilon after the bias correction); ``nu1 =
0, nu2 = 1`` is RMSProp with Adam's correction. The kernel gets the four
coefficients, with the learning rate and bias corrections folded in on the host.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, adam_moments_element, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
)

__all__ = ["QHAdam", "QHAdamOptions"]


def qhadam_element(
    i, w, g, mean, var, rescale, clip, wd, decay, beta1, one_minus_beta1, beta2,
    one_minus_beta2, lr_g, lr_m, nu_g, nu_v, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    mean[i] = m
    var[i] = v
    w[i] = wi - (lr_g * gi + lr_m * m) / (np.sqrt(nu_g * gi * gi + nu_v * v) + eps)


QHADAM_KERNEL = Kernel(
    name="qhadam",
    state=("mean", "var"),
    cpu=qhadam_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    mean[i] = m;
    var[i] = v;
    w[i] = wi - (lr_g * gi + lr_m * m) / (sqrt(nu_g * gi * gi + nu_v * v) + eps);
""",
)


@options
class QHAdamOptions(AbstractOptimizerOptions):
    """Options of :class:`QHAdam` (defaults as fastai's, which the paper recommends)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    nu1: float = hyperparameter(
        0.7, ge=0.0, le=1.0, doc="weight of the corrected first moment against g"
    )
    nu2: float = hyperparameter(
        1.0, ge=0.0, le=1.0, doc="weight of the corrected second moment against g^2"
    )
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the root of the denominator")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(False)


@register
class QHAdam(AbstractOptimizer):
    """Quasi-hyperbolic Adam (Ma & Yarats 2019), as fastai's ``QHAdam``.

    ``QHAdam(*, lr=1e-3, beta1=0.999, beta2=0.999, nu1=0.7, nu2=1.0, epsilon=1e-8,
    grad_clip=0.0, weight_decay=0.0, decoupled_weight_decay=False, grad_scale=1.0,
    maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Jerry Ma, Denis Yarats, "Quasi-hyperbolic momentum and Adam for deep
    learning", ICLR 2019, arXiv:1810.06801. For the ``k``-th update of a weight,
    with :math:`g` the :func:`~mxopt.normalized_gradient`:

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        W &\\leftarrow \\rho W - \\eta
        \\frac{(1-\\nu_1) g + \\nu_1 m/(1-\\beta_1^k)}
        {\\sqrt{(1-\\nu_2) g^2 + \\nu_2 v/(1-\\beta_2^k)} + \\epsilon}

    with :math:`\\rho = 1 - \\eta\\lambda` under ``decoupled_weight_decay`` (and
    then :math:`g` has no L2 term), else 1. :math:`\\nu_1 = \\nu_2 = 1` is Adam
    (with torch's epsilon placement, after the bias correction).

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`v`), 8 bytes per float32
    parameter.

    Equivalents: torch.optim has no QHAdam. fastai's ``QHAdam(params, lr, mom,
    sqr_mom, nu_1, nu_2, eps, wd, decouple_wd)`` is ``QHAdam(lr=lr, beta1=mom,
    beta2=sqr_mom, nu1=nu_1, nu2=nu_2, epsilon=eps, weight_decay=wd,
    decoupled_weight_decay=decouple_wd)`` with ``batch_size=1``; the defaults are
    fastai's except that fastai decouples the decay by default
    (``decouple_wd=True``) and mxopt, like its other Adam-family optimizers, does
    not. The authors' ``qhoptim`` package implements the same rule, with other
    defaults.
    """

    Options = QHAdamOptions
    about = About(
        family="adam-family",
        same_as="fastai's `QHAdam`",
        weight_decay="coupled, or decoupled",
        epsilon="outside the root",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return QHADAM_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "lr_g": v.lr * (1.0 - v.nu1), "lr_m": v.lr * v.nu1 / (1.0 - v.beta1**step),
            "nu_g": 1.0 - v.nu2, "nu_v": v.nu2 / (1.0 - v.beta2**step),
            "eps": v.epsilon,
        }  # fmt: skip

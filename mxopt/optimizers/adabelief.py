"""AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
Observed Gradients", NeurIPS 2020, arXiv:2010.07468).

Adam whose second moment tracks the squared *prediction error* of the gradient,
:math:`(g - m)^2`, instead of :math:`g^2`: the step is large where the gradient
agrees with its running mean (the "belief") and small where it does not. For the
``k``-th update of a weight, with :math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g \\\\
    s &\\leftarrow \\beta_2 s + (1-\\beta_2) (g - m)^2 + \\epsilon_r \\\\
    W &\\leftarrow W - \\eta \\frac{m / (1-\\beta_1^k)}{\\sqrt{s / (1-\\beta_2^k)} + \\epsilon}
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
)

__all__ = ["AdaBelief", "AdaBeliefOptions"]


def adabelief_element(
    i, w, g, mean, var, rescale, clip, wd, decay, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps_root, lr_m, lr_g, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m = beta1 * mean[i] + one_minus_beta1 * gi
    error = gi - m
    s = beta2 * var[i] + one_minus_beta2 * error * error + eps_root
    mean[i] = m
    var[i] = s
    w[i] = wi - (lr_m * m + lr_g * gi) / (np.sqrt(s) + eps)


ADABELIEF_KERNEL = Kernel(
    name="adabelief",
    state=("mean", "var"),
    cpu=adabelief_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    const T m = beta1 * mean[i] + one_minus_beta1 * gi;
    const T error = gi - m;
    const T s = beta2 * var[i] + one_minus_beta2 * error * error + eps_root;
    mean[i] = m;
    var[i] = s;
    w[i] = wi - (lr_m * m + lr_g * gi) / (sqrt(s) + eps);
""",
)


@options
class AdaBeliefOptions(AbstractOptimizerOptions):
    """Options of :class:`AdaBelief` (defaults from optax.adabelief and the paper)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(
        0.999, ge=0.0, lt=1.0, doc="decay of the second moment of the prediction error"
    )
    epsilon: float = hyperparameter(
        1e-16, gt=0.0, doc="added to the root of the bias-corrected second moment"
    )
    epsilon_root: float = hyperparameter(
        1e-16, ge=0.0, doc="added to the second moment at every update, before its root"
    )
    nesterov: bool = flag(False, doc="Nesterov's look-ahead on the first moment (optax's)")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(True)


@register
class AdaBelief(AbstractOptimizer):
    """AdaBelief (Zhuang et al. 2020): Adam scaled by the spread of g around its mean.

    ``AdaBelief(*, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-16,
    epsilon_root=1e-16, nesterov=False, grad_clip=0.0, weight_decay=0.0,
    decoupled_weight_decay=True, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Juntang Zhuang, Tommy Tang, Yifan Ding, Sekhar Tatikonda, Nicha Dvornek,
    Xenophon Papademetris, James S. Duncan, "AdaBelief Optimizer: Adapting
    Stepsizes by the Belief in Observed Gradients", NeurIPS 2020, arXiv:2010.07468.
    For the ``k``-th update of a weight (``k`` counts that weight's updates), with
    :math:`g` the :func:`~mxopt.normalized_gradient`:

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g \\\\
        s &\\leftarrow \\beta_2 s + (1-\\beta_2)(g - m)^2 + \\epsilon_r \\\\
        W &\\leftarrow \\rho W - \\eta \\frac{\\hat m}{\\sqrt{s/(1-\\beta_2^k)} + \\epsilon}

    * :math:`\\hat m = m / (1-\\beta_1^k)`, or with ``nesterov``
      :math:`\\hat m = \\beta_1 m / (1-\\beta_1^{k+1}) + (1-\\beta_1) g / (1-\\beta_1^k)`;
    * :math:`\\epsilon_r` is ``epsilon_root``: it is added to the stored :math:`s`
      (before the bias correction) at every update, as in the paper's Algorithm 2
      and optax; :math:`\\epsilon` is added to the root of the corrected moment;
    * :math:`\\rho = 1 - \\eta\\lambda` with ``decoupled_weight_decay`` (the
      default, as the authors' ``adabelief-pytorch`` with ``weight_decouple=True``),
      and then :math:`g` carries no L2 term; else :math:`\\rho = 1` and
      :math:`\\lambda W` is in :math:`g` (coupled L2).

    The learning rate is read from ``lr_scheduler`` (if given) at every update.

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`s`), 8 bytes per float32
    parameter (as Adam).

    Equivalents, with ``batch_size=1``: ``optax.adabelief(learning_rate, b1, b2,
    eps, eps_root, nesterov=nesterov)`` is ``AdaBelief(lr=learning_rate, beta1=b1,
    beta2=b2, epsilon=eps, epsilon_root=eps_root, nesterov=nesterov)`` (with the
    default ``weight_decay=0``; the defaults are optax's). The authors'
    ``adabelief_pytorch.AdaBelief(lr, betas, eps, weight_decay,
    weight_decouple=True, rectify=False)`` is ``AdaBelief(lr=lr, beta1=betas[0],
    beta2=betas[1], epsilon=eps, epsilon_root=eps, weight_decay=weight_decay)``
    (their ``rectify``, the RAdam-style warm-up, and ``amsgrad`` are not offered).
    """

    Options = AdaBeliefOptions
    about = About(
        family="recent",
        same_as="`optax.adabelief` (with `batch_size=1`)",
        weight_decay="decoupled: `W *= 1 - lr * weight_decay` "
        "(`decoupled_weight_decay=False` for L2)",
        epsilon="`epsilon_root` added to `s` at every update; `epsilon` added to `sqrt(s_hat)`",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADABELIEF_KERNEL

    def kernel_scalars(self, v, step, memory):
        # The bias corrections are folded into the step:
        # m_hat / (sqrt(s / c2) + eps) = sqrt(c2) m_hat / (sqrt(s) + eps sqrt(c2))
        root2 = math.sqrt(1.0 - v.beta2**step)
        lr = v.lr * root2
        if self.opts.nesterov:
            lr_m = lr * v.beta1 / (1.0 - v.beta1 ** (step + 1))
            lr_g = lr * (1.0 - v.beta1) / (1.0 - v.beta1**step)
        else:
            lr_m, lr_g = lr / (1.0 - v.beta1**step), 0.0
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "eps_root": v.epsilon_root, "lr_m": lr_m, "lr_g": lr_g,
            "eps": v.epsilon * root2,
        }  # fmt: skip

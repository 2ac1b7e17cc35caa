"""ADOPT (Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the
Optimal Rate", NeurIPS 2024, arXiv:2411.02853), with the clipped update of the
paper's revised version.

Adam with two changes: the gradient is divided by the root of the *previous*
second moment (so the current gradient never scales itself), and the momentum
averages these normalised gradients instead of the raw ones. The first update of
a weight only sets :math:`v = g^2`. For the ``k``-th update (``k >= 2``), with
:math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    u &= \\operatorname{clip}\\left(\\frac{g}{\\max(\\sqrt{v}, \\epsilon)},
         \\pm (k-1)^{1/4}\\right) \\\\
    m &\\leftarrow \\beta_1 m + (1-\\beta_1) u, \\qquad
    W \\leftarrow W - \\eta m \\\\
    v &\\leftarrow \\beta_2 v + (1-\\beta_2) g^2
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

__all__ = ["ADOPT", "ADOPTOptions"]


def adopt_element(
    i, w, g, mean, var, rescale, clip, wd, decay, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps, update_clip, lr_m, lr_u,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    vi = var[i]
    root = np.sqrt(vi)
    if root < eps:  # max(sqrt(v), eps); NaN passes
        root = eps
    u = gi / root
    if u > update_clip:
        u = update_clip
    elif u < -update_clip:
        u = -update_clip
    m = beta1 * mean[i] + one_minus_beta1 * u
    mean[i] = m
    w[i] = w[i] * decay - lr_m * m - lr_u * u
    var[i] = beta2 * vi + one_minus_beta2 * gi * gi


ADOPT_KERNEL = Kernel(
    name="adopt",
    state=("mean", "var"),
    cpu=adopt_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T vi = var[i];
    T root = sqrt(vi);
    if (root < eps) root = eps;
    T u = gi / root;
    if (u > update_clip) u = update_clip;
    else if (u < -update_clip) u = -update_clip;
    const T m = beta1 * mean[i] + one_minus_beta1 * u;
    mean[i] = m;
    w[i] = w[i] * decay - lr_m * m - lr_u * u;
    var[i] = beta2 * vi + one_minus_beta2 * gi * gi;
""",
)


@options
class ADOPTOptions(AbstractOptimizerOptions):
    """Options of :class:`ADOPT` (defaults from the paper and optax.contrib.adopt)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the momentum")
    beta2: float = hyperparameter(0.9999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(
        1e-6, gt=0.0, doc="lower bound of sqrt(v) when normalising the gradient"
    )
    nesterov: bool = flag(False, doc="step along the momentum updated once more (optax's)")
    update_clipping: bool = flag(
        True, doc="clip the normalised gradient to +-(k-1)**0.25 (the paper's revised version)"
    )
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(True)


@register
class ADOPT(AbstractOptimizer):
    """ADOPT (Taniguchi et al. 2024): Adam normalised by the previous second moment.

    ``ADOPT(*, lr=1e-3, beta1=0.9, beta2=0.9999, epsilon=1e-6, nesterov=False,
    update_clipping=True, grad_clip=0.0, weight_decay=0.0,
    decoupled_weight_decay=True, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Shohei Taniguchi, Keno Harada, Gouki Minegishi, Yuta Oshima, Seong Cheol Jeong,
    Go Nagahara, Tomoshi Iiyama, Masahiro Suzuki, Yusuke Iwasawa, Yutaka Matsuo,
    "ADOPT: Modified Adam Can Converge with Any :math:`\\beta_2` with the Optimal
    Rate", NeurIPS 2024, arXiv:2411.02853 (the revised version, with the clipped
    update). With :math:`g` the :func:`~mxopt.normalized_gradient` and ``k`` the
    update count of the weight, the first update (``k = 1``) only sets
    :math:`v \\leftarrow g^2`: the weight and :math:`m` stay as they are. Every
    later update:

    .. math::

        u &= \\operatorname{clip}\\left(\\frac{g}{\\max(\\sqrt{v}, \\epsilon)},
        -c_k, c_k\\right), \\qquad c_k = (k-1)^{1/4} \\\\
        m &\\leftarrow \\beta_1 m + (1-\\beta_1) u \\\\
        W &\\leftarrow \\rho W - \\eta \\, d, \\qquad
        d = m \\text{, or } \\beta_1 m + (1-\\beta_1) u \\text{ with nesterov} \\\\
        v &\\leftarrow \\beta_2 v + (1-\\beta_2) g^2

    :math:`v` is updated *after* the step, so a gradient never divides itself;
    there is no bias correction. ``update_clipping=False`` drops the clip (the
    paper's first version, which can be unstable while :math:`v` is small).
    :math:`\\rho = 1 - \\eta\\lambda` with ``decoupled_weight_decay`` (the
    default, as the authors' implementation; from the second update on, the first
    leaves the weight alone), and then :math:`g` carries no L2 term; else
    :math:`\\rho = 1` and :math:`\\lambda W` is in :math:`g` (also in the first
    update's :math:`v`). The learning rate is read at every update.

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`v`), 8 bytes per float32
    parameter (as Adam).

    Equivalents, with ``batch_size=1``: ``optax.contrib.adopt(learning_rate, b1,
    b2, eps, nesterov=nesterov, use_clipping=update_clipping)`` is
    ``ADOPT(lr=learning_rate, beta1=b1, beta2=b2, epsilon=eps, nesterov=nesterov,
    update_clipping=update_clipping)`` with ``weight_decay=0`` (the default; optax's
    adopt has no weight decay). The authors' PyTorch ``ADOPT(lr, betas, eps,
    weight_decay, decouple)`` is ``ADOPT(lr=lr, beta1=betas[0], beta2=betas[1],
    epsilon=eps, weight_decay=weight_decay, decoupled_weight_decay=decouple)``.
    """

    Options = ADOPTOptions
    about = About(
        family="recent",
        same_as="`optax.contrib.adopt` (with `batch_size=1`); the authors' PyTorch `ADOPT`",
        weight_decay="decoupled: `W *= 1 - lr * weight_decay` from the second update "
        "(`decoupled_weight_decay=False` for L2)",
        epsilon="lower bound of `sqrt(v)`: `g / max(sqrt(v), epsilon)`",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADOPT_KERNEL

    def kernel_scalars(self, v, step, memory):
        common = {"rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "eps": v.epsilon}
        if step == 1:  # v = g^2 only: m and the weight stay, u is clipped to 0
            return {
                **common, "decay": 1.0, "beta1": 1.0, "one_minus_beta1": 0.0,
                "beta2": 0.0, "one_minus_beta2": 1.0, "update_clip": 0.0,
                "lr_m": 0.0, "lr_u": 0.0,
            }  # fmt: skip
        if self.opts.nesterov:  # d = beta1 m + (1 - beta1) u, with m already updated
            lr_m, lr_u = v.lr * v.beta1, v.lr * (1.0 - v.beta1)
        else:
            lr_m, lr_u = v.lr, 0.0
        return {
            **common, "decay": v.decay_factor,
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "update_clip": (step - 1) ** 0.25 if self.opts.update_clipping else math.inf,
            "lr_m": lr_m, "lr_u": lr_u,
        }  # fmt: skip

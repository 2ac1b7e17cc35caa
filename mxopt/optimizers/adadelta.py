"""AdaDelta (Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701,
Algorithm 1).

MXNet.jl's ``AdaDelta``: the step is the gradient scaled by the ratio of two
running root-mean-squares, of past steps and of past gradients, so its units
match the weight's. With :math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    a &\\leftarrow \\rho a + (1-\\rho) g^2 \\\\
    \\Delta &= g \\frac{\\sqrt{d + \\epsilon}}{\\sqrt{a + \\epsilon}} \\\\
    W &\\leftarrow W - \\eta \\Delta \\\\
    d &\\leftarrow \\rho d + (1-\\rho) \\Delta^2

:math:`\\Delta` uses the *old* :math:`d`, and :math:`d` accumulates
:math:`\\Delta` without the learning rate. This is also torch.optim.Adadelta's
update.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["AdaDelta", "AdaDeltaOptions"]


def adadelta_element(i, w, g, acc, delta_acc, rescale, clip, wd, lr, rho, one_minus_rho, eps):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    a = rho * acc[i] + one_minus_rho * gi * gi
    d = delta_acc[i]
    delta = gi * np.sqrt(d + eps) / np.sqrt(a + eps)
    acc[i] = a
    delta_acc[i] = rho * d + one_minus_rho * delta * delta
    w[i] = w[i] - lr * delta


ADADELTA_KERNEL = Kernel(
    name="adadelta",
    state=("acc", "delta_acc"),
    cpu=adadelta_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T a = rho * acc[i] + one_minus_rho * gi * gi;
    const T d = delta_acc[i];
    const T delta = gi * sqrt(d + eps) / sqrt(a + eps);
    acc[i] = a;
    delta_acc[i] = rho * d + one_minus_rho * delta * delta;
    w[i] = w[i] - lr * delta;
""",
)


@options
class AdaDeltaOptions(AbstractOptimizerOptions):
    """Options of :class:`AdaDelta` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(1.0, gt=0.0, doc="learning rate, used when no lr_scheduler")
    rho: float = hyperparameter(0.95, gt=0.0, lt=1.0, doc="decay of both running averages")
    epsilon: float = hyperparameter(1e-6, gt=0.0, doc="added inside both square roots")
    weight_decay: float = hyperparameter(1e-5, ge=0.0, doc="coupled L2 coefficient lambda")


@register
class AdaDelta(AbstractOptimizer):
    """AdaDelta (Zeiler 2012, arXiv:1212.5701): the gradient scaled by
    RMS(past steps) / RMS(past gradients).

    ``AdaDelta(*, lr=1.0, rho=0.95, epsilon=1e-6, grad_clip=0.0, weight_decay=1e-5,
    grad_scale=1.0, maximize=False, lr_scheduler=None, state=None)``

    With :math:`g` the :func:`~mxopt.normalized_gradient` (``clip(grad *
    grad_scale / batch_size) + weight_decay * W``):

    .. math::

        a &\\leftarrow \\rho a + (1-\\rho) g^2 \\\\
        \\Delta &= g \\sqrt{d + \\epsilon} / \\sqrt{a + \\epsilon} \\\\
        W &\\leftarrow W - \\eta \\Delta \\\\
        d &\\leftarrow \\rho d + (1-\\rho) \\Delta^2

    :math:`\\Delta` uses the old :math:`d`; :math:`d` accumulates :math:`\\Delta`
    without :math:`\\eta` (the paper has no learning rate: :math:`\\eta = 1`).
    State: ``"acc"`` (:math:`a`) and ``"delta_acc"`` (:math:`d`), both starting at
    0. :math:`\\eta` comes from ``lr_scheduler`` if given (it wins over ``lr``),
    read at every update.

    The update is torch.optim.Adadelta's; only the defaults differ (torch:
    ``rho=0.9``, no weight decay; MXNet.jl's docstring also said 0.9, but its
    code used 0.95, as here). To reproduce ``torch.optim.Adadelta(lr, rho, eps,
    weight_decay)``: ``AdaDelta(lr=lr, rho=rho, epsilon=eps,
    weight_decay=weight_decay)`` with ``batch_size=1``. optax's
    ``adadelta(learning_rate, rho, eps, weight_decay)`` is the same update.
    """

    Options = AdaDeltaOptions

    def kernel(self) -> Kernel:
        return ADADELTA_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "lr": v.lr, "rho": v.rho,
            "one_minus_rho": 1.0 - v.rho, "eps": v.epsilon,
        }  # fmt: skip

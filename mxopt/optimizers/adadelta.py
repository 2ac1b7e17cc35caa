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
from mxopt.optimizers.base import About, AbstractOptimizer, register
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
    """AdaDelta (Zeiler 2012): the gradient scaled by RMS(past steps) / RMS(past gradients).

    ``AdaDelta(*, lr=1.0, rho=0.95, epsilon=1e-6, grad_clip=0.0, weight_decay=1e-5,
    grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Matthew D. Zeiler, "ADADELTA: An Adaptive Learning Rate Method",
    arXiv:1212.5701, Algorithm 1 (MXNet.jl's ``AdaDelta``). With :math:`g` the
    :func:`~mxopt.normalized_gradient` (``clip(grad * grad_scale / batch_size) +
    weight_decay * W``):

    .. math::

        a &\\leftarrow \\rho a + (1-\\rho) g^2 \\\\
        \\Delta &= g \\sqrt{d + \\epsilon} / \\sqrt{a + \\epsilon} \\\\
        W &\\leftarrow W - \\eta \\Delta \\\\
        d &\\leftarrow \\rho d + (1-\\rho) \\Delta^2

    :math:`\\Delta` uses the old :math:`d`; :math:`d` accumulates :math:`\\Delta`
    without :math:`\\eta` (the paper has no learning rate: :math:`\\eta = 1`).
    :math:`\\eta` comes from ``lr_scheduler`` if given (it wins over ``lr``), read
    at every update. The first steps are about
    :math:`\\eta\\sqrt{\\epsilon/(1-\\rho)}` long and grow with :math:`d`: on
    Rosenbrock it reaches the valley and then drifts back, as torch's does.

    State: ``"acc"`` (:math:`a`) and ``"delta_acc"`` (:math:`d`), both starting at
    0, 8 bytes per float32 parameter.

    Equivalents: the update is torch.optim.Adadelta's; ``torch.optim.Adadelta(lr,
    rho, eps, weight_decay)`` is ``AdaDelta(lr=lr, rho=rho, epsilon=eps,
    weight_decay=weight_decay)`` with ``batch_size=1``. optax's
    ``adadelta(learning_rate, rho, eps, weight_decay)`` is the same update.

    Deliberate differences from torch: only the defaults, ``rho=0.95`` (the value
    MXNet.jl's code used; its docstring said 0.9, as torch) and
    ``weight_decay=1e-5`` (torch: no weight decay).
    """

    Options = AdaDeltaOptions
    about = About(
        family="adaptive",
        same_as="MXNet.jl's `AdaDelta`; `torch.optim.Adadelta` (whose `rho` default is 0.9); "
        "`optax.adadelta`",
        weight_decay="coupled L2",
        epsilon="inside both roots",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADADELTA_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "lr": v.lr, "rho": v.rho,
            "one_minus_rho": 1.0 - v.rho, "eps": v.epsilon,
        }  # fmt: skip

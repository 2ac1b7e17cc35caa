"""RMSProp (Tieleman & Hinton, "Lecture 6.5: rmsprop", Coursera *Neural Networks for
Machine Learning*, 2012; centered form and momentum from Graves, "Generating Sequences
With Recurrent Neural Networks", arXiv:1308.0850, eqs. 38-45).

MXNet.jl's ``RMSProp``: the gradient divided by the root of a running mean of
its square. With :math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    r &\\leftarrow \\rho r + (1-\\rho) g^2 \\\\
    W &\\leftarrow W - \\eta \\frac{g}{\\sqrt{r + \\epsilon}}

torch.optim.RMSprop's refinements are options whose defaults keep MXNet.jl's
rule: ``centered`` also keeps a running mean :math:`a` of the gradient and
divides by the root of the variance estimate :math:`r - a^2`; ``momentum``
keeps a velocity with the learning rate folded in (MXNet's convention, as in
:class:`~mxopt.SGD`); ``epsilon_inside_sqrt=False`` adds epsilon after the
root. Each combination of ``centered`` and momentum has its own kernel, so a
plain RMSProp keeps one state array.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options, state_dtype_option

__all__ = ["RMSProp", "RMSPropOptions"]

# Both epsilon placements share each kernel: the unused one is passed as 0, and
# sqrt(x + 0) + 0 is exactly sqrt(x).


def rmsprop_element(
    i, w, g, square_avg, rescale, clip, wd, lr, rho, one_minus_rho, eps_in, eps_out
):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    r = rho * square_avg[i] + one_minus_rho * gi * gi
    square_avg[i] = r
    w[i] = w[i] - lr * gi / (np.sqrt(r + eps_in) + eps_out)


RMSPROP_KERNEL = Kernel(
    name="rmsprop",
    state=("square_avg",),
    cpu=rmsprop_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T r = rho * square_avg[i] + one_minus_rho * gi * gi;
    square_avg[i] = r;
    w[i] = w[i] - lr * gi / (sqrt(r + eps_in) + eps_out);
""",
)


def rmsprop_centered_element(
    i, w, g, square_avg, grad_avg, rescale, clip, wd, lr, rho, one_minus_rho, eps_in, eps_out
):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    r = rho * square_avg[i] + one_minus_rho * gi * gi
    a = rho * grad_avg[i] + one_minus_rho * gi
    square_avg[i] = r
    grad_avg[i] = a
    w[i] = w[i] - lr * gi / (np.sqrt(r - a * a + eps_in) + eps_out)


RMSPROP_CENTERED_KERNEL = Kernel(
    name="rmsprop_centered",
    state=("square_avg", "grad_avg"),
    cpu=rmsprop_centered_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T r = rho * square_avg[i] + one_minus_rho * gi * gi;
    const T a = rho * grad_avg[i] + one_minus_rho * gi;
    square_avg[i] = r;
    grad_avg[i] = a;
    w[i] = w[i] - lr * gi / (sqrt(r - a * a + eps_in) + eps_out);
""",
)


def rmsprop_momentum_element(
    i, w, g, square_avg, velocity, rescale, clip, wd, lr, rho, one_minus_rho, eps_in, eps_out, mu
):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    r = rho * square_avg[i] + one_minus_rho * gi * gi
    v = mu * velocity[i] - lr * gi / (np.sqrt(r + eps_in) + eps_out)
    square_avg[i] = r
    velocity[i] = v
    w[i] = w[i] + v


RMSPROP_MOMENTUM_KERNEL = Kernel(
    name="rmsprop_momentum",
    state=("square_avg", "velocity"),
    cpu=rmsprop_momentum_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T r = rho * square_avg[i] + one_minus_rho * gi * gi;
    const T v = mu * velocity[i] - lr * gi / (sqrt(r + eps_in) + eps_out);
    square_avg[i] = r;
    velocity[i] = v;
    w[i] = w[i] + v;
""",
)


def rmsprop_centered_momentum_element(
    i, w, g, square_avg, grad_avg, velocity, rescale, clip, wd, lr, rho, one_minus_rho, eps_in,
    eps_out, mu,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    r = rho * square_avg[i] + one_minus_rho * gi * gi
    a = rho * grad_avg[i] + one_minus_rho * gi
    v = mu * velocity[i] - lr * gi / (np.sqrt(r - a * a + eps_in) + eps_out)
    square_avg[i] = r
    grad_avg[i] = a
    velocity[i] = v
    w[i] = w[i] + v


RMSPROP_CENTERED_MOMENTUM_KERNEL = Kernel(
    name="rmsprop_centered_momentum",
    state=("square_avg", "grad_avg", "velocity"),
    cpu=rmsprop_centered_momentum_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T r = rho * square_avg[i] + one_minus_rho * gi * gi;
    const T a = rho * grad_avg[i] + one_minus_rho * gi;
    const T v = mu * velocity[i] - lr * gi / (sqrt(r - a * a + eps_in) + eps_out);
    square_avg[i] = r;
    grad_avg[i] = a;
    velocity[i] = v;
    w[i] = w[i] + v;
""",
)


@options
class RMSPropOptions(AbstractOptimizerOptions):
    """Options of :class:`RMSProp` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(0.001, gt=0.0, doc="learning rate, used when no lr_scheduler")
    rho: float = hyperparameter(0.9, gt=0.0, lt=1.0, doc="decay of the running averages")
    epsilon: float = hyperparameter(1e-6, gt=0.0, doc="keeps the denominator away from 0")
    centered: bool = flag(False, doc="divide by the root of r - a^2, a the mean gradient")
    momentum: float = hyperparameter(
        0.0, ge=0.0, lt=1.0, schedulable=False, doc="velocity decay; a velocity is kept if > 0"
    )
    epsilon_inside_sqrt: bool = flag(
        True, doc="sqrt(r + epsilon) (MXNet.jl), else sqrt(r) + epsilon (torch)"
    )
    weight_decay: float = hyperparameter(1e-5, ge=0.0, doc="coupled L2 coefficient lambda")
    state_dtype: str = state_dtype_option()


@register
class RMSProp(AbstractOptimizer):
    """RMSProp (Tieleman & Hinton 2012), optionally centered and with momentum (Graves 2013).

    ``RMSProp(*, lr=0.001, rho=0.9, epsilon=1e-6, centered=False, momentum=0.0,
    epsilon_inside_sqrt=True, state_dtype="float32",
    grad_clip=0.0, weight_decay=1e-5, grad_scale=1.0,
    maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Tieleman & Hinton, "Lecture 6.5: rmsprop", Coursera *Neural Networks for
    Machine Learning*, 2012; the centered form and momentum from Graves,
    "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850.
    MXNet.jl's ``RMSProp`` with torch's refinements as options. With :math:`g` the
    :func:`~mxopt.normalized_gradient` (``clip(grad * grad_scale / batch_size) +
    weight_decay * W``):

    .. math::

        r &\\leftarrow \\rho r + (1-\\rho) g^2, \\qquad
        a \\leftarrow \\rho a + (1-\\rho) g \\quad \\text{(centered only)} \\\\
        s &= r \\text{, or } r - a^2 \\text{ when centered} \\\\
        D &= \\sqrt{s + \\epsilon} \\text{ (epsilon\\_inside\\_sqrt, MXNet.jl), or }
        \\sqrt{s} + \\epsilon \\text{ (torch)} \\\\
        W &\\leftarrow W - \\eta\\, g / D \\quad \\text{(momentum = 0)} \\\\
        v &\\leftarrow \\mu v - \\eta\\, g / D, \\qquad W \\leftarrow W + v
        \\quad \\text{(momentum} = \\mu > 0)

    ``momentum`` is a constant (not a schedule) because it decides which state
    exists. :math:`\\eta` comes from ``lr_scheduler`` if given (it wins over
    ``lr``), read at every update.

    State: ``"square_avg"`` (:math:`r`), 4 bytes per float32 parameter;
    ``"grad_avg"`` (:math:`a`) when ``centered`` and ``"velocity"`` (:math:`v`)
    when ``momentum > 0``, 4 bytes each; all start at 0.

    The velocity has the learning rate folded in (MXNet's convention): with a
    constant :math:`\\eta` this is exactly torch's ``buf = momentum * buf + g / D;
    p -= lr * buf`` with ``buf = -v / lr``; under a schedule torch rescales the
    whole buffer by the new rate and mxopt only the new step.

    Equivalents, with ``batch_size=1``: ``torch.optim.RMSprop(lr, alpha, eps,
    weight_decay, momentum, centered)`` is ``RMSProp(lr=lr, rho=alpha, epsilon=eps,
    weight_decay=weight_decay, momentum=momentum, centered=centered,
    epsilon_inside_sqrt=False)``. optax's ``rmsprop(learning_rate, decay, eps,
    centered=centered, momentum=momentum)`` keeps epsilon inside the root and
    folds the learning rate into its trace: it is ``RMSProp(lr=learning_rate,
    rho=decay, epsilon=eps, centered=centered, momentum=momentum or 0.0,
    weight_decay=0.0)``. fastai's ``RMSProp(lr, sqr_mom, mom=0, wd=0)`` adds its
    epsilon (1e-8) outside the root: ``RMSProp(lr=lr, rho=sqr_mom, epsilon=1e-8,
    epsilon_inside_sqrt=False, weight_decay=0.0)``; fastai's momentum averages the
    gradients before the division and has no mxopt counterpart.

    Deliberate differences from torch: MXNet.jl's ``lr=1e-3``, ``rho=0.9``,
    ``epsilon=1e-6`` inside the root and ``weight_decay=1e-5`` (torch: ``lr=0.01,
    alpha=0.99, eps=1e-8`` outside the root, no weight decay).
    """

    Options = RMSPropOptions
    moment_signs = {"square_avg": False, "grad_avg": True, "velocity": True}
    about = About(
        family="adaptive",
        same_as="MXNet.jl's `RMSProp`; `torch.optim.RMSprop` with `rho=alpha` and "
        "`epsilon_inside_sqrt=False`",
        weight_decay="coupled L2",
        epsilon="`sqrt(s + eps)` (MXNet.jl), or `sqrt(s) + eps` with `epsilon_inside_sqrt=False`",
        examples=(
            {},
            {"centered": True},
            {"momentum": 0.9},
            {"centered": True, "momentum": 0.9},
        ),
    )

    def kernel(self) -> Kernel:
        momentum = self.opts.momentum > 0
        if self.opts.centered:
            return RMSPROP_CENTERED_MOMENTUM_KERNEL if momentum else RMSPROP_CENTERED_KERNEL
        return RMSPROP_MOMENTUM_KERNEL if momentum else RMSPROP_KERNEL

    def kernel_scalars(self, v, step, memory):
        inside = self.opts.epsilon_inside_sqrt
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "lr": v.lr, "rho": v.rho,
            "one_minus_rho": 1.0 - v.rho, "mu": self.opts.momentum,
            "eps_in": v.epsilon if inside else 0.0, "eps_out": 0.0 if inside else v.epsilon,
        }  # fmt: skip

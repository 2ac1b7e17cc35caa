"""AdaGrad (Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 12:2121-2159, 2011; no arXiv version).

MXNet.jl's ``AdaGrad``: every coordinate's step is divided by the root of the
sum of all its squared gradients so far. With :math:`g` the
:func:`~mxopt.normalized_gradient` and :math:`h` starting at 0:

.. math::

    h &\\leftarrow h + g^2 \\\\
    W &\\leftarrow W - \\eta \\frac{g}{\\sqrt{h + \\epsilon}}

Epsilon is inside the square root (MXNet.jl). torch.optim.Adagrad's
refinements are options whose defaults keep MXNet.jl's rule: a learning-rate
decay over the weight's update count, a non-zero starting accumulator and
epsilon added outside the root.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options, state_dtype_option

__all__ = ["AdaGrad", "AdaGradOptions"]


# Both epsilon placements share one kernel: the unused one is passed as 0, and
# sqrt(h + 0) + 0 is exactly sqrt(h).
def adagrad_element(i, w, g, history, rescale, clip, wd, lr, eps_in, eps_out):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    h = history[i] + gi * gi
    history[i] = h
    w[i] = w[i] - lr * gi / (np.sqrt(h + eps_in) + eps_out)


ADAGRAD_KERNEL = Kernel(
    name="adagrad",
    state=("history",),
    cpu=adagrad_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T h = history[i] + gi * gi;
    history[i] = h;
    w[i] = w[i] - lr * gi / (sqrt(h + eps_in) + eps_out);
""",
)


@options
class AdaGradOptions(AbstractOptimizerOptions):
    """Options of :class:`AdaGrad` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(0.1, gt=0.0, doc="learning rate, used when no lr_scheduler")
    epsilon: float = hyperparameter(1e-6, gt=0.0, doc="keeps the denominator away from 0")
    lr_decay: float = hyperparameter(
        0.0, ge=0.0, doc="the k-th update uses lr / (1 + (k - 1) * lr_decay) (torch)"
    )
    initial_accumulator_value: float = hyperparameter(
        0.0, ge=0.0, schedulable=False, doc="value the sum of squared gradients starts from"
    )
    epsilon_inside_sqrt: bool = flag(
        True, doc="sqrt(h + epsilon) (MXNet.jl), else sqrt(h) + epsilon (torch)"
    )
    weight_decay: float = hyperparameter(1e-5, ge=0.0, doc="coupled L2 coefficient lambda")
    lazy_update: bool = flag(
        False, doc="a RowSparse gradient updates only its rows and their state (MXNet)"
    )
    state_dtype: str = state_dtype_option()


@register
class AdaGrad(AbstractOptimizer):
    """AdaGrad (Duchi et al. 2011): steps scaled by the root of the sum of squared gradients.

    ``AdaGrad(*, lr=0.1, epsilon=1e-6, lr_decay=0.0, initial_accumulator_value=0.0,
    epsilon_inside_sqrt=True, lazy_update=False, state_dtype="float32",
    grad_clip=0.0, weight_decay=1e-5,
    grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    John Duchi, Elad Hazan, Yoram Singer, "Adaptive Subgradient Methods for Online
    Learning and Stochastic Optimization", JMLR 12, 2011; MXNet.jl's ``AdaGrad``
    with torch's refinements as options. For the ``k``-th update of a weight, with
    :math:`g` the :func:`~mxopt.normalized_gradient` (``clip(grad * grad_scale /
    batch_size) + weight_decay * W``) and :math:`\\delta` = ``lr_decay``:

    .. math::

        h &\\leftarrow h + g^2 \\\\
        \\eta_k &= \\frac{\\eta}{1 + (k-1)\\delta} \\\\
        W &\\leftarrow W - \\eta_k \\frac{g}{D}

    where :math:`D = \\sqrt{h + \\epsilon}` (``epsilon_inside_sqrt``, MXNet.jl) or
    :math:`D = \\sqrt{h} + \\epsilon` (torch). :math:`\\eta` comes from
    ``lr_scheduler`` if given (it wins over ``lr``), read at every update; ``k``
    counts this weight's updates.

    State: ``"history"`` (:math:`h`), starting at ``initial_accumulator_value``
    (read when a weight's state is created), 4 bytes per float32 parameter.

    Equivalents, with ``batch_size=1``: ``torch.optim.Adagrad(lr, lr_decay,
    weight_decay, initial_accumulator_value, eps)`` is ``AdaGrad(lr=lr,
    lr_decay=lr_decay, weight_decay=weight_decay,
    initial_accumulator_value=initial_accumulator_value, epsilon=eps,
    epsilon_inside_sqrt=False)``. optax's ``adagrad(learning_rate,
    initial_accumulator_value, eps)`` keeps epsilon inside the root: it is
    ``AdaGrad(lr=learning_rate, initial_accumulator_value=initial_accumulator_value,
    epsilon=eps, weight_decay=0.0)``.

    Deliberate differences from torch: MXNet.jl's ``lr=0.1``, ``epsilon=1e-6``
    *inside* the root and ``weight_decay=1e-5`` (torch: ``lr=0.01``, ``eps=1e-10``
    outside the root, no weight decay).

    ``lazy_update=True`` (MXNet's ``lazy_update``): a :class:`~mxopt.RowSparse`
    gradient updates only its rows of the weight and of ``history``, weight decay
    included; ``k`` (for ``lr_decay``) counts every call. With ``False`` (the default)
    such a gradient is scattered into a dense one (the same result here, since a zero
    gradient leaves ``history`` unchanged, apart from the weight decay of other rows).
    """

    Options = AdaGradOptions
    moment_signs = {"history": False}
    about = About(
        family="adaptive",
        same_as="MXNet.jl's `AdaGrad`; `torch.optim.Adagrad` with "
        "`epsilon_inside_sqrt=False`; `optax.adagrad`",
        weight_decay="coupled L2",
        epsilon="`sqrt(h + eps)` (MXNet.jl), or `sqrt(h) + eps` with `epsilon_inside_sqrt=False`",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADAGRAD_KERNEL

    def initial_state_value(self, name: str) -> float:
        return self.opts.initial_accumulator_value

    def updates_rows(self) -> bool:
        return self.opts.lazy_update

    def kernel_scalars(self, v, step, memory):
        inside = self.opts.epsilon_inside_sqrt
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2,
            "lr": v.lr / (1.0 + (step - 1) * v.lr_decay),
            "eps_in": v.epsilon if inside else 0.0, "eps_out": 0.0 if inside else v.epsilon,
        }  # fmt: skip

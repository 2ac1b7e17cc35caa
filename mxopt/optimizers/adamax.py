"""AdaMax (Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980,
section 7.1, Algorithm 2).

MXNet.jl's ``AdaMax``: Adam with the second moment replaced by an
exponentially weighted infinity norm of the gradients. For the ``k``-th update
of a weight, with :math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g \\\\
    u &\\leftarrow \\max(\\beta_2 u, |g|) \\\\
    W &\\leftarrow W - \\frac{\\eta}{1-\\beta_1^k} \\frac{m}{u + \\epsilon}

The infinity norm needs no bias correction. MXNet.jl adds epsilon to the
denominator; torch.optim.Adamax and optax add it to :math:`|g|` inside the
maximum instead (option ``epsilon_inside_max``).
"""

from __future__ import annotations

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["AdaMax", "AdaMaxOptions"]


# Both epsilon placements share one kernel: the unused one is passed as 0, and
# |g| + 0 and u + 0 are exact.
def adamax_element(
    i, w, g, mean, inf_norm, rescale, clip, wd, lr_t, beta1, one_minus_beta1, beta2, eps_in, eps_out
):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    m = beta1 * mean[i] + one_minus_beta1 * gi
    u = beta2 * inf_norm[i]
    a = abs(gi) + eps_in
    if a > u:
        u = a
    mean[i] = m
    inf_norm[i] = u
    w[i] = w[i] - lr_t * m / (u + eps_out)


ADAMAX_KERNEL = Kernel(
    name="adamax",
    state=("mean", "inf_norm"),
    cpu=adamax_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T m = beta1 * mean[i] + one_minus_beta1 * gi;
    T u = beta2 * inf_norm[i];
    const T a = fabs(gi) + eps_in;
    if (a > u) u = a;
    mean[i] = m;
    inf_norm[i] = u;
    w[i] = w[i] - lr_t * m / (u + eps_out);
""",
)


@options
class AdaMaxOptions(AbstractOptimizerOptions):
    """Options of :class:`AdaMax` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(0.002, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the infinity norm")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="keeps the denominator away from 0")
    epsilon_inside_max: bool = flag(
        False, doc="u = max(beta2 u, |g| + epsilon) (torch), else divide by u + epsilon"
    )
    weight_decay: float = hyperparameter(1e-5, ge=0.0, doc="coupled L2 coefficient lambda")


@register
class AdaMax(AbstractOptimizer):
    """AdaMax (Kingma & Ba, arXiv:1412.6980, section 7.1): Adam with an infinity norm.

    ``AdaMax(*, lr=0.002, beta1=0.9, beta2=0.999, epsilon=1e-8,
    epsilon_inside_max=False, grad_clip=0.0, weight_decay=1e-5, grad_scale=1.0,
    maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980,
    section 7.1 (Algorithm 2), as MXNet.jl's ``AdaMax``. For the ``k``-th update of
    a weight (``k`` counts that weight's updates), with :math:`g` the
    :func:`~mxopt.normalized_gradient` (``clip(grad * grad_scale / batch_size) +
    weight_decay * W``):

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g \\\\
        u &\\leftarrow \\max(\\beta_2 u, |g|), \\qquad
        W \\leftarrow W - \\frac{\\eta}{1-\\beta_1^k} \\frac{m}{u + \\epsilon}
        \\qquad \\text{(default, MXNet.jl)} \\\\
        u &\\leftarrow \\max(\\beta_2 u, |g| + \\epsilon), \\qquad
        W \\leftarrow W - \\frac{\\eta}{1-\\beta_1^k} \\frac{m}{u}
        \\qquad \\text{(epsilon\\_inside\\_max, torch)}

    :math:`\\eta` comes from ``lr_scheduler`` if given (it wins over ``lr``), read
    at every update. ``beta1`` and ``beta2`` may be 0 (as in :class:`~mxopt.ADAM`;
    MXNet.jl required them in (0, 1)).

    State: ``"mean"`` (:math:`m`) and ``"inf_norm"`` (:math:`u`), both starting at
    0, 8 bytes per float32 parameter.

    Equivalents, with ``batch_size=1``: ``torch.optim.Adamax(lr, betas=(beta1,
    beta2), eps, weight_decay)`` is ``AdaMax(lr=lr, beta1=beta1, beta2=beta2,
    epsilon=eps, weight_decay=weight_decay, epsilon_inside_max=True)``; optax's
    ``adamax(learning_rate, b1, b2, eps)`` is the same with ``weight_decay=0.0``.

    Deliberate differences from torch: epsilon is added to :math:`u` (MXNet.jl)
    unless ``epsilon_inside_max=True``; of the defaults only the weight decay
    differs (``weight_decay=1e-5``; torch: ``lr=0.002, betas=(0.9, 0.999),
    eps=1e-8, weight_decay=0``).
    """

    Options = AdaMaxOptions
    about = About(
        family="adam-family",
        same_as="MXNet.jl's `AdaMax`; `torch.optim.Adamax` with `epsilon_inside_max=True`",
        weight_decay="coupled L2",
        epsilon="added to `u` (MXNet.jl), or inside the max (`epsilon_inside_max=True`, torch)",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADAMAX_KERNEL

    def kernel_scalars(self, v, step, memory):
        inside = self.opts.epsilon_inside_max
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2,
            "lr_t": v.lr / (1.0 - v.beta1**step),
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1, "beta2": v.beta2,
            "eps_in": v.epsilon if inside else 0.0, "eps_out": 0.0 if inside else v.epsilon,
        }  # fmt: skip

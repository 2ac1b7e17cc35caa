"""LAMB: layer-wise adaptive moments (You et al., "Large Batch Optimization for Deep
Learning: Training BERT in 76 minutes", ICLR 2020, arXiv:1904.00962, Algorithm 2).

Adam's direction plus decoupled weight decay, rescaled per tensor by a trust
ratio. For the ``k``-th update of a weight, with :math:`g` the
:func:`~mxopt.normalized_gradient` without its L2 term:

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
    u &= \\frac{m / (1-\\beta_1^k)}{\\sqrt{v / (1-\\beta_2^k)} + \\epsilon} + \\lambda W \\\\
    W &\\leftarrow W - \\eta \\, \\min\\left(\\frac{\\lVert W \\rVert}{\\lVert u \\rVert},
        r_{max}\\right) u

with the ratio taken as 1 when either norm is 0. Two passes over memory: the
first updates the moments and sums :math:`\\lVert W\\rVert^2` and
:math:`\\lVert u\\rVert^2` (in float64, over fixed blocks, so the result does not
depend on the thread count), the second recomputes :math:`u` and applies it. No
full-size temporary is allocated.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import hyperparameter
from mxopt.kernels import backends
from mxopt.kernels.kernel import Kernel, adam_moments_element, clip_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["LAMB", "LAMBOptions"]


def lamb_moments_element(
    i, w, g, mean, var, rescale, clip, beta1, one_minus_beta1, beta2, one_minus_beta2, c1, c2,
    eps, lam,
):  # fmt: skip
    wi = w[i]
    gi = clip_gradient_element(g[i], rescale, clip)
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    mean[i] = m
    var[i] = v
    u = (m * c1) / (np.sqrt(v * c2) + eps) + lam * wi
    return np.float64(wi) * np.float64(wi), np.float64(u) * np.float64(u)


LAMB_MOMENTS_KERNEL = Kernel(
    name="lamb_moments",
    state=("mean", "var"),
    cpu=lamb_moments_element,
    reduces=True,
    cuda="""
    const T wi = w[i];
    const T gi = clip_gradient_element(g[i], rescale, clip);
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    mean[i] = m;
    var[i] = v;
    const T u = (m * c1) / (sqrt(v * c2) + eps) + lam * wi;
    return mx_pair{(double)wi * (double)wi, (double)u * (double)u};
""",
)


def lamb_step_element(i, w, g, mean, var, c1, c2, eps, lam, lr_trust):
    wi = w[i]
    u = (mean[i] * c1) / (np.sqrt(var[i] * c2) + eps) + lam * wi
    w[i] = wi - lr_trust * u


LAMB_STEP_KERNEL = Kernel(
    name="lamb_step",
    state=("mean", "var"),
    cpu=lamb_step_element,
    cuda="""
    const T wi = w[i];
    const T u = (mean[i] * c1) / (sqrt(var[i] * c2) + eps) + lam * wi;
    w[i] = wi - lr_trust * u;
""",
)


@options
class LAMBOptions(AbstractOptimizerOptions):
    """Options of :class:`LAMB` (defaults from the paper)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(1e-6, gt=0.0, doc="added to the root of the second moment")
    max_trust_ratio: float = hyperparameter(
        10.0, gt=0.0, doc="upper bound of the per-tensor trust ratio (fastai clips at 10)"
    )
    weight_decay: float = hyperparameter(0.01, ge=0.0, doc="decoupled decay, inside u")


@register
class LAMB(AbstractOptimizer):
    """LAMB (You et al. 2019): Adam's step with decoupled decay, scaled per tensor.

    ``LAMB(*, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-6, max_trust_ratio=10.0,
    grad_clip=0.0, weight_decay=0.01, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Yang You, Jing Li, Sashank Reddi, Jonathan Hseu, Sanjiv Kumar, Srinadh
    Bhojanapalli, Xiaodan Song, James Demmel, Kurt Keutzer, Cho-Jui Hsieh, "Large
    Batch Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020,
    arXiv:1904.00962, Algorithm 2. Per tensor, with :math:`g` the
    :func:`~mxopt.normalized_gradient` without an L2 term:

    .. math::

        u = \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon} + \\lambda W, \\qquad
        W \\leftarrow W - \\eta\\, \\min(\\lVert W\\rVert / \\lVert u\\rVert, r_{max})\\, u

    with bias-corrected moments :math:`\\hat m = m/(1-\\beta_1^k)`,
    :math:`\\hat v = v/(1-\\beta_2^k)` (:math:`m`, :math:`v` as in Adam) and the
    ratio 1 when a norm is 0. The weight decay is part of :math:`u`, never of the
    gradient. The norms are float64 sums over fixed blocks, so the result does not
    depend on the thread count. Each step is :math:`\\eta \\lVert W\\rVert` long
    (unless capped), so with a constant rate LAMB does not settle at a minimum,
    and a tensor passing near :math:`W = 0` moves very slowly.

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`v`), 8 bytes per float32
    parameter.

    Equivalents: torch.optim has no LAMB. ``optax.lamb`` has this form. fastai's
    ``Lamb(lr, mom, sqr_mom, eps, wd=0)`` is ``LAMB(lr=lr, beta1=mom,
    beta2=sqr_mom, epsilon=eps, weight_decay=0.0)`` (fastai's defaults:
    ``beta2=0.99, epsilon=1e-5``; with a weight decay, fastai decays the weight
    before the step instead of inside :math:`u`).
    """

    Options = LAMBOptions
    about = About(
        family="adam-family",
        same_as="the form of `optax.lamb`; fastai's `Lamb` with its own defaults",
        weight_decay="inside the per-tensor step `u`",
        epsilon="outside the root",
        examples=({},),
    )
    per_tensor = True

    def kernel(self) -> Kernel:
        return LAMB_MOMENTS_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {
            "rescale": v.rescale, "clip": v.grad_clip,
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "c1": 1.0 / (1.0 - v.beta1**step), "c2": 1.0 / (1.0 - v.beta2**step),
            "eps": v.epsilon, "lam": v.weight_decay, "lr": v.lr, "max_ratio": v.max_trust_ratio,
        }  # fmt: skip

    def prepare(self, v, step, memory):
        return self.kernel_scalars(v, step, memory)

    def apply(self, backend, w, g, arrays, x, check):
        state = arrays.arrays_for(LAMB_MOMENTS_KERNEL)
        moments = LAMB_MOMENTS_KERNEL.pack(x)
        bad, w_squares, u_squares = backend.run(LAMB_MOMENTS_KERNEL, w, g, state, moments, check)
        if bad:
            return bad
        ratio = trust_ratios(np.array([w_squares]), np.array([u_squares]), x["max_ratio"])[0]
        step = LAMB_STEP_KERNEL.pack({**x, "lr_trust": x["lr"] * float(ratio)})
        backend.run(LAMB_STEP_KERNEL, w, g, state, step, False)
        return 0

    def apply_segments(self, backend, w, g, arrays, offsets, x, check):
        """Every tensor of a packed buffer, with its own trust ratio, in two calls."""
        state = arrays.arrays_for(LAMB_MOMENTS_KERNEL)
        segments = len(offsets) - 1
        table = backends.scalar_table(w, LAMB_MOMENTS_KERNEL.rows(x, segments))
        bad, sums = backend.run_segments(LAMB_MOMENTS_KERNEL, w, g, state, offsets, table, check)
        if bad:
            return bad
        sums = backends.to_host(sums)
        ratios = x["lr"] * trust_ratios(sums[:, 0], sums[:, 1], x["max_ratio"])
        table = backends.scalar_table(w, LAMB_STEP_KERNEL.rows({**x, "lr_trust": ratios}, segments))
        backend.run_segments(LAMB_STEP_KERNEL, w, g, state, offsets, table, False)
        return 0


def trust_ratios(w_squares, u_squares, max_ratio):
    """``min(||W|| / ||u||, max_ratio)``, or 1 where a norm is 0 (float64, elementwise)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(np.sqrt(w_squares) / np.sqrt(u_squares), max_ratio)
    return np.where((w_squares > 0) & (u_squares > 0), ratio, 1.0)

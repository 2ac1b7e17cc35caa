"""Prodigy (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
Learner", ICML 2024, arXiv:2306.06101): Adam whose step size :math:`d` is estimated
from the run, so ``lr`` stays 1.

For the :math:`k`-th update, with :math:`g` the clipped, rescaled gradient (no L2
term), :math:`x_0` the weights before the first update, :math:`d` the current
estimate (:math:`d_0` at first), :math:`\\eta` = ``lr`` and
:math:`\\hat\\eta = d\\,\\eta\\,\\sqrt{1-\\beta_2^k}/(1-\\beta_1^k)` (without the
fraction when ``bias_correction=False``):

.. math::

    m &\\leftarrow \\beta_1 m + (1-\\beta_1) d g, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) d^2 g^2 \\\\
    s &\\leftarrow \\beta_3 s + \\frac{\\hat\\eta}{d_0} d g, \\qquad
    r \\leftarrow \\beta_3 r + \\frac{d}{d_0} \\hat\\eta \\langle g, x_0 - x\\rangle \\\\
    d' &= \\max\\left(d, \\min\\left(\\frac{c\\, r}{\\lVert s \\rVert_1}, d\\,\\text{growth}
    \\right)\\right) \\\\
    x &\\leftarrow x - \\hat\\eta \\left(\\lambda x + \\frac{m}{\\sqrt v + d' \\epsilon}\\right)

with :math:`c` = ``d_coef``; ``safeguard_warmup`` puts :math:`d\\eta` (no bias
correction) in place of :math:`\\hat\\eta` in the update of :math:`s`. The inner
product and the norm run over **every weight of the step**, so :math:`d` is one
number for the whole model; they are the step's sums, computed before anything is
written (and summed over the ranks of a distributed step).
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.checks import shown
from mxopt.core.fields import flag, hyperparameter, optional_limit
from mxopt.kernels.kernel import Kernel, clip_gradient_element
from mxopt.optimizers.base import WEIGHT_COPY, About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["Prodigy", "ProdigyOptions"]


def prodigy_sums_element(i, w, g, grad_sum, initial, rescale, clip, beta3, s_coef):
    gi = clip_gradient_element(g[i], rescale, clip)
    s = beta3 * grad_sum[i] + s_coef * gi
    if s < 0:
        s = -s
    # <g, x0 - x> and |s| after this step's update of s, summed in float64
    return np.float64(gi) * (np.float64(initial[i]) - np.float64(w[i])), np.float64(s)


PRODIGY_SUMS_KERNEL = Kernel(
    name="prodigy_sums",
    state=("grad_sum", "initial"),
    cpu=prodigy_sums_element,
    reduces=True,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    T s = beta3 * grad_sum[i] + s_coef * gi;
    if (s < T(0)) s = -s;
    return mx_pair{(double)gi * ((double)initial[i] - (double)w[i]), (double)s};
""",
)


def prodigy_element(
    i, w, g, mean, var, grad_sum, initial, rescale, clip, d, beta1, one_minus_beta1, beta2,
    one_minus_beta2, beta3, s_coef, decay, dlr, d_eps,
):  # fmt: skip
    gi = clip_gradient_element(g[i], rescale, clip)
    dg = d * gi
    m = beta1 * mean[i] + one_minus_beta1 * dg
    v = beta2 * var[i] + one_minus_beta2 * dg * dg
    mean[i] = m
    var[i] = v
    grad_sum[i] = beta3 * grad_sum[i] + s_coef * gi
    w[i] = w[i] * decay - dlr * m / (np.sqrt(v) + d_eps)


PRODIGY_KERNEL = Kernel(
    name="prodigy",
    state=("mean", "var", "grad_sum", "initial"),
    cpu=prodigy_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T dg = d * gi;
    const T m = beta1 * mean[i] + one_minus_beta1 * dg;
    const T v = beta2 * var[i] + one_minus_beta2 * dg * dg;
    mean[i] = m;
    var[i] = v;
    grad_sum[i] = beta3 * grad_sum[i] + s_coef * gi;
    w[i] = w[i] * decay - dlr * m / (sqrt(v) + d_eps);
""",
)


@options
class ProdigyOptions(AbstractOptimizerOptions):
    """Options of :class:`Prodigy` (defaults of the paper's code and optax)."""

    lr: float = hyperparameter(
        1.0, gt=0.0, doc="multiplies the estimated step size d; leave at 1 (or schedule it)"
    )
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    beta3: float = hyperparameter(
        0.0, ge=0.0, lt=1.0, doc="decay of the sums behind d; 0 means sqrt(beta2)"
    )
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to sqrt(v), times d")
    d0: float = hyperparameter(1e-6, gt=0.0, doc="the first estimate of d")
    d_coef: float = hyperparameter(1.0, gt=0.0, doc="multiplies each new estimate of d")
    growth_rate: float | None = optional_limit(
        gt=1.0, doc="d grows at most by this factor per step (None or inf: no limit)"
    )
    weight_decay: float = hyperparameter(
        0.0, ge=0.0, doc="decoupled decay, scaled by the step size: W *= 1 - d lr wd"
    )
    safeguard_warmup: bool = flag(False, doc="leave the lr's bias correction out of s")
    bias_correction: bool = flag(False, doc="Adam's bias corrections in the step size")


@register
class Prodigy(AbstractOptimizer):
    """Prodigy (Mishchenko & Defazio 2024): Adam with a learned step size, for ``lr=1``.

    ``Prodigy(*, lr=1.0, beta1=0.9, beta2=0.999, beta3=0.0, epsilon=1e-8, d0=1e-6,
    d_coef=1.0, growth_rate=None, safeguard_warmup=False, bias_correction=False,
    grad_clip=0.0, weight_decay=0.0, grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Konstantin Mishchenko, Aaron Defazio, "Prodigy: An Expeditiously Adaptive
    Parameter-Free Learner", ICML 2024, arXiv:2306.06101 (Algorithm 4, the Adam
    version). With :math:`d` the step size estimated so far and
    :math:`\\hat\\eta = d\\,\\eta\\,\\sqrt{1-\\beta_2^k}/(1-\\beta_1^k)` (the fraction only
    with ``bias_correction``):

    .. math::

        m \\leftarrow \\beta_1 m + (1-\\beta_1) d g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) d^2 g^2, \\quad
        s \\leftarrow \\beta_3 s + \\tfrac{\\hat\\eta}{d_0} d g \\\\
        r \\leftarrow \\beta_3 r + \\tfrac{d}{d_0}\\hat\\eta \\langle g, x_0 - x\\rangle,
        \\quad d \\leftarrow \\max\\left(d, \\min\\left(\\tfrac{c\\, r}{\\lVert s
        \\rVert_1}, d\\,\\text{growth\\_rate}\\right)\\right) \\\\
        W \\leftarrow W - \\hat\\eta \\left(\\lambda W + \\frac{m}{\\sqrt v + d\\,\\epsilon}
        \\right)

    (the last line with the new :math:`d` in the denominator, as the reference code;
    :math:`\\beta_3 = \\sqrt{\\beta_2}` when ``beta3=0``; no limit on the growth when
    ``growth_rate`` is None or inf).

    **One d per step.** The inner product and :math:`\\lVert s \\rVert_1` are sums over
    every weight the step updates: ``update_many`` and packed buffers (and a
    :class:`~mxopt.distributed.ShardedUpdater`, over all ranks) estimate one
    :math:`d` for the model, as optax and the reference code do. A single-index call
    ``updater(index, grad, weight)`` is a step of one weight, so each index then
    learns its own :math:`d` (Prodigy per tensor), which is usually not what you
    want: hand the whole model to ``update_many`` or a packed buffer. Each weight
    keeps :math:`d` and :math:`r` among its per-weight scalars (the same numbers for
    weights updated together), so checkpoints resume exactly. When
    :math:`\\lVert s \\rVert_1 = 0` (only zero gradients so far) :math:`d` stays.

    State: ``"mean"``, ``"var"``, ``"grad_sum"`` (:math:`s`) and ``"initial"``
    (:math:`x_0`, a copy of the weight), 16 bytes per float32 parameter; per weight,
    :math:`d` and :math:`r`.

    Equivalents: ``optax.contrib.prodigy(learning_rate=lr, betas=(beta1, beta2),
    beta3=beta3 or None, eps=epsilon, estim_lr0=d0, estim_lr_coef=d_coef,
    weight_decay=wd, safeguard_warmup=...)`` is ``Prodigy(...,
    bias_correction=True)`` with ``batch_size=1`` (optax always corrects and has no
    ``growth_rate``); the reference ``prodigyopt.Prodigy`` defaults to
    ``use_bias_correction=False`` like mxopt.
    """

    Options = ProdigyOptions
    has_memory = True
    #: the update reads sums over every weight of the step (see the class docstring)
    step_sums_kernel = PRODIGY_SUMS_KERNEL
    about = About(
        family="recent",
        same_as="`optax.contrib.prodigy` (with `bias_correction=True`, `batch_size=1`)",
        weight_decay="decoupled, scaled by the estimated step size",
        epsilon="added to `sqrt(v)`, times d",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return PRODIGY_KERNEL

    def state_spec(self, shape):
        return {"mean": 0.0, "var": 0.0, "grad_sum": 0.0, "initial": WEIGHT_COPY}

    def kernel_scalars(self, v, step, memory):
        """Every scalar but ``d_eps``, which needs the step's sums (see
        :meth:`with_step_sums`), and the values those need."""
        d = memory.get("d", v.d0)
        beta3 = v.beta3 or math.sqrt(v.beta2)
        correction = 1.0
        if v.bias_correction:
            correction = math.sqrt(1.0 - v.beta2**step) / (1.0 - v.beta1**step)
        dlr = d * v.lr * correction
        s_coef = (d * v.lr if v.safeguard_warmup else dlr) / v.d0 * d
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "d": d, "beta1": v.beta1,
            "one_minus_beta1": 1.0 - v.beta1, "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "beta3": beta3, "s_coef": s_coef, "decay": 1.0 - dlr * v.weight_decay, "dlr": dlr,
            # for with_step_sums
            "numerator": beta3 * memory.get("numerator", 0.0), "r_coef": d / v.d0 * dlr,
            "d_coef": v.d_coef, "growth_rate": v.growth_rate or math.inf, "epsilon": v.epsilon,
        }  # fmt: skip

    def prepare(self, v, step, memory):
        return self.kernel_scalars(v, step, memory)

    def next_memory(self, v, step, memory):
        return memory  # d and r need the step's sums: with_step_sums gives them

    def with_step_sums(self, prepared, sums) -> tuple:
        """``(kernel scalars, next per-weight scalars)`` once the step's sums are known:
        ``sums = (sum of g (x0 - x), sum of |s|)`` over every weight of the step."""
        inner, s_norm = sums
        numerator = prepared["numerator"] + prepared["r_coef"] * inner
        d = prepared["d"]
        if s_norm > 0:
            d = max(d, min(prepared["d_coef"] * numerator / s_norm, d * prepared["growth_rate"]))
        if not math.isfinite(d):
            raise FloatingPointError(
                f"Prodigy: the step size estimate became {shown(d)} (sums {shown(sums)}); "
                f"nothing was modified"
            )
        scalars = PRODIGY_KERNEL.pack({**prepared, "d_eps": d * prepared["epsilon"]})
        return scalars, {"d": d, "numerator": numerator}

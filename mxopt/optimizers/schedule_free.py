"""Schedule-Free SGD and AdamW (Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky,
"The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682).

No learning-rate schedule to tune: momentum is replaced by an interpolation between
a base sequence :math:`z` (plain SGD or Adam steps) and its weighted running average
:math:`x`, and the gradient is taken at the interpolation :math:`y`. For the
:math:`k`-th update of a weight, with :math:`g = \\nabla f(y)` (clipped and rescaled):

.. math::

    \\gamma_k &= \\eta \\min(1, k / \\text{warmup\\_steps}), \\qquad
    w_k = k^r \\left(\\max_{j \\le k} \\gamma_j\\right)^{p}, \\qquad
    c_k = w_k / \\textstyle\\sum_{j \\le k} w_j \\\\
    z &\\leftarrow z - \\gamma_k (u + \\lambda y) \\\\
    x &\\leftarrow (1 - c_k) x + c_k z \\\\
    y &\\leftarrow \\beta_1 x + (1 - \\beta_1) z

with :math:`u = g` for SGD and :math:`u = g / (\\sqrt{v / (1-\\beta_2^k)} +
\\epsilon)`, :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`, for AdamW;
:math:`p` is ``weight_lr_power``. The three sequences start at the initial weight.

**Which point is which.** The weight the user holds is :math:`y`, where gradients
are taken. The evaluation point :math:`x` is kept in the state array ``"x"``
and served by the updater's averaging API, as with ``averaging=EMA()``:
``with updater.averaged(weights):`` evaluates at :math:`x`, ``updater.averages``
maps indices to it and ``updater.swap_averages(weights)`` exchanges the two. A
checkpoint holds :math:`y` in the weights and :math:`x`, :math:`z` in the state,
so a resumed run continues bit for bit; to keep only the model for inference, save
it inside ``updater.averaged(...)``. The reference implementation and optax recover
:math:`x` from :math:`y` and :math:`z` instead of storing it (one array less); mxopt
stores it so that evaluation and the swap back are exact.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.fields import hyperparameter, integer
from mxopt.kernels.kernel import Kernel, clip_gradient_element
from mxopt.optimizers.base import WEIGHT_COPY, About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = [
    "ScheduleFreeAdamW",
    "ScheduleFreeAdamWOptions",
    "ScheduleFreeSGD",
    "ScheduleFreeSGDOptions",
]


def schedule_free_sgd_element(
    i, w, g, z, x, rescale, clip, lr, wd, ck, one_minus_ck, beta1, one_minus_beta1
):
    gi = clip_gradient_element(g[i], rescale, clip)
    zi = z[i] - lr * (gi + wd * w[i])
    xi = one_minus_ck * x[i] + ck * zi
    z[i] = zi
    x[i] = xi
    w[i] = beta1 * xi + one_minus_beta1 * zi


SCHEDULE_FREE_SGD_KERNEL = Kernel(
    name="schedule_free_sgd",
    state=("z", "x"),
    cpu=schedule_free_sgd_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T zi = z[i] - lr * (gi + wd * w[i]);
    const T xi = one_minus_ck * x[i] + ck * zi;
    z[i] = zi;
    x[i] = xi;
    w[i] = beta1 * xi + one_minus_beta1 * zi;
""",
)


def schedule_free_adamw_element(
    i, w, g, z, x, var, rescale, clip, lr, wd, ck, one_minus_ck, beta1, one_minus_beta1,
    beta2, one_minus_beta2, correction2, eps,
):  # fmt: skip
    gi = clip_gradient_element(g[i], rescale, clip)
    vi = beta2 * var[i] + one_minus_beta2 * gi * gi
    u = gi / (np.sqrt(vi / correction2) + eps)
    zi = z[i] - lr * (u + wd * w[i])
    xi = one_minus_ck * x[i] + ck * zi
    var[i] = vi
    z[i] = zi
    x[i] = xi
    w[i] = beta1 * xi + one_minus_beta1 * zi


SCHEDULE_FREE_ADAMW_KERNEL = Kernel(
    name="schedule_free_adamw",
    state=("z", "x", "var"),
    cpu=schedule_free_adamw_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T vi = beta2 * var[i] + one_minus_beta2 * gi * gi;
    const T u = gi / (sqrt(vi / correction2) + eps);
    const T zi = z[i] - lr * (u + wd * w[i]);
    const T xi = one_minus_ck * x[i] + ck * zi;
    var[i] = vi;
    z[i] = zi;
    x[i] = xi;
    w[i] = beta1 * xi + one_minus_beta1 * zi;
""",
)


@options
class ScheduleFreeSGDOptions(AbstractOptimizerOptions):
    """Options of :class:`ScheduleFreeSGD` (defaults of the paper and optax)."""

    lr: float = hyperparameter(1.0, gt=0.0, doc="learning rate, used when no lr_scheduler")
    momentum: float = hyperparameter(
        0.9, gt=0.0, lt=1.0, doc="interpolation: y = momentum * x + (1 - momentum) * z"
    )
    weight_decay: float = hyperparameter(
        0.0, ge=0.0, doc="decay taken at y inside the z step: z -= lr * (g + weight_decay * y)"
    )
    warmup_steps: int = integer(0, doc="linear warm-up of the lr over this many updates (0: none)")
    r: float = hyperparameter(0.0, ge=0.0, doc="the averaging weight grows like k**r")
    weight_lr_power: float = hyperparameter(
        2.0, ge=0.0, doc="the averaging weight grows like max_lr**weight_lr_power"
    )


@options
class ScheduleFreeAdamWOptions(AbstractOptimizerOptions):
    """Options of :class:`ScheduleFreeAdamW` (defaults of the paper and optax)."""

    lr: float = hyperparameter(0.0025, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(
        0.9, gt=0.0, lt=1.0, doc="interpolation: y = beta1 * x + (1 - beta1) * z"
    )
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the corrected root of v")
    weight_decay: float = hyperparameter(
        0.0, ge=0.0, doc="decay taken at y inside the z step, not preconditioned"
    )
    warmup_steps: int = integer(0, doc="linear warm-up of the lr over this many updates (0: none)")
    r: float = hyperparameter(0.0, ge=0.0, doc="the averaging weight grows like k**r")
    weight_lr_power: float = hyperparameter(
        2.0, ge=0.0, doc="the averaging weight grows like max_lr**weight_lr_power"
    )


class _ScheduleFree(AbstractOptimizer):
    """What both variants share: the warm-up, the averaging weights and the state."""

    #: The state array "x" is the evaluation point, served by the updater's averaging API
    #: (updater.averaged, swap_averages) unless the updater is given an averaging= of its own.
    evaluation_point = "x"
    #: Per weight: the sum of the averaging weights and the largest lr so far.
    has_memory = True

    def state_spec(self, shape):
        return {name: WEIGHT_COPY if name != "var" else 0.0 for name in self.kernel().state}

    @staticmethod
    def _lr(v, step: int) -> float:
        if v.warmup_steps > 0 and step < v.warmup_steps:
            return v.lr * (step / v.warmup_steps)
        return v.lr

    def _averaging(self, v, step: int, memory: dict) -> tuple[float, float, float, float]:
        """``(lr_k, c_k, next weight sum, next max lr)`` of the ``step``-th update."""
        lr = self._lr(v, step)
        lr_max = max(memory.get("lr_max", 0.0), lr)
        weight = (step**v.r) * lr_max**v.weight_lr_power
        weight_sum = memory.get("weight_sum", 0.0) + weight
        # an lr of 0 so far gives no weight at all: x stays where it is, as optax
        ck = weight / weight_sum if weight_sum > 0 else 0.0
        if not math.isfinite(ck):
            raise ValueError(
                f"{type(self).__name__}: the averaging weight of update {step} is not finite "
                f"(lr {lr!r}, weight_lr_power {v.weight_lr_power!r}, r {v.r!r})"
            )
        return lr, ck, weight_sum, lr_max

    def next_memory(self, v, step, memory):
        _, _, weight_sum, lr_max = self._averaging(v, step, memory)
        return {"weight_sum": weight_sum, "lr_max": lr_max}

    def _common_scalars(self, v, step, memory, beta1):
        lr, ck, _, _ = self._averaging(v, step, memory)
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "lr": lr, "wd": v.weight_decay,
            "ck": ck, "one_minus_ck": 1.0 - ck, "beta1": beta1, "one_minus_beta1": 1.0 - beta1,
        }  # fmt: skip


@register
class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-Free SGD (Defazio et al. 2024): no schedule, an averaged iterate instead.

    ``ScheduleFreeSGD(*, lr=1.0, momentum=0.9, warmup_steps=0, r=0.0,
    weight_lr_power=2.0, grad_clip=0.0, weight_decay=0.0, grad_scale=1.0,
    maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Aaron Defazio, Xingyu Alice Yang, Harsh Mehta, Konstantin Mishchenko, Ahmed
    Khaled, Ashok Cutkosky, "The Road Less Scheduled", NeurIPS 2024,
    arXiv:2405.15682. For the :math:`k`-th update of a weight, with :math:`g` the
    clipped, rescaled gradient taken at the weight :math:`y` (no L2 term), and
    :math:`\\mu` = ``momentum``:

    .. math::

        \\gamma_k = \\eta \\min(1, k / \\text{warmup}), \\quad
        c_k = \\frac{k^r (\\max_{j\\le k}\\gamma_j)^p}{\\sum_{i \\le k} i^r
        (\\max_{j\\le i}\\gamma_j)^p} \\\\
        z \\leftarrow z - \\gamma_k (g + \\lambda y), \\quad
        x \\leftarrow (1 - c_k) x + c_k z, \\quad
        y \\leftarrow \\mu x + (1 - \\mu) z

    The weights you hold are :math:`y`; evaluate at :math:`x` with ``with
    updater.averaged(weights):`` (the state array ``"x"``; an ``averaging=`` given
    to the updater would replace it there by a moving average of :math:`y`).
    ``lr_scheduler`` is allowed (a warm-up, say) but the method is meant to run
    without a decay. The averaging
    weights use the per-weight update count :math:`k` and the largest learning rate
    that weight has seen.

    State: ``"z"`` and ``"x"``, both starting as copies of the
    weight, 8 bytes per float32 parameter; per weight, the sum of the averaging
    weights and the largest lr so far.

    Equivalents: ``optax.contrib.schedule_free_sgd(learning_rate=lr, b1=momentum,
    weight_decay=weight_decay or None, weight_lr_power=p)`` with ``batch_size=1``
    and ``r=0`` (optax has no ``r``) reproduces it, and so does
    ``schedulefree.SGDScheduleFree`` without warm-up. With ``warmup_steps``, mxopt
    follows the paper and the reference implementation (the same
    :math:`\\gamma_k` in the z step and in the averaging weight); optax's z step reads
    its warm-up one count behind (0 at the first update).
    """

    Options = ScheduleFreeSGDOptions
    about = About(
        family="recent",
        same_as="`optax.contrib.schedule_free_sgd` (with `batch_size=1`, no warm-up)",
        weight_decay="at y, inside the z step",
        epsilon="",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return SCHEDULE_FREE_SGD_KERNEL

    def kernel_scalars(self, v, step, memory):
        return self._common_scalars(v, step, memory, v.momentum)


@register
class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-Free AdamW (Defazio et al. 2024): Adam's preconditioned steps, averaged.

    ``ScheduleFreeAdamW(*, lr=0.0025, beta1=0.9, beta2=0.999, epsilon=1e-8,
    warmup_steps=0, r=0.0, weight_lr_power=2.0, grad_clip=0.0, weight_decay=0.0,
    grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Aaron Defazio et al., "The Road Less Scheduled", NeurIPS 2024,
    arXiv:2405.15682. As :class:`ScheduleFreeSGD` with :math:`\\beta_1` for the
    interpolation and the z step preconditioned by Adam's bias-corrected second
    moment (no first moment: the interpolation plays its part):

    .. math::

        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2, \\quad
        z \\leftarrow z - \\gamma_k \\left(\\frac{g}{\\sqrt{v/(1-\\beta_2^k)} + \\epsilon}
        + \\lambda y\\right), \\quad
        x \\leftarrow (1 - c_k) x + c_k z, \\quad
        y \\leftarrow \\beta_1 x + (1 - \\beta_1) z

    The weight decay is taken at :math:`y` and not preconditioned (the paper's
    "decay at y"). Evaluate at :math:`x` with ``with updater.averaged(weights):``.

    State: ``"z"``, ``"x"`` and ``"var"``, 12 bytes per float32
    parameter (the reference implementation keeps 8 and recomputes :math:`x` from
    :math:`y` and :math:`z`; mxopt keeps :math:`x` so evaluation is exact).

    Equivalents: ``optax.contrib.schedule_free_adamw(learning_rate=lr, b1=beta1,
    b2=beta2, eps=epsilon, weight_decay=weight_decay, weight_lr_power=p)`` with
    ``batch_size=1`` and ``r=0``. The reference PyTorch implementation
    (``schedulefree.AdamWScheduleFree``) folds :math:`\\sqrt{1-\\beta_2^k}` into the
    learning rate, so its epsilon weighs slightly differently early on and its
    averaging weights grow with that factor too; warm-up as for
    :class:`ScheduleFreeSGD`.
    """

    Options = ScheduleFreeAdamWOptions
    about = About(
        family="recent",
        same_as="`optax.contrib.schedule_free_adamw` (with `batch_size=1`, no warm-up)",
        weight_decay="at y, inside the z step, not preconditioned",
        epsilon="added to the root of the bias-corrected second moment",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return SCHEDULE_FREE_ADAMW_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {
            **self._common_scalars(v, step, memory, v.beta1),
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "correction2": 1.0 - v.beta2**step, "eps": v.epsilon,
        }  # fmt: skip

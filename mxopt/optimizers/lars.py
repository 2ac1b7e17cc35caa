"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, "Large Batch Training
of Convolutional Networks", arXiv:1708.03888, Algorithm 1), with LARC's clip.

SGD with momentum whose learning rate is scaled per tensor by a trust ratio.
With :math:`g` the :func:`~mxopt.normalized_gradient` without its L2 term,
:math:`\\eta` the global learning rate, :math:`\\tau` the trust coefficient and
:math:`\\lambda` the weight decay:

.. math::

    r &= \\tau \\frac{\\lVert W \\rVert}{\\lVert g \\rVert + \\lambda \\lVert W \\rVert + \\epsilon}
        \\quad (1 \\text{ when } \\lVert W \\rVert = 0 \\text{ or } \\lVert g \\rVert = 0) \\\\
    v &\\leftarrow \\mu v - \\eta\\, r\\, (g + \\lambda W), \\qquad W \\leftarrow W + v

With ``clip=True`` (LARC, as fastai's ``Larc`` and NVIDIA apex's ``LARC``) the
ratio is capped at 1, so the local rate :math:`\\eta r` never exceeds the
global one. Two passes: the first sums :math:`\\lVert W\\rVert^2` and
:math:`\\lVert g\\rVert^2` in float64 over fixed blocks (thread-count independent),
the second updates velocity and weight.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels import backends
from mxopt.kernels.kernel import Kernel, clip_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["LARS", "LARSOptions"]


def lars_norms_element(i, w, g, rescale, clip):
    wi = w[i]
    gi = clip_gradient_element(g[i], rescale, clip)
    return np.float64(wi) * np.float64(wi), np.float64(gi) * np.float64(gi)


LARS_NORMS_KERNEL = Kernel(
    name="lars_norms",
    state=(),
    cpu=lars_norms_element,
    reduces=True,
    cuda="""
    const T wi = w[i];
    const T gi = clip_gradient_element(g[i], rescale, clip);
    return mx_pair{(double)wi * (double)wi, (double)gi * (double)gi};
""",
)


def lars_step_element(i, w, g, velocity, rescale, clip, wd, mu, lr_ratio):
    wi = w[i]
    gi = clip_gradient_element(g[i], rescale, clip)
    v = mu * velocity[i] - lr_ratio * (gi + wd * wi)
    velocity[i] = v
    w[i] = wi + v


LARS_STEP_KERNEL = Kernel(
    name="lars_step",
    state=("velocity",),
    cpu=lars_step_element,
    cuda="""
    const T wi = w[i];
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T v = mu * velocity[i] - lr_ratio * (gi + wd * wi);
    velocity[i] = v;
    w[i] = wi + v;
""",
)


@options
class LARSOptions(AbstractOptimizerOptions):
    """Options of :class:`LARS` (trust coefficient and defaults from the paper)."""

    lr: float = hyperparameter(0.1, gt=0.0, doc="global learning rate")
    momentum: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="momentum mu")
    trust_coefficient: float = hyperparameter(0.001, gt=0.0, doc="tau, the trust coefficient")
    epsilon: float = hyperparameter(1e-8, ge=0.0, doc="added to the ratio's denominator")
    clip: bool = flag(False, doc="LARC: cap the trust ratio at 1")
    weight_decay: float = hyperparameter(5e-4, ge=0.0, doc="lambda, inside the trust ratio")


@register
class LARS(AbstractOptimizer):
    """LARS (You et al. 2017), or LARC with ``clip=True``: SGD-momentum with a per-tensor rate.

    ``LARS(*, lr=0.1, momentum=0.9, trust_coefficient=0.001, epsilon=1e-8, clip=False,
    grad_clip=0.0, weight_decay=5e-4, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Yang You, Igor Gitman, Boris Ginsburg, "Large Batch Training of Convolutional
    Networks", arXiv:1708.03888, Algorithm 1, and LARC's clip with ``clip=True``.
    Per tensor, with :math:`g` the :func:`~mxopt.normalized_gradient` without an L2
    term and :math:`\\tau` = ``trust_coefficient``:

    .. math::

        r = \\tau \\frac{\\lVert W\\rVert}{\\lVert g\\rVert + \\lambda\\lVert W\\rVert
        + \\epsilon}, \\quad v \\leftarrow \\mu v - \\eta r (g + \\lambda W), \\quad
        W \\leftarrow W + v

    :math:`r = 1` when a norm is 0; with ``clip`` :math:`r \\le 1` (LARC: the local
    rate never exceeds :math:`\\eta`). The weight decay :math:`\\lambda W` is added
    to the step and to the ratio's denominator, not to the norm of :math:`g`. The
    velocity has the learning rate folded in, as MXNet's SGD. The norms are
    float64 sums over fixed blocks, so the result does not depend on the thread
    count.

    State: ``"velocity"`` (:math:`v`), 4 bytes per float32 parameter.

    Equivalents: torch.optim has no LARS. fastai's ``Larc(lr, mom, clip,
    trust_coeff, eps, wd)`` computes the same ratio (its defaults: ``clip=True,
    trust_coeff=0.02``); its momentum buffer accumulates raw gradients and is
    scaled by the current local rate, where mxopt folds each step's rate into the
    velocity, so the two agree exactly only with ``momentum=0`` and no weight
    decay.
    """

    Options = LARSOptions
    about = About(
        family="others",
        same_as="fastai's `Larc` (its ratio; its update only with "
        "`momentum=0.0, weight_decay=0.0`)",
        weight_decay="`weight_decay * W` added to the step and to the trust ratio's denominator",
        epsilon="in the trust ratio's denominator",
        examples=({},),
    )
    per_tensor = True

    def kernel(self) -> Kernel:
        return LARS_STEP_KERNEL

    def kernel_scalars(self, v, step, memory):
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.weight_decay, "mu": v.momentum,
            "lr": v.lr, "coefficient": v.trust_coefficient, "epsilon": v.epsilon,
        }  # fmt: skip

    def prepare(self, v, step, memory):
        return self.kernel_scalars(v, step, memory)

    def trust_ratios(self, x, w_squares, g_squares):
        """The ratios :math:`r` (float64 array) from squared norms of weights and
        gradients, with ``x`` what :meth:`prepare` returned."""
        w_norm = np.sqrt(w_squares)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = x["coefficient"] * w_norm / (np.sqrt(g_squares) + x["wd"] * w_norm
                                                 + x["epsilon"])  # fmt: skip
        if self.opts.clip:
            ratio = np.minimum(ratio, 1.0)
        return np.where((w_squares > 0) & (g_squares > 0), ratio, 1.0)

    def apply(self, backend, w, g, arrays, x, check):
        norms = LARS_NORMS_KERNEL.pack(x)
        bad, w_squares, g_squares = backend.run(LARS_NORMS_KERNEL, w, g, (), norms, check)
        if bad:
            return bad
        ratio = self.trust_ratios(x, np.array([w_squares]), np.array([g_squares]))[0]
        step = LARS_STEP_KERNEL.pack({**x, "lr_ratio": x["lr"] * float(ratio)})
        backend.run(LARS_STEP_KERNEL, w, g, arrays.arrays_for(LARS_STEP_KERNEL), step, False)
        return 0

    def apply_segments(self, backend, w, g, arrays, offsets, x, check):
        """Every tensor of a packed buffer, with its own trust ratio, in two calls."""
        segments = len(offsets) - 1
        table = backends.scalar_table(w, LARS_NORMS_KERNEL.rows(x, segments))
        bad, sums = backend.run_segments(LARS_NORMS_KERNEL, w, g, (), offsets, table, check)
        if bad:
            return bad
        sums = backends.to_host(sums)
        ratios = x["lr"] * self.trust_ratios(x, sums[:, 0], sums[:, 1])
        table = backends.scalar_table(w, LARS_STEP_KERNEL.rows({**x, "lr_ratio": ratios}, segments))
        state = arrays.arrays_for(LARS_STEP_KERNEL)
        backend.run_segments(LARS_STEP_KERNEL, w, g, state, offsets, table, False)
        return 0

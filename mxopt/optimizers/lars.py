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

from mxopt.kernels import backends
from mxopt.optimizers.base import (
    AbstractOptimizer,
    AbstractOptimizerOptions,
    flag,
    gradient_scalars,
    hyperparameter,
    options,
    read_hyperparameter,
)
from mxopt.kernels.kernel import Kernel, clip_gradient_element

__all__ = ["LARS", "LARSOptions"]


def lars_norms_element(i, w, g, state, s):
    rescale, clip = s
    wi = w[i]
    gi = clip_gradient_element(g[i], rescale, clip)
    return np.float64(wi) * np.float64(wi), np.float64(gi) * np.float64(gi)


LARS_NORMS_KERNEL = Kernel(
    name="lars_norms",
    state=(),
    scalars=("rescale", "clip"),
    cpu=lars_norms_element,
    reduces=True,
    cuda="""
    const T wi = w[i];
    const T gi = clip_gradient_element(g[i], rescale, clip);
    return mx_pair{(double)wi * (double)wi, (double)gi * (double)gi};
""",
)


def lars_step_element(i, w, g, state, s):
    (velocity,) = state
    rescale, clip, wd, mu, lr_ratio = s
    wi = w[i]
    gi = clip_gradient_element(g[i], rescale, clip)
    v = mu * velocity[i] - lr_ratio * (gi + wd * wi)
    velocity[i] = v
    w[i] = wi + v


LARS_STEP_KERNEL = Kernel(
    name="lars_step",
    state=("velocity",),
    scalars=("rescale", "clip", "wd", "mu", "lr_ratio"),
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


class LARS(AbstractOptimizer):
    """LARS (You et al. 2017), or LARC with ``clip=True``: SGD-momentum with a per-tensor rate.

    ``LARS(*, lr=0.1, momentum=0.9, trust_coefficient=0.001, epsilon=1e-8, clip=False,
    grad_clip=0.0, weight_decay=5e-4, grad_scale=1.0, maximize=False,
    lr_scheduler=None, state=None)``

    .. math::

        r = \\tau \\frac{\\lVert W\\rVert}{\\lVert g\\rVert + \\lambda\\lVert W\\rVert
        + \\epsilon}, \\quad v \\leftarrow \\mu v - \\eta r (g + \\lambda W), \\quad
        W \\leftarrow W + v

    :math:`r = 1` when a norm is 0; with ``clip`` :math:`r \\le 1` (LARC). The
    velocity has the learning rate folded in, as MXNet's SGD. State:
    ``"velocity"``. fastai's ``Larc(clip=True)`` uses ``trust_coefficient=0.02``.
    """

    Options = LARSOptions
    per_tensor = True

    def kernel(self) -> Kernel:
        return LARS_STEP_KERNEL

    def kernel_scalars(self, state, step, memory):
        rescale, clip, _ = gradient_scalars(self.opts, state)
        return (rescale, clip)

    def trust_ratios(self, state, w_squares, g_squares):
        """The ratios :math:`r` (float64 array) from squared norms of weights and gradients."""
        opts = self.opts
        wd = read_hyperparameter(opts, "weight_decay", state)
        coefficient = read_hyperparameter(opts, "trust_coefficient", state)
        epsilon = read_hyperparameter(opts, "epsilon", state)
        w_norm = np.sqrt(w_squares)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = coefficient * w_norm / (np.sqrt(g_squares) + wd * w_norm + epsilon)
        if opts.clip:
            ratio = np.minimum(ratio, 1.0)
        return np.where((w_squares > 0) & (g_squares > 0), ratio, 1.0)

    def _step_scalars(self, state, norms_scalars):
        wd = read_hyperparameter(self.opts, "weight_decay", state)
        mu = read_hyperparameter(self.opts, "momentum", state)
        return (*norms_scalars, wd, mu)

    def apply(self, backend, w, g, wstate, state, step, check):
        norms_scalars = self.cached_kernel_scalars(state, step, wstate.memory)
        lr = self.lr_value(state)
        step_scalars = self._step_scalars(state, norms_scalars)
        arrays = wstate.arrays_for(LARS_STEP_KERNEL)
        bad, w_squares, g_squares = backend.run(LARS_NORMS_KERNEL, w, g, (), norms_scalars, check)
        if bad:
            return bad
        ratio = self.trust_ratios(state, np.array([w_squares]), np.array([g_squares]))[0]
        backend.run(LARS_STEP_KERNEL, w, g, arrays, (*step_scalars, lr * float(ratio)), False)
        return 0

    def apply_segments(self, backend, w, g, wstate, offsets, state, step, check):
        """Every tensor of a packed buffer, with its own trust ratio, in two calls."""
        norms_scalars = self.cached_kernel_scalars(state, step, wstate.memory)
        lr = self.lr_value(state)
        step_scalars = self._step_scalars(state, norms_scalars)
        arrays = wstate.arrays_for(LARS_STEP_KERNEL)
        segments = len(offsets) - 1
        table = backends.scalar_table(w, np.broadcast_to(norms_scalars, (segments, 2)))
        bad, sums = backend.run_segments(LARS_NORMS_KERNEL, w, g, (), offsets, table, check)
        if bad:
            return bad
        sums = backends.to_host(sums)
        rows = np.empty((segments, 5))
        rows[:, :4] = step_scalars
        rows[:, 4] = lr * self.trust_ratios(state, sums[:, 0], sums[:, 1])
        backend.run_segments(
            LARS_STEP_KERNEL, w, g, arrays, offsets, backends.scalar_table(w, rows), False
        )
        return 0

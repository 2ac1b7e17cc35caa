"""ASGD: averaged stochastic gradient descent (Polyak & Juditsky, "Acceleration of
Stochastic Approximation by Averaging", SIAM J. Control Optim. 1992; Bottou,
"Stochastic Gradient Descent Tricks", 2012), in torch.optim.ASGD's variant.

Plain SGD with a decaying step and a decay term, plus a running average of the
weights (state ``"ax"``) that starts after ``t0`` updates. For the ``k``-th
update of a weight, with :math:`g` the :func:`~mxopt.normalized_gradient`:

.. math::

    \\eta_k &= \\frac{\\eta}{(1 + \\lambda \\eta (k-1))^{\\alpha}}, \\qquad
    \\mu_k = \\frac{1}{\\max(1, k - 1 - t_0)} \\\\
    W &\\leftarrow (1 - \\lambda \\eta_k) W - \\eta_k g \\\\
    a &\\leftarrow a + \\mu_k (W - a) \\text{ if } \\mu_k \\ne 1, \\text{ else } a \\leftarrow W

torch keeps :math:`\\eta` and :math:`\\mu` as per-parameter state and refreshes
them at the end of each step from the step count; update ``k`` therefore uses
the values computed with count ``k - 1`` (and :math:`\\eta_1 = \\eta`,
:math:`\\mu_1 = 1`), which are the closed forms above. No scalar has to be kept
between updates. The weight itself is never replaced by the average: ``"ax"``
is what one evaluates with (see :class:`ASGD`).
"""

from __future__ import annotations

from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = ["ASGD", "ASGDOptions"]


def asgd_element(i, w, g, ax, rescale, clip, wd, decay, eta, mu):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    wi = wi - eta * gi
    w[i] = wi
    ax[i] = wi


#: Updates before averaging starts (mu == 1): the average is a copy of the weight.
ASGD_KERNEL = Kernel(
    name="asgd",
    state=("ax",),
    cpu=asgd_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T wi = w[i] * decay;
    wi = wi - eta * gi;
    w[i] = wi;
    ax[i] = wi;
""",
)


def asgd_average_element(i, w, g, ax, rescale, clip, wd, decay, eta, mu):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    wi = wi - eta * gi
    w[i] = wi
    a = ax[i]
    ax[i] = a + (wi - a) * mu


#: Updates once averaging has started (mu != 1).
ASGD_AVERAGE_KERNEL = Kernel(
    name="asgd_average",
    state=("ax",),
    cpu=asgd_average_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T wi = w[i] * decay;
    wi = wi - eta * gi;
    w[i] = wi;
    const T a = ax[i];
    ax[i] = a + (wi - a) * mu;
""",
)


@options
class ASGDOptions(AbstractOptimizerOptions):
    """Options of :class:`ASGD` (defaults as torch.optim.ASGD)."""

    lr: float = hyperparameter(0.01, gt=0.0, doc="initial learning rate eta")
    lambd: float = hyperparameter(1e-4, ge=0.0, doc="decay term lambda (step decay and W decay)")
    alpha: float = hyperparameter(0.75, ge=0.0, doc="power of the learning-rate decay")
    t0: float = hyperparameter(1e6, ge=0.0, doc="updates before averaging starts")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="coupled L2 coefficient")


@register
class ASGD(AbstractOptimizer):
    """Averaged SGD: SGD with a decaying step, and a running average of the weights.

    ``ASGD(*, lr=0.01, lambd=1e-4, alpha=0.75, t0=1e6, grad_clip=0.0,
    weight_decay=0.0, grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging"
    (SIAM J. Control Optim. 30(4), 1992; no arXiv id), with the step schedule
    of Bottou's ASGD ("Stochastic Gradient Descent Tricks", 2012), in
    torch.optim.ASGD's variant. For the ``k``-th update of a weight (``k`` counts
    that weight's updates), with :math:`g` the :func:`~mxopt.normalized_gradient`
    (its coupled L2 term uses ``weight_decay``, not ``lambd``) and :math:`\\lambda`
    = ``lambd``:

    .. math::

        \\eta_k = \\eta\\,(1 + \\lambda\\eta(k-1))^{-\\alpha}, \\quad
        \\mu_k = 1 / \\max(1, k-1-t_0), \\quad
        W \\leftarrow (1-\\lambda\\eta_k) W - \\eta_k g, \\quad
        a \\leftarrow \\begin{cases} a + \\mu_k (W - a) & \\mu_k \\ne 1 \\\\
        W & \\mu_k = 1 \\end{cases}

    The training weight stays the SGD iterate; the average is in the state.

    State: ``"ax"`` (:math:`a`, the averaged weight, starting at 0), 4 bytes per
    float32 parameter. For an integer ``t0``, after update ``k >= t0 + 2`` it is
    the mean of the weights after updates ``t0 + 2, ..., k``; before that it is a
    copy of the weight (so with the default ``t0=1e6`` it is just the weight).

    Equivalents: the learning rate :math:`\\eta` is read at every update (from
    ``lr_scheduler`` if given) and put into the closed form of
    :math:`\\eta_k`. With a constant rate and ``batch_size=1`` this is exactly
    ``torch.optim.ASGD(lr, lambd, alpha, t0, weight_decay, maximize)``, weight
    and ``"ax"``; the defaults are torch's. Under a schedule torch's
    :math:`\\eta_k` lags one step (it is computed at the end of step ``k - 1``
    from that step's rate). For averaging the weights of any optimizer, see the
    updater's ``averaging=`` (:class:`~mxopt.EMA`, :class:`~mxopt.Polyak`).

    Evaluating with the average: the training weights stay the SGD iterates;
    the averaged ones are in the updater's state. To evaluate with them, swap
    them in and back::

        saved = {i: w.copy() for i, w in weights.items()}
        for i, w in weights.items():
            w[...] = updater.states[i].arrays["ax"]
        evaluate(weights)
        for i, w in weights.items():
            w[...] = saved[i]

    (or copy ``"ax"`` into the weights for good at the end of training).
    """

    Options = ASGDOptions
    about = About(
        family="others",
        same_as="`torch.optim.ASGD` (weight and `ax`)",
        weight_decay="coupled L2; `lambd` also shrinks the weight",
        epsilon="",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ASGD_KERNEL

    def kernel_scalars(self, v, step, memory):
        eta = v.lr / (1.0 + v.lambd * v.lr * (step - 1)) ** v.alpha
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2,
            "decay": 1.0 - v.lambd * eta, "eta": eta, "mu": 1.0 / max(1.0, step - 1 - v.t0),
        }  # fmt: skip

    def prepare(self, v, step, memory):
        scalars = self.kernel_scalars(v, step, memory)
        kernel = ASGD_AVERAGE_KERNEL if scalars["mu"] != 1.0 else ASGD_KERNEL
        return kernel, kernel.pack(scalars)

    def apply(self, backend, w, g, arrays, prepared, check):
        kernel, scalars = prepared
        return backend.run(kernel, w, g, arrays.arrays_for(kernel), scalars, check)

"""Stochastic gradient descent with optional momentum (MXNet.jl's ``SGD``).

With :math:`g = ` :func:`~mxopt.normalized_gradient` and the learning rate
:math:`\\eta` and momentum :math:`\\mu` read from their schedulers at every
update:

* without momentum (momentum scheduler ``Momentum.Null``, the default when
  ``momentum == 0``): :math:`W \\leftarrow W - \\eta g`;
* with momentum, a velocity :math:`v` (state ``"velocity"``, starting at 0)
  with the learning rate folded in:

  .. math::

      v \\leftarrow \\mu v - \\eta g, \\qquad W \\leftarrow W + v

The velocity exists exactly when the momentum scheduler is not
``Momentum.Null``; the choice is made by the scheduler's type, so
``momentum_scheduler=Momentum.Fixed(0.0)`` still keeps one.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.checks import shown
from mxopt.core.fields import flag, hyperparameter, optional_instance
from mxopt.core.schedule import AbstractMomentumScheduler
from mxopt.kernels.kernel import (
    Kernel,
    cautious_keeps,
    momentum_step_element,
    normalize_gradient_element,
)
from mxopt.optimizers.base import About, AbstractOptimizer, momentum_value, register
from mxopt.optimizers.cautious import CautiousUpdates, cautious_option, cautious_pair
from mxopt.optimizers.options import AbstractOptimizerOptions, options, state_dtype_option
from mxopt.schedules.momentum import Null, get_momentum_scheduler

__all__ = ["SGD", "SGDOptions"]


def sgd_element(i, w, g, rescale, clip, wd, lr):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    w[i] = w[i] - lr * gi


SGD_KERNEL = Kernel(
    name="sgd",
    state=(),
    cpu=sgd_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    w[i] = w[i] - lr * gi;
""",
)


def sgd_momentum_element(i, w, g, velocity, rescale, clip, wd, lr, mu, lr_damped):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    v = mu * velocity[i] - lr_damped * gi
    velocity[i] = v
    w[i] = w[i] + v


SGD_MOMENTUM_KERNEL = Kernel(
    name="sgd_momentum",
    state=("velocity",),
    cpu=sgd_momentum_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T v = mu * velocity[i] - lr_damped * gi;
    velocity[i] = v;
    w[i] = w[i] + v;
""",
)


def sgd_nesterov_element(i, w, g, velocity, rescale, clip, wd, lr, mu, lr_damped):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    v = mu * velocity[i] - lr_damped * gi
    velocity[i] = v
    w[i] = w[i] + mu * v - lr * gi


SGD_NESTEROV_KERNEL = Kernel(
    name="sgd_nesterov",
    state=("velocity",),
    cpu=sgd_nesterov_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T v = mu * velocity[i] - lr_damped * gi;
    velocity[i] = v;
    w[i] = w[i] + mu * v - lr * gi;
""",
)


# -- cautious updates (mxopt.optimizers.cautious): the step added to W is v (or Nesterov's
# mu v - lr g), so u = -step, kept where the step and g have opposite signs. The velocity
# is updated as without the option.


def sgd_momentum_cautious_count_element(i, w, g, velocity, rescale, clip, wd, mu, lr_damped):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    v = momentum_step_element(velocity[i], gi, mu, lr_damped)
    return np.float64(cautious_keeps(-v, gi)), np.float64(0)


SGD_MOMENTUM_CAUTIOUS_COUNT_KERNEL = Kernel(
    name="sgd_momentum_cautious_count",
    state=("velocity",),
    cpu=sgd_momentum_cautious_count_element,
    reduces=True,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T v = momentum_step_element(velocity[i], gi, mu, lr_damped);
    return mx_pair{cautious_keeps(-v, gi) ? 1.0 : 0.0, 0.0};
""",
)


def sgd_momentum_cautious_element(i, w, g, velocity, rescale, clip, wd, lr, mu, lr_damped, scale):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    v = momentum_step_element(velocity[i], gi, mu, lr_damped)
    velocity[i] = v
    wi = w[i]
    if cautious_keeps(-v, gi):  # a select, not a branch around the store: it vectorizes
        wi = wi + scale * v
    w[i] = wi


SGD_MOMENTUM_CAUTIOUS_KERNEL = Kernel(
    name="sgd_momentum_cautious",
    state=("velocity",),
    cpu=sgd_momentum_cautious_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T v = momentum_step_element(velocity[i], gi, mu, lr_damped);
    velocity[i] = v;
    T wi = w[i];
    if (cautious_keeps(-v, gi)) wi = wi + scale * v;
    w[i] = wi;
""",
)


def sgd_nesterov_cautious_count_element(i, w, g, velocity, rescale, clip, wd, lr, mu, lr_damped):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    v = momentum_step_element(velocity[i], gi, mu, lr_damped)
    step = momentum_step_element(v, gi, mu, lr)
    return np.float64(cautious_keeps(-step, gi)), np.float64(0)


SGD_NESTEROV_CAUTIOUS_COUNT_KERNEL = Kernel(
    name="sgd_nesterov_cautious_count",
    state=("velocity",),
    cpu=sgd_nesterov_cautious_count_element,
    reduces=True,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T v = momentum_step_element(velocity[i], gi, mu, lr_damped);
    const T step = momentum_step_element(v, gi, mu, lr);
    return mx_pair{cautious_keeps(-step, gi) ? 1.0 : 0.0, 0.0};
""",
)


def sgd_nesterov_cautious_element(i, w, g, velocity, rescale, clip, wd, lr, mu, lr_damped, scale):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    v = momentum_step_element(velocity[i], gi, mu, lr_damped)
    velocity[i] = v
    step = momentum_step_element(v, gi, mu, lr)
    wi = w[i]
    if cautious_keeps(-step, gi):
        wi = wi + scale * step
    w[i] = wi


SGD_NESTEROV_CAUTIOUS_KERNEL = Kernel(
    name="sgd_nesterov_cautious",
    state=("velocity",),
    cpu=sgd_nesterov_cautious_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T v = momentum_step_element(velocity[i], gi, mu, lr_damped);
    velocity[i] = v;
    const T step = momentum_step_element(v, gi, mu, lr);
    T wi = w[i];
    if (cautious_keeps(-step, gi)) wi = wi + scale * step;
    w[i] = wi;
""",
)

SGD_MOMENTUM_CAUTIOUS = cautious_pair(
    SGD_MOMENTUM_CAUTIOUS_COUNT_KERNEL, SGD_MOMENTUM_CAUTIOUS_KERNEL
)
SGD_NESTEROV_CAUTIOUS = cautious_pair(
    SGD_NESTEROV_CAUTIOUS_COUNT_KERNEL, SGD_NESTEROV_CAUTIOUS_KERNEL
)


@options
class SGDOptions(AbstractOptimizerOptions):
    """Options of :class:`SGD` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(0.01, gt=0.0, doc="learning rate, used when no lr_scheduler")
    momentum: float = hyperparameter(0.0, ge=0.0, lt=1.0, doc="momentum, used when no scheduler")
    nesterov: bool = flag(False, doc="Nesterov momentum (needs momentum, no dampening)")
    dampening: float = hyperparameter(
        0.0, ge=0.0, le=1.0, doc="scale new gradients in the velocity by 1 - dampening"
    )
    lazy_update: bool = flag(
        False, doc="a RowSparse gradient updates only its rows and their state (MXNet)"
    )
    cautious: bool = cautious_option()
    weight_decay: float = hyperparameter(1e-4, ge=0.0, doc="coupled L2 coefficient lambda")
    momentum_scheduler: AbstractMomentumScheduler | None = optional_instance(
        AbstractMomentumScheduler, doc="momentum scheduler; wins over momentum when given"
    )
    state_dtype: str = state_dtype_option()


@register
class SGD(CautiousUpdates, AbstractOptimizer):
    """Stochastic gradient descent, with momentum when asked.

    ``SGD(*, lr=0.01, momentum=0.0, nesterov=False, dampening=0.0, lazy_update=False,
    cautious=False, state_dtype="float32",
    grad_clip=0.0, weight_decay=1e-4, grad_scale=1.0, maximize=False,
    lr_scheduler=None, momentum_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    MXNet.jl's ``SGD``, with torch.optim's ``nesterov`` and ``dampening``. Robbins &
    Monro, "A Stochastic Approximation Method" (1951); momentum: Polyak (1964);
    Nesterov momentum in the form of Sutskever, Martens, Dahl & Hinton, "On the
    importance of initialization and momentum in deep learning" (ICML 2013).

    Update, with :math:`g` the :func:`~mxopt.normalized_gradient`
    (``clip(grad * grad_scale / batch_size) + weight_decay * W``) and
    :math:`d` = ``dampening``:

    * no momentum: :math:`W \\leftarrow W - \\eta g`
    * momentum: :math:`v \\leftarrow \\mu v - (1-d)\\eta g;\\ W \\leftarrow W + v`
    * Nesterov: :math:`v \\leftarrow \\mu v - \\eta g;\\ W \\leftarrow W + \\mu v - \\eta g`

    The velocity has the learning rate folded in (MXNet's form). The first
    update of a weight is never dampened (as torch.optim, whose buffer starts as
    the first gradient). With a constant learning rate this is exactly
    torch.optim.SGD's update with ``buf = -v / lr``; under a schedule the two
    differ, since torch multiplies the whole buffer by the new rate and mxopt
    only the new gradient.

    :math:`\\eta` comes from ``lr_scheduler`` if given (it wins over ``lr``),
    :math:`\\mu` from ``momentum_scheduler`` if given (it wins over
    ``momentum``), both read at every update.

    State: none by default, 0 bytes per float32 parameter (no momentum keeps
    nothing); ``"velocity"`` (:math:`v`, shaped like the weight, 4 bytes per float32
    parameter) whenever the momentum scheduler is not ``Momentum.Null``: with
    ``momentum > 0``, or with any ``momentum_scheduler`` but ``Momentum.Null``
    (even ``Momentum.Fixed(0.0)``: the choice is made by the scheduler's type).

    Equivalents, with ``batch_size=1``: ``torch.optim.SGD(lr, momentum, dampening,
    weight_decay, nesterov, maximize)`` is ``SGD(lr=lr, momentum=momentum,
    dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
    maximize=maximize)`` (torch's buffer is :math:`-v/\\eta`). ``optax.sgd(learning_rate,
    momentum, nesterov)`` is the same with ``weight_decay=0.0``. fastai's ``SGD(lr,
    mom, wd=0)`` is ``SGD(lr=lr, momentum=mom, weight_decay=0.0)`` (fastai's default
    weight decay is decoupled; mxopt's SGD decay is coupled L2, which is the same
    thing only without momentum). Thinc's ``SGD`` is the plain update.

    Deliberate differences from torch: ``lr=0.01`` and ``weight_decay=1e-4`` are
    MXNet.jl's defaults (torch: ``lr=1e-3``, no decay).

    ``cautious=True`` (Liang, Chen, Liu & Liu, "Cautious Optimizers", arXiv:2411.16085,
    2024; :mod:`mxopt.optimizers.cautious`), with a velocity: the step :math:`s` added to
    :math:`W` (:math:`v`, or Nesterov's :math:`\\mu v - \\eta g`) is applied only where it
    opposes :math:`g` (:math:`s g < 0`), times :math:`n / (\\text{kept} + 1)` per tensor of
    :math:`n` elements; the velocity is updated as without it. Without a velocity the
    step :math:`-\\eta g` always agrees with the gradient: the option is accepted and
    changes nothing.

    ``lazy_update=True`` (MXNet's ``lazy_update``): a :class:`~mxopt.RowSparse`
    gradient updates only its rows of the weight and of the velocity, with the same
    per-element math (weight decay, momentum) on those rows only; the other rows are
    neither read nor written (their velocity does not decay). The step count still
    counts every call. With ``False`` (the default) such a gradient is scattered into a
    dense one and every row is updated.
    """

    Options = SGDOptions
    moment_signs = {"velocity": True}
    about = About(
        family="sgd",
        same_as="MXNet.jl's `SGD`; `torch.optim.SGD` with the same arguments; "
        "`optax.sgd` with `weight_decay=0.0`",
        weight_decay="coupled L2",
        examples=({}, {"momentum": 0.9}),
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.kernel()  # rejects nesterov without momentum, or with dampening

    @property
    def momentum_scheduler(self) -> AbstractMomentumScheduler:
        """The momentum scheduler in effect (``Null`` or ``Fixed(momentum)`` by default)."""
        return get_momentum_scheduler(self.opts.momentum_scheduler, self.opts.momentum)

    def _has_momentum(self) -> bool:
        scheduler = self.opts.momentum_scheduler
        if scheduler is None:
            return self.opts.momentum != 0
        return not isinstance(scheduler, Null)

    def kernel(self) -> Kernel:
        if not self._has_momentum():
            if self.opts.nesterov:
                raise ValueError("SGD: nesterov=True needs momentum (momentum > 0 or a scheduler)")
            return SGD_KERNEL
        if self.opts.nesterov:
            if self.opts.dampening != 0:
                raise ValueError(
                    f"SGD: nesterov=True needs dampening=0, got {shown(self.opts.dampening)}"
                )
            return SGD_NESTEROV_KERNEL
        return SGD_MOMENTUM_KERNEL

    def updates_rows(self) -> bool:
        return self.opts.lazy_update

    def cautious_kernels(self):
        # without a velocity the step is -lr g, which always agrees with g: nothing to mask
        if not self.opts.cautious or not self._has_momentum():
            return None
        return SGD_NESTEROV_CAUTIOUS if self.opts.nesterov else SGD_MOMENTUM_CAUTIOUS

    def kernel_scalars(self, v, step, memory):
        scalars = {"rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "lr": v.lr}
        if self._has_momentum():
            scheduler = self.opts.momentum_scheduler
            scalars["mu"] = v.momentum if scheduler is None else momentum_value(scheduler, v.state)
            (scalars["lr_damped"],) = self.step_kernel_scalars(v, step)
        return scalars

    def step_scalars(self):
        # the first step's undamped velocity; cautious updates prepare by name
        if self.cautious_kernels() is not None:
            return None
        return ("lr_damped",) if self._has_momentum() else ()

    def step_inputs(self, v):
        return v.lr, v.dampening

    @staticmethod
    def step_formula(inputs, step):
        lr, dampening = inputs
        return (lr if step == 1 else lr * (1.0 - dampening),)

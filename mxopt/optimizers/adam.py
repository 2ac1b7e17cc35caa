"""Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980).

MXNet.jl's ``ADAM``, with its "epsilon-hat" form: epsilon is added to the
square root of the *uncorrected* second moment and both bias corrections are
folded into the step size. For the ``k``-th update of a weight, with :math:`g`
the :func:`~mxopt.normalized_gradient`:

.. math::

    m &\\leftarrow \\beta_1 m + (1 - \\beta_1) g \\\\
    v &\\leftarrow \\beta_2 v + (1 - \\beta_2) g^2 \\\\
    W &\\leftarrow W - \\eta \\frac{\\sqrt{1 - \\beta_2^k}}{1 - \\beta_1^k}
         \\frac{m}{\\sqrt{v} + \\epsilon}

One deliberate difference from MXNet.jl: the original read its learning-rate
scheduler once, at the first update of each weight, and kept that rate for
ever, so schedules had no effect on ADAM. mxopt reads the scheduler at every
update, as SGD does.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.core.fields import flag, hyperparameter
from mxopt.kernels.kernel import (
    Kernel,
    adam_moments_element,
    cautious_keeps,
    normalize_gradient_element,
)
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.cautious import CautiousUpdates, cautious_option, cautious_pair
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
    state_dtype_option,
)

__all__ = ["ADAM", "ADAMOptions"]


def adam_element(
    i, w, g, mean, var, rescale, clip, wd, decay, lr_t, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    mean[i] = m
    var[i] = v
    w[i] = wi - lr_t * m / (np.sqrt(v) + eps)


ADAM_KERNEL = Kernel(
    name="adam",
    state=("mean", "var"),
    cpu=adam_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    mean[i] = m;
    var[i] = v;
    w[i] = wi - lr_t * m / (sqrt(v) + eps);
""",
)


def adam_amsgrad_element(
    i, w, g, mean, var, max_var, rescale, clip, wd, decay, lr_t, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    v_max = max_var[i]
    if v > v_max:
        v_max = v
    mean[i] = m
    var[i] = v
    max_var[i] = v_max
    w[i] = wi - lr_t * m / (np.sqrt(v_max) + eps)


ADAM_AMSGRAD_KERNEL = Kernel(
    name="adam_amsgrad",
    state=("mean", "var", "max_var"),
    cpu=adam_amsgrad_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    const T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    T v_max = max_var[i];
    if (v > v_max) v_max = v;
    mean[i] = m;
    var[i] = v;
    max_var[i] = v_max;
    w[i] = wi - lr_t * m / (sqrt(v_max) + eps);
""",
)


# -- cautious updates (mxopt.optimizers.cautious): u = m / (sqrt(v_hat) + eps) has the sign
# of m, so an element is kept where m and g agree, with or without amsgrad.


def adam_cautious_count_element(
    i, w, g, mean, var, rescale, clip, wd, beta1, one_minus_beta1, beta2, one_minus_beta2
):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    return np.float64(cautious_keeps(m, gi)), np.float64(0)


ADAM_CAUTIOUS_COUNT_KERNEL = Kernel(
    name="adam_cautious_count",
    state=("mean", "var"),
    cpu=adam_cautious_count_element,
    reduces=True,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    return mx_pair{cautious_keeps(m, gi) ? 1.0 : 0.0, 0.0};
""",
)


def adam_cautious_element(
    i, w, g, mean, var, rescale, clip, wd, decay, lr_t, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps, scale,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    mean[i] = m
    var[i] = v
    if cautious_keeps(m, gi):
        wi = wi - scale * lr_t * m / (np.sqrt(v) + eps)
    w[i] = wi


ADAM_CAUTIOUS_KERNEL = Kernel(
    name="adam_cautious",
    state=("mean", "var"),
    cpu=adam_cautious_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    mean[i] = m;
    var[i] = v;
    if (cautious_keeps(m, gi)) wi = wi - scale * lr_t * m / (sqrt(v) + eps);
    w[i] = wi;
""",
)


def adam_amsgrad_cautious_element(
    i, w, g, mean, var, max_var, rescale, clip, wd, decay, lr_t, beta1, one_minus_beta1, beta2,
    one_minus_beta2, eps, scale,
):  # fmt: skip
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    wi = w[i] * decay
    m, v = adam_moments_element(mean[i], var[i], gi, beta1, one_minus_beta1, beta2, one_minus_beta2)
    v_max = max_var[i]
    if v > v_max:
        v_max = v
    mean[i] = m
    var[i] = v
    max_var[i] = v_max
    if cautious_keeps(m, gi):
        wi = wi - scale * lr_t * m / (np.sqrt(v_max) + eps)
    w[i] = wi


ADAM_AMSGRAD_CAUTIOUS_KERNEL = Kernel(
    name="adam_amsgrad_cautious",
    state=("mean", "var", "max_var"),
    cpu=adam_amsgrad_cautious_element,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    T wi = w[i] * decay;
    T m = mean[i], v = var[i];
    adam_moments_element(m, v, gi, beta1, one_minus_beta1, beta2, one_minus_beta2);
    T v_max = max_var[i];
    if (v > v_max) v_max = v;
    mean[i] = m;
    var[i] = v;
    max_var[i] = v_max;
    if (cautious_keeps(m, gi)) wi = wi - scale * lr_t * m / (sqrt(v_max) + eps);
    w[i] = wi;
""",
)

ADAM_CAUTIOUS = cautious_pair(ADAM_CAUTIOUS_COUNT_KERNEL, ADAM_CAUTIOUS_KERNEL)
ADAM_AMSGRAD_CAUTIOUS = cautious_pair(ADAM_CAUTIOUS_COUNT_KERNEL, ADAM_AMSGRAD_CAUTIOUS_KERNEL)


@options
class ADAMOptions(AbstractOptimizerOptions):
    """Options of :class:`ADAM` (defaults as MXNet.jl)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(1e-8, gt=0.0, doc="added to the root of the second moment")
    amsgrad: bool = flag(False, doc="divide by the running maximum of v (Reddi et al. 2018)")
    epsilon_hat: bool = flag(
        True, doc="add epsilon to sqrt(v) before bias correction (MXNet), else after (torch)"
    )
    weight_decay: float = hyperparameter(1e-5, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(False)
    cautious: bool = cautious_option()
    lazy_update: bool = flag(
        False, doc="a RowSparse gradient updates only its rows and their state (MXNet)"
    )
    state_dtype: str = state_dtype_option()


@register
class ADAM(CautiousUpdates, AbstractOptimizer):
    """Adam with MXNet.jl's epsilon placement and bias corrections folded into the step.

    ``ADAM(*, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, amsgrad=False,
    epsilon_hat=True, cautious=False, lazy_update=False, state_dtype="float32",
    grad_clip=0.0, weight_decay=1e-5,
    decoupled_weight_decay=False, grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980, in
    MXNet.jl's form, with AMSGrad (Reddi, Kale & Kumar, "On the Convergence of Adam
    and Beyond", ICLR 2018) as an option. For the ``k``-th update of a weight
    (``k`` counts that weight's updates), with :math:`g` the
    :func:`~mxopt.normalized_gradient`:

    .. math::

        m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\quad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        W &\\leftarrow \\rho W - \\eta \\frac{\\sqrt{1-\\beta_2^k}}{1-\\beta_1^k}
        \\frac{m}{\\sqrt{\\hat v}+\\epsilon'}

    * :math:`\\hat v = v`, or with ``amsgrad`` the running maximum of :math:`v`
      (state ``"max_var"``);
    * :math:`\\epsilon' = \\epsilon` with ``epsilon_hat`` (MXNet.jl, the
      default: epsilon is added to the root of the uncorrected moment), or
      :math:`\\epsilon\\sqrt{1-\\beta_2^k}`, which is the paper's and
      torch.optim's :math:`\\hat m / (\\sqrt{\\hat v} + \\epsilon)`;
    * :math:`\\rho = 1 - \\eta\\lambda` with ``decoupled_weight_decay``
      (AdamW), and then :math:`g` carries no L2 term; else :math:`\\rho = 1`
      and :math:`\\lambda W` is in :math:`g` (coupled L2, MXNet.jl).

    The learning rate :math:`\\eta` is read from ``lr_scheduler`` (if given, it
    wins over ``lr``) at every update.

    ``cautious=True``: cautious updates (Liang, Chen, Liu & Liu, "Cautious Optimizers:
    Improving Training with One Line of Code", arXiv:2411.16085, 2024; C-AdamW with
    ``decoupled_weight_decay``): with :math:`u` the step above without :math:`\\eta`,
    which has the sign of :math:`m`, the weight moves by :math:`-\\eta\\,
    \\frac{n}{\\lVert\\phi\\rVert_0 + 1} (u \\odot \\phi)`, :math:`\\phi = [u \\odot g > 0]`,
    per tensor of :math:`n` elements; the moments and a decoupled decay are as without
    it (see :mod:`mxopt.optimizers.cautious`). Two passes over memory instead of one,
    no extra state; a packed buffer is then updated tensor by tensor.

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`v`), 8 bytes per float32
    parameter; ``"max_var"`` too with ``amsgrad`` (12 bytes).

    Equivalents, with ``batch_size=1``: ``torch.optim.Adam(lr, betas=(beta1, beta2),
    eps, weight_decay, amsgrad)`` is ``ADAM(lr=lr, beta1=beta1, beta2=beta2,
    epsilon=eps, weight_decay=weight_decay, amsgrad=amsgrad, epsilon_hat=False)``;
    torch's ``decoupled_weight_decay=True`` is ``decoupled_weight_decay=True``.
    ``optax.adam(learning_rate, b1, b2, eps)`` is the same with
    ``weight_decay=0.0``. Thinc's ``Adam`` folds the bias corrections into the step
    and adds epsilon to the uncorrected root, like the default ``epsilon_hat=True``
    (Thinc clips gradients by norm, mxopt's ``grad_clip`` by value; Thinc's
    ``L2_is_weight_decay=True`` is ``decoupled_weight_decay=True``). fastai's
    ``Adam`` is the AdamW form (see :class:`~mxopt.AdamW`).

    Deliberate differences from torch: the epsilon placement (``epsilon_hat=True``)
    and ``weight_decay=1e-5`` are MXNet.jl's. MXNet.jl read its learning-rate
    scheduler once, at the first update of each weight, and kept that rate for
    ever, so schedules had no effect on ADAM: a bug mxopt does not reproduce.

    ``lazy_update=True`` (MXNet's ``lazy_update``, torch's ``SparseAdam``; see
    :class:`~mxopt.SparseAdam`): a :class:`~mxopt.RowSparse` gradient updates only its
    rows of the weight and of ``mean``/``var`` (and ``max_var``), with the dense
    per-element math on those rows: the moments of a row decay only when it is touched,
    the weight decay applies to touched rows only, and the bias corrections use ``k``,
    the weight's update count (every call counts, as torch's per-parameter step). With
    ``False`` (the default) such a gradient is scattered into a dense one.
    """

    Options = ADAMOptions
    moment_signs = {"mean": True, "var": False, "max_var": False}
    about = About(
        family="adam-family",
        same_as="MXNet.jl's `ADAM`; `torch.optim.Adam` with `epsilon_hat=False`",
        weight_decay="coupled L2 (`decoupled_weight_decay=True` for AdamW's)",
        epsilon="added to `sqrt(v)` of the uncorrected `v` (`epsilon_hat=True`, MXNet.jl)",
        examples=({}, {"amsgrad": True}),
    )

    def kernel(self) -> Kernel:
        return ADAM_AMSGRAD_KERNEL if self.opts.amsgrad else ADAM_KERNEL

    def cautious_kernels(self):
        if not self.opts.cautious:
            return None
        return ADAM_AMSGRAD_CAUTIOUS if self.opts.amsgrad else ADAM_CAUTIOUS

    def updates_rows(self) -> bool:
        return self.opts.lazy_update

    def kernel_scalars(self, v, step, memory):
        lr_t, eps = self.step_kernel_scalars(v, step)
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "lr_t": lr_t, "eps": eps,
        }  # fmt: skip

    def step_scalars(self):
        # the bias corrections; cautious updates prepare by name (their own path)
        return ("lr_t", "eps") if self.cautious_kernels() is None else None

    def step_inputs(self, v):
        return v.lr, v.beta1, v.beta2, v.epsilon, float(self.opts.epsilon_hat)

    @staticmethod
    def step_formula(inputs, step):
        lr, beta1, beta2, epsilon, epsilon_hat = inputs
        correction2 = math.sqrt(1.0 - beta2 ** float(step))
        lr_t = lr * correction2 / (1.0 - beta1 ** float(step))
        return lr_t, (epsilon if epsilon_hat else epsilon * correction2)

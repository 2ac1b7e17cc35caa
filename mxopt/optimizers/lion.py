"""Lion: evolved sign momentum (Chen et al., "Symbolic Discovery of Optimization
Algorithms", NeurIPS 2023, arXiv:2302.06675).

Every element moves by exactly the learning rate, in the direction of the sign
of an interpolation between the momentum and the gradient; the momentum is
then updated with a second, slower rate. With :math:`g` the clipped, rescaled
gradient (never with an L2 term: Lion's weight decay is always decoupled):

.. math::

    W &\\leftarrow (1 - \\eta\\lambda) W \\\\
    c &= \\beta_1 m + (1-\\beta_1) g, \\qquad
    W \\leftarrow W - \\eta \\operatorname{sign}(c) \\\\
    m &\\leftarrow \\beta_2 m + (1-\\beta_2) g

with :math:`\\operatorname{sign}(0) = 0` (and NaN moves nothing). One state
array, half of Adam's memory.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel, cautious_keeps, clip_gradient_element, ema_element
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.cautious import CautiousUpdates, cautious_option, cautious_pair
from mxopt.optimizers.options import AbstractOptimizerOptions, options, state_dtype_option

__all__ = ["Lion", "LionOptions"]


def lion_element(
    i, w, g, mean, rescale, clip, decay, lr, beta1, one_minus_beta1, beta2, one_minus_beta2
):
    gi = clip_gradient_element(g[i], rescale, clip)
    mi = mean[i]
    c = beta1 * mi + one_minus_beta1 * gi
    wi = w[i] * decay
    # sign(c) by comparisons: 0 (and NaN) leave the weight where the decay put it
    if c > 0:
        wi = wi - lr
    elif c < 0:
        wi = wi + lr
    w[i] = wi
    mean[i] = beta2 * mi + one_minus_beta2 * gi


LION_KERNEL = Kernel(
    name="lion",
    state=("mean",),
    cpu=lion_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T mi = mean[i];
    const T c = beta1 * mi + one_minus_beta1 * gi;
    T wi = w[i] * decay;
    if (c > T(0)) wi = wi - lr;
    else if (c < T(0)) wi = wi + lr;
    w[i] = wi;
    mean[i] = beta2 * mi + one_minus_beta2 * gi;
""",
)


# -- cautious updates (mxopt.optimizers.cautious): u = sign(c) agrees with g where c does


def lion_cautious_count_element(i, w, g, mean, rescale, clip, beta1, one_minus_beta1):
    gi = clip_gradient_element(g[i], rescale, clip)
    c = ema_element(mean[i], gi, beta1, one_minus_beta1)
    return np.float64(cautious_keeps(c, gi)), np.float64(0)


LION_CAUTIOUS_COUNT_KERNEL = Kernel(
    name="lion_cautious_count",
    state=("mean",),
    cpu=lion_cautious_count_element,
    reduces=True,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T c = ema_element(mean[i], gi, beta1, one_minus_beta1);
    return mx_pair{cautious_keeps(c, gi) ? 1.0 : 0.0, 0.0};
""",
)


def lion_cautious_element(
    i, w, g, mean, rescale, clip, decay, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
    scale,
):  # fmt: skip
    gi = clip_gradient_element(g[i], rescale, clip)
    mi = mean[i]
    c = ema_element(mi, gi, beta1, one_minus_beta1)
    wi = w[i] * decay
    step = scale * lr  # times sign(c), which is +1 or -1 where the element is kept
    if c < 0:
        step = -step
    if cautious_keeps(c, gi):
        wi = wi - step
    w[i] = wi
    mean[i] = ema_element(mi, gi, beta2, one_minus_beta2)


LION_CAUTIOUS_KERNEL = Kernel(
    name="lion_cautious",
    state=("mean",),
    cpu=lion_cautious_element,
    cuda="""
    const T gi = clip_gradient_element(g[i], rescale, clip);
    const T mi = mean[i];
    const T c = ema_element(mi, gi, beta1, one_minus_beta1);
    T wi = w[i] * decay;
    T step = scale * lr;
    if (c < T(0)) step = -step;
    if (cautious_keeps(c, gi)) wi = wi - step;
    w[i] = wi;
    mean[i] = ema_element(mi, gi, beta2, one_minus_beta2);
""",
)

LION_CAUTIOUS = cautious_pair(LION_CAUTIOUS_COUNT_KERNEL, LION_CAUTIOUS_KERNEL)


@options
class LionOptions(AbstractOptimizerOptions):
    """Options of :class:`Lion` (defaults from the paper and optax.lion)."""

    lr: float = hyperparameter(1e-4, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(
        0.9, ge=0.0, lt=1.0, doc="weight of the momentum in the direction of the step"
    )
    beta2: float = hyperparameter(0.99, ge=0.0, lt=1.0, doc="decay of the momentum")
    weight_decay: float = hyperparameter(
        0.0, ge=0.0, doc="decoupled decay: W *= 1 - lr * weight_decay"
    )
    cautious: bool = cautious_option()
    state_dtype: str = state_dtype_option()


@register
class Lion(CautiousUpdates, AbstractOptimizer):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum, decoupled decay.

    ``Lion(*, lr=1e-4, beta1=0.9, beta2=0.99, cautious=False, state_dtype="float32", grad_clip=0.0,
    weight_decay=0.0, grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Xiangning Chen, Chen Liang, Da Huang, Esteban Real, Kaiyuan Wang, Yao Liu,
    Hieu Pham, Xuanyi Dong, Thang Luong, Cho-Jui Hsieh, Yifeng Lu, Quoc V. Le,
    "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
    arXiv:2302.06675. With :math:`g = \\pm\\operatorname{clip}(\\nabla \\cdot
    \\text{grad\\_scale}/\\text{batch\\_size})` (no L2 term):

    .. math::

        W \\leftarrow (1-\\eta\\lambda) W - \\eta\\operatorname{sign}
        (\\beta_1 m + (1-\\beta_1) g), \\qquad
        m \\leftarrow \\beta_2 m + (1-\\beta_2) g

    with :math:`\\operatorname{sign}(0) = 0`: every coordinate moves by exactly
    :math:`\\eta` (plus the decay). The weight decay is always decoupled (there is
    no ``decoupled_weight_decay`` option) and scaled by the learning rate, as in
    the paper. No bias correction, so the update does not depend on the
    per-weight step count.

    State: ``"mean"`` (:math:`m`), 4 bytes per float32 parameter (half of Adam's).

    Equivalents: torch.optim has no Lion. ``optax.lion(learning_rate, b1, b2,
    weight_decay=wd)`` is the reference: ``Lion(lr=learning_rate, beta1=b1,
    beta2=b2, weight_decay=wd)`` with ``batch_size=1`` (optax's default
    ``weight_decay`` is 1e-3, mxopt's 0). The paper suggests a learning rate
    3-10 times smaller than AdamW's and a weight decay 3-10 times larger.

    ``cautious=True``: C-Lion (Liang, Chen, Liu & Liu, "Cautious Optimizers", arXiv:2411.16085,
    2024; :mod:`mxopt.optimizers.cautious`): an element moves only where
    :math:`\\operatorname{sign}(c)` agrees with :math:`g` (:math:`c g > 0`), by
    :math:`\\eta\\, n / (\\text{kept} + 1)` for a tensor of :math:`n` elements; the momentum
    and the decay are as without it. pytorch_optimizer's ``Lion(lr, betas=(b1, b2),
    weight_decay=wd, cautious=True)`` is ``Lion(lr=lr, beta1=b1, beta2=b2,
    weight_decay=wd, cautious=True)`` with ``batch_size=1`` (checked over 50 float32
    steps by ``tests/test_cautious.py`` when pytorch_optimizer is installed).
    """

    Options = LionOptions
    moment_signs = {"mean": True}
    about = About(
        family="adam-family",
        same_as="`optax.lion` (with `batch_size=1`)",
        weight_decay="always decoupled",
        epsilon="",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return LION_KERNEL

    def cautious_kernels(self):
        return LION_CAUTIOUS if self.opts.cautious else None

    def kernel_scalars(self, v, step, memory):
        return {  # the decay never enters g
            "rescale": v.rescale, "clip": v.grad_clip, "decay": 1.0 - v.lr * v.weight_decay,
            "lr": v.lr, "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
        }  # fmt: skip

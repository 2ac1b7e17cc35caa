"""SparseAdam: Adam with lazy updates of row-sparse gradients, as torch.optim.SparseAdam.

Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980, applied
lazily to the rows a :class:`~mxopt.RowSparse` gradient touches (an embedding's
looked-up rows): for the ``k``-th update of a weight and every touched row,

.. math::

    m_r &\\leftarrow \\beta_1 m_r + (1-\\beta_1) g_r, \\qquad
    v_r \\leftarrow \\beta_2 v_r + (1-\\beta_2) g_r^2 \\\\
    W_r &\\leftarrow W_r - \\eta \\frac{\\sqrt{1-\\beta_2^k}}{1-\\beta_1^k}
          \\frac{m_r}{\\sqrt{v_r} + \\epsilon}

(epsilon on the root of the uncorrected moment: torch.optim.SparseAdam's form, which is
not torch.optim.Adam's) and nothing else: untouched rows keep their weights and moments
(which therefore decay only when their row is touched). ``k`` counts the calls for the
weight, touched rows or not (torch's per-parameter ``step``). It is
:class:`~mxopt.ADAM`'s kernel run over the touched rows (``ADAM(lazy_update=True,
weight_decay=0.0)``).
"""

from __future__ import annotations

import math

from mxopt.core.fields import hyperparameter
from mxopt.kernels.kernel import Kernel
from mxopt.optimizers.adam import ADAM_KERNEL
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import (
    AbstractOptimizerOptions,
    decoupled_weight_decay_option,
    options,
)

__all__ = ["SparseAdam", "SparseAdamOptions"]


@options
class SparseAdamOptions(AbstractOptimizerOptions):
    """Options of :class:`SparseAdam` (defaults as torch.optim.SparseAdam)."""

    lr: float = hyperparameter(1e-3, gt=0.0, doc="learning rate, used when no lr_scheduler")
    beta1: float = hyperparameter(0.9, ge=0.0, lt=1.0, doc="decay of the first moment")
    beta2: float = hyperparameter(0.999, ge=0.0, lt=1.0, doc="decay of the second moment")
    epsilon: float = hyperparameter(
        1e-8, gt=0.0, doc="added to the root of the uncorrected second moment (torch's)"
    )
    weight_decay: float = hyperparameter(
        0.0, ge=0.0, doc="weight decay lambda, on touched rows only (torch has none)"
    )
    decoupled_weight_decay: bool = decoupled_weight_decay_option(False)


@register
class SparseAdam(AbstractOptimizer):
    """Adam that updates only the rows of a :class:`~mxopt.RowSparse` gradient.

    ``SparseAdam(*, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, grad_clip=0.0,
    weight_decay=0.0, decoupled_weight_decay=False, grad_scale=1.0, maximize=False,
    lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Kingma & Ba, "Adam: A Method for Stochastic Optimization", arXiv:1412.6980, with
    torch.optim.SparseAdam's lazy semantics (also MXNet's ``adam`` with
    ``lazy_update=True``). For the ``k``-th update of a weight (``k`` counts every call
    for it), with :math:`g` the :func:`~mxopt.normalized_gradient` and for every row
    :math:`r` the gradient touches (duplicate rows summed first):

    .. math::

        m_r &\\leftarrow \\beta_1 m_r + (1-\\beta_1) g_r, \\quad
        v_r \\leftarrow \\beta_2 v_r + (1-\\beta_2) g_r^2 \\\\
        W_r &\\leftarrow \\rho W_r - \\eta \\frac{\\sqrt{1-\\beta_2^k}}{1-\\beta_1^k}
        \\frac{m_r}{\\sqrt{v_r}+\\epsilon}

    Epsilon is added to the root of the *uncorrected* second moment, the bias
    corrections being folded into the step size, exactly as torch.optim.SparseAdam does
    (torch.optim.Adam adds it to the corrected root instead). Rows the gradient does
    not touch are neither read nor written: their moments do not decay.
    :math:`\\rho = 1 - \\eta\\lambda` with ``decoupled_weight_decay``, else 1 and
    :math:`\\lambda W` is in :math:`g` (coupled L2); either only on touched rows.

    A dense gradient is taken as touching every row: the update is then
    :class:`~mxopt.ADAM`'s with ``weight_decay=0.0`` (MXNet.jl's epsilon placement is
    torch SparseAdam's), as MXNet's lazy update does with a dense gradient (torch's
    SparseAdam refuses dense gradients).

    State: ``"mean"`` (:math:`m`) and ``"var"`` (:math:`v`), 8 bytes per float32
    parameter, shaped like the weight.

    Equivalents, with ``batch_size=1``: ``torch.optim.SparseAdam(lr, betas=(beta1,
    beta2), eps)`` is ``SparseAdam(lr=lr, beta1=beta1, beta2=beta2, epsilon=eps)``
    (torch's has no weight decay, no clipping and no maximize: keep their defaults),
    fed ``RowSparse(indices, values)`` for torch's sparse gradient (e.g. an
    ``nn.Embedding(sparse=True)``'s). It is ``ADAM(lazy_update=True,
    weight_decay=0.0)`` (MXNet's ``adam`` with ``lazy_update=True``) with torch's
    defaults.
    """

    Options = SparseAdamOptions
    about = About(
        family="recent",
        same_as="`torch.optim.SparseAdam`; MXNet's `adam` with `lazy_update=True`",
        weight_decay="none by default; coupled L2 (or decoupled) on touched rows only",
        epsilon="added to `sqrt(v)` of the uncorrected `v` (torch.optim.SparseAdam's)",
        examples=({},),
    )

    def kernel(self) -> Kernel:
        return ADAM_KERNEL

    def updates_rows(self) -> bool:
        return True

    def kernel_scalars(self, v, step, memory):
        correction2 = math.sqrt(1.0 - v.beta2**step)
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "decay": v.decay_factor,
            "lr_t": v.lr * correction2 / (1.0 - v.beta1**step),
            "beta1": v.beta1, "one_minus_beta1": 1.0 - v.beta1,
            "beta2": v.beta2, "one_minus_beta2": 1.0 - v.beta2,
            "eps": v.epsilon,
        }  # fmt: skip

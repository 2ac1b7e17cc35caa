"""AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
arXiv:1711.05101), with torch.optim.AdamW's defaults and update.

It is :class:`~mxopt.ADAM` with the weight decay taken out of the gradient and
applied to the weight directly, and epsilon added to the root of the
bias-corrected second moment:

.. math::

    W &\\leftarrow (1 - \\eta\\lambda) W \\\\
    m &\\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
    v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
    W &\\leftarrow W - \\eta \\frac{m / (1-\\beta_1^k)}{\\sqrt{v / (1-\\beta_2^k)} + \\epsilon}

It shares ADAM's kernels; only its defaults differ.
"""

from __future__ import annotations

from mxopt.core.fields import flag, hyperparameter
from mxopt.optimizers.adam import ADAM, ADAMOptions
from mxopt.optimizers.base import About, register
from mxopt.optimizers.options import decoupled_weight_decay_option, options

__all__ = ["AdamW", "AdamWOptions"]


@options
class AdamWOptions(ADAMOptions):
    """Options of :class:`AdamW`: ADAM's, with torch.optim.AdamW's defaults."""

    epsilon_hat: bool = flag(
        False, doc="add epsilon to sqrt(v) before bias correction (MXNet), else after (torch)"
    )
    weight_decay: float = hyperparameter(1e-2, ge=0.0, doc="decoupled weight decay lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(True)


@register
class AdamW(ADAM):
    """Adam with decoupled weight decay, as torch.optim.AdamW.

    ``AdamW(*, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, amsgrad=False,
    cautious=False, lazy_update=False, state_dtype="float32", epsilon_hat=False, grad_clip=0.0,
    weight_decay=1e-2,
    decoupled_weight_decay=True, grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
    arXiv:1711.05101: :class:`~mxopt.ADAM`'s kernels with torch.optim.AdamW's
    defaults. For the ``k``-th update of a weight, with :math:`m`, :math:`v` as in
    ADAM:

    .. math::

        W \\leftarrow (1-\\eta\\lambda)W - \\eta\\frac{\\hat m}{\\sqrt{\\hat v}+\\epsilon}

    with :math:`\\hat m = m/(1-\\beta_1^k)`, :math:`\\hat v = v/(1-\\beta_2^k)` (or its
    running maximum with ``amsgrad``).

    State: ``"mean"`` and ``"var"``, 8 bytes per float32 parameter; ``"max_var"``
    too with ``amsgrad`` (12 bytes).

    Equivalents, with ``batch_size=1``: ``torch.optim.AdamW(lr, betas=(beta1,
    beta2), eps, weight_decay, amsgrad)`` is ``AdamW(lr=lr, beta1=beta1, beta2=beta2,
    epsilon=eps, weight_decay=weight_decay, amsgrad=amsgrad)``: the defaults are
    torch's. ``optax.adamw(learning_rate, b1, b2, eps, weight_decay)`` is the same
    update (optax's default decay is 1e-4). fastai's ``Adam(lr, mom, sqr_mom, eps,
    wd)`` (decoupled by default) is ``AdamW(lr=lr, beta1=mom, beta2=sqr_mom,
    epsilon=eps, weight_decay=wd)``, with fastai's own defaults ``beta2=0.99,
    epsilon=1e-5, weight_decay=0.01``.

    ``cautious=True`` is the paper's C-AdamW (Liang et al. 2024, arXiv:2411.16085; see
    :class:`~mxopt.ADAM`): only the elements where the step agrees in sign with the
    gradient move, scaled by :math:`n / (\\text{kept} + 1)` per tensor; the decay applies
    to all.

    ``lazy_update=True``: a :class:`~mxopt.RowSparse` gradient updates only its rows,
    the decoupled decay included (see :class:`~mxopt.ADAM`).
    """

    Options = AdamWOptions
    about = About(
        family="adam-family",
        same_as="`torch.optim.AdamW`; `optax.adamw`; fastai's `Adam`",
        weight_decay="decoupled: `W *= 1 - lr * weight_decay`",
        epsilon="added to `sqrt(v_hat)` (`epsilon_hat=False`)",
        examples=({}, {"amsgrad": True}),
    )

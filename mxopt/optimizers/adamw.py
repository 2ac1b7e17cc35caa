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
from mxopt.optimizers.base import register
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
    epsilon_hat=False, grad_clip=0.0, weight_decay=1e-2, decoupled_weight_decay=True,
    grad_scale=1.0, maximize=False, lr_scheduler=None, state=None)``

    .. math::

        W \\leftarrow (1-\\eta\\lambda)W - \\eta\\frac{\\hat m}{\\sqrt{\\hat v}+\\epsilon}

    with :math:`\\hat m = m/(1-\\beta_1^k)`, :math:`\\hat v = v/(1-\\beta_2^k)` (or its
    running maximum with ``amsgrad``). With ``batch_size=1`` this is exactly
    ``torch.optim.AdamW(lr, betas=(beta1, beta2), eps=epsilon,
    weight_decay=weight_decay, amsgrad=amsgrad)``. State: ``"mean"``, ``"var"``
    (and ``"max_var"``).
    """

    Options = AdamWOptions

"""Ranger: Lookahead around RAdam with decoupled weight decay, fastai's ``ranger``.

Two published methods combined, as in Less Wright's "Ranger" (2019) and fastai's
``ranger``:

* RAdam (Liu et al., "On the Variance of the Adaptive Learning Rate and
  Beyond", ICLR 2020, arXiv:1908.03265) moves the weights: SGD with a
  bias-corrected momentum for the first updates, rectified Adam once the
  variance of the adaptive rate is tractable; see :class:`~mxopt.RAdam`.
* Lookahead (Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward,
  1 step back", NeurIPS 2019, arXiv:1907.08610) keeps slow weights
  :math:`\\phi` and, after every ``k``-th update of a weight, sets
  :math:`\\phi \\leftarrow \\phi + \\alpha (W - \\phi)` and :math:`W \\leftarrow \\phi`;
  see :class:`~mxopt.Lookahead`.

:func:`Ranger` only builds the pair: the result is an ordinary
:class:`~mxopt.Lookahead` whose ``inner`` is an :class:`~mxopt.RAdam`, so it is
saved, loaded and configured like any Lookahead.
"""

from __future__ import annotations

from mxopt.optimizers.lookahead import Lookahead
from mxopt.optimizers.radam import RAdam

__all__ = ["Ranger"]


def Ranger(
    *,
    lr: float = 1e-3,
    beta1: float = 0.95,
    beta2: float = 0.99,
    epsilon: float = 1e-6,
    weight_decay: float = 0.01,
    k: int = 6,
    alpha: float = 0.5,
    state=None,
    **radam_options,
) -> Lookahead:
    """Ranger: ``Lookahead(RAdam(..., decoupled_weight_decay=True), k=k, alpha=alpha)``.

    ``Ranger(*, lr=1e-3, beta1=0.95, beta2=0.99, epsilon=1e-6, weight_decay=0.01, k=6,
    alpha=0.5, state=None, **radam_options)``

    Returns ``Lookahead(RAdam(lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon,
    weight_decay=weight_decay, decoupled_weight_decay=True, state=state,
    **radam_options), k=k, alpha=alpha)``. ``radam_options`` are RAdam's other
    options (``grad_clip``, ``grad_scale``, ``maximize``, ``lr_scheduler``, and
    ``decoupled_weight_decay=False`` for coupled L2 instead).

    Papers: Lookahead, Michael R. Zhang, James Lucas, Geoffrey Hinton, Jimmy Ba,
    "Lookahead Optimizer: k steps forward, 1 step back", arXiv:1907.08610; RAdam,
    Liyuan Liu, Haoming Jiang, Pengcheng He, Weizhu Chen, Xiaodong Liu, Jianfeng
    Gao, Jiawei Han, "On the Variance of the Adaptive Learning Rate and Beyond",
    arXiv:1908.03265. For the ``t``-th update of a weight, with :math:`g` the
    :func:`~mxopt.normalized_gradient` (no L2 term), :math:`\\eta` = ``lr`` and
    :math:`\\lambda` = ``weight_decay``:

    .. math::

        W &\\leftarrow (1 - \\eta\\lambda) W, \\qquad
        m \\leftarrow \\beta_1 m + (1-\\beta_1) g, \\qquad
        v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2 \\\\
        W &\\leftarrow W - \\eta \\frac{m}{1-\\beta_1^t} \\times
        \\begin{cases}
        r_t \\sqrt{1-\\beta_2^t} / (\\sqrt{v} + \\epsilon) & \\rho_t > 5 \\\\
        1 & \\text{otherwise}
        \\end{cases} \\\\
        \\text{if } k \\mid t: \\quad \\phi &\\leftarrow \\phi + \\alpha (W - \\phi),
        \\qquad W \\leftarrow \\phi

    with RAdam's :math:`\\rho_t` and :math:`r_t` (see :class:`~mxopt.RAdam`) and
    :math:`\\phi` starting as a copy of the weight.

    State: ``"mean"``, ``"var"`` and ``"lookahead_slow"``, 12 bytes per float32
    parameter.

    The defaults are fastai's ``ranger(p, lr, mom=0.95, wd=0.01, eps=1e-6,
    sqr_mom=0.99, beta=0., decouple_wd=True)`` with ``Lookahead(k=6,
    alpha=0.5)`` (fastai has no default ``lr``; 1e-3 is RAdam's). The update is
    fastai's except where epsilon goes: mxopt's RAdam adds it to the root of the
    uncorrected :math:`v`, as torch.optim.RAdam does, fastai to the root of
    :math:`v / (1-\\beta_2^t)`, which matters only while :math:`\\sqrt{v}` is near
    epsilon. fastai's SAdam option ``beta`` has no counterpart. torch.optim has
    no Lookahead, so no Ranger; its ``RAdam(lr, betas=(beta1, beta2),
    eps=epsilon, weight_decay=weight_decay, decoupled_weight_decay=True)`` is
    the inner optimizer.
    """
    radam_options.setdefault("decoupled_weight_decay", True)
    inner = RAdam(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        weight_decay=weight_decay,
        state=state,
        **radam_options,
    )
    return Lookahead(inner, k=k, alpha=alpha)

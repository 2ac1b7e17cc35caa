"""What every oracle shares: MXNet.jl's gradient normalisation, in float64."""

import types

import numpy as np


def normalized_gradient(w, g, x):
    """``±clip(g * grad_scale / batch_size, ±grad_clip) + weight_decay * w``.

    Clip only when ``grad_clip > 0``; the sign is minus with ``maximize``; the L2
    term is left out when the optimizer decouples its weight decay.
    """
    out = np.asarray(g, dtype=np.float64) * (x.grad_scale / x.batch_size)
    if getattr(x, "maximize", False):
        out = -out
    if x.grad_clip > 0:
        out = np.minimum(np.maximum(out, -x.grad_clip), x.grad_clip)
    if x.weight_decay > 0 and not getattr(x, "decoupled_weight_decay", False):
        out = out + x.weight_decay * w
    return out


def decoupled_decay(w, x):
    """AdamW's decay ``w *= 1 - lr * weight_decay``, when the optimizer decouples it."""
    if getattr(x, "decoupled_weight_decay", False):
        w *= 1 - x.lr * x.weight_decay


def without_l2(w, g, x):
    """The normalized gradient without its weight-decay term (optimizers whose decay
    is elsewhere, e.g. LAMB and LARS)."""
    return normalized_gradient(w, g, types.SimpleNamespace(**{**vars(x), "weight_decay": 0.0}))


def cautious(u, g, x):
    """``u`` as a cautious update applies it (Liang et al. 2024, arXiv:2411.16085), when
    ``x.cautious``: zero where ``u * g <= 0``, the rest times ``n / (kept + 1)``; else ``u``."""
    if not getattr(x, "cautious", False):
        return u
    # the signs, not the product: a product of two tiny values underflows to 0 (the paper's
    # u * g > 0 is about signs)
    mask = np.sign(u) * np.sign(g) > 0
    return np.where(mask, u, 0.0) * (u.size / (np.count_nonzero(mask) + 1))

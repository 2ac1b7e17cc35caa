"""Adafactor oracle (Shazeer & Stern 2018, arXiv:1804.04235), in torch.optim.Adafactor's form.

g = normalized gradient (no L2 term with decoupled decay, the default)
w8 = k^beta2_decay (= 1 - beta2_k);  rho = min(lr, 1/sqrt(k))
alpha = max(eps2, RMS(w)) * rho, with w before the decay;  w *= 1 - lr * wd (decoupled)
2+ dims, factored over the last two (row r: mean over the last axis, col c: over the
second to last, per leading index):
    r += w8 (mean_c g^2 - r);  c += w8 (mean_r g^2 - c);  V = r c / max(mean_r r, eps1)
0/1 dims:  V += w8 (g^2 - V)
u = g / sqrt(max(V, eps1^2));  w -= alpha / max(1, RMS(u) / d) * u
eps1 = 0 means the machine epsilon of the weight's dtype (``x.dtype``, given by the
test; float64 when absent).
An empty weight is left alone.
"""

import math

import numpy as np

from mxopt import LearningRate
from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    if len(shape) >= 2:
        return {
            "row_var": np.zeros((*shape[:-1], 1)),
            "col_var": np.zeros((*shape[:-2], 1, shape[-1])),
        }
    return {"variance": np.zeros(shape)}


def step(w, g, state, x):
    if w.size == 0:
        return
    g = normalized_gradient(w, g, x)
    eps1 = x.eps1 if x.eps1 > 0 else np.finfo(getattr(x, "dtype", np.float64)).eps
    w8 = x.k**x.beta2_decay
    rho = min(x.lr, 1 / math.sqrt(x.k))
    alpha = max(x.eps2, math.sqrt(np.mean(w * w))) * rho
    decoupled_decay(w, x)
    if w.ndim >= 2:
        r, c = state["row_var"], state["col_var"]
        r += w8 * (np.mean(g * g, axis=-1, keepdims=True) - r)
        c += w8 * (np.mean(g * g, axis=-2, keepdims=True) - c)
        v = r * c / np.maximum(np.mean(r, axis=-2, keepdims=True), eps1)
    else:
        v = state["variance"]
        v += w8 * (g * g - v)
    u = g / np.sqrt(np.maximum(v, eps1 * eps1))
    w -= alpha / max(1.0, math.sqrt(np.mean(u * u)) / x.d) * u


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Adafactor",)

CASES = [
    Case("Adafactor", "default"),
    Case("Adafactor", "floors", {"eps1": 0.5, "eps2": 0.1, "d": 1.5, "lr": 0.5}),
    Case(
        "Adafactor",
        "coupled-maximize",
        {
            "decoupled_weight_decay": False,
            "weight_decay": 0.1,
            "maximize": True,
            "beta2_decay": -0.5,
        },
    ),
    Case("Adafactor", "scheduler", {"lr_scheduler": LearningRate.Exp(0.5, gamma=0.8)}),
]

# fmt: off
CONVERGENCE = [
    Setting("Adafactor", "Adafactor", {}, 4000, 1e-1,
        note="loose: no first moment and a relative step min(lr, 1/sqrt(k)) * RMS(W), "
             "sign-like on 2 coordinates; f = 1e-2 takes 18515 steps"),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("Adafactor", "Adafactor", {}, "Adafactor", {}),
    TorchCase("Adafactor wd/max", "Adafactor",
        {"lr": 0.05, "beta2_decay": -0.5, "eps2": 1e-2, "d": 2.0, "weight_decay": 0.1,
         "maximize": True},
        "Adafactor", {"lr": 0.05, "beta2_decay": -0.5, "eps": (None, 1e-2), "d": 2.0,
                      "weight_decay": 0.1, "maximize": True}),
    TorchCase("Adafactor eps1", "Adafactor", {"lr": 0.5, "eps1": 0.3, "eps2": 0.0},
        "Adafactor", {"lr": 0.5, "eps": (0.3, 0.0)}),
]
# fmt: on

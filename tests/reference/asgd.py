"""ASGD oracle (Polyak & Juditsky 1992 averaging, torch.optim.ASGD's variant).

For the k-th update of a weight, with g the normalized gradient (coupled L2
from weight_decay):
eta_k = lr / (1 + lambd * lr * (k - 1)) ** alpha, mu_k = 1 / max(1, k - 1 - t0)
W = W * (1 - lambd * eta_k) - eta_k * g
ax = ax + (W - ax) * mu_k if mu_k != 1 else W. ax starts at 0.
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"ax": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    eta = x.lr / (1 + x.lambd * x.lr * (x.k - 1)) ** x.alpha
    mu = 1 / max(1, x.k - 1 - x.t0)
    w *= 1 - x.lambd * eta
    w -= eta * g
    ax = state["ax"]
    if mu != 1:
        ax += (w - ax) * mu
    else:
        ax[...] = w


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("ASGD",)

CASES = [
    Case("ASGD", "default"),
    Case("ASGD", "averaging", {"lr": 0.1, "lambd": 0.5, "alpha": 0.6, "t0": 3.0}),
    Case(
        "ASGD",
        "t0-zero-schedule-maximize",
        {
            "t0": 0.0,
            "lambd": 0.1,
            "lr_scheduler": LearningRate.Exp(0.2, gamma=0.8, decay_on_iteration=True),
            "maximize": True,
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("ASGD", "ASGD", {"lr": 1e-3}, 13000, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("ASGD", "ASGD", {}, "ASGD", {}),
    TorchCase("ASGD t0=10", "ASGD",
        {"lr": 0.05, "lambd": 1e-2, "alpha": 0.6, "t0": 10.0, "weight_decay": 1e-3},
        "ASGD", {"lr": 0.05, "lambd": 1e-2, "alpha": 0.6, "t0": 10, "weight_decay": 1e-3}),
]
# fmt: on

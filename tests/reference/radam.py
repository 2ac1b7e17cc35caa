"""RAdam oracle (Liu et al. 2019, arXiv:1908.03265; torch.optim.RAdam's epsilon placement).

m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
rho_inf = 2 / (1 - b2) - 1;  rho_k = rho_inf - 2 k b2^k / (1 - b2^k)
rho_k > 5:  r = sqrt((rho_k-4)(rho_k-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_k))
            W -= lr * r * (m / (1 - b1^k)) * sqrt(1 - b2^k) / (sqrt(v) + eps)
otherwise:  W -= lr * m / (1 - b1^k)
decoupled weight decay: W *= 1 - lr * wd first, and g has no L2 term.
"""

import math

import numpy as np

from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    m, v = state["mean"], state["var"]
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    v[...] = x.beta2 * v + (1 - x.beta2) * g * g
    m_hat = m / (1 - x.beta1**x.k)
    rho_inf = 2 / (1 - x.beta2) - 1
    rho = rho_inf - 2 * x.k * x.beta2**x.k / (1 - x.beta2**x.k)
    if rho > 5:
        r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        w -= x.lr * r * m_hat * math.sqrt(1 - x.beta2**x.k) / (np.sqrt(v) + x.epsilon)
    else:
        w -= x.lr * m_hat


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("RAdam",)

CASES = [
    Case("RAdam", "default"),
    Case(
        "RAdam",
        "decoupled-maximize",
        {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True, "lr": 0.01},
    ),
    Case("RAdam", "betas", {"beta1": 0.5, "beta2": 0.9, "epsilon": 1e-3, "lr": 0.05}),
    Case("RAdam", "never-rectified", {"beta2": 0.6, "lr": 0.01}),
]

# fmt: off
CONVERGENCE = [
    Setting("RAdam", "RAdam", {"lr": 1e-2}, 8000, 1e-4,
        note="its first 5 updates are un-normalised momentum steps: f reaches 625 first"),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("RAdam", "RAdam", {"lr": 1e-2, "weight_decay": 1e-2}, "RAdam",
        {"lr": 1e-2, "weight_decay": 1e-2}),
    TorchCase("RAdam decoupled", "RAdam",
        {"lr": 1e-2, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1,
         "decoupled_weight_decay": True},
        "RAdam", {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.1,
                  "decoupled_weight_decay": True}),
]
# fmt: on

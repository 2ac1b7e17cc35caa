"""AdaMax oracle (Kingma & Ba, arXiv:1412.6980, Algorithm 2; mxnet-semantics.md
section 1.7, AdaMax), with torch.optim.Adamax's epsilon placement.

m = b1 m + (1 - b1) g
default (MXNet.jl):        u = max(b2 u, |g|);        W -= lr / (1 - b1^k) * m / (u + eps)
epsilon_inside_max (torch): u = max(b2 u, |g| + eps);  W -= lr / (1 - b1^k) * m / u
k is the update count of this weight.
"""

import numpy as np

from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"mean": np.zeros(shape), "inf_norm": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    m, u = state["mean"], state["inf_norm"]
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    lr_k = x.lr / (1 - x.beta1**x.k)
    if x.epsilon_inside_max:
        u[...] = np.maximum(x.beta2 * u, np.abs(g) + x.epsilon)
        w -= lr_k * m / u
    else:
        u[...] = np.maximum(x.beta2 * u, np.abs(g))
        w -= lr_k * m / (u + x.epsilon)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("AdaMax",)

CASES = [
    Case("AdaMax", "default"),
    Case("AdaMax", "torch-epsilon", {"epsilon_inside_max": True, "epsilon": 0.1, "lr": 0.02}),
    Case("AdaMax", "zero-beta1", {"beta1": 0.0, "beta2": 0.5, "epsilon": 0.1, "lr": 0.05}),
    Case("AdaMax", "maximize", {"maximize": True, "beta1": 0.5, "lr": 0.01}),
]

# fmt: off
CONVERGENCE = [
    Setting("AdaMax", "AdaMax", {"lr": 1e-2, "weight_decay": 0.0}, 6000, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("Adamax", "AdaMax",
        {"lr": 0.01, "epsilon": 1e-8, "epsilon_inside_max": True, "weight_decay": 1e-2},
        "Adamax", {"lr": 0.01, "weight_decay": 1e-2}),
]
# fmt: on

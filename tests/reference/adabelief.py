"""AdaBelief oracle (Zhuang et al. 2020, arXiv:2010.07468, Algorithm 2; optax.adabelief).

decoupled weight decay: W *= 1 - lr * wd first, and g has no L2 term
m = b1 m + (1-b1) g
s = b2 s + (1-b2) (g - m)^2 + eps_root
m_hat = m / (1 - b1^k), or with nesterov b1 m / (1 - b1^(k+1)) + (1-b1) g / (1 - b1^k)
s_hat = s / (1 - b2^k)
W -= lr * m_hat / (sqrt(s_hat) + eps)
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, OptaxCase, Setting


def init(shape, x):
    return {"mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    m, s = state["mean"], state["var"]
    b1, b2, k = x.beta1, x.beta2, x.k
    m[...] = b1 * m + (1 - b1) * g
    s[...] = b2 * s + (1 - b2) * (g - m) ** 2 + x.epsilon_root
    if x.nesterov:
        m_hat = b1 * m / (1 - b1 ** (k + 1)) + (1 - b1) * g / (1 - b1**k)
    else:
        m_hat = m / (1 - b1**k)
    s_hat = s / (1 - b2**k)
    w -= x.lr * m_hat / (np.sqrt(s_hat) + x.epsilon)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("AdaBelief",)

CASES = [
    Case("AdaBelief", "default"),
    Case("AdaBelief", "nesterov", {"nesterov": True, "lr": 0.01}),
    Case(
        "AdaBelief",
        "epsilons-betas",
        {"epsilon": 1e-3, "epsilon_root": 1e-4, "beta1": 0.5, "beta2": 0.9, "lr": 0.05},
    ),
    Case(
        "AdaBelief",
        "l2-maximize",
        {"decoupled_weight_decay": False, "weight_decay": 0.1, "maximize": True},
    ),
    Case("AdaBelief", "decoupled", {"weight_decay": 0.5, "lr": 0.05}),
    Case(
        "AdaBelief",
        "cosine",
        {"lr_scheduler": LearningRate.CosineAnnealing(0.05, steps=9), "epsilon": 1e-8},
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("AdaBelief", "AdaBelief", {"lr": 1e-2}, 4000, 1e-4),
]
# fmt: on

# fmt: off
OPTAX = [
    OptaxCase("AdaBelief", "AdaBelief", {"lr": 1e-2},
        "adabelief", {"learning_rate": 1e-2}),
    OptaxCase("AdaBelief nesterov", "AdaBelief",
        {"lr": 1e-2, "nesterov": True, "epsilon": 1e-8, "epsilon_root": 0.0},
        "adabelief", {"learning_rate": 1e-2, "nesterov": True, "eps": 1e-8, "eps_root": 0.0}),
]
# fmt: on

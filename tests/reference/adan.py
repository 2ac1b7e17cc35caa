"""Adan oracle (Xie et al. 2022, arXiv:2208.06677, Algorithm 1, in the authors' code's
convention: b_i here is the paper's 1 - beta_i, with bias corrections and epsilon outside
the root).

g without an L2 term; d = g - g_prev, 0 at the first update of the weight (k = 1)
m = b1 m + (1-b1) g;  v = b2 v + (1-b2) d;  n = b3 n + (1-b3) (g + b2 d)^2
u = (m / (1-b1^k) + b2 v / (1-b2^k)) / (sqrt(n / (1-b3^k)) + eps)
proximal (the paper): W = (W - lr u) / (1 + lr wd);  else W = (1 - lr wd) W - lr u
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import without_l2
from tests.reference.table import Case, OptaxCase, Setting


def init(shape, x):
    names = ("mean", "diff_mean", "var", "prev_grad")
    return {name: np.zeros(shape) for name in names}


def step(w, g, state, x):
    g = without_l2(w, g, x)
    m, v, n, prev = state["mean"], state["diff_mean"], state["var"], state["prev_grad"]
    d = np.zeros_like(g) if x.k == 1 else g - prev
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    v[...] = x.beta2 * v + (1 - x.beta2) * d
    n[...] = x.beta3 * n + (1 - x.beta3) * (g + x.beta2 * d) ** 2
    prev[...] = g
    m_hat = m / (1 - x.beta1**x.k)
    v_hat = v / (1 - x.beta2**x.k)
    n_hat = n / (1 - x.beta3**x.k)
    u = (m_hat + x.beta2 * v_hat) / (np.sqrt(n_hat) + x.epsilon)
    if x.proximal_weight_decay:
        w[...] = (w - x.lr * u) / (1 + x.lr * x.weight_decay)
    else:
        w[...] = (1 - x.lr * x.weight_decay) * w - x.lr * u


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Adan",)

CASES = [
    Case("Adan", "default"),
    Case("Adan", "betas", {"beta1": 0.5, "beta2": 0.3, "beta3": 0.9, "lr": 0.01, "epsilon": 1e-3}),
    Case("Adan", "decay-maximize", {"weight_decay": 0.5, "lr": 0.01, "maximize": True}),
    Case("Adan", "adamw-decay", {"weight_decay": 0.5, "lr": 0.01, "proximal_weight_decay": False}),
    Case("Adan", "zero-betas", {"beta1": 0.0, "beta2": 0.0, "beta3": 0.0}),
    Case(
        "Adan",
        "exp-on-iteration",
        {"lr_scheduler": LearningRate.Exp(0.01, gamma=0.5, decay_on_iteration=True)},
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("Adan", "Adan", {"lr": 1e-2}, 4000, 1e-4),
]
# fmt: on

# fmt: off
OPTAX = [
    # optax 0.2.8 weighs the gradient difference by 1 - b2 where the paper and the authors'
    # code use b2 (optax pull request 1715): the two agree exactly when b2 = 0.5
    OptaxCase("Adan (b2=0.5)", "Adan",
        {"lr": 1e-2, "beta2": 0.5, "weight_decay": 0.1, "proximal_weight_decay": False},
        "adan", {"learning_rate": 1e-2, "b2": 0.5, "eps_root": 0.0, "weight_decay": 0.1}),
]
# fmt: on

"""ADAM oracle (mxnet-semantics.md section 1.7, ADAM), with amsgrad, epsilon placement and
decoupled weight decay.

m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  vhat = v, or max(vhat, v) with amsgrad
epsilon_hat (MXNet): W -= lr * sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(vhat) + eps)
otherwise (paper, torch): W -= lr * (m / (1 - b1^k)) / (sqrt(vhat / (1 - b2^k)) + eps)
decoupled weight decay: W *= 1 - lr * wd first, and g has no L2 term.
k is the update count of this weight; lr is read at every update.
cautious (Liang et al. 2024): W -= lr * s * (u * [u g > 0]) instead, with u the direction
above (without lr) and s = n / (number kept + 1) per tensor (tests/reference/common.py).
"""

import math

import numpy as np

from mxopt import LearningRate
from tests.reference.common import cautious, decoupled_decay, normalized_gradient
from tests.reference.table import Case, OptaxCase, Setting, TorchCase


def init(shape, x):
    state = {"mean": np.zeros(shape), "var": np.zeros(shape)}
    if getattr(x, "amsgrad", False):
        state["max_var"] = np.zeros(shape)
    return state


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    m, v = state["mean"], state["var"]
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    v[...] = x.beta2 * v + (1 - x.beta2) * g * g
    vhat = v
    if getattr(x, "amsgrad", False):
        state["max_var"][...] = np.maximum(state["max_var"], v)
        vhat = state["max_var"]
    if getattr(x, "epsilon_hat", True):
        a_k = math.sqrt(1 - x.beta2**x.k) / (1 - x.beta1**x.k)
        u = a_k * m / (np.sqrt(vhat) + x.epsilon)
    else:
        m_hat = m / (1 - x.beta1**x.k)
        v_hat = vhat / (1 - x.beta2**x.k)
        u = m_hat / (np.sqrt(v_hat) + x.epsilon)
    w -= x.lr * cautious(u, g, x)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("ADAM", "AdamW")

CASES = [
    Case("ADAM", "default"),
    Case("ADAM", "amsgrad", {"amsgrad": True, "lr": 0.01}),
    Case("ADAM", "paper-epsilon", {"epsilon_hat": False, "epsilon": 1e-2}),
    Case(
        "ADAM",
        "decoupled-maximize",
        {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True},
    ),
    Case("ADAM", "betas", {"beta1": 0.5, "beta2": 0.9, "epsilon": 1e-3, "lr": 0.05}),
    Case("ADAM", "inv-on-epoch", {"lr_scheduler": LearningRate.Inv(0.01, gamma=0.5, power=1.0)}),
    Case("ADAM", "cautious", {"cautious": True, "lr": 0.05, "beta1": 0.8}),
    Case(
        "ADAM",
        "cautious-amsgrad-paper-epsilon",
        {"cautious": True, "amsgrad": True, "epsilon_hat": False, "lr": 0.02, "beta1": 0.7},
    ),
    Case("AdamW", "default"),
    Case("AdamW", "amsgrad", {"amsgrad": True, "weight_decay": 0.3}),
    Case("AdamW", "cautious", {"cautious": True, "lr": 0.03, "weight_decay": 0.2}),
    Case(
        "AdamW",
        "cautious-maximize",
        {"cautious": True, "maximize": True, "amsgrad": True, "beta1": 0.5, "lr": 0.02},
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("ADAM", "ADAM", {"lr": 1e-2, "weight_decay": 0.0}, 4000, 1e-4),
    Setting("AdamW", "AdamW", {"lr": 1e-2, "weight_decay": 0.0}, 4000, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("Adam", "ADAM",
        {"lr": 1e-2, "weight_decay": 1e-2, "epsilon_hat": False, "epsilon": 1e-8},
        "Adam", {"lr": 1e-2, "weight_decay": 1e-2}),
    TorchCase("Adam amsgrad", "ADAM",
        {"lr": 1e-2, "weight_decay": 0.0, "epsilon_hat": False, "amsgrad": True},
        "Adam", {"lr": 1e-2, "amsgrad": True}),
    TorchCase("AdamW", "AdamW", {"lr": 1e-2}, "AdamW", {"lr": 1e-2}),
    TorchCase("AdamW amsgrad", "AdamW", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1},
        "AdamW", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
]
# fmt: on

# fmt: off
OPTAX = [
    OptaxCase("Adam", "ADAM", {"lr": 1e-2, "weight_decay": 0.0, "epsilon_hat": False},
        "adam", {"learning_rate": 1e-2}),
    OptaxCase("AdamW", "AdamW", {"lr": 1e-2, "weight_decay": 0.1},
        "adamw", {"learning_rate": 1e-2, "weight_decay": 0.1}),
]
# fmt: on

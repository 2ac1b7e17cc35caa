"""RMSProp oracle (Tieleman & Hinton 2012; Graves 2013, arXiv:1308.0850, eqs. 38-45;
mxnet-semantics.md section 1.7, RMSProp), with torch.optim.RMSprop's centered form,
momentum and epsilon placement.

r = rho r + (1 - rho) g^2
centered: a = rho a + (1 - rho) g and s = r - a^2; otherwise s = r
D = sqrt(s + eps) with epsilon_inside_sqrt (MXNet.jl), else sqrt(s) + eps (torch)
momentum == 0: W -= lr * g / D
momentum mu > 0: v = mu v - lr * g / D;  W += v   (the learning rate is in v, as MXNet's SGD)
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    state = {"square_avg": np.zeros(shape)}
    if x.centered:
        state["grad_avg"] = np.zeros(shape)
    if x.momentum > 0:
        state["velocity"] = np.zeros(shape)
    return state


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    r = state["square_avg"]
    r[...] = x.rho * r + (1 - x.rho) * g * g
    s = r
    if x.centered:
        a = state["grad_avg"]
        a[...] = x.rho * a + (1 - x.rho) * g
        s = r - a * a
    if x.epsilon_inside_sqrt:
        denominator = np.sqrt(s + x.epsilon)
    else:
        denominator = np.sqrt(s) + x.epsilon
    if x.momentum > 0:
        v = state["velocity"]
        v[...] = x.momentum * v - x.lr * g / denominator
        w += v
    else:
        w -= x.lr * g / denominator


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("RMSProp",)

CASES = [
    Case("RMSProp", "default"),
    Case("RMSProp", "centered", {"centered": True, "epsilon": 0.1, "lr": 0.01}),
    Case("RMSProp", "momentum", {"momentum": 0.9, "lr": 0.01}),
    Case(
        "RMSProp",
        "centered-momentum",
        {"centered": True, "momentum": 0.5, "rho": 0.5, "lr": 0.01},
    ),
    Case("RMSProp", "torch-epsilon", {"epsilon_inside_sqrt": False, "epsilon": 0.1, "lr": 0.01}),
    Case(
        "RMSProp",
        "torch-epsilon-centered-momentum-maximize",
        {
            "epsilon_inside_sqrt": False,
            "epsilon": 0.1,
            "centered": True,
            "momentum": 0.9,
            "maximize": True,
        },
    ),
    Case(
        "RMSProp",
        "exp-on-iteration-momentum",
        {
            "lr_scheduler": LearningRate.Exp(0.05, gamma=0.5, decay_on_iteration=True),
            "momentum": 0.7,
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("RMSProp", "RMSProp", {"weight_decay": 0.0}, 7000, 1e-3,
        note="loose: with a constant lr it ends in a cycle at f = 2e-4 (lr / "
             "sqrt(epsilon) = 1 is too large a step near the minimum)"),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("RMSprop", "RMSProp",
        {"lr": 0.01, "rho": 0.99, "epsilon": 1e-8, "epsilon_inside_sqrt": False,
         "weight_decay": 1e-2},
        "RMSprop", {"lr": 0.01, "weight_decay": 1e-2}),
    TorchCase("RMSprop centered", "RMSProp",
        {"lr": 0.01, "rho": 0.99, "epsilon": 1e-8, "epsilon_inside_sqrt": False,
         "centered": True, "weight_decay": 0.0},
        "RMSprop", {"lr": 0.01, "centered": True}),
    TorchCase("RMSprop momentum", "RMSProp",
        {"lr": 0.01, "rho": 0.99, "epsilon": 1e-8, "epsilon_inside_sqrt": False,
         "momentum": 0.9, "weight_decay": 1e-3},
        "RMSprop", {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3}),
    TorchCase("RMSprop cent+mom", "RMSProp",
        {"lr": 0.005, "rho": 0.9, "epsilon": 1e-6, "epsilon_inside_sqrt": False,
         "centered": True, "momentum": 0.5, "weight_decay": 1e-2, "maximize": True},
        "RMSprop", {"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "centered": True,
                    "momentum": 0.5, "weight_decay": 1e-2, "maximize": True}),
]
# fmt: on

"""AdaGrad oracle (Duchi et al. 2011; mxnet-semantics.md section 1.7, AdaGrad), with
torch.optim.Adagrad's lr_decay, initial accumulator and epsilon placement.

h starts at initial_accumulator_value;  h = h + g^2
lr_k = lr / (1 + (k - 1) * lr_decay), k the update count of this weight
epsilon_inside_sqrt (MXNet.jl): W -= lr_k * g / sqrt(h + eps)
otherwise (torch):               W -= lr_k * g / (sqrt(h) + eps)
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"history": np.full(shape, float(x.initial_accumulator_value))}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    h = state["history"]
    h += g * g
    lr_k = x.lr / (1 + (x.k - 1) * x.lr_decay)
    if x.epsilon_inside_sqrt:
        w -= lr_k * g / np.sqrt(h + x.epsilon)
    else:
        w -= lr_k * g / (np.sqrt(h) + x.epsilon)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("AdaGrad",)

CASES = [
    Case("AdaGrad", "default"),
    Case(
        "AdaGrad",
        "lr-decay-initial-accumulator",
        {"lr_decay": 0.5, "initial_accumulator_value": 0.3, "epsilon": 0.2},
    ),
    Case("AdaGrad", "torch-epsilon", {"epsilon_inside_sqrt": False, "epsilon": 0.1}),
    Case(
        "AdaGrad",
        "scheduled-maximize",
        {
            "lr_scheduler": LearningRate.Exp(0.2, gamma=0.5, decay_on_iteration=True),
            "lr_decay": 0.1,
            "maximize": True,
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("AdaGrad", "AdaGrad", {"weight_decay": 0.0}, 13000, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("Adagrad", "AdaGrad",
        {"lr": 0.01, "epsilon": 1e-10, "epsilon_inside_sqrt": False, "weight_decay": 0.0},
        "Adagrad", {}),
    TorchCase("Adagrad decay/init", "AdaGrad",
        {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1,
         "weight_decay": 1e-2, "epsilon": 1e-10, "epsilon_inside_sqrt": False},
        "Adagrad", {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1,
                    "weight_decay": 1e-2}),
]
# fmt: on

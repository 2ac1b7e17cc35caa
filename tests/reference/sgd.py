"""SGD oracle (mxnet-semantics.md section 1.7, SGD, plus torch's nesterov and dampening).

No momentum: W -= lr * g. Momentum: v = mu * v - lr * (1 - d) * g; W += v, where
the first update of a weight is not dampened (d = 0 then, like torch's buffer
that starts as the first gradient). Nesterov: v as above (d = 0);
W += mu * v - lr * g. The velocity exists iff the momentum scheduler is not
Momentum.Null (by type); no scheduler means Null when momentum == 0 and
Fixed(momentum) otherwise.
cautious (Liang et al. 2024), with a velocity: the step added to W (v, or Nesterov's
mu v - lr g) is -lr u; W -= s * (lr u * [u g > 0]), s = n / (number kept + 1) per tensor
(tests/reference/common.py). Without a velocity u = g agrees with g: no change.
"""

import numpy as np

from mxopt import LearningRate, Momentum
from tests.reference.common import cautious, normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def has_velocity(x):
    if x.momentum_scheduler is None:
        return x.momentum != 0
    return type(x.momentum_scheduler).__name__ != "Null"


def init(shape, x):
    return {"velocity": np.zeros(shape)} if has_velocity(x) else {}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    if not has_velocity(x):
        w -= x.lr * g
        return
    damping = 1.0 if x.k == 1 else 1.0 - x.dampening
    v = state["velocity"]
    v[...] = x.mu * v - x.lr * damping * g
    step = x.mu * v - x.lr * g if x.nesterov else v
    w -= cautious(-step, g, x)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("SGD",)

CASES = [
    Case("SGD", "default"),
    Case("SGD", "momentum", {"momentum": 0.9}),
    Case("SGD", "fixed-zero-momentum", {"momentum_scheduler": Momentum.Fixed(0.0)}),
    Case(
        "SGD",
        "exp-on-iteration",
        {
            "lr_scheduler": LearningRate.Exp(0.2, gamma=0.5, decay_on_iteration=True),
            "momentum": 0.5,
        },
    ),
    Case("SGD", "nesterov", {"momentum": 0.8, "nesterov": True}),
    Case("SGD", "dampening-maximize", {"momentum": 0.7, "dampening": 0.3, "maximize": True}),
    Case("SGD", "cautious", {"momentum": 0.9, "cautious": True, "lr": 0.05}),
    Case(
        "SGD",
        "cautious-nesterov-maximize",
        {"momentum": 0.8, "nesterov": True, "cautious": True, "maximize": True},
    ),
    Case("SGD", "cautious-dampening", {"momentum": 0.7, "dampening": 0.3, "cautious": True}),
    Case("SGD", "cautious-no-momentum", {"cautious": True}),
]

# fmt: off
CONVERGENCE = [
    Setting("SGD", "SGD", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0}, 1500, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("SGD", "SGD", {"lr": 0.05, "weight_decay": 1e-3}, "SGD",
        {"lr": 0.05, "weight_decay": 1e-3}),
    TorchCase("SGD momentum", "SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        "SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
    TorchCase("SGD nesterov", "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
        "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    TorchCase("SGD dampening", "SGD",
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 1e-2},
        "SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 1e-2}),
    TorchCase("SGD maximize", "SGD",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "maximize": True},
        "SGD", {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "maximize": True}),
]
# fmt: on

"""AdaDelta oracle (Zeiler 2012, arXiv:1212.5701, Algorithm 1; mxnet-semantics.md
section 1.7, AdaDelta).

acc = rho acc + (1 - rho) g^2
delta = g * sqrt(delta_acc + eps) / sqrt(acc + eps)      (old delta_acc)
W -= lr * delta
delta_acc = rho delta_acc + (1 - rho) delta^2             (delta without lr)
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"acc": np.zeros(shape), "delta_acc": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    acc, delta_acc = state["acc"], state["delta_acc"]
    acc[...] = x.rho * acc + (1 - x.rho) * g * g
    delta = g * np.sqrt(delta_acc + x.epsilon) / np.sqrt(acc + x.epsilon)
    w -= x.lr * delta
    delta_acc[...] = x.rho * delta_acc + (1 - x.rho) * delta * delta


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("AdaDelta",)

CASES = [
    Case("AdaDelta", "default"),
    Case("AdaDelta", "rho-epsilon", {"rho": 0.5, "epsilon": 1e-2, "lr": 0.5}),
    Case(
        "AdaDelta",
        "inv-on-epoch-maximize",
        {"lr_scheduler": LearningRate.Inv(2.0, gamma=0.5, power=1.0), "maximize": True},
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("AdaDelta", "AdaDelta", {"weight_decay": 0.0}, 1500, 0.5,
        note="very loose: reaches the valley (f = 0.14 at 1000 steps), then drifts back "
             "(f = 0.58 at 20000); torch.optim.Adadelta does the same"),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("Adadelta", "AdaDelta", {"rho": 0.9, "weight_decay": 0.0}, "Adadelta", {}),
    TorchCase("Adadelta wd", "AdaDelta", {"lr": 0.5, "rho": 0.95, "weight_decay": 1e-2},
        "Adadelta", {"lr": 0.5, "rho": 0.95, "weight_decay": 1e-2}),
]
# fmt: on

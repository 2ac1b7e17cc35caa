"""Lion oracle (Chen et al. 2023, arXiv:2302.06675, Program 1; optax.lion).

g without an L2 term (Lion's decay is always decoupled)
W *= 1 - lr * wd
c = b1 m + (1-b1) g;  W -= lr * sign(c)   (sign(0) = 0)
m = b2 m + (1-b2) g
cautious (Liang et al. 2024): W -= lr * s * (u * [u g > 0]) with u = sign(c) and
s = n / (number kept + 1) per tensor (tests/reference/common.py).
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import cautious, without_l2
from tests.reference.table import Case, OptaxCase, Setting


def init(shape, x):
    return {"mean": np.zeros(shape)}


def step(w, g, state, x):
    g = without_l2(w, g, x)
    m = state["mean"]
    w *= 1 - x.lr * x.weight_decay
    c = x.beta1 * m + (1 - x.beta1) * g
    w -= x.lr * cautious(np.sign(c), g, x)
    m[...] = x.beta2 * m + (1 - x.beta2) * g


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Lion",)

CASES = [
    Case("Lion", "default"),
    Case("Lion", "decay-maximize", {"weight_decay": 0.5, "lr": 0.01, "maximize": True}),
    Case(
        "Lion",
        "betas-exp-on-iteration",
        {
            "beta1": 0.0,
            "beta2": 0.5,
            "lr_scheduler": LearningRate.Exp(0.01, gamma=0.5, decay_on_iteration=True),
        },
    ),
    Case("Lion", "cautious", {"cautious": True, "lr": 0.01, "weight_decay": 0.3}),
    Case(
        "Lion", "cautious-maximize", {"cautious": True, "maximize": True, "beta1": 0.5, "lr": 0.01}
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("Lion", "Lion", {"lr": 1e-3}, 5000, 1e-3,
        note="loose: every coordinate moves by exactly lr, so it bounces at that scale"),
]
# fmt: on

# fmt: off
OPTAX = [
    OptaxCase("Lion", "Lion", {"lr": 1e-3, "weight_decay": 0.1},
        "lion", {"learning_rate": 1e-3, "weight_decay": 0.1}),
]
# fmt: on

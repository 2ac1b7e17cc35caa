"""QHAdam oracle (Ma & Yarats 2019, arXiv:1810.06801; fastai's qhadam_step).

m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
W -= lr * ((1-nu1) g + nu1 m / (1 - b1^k)) / (sqrt((1-nu2) g^2 + nu2 v / (1 - b2^k)) + eps)
decoupled weight decay: W *= 1 - lr * wd first, and g has no L2 term.
"""

import numpy as np

from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, Setting


def init(shape, x):
    return {"mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    m, v = state["mean"], state["var"]
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    v[...] = x.beta2 * v + (1 - x.beta2) * g * g
    num = (1 - x.nu1) * g + x.nu1 * m / (1 - x.beta1**x.k)
    den = np.sqrt((1 - x.nu2) * g * g + x.nu2 * v / (1 - x.beta2**x.k)) + x.epsilon
    w -= x.lr * num / den


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("QHAdam",)

CASES = [
    Case("QHAdam", "default"),
    Case("QHAdam", "nus", {"nu1": 0.9, "nu2": 0.5, "beta1": 0.9, "beta2": 0.99, "lr": 0.01}),
    Case(
        "QHAdam",
        "decoupled-maximize",
        {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True},
    ),
    Case("QHAdam", "adam-numerator-sign-denominator", {"nu1": 1.0, "nu2": 0.0, "epsilon": 1e-3}),
]

# fmt: off
CONVERGENCE = [
    Setting("QHAdam", "QHAdam", {}, 10000, 1e-4),
]
# fmt: on

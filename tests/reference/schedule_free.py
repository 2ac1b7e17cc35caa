"""Schedule-Free SGD and AdamW oracle (Defazio et al. 2024, arXiv:2405.15682, Algorithm 1;
optax.contrib.schedule_free).

k: the weight's update count; y: the weight; x, z start as copies of it.
lr_k = lr * min(1, k / warmup_steps)        (no warm-up when warmup_steps = 0)
lr_max = max(lr_max, lr_k);  c_k = k^r lr_max^p / sum over updates so far (0 if the sum is 0)
SGD:   u = g
AdamW: v = b2 v + (1-b2) g^2;  u = g / (sqrt(v / (1 - b2^k)) + eps)
z -= lr_k (u + wd y);  x = (1 - c_k) x + c_k z;  y = b1 x + (1 - b1) z
g without an L2 term (the decay is the wd y above).
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import without_l2
from tests.reference.table import Case, OptaxCase, Setting


class State(dict):
    """The state arrays, plus the per-weight sums of the averaging weights."""

    weight_sum = 0.0
    lr_max = 0.0


def init(shape, x):
    arrays = {"z": None, "x": None}  # copies of the weight, made at the first step
    if "beta2" in x.options:
        arrays["var"] = np.zeros(shape)
    return State(arrays)


def step(w, g, state, x):
    g = without_l2(w, g, x)
    if state["z"] is None:
        state["z"], state["x"] = w.copy(), w.copy()
    lr = x.lr * min(1.0, x.k / x.warmup_steps) if x.warmup_steps > 0 else x.lr
    state.lr_max = max(state.lr_max, lr)
    weight = x.k**x.r * state.lr_max**x.weight_lr_power
    state.weight_sum += weight
    c = weight / state.weight_sum if state.weight_sum > 0 else 0.0
    if "var" in state:
        v = state["var"]
        v[...] = x.beta2 * v + (1 - x.beta2) * g * g
        u = g / (np.sqrt(v / (1 - x.beta2**x.k)) + x.epsilon)
        b1 = x.beta1
    else:
        u = g
        b1 = x.momentum
    z, avg = state["z"], state["x"]
    z -= lr * (u + x.weight_decay * w)
    avg[...] = (1 - c) * avg + c * z
    w[...] = b1 * avg + (1 - b1) * z


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("ScheduleFreeSGD", "ScheduleFreeAdamW")

CASES = [
    Case("ScheduleFreeSGD", "default", {"lr": 0.1}),
    Case("ScheduleFreeSGD", "warmup-r-power",
         {"lr": 0.05, "momentum": 0.5, "warmup_steps": 3, "r": 1.0, "weight_lr_power": 1.0}),
    Case("ScheduleFreeSGD", "exp-maximize",
         {"lr_scheduler": LearningRate.Exp(0.1, gamma=0.5, decay_on_iteration=True),
          "maximize": True}),
    Case("ScheduleFreeAdamW", "default"),
    Case("ScheduleFreeAdamW", "warmup-decay",
         {"lr": 0.01, "warmup_steps": 4, "weight_decay": 0.1, "beta2": 0.9}),
    Case("ScheduleFreeAdamW", "exp-maximize",
         {"lr_scheduler": LearningRate.Exp(0.01, gamma=0.5, decay_on_iteration=True),
          "maximize": True, "beta1": 0.5, "epsilon": 1e-3}),
]  # fmt: skip

# fmt: off
CONVERGENCE = [
    Setting("ScheduleFreeSGD", "ScheduleFreeSGD", {"lr": 1e-3}, 8000, 1e-3,
        note="the uniform average of early iterates holds it back on this valley"),
    Setting("ScheduleFreeAdamW", "ScheduleFreeAdamW", {"lr": 1e-2}, 4000, 1e-4),
]

OPTAX = [
    OptaxCase("ScheduleFreeSGD", "ScheduleFreeSGD", {"lr": 0.1, "weight_decay": 0.01},
        "contrib.schedule_free_sgd", {"learning_rate": 0.1, "weight_decay": 0.01}),
    OptaxCase("ScheduleFreeAdamW", "ScheduleFreeAdamW", {"lr": 0.01, "weight_decay": 0.01},
        "contrib.schedule_free_adamw", {"learning_rate": 0.01, "weight_decay": 0.01}),
    OptaxCase("ScheduleFreeAdamW b1", "ScheduleFreeAdamW",
        {"lr": 0.01, "beta1": 0.95, "beta2": 0.99, "epsilon": 1e-6, "weight_lr_power": 1.0},
        "contrib.schedule_free_adamw",
        {"learning_rate": 0.01, "b1": 0.95, "b2": 0.99, "eps": 1e-6, "weight_lr_power": 1.0}),
]
# fmt: on

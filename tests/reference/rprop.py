"""Rprop oracle (Riedmiller & Braun 1993, torch.optim.Rprop's variant, iRprop-).

Per element, with g the normalized gradient and s = g * prev:
s > 0: step = step * etaplus; s < 0: step = step * etaminus and g = 0; then
step = min(max(step, step_min), step_max) (torch clamps at every update);
W -= sign(g) * step; prev = g. prev starts at 0, step at the learning rate of
the first update.
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"prev": np.zeros(shape), "step_size": np.full(shape, float(x.lr))}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    prev, size = state["prev"], state["step_size"]
    s = g * prev
    factor = np.where(s > 0, x.etaplus, np.where(s < 0, x.etaminus, 1.0))
    size[...] = np.clip(size * factor, x.step_min, x.step_max)
    g = np.where(s < 0, 0.0, g)
    w -= np.sign(g) * size
    prev[...] = g


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Rprop",)

CASES = [
    Case("Rprop", "default"),
    Case(
        "Rprop",
        "etas-bounds",
        {"etaminus": 0.3, "etaplus": 1.5, "step_min": 0.004, "step_max": 0.03},
    ),
    Case("Rprop", "lr-above-max-maximize", {"lr": 0.05, "step_max": 0.02, "maximize": True}),
    Case(
        "Rprop",
        "scheduled-initial-step",
        {"lr_scheduler": LearningRate.Exp(0.04, gamma=0.5, decay_on_iteration=True)},
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("Rprop", "Rprop", {}, 3000, 1e-4),
]
# fmt: on

# fmt: off
TORCH = [
    TorchCase("Rprop", "Rprop", {}, "Rprop", {}),
    TorchCase("Rprop etas/steps", "Rprop",
        {"etaminus": 0.3, "etaplus": 1.5, "step_min": 1e-3, "step_max": 0.05},
        "Rprop", {"etas": (0.3, 1.5), "step_sizes": (1e-3, 0.05)}),
    TorchCase("Rprop maximize", "Rprop", {"lr": 0.1, "step_max": 0.05, "maximize": True},
        "Rprop", {"lr": 0.1, "step_sizes": (1e-6, 0.05), "maximize": True}),
]
# fmt: on

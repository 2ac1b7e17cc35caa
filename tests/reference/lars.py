"""LARS / LARC oracle (You et al. 2017, arXiv:1708.03888, Algorithm 1; LARC clip as apex).

g = normalized gradient without L2 term
ratio = tc * ||w|| / (||g|| + wd ||w|| + eps), or 1 if ||w|| == 0 or ||g|| == 0;
with clip: ratio = min(ratio, 1)
v = mu v - lr * ratio * (g + wd w);  w += v
"""

import numpy as np

from tests.reference.common import without_l2
from tests.reference.table import Case, Setting


def init(shape, x):
    return {"velocity": np.zeros(shape)}


def step(w, g, state, x):
    g = without_l2(w, g, x)
    w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
    if w_norm > 0 and g_norm > 0:
        ratio = x.trust_coefficient * w_norm / (g_norm + x.weight_decay * w_norm + x.epsilon)
        if x.clip:
            ratio = min(ratio, 1.0)
    else:
        ratio = 1.0
    v = state["velocity"]
    v[...] = x.momentum * v - x.lr * ratio * (g + x.weight_decay * w)
    w += v


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("LARS",)

CASES = [
    Case("LARS", "default"),
    Case("LARS", "larc", {"clip": True, "trust_coefficient": 0.5, "momentum": 0.5}),
]

# fmt: off
CONVERGENCE = [
    Setting("LARS", "LARS", {"lr": 1.0, "weight_decay": 0.0}, 3000, 1e-2,
        note="loose: trust-ratio steps bounce around the minimum"),
]
# fmt: on

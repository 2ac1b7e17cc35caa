"""Prodigy oracle (Mishchenko & Defazio 2024, arXiv:2306.06101, Algorithm 4 with the
reference code's placement of d; optax.contrib.prodigy).

For one step over the weights it is given (here: one weight, so d is that weight's own):
b3 = beta3 or sqrt(beta2);  bc = sqrt(1 - b2^k) / (1 - b1^k) with bias_correction, else 1
dlr = d * lr * bc
m = b1 m + (1-b1) d g;  v = b2 v + (1-b2) d^2 g^2
s = b3 s + (dlr / d0) d g        (d lr instead of dlr with safeguard_warmup)
r = b3 r + (d / d0) dlr <g, x0 - w>
d' = max(d, min(d_coef r / |s|_1, d growth_rate))   (d' = d when |s|_1 = 0)
W = W - dlr (wd W + m / (sqrt(v) + d' eps))
g without an L2 term.
"""

import math

import numpy as np

from mxopt import LearningRate
from tests.reference.common import without_l2
from tests.reference.table import Case, OptaxCase, Setting


class State(dict):
    """The state arrays, plus d and r (per weight)."""

    d = None
    numerator = 0.0


def init(shape, x):
    return State(mean=np.zeros(shape), var=np.zeros(shape), grad_sum=np.zeros(shape),
                 initial=None)  # fmt: skip


def step(w, g, state, x):
    g = without_l2(w, g, x)
    if state["initial"] is None:
        state["initial"] = w.copy()
    if state.d is None:
        state.d = x.d0
    d = state.d
    b3 = x.beta3 or math.sqrt(x.beta2)
    bc = math.sqrt(1 - x.beta2**x.k) / (1 - x.beta1**x.k) if x.bias_correction else 1.0
    dlr = d * x.lr * bc
    m, v, s = state["mean"], state["var"], state["grad_sum"]
    m[...] = x.beta1 * m + (1 - x.beta1) * d * g
    v[...] = x.beta2 * v + (1 - x.beta2) * d * d * g * g
    s[...] = b3 * s + ((d * x.lr if x.safeguard_warmup else dlr) / x.d0) * d * g
    state.numerator = b3 * state.numerator + d / x.d0 * dlr * float(
        np.sum(g * (state["initial"] - w))
    )
    norm = float(np.sum(np.abs(s)))
    if norm > 0:
        d = max(d, min(x.d_coef * state.numerator / norm, d * (x.growth_rate or math.inf)))
    state.d = d
    w -= dlr * (x.weight_decay * w + m / (np.sqrt(v) + d * x.epsilon))


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Prodigy",)

CASES = [
    Case("Prodigy", "default"),
    Case("Prodigy", "corrected-large-d0", {"bias_correction": True, "d0": 1e-2, "beta3": 0.5}),
    Case("Prodigy", "safeguard-growth-maximize",
         {"safeguard_warmup": True, "growth_rate": 1.5, "d0": 1e-3, "maximize": True,
          "d_coef": 2.0}),
    Case("Prodigy", "exp-on-iteration",
         {"lr_scheduler": LearningRate.Exp(1.0, gamma=0.5, decay_on_iteration=True),
          "d0": 1e-2}),
]  # fmt: skip

# fmt: off
CONVERGENCE = [
    Setting("Prodigy", "Prodigy", {"bias_correction": True}, 2000, 1e-4,
        note="lr=1 as meant; without the correction f first rises 16% on the quadratic"),
]

OPTAX = [
    OptaxCase("Prodigy", "Prodigy", {"bias_correction": True, "d0": 1e-3},
        "contrib.prodigy", {"estim_lr0": 1e-3}),
    OptaxCase("Prodigy decay safeguard", "Prodigy",
        {"bias_correction": True, "weight_decay": 0.1, "safeguard_warmup": True, "d0": 1e-4,
         "beta3": 0.9},
        "contrib.prodigy",
        {"weight_decay": 0.1, "safeguard_warmup": True, "estim_lr0": 1e-4, "beta3": 0.9}),
]
# fmt: on

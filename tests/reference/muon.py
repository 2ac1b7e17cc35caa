"""Muon oracle (Jordan et al. 2024; Liu et al. 2025, arXiv:2502.16982; torch.optim.Muon).

For a weight with two or more axes, as an R x C matrix (R = shape[0]):
g without an L2 term (the decay is decoupled)
B = mu B + (1-mu) g;  U = (1-mu) g + mu B (nesterov) or B
X = U / max(||U||_F, eps), transposed when R > C
ns_steps times: A = X X^T;  X = a X + (b A + c A A) X   (the quintic iteration, not an SVD)
W = (1 - lr wd) W - lr s X (transposed back), s = sqrt(max(1, R/C)) ("original")
or 0.2 sqrt(max(R, C)) ("match_rms_adamw")
Other weights: the fallback's oracle (AdamW's for the default), with its own options.
"""

import math

import numpy as np

from mxopt import AdamW, LearningRate
from tests.reference.common import without_l2
from tests.reference.table import Case, Setting, TorchCase


def _fallback(x):
    from tests.reference import ORACLES  # the table imports this module

    return ORACLES[x.fallback_name], x.fallback_inputs


def init(shape, x):
    if len(shape) >= 2:
        return {"momentum_buffer": np.zeros(shape)}
    oracle, inputs = _fallback(x)
    return oracle.init(shape, inputs)


def orthogonalize(u, x):
    """The quintic Newton-Schulz iteration on the matrix ``u`` (float64)."""
    a, b, c = x.ns_coefficients
    tall = u.shape[0] > u.shape[1]
    m = u.T if tall else u
    m = m / max(np.linalg.norm(m), x.epsilon)
    for _ in range(x.ns_steps):
        gram = m @ m.T
        m = a * m + (b * gram + c * gram @ gram) @ m
    return m.T if tall else m


def lr_factor(rows, cols, adjust_lr):
    if adjust_lr == "original":
        return math.sqrt(max(1.0, rows / cols))
    assert adjust_lr == "match_rms_adamw"
    return 0.2 * math.sqrt(max(rows, cols))


def step(w, g, state, x):
    if w.ndim < 2:
        oracle, inputs = _fallback(x)
        oracle.step(w, g, state, inputs)
        return
    g = without_l2(w, g, x)
    b = state["momentum_buffer"]
    b[...] = x.momentum * b + (1 - x.momentum) * g
    u = (1 - x.momentum) * g + x.momentum * b if x.nesterov else b
    if u.size == 0:
        return
    rows = w.shape[0]
    cols = w.size // rows
    o = orthogonalize(u.reshape(rows, cols), x).reshape(w.shape)
    w *= 1 - x.lr * x.weight_decay
    w -= x.lr * lr_factor(rows, cols, x.adjust_lr) * o


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Muon",)

CASES = [
    Case("Muon", "default"),
    Case("Muon", "no-nesterov", {"nesterov": False, "lr": 0.02, "momentum": 0.9}),
    Case("Muon", "match-rms-adamw", {"adjust_lr": "match_rms_adamw", "weight_decay": 0.3}),
    Case(
        "Muon",
        "steps-maximize",
        {"ns_steps": 3, "ns_coefficients": (2.0, -1.5, 0.5), "maximize": True, "lr": 0.05},
    ),
    # the norm below epsilon: the update is U / epsilon, not normalised
    Case("Muon", "epsilon-floor", {"epsilon": 50.0, "lr": 0.01, "nesterov": False}),
    Case(
        "Muon",
        "exp-on-iteration",
        {
            "momentum": 0.5,
            "lr_scheduler": LearningRate.Exp(0.05, gamma=0.7, decay_on_iteration=True),
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("Muon", "Muon",
        {"lr": 0.02, "weight_decay": 0.0, "fallback": AdamW(lr=1e-2, weight_decay=0.0)},
        4000, 1e-4, note="the 2-D Rosenbrock point is a vector: the fallback (AdamW) moves it"),
]
# fmt: on

# torch.optim.Muon refuses 1-D weights and runs its iteration in bfloat16: the shared
# agreement table (1-D weights) cannot hold it; tests/test_muon.py compares 2-D weights.
TORCH: list[TorchCase] = []

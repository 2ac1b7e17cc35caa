"""ADOPT oracle (Taniguchi et al. 2024, arXiv:2411.02853, Algorithm 1 with the clipped
update of the revised version; optax.contrib.adopt).

k = 1:  v = g^2 (weight and m untouched; decoupled decay skipped)
k >= 2: W *= 1 - lr * wd (decoupled decay; else g carries wd * W)
        u = clip(g / max(sqrt(v), eps), -(k-1)^(1/4), (k-1)^(1/4))   (no clip without
            update_clipping)
        m = b1 m + (1-b1) u
        W -= lr * m, or lr * (b1 m + (1-b1) u) with nesterov
        v = b2 v + (1-b2) g^2
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, OptaxCase, Setting


def init(shape, x):
    return {"mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    m, v = state["mean"], state["var"]
    if x.k == 1:
        v[...] = g * g
        return
    decoupled_decay(w, x)
    u = g / np.maximum(np.sqrt(v), x.epsilon)
    if x.update_clipping:
        c = (x.k - 1) ** 0.25
        u = np.clip(u, -c, c)
    m[...] = x.beta1 * m + (1 - x.beta1) * u
    if x.nesterov:
        w -= x.lr * (x.beta1 * m + (1 - x.beta1) * u)
    else:
        w -= x.lr * m
    v[...] = x.beta2 * v + (1 - x.beta2) * g * g


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("ADOPT",)

CASES = [
    Case("ADOPT", "default"),
    Case("ADOPT", "nesterov-betas", {"nesterov": True, "beta1": 0.5, "beta2": 0.9, "lr": 0.05}),
    Case("ADOPT", "unclipped", {"update_clipping": False, "epsilon": 1e-3, "lr": 0.01}),
    Case(
        "ADOPT",
        "l2-maximize",
        {"decoupled_weight_decay": False, "weight_decay": 0.1, "maximize": True},
    ),
    Case("ADOPT", "decoupled", {"weight_decay": 0.5, "lr": 0.05}),
    Case(
        "ADOPT",
        "exp-on-iteration",
        {"lr_scheduler": LearningRate.Exp(0.05, gamma=0.7, decay_on_iteration=True)},
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("ADOPT", "ADOPT", {"lr": 1e-2, "beta2": 0.999}, 8000, 1e-4,
        note="Adam's beta2: with the default 0.9999, v remembers the first gradient "
             "(|g| = 155, far above the later ones) for ~10^4 updates, so the steps stay "
             "small (f = 0.02 after 20000)"),
]
# fmt: on

# fmt: off
OPTAX = [
    OptaxCase("ADOPT", "ADOPT", {"lr": 1e-2},
        "contrib.adopt", {"learning_rate": 1e-2}),
    OptaxCase("ADOPT nesterov", "ADOPT", {"lr": 1e-2, "nesterov": True, "beta2": 0.99},
        "contrib.adopt", {"learning_rate": 1e-2, "nesterov": True, "b2": 0.99}),
    # unclipped, u = g / |g_1| is huge where the first gradient was tiny and the weights
    # wander far (float32 deviation 6e-4 with b2=0.9999); b2=0.9 keeps them near 1
    OptaxCase("ADOPT unclipped", "ADOPT", {"lr": 1e-2, "update_clipping": False, "beta2": 0.9},
        "contrib.adopt", {"learning_rate": 1e-2, "use_clipping": False, "b2": 0.9}),
]
# fmt: on

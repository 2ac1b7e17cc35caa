"""LAMB oracle (You et al. 2019, arXiv:1904.00962, Algorithm 2; trust ratio clipped).

m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2   (g without L2 term)
u = (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps) + wd * w
ratio = min(||w|| / ||u||, max_trust_ratio), or 1 if either norm is 0
w -= lr * ratio * u
"""

import numpy as np

from tests.reference.common import without_l2
from tests.reference.table import Case, Setting


def init(shape, x):
    return {"mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = without_l2(w, g, x)
    m, v = state["mean"], state["var"]
    m[...] = x.beta1 * m + (1 - x.beta1) * g
    v[...] = x.beta2 * v + (1 - x.beta2) * g * g
    m_hat, v_hat = m / (1 - x.beta1**x.k), v / (1 - x.beta2**x.k)
    u = m_hat / (np.sqrt(v_hat) + x.epsilon) + x.weight_decay * w
    w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(u)
    ratio = min(w_norm / u_norm, x.max_trust_ratio) if w_norm > 0 and u_norm > 0 else 1.0
    w -= x.lr * ratio * u


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("LAMB",)

CASES = [
    Case("LAMB", "default"),
    Case("LAMB", "tight-ratio", {"max_trust_ratio": 0.05, "lr": 0.05, "beta2": 0.9}),
]

# fmt: off
CONVERGENCE = [
    Setting("LAMB", "LAMB", {"lr": 1e-2, "weight_decay": 0.0}, 3500, 1e-2,
        note="loose: the trust ratio makes every step lr * norm(W) long, so it bounces "
             "around the minimum; with lr=1e-3 its steps shrink with norm(W) and it stalls "
             "near W = 0 from update ~5000 to ~30000"),
]
# fmt: on

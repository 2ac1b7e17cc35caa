"""L-BFGS oracle, one iteration per update (Nocedal & Wright, "Numerical Optimization",
2nd ed., Algorithm 7.4; torch.optim.LBFGS with max_iter=1 and no line search).

g = normalized gradient (flattened); nothing happens when max|g| <= tolerance_grad
first iteration:  d = -g,  t = lr * min(1, 1/sum|g|),  gamma = 1
later:  s = last step taken (t d of the previous iteration), y = g - g_prev;
        keep (s, y, rho = 1/(s.y)) and gamma = s.y / y.y when s.y > 1e-10 (at most m
        pairs: the oldest goes);  d = -r, r from the two-loop recursion (Algorithm 7.4):
            q = g;  newest to oldest: a_i = rho_i s_i.q, q -= a_i y_i
            r = gamma q;  oldest to newest: b_i = rho_i y_i.r, r += s_i (a_i - b_i)
        t = lr
last_step = t d, g_prev = g;  w += t d when g.d <= -tolerance_change

The state mirrors mxopt's layout, the pairs in a ring of m rows (``info`` = started,
number of pairs, next slot, gamma), so that every array can be compared.
"""

import numpy as np

from mxopt import LearningRate
from tests.reference.common import normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    n, m = int(np.prod(shape)), x.history_size
    return {
        "s_history": np.zeros((m, n)),
        "y_history": np.zeros((m, n)),
        "rho": np.zeros(m),
        "prev_grad": np.zeros(shape),
        "last_step": np.zeros(shape),
        "info": np.zeros(4),
    }


def _pairs(state):
    """The kept pairs (s, y, rho), oldest first."""
    m = state["rho"].size
    count, slot = int(state["info"][1]), int(state["info"][2])
    rows = [(slot - count + k) % m for k in range(count)]
    return [(state["s_history"][i], state["y_history"][i], state["rho"][i]) for i in rows]


def step(w, g, state, x):
    g = normalized_gradient(w, g, x).ravel()
    if g.size == 0 or np.max(np.abs(g)) <= x.tolerance_grad:
        return
    info = state["info"]
    if info[0] == 0:
        info[:] = (1, 0, 0, 1)
        d = -g
        t = x.lr * min(1.0, 1.0 / np.sum(np.abs(g)))
    else:
        s = state["last_step"].ravel().copy()
        y = g - state["prev_grad"].ravel()
        sy = s @ y
        if sy > 1e-10:
            m, slot = state["rho"].size, int(info[2])
            state["s_history"][slot] = s
            state["y_history"][slot] = y
            state["rho"][slot] = 1.0 / sy
            info[1] = min(info[1] + 1, m)
            info[2] = (slot + 1) % m
            info[3] = sy / (y @ y)
        pairs = _pairs(state)
        q = g.copy()
        a = []
        for s_i, y_i, rho_i in reversed(pairs):
            a.append(rho_i * (s_i @ q))
            q -= a[-1] * y_i
        r = info[3] * q
        for (s_i, y_i, rho_i), a_i in zip(pairs, reversed(a), strict=True):
            b_i = rho_i * (y_i @ r)
            r += s_i * (a_i - b_i)
        d = -r
        t = x.lr
    state["prev_grad"].ravel()[...] = g
    state["last_step"].ravel()[...] = t * d
    if g @ d <= -x.tolerance_change:
        w.ravel()[...] += t * d


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("LBFGS",)

CASES = [
    Case("LBFGS", "default"),
    # 9 updates through a ring of 3 rows: the oldest pairs are overwritten
    Case("LBFGS", "history-3-lr", {"history_size": 3, "lr": 0.5}),
    # max |g| <= 0.2: a tolerance_grad above it stops the updates
    Case("LBFGS", "clipped", {"grad_clip": 0.2, "history_size": 5}),
    Case(
        "LBFGS",
        "maximize-exp-on-iteration",
        {
            "history_size": 4,
            "maximize": True,
            "lr_scheduler": LearningRate.Exp(0.5, gamma=0.9, decay_on_iteration=True),
        },
    ),
]

# fmt: off
CONVERGENCE = [
    Setting("LBFGS", "LBFGS", {"lr": 0.1, "history_size": 10}, 2000, 1e-6,
        note="fixed steps, one iteration per update; mxopt.minimize adds the line search"),
]
# fmt: on

# Each update is torch's step(closure) with max_iter=1 (tests/torch_agreement.py hands
# LBFGS a closure; the gradient is set on the parameter). Measured: 3.0e-8 over 50
# float32 steps of random gradients (tests/test_minimize.py also compares the updater
# with torch on a Rosenbrock function: 9.5e-7 over 50 steps).
# fmt: off
TORCH = [
    TorchCase("LBFGS", "LBFGS", {"lr": 0.1, "history_size": 10},
        "LBFGS", {"lr": 0.1, "max_iter": 1, "history_size": 10}, tolerance=1e-6),
]
# fmt: on

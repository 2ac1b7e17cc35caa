"""Lookahead oracle (Zhang et al. 2019, arXiv:1907.08610, Algorithm 1).

The inner optimizer's oracle moves the fast weights; the slow weights start as
the weight before its first update; after every k-th update:
slow += alpha * (w - slow); w = slow.
"""

import mxopt
from tests.reference.table import Case, Setting


def _inner(x):
    from tests.reference import ORACLES

    return ORACLES[x.inner_name]


def init(shape, x):
    return _inner(x).init(shape, x.inner_inputs)


def step(w, g, state, x):
    if "lookahead_slow" not in state:
        state["lookahead_slow"] = w.copy()
    _inner(x).step(w, g, state, x.inner_inputs)
    if x.k % x.options["k"] == 0:
        slow = state["lookahead_slow"]
        slow += x.options["alpha"] * (w - slow)
        w[...] = slow


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("Lookahead",)

CASES = [
    Case("Lookahead", "sgd-momentum", {"k": 3, "alpha": 0.6}, inner=("SGD", {"momentum": 0.9})),
    Case("Lookahead", "adam", {"k": 2}, inner=("ADAM", {"lr": 0.01})),
]

# fmt: off
CONVERGENCE = [
    Setting("Lookahead(SGD)", "Lookahead", {"k": 6, "alpha": 0.5}, 3000, 1e-4,
        inner=("SGD", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0})),
    Setting("Lookahead(RAdam)", "Lookahead", {"k": 6, "alpha": 0.5}, 9000, 1e-4,
        inner=("RAdam", {"lr": 1e-2})),
]
# fmt: on

#: A Lookahead cannot be built without the optimizer it wraps.
REQUIRED_OPTIONS = {"Lookahead": lambda: {"inner": mxopt.SGD()}}

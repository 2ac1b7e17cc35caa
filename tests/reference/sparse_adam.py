"""SparseAdam oracle (torch.optim.SparseAdam's update, Kingma & Ba's Adam applied to the
rows a gradient touches).

For the touched rows, with g the normalized gradient of a row and k the weight's update
count (every call counts):
m += (1 - b1) (g - m);  v += (1 - b2) (g^2 - v)      (torch's form of the moment updates)
W -= lr * sqrt(1 - b2^k) / (1 - b1^k) * m / (sqrt(v) + eps)
(epsilon on the root of the uncorrected v: torch.optim.SparseAdam's step_size and denom)
A dense gradient touches every row. ``lazy_step`` is the row-sparse update: duplicate rows
summed, then the dense formulas on the touched rows only.
"""

import numpy as np

from tests.reference.common import decoupled_decay, normalized_gradient
from tests.reference.table import Case, Setting, TorchCase


def init(shape, x):
    return {"mean": np.zeros(shape), "var": np.zeros(shape)}


def step(w, g, state, x):
    g = normalized_gradient(w, g, x)
    decoupled_decay(w, x)
    m, v = state["mean"], state["var"]
    m += (1 - x.beta1) * (g - m)
    v += (1 - x.beta2) * (g * g - v)
    step_size = x.lr * np.sqrt(1 - x.beta2**x.k) / (1 - x.beta1**x.k)
    w -= step_size * m / (np.sqrt(v) + x.epsilon)


def lazy_step(dense_step, w, rows, values, state, x):
    """A lazy update by ``dense_step`` (any oracle's ``step``): the rows of ``values``
    summed per distinct row of ``rows``, then ``dense_step`` on those rows of ``w`` and of
    every state array, nothing else touched."""
    touched = np.unique(rows)
    summed = np.zeros((touched.size, *w.shape[1:]))
    np.add.at(summed, np.searchsorted(touched, rows), np.asarray(values, np.float64))
    w_rows = w[touched]
    state_rows = {name: array[touched] for name, array in state.items()}
    dense_step(w_rows, summed, state_rows, x)
    w[touched] = w_rows
    for name, array in state_rows.items():
        state[name][touched] = array


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("SparseAdam",)

CASES = [
    Case("SparseAdam", "default"),
    Case("SparseAdam", "betas", {"beta1": 0.5, "beta2": 0.9, "epsilon": 1e-3, "lr": 0.05}),
    Case("SparseAdam", "decoupled-maximize",
         {"decoupled_weight_decay": True, "weight_decay": 0.1, "maximize": True}),
]  # fmt: skip

CONVERGENCE = [Setting("SparseAdam", "SparseAdam", {"lr": 1e-2}, 4000, 1e-4)]

# tests/torch_agreement.py hands torch's SparseAdam the gradient as a sparse tensor of every
# row (it refuses dense ones); tests/test_sparse_rows.py compares it on an embedding.
TORCH = [TorchCase("SparseAdam", "SparseAdam", {"lr": 1e-2}, "SparseAdam", {"lr": 1e-2})]

"""SOAP oracle (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam",
arXiv:2409.11321, Algorithms 1-3; the reference code nikhilvyas/SOAP), in float64.

For a weight with two or more axes, as an R x C matrix G (R = shape[0]); g without an L2
term (the decay is decoupled); b = shampoo_beta, or beta2 when shampoo_beta is 0. A side
(R or C) larger than max_precond_dim keeps no L/Q: its rotation is the identity.

k = 1 (the first update of the weight) only sets up the preconditioner:
    L = (1-b) G G^T,  R = (1-b) G^T G,  Q_L, Q_R = eigenbasis(L), eigenbasis(R)
k > 1, with t = k - 1:
    m = b1 m + (1-b1) G                       (m in the original space)
    G' = Q_L^T G Q_R;  v = b2 v + (1-b2) G'^2 (v in the rotated space)
    N' = (Q_L^T m Q_R) / (sqrt(v) + eps)
    W = W - lr sqrt(1-b2^t) / (1-b1^t) Q_L N' Q_R^T   (lr without bias_correction)
    W = W - lr wd W
    L = b L + (1-b) G G^T,  R = b R + (1-b) G^T G
    when t % precondition_frequency == 0, for each side (L, Q_L, v's rows), (R, Q_R, v's
    columns): e = diag(Q^T L Q); order by e descending (stable); permute Q's columns and
    v's axis by it; Q = qr(L Q) (one power iteration)
Other weights: the fallback's oracle (AdamW's for the default), with its own options.

eigenbasis(L): the eigenvectors of L + 1e-30 I by descending eigenvalue. Eigenvalues at
most n eps lambda_max (eps of the tested dtype: rounding level) have no well-defined
eigenvectors (the null space of G G^T for a non-square G): their columns are replaced by
a fixed basis of the same subspace (complete): the n - k unit vectors e_j least in the
span of the k kept eigenvectors (smallest sum of squares of row j; ties by j), in order
of j, projected off that span, then orthonormalised by QR. Likewise at a refresh, the QR
columns from the first whose |R_jj| is at most n eps max |R_ii| on (L rank-deficient).

Signs: the update is invariant to the sign of any column of Q_L or Q_R (flipping column j
flips row/column j of G' and of the rotated m alike, so v is unchanged, N' flips and the
back-rotation flips it again), and so is everything after. Only so that the state arrays
can be compared, each eigenvector is signed so that its entry of largest magnitude is
positive, and each QR has a non-negative diagonal in R. Ties between eigenvalues (and
between those largest entries) have measure zero for random data.
"""

import numpy as np

from mxopt import AdamW, LearningRate
from tests.reference.common import without_l2
from tests.reference.table import Case, Setting

#: Added to the diagonal before eigh, as the reference does.
DIAGONAL_SHIFT = 1e-30


def _fallback(x):
    from tests.reference import ORACLES  # the table imports this module

    return ORACLES[x.fallback_name], x.fallback_inputs


def sides(shape, x):
    """(rows, cols, left rotated, right rotated) of a weight of two or more axes."""
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    return rows, cols, rows <= x.max_precond_dim, cols <= x.max_precond_dim


def init(shape, x):
    if len(shape) < 2:
        oracle, inputs = _fallback(x)
        return oracle.init(shape, inputs)
    rows, cols, left, right = sides(shape, x)
    state = {"exp_avg": np.zeros(shape), "exp_avg_sq": np.zeros(shape)}
    if left:
        state["precond_left"] = np.zeros((rows, rows))
        state["basis_left"] = np.zeros((rows, rows))
    if right:
        state["precond_right"] = np.zeros((cols, cols))
        state["basis_right"] = np.zeros((cols, cols))
    return state


def qr_positive(a):
    """The QR factor Q of ``a`` with a non-negative diagonal in R, and that diagonal."""
    q, r = np.linalg.qr(a)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0), np.abs(np.diag(r))


def complete(kept):
    """``kept`` (orthonormal columns) and a fixed orthonormal basis of its complement."""
    n, k = kept.shape
    if k == n:
        return kept
    outside = np.sort(np.argsort((kept * kept).sum(axis=1), kind="stable")[: n - k])
    units = np.eye(n)[:, outside]
    return np.concatenate([kept, qr_positive(units - kept @ (kept.T @ units))[0]], axis=1)


def eigenbasis(matrix, eps):
    n = len(matrix)
    values, vectors = np.linalg.eigh(matrix + DIAGONAL_SHIFT * np.eye(n))
    values, vectors = values[::-1], vectors[:, ::-1]
    kept = vectors[:, values > n * eps * values[0]]
    top = np.abs(kept).argmax(axis=0)
    return complete(kept * np.where(kept[top, np.arange(kept.shape[1])] < 0, -1.0, 1.0))


def rotate(a, state, back=False):
    """Q_L^T a Q_R (or Q_L a Q_R^T with ``back``), each side where it is rotated."""
    if "basis_left" in state:
        q = state["basis_left"]
        a = (q if back else q.T) @ a
    if "basis_right" in state:
        q = state["basis_right"]
        a = a @ (q.T if back else q)
    return a


def refresh(state, v, eps):
    """Sort each basis by its estimated eigenvalues (v's axis alike), then one power
    iteration and QR."""
    for axis, side in enumerate(("left", "right")):
        if f"basis_{side}" not in state:
            continue
        p, q = state[f"precond_{side}"], state[f"basis_{side}"]
        estimate = np.einsum("ij,ij->j", q, p @ q)
        order = np.argsort(-estimate, kind="stable")
        v[...] = np.take(v, order, axis=axis)
        power, diagonal = qr_positive(p @ q[:, order])
        noise = np.flatnonzero(diagonal <= len(p) * eps * diagonal.max())
        q[...] = complete(power[:, : noise[0]]) if noise.size else power


def step(w, g, state, x):
    if w.ndim < 2:
        oracle, inputs = _fallback(x)
        oracle.step(w, g, state, inputs)
        return
    g = without_l2(w, g, x)
    if w.size == 0:
        return
    rows, cols, _, _ = sides(w.shape, x)
    grad = g.reshape(rows, cols)
    b = x.shampoo_beta or x.beta2
    eps = np.finfo(x.dtype).eps
    t = x.k - 1
    if t > 0:
        m = state["exp_avg"].reshape(rows, cols)
        v = state["exp_avg_sq"].reshape(rows, cols)
        m[...] = x.beta1 * m + (1 - x.beta1) * grad
        v[...] = x.beta2 * v + (1 - x.beta2) * rotate(grad, state) ** 2
        preconditioned = rotate(m, state) / (np.sqrt(v) + x.epsilon)
        size = x.lr
        if x.bias_correction:
            size *= np.sqrt(1 - x.beta2**t) / (1 - x.beta1**t)
        w -= size * rotate(preconditioned, state, back=True).reshape(w.shape)
        w -= x.lr * x.weight_decay * w
    for side, outer in (("left", grad @ grad.T), ("right", grad.T @ grad)):
        if f"precond_{side}" in state:
            p = state[f"precond_{side}"]
            p[...] = b * p + (1 - b) * outer
            if t == 0:
                state[f"basis_{side}"][...] = eigenbasis(p, eps)
    if t > 0 and t % x.precondition_frequency == 0:
        refresh(state, state["exp_avg_sq"].reshape(rows, cols), eps)


# -- what the tests, the docs and the benchmarks read (see tests/reference/table.py) --

OPTIMIZERS = ("SOAP",)

CASES = [
    # the 3 x 5 matrix keeps its rows' rotation, its 5 columns stay unrotated. First: the
    # tests that take one case per optimizer run it on sides of 4100 too (the emulated GPU's
    # large arrays), where a rotated side would be an eigh of 4100 x 4100
    Case("SOAP", "one-side", {"max_precond_dim": 4, "precondition_frequency": 3}),
    Case("SOAP", "default"),
    # refreshes within the generic tests' 9 updates (t = 2, 4, 6, 8), one of them right
    # after the zero gradient
    Case("SOAP", "refresh-2", {"precondition_frequency": 2, "lr": 0.01}),
    Case(
        "SOAP",
        "no-bias-correction",
        {
            "bias_correction": False,
            "beta1": 0.9,
            "beta2": 0.99,
            "shampoo_beta": 0.8,
            "epsilon": 1e-6,
            "precondition_frequency": 2,
        },
    ),  # fmt: skip
    Case(
        "SOAP",
        "exp-maximize",
        {
            "maximize": True,
            "precondition_frequency": 4,
            "lr_scheduler": LearningRate.Exp(0.02, gamma=0.7, decay_on_iteration=True),
        },
    ),  # fmt: skip
]

# fmt: off
CONVERGENCE = [
    Setting("SOAP", "SOAP",
        {"lr": 1e-2, "weight_decay": 0.0, "fallback": AdamW(lr=1e-2, weight_decay=0.0)},
        4000, 1e-4,
        note="the 2-D Rosenbrock point is a vector: the fallback (AdamW) moves it; "
             "tests/test_soap.py trains matrices"),
]
# fmt: on

# Neither torch.optim nor optax has SOAP; tests/test_soap.py compares pytorch-optimizer's
# (which follows the reference code) on matrices, where the shared agreement tables hold
# 1-D weights (the fallback's).
TORCH: list = []

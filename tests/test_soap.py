"""SOAP beyond the generic tests: pytorch-optimizer's SOAP, float32 against float64 on
every kind of matrix, the unique bases, the first update, its own options, and training
a matrix (the fallback optimizer and its routing, shared with Muon, are in
tests/test_matrix_fallback.py).

pytorch-optimizer's ``SOAP`` follows the reference code (nikhilvyas/SOAP) step for step;
it is compared where the update does not depend on the null space of ``G G^T`` at the
first update: square matrices, and matrices whose long side is not rotated. For other
non-square matrices ``eigh`` picks that null space's basis from rounding errors (in
float32, LAPACK's), the update depends on it, and the two runs part at once by a sizeable
fraction of each step; mxopt fixes that basis (see :func:`mxopt.optimizers.soap.eigenbasis`),
which the float32/float64 comparison below shows. The dependency is not a pytorch-optimizer
requirement: the test skips without it.
"""

from __future__ import annotations

import numpy as np
import pytest

import mxopt
from mxopt.optimizers.soap import eigenbasis
from tests.reference import soap as oracle
from tests.test_matrix_fallback import assert_refused

STEPS = 50


def _run(shape, options, dtype, steps=STEPS, seed=0):
    """The weights after each of ``steps`` updates of one weight (batch_size=1), a zero
    gradient at the seventh."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=shape).astype(dtype)
    grads = [rng.normal(size=shape).astype(dtype) for _ in range(steps)]
    grads[6][...] = 0
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.SOAP(**options, state=state))
    path = []
    for grad in grads:
        state.begin_batch()
        updater("w", grad, weight)
        path.append(weight.astype(np.float64))
    return path, updater


# -- pytorch-optimizer ------------------------------------------------------------------------

#: (label, shape, pytorch_optimizer.SOAP options, mxopt.SOAP options)
PEER_SETTINGS = [
    ("default", (32, 32), {}, {}),
    ("refresh-3", (16, 16), {"precondition_frequency": 3, "lr": 0.01},
     {"precondition_frequency": 3, "lr": 0.01}),
    ("no-bias-correction", (24, 24),
     {"correct_bias": False, "betas": (0.9, 0.99), "shampoo_beta": 0.8, "weight_decay": 0.1},
     {"bias_correction": False, "beta1": 0.9, "beta2": 0.99, "shampoo_beta": 0.8,
      "weight_decay": 0.1}),
    ("rows-only", (16, 64), {"max_precondition_dim": 32}, {"max_precond_dim": 32}),
    ("columns-only", (64, 16), {"max_precondition_dim": 32, "eps": 1e-6},
     {"max_precond_dim": 32, "epsilon": 1e-6}),
    ("conv-maximize", (8, 2, 2, 2), {"maximize": True, "precondition_frequency": 4},
     {"maximize": True, "precondition_frequency": 4}),
]  # fmt: skip
#: max |w_mxopt - w_peer| over 50 float32 steps (observed: at most 8.4e-7, a few ulps of
#: weights of size ~1; both run eigh and QR in float32)
PEER_TOLERANCE = 2e-6


@pytest.mark.parametrize("setting", PEER_SETTINGS, ids=[s[0] for s in PEER_SETTINGS])
def test_matches_pytorch_optimizer(setting):
    torch = pytest.importorskip("torch")
    peer = pytest.importorskip("pytorch_optimizer")
    _, shape, peer_options, options = setting
    matrix = (shape[0], int(np.prod(shape[1:])))
    rng = np.random.default_rng(0)
    start = rng.normal(size=shape).astype(np.float32)
    grads = [rng.normal(size=shape).astype(np.float32) for _ in range(STEPS)]
    grads[6][...] = 0
    param = torch.nn.Parameter(torch.tensor(start.reshape(matrix)))
    reference = peer.SOAP([param], **peer_options)
    path, _ = _run(shape, options, np.float32)
    worst = 0.0
    for grad, ours in zip(grads, path, strict=True):
        param.grad = torch.tensor(grad.reshape(matrix))  # a copy: maximize negates it in place
        reference.step()
        theirs = param.detach().numpy().reshape(shape)
        worst = max(worst, float(np.abs(theirs - ours).max()))
    assert worst <= PEER_TOLERANCE, worst


def test_defaults_are_the_references():
    peer = pytest.importorskip("pytorch_optimizer")
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(peer.SOAP).parameters.items()}
    optimizer = mxopt.SOAP()
    assert optimizer.lr == defaults["lr"]
    assert (optimizer.beta1, optimizer.beta2) == defaults["betas"]
    assert optimizer.epsilon == defaults["eps"]
    assert optimizer.weight_decay == defaults["weight_decay"]
    assert optimizer.precondition_frequency == defaults["precondition_frequency"]
    assert optimizer.max_precond_dim == defaults["max_precondition_dim"]
    assert optimizer.bias_correction is defaults["correct_bias"]
    assert defaults["shampoo_beta"] is None and optimizer.shampoo_beta == 0.0  # beta2 both


# -- precision and the bases --------------------------------------------------------------------

#: max |w_float32 - w_float64| / (lr * steps) over 50 steps
PRECISION_SHAPES = {"wide": (16, 64), "tall": (64, 16), "conv": (8, 2, 3, 3), "row": (1, 12),
                    "square": (32, 32)}  # fmt: skip


@pytest.mark.parametrize("shape", PRECISION_SHAPES.values(), ids=PRECISION_SHAPES.keys())
def test_float32_follows_float64_on_non_square_matrices(shape):
    """The null space of G G^T gets the same basis in both precisions (from LAPACK's
    eigh it would be rounding noise, and the runs would part by ~10% of the path)."""
    options = {"precondition_frequency": 5}
    path32, _ = _run(shape, options, np.float32)
    path64, _ = _run(shape, options, np.float64)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(path32, path64, strict=True))
    assert worst <= 1e-4 * mxopt.SOAP().lr * STEPS, worst


def test_float64_matches_the_oracle_on_every_kind_of_matrix():
    for shape in PRECISION_SHAPES.values():
        for options in ({}, {"precondition_frequency": 2, "max_precond_dim": 12}):
            optimizer = mxopt.SOAP(**options)
            path, updater = _run(shape, options, np.float64, steps=12)
            rng = np.random.default_rng(0)
            weight = rng.normal(size=shape)
            grads = [rng.normal(size=shape) for _ in range(12)]
            grads[6][...] = 0
            x = _inputs(optimizer, np.float64)
            state = oracle.init(shape, x)
            for k, (grad, ours) in enumerate(zip(grads, path, strict=True), start=1):
                x.k = k
                oracle.step(weight, grad, state, x)
                np.testing.assert_allclose(ours, weight, rtol=1e-12, atol=1e-14)
            for name, expected in state.items():
                np.testing.assert_allclose(updater.states["w"].arrays[name], expected,
                                           rtol=1e-10, atol=1e-13, err_msg=name)  # fmt: skip


def _inputs(optimizer, dtype):
    import types

    x = {a: getattr(optimizer, a) for a in optimizer._option_names}
    return types.SimpleNamespace(**x, batch_size=1, dtype=dtype, k=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eigenbasis_is_orthogonal_sorted_signed_and_fixed_on_the_null_space(dtype):
    rng = np.random.default_rng(3)
    g = rng.normal(size=(3, 7))
    matrix = (g.T @ g).astype(dtype)  # rank 3 of 7
    out = np.empty_like(matrix)
    eigenbasis(matrix, out, np)
    assert out.dtype == dtype
    tolerance = 50 * np.finfo(dtype).eps
    np.testing.assert_allclose(out.T @ out, np.eye(7), atol=tolerance)
    values = np.diag(out.T @ matrix.astype(np.float64) @ out)
    assert np.all(np.diff(values[:3]) <= 0) and np.all(values[:3] > 1)
    np.testing.assert_allclose(values[3:], 0, atol=tolerance * values[0])
    largest = out[np.abs(out).argmax(axis=0), np.arange(7)]
    assert np.all(largest[:3] > 0)
    # the null-space columns do not depend on the precision (nor on a rotation of g's rows)
    expected = np.empty((7, 7))
    rotated = np.linalg.qr(rng.normal(size=(3, 3)))[0] @ g  # the same G^T G
    eigenbasis(rotated.T @ rotated, expected, np)
    np.testing.assert_allclose(out, expected, atol=1e3 * np.finfo(dtype).eps)


def test_eigenbasis_of_zero_is_the_identity_reversed():
    """A zero first gradient: eigh of 1e-30 I, by descending (equal) eigenvalues, as the
    reference's flip of eigh's columns."""
    out = np.empty((4, 4), np.float32)
    eigenbasis(np.zeros((4, 4), np.float32), out, np)
    np.testing.assert_array_equal(out, np.eye(4)[:, ::-1])


# -- the first update, skips, edge shapes --------------------------------------------------------


def test_the_first_update_only_sets_up_the_preconditioner():
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.SOAP(state=state))
    weight = np.ones((4, 3), np.float32)
    grad = np.arange(12, dtype=np.float32).reshape(4, 3)
    state.begin_batch()
    updater("w", grad, weight)
    arrays = updater.states["w"].arrays
    np.testing.assert_array_equal(weight, 1)  # no step, no decay
    assert not arrays["exp_avg"].any() and not arrays["exp_avg_sq"].any()
    np.testing.assert_allclose(arrays["precond_left"], 0.05 * grad @ grad.T, rtol=1e-6)
    np.testing.assert_allclose(arrays["basis_right"].T @ arrays["basis_right"], np.eye(3),
                               atol=1e-6)  # fmt: skip
    state.begin_batch()
    updater("w", grad, weight)
    assert (weight != 1).all() and updater.states["w"].step == 2


def test_a_non_finite_first_gradient_changes_nothing_and_the_next_one_sets_up():
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.SOAP(state=state))
    weight = np.ones((3, 4), np.float32)
    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.nan
    state.begin_batch()
    with pytest.raises(FloatingPointError):
        updater("w", bad, weight)
    np.testing.assert_array_equal(weight, 1)
    state.begin_batch()
    updater("w", np.ones((3, 4), np.float32), weight)
    np.testing.assert_array_equal(weight, 1)
    assert updater.states["w"].arrays["precond_left"].any()


@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (1, 1), (1, 30), (30, 1)])
def test_edge_shapes(shape):
    path, updater = _run(shape, {"precondition_frequency": 2}, np.float32, steps=8)
    assert all(np.isfinite(w).all() for w in path)
    assert updater.states["w"].step == 8


def test_max_precond_dim_leaves_long_sides_unrotated():
    optimizer = mxopt.SOAP(max_precond_dim=10)
    weight = np.zeros((8, 30), np.float32)
    arrays = mxopt.create_state(optimizer, 0, weight).arrays
    assert {k: v.shape for k, v in arrays.items()} == {
        "exp_avg": (8, 30), "exp_avg_sq": (8, 30), "precond_left": (8, 8), "basis_left": (8, 8),
    }  # fmt: skip
    arrays = mxopt.create_state(mxopt.SOAP(max_precond_dim=0), 0, weight).arrays
    assert set(arrays) == {"exp_avg", "exp_avg_sq"}


def test_neither_side_rotated_is_adam_after_the_first_update():
    """With both sides unrotated, update k >= 2 is AdamW's update k - 1 with SOAP's decay
    after the step."""
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(5, 4)) for _ in range(6)]
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.SOAP(max_precond_dim=0, state=state))
    weight = np.zeros((5, 4))
    m, v = np.zeros((5, 4)), np.zeros((5, 4))
    expected = weight.copy()
    for t, grad in enumerate(grads):
        state.begin_batch()
        updater("w", grad, weight)
        if t:
            m = 0.95 * m + 0.05 * grad
            v = 0.95 * v + 0.05 * grad**2
            expected -= 3e-3 * np.sqrt(1 - 0.95**t) / (1 - 0.95**t) * m / (np.sqrt(v) + 1e-8)
            expected *= 1 - 3e-3 * 0.01
        np.testing.assert_allclose(weight, expected, rtol=1e-12, atol=1e-15)


# -- bad options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"shampoo_beta": 1.0}, ValueError, r"SOAP: shampoo_beta must be a finite number"),
        ({"precondition_frequency": 0}, ValueError, r"precondition_frequency must be an integer"),
        ({"precondition_frequency": 2.5}, TypeError, r"precondition_frequency must be an integer"),
        ({"max_precond_dim": -1}, ValueError, r"max_precond_dim must be an integer >= 0"),
        ({"bias_correction": 1}, TypeError, r"bias_correction must be True or False"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(options, error, match):
    assert_refused(mxopt.SOAP, options, error, match)


# -- training -----------------------------------------------------------------------------------


def test_a_kronecker_quadratic_is_solved_where_adamw_is_not():
    """0.5 |A (W - T) B|^2 with both factors ill-conditioned (scales 1 to 30): SOAP's
    rotation is the curvature's eigenbasis (the example of docs/optimizers/recent.md)."""
    rng = np.random.default_rng(0)

    def rotation(n):
        return np.linalg.qr(rng.normal(size=(n, n)))[0]

    a = rotation(12) @ np.diag(np.logspace(0, 1.5, 12)) @ rotation(12)
    b = rotation(8) @ np.diag(np.logspace(0, 1.5, 8)) @ rotation(8)
    target = rng.normal(size=(12, 8))
    errors = {}
    for name, optimizer in {"SOAP": mxopt.SOAP(lr=0.03, weight_decay=0.0),
                            "AdamW": mxopt.AdamW(lr=0.03, weight_decay=0.0)}.items():  # fmt: skip
        optimizer.state = state = mxopt.OptimizationState(batch_size=1)
        updater = mxopt.get_updater(optimizer)
        w = np.zeros((12, 8), np.float32)
        for _ in range(400):
            state.begin_batch()
            updater("w", (a.T @ a @ (w - target) @ b @ b.T).astype(np.float32), w)
        errors[name] = float(np.abs(w - target).max())
    assert errors["SOAP"] < 0.05 and errors["AdamW"] > 1.0, errors

"""mxopt.minimize and LBFGS: against torch.optim.LBFGS, against known solutions, and the
checks of their inputs.

The torch runs record every point at which the closure is evaluated; mxopt's every
point at which ``fun`` is called. The two sequences must have the same length, and
the points and losses must agree (:data:`TOLERANCE`): the same iterations, the same
line-search trials, the same decisions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mxopt
from tests import fake_cupy

# -- the problems, in NumPy (mxopt) and torch ----------------------------------------------------

RNG = np.random.default_rng(0)
A = RNG.normal(size=(40, 10))
B = A @ RNG.normal(size=10) + 0.1 * RNG.normal(size=40)
FEATURES = RNG.normal(size=(200, 5))
LABELS = np.where(FEATURES @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + RNG.normal(size=200) > 0, 1, -1)
L2 = 1e-2


def rosenbrock_np(x):
    r = x[1:] - x[:-1] ** 2
    f = np.sum(100 * r**2 + (1 - x[:-1]) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * r - 2 * (1 - x[:-1])
    g[1:] += 200 * r
    return f, g


def rosenbrock_torch(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def least_squares_np(x):
    a, b = A.astype(x.dtype), B.astype(x.dtype)
    r = a @ x - b
    return 0.5 * (r @ r), a.T @ r


def least_squares_torch(x):
    import torch

    r = torch.as_tensor(A, dtype=x.dtype) @ x - torch.as_tensor(B, dtype=x.dtype)
    return 0.5 * (r @ r)


def logistic_np(w):
    x, y = FEATURES.astype(w.dtype), LABELS.astype(w.dtype)
    z = y * (x @ w)
    f = np.mean(np.logaddexp(0, -z)) + 0.5 * L2 * (w @ w)
    g = x.T @ (-y / (1 + np.exp(z))) / len(y) + L2 * w
    return f, g


def logistic_torch(w):
    import torch

    x = torch.as_tensor(FEATURES, dtype=w.dtype)
    y = torch.as_tensor(LABELS, dtype=w.dtype)
    z = y * (x @ w)
    return torch.nn.functional.softplus(-z).mean() + 0.5 * L2 * (w @ w)


PROBLEMS = {
    "rosenbrock10": (rosenbrock_np, rosenbrock_torch, np.tile([-1.2, 1.0], 5)),
    "least-squares": (least_squares_np, least_squares_torch, np.zeros(10)),
    "logistic": (logistic_np, logistic_torch, np.zeros(5)),
}

#: float64: max |difference| allowed between mxopt's and torch's evaluation points,
#: relative to max(1, max |x|). Both get the same loss and gradient (the closure hands
#: torch mxopt's NumPy ``fun``), so only rounding differs (the order of summation of
#: the dot products): 1e-15 at first, amplified by Rosenbrock's curved valley to about
#: 3e-6 after 60-100 iterations (it grows steadily, point after point); the final points
#: agree to 3e-8.
TOLERANCE = {"rosenbrock10": 1e-5, "least-squares": 1e-13, "logistic": 1e-13}
#: float32: torch sums its dot products and keeps its line-search slopes in float32,
#: mxopt sums in float64, so the paths part near convergence (where float32 noise
#: decides when to stop); the first 10 evaluation points agree to 1.3e-6, and the
#: final losses to 2e-6 relative (Rosenbrock without a line search excepted: a
#: chaotic path that neither run finishes in 100 iterations).
FLOAT32_POINTS, FLOAT32_LOSS = 3e-6, 1e-5


def record(fun):
    points = []

    def recorded(x):
        loss, grad = fun(x)
        points.append((np.array(x, dtype=np.float64), float(loss)))
        return loss, grad

    return recorded, points


def torch_run(problem, x0, dtype, steps=1, **options):
    """torch.optim.LBFGS on ``problem``, its closure handing torch the NumPy loss and
    gradient of mxopt's ``fun`` (so that only the optimizers' arithmetic differs)."""
    torch = pytest.importorskip("torch")
    fun = PROBLEMS[problem][0]
    x = torch.tensor(x0.astype(dtype), requires_grad=True)
    optimizer = torch.optim.LBFGS([x], **options)
    points = []

    def closure():
        value = x.detach().numpy().copy()
        loss, grad = fun(value)
        x.grad = torch.from_numpy(np.asarray(grad, dtype=dtype))
        points.append((value.astype(np.float64), float(loss)))
        return torch.tensor(float(loss), dtype=x.dtype)

    for _ in range(steps):
        optimizer.step(closure)
    return x.detach().numpy(), points, optimizer.state[x]


def mxopt_run(problem, x0, dtype, steps=1, **options):
    fun, points = record(PROBLEMS[problem][0])
    torch_names = {"line_search_fn": "line_search"}
    options = {torch_names.get(k, k): v for k, v in options.items()}
    result = mxopt.minimize(fun, x0.astype(dtype), mxopt.LBFGS(**options), max_steps=steps)
    return result, points


def _difference(points_a, points_b) -> tuple[float, float]:
    dx = max(np.max(np.abs(a[0] - b[0])) for a, b in zip(points_a, points_b, strict=True))
    df = max(abs(a[1] - b[1]) / max(1.0, abs(b[1])) for a, b in zip(points_a, points_b,
                                                                     strict=True))  # fmt: skip
    return float(dx), float(df)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("line_search", [None, "strong_wolfe"], ids=["fixed", "wolfe"])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_minimize_matches_torch_lbfgs(problem, line_search, dtype):
    fun, _, x0 = PROBLEMS[problem]
    options = {"max_iter": 100, "line_search_fn": line_search}
    if problem == "rosenbrock10" and line_search is None:
        options["lr"] = 0.5  # unit steps overshoot in the valley
    x_torch, torch_points, state = torch_run(problem, x0, dtype, **options)
    result, points = mxopt_run(problem, x0, dtype, **options)
    scale = max(1.0, float(np.max(np.abs(x_torch))))
    assert result.x.dtype == dtype
    if dtype == np.float32:
        first = min(10, len(points), len(torch_points))
        dx, _ = _difference(points[:first], torch_points[:first])
        assert dx <= FLOAT32_POINTS * scale, dx
        if problem != "rosenbrock10" or line_search:
            torch_loss = float(fun(x_torch)[0])
            assert abs(result.fun - torch_loss) <= FLOAT32_LOSS * max(1.0, abs(torch_loss))
        return
    # every evaluation, in the same order (mxopt evaluates the result when the last
    # iteration of a step without line search has not been)
    extra = len(points) - len(torch_points)
    assert extra == 0 or (extra == 1 and line_search is None and result.nit == 100)
    dx, df = _difference(points[: len(torch_points)], torch_points)
    assert dx <= TOLERANCE[problem] * scale and df <= TOLERANCE[problem], (dx, df)
    np.testing.assert_allclose(result.x, x_torch, rtol=0, atol=1e-7 * scale)
    # torch counts the iteration that stops on the slope (no step) among its n_iter
    assert result.nit == state["n_iter"] - ("slope" in result.message)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"], ids=["fixed", "wolfe"])
def test_several_steps_match_several_torch_steps(line_search):
    """max_steps steps of max_iter iterations: torch's loop of step(closure) calls (the
    history and the first-iteration step length carry over from step to step)."""
    x0 = PROBLEMS["rosenbrock10"][2]
    options = {"max_iter": 6, "history_size": 4, "lr": 0.2, "line_search_fn": line_search}
    x_torch, torch_points, state = torch_run("rosenbrock10", x0, np.float64, steps=5, **options)
    result, points = mxopt_run("rosenbrock10", x0, np.float64, steps=5, **options)
    # torch evaluates at the start of every step; mxopt reuses a value it has
    unique = [p for k, p in enumerate(torch_points) if k == 0 or not np.array_equal(
        p[0], torch_points[k - 1][0])]  # fmt: skip
    assert len(points) == len(unique) + (line_search is None)  # + the result's evaluation
    dx, df = _difference(points[: len(unique)], unique)
    assert dx <= 1e-13 and df <= 1e-13
    np.testing.assert_allclose(result.x, x_torch, rtol=0, atol=1e-13)
    assert result.nit == state["n_iter"] >= 25
    assert not result.success and "budget" in result.message


def test_updater_form_matches_torch_max_iter_1():
    """Each update is torch's step(closure) with max_iter=1, the closure handing torch the
    same gradient (float32, 50 updates of a 10-D Rosenbrock, batch_size=1)."""
    torch = pytest.importorskip("torch")
    x0 = PROBLEMS["rosenbrock10"][2].astype(np.float32)
    weight = x0.copy()
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.LBFGS(lr=0.2, history_size=5, state=state))
    x = torch.tensor(x0, requires_grad=True)
    reference = torch.optim.LBFGS([x], lr=0.2, max_iter=1, history_size=5)
    worst = 0.0
    state.begin_epoch()
    for _ in range(50):
        grad = rosenbrock_np(weight)[1]

        def closure(grad=grad):
            x.grad = torch.from_numpy(grad.copy())
            return torch.tensor(0.0)

        reference.step(closure)
        state.begin_batch()
        updater("w", grad, weight)
        worst = max(worst, float(np.max(np.abs(weight - x.detach().numpy()))))
    assert worst <= 2e-5, worst
    assert rosenbrock_np(weight)[0] < rosenbrock_np(x0)[0] / 10


# -- against known solutions ----------------------------------------------------------------------


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_rosenbrock_minimum(line_search):
    # from (-1.2, 1, ...) fixed steps end in the local minimum near (-1, 1, ..., 1)
    x0 = np.tile([-1.2, 1.0], 5) if line_search else np.zeros(10)
    result = mxopt.minimize(
        rosenbrock_np, x0,
        mxopt.LBFGS(max_iter=500, lr=1.0 if line_search else 0.5, line_search=line_search),
    )  # fmt: skip
    assert result.success, result.message
    np.testing.assert_allclose(result.x, np.ones(10), atol=1e-4)
    assert result.fun < 1e-8


def test_least_squares_solution():
    expected = np.linalg.lstsq(A, B, rcond=None)[0]
    # torch's default tolerance_change (1e-9 on g.d) stops with |x - x*| near 1e-6 here
    lbfgs = mxopt.LBFGS(line_search="strong_wolfe", tolerance_change=1e-14, tolerance_grad=1e-10)
    result = mxopt.minimize(least_squares_np, np.zeros(10), lbfgs)
    assert result.success, result.message
    np.testing.assert_allclose(result.x, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(result.jac, least_squares_np(result.x)[1])
    assert result.fun == pytest.approx(least_squares_np(expected)[0], rel=1e-10)


def test_other_optimizers_take_one_update_per_step():
    expected = np.linalg.lstsq(A, B, rcond=None)[0]
    result = mxopt.minimize(least_squares_np, np.zeros(10), mxopt.ADAM(lr=0.05, weight_decay=0.0),
                            max_steps=5000, tol=1e-6)  # fmt: skip
    assert result.success and "tol" in result.message
    assert np.max(np.abs(result.jac)) <= 1e-6
    np.testing.assert_allclose(result.x, expected, atol=1e-4)
    assert result.nfev == result.nit + 1 and len(result.history) == result.nit + 1
    budget = mxopt.minimize(least_squares_np, np.zeros(10), mxopt.SGD(lr=1e-3), max_steps=7)
    assert (budget.nit, budget.nfev, budget.success, budget.status) == (7, 8, False, 1)
    assert np.all(np.diff(budget.history) < 0)


# -- the result, the callback, x0 -----------------------------------------------------------------


def test_result_fields_and_history():
    fun, points = record(rosenbrock_np)
    result = mxopt.minimize(fun, np.tile([-1.2, 1.0], 5), mxopt.LBFGS(line_search="strong_wolfe"))
    assert result.keys() == ["x", "fun", "jac", "nit", "nfev", "success", "message", "history",
                             "status"]  # fmt: skip
    assert result["nit"] == result.nit == 20 and len(result.history) == 21
    assert result.nfev == len(points)
    assert result.history[0] == rosenbrock_np(np.tile([-1.2, 1.0], 5))[0]
    assert result.history[-1] == result.fun == rosenbrock_np(result.x)[0]
    assert not result.success and result.status == 1 and "budget" in result.message
    with pytest.raises(KeyError):
        result["nope"]


def test_x0_is_not_modified_and_types_are_kept():
    x0 = np.tile([-1.2, 1.0], 5).astype(np.float32)
    before = x0.copy()
    result = mxopt.minimize(rosenbrock_np, x0, mxopt.LBFGS(lr=0.5))
    np.testing.assert_array_equal(x0, before)
    assert result.x.dtype == np.float32 and result.x.shape == x0.shape
    assert result.x is not x0
    from_list = mxopt.minimize(lambda x: (float(x @ x), 2 * x), [3, 4])  # ints: float64
    assert from_list.x.dtype == np.float64 and from_list.success
    np.testing.assert_allclose(from_list.x, 0, atol=1e-7)


def test_matrix_shaped_x():
    target = np.arange(6.0).reshape(2, 3)
    result = mxopt.minimize(lambda x: (float(np.sum((x - target) ** 2)), 2 * (x - target)),
                            np.zeros((2, 3)))  # fmt: skip
    assert result.x.shape == (2, 3) and result.jac.shape == (2, 3)
    np.testing.assert_allclose(result.x, target, atol=1e-7)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_callback_after_every_iteration_and_stop_iteration(line_search):
    seen = []

    def callback(intermediate):
        seen.append((intermediate.nit, intermediate.fun, intermediate.x.copy()))

    result = mxopt.minimize(rosenbrock_np, np.tile([-1.2, 1.0], 5),
                            mxopt.LBFGS(max_iter=15, lr=0.5, line_search=line_search),
                            callback=callback)  # fmt: skip
    assert [s[0] for s in seen] == list(range(1, result.nit + 1))
    assert [s[1] for s in seen] == list(result.history[1:])
    np.testing.assert_array_equal(seen[-1][2], result.x)

    def stop(intermediate):
        if intermediate.nit == 3:
            raise StopIteration

    stopped = mxopt.minimize(rosenbrock_np, np.tile([-1.2, 1.0], 5), callback=stop)
    assert (stopped.nit, stopped.success, stopped.status) == (3, False, 3)
    assert "StopIteration" in stopped.message
    adam = mxopt.minimize(rosenbrock_np, np.zeros(3), mxopt.ADAM(lr=0.01), callback=stop)
    assert adam.nit == 3 and adam.status == 3


def test_progress_bar(capsys):
    mxopt.minimize(rosenbrock_np, np.zeros(4), mxopt.LBFGS(max_iter=5), progress=True)
    assert "5/5" in capsys.readouterr().err


def test_tolerances_stop_successfully():
    converged = mxopt.minimize(lambda x: (float(x @ x), 2 * x), np.ones(3), tol=1e-3)
    assert converged.success and np.max(np.abs(converged.jac)) <= 1e-3
    at_minimum = mxopt.minimize(lambda x: (float(x @ x), 2 * x), np.zeros(3))
    assert at_minimum.success and at_minimum.nit == 0 and at_minimum.nfev == 1


# -- errors ------------------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors():
    fun = rosenbrock_np
    x0 = np.zeros(3)
    with pytest.raises(TypeError, match="fun must be callable"):
        mxopt.minimize(3, x0)
    with pytest.raises(TypeError, match="optimizer must be an mxopt optimizer"):
        mxopt.minimize(fun, x0, "lbfgs")
    with pytest.raises(ValueError, match="max_steps must be None or an integer >= 1, got 0"):
        mxopt.minimize(fun, x0, max_steps=0)
    with pytest.raises(ValueError, match="tol must be None or a finite number >= 0"):
        mxopt.minimize(fun, x0, tol=-1.0)
    with pytest.raises(TypeError, match="callback must be None or callable"):
        mxopt.minimize(fun, x0, callback=1)
    with pytest.raises(ValueError, match="x0 holds NaN"):
        mxopt.minimize(fun, np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="x0 has no elements"):
        mxopt.minimize(fun, np.zeros(0))
    with pytest.raises(TypeError, match="float32 or float64"):
        mxopt.minimize(fun, np.zeros(3, np.float16))
    with pytest.raises(ValueError, match="LBFGS's weight_decay=0.1 would change the objective"):
        mxopt.minimize(fun, x0, mxopt.LBFGS(weight_decay=0.1))
    with pytest.raises(ValueError, match="LBFGS's lr is a schedule"):
        mxopt.minimize(fun, x0, mxopt.LBFGS(lr=mxopt.LearningRate.Fixed(0.5)))
    with pytest.raises(
        ValueError, match="line_search must be None or 'strong_wolfe', got 'armijo'"
    ):
        mxopt.LBFGS(line_search="armijo")
    with pytest.raises(ValueError, match="max_eval must be an integer >= 1, got 0"):
        mxopt.LBFGS(max_eval=0)
    with pytest.raises(ValueError, match="history_size must be an integer >= 1"):
        mxopt.LBFGS(history_size=0)


def test_bad_returns_of_fun_are_clear_errors():
    x0 = np.zeros(3)
    with pytest.raises(TypeError, match=r"fun must return a tuple \(loss, grad\)"):
        mxopt.minimize(lambda x: 1.0, x0)
    with pytest.raises(ValueError, match=r"gradient of shape \(2,\).*x of shape \(3,\)"):
        mxopt.minimize(lambda x: (1.0, np.zeros(2)), x0)
    with pytest.raises(TypeError, match="loss must be a number"):
        mxopt.minimize(lambda x: (np.zeros(3), np.zeros(3)), x0)
    with pytest.raises(ValueError, match="at x0, fun returned a non-finite"):
        mxopt.minimize(lambda x: (math.nan, np.zeros(3)), x0)


@pytest.mark.parametrize(
    "optimizer",
    [mxopt.LBFGS(), mxopt.LBFGS(line_search="strong_wolfe"), mxopt.SGD(lr=0.1)],
    ids=["fixed", "wolfe", "sgd"],
)
def test_a_non_finite_value_later_ends_the_run_at_the_last_finite_point(optimizer):
    def fun(x):  # finite only for x > 0.5: every optimizer steps out of it from x = 1
        if x[0] < 0.5:
            return math.inf, np.full(1, math.nan)
        return float(x[0] ** 2), 2 * x

    result = mxopt.minimize(fun, np.ones(1), optimizer)
    assert (result.success, result.status) == (False, 2) and "non-finite" in result.message
    assert result.x[0] >= 0.5 and result.fun == result.x[0] ** 2
    assert np.isfinite(result.history).all()


def test_line_search_in_an_update_is_a_clear_error_and_writes_nothing():
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.LBFGS(line_search="strong_wolfe", state=state))
    weight = np.ones(3)
    state.begin_epoch()
    state.begin_batch()
    with pytest.raises(ValueError, match=r"LBFGS: line_search='strong_wolfe'.*mxopt\.minimize"):
        updater(0, np.ones(3), weight)
    np.testing.assert_array_equal(weight, 1.0)


# -- CuPy arrays (the CPU emulation of tests/fake_cupy) -------------------------------------------


def test_cupy_arrays(monkeypatch):
    cupy = fake_cupy.install(monkeypatch)
    a, b = cupy.asarray(A), cupy.asarray(B)

    def fun(x):
        r = a.dot(x) - b
        return float(0.5 * r.dot(r)), a.T.dot(r) if hasattr(a, "T") else None

    def host_fun(x):
        r = A @ x - B
        return 0.5 * (r @ r), A.T @ r

    if not hasattr(a, "T"):  # the emulation has no transpose: hand it A.T
        at = cupy.asarray(np.ascontiguousarray(A.T))

        def fun(x):  # noqa: F811
            r = a.dot(x) - b
            return float(0.5 * r.dot(r)), at.dot(r)

    x0 = cupy.zeros(10)
    for optimizer in (mxopt.LBFGS(line_search="strong_wolfe"), mxopt.LBFGS()):
        result = mxopt.minimize(fun, x0, optimizer)
        expected = mxopt.minimize(host_fun, np.zeros(10), optimizer)
        assert isinstance(result.x, fake_cupy.ndarray) and isinstance(result.jac, fake_cupy.ndarray)
        np.testing.assert_allclose(result.x.get(), expected.x, rtol=0, atol=1e-12)
        assert result.nit == expected.nit and result.nfev == expected.nfev
    np.testing.assert_array_equal(x0.get(), 0.0)

"""L-BFGS: limited-memory BFGS (Liu & Nocedal 1989; Nocedal & Wright, "Numerical
Optimization", 2nd ed., 2006, Algorithms 7.4 and 7.5), in torch.optim.LBFGS's form.

A quasi-Newton method: the direction is :math:`d = -H g`, where :math:`H`
approximates the inverse Hessian from the last :math:`m` curvature pairs
:math:`s_i = x_{i+1} - x_i`, :math:`y_i = g_{i+1} - g_i`, applied by the two-loop
recursion (Algorithm 7.4) without ever forming a matrix:

.. math::

    q &= g; \\quad \\text{for } i = k-1, \\dots, k-m: \\;
        \\alpha_i = \\rho_i s_i^\\top q, \\; q \\leftarrow q - \\alpha_i y_i \\\\
    r &= \\gamma_k q, \\quad \\gamma_k = \\frac{s_{k-1}^\\top y_{k-1}}{y_{k-1}^\\top y_{k-1}};
        \\quad \\text{for } i = k-m, \\dots, k-1: \\;
        \\beta_i = \\rho_i y_i^\\top r, \\; r \\leftarrow r + (\\alpha_i - \\beta_i) s_i \\\\
    d &= -r, \\qquad \\rho_i = 1 / (y_i^\\top s_i)

This module has the optimizer (one iteration per update, from the gradient it is
given) and the pieces :func:`mxopt.minimize` runs the full method with (several
iterations per step, function evaluations, the strong-Wolfe line search).
"""

from __future__ import annotations

import sys

import attrs
import numpy as np

from mxopt.core.checks import check_integer, shown
from mxopt.core.fields import hyperparameter, integer
from mxopt.kernels import backends
from mxopt.kernels.kernel import Kernel, normalize_gradient_element
from mxopt.kernels.statistics import dot
from mxopt.optimizers.base import About, AbstractOptimizer, register
from mxopt.optimizers.options import AbstractOptimizerOptions, options

__all__ = [
    "CURVATURE_EPSILON",
    "LBFGS",
    "LINE_SEARCHES",
    "LBFGSOptions",
    "add_pair",
    "array_module",
    "dot",
    "new_history",
    "two_loop",
]

#: A curvature pair is kept only when ``y.s`` is above this (torch.optim.LBFGS's 1e-10):
#: the pairs must keep ``H`` positive definite.
CURVATURE_EPSILON = 1e-10

#: The values of ``line_search``.
LINE_SEARCHES = (None, "strong_wolfe")

# ``info`` holds four small numbers, exact in any float dtype (see LBFGS's docstring).
STARTED, PAIRS, POSITION, H_DIAG = range(4)
#: The state arrays of ``(m, n)`` values (``m`` pairs of ``n`` elements).
HISTORY = ("s_history", "y_history")


def lbfgs_gradient_element(i, w, g, out, rescale, clip, wd):
    gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd)
    out[i] = gi
    return abs(np.float64(gi)), np.float64(0)


#: The normalized gradient into ``out`` (weight and gradient read once) and its L1 norm.
LBFGS_GRADIENT_KERNEL = Kernel(
    name="lbfgs_gradient",
    state=("out",),
    cpu=lbfgs_gradient_element,
    reduces=True,
    cuda="""
    const T gi = normalize_gradient_element(g[i], w[i], rescale, clip, wd);
    out[i] = gi;
    return mx_pair{fabs((double)gi), 0.0};
""",
)


# -- the method's pieces, shared with mxopt.minimize --------------------------------------


def array_module(array):
    """NumPy, or CuPy for a CuPy array (imported only then)."""
    if backends.backend_of(array) == backends.CUPY:
        return sys.modules.get("cupy") or __import__("cupy")
    return np


def new_history(xp, n: int, history_size: int, dtype) -> dict:
    """Fresh L-BFGS state for ``n`` unknowns (the arrays an :class:`LBFGS` weight keeps)."""
    return {
        "s_history": xp.zeros((history_size, n), dtype=dtype),
        "y_history": xp.zeros((history_size, n), dtype=dtype),
        "rho": xp.zeros(history_size, dtype=dtype),
        "prev_grad": xp.zeros(n, dtype=dtype),
        "last_step": xp.zeros(n, dtype=dtype),
        "info": xp.zeros(4, dtype=dtype),
    }


def add_pair(state: dict, s, y, info: np.ndarray) -> None:
    """Keep the pair ``(s, y)`` when ``y.s > CURVATURE_EPSILON``: it takes the ring's next
    slot (the oldest pair's once full), and ``info`` (host copy) gets the new count,
    position and :math:`\\gamma = y^\\top s / y^\\top y`."""
    ys = dot(y, s)
    if not ys > CURVATURE_EPSILON:
        return
    m = state["s_history"].shape[0]
    pos = int(info[POSITION])
    state["s_history"][pos] = s
    state["y_history"][pos] = y
    state["rho"][pos] = 1.0 / ys
    info[POSITION] = (pos + 1) % m
    info[PAIRS] = min(int(info[PAIRS]) + 1, m)
    info[H_DIAG] = ys / dot(y, y)


def two_loop(g, state: dict, info: np.ndarray):
    """``d = -H g`` by the two-loop recursion over the stored pairs (a new array)."""
    s_history, y_history = state["s_history"], state["y_history"]
    m = s_history.shape[0]
    pairs, pos = int(info[PAIRS]), int(info[POSITION])
    # the rounded 1/(y.s) as stored, read once (one transfer from a GPU)
    rho = backends.to_host(state["rho"]).astype(np.float64)
    order = [(pos - pairs + k) % m for k in range(pairs)]  # oldest to newest
    q = g * -1
    alpha = {}
    for i in reversed(order):
        alpha[i] = rho[i] * dot(s_history[i], q)
        q -= alpha[i] * y_history[i]
    q *= float(info[H_DIAG])
    for i in order:
        beta = rho[i] * dot(y_history[i], q)
        q += (alpha[i] - beta) * s_history[i]
    return q


def lbfgs_direction(g, state: dict, info: np.ndarray):
    """The next direction from the normalized gradient ``g`` (flat): ``-g`` at the first
    iteration, else :func:`two_loop` after the pair ``(last_step, g - prev_grad)`` is
    offered to the history. ``prev_grad`` becomes ``g``; ``info`` (host copy) is updated."""
    if not info[STARTED]:
        info[:] = (1, 0, 0, 1)
        d = g * -1
    else:
        add_pair(state, state["last_step"], g - state["prev_grad"], info)
        d = two_loop(g, state, info)
    state["prev_grad"][...] = g
    return d


# -- the optimizer -------------------------------------------------------------------------


def _check_line_search(instance, attribute, value):
    if value not in LINE_SEARCHES:
        raise ValueError(
            f"{type(instance).__name__.removesuffix('Options')}: line_search must be None or "
            f"'strong_wolfe', got {shown(value)}"
        )


def _check_max_eval(instance, attribute, value):
    if value is not None:
        check_integer(type(instance).__name__.removesuffix("Options"), "max_eval", value, 1)


@options
class LBFGSOptions(AbstractOptimizerOptions):
    """Options of :class:`LBFGS` (defaults as torch.optim.LBFGS)."""

    lr: float = hyperparameter(1.0, gt=0.0, doc="step length (the first iteration's is scaled)")
    max_iter: int = integer(20, ge=1, doc="iterations per step of mxopt.minimize")
    max_eval: int | None = attrs.field(
        default=None,
        validator=_check_max_eval,
        metadata={"doc": "evaluations per step of mxopt.minimize; None: max_iter * 5 // 4"},
    )
    tolerance_grad: float = hyperparameter(
        1e-7, ge=0.0, doc="no step when max |g| is at most this (converged)"
    )
    tolerance_change: float = hyperparameter(
        1e-9, ge=0.0, doc="no step when g.d > -tolerance_change; minimize: stop on small changes"
    )
    history_size: int = integer(100, ge=1, doc="curvature pairs kept (m)")
    line_search: str | None = attrs.field(
        default=None,
        validator=_check_line_search,
        metadata={"doc": "None (fixed steps) or 'strong_wolfe' (mxopt.minimize only)"},
    )
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="L2 coefficient added to the gradient")


@register
class LBFGS(AbstractOptimizer):
    """L-BFGS (Liu & Nocedal 1989): one iteration per update, the full method in minimize.

    ``LBFGS(*, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
    tolerance_change=1e-9, history_size=100, line_search=None, grad_clip=0.0,
    weight_decay=0.0, grad_scale=1.0, maximize=False, lr_scheduler=None,
    multi_precision=False, stochastic_rounding=False, rounding_seed=0, state=None)``

    Dong C. Liu, Jorge Nocedal, "On the limited memory BFGS method for large scale
    optimization", Mathematical Programming 45, 1989; Jorge Nocedal, Stephen J.
    Wright, "Numerical Optimization", 2nd ed., Springer 2006, Algorithm 7.4 (the
    two-loop recursion) and 7.5, in the form of ``torch.optim.LBFGS``. With
    :math:`g` the :func:`~mxopt.normalized_gradient` and :math:`p` the step taken
    at the previous update, each update is one iteration:

    .. math::

        s &= p, \\quad y = g - g_{prev}; \\quad \\text{keep } (s, y) \\text{ and }
            \\gamma = \\frac{y^\\top s}{y^\\top y} \\text{ if } y^\\top s > 10^{-10}
            \\text{ (the oldest of } m \\text{ pairs makes room)} \\\\
        d &= -H g \\text{ (two-loop recursion over the pairs, } H_0 = \\gamma I);
            \\quad d = -g \\text{ at the first iteration} \\\\
        t &= \\eta \\min(1, 1/\\lVert g\\rVert_1) \\text{ at the first iteration, else }
            \\eta; \\qquad p = t d \\\\
        W &\\leftarrow W + p \\quad \\text{unless } g^\\top d > -\\text{tolerance\\_change}

    An update with :math:`\\max|g| \\le` ``tolerance_grad`` changes nothing (converged;
    torch returns at once too), and one with :math:`g^\\top d >` ``-tolerance_change``
    changes no weight but keeps :math:`g` and :math:`p` (as torch does). Dot
    products are accumulated in float64 over fixed blocks, in the same order on the CPU
    and the GPU (:func:`mxopt.kernels.statistics.dot`: the same bits on both, which a BLAS
    dot does not give); the stored arrays have the weight's dtype.

    Not elementwise: each weight (index) is its own L-BFGS problem, its curvature
    pairs and dot products its own; torch's LBFGS treats all its parameters as one
    vector, so the two agree on models with one weight array (pack a model's
    parameters into one array, or use :func:`mxopt.minimize`, for the coupled
    method). Fixed steps (``line_search=None``) with ``lr=1`` can overshoot on
    problems far from quadratic; a smaller ``lr`` or the line search of
    :func:`mxopt.minimize` helps.

    Updater form and :func:`mxopt.minimize`: an update gets a gradient but cannot
    evaluate the function, so it is one iteration with a fixed step (torch's
    ``step`` with ``max_iter=1``); ``max_iter`` and ``max_eval`` are budgets of one
    step of :func:`mxopt.minimize` and are not read by updates, and
    ``line_search='strong_wolfe'`` (which needs the loss at trial points) raises a
    ValueError at the update, before anything is written: run it with
    :func:`mxopt.minimize`, which also applies ``tolerance_change`` to the changes
    of the loss and of the weights, as torch does. ``history_size`` is read when a
    weight's state is made (its arrays have that many rows).

    State: ``"s_history"`` and ``"y_history"`` of shape ``(m, n)`` for a weight of
    ``n`` elements with ``m`` = ``history_size`` (the pairs, in a ring), ``"rho"``
    ``(m,)`` (:math:`1/y^\\top s`), ``"prev_grad"`` and ``"last_step"`` shaped like the
    weight (:math:`g_{prev}` and :math:`p`), ``"info"`` ``(4,)`` (whether an iteration
    was made, the number of pairs kept, the ring's next slot and :math:`\\gamma`, small
    integers exact in any dtype): 808.203125 bytes per float32 parameter for a (64, 32)
    weight with the default ``m = 100``, i.e. :math:`(2m + 2) \\cdot 4` bytes plus
    :math:`4 (m + 4)` bytes per weight (torch keeps the same pairs as lists). Such
    state is never packed into a buffer's flat arrays: a buffer's weights are updated
    one by one.

    Equivalents: with ``batch_size=1`` and a single weight array, each update is
    ``torch.optim.LBFGS([w], lr, max_iter=1, tolerance_grad, tolerance_change,
    history_size)``'s ``step(closure)`` with a closure returning that gradient.
    :func:`mxopt.minimize` with ``LBFGS(lr, max_iter, max_eval, tolerance_grad,
    tolerance_change, history_size, line_search)`` runs torch's ``step(closure)``
    with the same options.
    """

    Options = LBFGSOptions
    per_tensor = True  # dot products over the whole tensor
    about = About(
        family="recent",
        same_as="`torch.optim.LBFGS` (updates: `max_iter=1`; `mxopt.minimize`: any)",
        weight_decay="coupled L2 in the gradient",
        epsilon="",
        examples=({}, {"history_size": 10}),
    )

    def kernel(self) -> Kernel:
        return LBFGS_GRADIENT_KERNEL

    def state_spec(self, shape: tuple) -> dict:
        n, m = int(np.prod(shape, dtype=np.int64)), self.opts.history_size
        return {
            "s_history": ((m, n), 0.0),
            "y_history": ((m, n), 0.0),
            "rho": ((m,), 0.0),
            "prev_grad": 0.0,
            "last_step": 0.0,
            "info": ((4,), 0.0),
        }

    def kernel_scalars(self, v, step, memory):
        if v.line_search is not None:
            raise ValueError(
                f"LBFGS: line_search={v.line_search!r} needs the loss at trial points, which "
                f"an update does not have; run it with mxopt.minimize(fun, x0, "
                f"optimizer=LBFGS(line_search={v.line_search!r})), or use line_search=None "
                f"for one fixed-step iteration per update"
            )
        return {
            "rescale": v.rescale, "clip": v.grad_clip, "wd": v.l2, "lr": v.lr,
            "tolerance_grad": v.tolerance_grad, "tolerance_change": v.tolerance_change,
        }  # fmt: skip

    def prepare(self, v, step, memory):
        return self.kernel_scalars(v, step, memory)

    def apply(self, backend, w, g, arrays, x, check):
        flat = arrays.flat
        m = flat["rho"].size  # the rows the state was made with
        state = {**flat, **{name: flat[name].reshape(m, w.size) for name in HISTORY}}
        xp = array_module(w)
        g_norm = xp.empty_like(w)
        scalars = LBFGS_GRADIENT_KERNEL.pack(x)
        bad, l1, _ = backend.run(LBFGS_GRADIENT_KERNEL, w, g, (g_norm,), scalars, check)
        if bad:
            return bad
        if w.size == 0 or float(xp.abs(g_norm).max()) <= x["tolerance_grad"]:
            return 0  # converged: nothing changes (torch returns before its iteration)
        info = backends.to_host(state["info"]).astype(np.float64)
        first = not info[STARTED]
        d = lbfgs_direction(g_norm, state, info)
        t = x["lr"] * min(1.0, 1.0 / l1) if first else x["lr"]
        step = state["last_step"]
        step[...] = d
        step *= t
        if dot(g_norm, d) <= -x["tolerance_change"]:  # a descent direction: take the step
            w += step
        state["info"][...] = xp.asarray(info.astype(w.dtype))
        return 0

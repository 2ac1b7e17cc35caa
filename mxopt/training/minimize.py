"""``minimize(fun, x0)``: full-batch minimization (scientific fitting) with any mxopt
optimizer, L-BFGS by default.

``fun(x) -> (loss, grad)`` is evaluated on NumPy or CuPy arrays. With an
:class:`~mxopt.LBFGS` optimizer the whole method runs (several iterations per step, the
strong-Wolfe line search of :mod:`mxopt.training.line_search`), as
``torch.optim.LBFGS.step(closure)`` does; any other optimizer takes one update per step
from ``fun``'s gradient. The result has the fields of
``scipy.optimize.OptimizeResult`` (:class:`MinimizeResult`).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

from mxopt.core.checks import shown
from mxopt.core.schedule import AbstractSchedule
from mxopt.core.state import OptimizationState
from mxopt.kernels import backends
from mxopt.optimizers.base import AbstractOptimizer
from mxopt.optimizers.lbfgs import (
    LBFGS,
    STARTED,
    array_module,
    dot,
    lbfgs_direction,
    new_history,
)
from mxopt.training.line_search import strong_wolfe
from mxopt.training.updater import get_updater

__all__ = ["MinimizeResult", "minimize"]

#: ``max_steps`` when not given: one L-BFGS step (its budget is ``max_iter``, as in a
#: single ``torch.optim.LBFGS.step`` call), or this many updates of other optimizers.
DEFAULT_UPDATES = 1000


@dataclasses.dataclass
class MinimizeResult:
    """What :func:`minimize` returns: the fields of ``scipy.optimize.OptimizeResult``.

    Attributes:
        x: the solution, an array of ``x0``'s shape, dtype and backend (a new array).
        fun: the loss at ``x``.
        jac: the gradient at ``x`` (what ``fun`` returned there).
        nit: iterations made (L-BFGS iterations, or updates of other optimizers).
        nfev: calls of ``fun``.
        success: whether a convergence test stopped the run (not a budget, a
            non-finite value or the callback).
        message: why it stopped.
        history: the loss at ``x0`` and after each iteration (float64, ``nit + 1``
            values, the last one ``fun``).
        status: 0 converged, 1 out of budget, 2 non-finite value, 3 stopped by the callback.

    Fields are also readable as ``result["x"]``, as with SciPy's.
    """

    x: object
    fun: float
    jac: object
    nit: int
    nfev: int
    success: bool
    message: str
    history: np.ndarray
    status: int = 0

    def __getitem__(self, name: str):
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def keys(self) -> list:
        return [f.name for f in dataclasses.fields(self)]


CONVERGED, BUDGET, NONFINITE, CALLBACK = range(4)


class _NonFinite(Exception):
    """``fun`` returned a non-finite loss or gradient (ends the run, not an error)."""


class _Stop(Exception):
    """The callback raised StopIteration."""


class _Problem:
    """``fun`` with its checks, the count of its calls, the iterates' losses and the
    callback."""

    def __init__(self, fun, x, callback, bar):
        self.fun, self.callback, self.bar = fun, callback, bar
        self.xp = array_module(x)
        self.shape, self.dtype = x.shape, x.dtype
        self.nfev = 0
        self.history = []
        self.pending = False  # an iteration whose callback waits for its loss

    def __call__(self, x):
        """``(loss, flat gradient)`` at flat ``x``."""
        self.nfev += 1
        out = self.fun(x.reshape(self.shape))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                f"minimize: fun must return a tuple (loss, grad), got {shown(out)} of type "
                f"{type(out).__name__}"
            )
        loss, grad = out
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            raise TypeError(
                f"minimize: fun's loss must be a number (a scalar), got {shown(loss)}"
            ) from None
        if tuple(getattr(grad, "shape", ())) != tuple(self.shape):
            shape = getattr(grad, "shape", None)
            raise ValueError(
                f"minimize: fun returned a gradient of shape {shape} "
                f"({type(grad).__name__}) for x of shape {tuple(self.shape)}; it must be an "
                f"array shaped like x"
            )
        grad = self.xp.ascontiguousarray(self.xp.asarray(grad, dtype=self.dtype)).reshape(-1)
        if not (math.isfinite(loss) and bool(self.xp.isfinite(grad).all())):
            raise _NonFinite(f"fun returned a non-finite loss or gradient (loss {loss})")
        return loss, grad

    def iterated(self, x, loss) -> None:
        """One iteration made; ``loss`` at its iterate, or None when not evaluated yet."""
        self.bar.update(1)
        self.history.append(loss)
        self.pending = loss is None
        if loss is not None:
            self._report(x, loss)

    def evaluated_iterate(self, x, loss) -> None:
        """The loss of the last iterate became known (a waiting callback runs now)."""
        if self.pending:
            self.history[-1] = loss
            self.pending = False
            self._report(x, loss)

    def _report(self, x, loss) -> None:
        self.bar.set_postfix(loss=f"{loss:.6g}", refresh=False)
        if self.callback is None:
            return
        result = MinimizeResult(
            x=x.reshape(self.shape).copy(), fun=loss, jac=None, nit=len(self.history) - 1,
            nfev=self.nfev, success=False, message="running",
            history=np.array(self.history, dtype=np.float64),
        )  # fmt: skip
        try:
            self.callback(result)
        except StopIteration:
            raise _Stop from None


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def _progress_bar(progress: bool, total: int):
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="it", file=sys.stderr)


def _check_arguments(fun, x0, optimizer, max_steps, tol, callback):
    if not callable(fun):
        raise TypeError(f"minimize: fun must be callable, got {shown(fun)}")
    if callback is not None and not callable(callback):
        raise TypeError(f"minimize: callback must be None or callable, got {shown(callback)}")
    if optimizer is None:
        optimizer = LBFGS()
    if not isinstance(optimizer, AbstractOptimizer):
        raise TypeError(
            f"minimize: optimizer must be an mxopt optimizer (e.g. mxopt.LBFGS()), got "
            f"{shown(optimizer)}"
        )
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ValueError(
            f"minimize: max_steps must be None or an integer >= 1, got {shown(max_steps)}"
        )
    if tol is not None and (
        isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0
        or not math.isfinite(tol)
    ):  # fmt: skip
        raise ValueError(f"minimize: tol must be None or a finite number >= 0, got {shown(tol)}")
    if backends.backend_of(x0) is None:
        try:
            x0 = np.asarray(x0)
        except (TypeError, ValueError):
            raise TypeError(f"minimize: x0 must be an array of numbers, got {shown(x0)}") from None
    if x0.dtype.kind in "biu":
        x0 = x0.astype(np.float64)
    if x0.dtype not in (np.float32, np.float64):
        raise TypeError(f"minimize: x0 must hold float32 or float64 numbers, got {x0.dtype}")
    if x0.size == 0:
        raise ValueError("minimize: x0 has no elements")
    xp = array_module(x0)
    if not bool(xp.isfinite(x0).all()):
        raise ValueError("minimize: x0 holds NaN or infinite values")
    return optimizer, x0


def minimize(fun, x0, optimizer=None, *, max_steps=None, tol=None, callback=None,
             progress=False) -> MinimizeResult:  # fmt: skip
    """Minimize ``fun`` from ``x0`` with an mxopt optimizer (L-BFGS by default).

    Args:
        fun: ``fun(x) -> (loss, grad)``: the loss (a number) and its gradient (an array
            shaped like ``x``, on its backend; it is cast to ``x``'s dtype) at ``x``, an
            array of ``x0``'s shape, dtype and backend that ``fun`` must not keep.
        x0: the start, a NumPy or CuPy array (or anything ``numpy.asarray`` takes); it is
            never modified. float32 stays float32; integers become float64.
        optimizer: an mxopt optimizer; ``None`` means ``mxopt.LBFGS()``.
            :class:`~mxopt.LBFGS` runs the full method: each step is what
            ``torch.optim.LBFGS.step(closure)`` does with the same options (up to
            ``max_iter`` iterations and ``max_eval`` evaluations of ``fun``, its
            ``line_search``, stopping early on ``tolerance_grad`` and
            ``tolerance_change``). Its options that change the objective
            (``grad_clip``, ``weight_decay``, ``grad_scale``, ``maximize``,
            ``lr_scheduler``) are refused: put such terms into ``fun``. Any other
            optimizer makes one update per step from ``fun``'s gradient, with the
            optimizer's own state if it has one (its ``batch_size`` divides the
            gradient), else a new ``OptimizationState(batch_size=1)`` given to it.
        max_steps: the budget: steps of L-BFGS (default 1: one torch ``step`` call), or
            updates of other optimizers (default 1000). ``max_steps`` L-BFGS steps are a
            loop of as many torch ``step(closure)`` calls (the history carries over),
            except that ``minimize`` ends the run when a step stops on a tolerance
            (torch's next call would go on from there) and does not call ``fun`` again
            at a point whose value it has (torch re-evaluates at each call's start).
        tol: stop (successfully) once ``max|grad| <= tol`` at an iterate; ``None``:
            L-BFGS's own ``tolerance_grad`` only, and no such test for other optimizers.
        callback: ``callback(intermediate_result)`` after each iteration, with a
            :class:`MinimizeResult` holding ``x`` (a copy), ``fun``, ``nit``, ``nfev``
            and ``history`` so far; raising ``StopIteration`` ends the run (as SciPy's).
            Without a line search, the last iteration of an L-BFGS step has no loss
            until the next evaluation: its callback runs then.
        progress: show a tqdm progress bar (iterations, and the loss) on stderr.

    Dot products are accumulated in float64 (torch's in the array's dtype), and so
    are the line search's tests: in float32 the two can stop at different iterations
    near convergence, where float32 rounding decides.

    Returns:
        a :class:`MinimizeResult`. A non-finite loss or gradient during the run ends it
        (``success=False``, ``status=2``) with ``x`` the last finite iterate; at ``x0``
        it is a ValueError.
    """
    optimizer, x0 = _check_arguments(fun, x0, optimizer, max_steps, tol, callback)
    xp = array_module(x0)
    x = xp.ascontiguousarray(x0).reshape(-1).copy()
    lbfgs = isinstance(optimizer, LBFGS)
    if lbfgs:
        _check_lbfgs(optimizer)
        steps = 1 if max_steps is None else max_steps
        total = steps * optimizer.opts.max_iter
    else:
        steps = DEFAULT_UPDATES if max_steps is None else max_steps
        total = steps
    bar = _progress_bar(progress, total)
    problem = _Problem(fun, x0, callback, bar)
    try:
        try:
            loss, g = problem(x)
        except _NonFinite as error:
            raise ValueError(f"minimize: at x0, {error}") from None
        problem.history.append(loss)
        run = _run_lbfgs if lbfgs else _run_updates
        status, message, x, loss, g = run(problem, optimizer, x, loss, g, steps, tol)
    finally:
        bar.close()
    history = np.array(problem.history, dtype=np.float64)
    return MinimizeResult(
        x=x.reshape(x0.shape), fun=loss, jac=g.reshape(x0.shape), nit=len(history) - 1,
        nfev=problem.nfev, success=status == CONVERGED, message=message, history=history,
        status=status,
    )  # fmt: skip


def _below(xp, g, tol) -> bool:
    return tol is not None and float(xp.abs(g).max()) <= tol


# -- other optimizers: one update per step ------------------------------------------------------


def _run_updates(problem, optimizer, x, loss, g, steps, tol):
    xp = problem.xp
    if optimizer.state is None:
        optimizer.state = OptimizationState(batch_size=1)
    state = optimizer.state
    updater = get_updater(optimizer)
    state.begin_epoch()
    for _ in range(steps):
        if _below(xp, g, tol):
            return CONVERGED, f"max |grad| <= tol = {tol}", x, loss, g
        last = (x.copy(), loss, g)
        state.begin_batch()
        updater(0, g, x)
        try:
            loss, g = problem(x)
        except _NonFinite as error:
            return NONFINITE, f"stopped: {error} after {len(problem.history)} iteration(s)", *last
        try:
            problem.iterated(x, loss)
        except _Stop:
            return CALLBACK, "`callback` raised `StopIteration`.", x, loss, g
    if _below(xp, g, tol):
        return CONVERGED, f"max |grad| <= tol = {tol}", x, loss, g
    return BUDGET, f"the budget of {steps} update(s) ran out (max_steps)", x, loss, g


# -- L-BFGS: torch's step, several iterations each --------------------------------------------


_OBJECTIVE_OPTIONS = {
    "grad_clip": 0.0, "weight_decay": 0.0, "grad_scale": 1.0, "maximize": False,
    "lr_scheduler": None,
}  # fmt: skip


def _check_lbfgs(optimizer) -> None:
    for name in ("lr", "tolerance_grad", "tolerance_change"):
        if isinstance(getattr(optimizer.opts, name), AbstractSchedule):
            raise ValueError(
                f"minimize: LBFGS's {name} is a schedule; minimize reads it as a number (its "
                f"steps are not the updates a schedule counts)"
            )
    for name, neutral in _OBJECTIVE_OPTIONS.items():
        value = getattr(optimizer.opts, name)
        if value is not neutral and value != neutral:
            raise ValueError(
                f"minimize: LBFGS's {name}={shown(value)} would change the objective that "
                f"the line search and the stopping tests read from fun; leave it at "
                f"{shown(neutral)} and put the term into fun"
            )


def _along(problem, x, d):
    """``t -> fun at x + t d``, for the line search."""
    return lambda t: problem(x + d * t)


def _run_lbfgs(problem, optimizer, x, loss, g, steps, tol):
    o = optimizer.opts
    xp = problem.xp
    max_eval = o.max_eval if o.max_eval is not None else o.max_iter * 5 // 4
    history = new_history(xp, x.size, o.history_size, x.dtype)
    info = np.zeros(4)
    known = True  # loss and g are those of x
    best = (x, loss, g)  # the last iterate whose loss and gradient are known

    for _ in range(steps):
        if not known:
            try:
                loss, g = problem(x)
            except _NonFinite as error:
                return NONFINITE, f"stopped: {error}", *best
            known = True
            best = (x, loss, g)
            try:
                problem.evaluated_iterate(x, loss)
            except _Stop:
                return CALLBACK, "`callback` raised `StopIteration`.", x, loss, g
        evaluations = 1
        if float(xp.abs(g).max()) <= o.tolerance_grad:
            return CONVERGED, f"max |grad| <= tolerance_grad = {o.tolerance_grad}", x, loss, g
        if _below(xp, g, tol):
            return CONVERGED, f"max |grad| <= tol = {tol}", x, loss, g
        for iteration in range(1, o.max_iter + 1):
            first = not info[STARTED]
            d = lbfgs_direction(g, history, info)
            previous_loss = loss
            t = o.lr * min(1.0, 1.0 / float(xp.abs(g).sum())) if first else o.lr
            slope = dot(g, d)
            if slope > -o.tolerance_change:
                history["last_step"][...] = d * t
                return (CONVERGED, f"the slope g.d = {slope:.3g} along the direction is above "
                        f"-tolerance_change = {-o.tolerance_change}", x, loss, g)  # fmt: skip
            try:
                if o.line_search is not None:
                    d_max = float(xp.abs(d).max())
                    loss, g, t, used = strong_wolfe(
                        _along(problem, x, d), t, d, loss, g, slope, o.tolerance_change,
                        d_max, dot=dot,
                    )  # fmt: skip
                    x = x + d * t
                    known = True
                elif iteration < o.max_iter:
                    x = x + d * t
                    loss, g = problem(x)
                    used, known = 1, True
                else:  # the step's last iteration is not evaluated (as torch's)
                    x = x + d * t
                    used, known = 0, False
            except _NonFinite as error:
                return NONFINITE, f"stopped: {error}", *best
            history["last_step"][...] = d * t
            evaluations += used
            if known:
                best = (x, loss, g)
            try:  # (the callback of an iteration not evaluated yet waits for its loss)
                problem.iterated(x, loss if known else None)
            except _Stop:
                return CALLBACK, "`callback` raised `StopIteration`.", x, loss, g
            if iteration == o.max_iter or evaluations >= max_eval:
                break
            if float(xp.abs(g).max()) <= o.tolerance_grad:
                return CONVERGED, f"max |grad| <= tolerance_grad = {o.tolerance_grad}", x, loss, g
            if _below(xp, g, tol):
                return CONVERGED, f"max |grad| <= tol = {tol}", x, loss, g
            if float(xp.abs(d).max()) * abs(t) <= o.tolerance_change:
                return CONVERGED, f"the step is below tolerance_change = {o.tolerance_change}", \
                    x, loss, g  # fmt: skip
            if abs(loss - previous_loss) < o.tolerance_change:
                return CONVERGED, f"the loss changed by less than tolerance_change = " \
                    f"{o.tolerance_change}", x, loss, g  # fmt: skip
    if not known:  # the result's loss and gradient
        try:
            loss, g = problem(x)
        except _NonFinite as error:
            return NONFINITE, f"stopped: {error}", *best
        try:
            problem.evaluated_iterate(x, loss)
        except _Stop:
            pass
    if float(xp.abs(g).max()) <= o.tolerance_grad:
        return CONVERGED, f"max |grad| <= tolerance_grad = {o.tolerance_grad}", x, loss, g
    if _below(xp, g, tol):
        return CONVERGED, f"max |grad| <= tol = {tol}", x, loss, g
    return (
        BUDGET,
        (
            f"the budget ran out: {steps} step(s) (max_steps) of at most max_iter = "
            f"{o.max_iter} iterations and max_eval = {max_eval} evaluations"
        ),
        x,
        loss,
        g,
    )

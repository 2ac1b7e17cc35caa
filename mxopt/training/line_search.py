"""The strong-Wolfe line search of :func:`mxopt.minimize` (Nocedal & Wright, "Numerical
Optimization", 2nd ed., 2006, Algorithms 3.5 and 3.6, with cubic interpolation, eq. 3.59).

Along a descent direction :math:`d` from :math:`x` (loss :math:`f_0`, slope
:math:`f'_0 = g^\\top d < 0`), a step :math:`t` satisfies the strong Wolfe conditions when

.. math::

    f(x + t d) \\le f_0 + c_1 t f'_0 \\quad \\text{(sufficient decrease)}, \\qquad
    |\\nabla f(x + t d)^\\top d| \\le c_2 |f'_0| \\quad \\text{(curvature)}

with :math:`c_1 = 10^{-4}`, :math:`c_2 = 0.9`. Algorithm 3.5 grows :math:`t` until an
interval is known to hold such a step (the trial breaks sufficient decrease, does not
improve on the previous trial, or has a non-negative slope); Algorithm 3.6 ("zoom")
shrinks that interval, keeping at its "low" end the best trial that decreases
sufficiently, until a trial satisfies both conditions. Every new trial is the minimizer
of the cubic through the values and slopes at two points, kept inside bounds. The
choices where the book leaves room are torch.optim.LBFGS's (so the two take the same
steps): extrapolated trials lie in :math:`[t + 0.01 (t - t_{prev}), 10 t]`; a zoom
trial closer than 10% of the interval's width to one of its ends is moved to that
distance, unless the previous trial already was close (then it is accepted once);
the search stops after 26 evaluations (25 after the first) or when the interval is narrower than
``tolerance_change`` (in units of :math:`\\max|d|`), returning the low end.
"""

from __future__ import annotations

import math

__all__ = ["cubic_minimizer", "strong_wolfe"]

C1 = 1e-4
C2 = 0.9
#: Evaluations after the first one (the search makes at most 26).
MAX_TRIALS = 25


def cubic_minimizer(t1, f1, s1, t2, f2, s2, lower=None, upper=None) -> float:
    """The minimizer of the cubic with values ``f1``, ``f2`` and slopes ``s1``, ``s2`` at
    ``t1``, ``t2`` (Nocedal & Wright eq. 3.59), clamped to ``[lower, upper]`` (the two
    points' span by default); the middle of the bounds when the cubic has no minimizer."""
    if lower is None:
        lower, upper = min(t1, t2), max(t1, t2)
    # written from the point on the right: the formula is symmetric under relabelling
    if t1 > t2:
        t1, f1, s1, t2, f2, s2 = t2, f2, s2, t1, f1, s1
    d1 = s1 + s2 - 3.0 * (f1 - f2) / (t1 - t2)
    radicand = d1 * d1 - s1 * s2
    if radicand < 0:
        return (lower + upper) / 2.0
    d2 = math.sqrt(radicand)
    t = t2 - (t2 - t1) * ((s2 + d2 - d1) / (s2 - s1 + 2.0 * d2))
    return min(max(t, lower), upper)


class _Trial:
    """A point of the search: step, loss, gradient and slope."""

    __slots__ = ("g", "loss", "slope", "t")

    def __init__(self, t, loss, g, slope):
        self.t, self.loss, self.g, self.slope = t, loss, g, slope


def strong_wolfe(evaluate, t, d, loss, g, slope, tolerance_change, d_max, *, dot):
    """A step along ``d`` satisfying the strong Wolfe conditions, from ``t`` on.

    ``evaluate(t) -> (loss, gradient)`` at ``x + t d``; ``loss``, ``g``, ``slope`` at
    ``t = 0``; ``d_max = max|d|``; ``dot(a, b)`` the dot product. Returns ``(loss,
    gradient, t, evaluations)`` of the step found (the best one tried when the search
    ran out of evaluations or interval).
    """
    start = _Trial(0.0, loss, g, slope)
    previous = start

    def trial(t):
        f, grad = evaluate(t)
        return _Trial(t, f, grad, dot(grad, d))

    def decreases(p):
        return p.loss <= start.loss + C1 * p.t * start.slope

    def flat(p):
        return abs(p.slope) <= -C2 * start.slope

    # Algorithm 3.5: extrapolate until an interval holds an acceptable step
    current = trial(t)
    evaluations = 1
    interval = None
    while True:
        if not decreases(current) or (evaluations > 2 and current.loss >= previous.loss):
            interval = [previous, current]
            break
        if flat(current):
            return current.loss, current.g, current.t, evaluations
        if current.slope >= 0:
            interval = [previous, current]
            break
        lower = current.t + 0.01 * (current.t - previous.t)
        upper = 10.0 * current.t
        t = cubic_minimizer(previous.t, previous.loss, previous.slope,
                            current.t, current.loss, current.slope, lower, upper)  # fmt: skip
        previous = current
        current = trial(t)
        evaluations += 1
        if evaluations > MAX_TRIALS:  # out of trials: between the start and the last one
            interval = [start, current]
            break
    # Algorithm 3.6: zoom; `low` is the end with the lower loss (the first one on ties)
    low = 0 if interval[0].loss <= interval[1].loss else 1
    near_end = False
    while evaluations <= MAX_TRIALS:
        a, b = interval
        if abs(b.t - a.t) * d_max < tolerance_change:
            break
        t = cubic_minimizer(a.t, a.loss, a.slope, b.t, b.loss, b.slope)
        left, right = min(a.t, b.t), max(a.t, b.t)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            # too close to an end: move away from it, unless allowed once already
            if near_end or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                near_end = False
            else:
                near_end = True
        else:
            near_end = False
        p = trial(t)
        evaluations += 1
        high = 1 - low
        if not decreases(p) or p.loss >= interval[low].loss:
            interval[high] = p
            low = 0 if interval[0].loss <= interval[1].loss else 1
            continue
        if flat(p):
            interval[low] = p
            break
        if p.slope * (interval[high].t - interval[low].t) >= 0:
            interval[high] = interval[low]
        interval[low] = p
    best = interval[low]
    return best.loss, best.g, best.t, evaluations

"""Whole-model gradient statistics: the global norm and non-finite values.

:func:`global_norm` is what torch's ``clip_grad_norm_`` and optax's
``clip_by_global_norm`` compute, :math:`\\sqrt{\\sum_t \\lVert g_t \\rVert^2}`
over a set of gradients, here in one pass per gradient with float64
accumulation over fixed blocks (the same bits whatever the thread count) and no
full-size temporary. The same pass counts NaN and infinite values.

The updater uses it for ``max_grad_norm`` (global clipping) and for the
all-or-nothing non-finite check of :meth:`mxopt.Updater.update_many`.
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.kernels import backend_module, backends
from mxopt.kernels.kernel import Kernel

__all__ = ["global_norm", "GradientStatistics"]


def grad_squares_element(i, w, g):
    x = g[i]
    if np.isfinite(x):
        return np.float64(x) * np.float64(x), np.float64(0)
    return np.float64(0), np.float64(1)


#: Sums g^2 over the finite values and counts the non-finite ones (reads g only).
GRAD_SQUARES_KERNEL = Kernel(
    name="grad_squares",
    state=(),
    cpu=grad_squares_element,
    reduces=True,
    cuda="""
    const T x = g[i];
    if (isfinite(x)) return mx_pair{(double)x * (double)x, 0.0};
    return mx_pair{0.0, 1.0};
""",
)


class GradientStatistics:
    """Sum of squares (of finite values) and number of non-finite values of gradients."""

    __slots__ = ("sum_squares", "nonfinite", "per_gradient")

    def __init__(self):
        self.sum_squares = 0.0
        self.nonfinite = 0
        self.per_gradient = []

    def add(self, sum_squares: float, nonfinite: float) -> None:
        self.sum_squares += sum_squares
        self.nonfinite += int(nonfinite)
        self.per_gradient.append(int(nonfinite))

    @property
    def norm(self) -> float:
        """The global L2 norm, or ``inf`` when any value is not finite."""
        return math.inf if self.nonfinite else math.sqrt(self.sum_squares)


def gradient_statistics(backend_module, flat_grads) -> GradientStatistics:
    """Statistics of flat gradients (1-D, C-contiguous, float32/float64) of one backend."""
    stats = GradientStatistics()
    for g in flat_grads:
        _, sum_squares, nonfinite = backend_module.run(GRAD_SQUARES_KERNEL, g, g, (), (), False)
        stats.add(sum_squares, nonfinite)
    return stats


def global_norm(grads) -> float:
    """The global L2 norm of a set of gradients (NumPy or CuPy arrays).

    Returns ``inf`` when any gradient holds a NaN or infinite value. The sum of
    squares is accumulated in float64 over fixed blocks, so the result is the
    same for any number of threads.
    """
    flat_by_backend: dict = {}
    for position, grad in enumerate(grads):
        backend = backends.backend_of(grad)
        if backend is None or grad.dtype not in (np.float32, np.float64):
            raise TypeError(
                f"global_norm: gradient {position} must be a float32 or float64 NumPy or CuPy "
                f"array, got {type(grad).__name__}"
                + (f" of dtype {grad.dtype}" if hasattr(grad, "dtype") else "")
            )
        if isinstance(grad, np.ma.MaskedArray):
            raise TypeError(
                f"global_norm: gradient {position} is a numpy masked array; pass grad.filled(0)"
            )
        if not grad.flags.c_contiguous:
            grad = (np if backend == backends.NUMPY else __import__("cupy")).ascontiguousarray(grad)
        flat_by_backend.setdefault(backend, []).append(backends.plain(grad).reshape(-1))
    total = GradientStatistics()
    for backend, flats in flat_by_backend.items():
        stats = gradient_statistics(backend_module(backend), flats)
        total.sum_squares += stats.sum_squares
        total.nonfinite += stats.nonfinite
    return total.norm

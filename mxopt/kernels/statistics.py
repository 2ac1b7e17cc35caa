"""Whole-model gradient statistics: the global norm and non-finite values.

:func:`global_norm` is what torch's ``clip_grad_norm_`` and optax's
``clip_by_global_norm`` compute, :math:`\\sqrt{\\sum_t \\lVert g_t \\rVert^2}`
over a set of gradients, here in one pass per gradient with float64
accumulation over fixed blocks (the same bits whatever the thread count) and no
full-size temporary. The same pass counts NaN and infinite values.

The updater uses it for ``max_grad_norm`` (global clipping) and for the
all-or-nothing non-finite check of :meth:`mxopt.Updater.update_many`. :func:`dot` sums
products the same way (L-BFGS's dot products): the same bits on the CPU and the GPU,
where a BLAS dot would add in the order of the library (cuBLAS's differs from NumPy's).
"""

from __future__ import annotations

import math

import numpy as np

from mxopt.kernels import backend_module, backends
from mxopt.kernels.kernel import Kernel

__all__ = ["GradientStatistics", "dot", "global_norm", "gradient_sums", "segment_statistics"]


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


def dot_element(i, w, g):
    return np.float64(w[i]) * np.float64(g[i]), np.float64(0)


#: Sums w * g in float64 (reads both; writes nothing).
DOT_KERNEL = Kernel(
    name="dot",
    state=(),
    cpu=dot_element,
    reduces=True,
    cuda="""
    return mx_pair{(double)w[i] * (double)g[i], 0.0};
""",
)


def dot(a, b) -> float:
    """``a . b`` of two flat arrays of the same size and backend, accumulated in float64
    over fixed blocks (the same bits on either backend and for any number of threads).
    Arrays other than two float32 or two float64 ones are compared in float64."""
    if a.size != b.size:
        raise ValueError(f"dot: the arrays differ in size ({a.size} and {b.size})")
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        a, b = a.astype(np.float64), b.astype(np.float64)
    backend = backend_module(backends.backend_of(a))
    _, total, _ = backend.run(DOT_KERNEL, a.reshape(-1), b.reshape(-1), (), (), False)
    return float(total)


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


def segment_statistics(backend_module, flat, offsets) -> tuple[np.ndarray, np.ndarray]:
    """Per segment ``[offsets[k], offsets[k + 1])`` of a flat gradient: the float64 sum of
    squares of its finite values and its number of non-finite values, as host arrays.
    Each segment gets the bits a :func:`gradient_statistics` of it alone would."""
    count = len(offsets) - 1
    if count == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    empty = backends.scalar_table(flat, GRAD_SQUARES_KERNEL.rows({}, count))
    _, sums = backend_module.run_segments(GRAD_SQUARES_KERNEL, flat, flat, (), offsets, empty,
                                          False)  # fmt: skip
    sums = np.asarray(backends.to_host(sums), dtype=np.float64).reshape(count, 2)
    return np.ascontiguousarray(sums[:, 0]), sums[:, 1].astype(np.int64)


def gradient_sums(grads) -> tuple[np.ndarray, np.ndarray]:
    """Per gradient: the float64 sum of the squares of its finite values, and its number
    of NaN and infinite values (two host arrays, one entry per gradient).

    The per-index statistics the updater's decisions are made of: ``max_grad_norm``
    clips with ``sqrt`` of their sum, taken in index order (``np.cumsum(sums)[-1]`` gives
    its exact bits), and the non-finite policy reads the counts. A distributed step
    gathers them from every rank to decide as one process would.
    """
    sums, counts = [], []
    for position, grad in enumerate(grads):
        grad = _checked_gradient("gradient_sums", position, grad)
        backend = backend_module(backends.backend_of(grad))
        _, sum_squares, nonfinite = backend.run(GRAD_SQUARES_KERNEL, grad, grad, (), (), False)
        sums.append(float(sum_squares))
        counts.append(int(nonfinite))
    return np.array(sums, dtype=np.float64), np.array(counts, dtype=np.int64)


def _checked_gradient(caller: str, position: int, grad):
    """``grad`` as a flat, plain, C-contiguous float array, or a clear error."""
    backend = backends.backend_of(grad)
    if backend is None or grad.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{caller}: gradient {position} must be a float32 or float64 NumPy or CuPy "
            f"array, got {type(grad).__name__}"
            + (f" of dtype {grad.dtype}" if hasattr(grad, "dtype") else "")
        )
    if isinstance(grad, np.ma.MaskedArray):
        raise TypeError(
            f"{caller}: gradient {position} is a numpy masked array; pass grad.filled(0)"
        )
    if not grad.flags.c_contiguous:
        grad = (np if backend == backends.NUMPY else __import__("cupy")).ascontiguousarray(grad)
    return backends.plain(grad).reshape(-1)


def global_norm(grads) -> float:
    """The global L2 norm of a set of gradients (NumPy or CuPy arrays).

    Returns ``inf`` when any gradient holds a NaN or infinite value. The sum of
    squares is accumulated in float64 over fixed blocks, so the result is the
    same for any number of threads.
    """
    flat_by_backend: dict = {}
    for position, grad in enumerate(grads):
        grad = _checked_gradient("global_norm", position, grad)
        flat_by_backend.setdefault(backends.backend_of(grad), []).append(grad)
    total = GradientStatistics()
    for backend, flats in flat_by_backend.items():
        stats = gradient_statistics(backend_module(backend), flats)
        total.sum_squares += stats.sum_squares
        total.nonfinite += stats.nonfinite
    return total.norm

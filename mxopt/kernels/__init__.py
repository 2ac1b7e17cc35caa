"""Layer 1: fused elementwise kernels and the arrays they run on.

* :mod:`~mxopt.kernels.kernel`: the :class:`~mxopt.kernels.kernel.Kernel` description (one
  update rule, its CPU and CUDA twins) and the element helpers optimizers share;
* :mod:`~mxopt.kernels.backends`: which backend an array belongs to, and the checks every
  array passes before a kernel touches it;
* :mod:`~mxopt.kernels.cpu` (Numba) and :mod:`~mxopt.kernels.cuda` (CuPy): the loops and
  launches generated around a kernel, imported on first use;
* :mod:`~mxopt.kernels.statistics`: gradient statistics (sum of squares, non-finite count);
* :mod:`~mxopt.kernels.factored`: the row and column kernels of a factored second moment.

Nothing here knows about optimizers: kernels take flat arrays and host scalars.
"""

from __future__ import annotations

import importlib

__all__ = ["backend_module", "precision_module"]

_MODULES = {"numpy": "mxopt.kernels.cpu", "cupy": "mxopt.kernels.cuda"}
_PRECISION_MODULES = {"numpy": "mxopt.kernels.cpu_precision", "cupy": "mxopt.kernels.cuda"}
_loaded: dict = {}
_loaded_precision: dict = {}


def backend_module(backend: str):
    """The kernel runner of ``backend``: :mod:`mxopt.kernels.cpu` for ``"numpy"``,
    :mod:`mxopt.kernels.cuda` for ``"cupy"`` (imported on first use: Numba takes 0.3 s)."""
    module = _loaded.get(backend)
    if module is None:
        module = _loaded[backend] = importlib.import_module(_MODULES[backend])
    return module


def precision_module(backend: str):
    """The loops of float16/bfloat16 arrays of ``backend`` (``widen``, ``narrow``, and on
    the CPU ``run_staged``): :mod:`mxopt.kernels.cpu_precision` or :mod:`mxopt.kernels.cuda`."""
    module = _loaded_precision.get(backend)
    if module is None:
        name = _PRECISION_MODULES[backend]
        module = _loaded_precision[backend] = importlib.import_module(name)
    return module


def direct_module():
    """:mod:`mxopt.kernels.direct` (one compiled call per ``updater(index, grad, weight)``
    on small NumPy weights), imported on first use (it imports Numba)."""
    return importlib.import_module("mxopt.kernels.direct")

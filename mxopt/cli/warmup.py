"""Compile every CPU kernel ahead of time (``python -m mxopt warmup``).

Kernels compile on first use and Numba caches the machine code on disk, next to
the installed package or, when that folder is read-only, in a per-user cache
folder (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``; ``NUMBA_CACHE_DIR``
overrides both). Warming up fills that cache for every kernel, dtype and loop
variant, so that no later run pays for compilation.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["warmup"]


def warmup(dtypes=(np.float32, np.float64), progress=print) -> float:
    """Compile (or load from the disk cache) every CPU kernel; returns the seconds taken."""
    import mxopt
    from mxopt.kernels import cpu as _cpu
    from mxopt.kernels.kernel import KERNELS

    started = time.perf_counter()
    for name, kernel in sorted(KERNELS.items()):
        for dtype in dtypes:
            for layout in ("single", "segments"):
                _cpu.entry_point(kernel, np.dtype(dtype), layout)
        progress(f"  {name}: ready")
    _cpu.count_nonfinite(np.zeros(1))
    # Optimizers with their own (non-registered) loops compile them on a tiny update.
    for dtype in dtypes:
        state = mxopt.OptimizationState(1, 1, 1, 1)
        updater = mxopt.get_updater(mxopt.Adafactor(state=state))
        updater("matrix", np.ones((3, 5), dtype), np.ones((3, 5), dtype))
    progress("  adafactor (factored): ready")
    seconds = time.perf_counter() - started
    progress(f"{len(KERNELS) + 1} kernels ready in {seconds:.1f} s")
    return seconds

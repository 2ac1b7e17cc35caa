import numpy as np
import pytest


def _cupy_or_none():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:
        pass
    return None


CUPY = _cupy_or_none()
BACKENDS = [pytest.param(np, id="numpy")] + [
    pytest.param(CUPY, id="cupy", marks=pytest.mark.gpu)
] * (CUPY is not None)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CuPy and a CUDA device")


def to_numpy(array):
    return array.get() if hasattr(array, "get") else np.asarray(array)


def record_cpu_kernel_calls(monkeypatch, keep=lambda kernel, scalars: True):
    """Record ``(kernel, w, g, state, scalars)`` (copies, before the call) of every CPU
    kernel run of a single array: through ``_cpu.run`` and through the runners that
    updaters keep for their fast path."""
    from mxopt.kernels import cpu as _cpu

    calls = []
    real_run = _cpu.run

    def recording_run(kernel, w, g, state, scalars, check):
        if keep(kernel, scalars):
            calls.append((kernel, w.copy(), g.copy(), tuple(a.copy() for a in state), scalars))
        return real_run(kernel, w, g, state, scalars, check)

    def recording_runner(kernel, dtype, size):
        return lambda w, g, state, scalars, check: recording_run(kernel, w, g, state, scalars,
                                                                 check)  # fmt: skip

    monkeypatch.setattr(_cpu, "run", recording_run)
    monkeypatch.setattr(_cpu, "runner", recording_runner)
    return calls

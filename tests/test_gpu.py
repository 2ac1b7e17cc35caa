"""GPU backend: CuPy arrays give the CPU kernels' bits. Skipped without CuPy and a GPU."""

import numpy as np
import pytest

import mxopt
from tests.cases import CASES, VARIANTS, trajectory
from tests.conftest import CUPY

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(CUPY is None, reason="needs CuPy and a CUDA device"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gpu_steps_match_cpu_steps_bit_for_bit(case, variant, dtype):
    shape = (1031,)
    cpu = trajectory(case, VARIANTS[variant], dtype, shape, np)
    gpu = trajectory(case, VARIANTS[variant], dtype, shape, CUPY)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for (step, w_cpu, s_cpu, _, _), (_, w_gpu, s_gpu, _, _) in zip(cpu, gpu, strict=True):
        np.testing.assert_array_equal(w_gpu.get().view(bits), w_cpu.view(bits), f"step {step}")
        for name in s_cpu.arrays:
            np.testing.assert_array_equal(
                s_gpu.arrays[name].get().view(bits), s_cpu.arrays[name].view(bits), name
            )


def test_state_lives_on_the_weights_device():
    state = mxopt.OptimizationState(4, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    weight = CUPY.ones(10, dtype=CUPY.float32)
    updater(0, CUPY.ones(10, dtype=CUPY.float32), weight)
    assert all(isinstance(a, CUPY.ndarray) for a in updater.states[0].arrays.values())


def test_non_finite_gpu_gradient_raises_and_changes_nothing():
    state = mxopt.OptimizationState(4, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.SGD(momentum=0.9, state=state))
    weight = CUPY.ones(100, dtype=CUPY.float32)
    grad = CUPY.ones(100, dtype=CUPY.float32)
    grad[17] = CUPY.nan
    with pytest.raises(FloatingPointError, match="1 NaN"):
        updater(0, grad, weight)
    assert bool((weight == 1).all())
    assert updater.states == {}


def test_numpy_grad_for_a_cupy_weight_is_rejected():
    state = mxopt.OptimizationState(4, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.SGD(state=state))
    with pytest.raises(TypeError, match="same backend"):
        updater(0, np.ones(4, np.float32), CUPY.ones(4, dtype=CUPY.float32))


MATRIX_CASES = [c for c in CASES if c.optimizer in {"Muon", "SOAP"}]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", MATRIX_CASES, ids=[c.id for c in MATRIX_CASES])
def test_matrix_optimizers_agree_with_the_cpu_to_rounding(case, dtype):
    """Muon's and SOAP's products run on cuBLAS and cuSOLVER, which add in another order
    than NumPy's BLAS and LAPACK: agreement to rounding, not bit for bit (an H100 gave
    their states 1 to 7 float32 ulps off the CPU's)."""
    shape = (37, 29)
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    cpu = trajectory(case, VARIANTS["plain"], dtype, shape, np)
    gpu = trajectory(case, VARIANTS["plain"], dtype, shape, CUPY)
    for (step, w_cpu, s_cpu, _, _), (_, w_gpu, s_gpu, _, _) in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(w_gpu.get(), w_cpu, rtol=rtol, atol=rtol / 10, err_msg=step)
        for name in s_cpu.arrays:
            np.testing.assert_allclose(s_gpu.arrays[name].get(), s_cpu.arrays[name], rtol=rtol,
                                       atol=rtol / 10, err_msg=name)  # fmt: skip

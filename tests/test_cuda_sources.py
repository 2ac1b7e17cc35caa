"""Every CUDA kernel compiles, and its math gives the CPU kernel's bits.

These run without a GPU: NVRTC from the nvidia-cuda-nvrtc-cu12 wheel compiles
the exact source CuPy would compile, nvcc (when present) compiles it too, and
each element is built for the CPU with g++ and replayed on the very inputs the
Numba kernel saw during real updates of every case in tests/cases.py, to compare
the two bit for bit.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import mxopt
from mxopt.kernels import cpu as _cpu
from mxopt.kernels.cuda import NONFINITE_SOURCE, element_source, fused_source, module_source
from mxopt.kernels.kernel import CUDA_PREAMBLE, KERNELS, REDUCE_BLOCK
from mxopt.kernels.precision import BITS16, FLOAT32
from mxopt.kernels.precision import CUDA_SOURCE as PRECISION_SOURCE
from mxopt.kernels.quantize_cuda import QUANTIZE_SOURCE
from mxopt.optimizers.matrix import MatrixOptimizer
from tests import cuda_tools
from tests.cases import CASES, VARIANTS, make_optimizer
from tests.conftest import record_cpu_kernel_calls

SOURCES = {name: module_source(kernel) for name, kernel in KERNELS.items()}
SOURCES["count_nonfinite"] = NONFINITE_SOURCE
SOURCES["quantize"] = QUANTIZE_SOURCE
SOURCES["precision"] = PRECISION_SOURCE
for _storages in ((BITS16, BITS16), (BITS16, FLOAT32), (FLOAT32, FLOAT32)):
    SOURCES[f"adam fused {_storages}"] = fused_source(KERNELS["adam"], _storages)


@pytest.fixture
def recorded_calls(monkeypatch):
    """Record the inputs of every CPU kernel call made during a test."""
    return record_cpu_kernel_calls(monkeypatch)


#: Optimizers whose own kernels run on matrices only (Muon and SOAP hand vectors to their
#: fallback).
MATRIX_ONLY = {name for name, cls in mxopt.OPTIMIZERS.items() if issubclass(cls, MatrixOptimizer)}


def _train(case, variant, dtype, n=257, steps=5, seed=1):
    """A few real updates (one with zero gradients) of one weight (``n`` elements, or a
    ``(3, n)`` matrix for :data:`MATRIX_ONLY`)."""
    rng = np.random.default_rng(seed)
    state = mxopt.OptimizationState(batch_size=3)
    updater = mxopt.get_updater(make_optimizer(case, variant, state), averaging=mxopt.EMA(0.9))
    shape = (3, n) if case.optimizer in MATRIX_ONLY else n
    weight = rng.normal(size=shape).astype(dtype)
    state.begin_epoch()
    for step in range(steps):
        state.begin_batch()
        grad = (rng.normal(size=shape) * 3).astype(dtype) * (step != 2)
        grad.reshape(-1)[:5] = 0
        if step < steps - 1:
            updater(0, grad, weight)
        else:  # a step of two weights also runs the gradient statistics
            updater.update_many([0, 1], [grad, grad.copy()], [weight, weight.copy()])
    with updater.averaged({0: weight}):
        pass
    return updater


def test_every_kernel_is_used_by_some_case(recorded_calls):
    for case in CASES:
        for variant in VARIANTS.values():
            _train(case, variant, np.float32, n=3, steps=7)
    assert {call[0].name for call in recorded_calls} == set(KERNELS), (
        "every kernel needs a case in tests/cases.py"
    )


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
@pytest.mark.parametrize("arch", cuda_tools.ARCHITECTURES)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_compiles_with_nvrtc(name, arch):
    ok, log = cuda_tools.nvrtc_compile(SOURCES[name], arch)
    assert ok, log
    assert "warning" not in log.lower(), log


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_no_kernel_uses_local_memory(name):
    """Every value of a step stays in registers: a local (stack) array or a local whose
    address mixes with a global pointer costs a memory access per element (the fused
    16-bit step had one, seen on an H100 at 59% of the copy bandwidth)."""
    ptx = cuda_tools.nvrtc_ptx(SOURCES[name], "compute_90")
    assert ".local" not in ptx, [line for line in ptx.splitlines() if ".local" in line][:5]


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
def test_nvrtc_check_can_fail():
    ok, log = cuda_tools.nvrtc_compile(SOURCES["sgd"].replace("gi;", "gj;", 1), "compute_75")
    assert not ok and "gj" in log


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
def test_local_memory_check_can_fail():
    """The old fused 16-bit step's pattern: ADAM's element on a pointer to either the
    master copy or a local."""
    kernel = KERNELS["adam"]
    scalars = ", ".join(kernel.scalars)
    parameters = ", ".join(f"float {s}" for s in kernel.scalars)
    step = f"""
extern "C" __global__ void f(unsigned short* wbits, const unsigned short* gbits, float* master,
                             const int has_master, float* m, float* v, {parameters},
                             const int code, const long long n) {{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {{
        float gv = mx_as_float(mx_widen(gbits[i], code));
        float wv = has_master ? master[i] : mx_as_float(mx_widen(wbits[i], code));
        float* wp = has_master ? master + i : &wv;
        adam_element<float>(0, wp, &gv, m + i, v + i, {scalars});
        const unsigned int f = mx_as_uint(*wp);
        wbits[i] = code == 1 ? mx_single_to_bfloat(f, false, 0) : mx_single_to_half(f, false, 0);
    }}
}}
"""
    source = "\n".join([CUDA_PREAMBLE, PRECISION_SOURCE, element_source(kernel), step])
    assert ".local" in cuda_tools.nvrtc_ptx(source, "compute_90")


@pytest.mark.skipif(not cuda_tools.have_nvcc(), reason="nvcc not on PATH")
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_compiles_with_nvcc(name):
    ok, log = cuda_tools.nvcc_compile(SOURCES[name], "sm_90")
    assert ok, log


def _run_twin(kernel, dtype, w, g, state, scalars, workdir):
    twin = cuda_tools.cpu_twin(kernel, workdir)
    ctype = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}[dtype]
    pointer = ctypes.POINTER(ctype)
    pointers = (pointer * max(1, len(state)))(*[a.ctypes.data_as(pointer) for a in state])
    s = np.array(scalars, dtype=dtype)  # rounded once, as kernel arguments are
    sums = np.zeros(2)
    run = twin.run_float if dtype == np.float32 else twin.run_double
    run(
        w.ctypes.data_as(pointer),
        g.ctypes.data_as(pointer),
        pointers,
        s.ctypes.data_as(pointer),
        ctypes.c_longlong(w.size),
        sums.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
    )
    return sums


def serial_cpu_run(kernel, w, g, state, scalars):
    """One serial CPU kernel call on whole arrays (not recorded, never cut in chunks)."""
    entry = _cpu.entry_point(kernel, w.dtype)
    if kernel.reduces:
        partial = np.empty((-(-w.size // REDUCE_BLOCK), 2))
        return entry(w, g, state, scalars, False, partial)
    return entry(w, g, state, scalars, False)


@pytest.mark.skipif(not cuda_tools.have_cxx(), reason="g++ not on PATH")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cuda_math_matches_the_cpu_kernel_bit_for_bit(
    case, variant, dtype, recorded_calls, tmp_path_factory
):
    _train(case, VARIANTS[variant], dtype)
    assert recorded_calls
    bits = np.uint32 if dtype == np.float32 else np.uint64
    workdir = str(tmp_path_factory.getbasetemp())
    for kernel, w, g, state, scalars in list(recorded_calls):
        cpu_w, cpu_state = w.copy(), tuple(a.copy() for a in state)
        result = serial_cpu_run(kernel, cpu_w, g, cpu_state, scalars)
        gpu_w, gpu_state = w.copy(), [a.copy() for a in state]
        sums = _run_twin(kernel, dtype, gpu_w, g, gpu_state, scalars, workdir)
        label = f"{kernel.name}"
        np.testing.assert_array_equal(gpu_w.view(bits), cpu_w.view(bits), err_msg=label)
        for name, a, b in zip(kernel.state, gpu_state, cpu_state, strict=True):
            np.testing.assert_array_equal(a.view(bits), b.view(bits), err_msg=f"{label} {name}")
        if kernel.reduces:
            assert tuple(sums) == tuple(result[1:]), label

"""Adafactor's factored path: torch agreement on matrices, oracle on batched and chunked
shapes, CUDA sources (compiled, and their work items run on the CPU bit for bit against
Numba), serial against parallel CPU loops, and the edge cases."""

from __future__ import annotations

import contextlib
import ctypes
import os
import types

import numpy as np
import pytest

import mxopt
from mxopt.kernels import cpu as _cpu
from mxopt.kernels import factored
from mxopt.kernels.kernel import CUDA_PREAMBLE, DTYPES
from tests import cuda_tools
from tests.cases import TOLERANCE, VARIANTS, Case, trajectory
from tests.parallel_tools import cut_everything, cut_nothing

DTYPE_IDS = {np.float32: "f32", np.float64: "f64"}

# ---------------------------------------------------------------------------------------
# torch.optim.Adafactor on matrices and batches of matrices


def _torch_run(shape, options, torch_options, dtype, steps=50, seed=0):
    """Max |w - w_torch| over ``steps`` updates, and both final states."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    start = np.array(rng.normal(size=shape), dtype=dtype)
    weight = start.copy()
    param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    torch_optimizer = torch.optim.Adafactor([param], **torch_options)
    state = mxopt.OptimizationState(batch_size=1)
    updater = mxopt.get_updater(mxopt.Adafactor(**options, state=state))
    state.begin_epoch()
    deviation = 0.0
    for step in range(1, steps + 1):
        grad = np.array(rng.normal(size=shape), dtype=dtype)
        if step == 7:
            grad[...] = 0
        state.begin_batch()
        updater(0, grad, weight)
        param.grad = torch.from_numpy(grad.copy())
        torch_optimizer.step()
        deviation = max(deviation, float(np.max(np.abs(weight - param.detach().numpy()))))
    torch_state = {k: v.numpy() for k, v in torch_optimizer.state[param].items() if k != "step"}
    return deviation, updater.states[0].arrays, torch_state


TORCH_SETTINGS = {
    "default": ({}, {}),
    "wd-maximize": (
        {"lr": 0.05, "beta2_decay": -0.5, "eps2": 1e-2, "d": 2.0, "weight_decay": 0.1,
         "maximize": True},
        {"lr": 0.05, "beta2_decay": -0.5, "eps": (None, 1e-2), "d": 2.0, "weight_decay": 0.1,
         "maximize": True},
    ),
    "eps1": ({"lr": 0.5, "eps1": 0.3, "eps2": 0.0}, {"lr": 0.5, "eps": (0.3, 0.0)}),
}  # fmt: skip

TORCH_SHAPES = {"2d": (37, 23), "3d": (3, 17, 11), "4d": (2, 2, 5, 3), "chunked": (2, 4099, 3)}


@pytest.mark.parametrize("setting", TORCH_SETTINGS)
@pytest.mark.parametrize("shape", TORCH_SHAPES.values(), ids=TORCH_SHAPES.keys())
def test_matches_torch_over_50_float32_steps(shape, setting):
    options, torch_options = TORCH_SETTINGS[setting]
    deviation, state, torch_state = _torch_run(shape, options, torch_options, np.float32)
    assert deviation <= 2e-5, deviation
    assert set(state) == set(torch_state) == {"row_var", "col_var"}
    for name, expected in torch_state.items():
        assert state[name].shape == expected.shape
        np.testing.assert_allclose(state[name], expected, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("shape", [(37, 23), (3, 17, 11), (40,), ()], ids=["2d", "3d", "1d", "0d"])
def test_matches_torch_in_float64(shape):
    options, torch_options = TORCH_SETTINGS["wd-maximize"]
    deviation, state, torch_state = _torch_run(shape, options, torch_options, np.float64)
    assert deviation <= 1e-12, deviation
    for name, expected in torch_state.items():
        np.testing.assert_allclose(state[name], expected, rtol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------------------
# The float64 oracle on shapes the generic tests do not cover

ORACLE_SHAPES = {
    "3d": (2, 3, 4),
    "4d": (2, 1, 3, 5),
    "1x1": (1, 1),
    "row": (1, 9),
    "column": (9, 1),
    "wide": (2, 4097),  # two chunks per row
    "tall": (4097, 2),  # two chunks per column
}
ORACLE_CASES = [
    Case("Adafactor", "default"),
    Case("Adafactor", "floors", {"eps1": 0.5, "eps2": 0.1, "d": 1.5, "lr": 0.5}),
    Case("Adafactor", "coupled", {"decoupled_weight_decay": False, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("dtype", DTYPE_IDS, ids=DTYPE_IDS.values())
@pytest.mark.parametrize("shape", ORACLE_SHAPES.values(), ids=ORACLE_SHAPES.keys())
@pytest.mark.parametrize("case", ORACLE_CASES, ids=[c.label for c in ORACLE_CASES])
def test_matches_oracle_on_batched_and_chunked_shapes(case, shape, dtype):
    rtol, atol = TOLERANCE[dtype]
    for step, weight, state, ref_weight, ref_state in trajectory(
        case, VARIANTS["clip"], dtype, shape
    ):
        np.testing.assert_allclose(weight, ref_weight, rtol=rtol, atol=atol, err_msg=f"{step}")
        assert set(state.arrays) == set(ref_state)
        for name, expected in ref_state.items():
            assert state.arrays[name].shape == expected.shape
            np.testing.assert_allclose(
                state.arrays[name], expected, rtol=rtol, atol=atol, err_msg=f"{name} {step}"
            )


def test_factored_state_is_one_row_and_one_column_per_matrix():
    state = mxopt.create_state(mxopt.Adafactor(), 0, np.zeros((4, 6, 7), np.float32))
    assert {k: a.shape for k, a in state.arrays.items()} == {
        "row_var": (4, 6, 1),
        "col_var": (4, 1, 7),
    }
    assert sum(a.size for a in state.arrays.values()) == 4 * (6 + 7)


@pytest.mark.parametrize("dtype", DTYPE_IDS, ids=DTYPE_IDS.values())
@pytest.mark.parametrize("shape", [(6,), (2, 3)], ids=["1d", "2d"])
def test_default_eps1_is_the_machine_epsilon_of_the_dtype(shape, dtype):
    # A gradient below eps1, so both floors act: U = g / eps1 on the first step.
    eps = float(np.finfo(dtype).eps)
    grad = np.full(shape, eps / 4, dtype)
    results = {}
    for eps1 in (0.0, eps, 2 * eps):
        state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
        weight = np.ones(shape, dtype)
        mxopt.get_updater(mxopt.Adafactor(eps1=eps1, state=state))(0, grad, weight)
        results[eps1] = weight
    np.testing.assert_array_equal(results[0.0], results[eps])
    assert not np.array_equal(results[eps], results[2 * eps])
    np.testing.assert_allclose(results[0.0], 1 - 0.01 * 0.25, rtol=1e-6)  # alpha = 0.01
    np.testing.assert_allclose(results[2 * eps], 1 - 0.01 * 0.125, rtol=1e-6)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (2, 0, 4), (0,)])
def test_empty_weights_are_left_alone(shape):
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(mxopt.Adafactor(state=state))
    weight = np.zeros(shape, np.float32)
    updater(0, np.zeros(shape, np.float32), weight)
    wstate = updater.states[0]
    assert wstate.step == 1
    for array in wstate.arrays.values():
        assert np.all(array == 0)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4)], ids=["2d", "3d"])
def test_non_finite_gradient_changes_nothing(shape):
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    updater = mxopt.get_updater(mxopt.Adafactor(state=state))
    rng = np.random.default_rng(0)
    weight = rng.normal(size=shape).astype(np.float32)
    updater(0, rng.normal(size=shape).astype(np.float32), weight)
    before = weight.copy()
    saved = {k: a.copy() for k, a in updater.states[0].arrays.items()}
    grad = rng.normal(size=shape).astype(np.float32)
    grad.flat[3] = np.nan
    grad.flat[-1] = np.inf
    with pytest.raises(FloatingPointError, match="2 NaN or infinite"):
        updater(0, grad, weight)
    np.testing.assert_array_equal(weight, before)
    for name, array in updater.states[0].arrays.items():
        np.testing.assert_array_equal(array, saved[name])
    assert updater.states[0].step == 1


# ---------------------------------------------------------------------------------------
# Serial and parallel CPU loops give the same bits, whatever the thread count

PARALLEL_SHAPES = {"tall": (4099, 5), "wide": (3, 9000), "batched": (3, 70, 130)}


@pytest.mark.parametrize("dtype", DTYPE_IDS, ids=DTYPE_IDS.values())
@pytest.mark.parametrize("shape", PARALLEL_SHAPES.values(), ids=PARALLEL_SHAPES.keys())
def test_parallel_loops_match_serial_loops_bit_for_bit(shape, dtype, monkeypatch):
    case = Case("Adafactor", "coupled", {"decoupled_weight_decay": False, "weight_decay": 0.1})

    def run():
        return [
            (w.copy(), {k: a.copy() for k, a in s.arrays.items()})
            for _, w, s, _, _ in trajectory(case, VARIANTS["clip"], dtype, shape)
        ]

    cut_nothing(monkeypatch)
    serial = run()
    cut_everything(monkeypatch)
    parallel = run()
    cut_everything(monkeypatch, threads_count=1)
    one_thread = run()
    assert "col_partials" in factored._compiled
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for other in (parallel, one_thread):
        for (w_s, s_s), (w_p, s_p) in zip(serial, other, strict=True):
            np.testing.assert_array_equal(w_p.view(bits), w_s.view(bits))
            for name in s_s:
                np.testing.assert_array_equal(s_p[name].view(bits), s_s[name].view(bits))


# ---------------------------------------------------------------------------------------
# CUDA sources of the factored path

SOURCE = factored.factored_module_source()


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
@pytest.mark.parametrize("arch", cuda_tools.ARCHITECTURES)
def test_factored_source_compiles_with_nvrtc(arch):
    ok, log = cuda_tools.nvrtc_compile(SOURCE, arch)
    assert ok, log
    assert "warning" not in log.lower(), log
    for name in factored.FACTORED_ITEMS:
        for ctype in DTYPES.values():
            assert f"mxopt_adafactor_{name}_{ctype}(" in SOURCE


@pytest.mark.skipif(not cuda_tools.have_nvrtc(), reason="NVRTC not installed (test extra)")
def test_nvrtc_check_of_the_factored_source_can_fail():
    ok, log = cuda_tools.nvrtc_compile(
        SOURCE.replace("rpart[t] = s;", "rpart[t] = z;"), "compute_75"
    )
    assert not ok and "z" in log


@pytest.mark.skipif(not cuda_tools.have_nvcc(), reason="nvcc not on PATH")
def test_factored_source_compiles_with_nvcc():
    ok, log = cuda_tools.nvcc_compile(SOURCE, "sm_90")
    assert ok, log


_SHIM = r"""
#include <cmath>
using std::sqrt;
#define __device__
#define __forceinline__ inline
"""


def _driver(name: str, ctype: str) -> str:
    """``drive_<name>_<ctype>(..., count)``: the CUDA work item for t = 0 .. count-1."""
    params = [p.replace("T*", f"{ctype}*").replace("const T ", f"const {ctype} ")
              for p in factored.FACTORED_ITEMS[name]]  # fmt: skip
    args = ", ".join(["t", *(p.split()[-1] for p in params)])
    return (
        f'extern "C" void drive_{name}_{ctype}({", ".join(params)}, long long count) {{\n'
        f"    for (long long t = 0; t < count; ++t) adafactor_{name}<{ctype}>({args});\n}}\n"
    )


@pytest.fixture(scope="module")
def cuda_on_cpu(tmp_path_factory):
    """The factored path's CUDA work items built with g++ (a ctypes library)."""
    if not cuda_tools.have_cxx():
        pytest.skip("g++ not on PATH")
    drivers = [_driver(n, c) for n in factored.FACTORED_ITEMS for c in DTYPES.values()]
    source = "\n".join([_SHIM, CUDA_PREAMBLE, factored.FACTORED_DEVICE_SOURCE, *drivers])
    folder = tmp_path_factory.mktemp("adafactor_twin")
    return cuda_tools.build_cpu_library(source, os.path.join(folder, "twin"))


class _FakeCuda(types.ModuleType):
    """Stands in for mxopt.kernels.cuda: "launches" run the g++ build of the CUDA items, over
    every item index in order, on NumPy arrays. Arguments are converted by their exact
    types, so a wrong argument type or count fails here as it would with CuPy."""

    def __init__(self, lib):
        super().__init__("mxopt.kernels.cuda")
        self.lib = lib
        self.THREADS = 256
        self.launches = []

    def grid_size(self, n):
        return 1

    def count_nonfinite(self, g):
        return int((~np.isfinite(g)).sum())

    def device_of(self, array):
        return contextlib.nullcontext()

    def compiled_module(self, key, make_source):
        assert make_source() == SOURCE
        return self

    def get_function(self, symbol):
        prefix = "mxopt_adafactor_"
        assert symbol.startswith(prefix)
        driver = getattr(self.lib, "drive_" + symbol[len(prefix) :])
        item, ctype = symbol[len(prefix) :].rsplit("_", 1)

        def launch(grid, block, args):
            assert grid == (1,) and block == (256,)
            params = [
                p.replace("T*", f"{ctype}*").replace("const T ", f"const {ctype} ")
                for p in (*factored.FACTORED_ITEMS[item], "const long long count")
            ]
            assert len(args) == len(params), symbol
            converted = []
            for param, arg in zip(params, args, strict=True):
                if "*" in param:
                    assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, param
                    kind = "double" if "double" in param else DTYPES[arg.dtype]
                    assert kind in param, (symbol, param, arg.dtype)
                    converted.append(ctypes.c_void_p(arg.ctypes.data))
                elif "long long" in param:
                    assert type(arg) is np.int64, (symbol, param, type(arg))
                    converted.append(ctypes.c_longlong(int(arg)))
                else:
                    scalar = {np.float32: ctypes.c_float, np.float64: ctypes.c_double}[type(arg)]
                    assert DTYPES[np.dtype(type(arg))] in param, (symbol, param, type(arg))
                    converted.append(scalar(arg))
            self.launches.append(item)
            driver(*converted)

        return launch


class _NumpyCudaFactored(factored._CudaFactored):
    xp = types.SimpleNamespace(empty=np.empty, asnumpy=np.asarray)


TWIN_SHAPES = {"2d": (3, 5), "3d": (2, 3, 4), "wide": (2, 4100), "tall": (4100, 3)}
TWIN_OPTIONS = {
    "default": {},
    "coupled-clip": {"decoupled_weight_decay": False, "weight_decay": 0.05, "grad_clip": 0.2},
    "floors-maximize": {"eps1": 0.5, "lr": 0.5, "weight_decay": 0.1, "maximize": True},
}


@pytest.mark.parametrize("options", TWIN_OPTIONS.values(), ids=TWIN_OPTIONS.keys())
@pytest.mark.parametrize("dtype", DTYPE_IDS, ids=DTYPE_IDS.values())
@pytest.mark.parametrize("shape", TWIN_SHAPES.values(), ids=TWIN_SHAPES.keys())
def test_gpu_updates_run_on_the_cpu_match_the_cpu_updates_bit_for_bit(
    shape, dtype, options, cuda_on_cpu, monkeypatch
):
    """Adafactor.apply with the CUDA backend, its work items built with g++, against apply
    with the Numba backend: the same bits after every update."""
    monkeypatch.setattr(factored, "_CudaFactored", _NumpyCudaFactored)
    fake = _FakeCuda(cuda_on_cpu)
    rng = np.random.default_rng(3)
    state = mxopt.OptimizationState(batch_size=2)
    optimizer = mxopt.Adafactor(**options, state=state)
    start = rng.normal(size=shape).astype(dtype)
    runs = {}
    for name, backend in (("cpu", _cpu), ("cuda", fake)):
        weight = start.copy()
        wstate = mxopt.create_state(optimizer, 0, weight)
        state.curr_epoch = state.curr_batch = state.curr_iter = 0
        state.begin_epoch()
        rng = np.random.default_rng(4)
        history = []
        for step in range(1, 6):
            state.begin_batch()
            grad = (rng.normal(size=shape) * 3).astype(dtype) * (step != 3)
            grad.reshape(-1)[:7] = 0
            prepared = optimizer.prepare(optimizer.values(state), step, {})
            bad = optimizer.apply(backend, weight.reshape(-1), grad.reshape(-1), wstate, prepared,
                                  True)  # fmt: skip
            assert bad == 0
            history.append([weight.copy(), *(a.copy() for a in wstate.arrays.values())])
        runs[name] = history
    assert fake.launches[:6] == [
        "row_partials", "col_partials", "combine", "row_norms", "sums", "step"
    ]  # fmt: skip
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for step, (cpu, cuda) in enumerate(zip(runs["cpu"], runs["cuda"], strict=True), 1):
        for name, a, b in zip(("weight", "row_var", "col_var"), cpu, cuda, strict=True):
            np.testing.assert_array_equal(b.view(bits), a.view(bits), err_msg=f"{name} {step}")


def test_gpu_path_reports_non_finite_gradients_and_writes_nothing(cuda_on_cpu, monkeypatch):
    monkeypatch.setattr(factored, "_CudaFactored", _NumpyCudaFactored)
    fake = _FakeCuda(cuda_on_cpu)
    state = mxopt.OptimizationState(batch_size=1, curr_epoch=1, curr_batch=1, curr_iter=1)
    optimizer = mxopt.Adafactor(state=state)
    weight = np.ones((3, 4), np.float32)
    wstate = mxopt.create_state(optimizer, 0, weight)
    grad = np.ones((3, 4), np.float32)
    grad[1, 2] = np.nan
    prepared = optimizer.prepare(optimizer.values(state), 1, {})
    assert optimizer.apply(fake, weight.reshape(-1), grad.reshape(-1), wstate, prepared, True) == 1
    assert fake.launches == []
    assert np.all(weight == 1) and all(np.all(a == 0) for a in wstate.arrays.values())


def test_bit_comparison_can_fail(cuda_on_cpu, monkeypatch):
    """A change in one CPU function (here the column sums, by one ulp) is caught."""
    original = factored.cpu_function

    def perturbed(name):
        function = original(name)
        if name != "col_partials":
            return function

        def wrong(first, last, w, g, cpart, *rest):
            function(first, last, w, g, cpart, *rest)
            cpart[0] = np.nextafter(cpart[0], np.inf) * 1.5

        return wrong

    monkeypatch.setattr(factored, "cpu_function", perturbed)
    with pytest.raises(AssertionError, match="not equal"):
        test_gpu_updates_run_on_the_cpu_match_the_cpu_updates_bit_for_bit(
            (3, 5), np.float64, {}, cuda_on_cpu, monkeypatch
        )

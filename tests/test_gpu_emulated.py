"""The GPU path, run on the CPU: mxopt's CUDA kernels built with g++ and launched through a
fake ``cupy`` (tests/fake_cupy), compared bit for bit with the Numba kernels.

Everything mxopt does with CuPy runs here: kernel source generation, module compilation
and memoisation per device, grid sizes, argument lists and types, the elementwise,
segmented and reducing kernels, count_nonfinite, state placement, packed buffers,
checkpoints moving between backends. The fake is strict where a GPU would fail or
silently misread arguments (see tests/fake_cupy/__init__.py), and is visible as
``cupy`` only inside each test (the ``cupy`` fixture).
"""

from __future__ import annotations

import shutil
import threading
import types

import numpy as np
import pytest

import mxopt
from mxopt.kernels import cuda as _cuda
from mxopt.kernels import factored
from mxopt.kernels.kernel import KERNELS
from tests import fake_cupy
from tests.cases import CASES, SHAPES, VARIANTS, make_optimizer, trajectory

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")

DTYPES = {np.float32: "f32", np.float64: "f64"}
BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
DTYPES_C = {np.float32: "float", np.float64: "double"}
#: The first case of every optimizer, for the tests that need not run every case.
FIRST_CASES = [
    c for k, c in enumerate(CASES) if c.optimizer not in {d.optimizer for d in CASES[:k]}
]


def _all_sources() -> list:
    import mxopt.kernels.statistics  # noqa: F401
    import mxopt.optimizers.averaging  # noqa: F401  (register every kernel)

    sources = [_cuda.module_source(kernel) for kernel in KERNELS.values()]
    return [*sources, _cuda.NONFINITE_SOURCE, factored.factored_module_source()]


@pytest.fixture(scope="module")
def _built():
    """Every CUDA module of mxopt built once with g++, in parallel (cached on disk)."""
    fake_cupy.precompile(_all_sources(), _cuda.NVRTC_OPTIONS)


@pytest.fixture
def cupy(monkeypatch, _built):
    """The fake ``cupy`` for one test; mxopt's per-device module memo starts empty and is
    restored afterwards (so a real CuPy in a later test never sees a fake module)."""
    module = fake_cupy.install(monkeypatch)
    monkeypatch.setattr(_cuda, "_modules", {})
    monkeypatch.setattr(_cuda, "_launch_limits", {})
    return module


def host(array) -> np.ndarray:
    """A NumPy copy of a GPU array (fake or real: the GPU tests of other modules run on
    both), or the NumPy array itself."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def bits(array) -> np.ndarray:
    a = np.ascontiguousarray(host(array))
    return a.view(BITS[a.dtype])


def assert_same_bits(actual, expected, message=""):
    np.testing.assert_array_equal(bits(actual), bits(expected), err_msg=message)


def assert_same_states(gpu, cpu, *, backend="cupy"):
    """Two updaters hold the same states, bit for bit; the first one's on ``backend``."""
    assert gpu.states.keys() == cpu.states.keys()
    for index, expected in cpu.states.items():
        state = gpu.states[index]
        assert (state.step, state.skipped) == (expected.step, expected.skipped), index
        assert state.memory == expected.memory, index
        assert state.arrays.keys() == expected.arrays.keys(), index
        for name, array in expected.arrays.items():
            if state.arrays[name].size:
                assert state.backend == backend
                array_type = fake_cupy.ndarray if backend == "cupy" else np.ndarray
                assert type(state.arrays[name]) is array_type, (index, name)
            assert state.arrays[name].shape == array.shape, (index, name)
            assert_same_bits(state.arrays[name], array, f"{index!r} {name}")


# ---------------------------------------------------------------------------------------
# (1) Every case of tests/cases.py: the CPU trajectory and the emulated GPU trajectory


def compare_trajectories(case, variant, dtype, shape, cupy):
    cpu = trajectory(case, VARIANTS[variant], dtype, shape, np)
    gpu = trajectory(case, VARIANTS[variant], dtype, shape, cupy)
    for (step, w_cpu, s_cpu, _, _), (_, w_gpu, s_gpu, _, _) in zip(cpu, gpu, strict=True):
        assert type(w_gpu) is cupy.ndarray and s_gpu.backend == "cupy"
        assert_same_bits(w_gpu, w_cpu, f"weight, step {step}")
        assert s_gpu.arrays.keys() == s_cpu.arrays.keys()
        for name, array in s_cpu.arrays.items():
            assert type(s_gpu.arrays[name]) is cupy.ndarray, name
            assert s_gpu.arrays[name].shape == array.shape, name
            assert_same_bits(s_gpu.arrays[name], array, f"{name}, step {step}")
    if np.prod(shape) > 0:
        assert sum(cupy.LAUNCHES.values()) >= 9, "the CUDA kernels did not run"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPES.values())
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_case_gives_the_cpu_bits_on_the_gpu(case, variant, dtype, cupy):
    compare_trajectories(case, variant, dtype, (1031,), cupy)


OTHER_SHAPES = {**SHAPES, "matrix": (7, 149), "batched": (2, 3, 41)}


@pytest.mark.parametrize("shape", OTHER_SHAPES.values(), ids=OTHER_SHAPES.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_case_gives_the_cpu_bits_on_the_gpu_for_every_shape(case, shape, cupy):
    compare_trajectories(case, "clip", np.float32, shape, cupy)


# Past the launch limit (fake_cupy.MULTIPROCESSOR_COUNT * 32 blocks of 256 threads), so the
# grid-stride loops go round; several reduction chunks; Adafactor's chunked factors.
LARGE_SHAPES = {"long": (20011,), "wide": (2, 4100), "tall": (4100, 3)}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPES.values())
@pytest.mark.parametrize("shape", LARGE_SHAPES.values(), ids=LARGE_SHAPES.keys())
@pytest.mark.parametrize("case", FIRST_CASES, ids=[c.id for c in FIRST_CASES])
def test_large_arrays_give_the_cpu_bits_on_the_gpu(case, shape, dtype, cupy):
    assert 20011 > 32 * fake_cupy.MULTIPROCESSOR_COUNT * _cuda.THREADS
    compare_trajectories(case, "decay", dtype, shape, cupy)


def test_kernels_are_compiled_once_per_device_with_nvrtc_options(cupy):
    state = mxopt.OptimizationState(4, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    weight = cupy.ones(10, dtype=cupy.float32)
    for _ in range(3):
        updater(0, cupy.ones(10, dtype=cupy.float32), weight)
    modules = dict(_cuda._modules)
    assert {key[1] for key in modules} == {0}
    assert all(m.options == _cuda.NVRTC_OPTIONS for m in modules.values())
    assert "--fmad=false" in _cuda.NVRTC_OPTIONS
    with cupy.cuda.Device(1):
        weight = cupy.ones(10, dtype=cupy.float32)
        updater(1, cupy.ones(10, dtype=cupy.float32), weight)
    assert {key[1] for key in _cuda._modules} == {0, 1}
    assert cupy.LAUNCHES["mxopt_adam_float"] == 4


# ---------------------------------------------------------------------------------------
# (2) update_many, ParameterBuffer, segmented norms, global clipping, averages

MODEL = {"w1": (7, 149), "b1": (149,), "empty": (0,), "big": (5100,), "one": (1,), "t": (3, 4, 5)}
MANY_CASES = [c for c in CASES if c.id in {
    "SGD-nesterov", "ADAM-amsgrad", "LAMB-tight-ratio", "LARS-larc", "Adafactor-default",
    "Nadam-scheduler", "RMSProp-centered-momentum", "ASGD-averaging", "Rprop-etas-bounds",
    "Lookahead-adam", "AdaGrad-default", "Lion-default",
}]  # fmt: skip
CONFIGS = {
    "clip-ema": lambda: {"max_grad_norm": 1.0, "averaging": mxopt.EMA(0.9)},
    "polyak-skip": lambda: {"averaging": mxopt.Polyak(), "nonfinite": "skip"},
    "loss-scaler": lambda: {"loss_scaler": mxopt.DynamicLossScaler(init_scale=4.0)},
    "apply": lambda: {"nonfinite": "apply", "max_grad_norm": 50.0},
}


def train(case, config, xp, *, packed, steps=6, dtype=np.float32, groups=False):
    """``steps`` updates of MODEL's weights through update_many or update_buffer; a NaN
    arrives in step 3 (when the config skips or scales). Returns the updater, the weights,
    the buffer (or None) and the history: ``(applied, host copies of the weights)`` per step.
    """
    options = CONFIGS[config]()
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(make_optimizer(case, {"grad_clip": 0.7}, state), **options)
    if groups:
        updater.set_lr_mult({"b*": 0.5})
        updater.exclude_from_weight_decay()
        updater.set_groups([["w1", "b1"], ["empty", "big"], ["one", "t"]])
    rng = np.random.default_rng(5)
    start = {k: rng.normal(size=s).astype(dtype) for k, s in MODEL.items()}
    buffer = None
    if packed:
        buffer = mxopt.ParameterBuffer(MODEL, dtype=dtype, xp=xp)
        for k, a in start.items():
            buffer.weights[k][...] = xp.asarray(a)
        weights = buffer.weights
    else:
        weights = {k: xp.asarray(a) for k, a in start.items()}
    nan_step = 3 if options.get("nonfinite") == "skip" or "loss_scaler" in options else None
    history = []
    for step in range(steps):
        if step % 3 == 0:
            state.begin_epoch()
        state.begin_batch()
        if groups and step == 2:
            updater.freeze_to(1)
        if groups and step == 4:
            updater.unfreeze()
        grads = {k: (rng.normal(size=s) * 2).astype(dtype) for k, s in MODEL.items()}
        if step == nan_step:
            grads["w1"][2, 3] = np.nan
        if packed:
            for k, g in grads.items():
                buffer.grads[k][...] = xp.asarray(g)
            applied = updater.update_buffer(buffer)
        else:
            device_grads = [xp.asarray(grads[k]) for k in MODEL]
            applied = updater.update_many(list(MODEL), device_grads, [weights[k] for k in MODEL])
        history.append((applied, {k: host(w).copy() for k, w in weights.items()}))
    return types.SimpleNamespace(updater=updater, weights=weights, buffer=buffer, history=history)


def compare_training(case, config, cupy, **options):
    """train() on the CPU and on the GPU: the same bits after every step; both runs."""
    cpu, gpu = train(case, config, np, **options), train(case, config, cupy, **options)
    for step, ((applied, w_gpu), (expected, w_cpu)) in enumerate(
        zip(gpu.history, cpu.history, strict=True)
    ):
        assert applied == expected, step
        for k in MODEL:
            assert_same_bits(w_gpu[k], w_cpu[k], f"{k}, step {step}")
    assert_same_states(gpu.updater, cpu.updater)
    assert gpu.updater.skipped == cpu.updater.skipped
    if "loss-scaler" in config:
        assert gpu.updater.loss_scaler.scale == cpu.updater.loss_scaler.scale
    return gpu, cpu


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", MANY_CASES, ids=[c.id for c in MANY_CASES])
def test_update_many_gives_the_cpu_bits_on_the_gpu(case, config, cupy):
    compare_training(case, config, cupy, packed=False)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("case", MANY_CASES, ids=[c.id for c in MANY_CASES])
def test_update_buffer_gives_the_cpu_bits_on_the_gpu(case, config, cupy):
    compare_training(case, config, cupy, packed=True)
    if case.optimizer in ("LAMB", "LARS"):  # per-tensor norms: the segmented kernels ran
        name = {"LAMB": "lamb_moments", "LARS": "lars_norms"}[case.optimizer]
        assert cupy.LAUNCHES[f"mxopt_{name}_float_segments"] > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPES.values())
@pytest.mark.parametrize("case", MANY_CASES, ids=[c.id for c in MANY_CASES])
def test_buffer_with_groups_and_freezing_gives_the_cpu_bits_on_the_gpu(case, dtype, cupy):
    compare_training(case, "clip-ema", cupy, packed=True, groups=True, dtype=dtype)
    if case.optimizer != "Adafactor":  # (whose factored state is never packed)
        assert cupy.LAUNCHES["mxopt_grad_squares_" + DTYPES_C[dtype] + "_segments"] > 0


@pytest.mark.parametrize("packed", [False, True], ids=["lists", "buffer"])
def test_global_clipping_acts_on_the_gpu(packed, cupy):
    case = next(c for c in CASES if c.id == "SGD-momentum")
    clipped, _ = compare_training(case, "clip-ema", cupy, packed=packed)
    unclipped = train(case, "apply", cupy, packed=packed)
    assert not np.array_equal(
        bits(clipped.updater.states["big"].arrays["velocity"]),
        bits(unclipped.updater.states["big"].arrays["velocity"]),
    )


@pytest.mark.parametrize("packed", [False, True], ids=["lists", "buffer"])
@pytest.mark.parametrize("case", MANY_CASES[:4], ids=[c.id for c in MANY_CASES[:4]])
def test_swapping_averages_on_the_gpu(case, packed, cupy):
    gpu_run, cpu_run = compare_training(case, "clip-ema", cupy, packed=packed)
    gpu, gpu_weights = gpu_run.updater, gpu_run.weights
    cpu, cpu_weights = cpu_run.updater, cpu_run.weights
    before = {k: bits(w).copy() for k, w in gpu_weights.items()}
    gpu.swap_averages(gpu_weights)
    cpu.swap_averages(cpu_weights)
    for k in MODEL:
        assert_same_bits(gpu_weights[k], cpu_weights[k], k)
        assert_same_bits(gpu.averages[k], cpu.averages[k], k)
    with gpu.averaged(gpu_weights):  # swaps back, then again on leaving
        for k in MODEL:
            np.testing.assert_array_equal(bits(gpu_weights[k]), before[k])
    gpu.swap_averages(gpu_weights)
    for k in MODEL:
        np.testing.assert_array_equal(bits(gpu_weights[k]), before[k])
    assert cupy.LAUNCHES["mxopt_swap_average_float"] > 0


def test_global_norm_of_gpu_and_mixed_gradients(cupy):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=s).astype(np.float32) for s in ((7, 149), (0,), (9000,))]
    grads.append(rng.normal(size=(40, 30)).astype(np.float64)[:, ::3])  # strided
    expected = mxopt.global_norm(grads)
    assert mxopt.global_norm([cupy.asarray(g) for g in grads]) == expected
    mixed = [cupy.asarray(g) if k % 2 else g for k, g in enumerate(grads)]
    assert mxopt.global_norm(mixed) == expected
    bad = cupy.asarray(grads[2])
    bad[8191] = cupy.inf
    assert mxopt.global_norm([bad]) == np.inf


def blocked_dot(a, b) -> float:
    """The oracle of :func:`mxopt.kernels.statistics.dot`: float64 products added in order
    within blocks of 4096 (``np.cumsum`` adds sequentially), then the blocks in order."""
    products = a.astype(np.float64) * b.astype(np.float64)
    blocks = [np.cumsum(products[k : k + 4096])[-1] for k in range(0, products.size, 4096)]
    return float(np.cumsum(blocks)[-1]) if blocks else 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=str)
@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 20011])
def test_dot_is_the_same_blocked_sum_on_both_backends(n, dtype, cupy):
    """L-BFGS's dot products: the oracle's bits on the CPU and on the GPU (where a BLAS dot
    adds in cuBLAS's order: an H100 gave L-BFGS float64 weights 1 ulp off the CPU's)."""
    from mxopt.kernels.statistics import dot

    rng = np.random.default_rng(n)
    a, b = (rng.normal(size=n).astype(dtype) for _ in range(2))
    expected = blocked_dot(a, b)
    assert dot(a, b) == expected
    assert dot(cupy.asarray(a), cupy.asarray(b)) == expected


def test_dot_refuses_arrays_of_different_sizes():
    from mxopt.kernels.statistics import dot

    with pytest.raises(ValueError, match=r"differ in size \(3 and 4\)"):
        dot(np.ones(3), np.ones(4))


def test_strided_and_fortran_gradients_on_the_gpu(cupy):
    rng = np.random.default_rng(0)
    results = []
    for xp in (np, cupy):
        state = mxopt.OptimizationState(2, 1, 1, 1)
        updater = mxopt.get_updater(mxopt.ADAM(state=state))
        weight = xp.asarray(rng.normal(size=(30, 40)).astype(np.float32))
        big = rng.normal(size=(30, 80)).astype(np.float32)
        updater(0, xp.asarray(big)[:, ::2], weight)
        updater(0, xp.asarray(np.asfortranarray(big[:, :40])), weight)
        results.append((weight, updater))
        rng = np.random.default_rng(0)
    (w_cpu, cpu), (w_gpu, gpu) = results
    assert_same_bits(w_gpu, w_cpu)
    assert_same_states(gpu, cpu)


def test_updates_of_different_indices_in_threads_give_the_serial_bits(cupy):
    rng = np.random.default_rng(1)
    grads = [[rng.normal(size=3000).astype(np.float32) for _ in range(5)] for _ in range(4)]

    def run(parallel):
        state = mxopt.OptimizationState(2, 1, 1, 1)
        updater = mxopt.get_updater(mxopt.ADAM(state=state))
        weights = [cupy.zeros(3000, dtype=cupy.float32) for _ in grads]

        def work(k):
            for g in grads[k]:
                updater(k, cupy.asarray(g), weights[k])

        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(grads))]
        if parallel:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        else:
            for k in range(len(grads)):
                work(k)
        return weights

    for a, b in zip(run(True), run(False), strict=True):
        assert_same_bits(a, b)


# ---------------------------------------------------------------------------------------
# (3) Non-finite gradients: FloatingPointError naming the index, nothing modified

NONFINITE_CASES = [c for c in CASES if c.id in {
    "SGD-momentum", "ADAM-amsgrad", "LAMB-default", "LARS-larc", "Adafactor-default",
    "Nadam-default", "Lookahead-sgd-momentum", "ASGD-averaging", "Rprop-default",
}]  # fmt: skip
# positions in the first and last thread of a grid, past it (the stride loop) and at the end
BAD_POSITIONS = (0, 8191, 8192, 20010)


@pytest.mark.parametrize("shape", [(20011,), (3, 7, 953)], ids=["vector", "matrices"])
@pytest.mark.parametrize("case", NONFINITE_CASES, ids=[c.id for c in NONFINITE_CASES])
def test_non_finite_gpu_gradient_raises_naming_the_index_and_changes_nothing(case, shape, cupy):
    state = mxopt.OptimizationState(batch_size=2)
    updater = mxopt.get_updater(make_optimizer(case, {}, state), averaging=mxopt.EMA(0.5))
    rng = np.random.default_rng(2)
    weight = cupy.asarray(rng.normal(size=shape).astype(np.float32))
    grad = rng.normal(size=shape).astype(np.float32)
    bad = grad.copy()
    bad.reshape(-1)[list(BAD_POSITIONS)] = [np.nan, np.inf, -np.inf, np.nan]
    message = r"index 'layer': grad holds 4 NaN or infinite value\(s\) out of 200\d\d"
    state.begin_epoch()
    state.begin_batch()
    with pytest.raises(FloatingPointError, match=message):
        updater("layer", cupy.asarray(bad), weight)  # a new index: no state is kept
    assert updater.states == {}
    updater("layer", cupy.asarray(grad), weight)
    state.begin_batch()
    before = host(weight).copy()
    saved = {k: host(a).copy() for k, a in updater.states["layer"].arrays.items()}
    with pytest.raises(FloatingPointError, match=message):
        updater("layer", cupy.asarray(bad), weight)
    assert_same_bits(weight, before)
    for k, a in updater.states["layer"].arrays.items():
        assert_same_bits(a, saved[k], k)
    assert updater.states["layer"].step == 1
    updater("layer", cupy.asarray(grad), weight)
    assert updater.states["layer"].step == 2
    assert not np.array_equal(bits(weight), bits(before))
    assert cupy.LAUNCHES["mxopt_count_nonfinite_float"] > 0


@pytest.mark.parametrize("packed", [False, True], ids=["lists", "buffer"])
@pytest.mark.parametrize("groups", [False, True], ids=["one-run", "groups"])
def test_non_finite_gpu_gradients_in_a_step_name_their_indices(packed, groups, cupy):
    case = next(c for c in CASES if c.id == "LAMB-default")
    run = train(case, "clip-ema", cupy, packed=packed, steps=2, groups=groups)
    updater, weights = run.updater, run.weights
    before = {k: host(w).copy() for k, w in weights.items()}
    saved = {(i, n): host(a).copy() for i, s in updater.states.items() for n, a in s.arrays.items()}
    rng = np.random.default_rng(3)
    grads = {k: rng.normal(size=s).astype(np.float32) for k, s in MODEL.items()}
    grads["big"][5000] = np.inf
    grads["t"][2, 3, 4] = np.nan
    grads["t"][0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"indices 'big', 't': grad holds 3 NaN"):
        if packed:
            for k, g in grads.items():
                run.buffer.grads[k][...] = cupy.asarray(g)
            updater.update_buffer(run.buffer)
        else:
            updater.update_many(list(MODEL), [cupy.asarray(grads[k]) for k in MODEL],
                                [weights[k] for k in MODEL])  # fmt: skip
    for k, w in weights.items():
        assert_same_bits(w, before[k], k)
    for (i, n), a in saved.items():
        assert_same_bits(updater.states[i].arrays[n], a, f"{i} {n}")
        assert updater.states[i].step == 2


@pytest.mark.parametrize("packed", [False, True], ids=["lists", "buffer"])
def test_skipped_gpu_steps_are_counted(packed, cupy):
    case = next(c for c in CASES if c.id == "ADAM-default")
    run = train(case, "polyak-skip", cupy, packed=packed)
    assert [applied for applied, _ in run.history] == [True, True, True, False, True, True]
    for k in MODEL:
        np.testing.assert_array_equal(run.history[3][1][k], run.history[2][1][k])
    assert all(s.skipped == 1 and s.step == 5 for s in run.updater.states.values())


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPES.values())
@pytest.mark.parametrize("n", [0, 1, 255, 256, 8192, 8193, 30000])
def test_count_nonfinite_counts_exactly(n, dtype, cupy):
    rng = np.random.default_rng(n)
    g = rng.normal(size=n).astype(dtype)
    if n:
        picks = rng.choice(n, size=min(n, 37), replace=False)
        g[picks] = rng.choice([np.nan, np.inf, -np.inf], size=picks.size)
        g[-1] = np.nan
    expected = int((~np.isfinite(g)).sum())
    assert _cuda.count_nonfinite(cupy.asarray(g)) == expected
    assert _cuda.count_nonfinite(cupy.asarray(g)[1:]) == int((~np.isfinite(g[1:])).sum())


# ---------------------------------------------------------------------------------------
# (4) Checkpoints: saved from one backend, resumed on the other, bit-identical

CKPT_SHAPES = {"w": (3, 5), "b": (7,), 3: (1,)}


def _run(updater, weights, state, steps, xp, start=0):
    for step in range(start, start + steps):
        rng = np.random.default_rng([11, step])
        if step % 3 == 0:
            state.begin_epoch()
        state.begin_batch()
        for key, shape in CKPT_SHAPES.items():
            grad = (rng.normal(size=shape) * 2).astype(np.float32)
            if step == 2 and key == "b":
                grad[...] = 0
            updater(key, xp.asarray(grad), weights[key])


def _fresh(case, xp):
    state = mxopt.OptimizationState(batch_size=2)
    optimizer = make_optimizer(case, {"grad_clip": 0.7}, state)
    updater = mxopt.get_updater(optimizer, averaging=mxopt.EMA(0.9))
    rng = np.random.default_rng(99)
    weights = {k: xp.asarray(rng.normal(size=s).astype(np.float32)) for k, s in CKPT_SHAPES.items()}
    return updater, weights, state


@pytest.mark.parametrize("direction", ["cpu-to-gpu", "gpu-to-cpu"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_checkpoint_moves_between_backends_bit_identically(case, direction, tmp_path, cupy):
    before, after = (np, cupy) if direction == "cpu-to-gpu" else (cupy, np)
    reference, ref_weights, ref_state = _fresh(case, np)
    _run(reference, ref_weights, ref_state, 8, np)

    first, weights, state = _fresh(case, before)
    _run(first, weights, state, 3, before)
    saved = first.state_dict()
    for entry in saved["states"]:
        assert all(type(a) is np.ndarray for a in entry["arrays"].values())
    first.save(tmp_path / "run.ckpt")
    moved = {k: after.asarray(host(w)) for k, w in weights.items()}
    resumed = mxopt.load_updater(tmp_path / "run.ckpt", weights=moved)
    _run(resumed, moved, resumed.optimizer.state, 5, after, start=3)

    for key in ref_weights:
        assert type(moved[key]) is (np.ndarray if after is np else cupy.ndarray)
        assert_same_bits(moved[key], ref_weights[key], repr(key))
    assert_same_states(resumed, reference, backend="numpy" if after is np else "cupy")
    for key in ref_weights:
        assert_same_bits(resumed.averages[key], reference.averages[key], repr(key))


@pytest.mark.parametrize("case", MANY_CASES, ids=[c.id for c in MANY_CASES])
def test_checkpoint_resumes_into_a_gpu_parameter_buffer(case, tmp_path, cupy):
    """Saved from NumPy update_many, resumed on a CuPy ParameterBuffer (loaded states are
    moved to the GPU when the buffer packs them), against an uninterrupted NumPy run."""
    reference = train(case, "polyak-skip", np, packed=False, steps=6)
    first = train(case, "polyak-skip", np, packed=False, steps=3)
    first.updater.save(tmp_path / "run.ckpt")
    resumed = mxopt.load_updater(tmp_path / "run.ckpt")
    state = resumed.optimizer.state
    buffer = mxopt.ParameterBuffer(MODEL, xp=cupy)
    for k, w in first.weights.items():
        buffer.weights[k][...] = cupy.asarray(w)
    rng = np.random.default_rng(5)  # replay train()'s random stream to step 3
    for shape in MODEL.values():
        rng.normal(size=shape)
    for step in range(6):
        grads = {k: (rng.normal(size=s) * 2).astype(np.float32) for k, s in MODEL.items()}
        if step < 3:
            continue
        if step % 3 == 0:
            state.begin_epoch()
        state.begin_batch()
        if step == 3:
            grads["w1"][2, 3] = np.nan
        for k, g in grads.items():
            buffer.grads[k][...] = cupy.asarray(g)
        assert resumed.update_buffer(buffer) == reference.history[step][0]
        for k in MODEL:
            assert_same_bits(buffer.weights[k], reference.history[step][1][k], f"{k} {step}")
    assert_same_states(resumed, reference.updater)


# ---------------------------------------------------------------------------------------
# (5) Mixed backends and devices are refused before anything is written


def test_mixed_numpy_and_gpu_arrays_are_rejected(cupy):
    state = mxopt.OptimizationState(4, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.SGD(momentum=0.9, state=state))
    with pytest.raises(TypeError, match="index 0: weight is a cupy array but grad is a numpy"):
        updater(0, np.ones(4, np.float32), cupy.ones(4, dtype=cupy.float32))
    with pytest.raises(TypeError, match="index 0: weight is a numpy array but grad is a cupy"):
        updater(0, cupy.ones(4, dtype=cupy.float32), np.ones(4, np.float32))
    assert updater.states == {}

    updater(0, np.ones(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="index 0: the state of this index lives with a numpy"):
        updater(0, cupy.ones(4, dtype=cupy.float32), cupy.ones(4, dtype=cupy.float32))
    updater(1, cupy.ones(4, dtype=cupy.float32), cupy.ones(4, dtype=cupy.float32))
    with pytest.raises(ValueError, match="index 1: the state of this index lives with a cupy"):
        updater(1, np.ones(4, np.float32), np.ones(4, np.float32))

    weights = [np.ones(4, np.float32), cupy.ones(4, dtype=cupy.float32)]
    grads = [np.ones(4, np.float32), np.ones(4, np.float32)]  # the second is on the wrong side
    with pytest.raises(TypeError, match="index 1: weight is a cupy array but grad is a numpy"):
        updater.update_many([0, 1], grads, weights)
    assert bool((weights[1] == 1).all()) and np.all(weights[0] == 1)
    assert updater.states[0].step == updater.states[1].step == 1


def test_arrays_on_different_gpus_are_rejected(cupy):
    state = mxopt.OptimizationState(4, 1, 1, 1)
    updater = mxopt.get_updater(mxopt.ADAM(state=state))
    weight = cupy.ones(6, dtype=cupy.float32)
    with cupy.cuda.Device(1):
        grad_1 = cupy.ones(6, dtype=cupy.float32)
        weight_1 = cupy.ones(6, dtype=cupy.float32)
    with pytest.raises(ValueError, match="index 0: grad is on GPU 1 but weight is on GPU 0"):
        updater(0, grad_1, weight)
    updater(0, cupy.ones(6, dtype=cupy.float32), weight)
    with cupy.cuda.Device(1):
        with pytest.raises(ValueError, match="lives with a cupy array on GPU 0 but weight is a "
                           "cupy array on GPU 1"):  # fmt: skip
            updater(0, grad_1, weight_1)
        assert bool((weight_1 == 1).all())


def test_mixed_backends_in_one_step_are_each_updated_on_their_own(cupy):
    """update_many takes NumPy and CuPy weights together (global clipping spans both)."""
    case = next(c for c in CASES if c.id == "LAMB-default")
    results = []
    for xps in ((np, np), (np, cupy)):
        state = mxopt.OptimizationState(batch_size=2)
        updater = mxopt.get_updater(make_optimizer(case, {}, state), max_grad_norm=0.5)
        rng = np.random.default_rng(4)
        weights = [xp.asarray(rng.normal(size=500).astype(np.float32)) for xp in xps]
        for _ in range(3):
            state.begin_batch()
            grads = [xp.asarray(rng.normal(size=500).astype(np.float32)) for xp in xps]
            updater.update_many(["cpu", "gpu"], grads, weights)
        results.append(weights)
    for a, b in zip(*results, strict=True):
        assert_same_bits(b, a)


def test_parameter_buffer_from_mixed_arrays_is_refused(cupy):
    with pytest.raises((TypeError, ValueError)):  # by CuPy: no implicit host/device copies
        mxopt.ParameterBuffer.from_arrays({"a": cupy.ones(3, dtype=cupy.float32),
                                           "b": np.ones(2, np.float32)})  # fmt: skip
    with pytest.raises((TypeError, ValueError)):
        mxopt.ParameterBuffer.from_arrays({"a": np.ones(3, np.float32),
                                           "b": cupy.ones(2, dtype=cupy.float32)})  # fmt: skip


# ---------------------------------------------------------------------------------------
# Several GPUs: weights on a GPU that is not the current one


def test_weights_on_another_gpu_are_updated_when_it_is_current(cupy):
    case = next(c for c in CASES if c.id == "Lookahead-adam")
    results = []
    for device in (0, 1):
        state = mxopt.OptimizationState(batch_size=2)
        updater = mxopt.get_updater(make_optimizer(case, {}, state), averaging=mxopt.EMA(0.9))
        rng = np.random.default_rng(0)
        with cupy.cuda.Device(device):
            weight = cupy.asarray(rng.normal(size=300).astype(np.float32))
            for _ in range(4):
                state.begin_batch()
                updater(0, cupy.asarray(rng.normal(size=300).astype(np.float32)), weight)
        assert {a.device.id for a in updater.states[0].arrays.values()} == {device}
        results.append((weight, updater))
    assert_same_bits(results[1][0], results[0][0])
    assert_same_states(results[1][1], results[0][1])


def train_on_gpu(case, shape, device, cupy):
    """Four updates of weights that live on GPU ``device`` while GPU 0 is current: one weight
    of ``shape`` by updater calls, or MODEL's weights in a ParameterBuffer (``shape=None``)."""
    state = mxopt.OptimizationState(batch_size=2)
    optimizer = make_optimizer(case, {"weight_decay": 0.01}, state)
    options = {"max_grad_norm": 1.0} if shape is None else {}
    updater = mxopt.get_updater(optimizer, averaging=mxopt.EMA(0.9), **options)
    shapes = MODEL if shape is None else {"w": shape}
    rng = np.random.default_rng(0)
    with cupy.cuda.Device(device):
        if shape is None:
            buffer = mxopt.ParameterBuffer(shapes, xp=cupy)
            for k, s in shapes.items():
                buffer.weights[k][...] = cupy.asarray(rng.normal(size=s).astype(np.float32))
            weights = buffer.weights
        else:
            weights = {"w": cupy.asarray(rng.normal(size=shape).astype(np.float32))}
    for _ in range(4):
        state.begin_batch()
        with cupy.cuda.Device(device):
            grads = {
                k: cupy.asarray(rng.normal(size=s).astype(np.float32)) for k, s in shapes.items()
            }
            if shape is None:
                for k, g in grads.items():
                    buffer.grads[k][...] = g
        if shape is None:
            updater.update_buffer(buffer)
        else:
            updater("w", grads["w"], weights["w"])
    updater.swap_averages(weights)
    return updater, weights


ELSEWHERE = {
    "sgd": ("SGD-momentum", (300,)),
    "lookahead": ("Lookahead-adam", (300,)),  # a copy of the weight in the state
    "lamb": ("LAMB-tight-ratio", (300,)),  # reducing kernels
    "adafactor-vector": ("Adafactor-default", (300,)),
    "adafactor-matrix": ("Adafactor-default", (20, 15)),  # the factored path
    "adam-buffer": ("ADAM-amsgrad", None),  # packed state, global clipping
    "lars-buffer": ("LARS-larc", None),  # segmented kernels
}


@pytest.mark.parametrize("where", ELSEWHERE.values(), ids=ELSEWHERE.keys())
def test_weights_on_a_gpu_that_is_not_current_are_updated_there(where, cupy):
    """A weight on GPU 1 while GPU 0 is current: its state, its kernels and their outputs
    on GPU 1 (a kernel on GPU 0 would read GPU 1 memory), the bits of a run on GPU 0."""
    label, shape = where
    case = next(c for c in CASES if c.id == label)
    expected, expected_weights = train_on_gpu(case, shape, 0, cupy)
    updater, weights = train_on_gpu(case, shape, 1, cupy)
    for k, weight in weights.items():
        assert weight.device.id == 1
        assert_same_bits(weight, expected_weights[k], k)
    assert_same_states(updater, expected)
    for index, state in updater.states.items():
        assert state.device == 1
        assert {a.device.id for a in state.arrays.values()} == {1}, index


def test_weight_copies_in_the_state_live_on_the_weights_gpu(cupy):
    with cupy.cuda.Device(1):
        weight = cupy.ones((3, 4), dtype=cupy.float32)
    state = mxopt.create_state(mxopt.Lookahead(mxopt.ADAM()), 0, weight, averaging=mxopt.EMA(0.9))
    assert state.device == 1
    assert {name: a.device.id for name, a in state.arrays.items()} == {
        "mean": 1, "var": 1, "lookahead_slow": 1, "average": 1,
    }  # fmt: skip


def test_thinc_optimizer_moved_to_the_gpu_goes_on_with_the_cpu_bits(cupy):
    from mxopt.integrations.thinc import ThincOptimizer

    results = []
    for move in (False, True):
        optimizer = ThincOptimizer(mxopt.ADAM(lr=0.01))
        rng = np.random.default_rng(0)
        weight = rng.normal(size=50).astype(np.float32)
        for step in range(6):
            if move and step == 2:
                optimizer.to_gpu()
                weight = cupy.asarray(weight)
            if move and step == 4:
                optimizer.to_cpu()
                weight = weight.get()
            grad = rng.normal(size=50).astype(np.float32)
            on_gpu = move and 2 <= step < 4
            optimizer(("layer", "W"), weight, cupy.asarray(grad) if on_gpu else grad)
            optimizer.step_schedules()
        results.append(weight)
    assert type(results[1]) is np.ndarray
    assert_same_bits(results[1], results[0])


# ---------------------------------------------------------------------------------------
# The fake itself: it runs what it is given, strictly


def test_the_fake_is_visible_only_inside_the_fixture(cupy):
    import sys

    assert sys.modules["cupy"] is fake_cupy
    assert mxopt.kernels.backends.backend_of(cupy.zeros(1)) == "cupy"
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(cupy.zeros(3))
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.zeros(3) + np.zeros(3)
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        cupy.zeros(3)[...] = np.zeros(3)
    assert bool(cupy.isnan(cupy.empty(4, dtype=cupy.float32)).all())  # poisoned


def test_kernel_arguments_are_checked_against_the_signature(cupy):
    source = _cuda.NONFINITE_SOURCE
    function = cupy.RawModule(code=source, options=_cuda.NVRTC_OPTIONS).get_function(
        "mxopt_count_nonfinite_float"
    )
    g = cupy.asarray(np.array([1, np.nan, 3], np.float32))
    count = cupy.zeros(1, dtype=np.uint64)
    function((1,), (256,), (g, np.int64(3), count))
    assert int(count.get()[0]) == 1
    with pytest.raises(TypeError, match="would read its bytes as long long"):
        function((1,), (256,), (g, np.int32(3), count))
    with pytest.raises(TypeError, match="the kernel reads float32"):
        function((1,), (256,), (g.astype(np.float64), np.int64(3), count))
    with pytest.raises(TypeError, match="2 arguments for 3 parameters"):
        function((1,), (256,), (g, np.int64(3)))
    with pytest.raises(TypeError, match="expected a cupy.ndarray"):
        function((1,), (256,), (np.ones(3, np.float32), np.int64(3), count))
    with pytest.raises(ValueError, match="not C-contiguous"):
        function((1,), (256,), (cupy.zeros(6, dtype=np.float32)[::2], np.int64(3), count))
    with pytest.raises(fake_cupy.CUDADriverError, match="INVALID_VALUE"):
        function((0,), (256,), (g, np.int64(3), count))
    with cupy.cuda.Device(1), pytest.raises(fake_cupy.CUDADriverError, match="INVALID_HANDLE"):
        function((1,), (256,), (g, np.int64(3), count))
    with pytest.raises(NotImplementedError, match="__syncthreads"):
        cupy.RawModule(code=source.replace("if (mine)", "__syncthreads(); if (mine)"))


def test_fused_multiply_adds_would_be_caught(cupy, monkeypatch):
    """Without --fmad=false the emulated GPU contracts a*b+c (as NVRTC does by default)
    and the bit comparison fails: the comparison is sensitive to it."""
    from tests.fake_cupy import _kernels

    if not _kernels._host_has_fma():
        pytest.skip("the CPU has no FMA instructions")
    monkeypatch.setattr(_cuda, "NVRTC_OPTIONS", ("--std=c++14",))
    case = next(c for c in CASES if c.id == "ADAM-default")
    with pytest.raises(AssertionError, match="not equal"):
        compare_trajectories(case, "decay", np.float64, (1031,), cupy)

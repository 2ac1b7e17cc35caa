"""Float16 and bfloat16 weights (mxopt.kernels.precision, mxopt.training.precision).

Everything is compared with the independent references of tests/reference/rounding.py
(NumPy's / ml_dtypes' conversions, a float64 stochastic rounding, SplitMix64 from its
published description), never with mxopt's own kernels:

1. widening every 16-bit pattern; 2. rounding to nearest; 3. stochastic rounding (exact
bits, segments, unbiasedness, reproducibility); 4. every optimizer's steps against a float32
run rounded by the reference; 5. checkpoints; 6. errors and the step policies (non-finite
gradients, loss scaling, global clipping); 7. a convergence check where round-to-nearest
bfloat16 stalls and stochastic rounding does not. The GPU kernels run through the fake
CuPy of tests/test_gpu_emulated.py.
"""

from __future__ import annotations

import importlib.util
import pathlib
import platform
import re

import numpy as np
import pytest

import mxopt
from mxopt.kernels import precision_module
from mxopt.optimizers.matrix import MatrixOptimizer
from tests.cases import CASES, make_optimizer
from tests.conftest import CUPY
from tests.reference.rounding import (
    random_bits,
    round_nearest,
    round_stochastic,
    stream_key,
)
from tests.test_gpu_emulated import _built, cupy, host  # noqa: F401  (fixtures)

ml_dtypes = pytest.importorskip("ml_dtypes")

F16 = np.dtype(np.float16)
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")]
FORMAT = {F16: "float16", BF16: "bfloat16"}
LARGEST = {F16: 65504.0, BF16: float(ml_dtypes.finfo(BF16).max)}

#: The first case of every optimizer.
FIRST_CASES = [
    c for k, c in enumerate(CASES) if c.optimizer not in {d.optimizer for d in CASES[:k]}
]
CASE_IDS = [c.id for c in FIRST_CASES]
#: A few optimizers for the checkpoints: elementwise, with a weight copy in the state,
#: factored, matrix.
FEW_CASES = [c for c in FIRST_CASES if c.optimizer in {"ADAM", "Lookahead", "Adafactor", "Muon"}]
SEED = 20261205


# -- helpers ----------------------------------------------------------------------------------


def u16(array) -> np.ndarray:
    return np.ascontiguousarray(host(array)).view(np.uint16)


def u32(array) -> np.ndarray:
    a = np.ascontiguousarray(host(array))
    assert a.dtype == np.float32, a.dtype
    return a.view(np.uint32)


def assert_same_values(actual, expected, message=""):
    """Bit for bit, except that a NaN only has to be a NaN."""
    actual, expected = np.asarray(host(actual)), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = np.isnan(expected.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(actual.astype(np.float32)), nan, err_msg=message)
    bits = np.uint16 if actual.itemsize == 2 else np.uint32
    np.testing.assert_array_equal(actual.view(bits)[~nan], expected.view(bits)[~nan], message)


def narrow(x32, dtype, *, stochastic=False, keys=(0,), offsets=None, xp=None, out=None):
    """mxopt's rounding of the flat float32 ``x32`` into a new (or ``out``) 16-bit array,
    on the CPU (``xp`` None) or through ``xp`` (the fake cupy)."""
    n = x32.size
    offsets = (0, n) if offsets is None else offsets
    if xp is None:
        out = np.zeros(n, dtype) if out is None else out
        precision_module("numpy").narrow(np.ascontiguousarray(x32), out, FORMAT[dtype], offsets,
                                         keys, stochastic)  # fmt: skip
        return out
    out = xp.zeros(n, dtype) if out is None else xp.asarray(out)
    precision_module("cupy").narrow(xp.asarray(x32), out, FORMAT[dtype], offsets, keys, stochastic)
    return host(out)


def sr_reference(x32, dtype, key):
    """The reference stochastic rounding of the flat ``x32`` with stream ``key``."""
    return round_stochastic(x32, dtype, random_bits(key, np.arange(x32.size)))


def all_values(dtype) -> np.ndarray:
    """Every finite value of the 16-bit format, >= 0, ascending (float64)."""
    with np.errstate(invalid="ignore"):  # the NaN patterns
        values = np.arange(0x8000, dtype=np.uint16).view(dtype).astype(np.float64)
    return np.sort(values[np.isfinite(values)])


def random_float32(rng, n) -> np.ndarray:
    """Random float32 values over the whole range: uniform bit patterns (every exponent,
    subnormals, inf and NaN), log-uniform values across float16's range and subnormals,
    and values near the largest finite numbers of both formats."""
    patterns = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    logs = np.exp2(rng.uniform(-70, 17, size=n))
    near = np.concatenate(
        [rng.uniform(65000, 66000, size=n // 4), LARGEST[BF16] * rng.uniform(0.99, 1.0, n // 4)]
    )
    with np.errstate(invalid="ignore"):  # the NaN patterns
        values = np.concatenate([patterns.astype(np.float64), logs, near]).astype(np.float32)
    signs = rng.choice(np.array([-1, 1], np.float32), size=values.size)
    return values * signs


# -- 1. widening ------------------------------------------------------------------------------


def every_pattern(dtype) -> np.ndarray:
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_widening_every_bit_pattern_gives_numpys_float32(dtype):
    patterns = every_pattern(dtype)
    assert_same_values(
        precision_module("numpy").widen(patterns, FORMAT[dtype]), patterns.astype(np.float32)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_widening_every_bit_pattern_on_the_gpu(dtype, gpu):
    patterns = every_pattern(dtype)
    widened = precision_module("cupy").widen(gpu.asarray(patterns), FORMAT[dtype])
    assert isinstance(widened, gpu.ndarray)
    assert_same_values(widened, patterns.astype(np.float32))


# -- 2. rounding to nearest -------------------------------------------------------------------


def nearest_inputs(dtype) -> np.ndarray:
    """Every midpoint between neighbouring 16-bit values (and the one past the largest
    finite value), one float32 ulp either side of each, random values, the specials;
    both signs."""
    values = all_values(dtype)
    spacing_top = values[-1] - values[-2]
    values = np.append(values, values[-1] + spacing_top)  # the next one, past the format
    mids = ((values[:-1] + values[1:]) / 2).astype(np.float32)  # exact in float32
    assert np.array_equal(mids.astype(np.float64), (values[:-1] + values[1:]) / 2)
    around = [mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))]
    specials = np.array([0.0, np.inf, np.nan], np.float32)
    x = np.concatenate([*around, random_float32(np.random.default_rng(1), 20000), specials])
    return np.concatenate([x, -x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_to_nearest_is_numpys_conversion(dtype):
    x = nearest_inputs(dtype)
    assert_same_values(narrow(x, dtype), round_nearest(x, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rounding_to_nearest_on_the_gpu_is_numpys_conversion(dtype, gpu):
    x = nearest_inputs(dtype)
    assert_same_values(narrow(x, dtype, xp=gpu), round_nearest(x, dtype))


# -- 3. stochastic rounding -------------------------------------------------------------------


def test_reference_stream_is_splitmix64():
    """The reference against SplitMix64's published outputs for seed 1234567 (Rosetta Code,
    "Pseudo-random numbers/Splitmix64"): element e of stream key draws the generator's
    (e+1)-th output from state key."""
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423,
                4593380528125082431, 16408922859458223821]  # fmt: skip
    assert random_bits(1234567, np.arange(5)).tolist() == expected


def test_stream_keys_follow_the_documented_derivation():
    from mxopt.kernels import precision

    for seed, index, step in [(0, 0, 1), (SEED, "w", 3), (-7, ("layer", 2), 2**40), (1, 2**70, 5)]:
        assert precision.stream_key(seed, index, step) == stream_key(seed, index, step)
    keys = {stream_key(0, i, s) for i in ("w", "b", 0, 1) for s in (1, 2)}
    assert len(keys) == 8


def stochastic_inputs(dtype, rng) -> np.ndarray:
    """Random values, and values just around the 16-bit values (including subnormals)."""
    values = all_values(dtype)
    near = values[rng.integers(0, values.size, 20000)] * rng.uniform(0.999, 1.001, 20000)
    return np.concatenate([random_float32(rng, 20000), near.astype(np.float32)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_rounding_equals_the_reference(dtype):
    rng = np.random.default_rng(2)
    x = stochastic_inputs(dtype, rng)
    for key in [0, 1, 2**64 - 1, stream_key(SEED, "w", 7)]:
        expected = sr_reference(x, dtype, key)
        assert_same_values(narrow(x, dtype, stochastic=True, keys=(key,)), expected, f"key {key}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_rounding_of_segments(dtype):
    """Each segment draws from its own stream, from element 0; elements outside the
    segments are left alone."""
    rng = np.random.default_rng(3)
    x = stochastic_inputs(dtype, rng)[:1000]
    offsets, keys = (5, 5, 300, 301, 990), (11, 12, 13, 14)
    out = np.full(x.size, 7, dtype)
    narrow(x, dtype, stochastic=True, keys=keys, offsets=offsets, out=out)
    expected = np.full(x.size, 7, dtype)
    for k, key in enumerate(keys):
        lo, hi = offsets[k], offsets[k + 1]
        expected[lo:hi] = sr_reference(x[lo:hi], dtype, key)
    assert_same_values(out, expected)


def test_stochastic_rounding_far_below_float16_subnormals():
    """Values between 2**-64 (2**-40 of float16's smallest subnormal, below which the
    documented result is 0) and 2**-41 still round up with their probability."""
    n = 1 << 21
    x = np.full(n, 1.9 * 2.0**-42, np.float32)  # rounds up with probability 1.9 * 2**-18
    key = stream_key(SEED, "tiny", 1)
    expected = sr_reference(x, F16, key)
    assert 5 < np.count_nonzero(expected) < 30  # about 15
    assert_same_values(narrow(x, F16, stochastic=True, keys=(key,)), expected)


def unbiased_positions(dtype):
    """(low neighbour, spacing) pairs: normal values of both signs, the top binade, a
    subnormal."""
    values = all_values(dtype)
    lows = [1.0, 3.140625, -0.0078125, values[-3], values[5], -values[1]]
    for low in lows:
        magnitude = abs(low)
        above = values[np.searchsorted(values, magnitude) + 1]
        yield low, (above - magnitude) * np.sign(low)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_rounding_is_unbiased(dtype):
    n = 100_000
    for low, spacing in unbiased_positions(dtype):
        for fraction in (0.001, 0.25, 0.5, 0.7, 0.999):
            x = np.float32(low + fraction * spacing)
            exact = float(x)
            p = (exact - low) / spacing
            key = stream_key(SEED, (low, fraction), 1)
            rounded = narrow(np.full(n, x), dtype, stochastic=True, keys=(key,))
            mean = rounded.astype(np.float64).mean()
            standard_error = abs(spacing) * np.sqrt(p * (1 - p) / n)
            assert abs(mean - exact) <= 5 * standard_error, (low, fraction, mean, exact)
            assert set(np.unique(rounded.astype(np.float64))) <= {low, low + spacing}


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_rounding_is_reproducible(dtype):
    x = np.full(4096, 1 + 1 / 3, np.float32)
    first = narrow(x, dtype, stochastic=True, keys=(99,))
    np.testing.assert_array_equal(u16(narrow(x, dtype, stochastic=True, keys=(99,))), u16(first))
    other = narrow(x, dtype, stochastic=True, keys=(100,))
    assert np.count_nonzero(u16(other) != u16(first)) > 1000


@pytest.mark.parametrize("dtype", DTYPES)
def test_stochastic_rounding_on_the_gpu_gives_the_cpu_bits(dtype, gpu):
    x = stochastic_inputs(dtype, np.random.default_rng(4))
    offsets, keys = (0, 17, 17, 20000, x.size), (1, 2, stream_key(SEED, "w", 2), 2**63)
    on_cpu = narrow(x, dtype, stochastic=True, keys=keys, offsets=offsets)
    on_gpu = narrow(x, dtype, stochastic=True, keys=keys, offsets=offsets, xp=gpu)
    np.testing.assert_array_equal(u16(on_gpu), u16(on_cpu))
    part = (100, 5000, 9000)  # segments not starting at 0: the rest is left alone
    expected = np.full(x.size, 3, dtype)
    narrow(x, dtype, stochastic=True, keys=(5, 6), offsets=part, out=expected)
    on_gpu = narrow(x, dtype, stochastic=True, keys=(5, 6), offsets=part, xp=gpu,
                    out=np.full(x.size, 3, dtype))  # fmt: skip
    np.testing.assert_array_equal(u16(on_gpu), u16(expected))


# -- 4. the optimizers ------------------------------------------------------------------------

SHAPES = {"w": (3, 5), 7: (11,)}
STEPS = 4


def precision_options(multi_precision, stochastic):
    return {"multi_precision": multi_precision, "stochastic_rounding": stochastic,
            "rounding_seed": SEED}  # fmt: skip


def make_data(dtype, steps=STEPS, scale=2.0, shapes=None):
    """Initial weights and the gradients of every step, per index, in ``dtype``."""
    rng = np.random.default_rng(5)
    shapes = SHAPES if shapes is None else shapes
    weights = {i: rng.normal(size=s).astype(dtype) for i, s in shapes.items()}
    grads = [{i: (rng.normal(size=s) * scale).astype(dtype) for i, s in shapes.items()}
             for _ in range(steps)]  # fmt: skip
    return weights, grads


def snapshot(updater, weights) -> dict:
    return {i: (host(w).copy(), {n: host(a).copy() for n, a in updater.states[i].arrays.items()})
            for i, w in weights.items()}  # fmt: skip


def run_low(case, dtype, mp, sr, *, xp=np, many=False, steps=STEPS, shapes=None):
    """Train 16-bit weights; the snapshots after every step."""
    weights, grads = make_data(dtype, steps, shapes=shapes)
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    updater = mxopt.get_updater(make_optimizer(case, precision_options(mp, sr), state))
    weights = {i: xp.asarray(w) for i, w in weights.items()}
    out = []
    for step_grads in grads:
        state.begin_batch()
        if many:
            updater.update_many(list(weights), [xp.asarray(step_grads[i]) for i in weights],
                                list(weights.values()))  # fmt: skip
        else:
            for i, w in weights.items():
                updater(i, xp.asarray(step_grads[i]), w)
        out.append(snapshot(updater, weights))
    return out


def rounded(x32, dtype, sr, index, step) -> np.ndarray:
    """The reference rounding of step ``step`` of ``index``."""
    flat = x32.reshape(-1)
    if sr:
        return sr_reference(flat, dtype, stream_key(SEED, index, step)).reshape(x32.shape)
    return round_nearest(flat, dtype).reshape(x32.shape)


def run_reference(case, dtype, mp, sr, *, many=False, steps=STEPS, shapes=None):
    """The float32 run on the widened data (the same path: single calls or update_many):
    with ``mp`` untouched (the master), else its weights replaced by their reference
    rounding after every step. Snapshots of (16-bit weight, float32 weight, float32 state
    arrays)."""
    weights, grads = make_data(dtype, steps, shapes=shapes)
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    updater = mxopt.get_updater(make_optimizer(case, {}, state))
    weights = {i: w.astype(np.float32) for i, w in weights.items()}
    out = []
    for step, step_grads in enumerate(grads, start=1):
        state.begin_batch()
        g32 = {i: g.astype(np.float32) for i, g in step_grads.items()}
        if many:
            updater.update_many(list(weights), list(g32.values()), list(weights.values()))
        snap = {}
        for i, w in weights.items():
            if not many:
                updater(i, g32[i], w)
            low = rounded(w, dtype, sr, i, step)
            if not mp:
                w[...] = low.astype(np.float32)
            arrays = {n: a.copy() for n, a in updater.states[i].arrays.items()}
            snap[i] = (low, w.copy(), arrays)
        out.append(snap)
    return out


def assert_matches_reference(low_run, reference, mp):
    for step, (low, ref) in enumerate(zip(low_run, reference, strict=True), start=1):
        for i, (weight, arrays) in low.items():
            ref_low, ref_w32, ref_arrays = ref[i]
            where = f"index {i!r}, step {step}"
            assert weight.dtype == ref_low.dtype
            np.testing.assert_array_equal(u16(weight), u16(ref_low), f"weight, {where}")
            expected = {**ref_arrays, "master": ref_w32} if mp else ref_arrays
            assert set(arrays) == set(expected), where
            for name, array in arrays.items():
                np.testing.assert_array_equal(u32(array), u32(expected[name]), f"{name}, {where}")


@pytest.mark.parametrize("sr", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FIRST_CASES, ids=CASE_IDS)
def test_steps_equal_a_float32_run_rounded_by_the_reference(case, dtype, mp, sr):
    """(a) without a master: the float32 run whose weight is replaced by its rounding after
    every step; (b) with one: the master is the plain float32 run and the weight its
    rounding; (c) both with stochastic rounding of the reference's stream. Single calls
    and update_many each against the float32 run of the same path, and against each other
    (but for Prodigy, whose update_many takes one step size for all its weights)."""
    single = run_low(case, dtype, mp, sr)
    assert_matches_reference(single, run_reference(case, dtype, mp, sr), mp)
    many = run_low(case, dtype, mp, sr, many=True)
    assert_matches_reference(many, run_reference(case, dtype, mp, sr, many=True), mp)
    if make_optimizer(case, {}).step_sums_kernel is not None:
        return
    for step, (a, b) in enumerate(zip(single, many, strict=True), start=1):
        for i in a:
            np.testing.assert_array_equal(u16(b[i][0]), u16(a[i][0]), f"{i!r} step {step}")
            for name in a[i][1]:
                np.testing.assert_array_equal(u32(b[i][1][name]), u32(a[i][1][name]), name)


#: Larger than a stage of the fused CPU step, and cut among threads (with a lowered
#: parallel threshold); an odd size.
LARGE = {"big": (3 * 2048 + 5,), "huge": (2**17 + 3,)}
ELEMENTWISE = [c for c in FIRST_CASES if c.optimizer in {"ADAM", "Lion", "AdaGrad", "SGD"}]


def run_packed(case, dtype, mp, sr, steps=STEPS):
    """Train the weights of :func:`make_data` packed in a ParameterBuffer of ``dtype``."""
    weights, grads = make_data(dtype, steps)
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    updater = mxopt.get_updater(make_optimizer(case, precision_options(mp, sr), state))
    buffer = mxopt.ParameterBuffer({i: w.shape for i, w in weights.items()}, dtype=dtype)
    for i, w in weights.items():
        buffer.weights[i][...] = w
    out = []
    for step_grads in grads:
        state.begin_batch()
        for i, g in step_grads.items():
            buffer.grads[i][...] = g
        updater.update_buffer(buffer)
        out.append(snapshot(updater, buffer.weights))
    return out


@pytest.mark.parametrize("sr", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FIRST_CASES, ids=CASE_IDS)
def test_a_packed_buffer_gives_the_bits_of_update_many(case, dtype, mp, sr):
    """A ParameterBuffer of 16-bit weights: the same bits, weights and state, as the same
    weights through update_many (each weight rounded with its own stream, from its own
    first element)."""
    packed, listed = run_packed(case, dtype, mp, sr), run_low(case, dtype, mp, sr, many=True)
    for step_packed, step_listed in zip(packed, listed, strict=True):
        for index, (weight, arrays) in step_listed.items():
            np.testing.assert_array_equal(u16(step_packed[index][0]), u16(weight))
            for name, array in arrays.items():
                np.testing.assert_array_equal(
                    step_packed[index][1][name].view(np.uint8), array.view(np.uint8)
                )


@pytest.mark.parametrize("sr", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ELEMENTWISE, ids=[c.id for c in ELEMENTWISE])
def test_large_weights_equal_the_rounded_float32_run(case, dtype, mp, sr, monkeypatch):
    """Several stages of the fused step, and chunks run by the threads."""
    from mxopt.kernels import cpu

    monkeypatch.setattr(cpu, "_parallel_min_size", 2**16)
    for many in (False, True):
        low = run_low(case, dtype, mp, sr, many=many, steps=2, shapes=LARGE)
        reference = run_reference(case, dtype, mp, sr, many=many, steps=2, shapes=LARGE)
        assert_matches_reference(low, reference, mp)


@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FIRST_CASES, ids=CASE_IDS)
def test_steps_on_the_gpu_give_the_cpu_bits(case, dtype, mp, gpu):
    """Stochastic rounding, single calls and update_many, against the CPU's single calls
    (Prodigy's update_many against the CPU's update_many). On a real GPU, Muon's and
    SOAP's matrix products are cuBLAS's and cuSOLVER's, which add in another order than
    NumPy's BLAS: their float32 state agrees to 1e-5 and their weights to one 16-bit step
    (an H100 gave 1 float32 ulp on a few elements)."""
    optimizer = make_optimizer(case, {})
    sums = optimizer.step_sums_kernel is not None
    exact = gpu is not CUPY or not isinstance(optimizer, MatrixOptimizer)
    for many in (False, True):
        on_cpu = run_low(case, dtype, mp, True, many=many and sums)
        on_gpu = run_low(case, dtype, mp, True, xp=gpu, many=many)
        for a, b in zip(on_cpu, on_gpu, strict=True):
            for i in a:
                assert isinstance(b[i][0], np.ndarray)  # host() copies
                if exact:
                    np.testing.assert_array_equal(u16(b[i][0]), u16(a[i][0]), repr(i))
                else:
                    np.testing.assert_allclose(b[i][0].astype(np.float32),
                                               a[i][0].astype(np.float32),
                                               rtol=float(ml_dtypes.finfo(dtype).eps))  # fmt: skip
                for name in a[i][1]:
                    if exact:
                        np.testing.assert_array_equal(u32(b[i][1][name]), u32(a[i][1][name]), name)
                    else:
                        np.testing.assert_allclose(b[i][1][name], a[i][1][name], rtol=1e-5,
                                                   atol=1e-7, err_msg=name)  # fmt: skip


# -- 5. checkpoints ---------------------------------------------------------------------------


def train(updater, state, weights, grads, xp):
    for step_grads in grads:
        state.begin_batch()
        for i, w in weights.items():
            updater(i, xp.asarray(step_grads[i]), w)


def fresh(case, dtype, mp, sr, xp):
    weights, grads = make_data(dtype, steps=7)
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    updater = mxopt.get_updater(make_optimizer(case, precision_options(mp, sr), state))
    return updater, state, {i: xp.asarray(w) for i, w in weights.items()}, grads


def check_resume(case, dtype, mp, tmp_path, before, after):
    reference, ref_state, ref_weights, grads = fresh(case, dtype, mp, True, np)
    train(reference, ref_state, ref_weights, grads, np)

    first, state, weights, _ = fresh(case, dtype, mp, True, before)
    train(first, state, weights, grads[:3], before)
    first.save(tmp_path / "low.ckpt")
    moved = {i: after.asarray(host(w)) for i, w in weights.items()}
    resumed = mxopt.load_updater(tmp_path / "low.ckpt", weights=moved)
    assert resumed.optimizer.precision() == (mp, True, SEED)
    train(resumed, resumed.optimizer.state, moved, grads[3:], after)
    for i, w in ref_weights.items():
        assert host(moved[i]).dtype == dtype
        np.testing.assert_array_equal(u16(moved[i]), u16(w), repr(i))
        arrays = reference.states[i].arrays
        assert set(resumed.states[i].arrays) == set(arrays)
        assert ("master" in arrays) == mp
        for name, array in arrays.items():
            np.testing.assert_array_equal(u32(resumed.states[i].arrays[name]), u32(array), name)


@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FEW_CASES, ids=[c.id for c in FEW_CASES])
def test_checkpoint_resumes_bit_identically(case, dtype, mp, tmp_path):
    check_resume(case, dtype, mp, tmp_path, np, np)


@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_checkpoint_moves_to_the_gpu_bit_identically(dtype, mp, tmp_path, gpu):
    case = next(c for c in FIRST_CASES if c.optimizer == "ADAM")
    check_resume(case, dtype, mp, tmp_path, np, gpu)


def test_a_checkpoint_needs_the_same_precision_and_weight_dtype(tmp_path):
    case = next(c for c in FIRST_CASES if c.optimizer == "ADAM")
    updater, state, weights, grads = fresh(case, F16, True, False, np)
    train(updater, state, weights, grads[:1], np)
    updater.save(tmp_path / "low.ckpt")
    without = make_optimizer(case, precision_options(False, False))
    with pytest.raises(mxopt.CheckpointError, match=r"\['master', 'mean', 'var'\] do not match"):
        mxopt.load_updater(tmp_path / "low.ckpt", optimizer=without)
    for dtype in (BF16, np.float32):
        other = {i: w.astype(dtype) for i, w in weights.items()}
        with pytest.raises(mxopt.CheckpointError, match=f"float16, weight is .* {np.dtype(dtype)}"):
            mxopt.load_updater(tmp_path / "low.ckpt", weights=other)


# -- 6. errors and the step policies ----------------------------------------------------------


def adam_updater(**options):
    state = mxopt.OptimizationState(batch_size=1)
    state.begin_epoch()
    state.begin_batch()
    optimizer = mxopt.OPTIMIZERS["ADAM"](state=state, lr=0.01, **options.pop("opts", {}))
    return mxopt.get_updater(optimizer, **options), state


def state_bits(updater, index) -> dict:
    return {n: u32(a).copy() for n, a in updater.states[index].arrays.items()}


@pytest.mark.parametrize(
    ("weight_dtype", "grad_dtype"),
    [(BF16, F16), (F16, BF16), (F16, np.float32), (BF16, np.float32)],
)
def test_a_gradient_of_another_dtype_is_refused(weight_dtype, grad_dtype):
    updater, _ = adam_updater(opts={"multi_precision": True})
    weight = np.linspace(-1, 1, 9).astype(weight_dtype)
    updater("w", np.ones(9, weight_dtype), weight)
    before, states = u16(weight).copy(), state_bits(updater, "w")
    message = f"grad dtype {np.dtype(grad_dtype)} does not match weight dtype {weight_dtype}"
    with pytest.raises(TypeError, match=message):
        updater("w", np.ones(9, grad_dtype), weight)
    with pytest.raises(TypeError, match=message):
        updater.update_many(["w"], [np.ones(9, grad_dtype)], [weight])
    np.testing.assert_array_equal(u16(weight), before)
    assert all(np.array_equal(state_bits(updater, "w")[n], a) for n, a in states.items())
    assert updater.states["w"].step == 1


@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
def test_toggling_multi_precision_after_the_state_exists_is_refused(mp):
    updater, _ = adam_updater(opts={"multi_precision": mp})
    weight = np.linspace(-1, 1, 9).astype(BF16)
    updater("w", np.ones(9, BF16), weight)
    before, states = u16(weight).copy(), state_bits(updater, "w")
    updater.optimizer.opts.multi_precision = not mp
    for call in (lambda: updater("w", np.ones(9, BF16), weight),
                 lambda: updater.update_many(["w"], [np.ones(9, BF16)], [weight])):  # fmt: skip
        with pytest.raises(ValueError, match="multi_precision .*create new state"):
            call()
    np.testing.assert_array_equal(u16(weight), before)
    assert all(np.array_equal(state_bits(updater, "w")[n], a) for n, a in states.items())
    assert updater.states["w"].step == 1


def test_row_sparse_gradients_and_swapping_averages_are_refused():
    updater, _ = adam_updater()
    weight = np.ones((4, 3), F16)
    with pytest.raises(TypeError, match="RowSparse: values dtype float16 is not supported"):
        mxopt.RowSparse(np.array([1]), np.ones((1, 3), F16))
    grad = mxopt.RowSparse(np.array([1]), np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="RowSparse gradient is not available for float16"):
        updater("w", grad, weight)
    assert "w" not in updater.states
    np.testing.assert_array_equal(u16(weight), u16(np.ones((4, 3), F16)))

    updater, _ = adam_updater(averaging=mxopt.EMA(0.9))
    weights = {"f": np.ones(5, np.float32), "w": np.ones(5, BF16)}
    updater.update_many(list(weights), [np.ones(5, w.dtype) for w in weights.values()],
                        list(weights.values()))  # fmt: skip
    before = {i: host(w).copy() for i, w in weights.items()}
    with pytest.raises(ValueError, match="swap_averages .* not available for bfloat16"):
        updater.swap_averages(weights)
    for i, w in weights.items():  # all checked before any is swapped
        np.testing.assert_array_equal(w, before[i])


@pytest.mark.parametrize("many", [False, True], ids=["single", "many"])
@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
def test_non_finite_float16_gradients_raise_or_skip_changing_nothing(mp, many):
    for policy in ("raise", "skip"):
        updater, _ = adam_updater(opts={"multi_precision": mp}, nonfinite=policy)
        weight = np.linspace(-1, 1, 9).astype(F16)
        updater("w", np.ones(9, F16), weight)
        before, states = u16(weight).copy(), state_bits(updater, "w")
        grad = np.ones(9, F16)
        grad[4] = np.nan

        def step(updater=updater, grad=grad, weight=weight):
            if many:
                return updater.update_many(["w"], [grad], [weight])
            return updater("w", grad, weight)

        if policy == "raise":
            with pytest.raises(FloatingPointError):
                step()
        else:
            assert step() is False
        np.testing.assert_array_equal(u16(weight), before)
        assert all(np.array_equal(state_bits(updater, "w")[n], a) for n, a in states.items())
        assert updater.states["w"].step == 1


@pytest.mark.parametrize("position", [0, 2048, 3 * 2048 + 4])
@pytest.mark.parametrize("mp", [False, True], ids=["no-master", "master"])
def test_a_non_finite_value_anywhere_in_a_large_gradient_changes_nothing(mp, position):
    updater, _ = adam_updater(opts={"multi_precision": mp})
    weight = np.linspace(-1, 1, 3 * 2048 + 5).astype(BF16)
    updater("w", np.ones(weight.size, BF16), weight)
    before, states = u16(weight).copy(), state_bits(updater, "w")
    grad = np.ones(weight.size, BF16)
    grad[position] = np.inf
    with pytest.raises(FloatingPointError):
        updater("w", grad, weight)
    np.testing.assert_array_equal(u16(weight), before)
    assert all(np.array_equal(state_bits(updater, "w")[n], a) for n, a in states.items())


def policy_runs(dtype, grads, **updater_options):
    """update_many of 16-bit weights and of float32 ones on the widened gradients, with
    the same updater options (fresh policy objects for each)."""
    runs = []
    for weight_dtype in (dtype, np.float32):
        options = {k: v() for k, v in updater_options.items()}
        updater, state = adam_updater(opts={"multi_precision": True}, **options)
        weights = [np.linspace(-1, 1, 9).astype(dtype).astype(weight_dtype),
                   np.linspace(2, 3, 4).astype(dtype).astype(weight_dtype)]  # fmt: skip
        applied = []
        for step_grads in grads:
            state.begin_batch()
            g = [x.astype(weight_dtype) for x in step_grads]
            applied.append(updater.update_many(["a", "b"], g, weights))
        runs.append((updater, weights, applied))
    return runs


def test_the_loss_scaler_skips_float16_overflow_then_applies():
    overflowed = [np.full(9, np.inf, F16), np.ones(4, F16)]  # a float16 backward overflowed
    finite = [(np.arange(9) * 300).astype(F16), np.full(4, -500, F16)]
    grads = [overflowed, finite, finite]
    scaler = lambda: mxopt.DynamicLossScaler(init_scale=1024.0)  # noqa: E731
    (low, low_weights, applied), (ref, ref_weights, ref_applied) = policy_runs(
        F16, grads, loss_scaler=scaler
    )
    assert applied == ref_applied == [False, True, True]
    assert low.loss_scaler.scale == 512.0
    assert low.states["a"].step == 2
    for w, r, index in zip(low_weights, ref_weights, "ab", strict=True):
        np.testing.assert_array_equal(u32(low.states[index].arrays["master"]), u32(r))
        np.testing.assert_array_equal(u16(w), u16(r.astype(F16)))
    assert not np.array_equal(low_weights[0], np.linspace(-1, 1, 9).astype(F16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_norm_clipping_of_16_bit_gradients_matches_float32(dtype):
    rng = np.random.default_rng(6)
    grads = [[(rng.normal(size=9) * 100).astype(dtype), (rng.normal(size=4) * 100).astype(dtype)]
             for _ in range(3)]  # fmt: skip
    (low, low_weights, _), (ref, ref_weights, _) = policy_runs(
        dtype, grads, max_grad_norm=lambda: 1.5
    )
    for w, r, index in zip(low_weights, ref_weights, "ab", strict=True):
        np.testing.assert_array_equal(u32(low.states[index].arrays["master"]), u32(r))
        for name in ("mean", "variance"):
            if name in ref.states[index].arrays:
                np.testing.assert_array_equal(
                    u32(low.states[index].arrays[name]), u32(ref.states[index].arrays[name])
                )
        np.testing.assert_array_equal(u16(w), u16(r.astype(dtype)))


# -- 7. convergence ---------------------------------------------------------------------------


def _plot_module():
    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "plot_low_precision.py"
    spec = importlib.util.spec_from_file_location("plot_low_precision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def least_squares(weight_dtype, stochastic):
    """The problem of the curves on docs/low-precision.md (benchmarks/plot_low_precision.py):
    full-batch SGD on 0.5 * |A w - b|^2 (noisy b: the optimum's loss is about 9) from
    bfloat16 weights around 96, where bfloat16's spacing is 0.5: every update (at most
    0.17, checked) is below half a spacing, so rounding to nearest never moves a weight.
    Returns the loss at the start and at the end."""
    curve = _plot_module().least_squares_curve(weight_dtype, stochastic_rounding=stochastic)
    return curve[0], curve[-1]


def test_stochastic_rounding_makes_progress_where_nearest_bfloat16_stalls():
    start, full = least_squares(np.float32, False)
    _, nearest = least_squares(BF16, False)
    _, stochastic = least_squares(BF16, True)
    print(f"least squares: start {start:.4g}; after 250 steps: float32 {full:.4g}, bfloat16 "
          f"to nearest {nearest:.4g}, bfloat16 stochastic {stochastic:.4g}")  # fmt: skip
    assert full < 0.25 * start  # solvable in the budget
    assert nearest == start  # stalled: not one weight moved
    assert stochastic < 1.1 * full  # reaches the float32 run's loss (within 10%)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="reads x86 assembly")
def test_the_staged_element_loop_is_vectorised_on_its_own():
    """The staged step's element loop, compiled as the standalone helper that a process
    compiling the step calls: packed divisions and square roots (ADAM's). With the state
    tuple indexed inside the loop it stayed scalar, and a process that compiled the step
    ran it twice as slowly as one that loaded it from the disk cache."""
    from mxopt.kernels import cpu_precision

    weight = np.ones(5000, dtype=BF16)
    updater, _ = adam_updater(opts={"multi_precision": True, "state_dtype": "bfloat16"})
    updater(0, np.ones(5000, dtype=BF16), weight)
    staged = [d for (kernel, *_), d in cpu_precision._staged_dispatchers.items()
              if kernel.name == "adam"]  # fmt: skip
    assert staged
    block = staged[-1].py_func.__globals__["_BLOCK"]
    if not block.signatures:  # the step came from the disk cache: compile the helper alone
        arrays = [np.zeros(8, np.float32) for _ in range(4)]
        scalars = tuple(np.float32(1) for _ in updater.optimizer.kernel().scalars)
        block(arrays[0], arrays[1], (arrays[2], arrays[3]), scalars, np.int64(8))
    assembly = "\n".join(block.inspect_asm(signature) for signature in block.signatures)
    assert re.search(r"\bv?divps\b", assembly) and re.search(r"\bv?sqrtps\b", assembly)

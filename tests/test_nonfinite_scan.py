"""The CPU's all-or-nothing check: its read pass over the bit patterns (four quarters of
the array at once, then the tail) must see a non-finite value wherever it is, count each
exactly once, and never take the largest finite value for one. The oracle is NumPy's
``isfinite``."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from mxopt.kernels import cpu, cpu_precision, precision
from mxopt.kernels.kernel import largest_magnitude_bits

FLOATS = {"float32": np.float32, "float64": np.float64}
SIXTEEN = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
BAD = [np.nan, np.inf, -np.inf, -np.nan]


def _count_16(values) -> int:
    code = np.int64(precision.FORMAT_CODES[np.dtype(values.dtype).name])
    loop = cpu_precision._precision_loop(
        cpu_precision._count_bits_all, "mxopt_count_nonfinite_bits"
    )
    return int(loop(values.view(np.uint16), code))


def _count(values) -> int:
    if values.dtype.itemsize == 2:
        return _count_16(values)
    return cpu.count_nonfinite(values)


@pytest.mark.parametrize("name", [*FLOATS, *SIXTEEN])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 11, 64, 67])
def test_one_non_finite_value_is_found_at_every_position(name, n):
    dtype = {**FLOATS, **SIXTEEN}[name]
    finite = np.finfo(dtype).max
    base = np.where(np.arange(n) % 2, finite, -finite).astype(dtype)  # largest finite ones
    assert _count(base) == 0
    for position in range(n):
        for bad in BAD:
            values = base.copy()
            values[position] = bad
            assert _count(values) == 1, (position, bad)


@pytest.mark.parametrize("name", [*FLOATS, *SIXTEEN])
@pytest.mark.parametrize("n", [0, 7, 1000, 4099, 65539])
def test_many_non_finite_values_are_counted_exactly(name, n):
    dtype = {**FLOATS, **SIXTEEN}[name]
    rng = np.random.default_rng(n)
    values = rng.normal(size=n).astype(dtype)
    if n:
        picks = rng.choice(n, size=min(n, 41), replace=False)
        values[picks] = rng.choice(BAD, size=picks.size)
    expected = int((~np.isfinite(values.astype(np.float64))).sum())
    assert _count(values) == expected


@pytest.mark.parametrize("name", FLOATS)
def test_a_range_counts_only_its_own_values(name):
    values = np.zeros(1001, FLOATS[name])
    values[[3, 500, 1000]] = [np.nan, np.inf, -np.inf]
    assert cpu.count_nonfinite(values, 4, 1000) == 1
    assert cpu.count_nonfinite(values, 501, 1000) == 0
    assert cpu.count_nonfinite(values, 0, 4) == 1


@pytest.mark.parametrize("bits", [np.int16, np.int32, np.int64, np.uint16])
@pytest.mark.parametrize("n", [0, 1, 5, 12, 13, 4096 + 3])
def test_largest_magnitude_bits_is_the_largest_pattern_without_its_sign_bit(bits, n):
    rng = np.random.default_rng([n, np.dtype(bits).itemsize])
    info = np.iinfo(bits)
    patterns = rng.integers(info.min, info.max, size=n, dtype=bits, endpoint=True)
    mask = bits(info.max)  # every bit but the sign bit (the top one for unsigned too)
    if np.dtype(bits).kind == "u":
        mask = bits(info.max >> 1)
    expected = int(np.max(patterns & mask)) if n else 0
    assert int(cpu._compile_device(largest_magnitude_bits)(patterns, mask)) == expected


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("n_arrays", [1, 3, 4, 5, 9, 40])
def test_the_list_count_finds_every_non_finite_value_of_every_array(name, n_arrays):
    # the list's read pass takes four arrays at once (one from each quarter of the list,
    # read together up to the shortest's length, then their rests, then the arrays left
    # over): a bad value in any array, at its start, end or beyond a shorter partner's end
    from mxopt.kernels import lists

    dtype = np.dtype(FLOATS[name])
    rng = np.random.default_rng(n_arrays)
    sizes = rng.integers(0, 70, size=n_arrays)
    finite = np.finfo(dtype).max
    arrays = [np.where(np.arange(s) % 2, finite, -finite).astype(dtype) for s in sizes]
    data = np.array([a.ctypes.data for a in arrays], np.int64)
    sizes = np.array(sizes, np.int64)
    assert lists.count_nonfinite(dtype, data, sizes) == 0
    for k, array in enumerate(arrays):
        for position in {0, array.size // 2, array.size - 1} if array.size else ():
            for bad in BAD:
                kept = array[position]
                array[position] = bad
                assert lists.count_nonfinite(dtype, data, sizes) == 1, (k, position, bad)
                array[position] = kept
    picks = [(k, int(rng.integers(a.size))) for k, a in enumerate(arrays) if a.size]
    for k, position in picks[::2]:
        arrays[k][position] = np.nan
    expected = sum(int((~np.isfinite(a)).sum()) for a in arrays)
    assert lists.count_nonfinite(dtype, data, sizes) == expected

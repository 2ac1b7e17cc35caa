"""Blockwise dynamic 8-bit quantization oracle (Dettmers et al. 2022, arXiv:2110.02861;
dynamic tree quantization, Dettmers 2016, arXiv:1511.04561). Float64 NumPy, no mxopt.

The map is built by decoding each of the 256 bit patterns of the paper's code layout:
[sign bit (signed map only)] [e zero bits] [indicator 1] [fraction bits f]: value
sign * 10**-e * fraction_f, where fraction_f is the middle of bin f of the 2**bits equal
bins of [0.1, 1]. The two patterns with no indicator bit left carry 0 and 1.0 (for the
signed map: all zero = 0, the sign bit alone = 1.0; for the unsigned map: all zero = 0,
and 00000001, whose indicator leaves no fraction bit, = 1.0). Each value is then
evaluated as float32 arithmetic would (bins bounds rounded once to float32 from the
nearer end of [0.1, 1], their float32 mean, times float32(10**-e)), the values
bitsandbytes' create_dynamic_map holds.

Codes are indices into the sorted map. Nearest code: brute-force argmin of |map - y| in
float64 (exact for float32 inputs), ties to the value of smaller magnitude; the unsigned
map takes a negative y (or NaN) as 0; beyond [-1, 1] (or NaN) y is clipped to it (NaN as
1). Blocks of 256: absmax = max |x|, y = float32(x * float32(1 / absmax)) for absmax in
[2**-64, 2**64) (bitsandbytes also multiplies by the reciprocal), else float32(x / absmax),
dequantized value float32(map[code] * absmax).
"""

from __future__ import annotations

import numpy as np

BLOCK = 256


def _f32(x) -> np.float64:
    """Round a float64 holding an exact result to float32 (one rounding), back to float64."""
    return np.float64(np.float32(x))


def _bound(k: int, bits: int) -> np.float64:
    """Bound k of the 2**bits equal bins of [0.1, 1], as float32 arithmetic rounds it."""
    n = 2**bits
    low = _f32(0.1)
    step = _f32(_f32(1.0 - low) / n)
    if k < (n + 1) // 2:
        return _f32(low + k * step)  # exact in float64, one rounding
    return _f32(1.0 - (n - k) * step)


def decode(pattern: int, signed: bool) -> tuple[np.float64, np.float64]:
    """``(float32 value, exact paper value)`` of an 8-bit pattern."""
    width = 7 if signed else 8
    sign = -1.0 if signed and pattern >> 7 else 1.0
    field = pattern & ((1 << width) - 1)
    if field == 0:
        value = 0.0 if sign > 0 else 1.0
        return np.float64(value), np.float64(value)
    zeros = width - field.bit_length()
    bits = width - zeros - 1  # after the indicator
    if not signed and bits == 0:
        return np.float64(1.0), np.float64(1.0)
    f = field & ((1 << bits) - 1)
    mean = _f32((_bound(f, bits) + _bound(f + 1, bits)) / 2)
    value = _f32(_f32(10.0**-zeros) * mean)
    exact = 10.0**-zeros * (0.1 + (f + 0.5) * 0.9 / 2**bits)
    return sign * value, sign * np.float64(exact)


def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 values, sorted ascending (float64 holding float32 values)."""
    return np.sort([decode(p, signed)[0] for p in range(256)])


def exact_map(signed: bool) -> np.ndarray:
    """The paper's values in exact (float64) arithmetic, in the order of :func:`dynamic_map`."""
    pairs = sorted(decode(p, signed) for p in range(256))
    return np.array([exact for _, exact in pairs])


def nearest_codes(y, signed: bool) -> np.ndarray:
    """Indices into ``dynamic_map(signed)`` of the values nearest to each ``y``."""
    table = dynamic_map(signed)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    # beyond the unit interval: the unsigned map takes y not above 0 (NaN too) as 0, then
    # both take y above 1 (and NaN) as 1, y below -1 as -1
    if not signed:
        y = np.where(y > 0, y, 0.0)
    y = np.where(np.isnan(y), 1.0, np.clip(y, -1.0, 1.0))
    codes = np.empty(y.size, dtype=np.int64)
    for start in range(0, y.size, 4096):
        part = y[start : start + 4096, None]
        distance = np.abs(table[None, :] - part)
        best = distance == distance.min(axis=1, keepdims=True)
        # among the nearest, the smallest magnitude
        magnitude = np.where(best, np.abs(table)[None, :], np.inf)
        codes[start : start + 4096] = magnitude.argmin(axis=1)
    return codes


def normalise(x, m) -> np.ndarray:
    """y of a block of absmax ``m`` > 0: float32(x * float32(1 / m)) for m in
    [2**-64, 2**64) (the float64 product of two float32 is exact: one rounding), else the
    float32 quotient x / m (where 1 / m could be subnormal or overflow). Double rounding
    of a quotient through float64 is innocuous for float32 operands."""
    if 2.0**-64 <= m < 2.0**64:
        reciprocal = np.float64(np.float32(1.0 / m))
        return (x * reciprocal).astype(np.float32)
    with np.errstate(invalid="ignore"):  # inf / inf: NaN, as float32 division
        return (x / m).astype(np.float32)


def quantize(values, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(codes uint8, absmax float32)`` of a flat float32 array, block by block."""
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    blocks = -(-x.size // BLOCK)
    codes = np.empty(x.size, dtype=np.uint8)
    absmax = np.empty(blocks, dtype=np.float32)
    zero = int(np.flatnonzero(dynamic_map(signed) == 0)[0])
    for b in range(blocks):
        part = x[b * BLOCK : (b + 1) * BLOCK]
        m = np.abs(part).max()
        absmax[b] = m
        if not m > 0:  # all zero (or a NaN in the block): every code the code of 0
            codes[b * BLOCK : (b + 1) * BLOCK] = zero
        else:
            codes[b * BLOCK : (b + 1) * BLOCK] = nearest_codes(normalise(part, m), signed)
    return codes, absmax


def dequantize(codes, absmax, signed: bool) -> np.ndarray:
    """float32(map[code] * absmax) (the float64 product of two float32 is exact)."""
    table = dynamic_map(signed)
    scale = np.repeat(np.asarray(absmax, dtype=np.float64), BLOCK)[: len(codes)]
    return (table[np.asarray(codes)] * scale).astype(np.float32)

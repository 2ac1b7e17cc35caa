"""Blockwise 8-bit dynamic quantization of optimizer state, on both backends.

The scheme of Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit Optimizers via Block-wise
Quantization" (ICLR 2022, arXiv:2110.02861): a flat float32 array is cut into blocks of
:data:`BLOCK` elements; each block keeps one float32 ``absmax`` (the largest magnitude in
it) and one byte per element, the code of the value of the *dynamic* data type
(:func:`dynamic_map`) nearest to ``x / absmax`` (as ``x`` times its float32 reciprocal).
First moments use the signed map, second moments (never negative) the unsigned one, as
bitsandbytes' blockwise optimizers do.

Codes are indices into the sorted map (``map[code]`` is the value), the layout
bitsandbytes stores, so ``dequantize`` is one table look-up and one multiplication.

Spec of one block (the CPU loops, the CUDA kernels and the float64 oracle in
tests/reference/quantization.py all follow it):

* ``absmax`` = max |x| over the block, taken on the bit patterns (so a NaN in the block
  gives a NaN absmax on both backends); an all-zero (or NaN) block has every code the
  code of 0;
* ``y = x * r`` rounded to float32, ``r = 1 / absmax`` rounded to float32 (one IEEE
  division per block; bitsandbytes also multiplies by the reciprocal). For absmax outside
  [2**-64, 2**64), where ``r`` could be subnormal or infinite, ``y = x / absmax`` (an IEEE
  division) instead. ``|y|`` may exceed 1 by an ulp: it is taken as 1;
* code = the map value nearest to ``y`` (exactly nearest: no rounding in the decision);
  a tie (``y`` exactly halfway between two map values) goes to the value of smaller
  magnitude, toward zero. The unsigned map treats a ``y`` not above 0 (negative, or NaN)
  as 0; then ``|y|`` above 1 (or NaN) counts as 1. The signed map has no -1.0, so
  ``y = -1`` takes its most negative value;
* dequantized value = ``map[code] * absmax`` in float32.

The nearest code is found by arithmetic on the map's structure, not by a search. On the
CPU (:func:`nearest_code_signed`, and the block loops in two passes): the decade from six
comparisons with exact decade thresholds, the step within it from one multiply-add
(:func:`fast_rank_signed`); its floor is the nearest rank unless the multiply-add lands
within :data:`FAST_MARGIN` of an integer (about 2.4e-4 of values), and those few are
settled by one comparison with each neighbour's exact threshold (:func:`magnitude_correct`).
The first pass vectorises (no table look-up); the second touches only flagged elements.
The CUDA twin (:mod:`mxopt.kernels.quantize_cuda`) estimates with :func:`estimate_signed`
and always corrects (a look-up is cheap there). Both give the exactly nearest code, so the
same bits (checked on every float32 in [0, 1] by tests/test_quantization.py with
MXOPT_EXHAUSTIVE=1, and against the emulated GPU).

Speed (one thread of the 2-core AMD EPYC (Zen 1, 2 GHz) this was written on, blocks in
the cache as in a fused step): quantize about 2.6 ns per element (the decade selects are
most of it; 5.3 ns with a look-up correction of every element), dequantize about 0.7 ns
(a scalar look-up: LLVM will not gather on this CPU). Adam on 16M float32 weights with
8-bit moments: about 130 ms a step, float32 moments 25 ms.
Every loop runs from index 0 over a slice: a loop from ``start`` makes Numba wrap
negative indices, which stops LLVM vectorising (measured 5 times slower).
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from mxopt.kernels.kernel import device

__all__ = [
    "BLOCK",
    "FAST_MARGIN",
    "MAP_SIGNED",
    "MAP_UNSIGNED",
    "MIN_QUANTIZED_SIZE",
    "TABLES_DIGEST",
    "block_count",
    "dequantize",
    "dequantize_blocks",
    "dynamic_map",
    "estimate_signed",
    "estimate_unsigned",
    "fast_rank_signed",
    "fast_rank_unsigned",
    "magnitude_correct",
    "nearest_code",
    "nearest_code_signed",
    "nearest_code_unsigned",
    "quantize",
    "quantize_blocks",
]

#: Elements per quantization block (one float32 absmax each), as bitsandbytes' optimizers.
BLOCK = 256
#: State arrays with fewer elements stay float32 (the saving would not pay for the blocks).
MIN_QUANTIZED_SIZE = 4096

#: Decades of the dynamic type: values ``10**-e * fraction`` for ``e`` in 0..6.
_DECADES = 7


def _fraction_bounds(n: int) -> np.ndarray:
    """The ``n + 1`` float32 bounds of ``n`` equal bins of [0.1, 1].

    Bound ``k`` is ``0.1 + k * step`` (``step = (1 - 0.1) / n`` in float32) rounded once to
    float32, counted from 0.1 for the first half and from 1 for the second: the float32
    rounding of torch.linspace(0.1, 1, n + 1), which bitsandbytes' map is built from.
    """
    low = np.float32(0.1)
    step = np.float64((np.float32(1) - low) / np.float32(n))
    k = np.arange(n + 1, dtype=np.float64)
    # float64 products and sums of these float32 values are exact: one rounding, below
    from_low = np.float64(low) + step * k
    from_high = 1.0 - step * (n - k)
    return np.where(k < (n + 1) // 2, from_low, from_high).astype(np.float32)


def _decade_size(e: int, signed: bool) -> int:
    """Values in decade ``e``: the fraction bits left after the sign bit (signed map only),
    ``e`` zero bits and the indicator bit of an 8-bit code."""
    return 2 ** ((6 if signed else 7) - e)


def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 float32 values of the dynamic quantization type, sorted ascending.

    Dynamic tree quantization (Dettmers 2016, arXiv:1511.04561; 8-bit optimizers,
    arXiv:2110.02861): an 8-bit code is a sign bit, a run of ``e`` zero bits (the decimal
    exponent: the value is ``10**-e`` times a fraction), an indicator bit (a one), then
    linear fraction bits. For the unsigned map of second moments the sign bit is a further
    fraction bit. So decade ``e`` (``e`` = 0..6) holds ``2**(6 - e)`` values (signed, and
    their negatives) or ``2**(7 - e)`` values (unsigned): 127 (254) values in all.

    Within a decade the fraction takes the midpoints of ``n`` equal bins of [0.1, 1]:
    ``fraction_j = (b_j + b_{j+1}) / 2`` with bounds ``b`` from :func:`_fraction_bounds`,
    and the value is ``float32(10**-e) * fraction_j`` in float32. The two code patterns
    left (the sign bit with no other bit set; for the unsigned map, zero bits up to the
    last) hold 0 and 1.0: absmax normalises a block to [-1, 1] ([0, 1]), and its largest
    element must come back exactly.

    Every value is computed in float32 as listed: bitsandbytes' ``create_dynamic_map``
    (signed=True for first moments, signed=False for second moments of its blockwise
    optimizers) holds these same 256 float32 values (checked by tests/test_quantization.py
    when bitsandbytes is installed). The signed map is symmetric except for 1.0, which
    has no negative twin (its most negative value is -0.99296875).
    """
    values = [np.float32(0), np.float32(1)]
    for e in range(_DECADES):
        n = _decade_size(e, signed)
        bounds = _fraction_bounds(n)
        fractions = (bounds[:-1] + bounds[1:]) / np.float32(2)
        decade = np.float32(10.0**-e) * fractions
        values.extend(decade)
        if signed:
            values.extend(-decade)
    result = np.sort(np.array(values, dtype=np.float32))
    assert result.size == 256 and np.unique(result).size == 256
    return result


def _up_thresholds(magnitudes: np.ndarray) -> np.ndarray:
    """``t[0] = 0``, ``t[q + 1]`` = the smallest float32 that goes to magnitude ``q + 1``
    rather than ``q`` (strictly above their midpoint: ties go toward zero), ``t[-1] = 2``
    (never reached: magnitudes above 1 are taken as 1 first)."""
    low = magnitudes[:-1].astype(np.float64)
    high = magnitudes[1:].astype(np.float64)
    middle = (low + high) / 2  # exact: neighbours are float32 of close exponents
    up = middle.astype(np.float32)
    up = np.where(up.astype(np.float64) > middle, up, np.nextafter(up, np.float32(np.inf)))
    return np.concatenate([[np.float32(0)], up, [np.float32(2)]]).astype(np.float32)


def _estimate_coefficients(signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per decade ``e``: ``slope, offset`` such that ``floor(a * slope + offset)`` is the
    rank (among magnitudes, 0 = zero) of the value nearest to ``a`` in real
    arithmetic, for ``a`` in [0.1, 1] * 10**-e, and continues into the neighbour decades.

    Decade ``e`` has ``n`` values, ``fraction_j = 0.1 + (j + 1/2) * 0.9 / n``; the nearest
    one is ``j = floor((a * 10**e - 0.1) * n / 0.9)`` and its rank is ``first + j`` with
    ``first`` = the number of smaller magnitudes (zero and the lower decades) = ``n`` for
    the signed map, ``n - 1`` for the unsigned one.
    """
    slope = np.empty(_DECADES, dtype=np.float32)
    offset = np.empty(_DECADES, dtype=np.float32)
    for e in range(_DECADES):
        n = _decade_size(e, signed)
        first = n if signed else n - 1
        slope[e] = 10.0**e * n / 0.9
        offset[e] = first - n / 9
    return slope, offset


MAP_SIGNED = dynamic_map(True)
MAP_UNSIGNED = dynamic_map(False)
#: Largest magnitude rank: 0 is zero, the top one is 1.0.
_TOP_SIGNED = np.float32(128)
_TOP_UNSIGNED = np.float32(255)
_MAGNITUDES_SIGNED = MAP_SIGNED[127:]
_UP_SIGNED = _up_thresholds(_MAGNITUDES_SIGNED)
_UP_UNSIGNED = _up_thresholds(MAP_UNSIGNED)
#: a < _DECADE_LIMITS[k] counts toward the decade e (10**-1 .. 10**-6 in float32).
_DECADE_LIMITS = np.array([10.0**-k for k in range(1, _DECADES)], dtype=np.float32)
_SLOPE_SIGNED, _OFFSET_SIGNED = _estimate_coefficients(True)
_SLOPE_UNSIGNED, _OFFSET_UNSIGNED = _estimate_coefficients(False)


def _first_ranks(signed: bool) -> list[int]:
    """Rank of the smallest magnitude of each decade ``e`` = 0..6."""
    return [_decade_size(e, signed) - (0 if signed else 1) for e in range(_DECADES)]


def _region_tables(signed: bool):
    """The fast rank of :func:`fast_rank_signed` / ``_unsigned``: ``(limits, slopes,
    offsets)``, lowest decade first. ``limits[k]`` is the exact threshold (from
    :func:`_up_thresholds`) of the smallest magnitude of decade ``5 - k``: comparisons with
    them give the decade of the nearest value exactly, so the linear step only has to place
    ``a`` within its decade."""
    up = _UP_SIGNED if signed else _UP_UNSIGNED
    slope, offset = _estimate_coefficients(signed)
    first = _first_ranks(signed)
    limits = np.array([up[first[e]] for e in range(_DECADES - 2, -1, -1)], dtype=np.float32)
    return limits, slope[::-1].copy(), offset[::-1].copy()


_LIMITS_SIGNED, _SLOPES_SIGNED, _OFFSETS_SIGNED = _region_tables(True)
_LIMITS_UNSIGNED, _SLOPES_UNSIGNED, _OFFSETS_UNSIGNED = _region_tables(False)
#: Below the threshold of rank 1 the nearest is zero; from that of the top rank, 1.0.
_ZERO_LIMIT_SIGNED, _TOP_LIMIT_SIGNED = _UP_SIGNED[1], _UP_SIGNED[128]
_ZERO_LIMIT_UNSIGNED, _TOP_LIMIT_UNSIGNED = _UP_UNSIGNED[1], _UP_UNSIGNED[255]
#: ``z <= offset * _CAP_SCALE + _CAP_...``: a decade's last rank plus one half (its offset is
#: ``8/9 n`` signed, ``8/9 n - 1`` unsigned; the last rank ``2 n - 1``, ``2 n - 2``).
_CAP_SCALE = np.float32(2.25)
_CAP_SIGNED = np.float32(-0.5)
_CAP_UNSIGNED = np.float32(0.75)
#: ``floor(z)`` is the nearest rank unless ``z`` is within this of an integer (then the
#: exact thresholds decide). At and just below each threshold ``z`` is within 3.1e-5 rank
#: of its integer and never beyond it on the wrong side (at worst on it: flagged); checked
#: on every threshold by tests/test_quantization.py, which wants a margin of 4 at least.
#: About 2.2e-4 of the values of Adam moments take the exact path (one block in twenty).
FAST_MARGIN = np.float32(2.0**-13)
_FAST_HIGH = np.float32(1) - FAST_MARGIN
_HALF = np.float32(0.5)
_ZERO = np.float32(0)
_ONE = np.float32(1)
_ONE_RANK = np.uint32(1)
_ABS_BITS = np.int32(0x7FFFFFFF)
_127 = np.float32(127)
#: |absmax| in [2**-64, 2**64): y = x * (1 / absmax); outside it (1 / absmax could be
#: subnormal or overflow) y = x / absmax.
_RECIPROCAL_LOW = np.float32(2.0**-64)
_RECIPROCAL_HIGH = np.float32(2.0**64)
#: The tables are compile-time constants of the loops: their digest names the cached code.
TABLES_DIGEST = hashlib.sha1(
    b"".join(t.tobytes() for t in (MAP_SIGNED, MAP_UNSIGNED, _UP_SIGNED, _UP_UNSIGNED,
                                   _DECADE_LIMITS, _SLOPE_SIGNED, _OFFSET_SIGNED,
                                   _SLOPE_UNSIGNED, _OFFSET_UNSIGNED, _LIMITS_SIGNED,
                                   _LIMITS_UNSIGNED, _SLOPES_SIGNED, _OFFSETS_SIGNED,
                                   _SLOPES_UNSIGNED, _OFFSETS_UNSIGNED,
                                   np.array([FAST_MARGIN, _CAP_SCALE, _CAP_SIGNED, _CAP_UNSIGNED,
                                             _ZERO_LIMIT_SIGNED, _TOP_LIMIT_SIGNED,
                                             _ZERO_LIMIT_UNSIGNED, _TOP_LIMIT_UNSIGNED,
                                             _RECIPROCAL_LOW, _RECIPROCAL_HIGH], np.float32)))
).hexdigest()[:8]  # fmt: skip


# ---------------------------------------------------------------------------------------
# Element helpers: plain Python that Numba compiles (the module's arrays are compile-time
# constants); the CUDA twin (mxopt.kernels.quantize_cuda) does the float32 operations of
# estimate_* and magnitude_correct, which give the same (exactly nearest) codes.


@device
def estimate_signed(a):
    """A rank (0 = zero .. 128 = 1.0) within one of the rank of the signed map's
    magnitude nearest to ``a`` in [0, 1]: the decade from six comparisons, then the
    linear step within it. The method of the CUDA twin (``mxq_magnitude_rank``), which
    always applies :func:`magnitude_correct`; the result is checked over every float32 in
    [0, 1] by tests/test_quantization.py with MXOPT_EXHAUSTIVE=1."""
    s = _SLOPE_SIGNED[0]
    o = _OFFSET_SIGNED[0]
    for k in range(_DECADES - 1):
        if a < _DECADE_LIMITS[k]:
            s = _SLOPE_SIGNED[k + 1]
            o = _OFFSET_SIGNED[k + 1]
    z = a * s + o
    if not z >= 0:  # also NaN
        z = _ZERO
    if z > _TOP_SIGNED:
        z = _TOP_SIGNED
    return np.uint32(z)


@device
def estimate_unsigned(a):
    """:func:`estimate_signed` for the unsigned map (ranks 0 = zero .. 255 = 1.0)."""
    s = _SLOPE_UNSIGNED[0]
    o = _OFFSET_UNSIGNED[0]
    for k in range(_DECADES - 1):
        if a < _DECADE_LIMITS[k]:
            s = _SLOPE_UNSIGNED[k + 1]
            o = _OFFSET_UNSIGNED[k + 1]
    z = a * s + o
    if not z >= 0:  # also NaN
        z = _ZERO
    if z > _TOP_UNSIGNED:
        z = _TOP_UNSIGNED
    return np.uint32(z)


@device
def magnitude_correct(a, q, up):
    """The estimate ``q`` made exact: one comparison with each neighbour's threshold.
    (Unsigned ranks: Numba adds no negative-index wrap-around, measured 1.5 times faster.)"""
    return q + np.uint32(a >= up[q + _ONE_RANK]) - np.uint32(a < up[q])


@device
def fast_rank_signed(a):
    """``z`` such that ``floor(z)`` is the rank (0 = zero .. 128 = 1.0) of the signed map's
    magnitude nearest to ``a`` in [0, 1], unless ``z`` is within :data:`FAST_MARGIN` of an
    integer (then it is within one rank: :func:`magnitude_correct` decides). The decade by
    comparisons with exact thresholds, the step within it by one multiply-add, capped at
    the decade's last rank (values between a decade's last bin and the next decade's
    threshold). Selects of constants only, so that a loop of it vectorises."""
    s = _SLOPES_SIGNED[0]
    o = _OFFSETS_SIGNED[0]
    for k in range(_DECADES - 1):
        if a >= _LIMITS_SIGNED[k]:
            s = _SLOPES_SIGNED[k + 1]
            o = _OFFSETS_SIGNED[k + 1]
    z = min(a * s + o, o * _CAP_SCALE + _CAP_SIGNED)
    if a < _ZERO_LIMIT_SIGNED:
        z = _HALF
    if a >= _TOP_LIMIT_SIGNED:
        z = _TOP_SIGNED + _HALF
    return z


@device
def fast_rank_unsigned(a):
    """:func:`fast_rank_signed` for the unsigned map (ranks 0 = zero .. 255 = 1.0)."""
    s = _SLOPES_UNSIGNED[0]
    o = _OFFSETS_UNSIGNED[0]
    for k in range(_DECADES - 1):
        if a >= _LIMITS_UNSIGNED[k]:
            s = _SLOPES_UNSIGNED[k + 1]
            o = _OFFSETS_UNSIGNED[k + 1]
    z = min(a * s + o, o * _CAP_SCALE + _CAP_UNSIGNED)
    if a < _ZERO_LIMIT_UNSIGNED:
        z = _HALF
    if a >= _TOP_LIMIT_UNSIGNED:
        z = _TOP_UNSIGNED + _HALF
    return z


@device
def unsure(z, f):
    """Whether ``z`` (``f = floor(z)``) is too near an integer for ``f`` to be trusted."""
    d = z - f
    return (d < FAST_MARGIN) | (d > _FAST_HIGH)


@device
def signed_magnitude(y):
    """|y| for the signed map, NaN and values above 1 taken as 1."""
    a = abs(y)
    return a if a < _ONE else _ONE


@device
def unsigned_magnitude(y):
    """y for the unsigned map: not above 0 (also NaN) taken as 0, above 1 as 1."""
    a = y if y > _ZERO else _ZERO
    return a if a < _ONE else _ONE


@device
def signed_code(y, rank):
    """Index into :data:`MAP_SIGNED` of magnitude rank ``rank`` (a float) with the sign of
    ``y``: 127 + rank, or for y < 0: 127 - min(rank, 127) (no -1.0 in the map; -0.0 is
    not negative). Float selects: no branch, no 64-bit promotion."""
    return _127 - min(rank, _127) if y < _ZERO else _127 + rank


@device
def nearest_code_signed(y):
    """Index into :data:`MAP_SIGNED` of the value nearest to ``y`` in [-1, 1] (NaN as 1)."""
    a = signed_magnitude(y)
    z = fast_rank_signed(a)
    f = np.floor(z)
    if unsure(z, f):
        f = np.float32(magnitude_correct(a, np.uint32(f), _UP_SIGNED))
    return np.uint32(signed_code(y, f))


@device
def nearest_code_unsigned(y):
    """Index into :data:`MAP_UNSIGNED` of the value nearest to ``y`` in [0, 1] (a
    negative ``y`` or NaN gives the code of 0)."""
    a = unsigned_magnitude(y)
    z = fast_rank_unsigned(a)
    f = np.floor(z)
    if unsure(z, f):
        return magnitude_correct(a, np.uint32(f), _UP_UNSIGNED)
    return np.uint32(f)


def nearest_code(y, signed: bool) -> int:
    """The code (index into ``dynamic_map(signed)``) of the map value nearest to the
    normalised ``y`` (ties toward zero). Host convenience; the loops do the same."""
    y = np.float32(y)
    return int(nearest_code_signed(y) if signed else nearest_code_unsigned(y))


# ---------------------------------------------------------------------------------------
# Block loops (Numba, compiled on first use)


@device
def _block_absmax(bits):
    """max |x| of a block of float32 ``x`` given as int32 bit patterns ``bits`` (an int32
    max vectorises, measured 5 times faster than through int64; for non-negative floats
    it is the float order, and NaN patterns are the largest)."""
    largest = np.int32(0)
    for i in range(bits.size):  # from 0: no negative-index wrap-around in the loop
        largest = max(largest, np.int32(bits[i] & _ABS_BITS))
    return largest


@device
def _fast_codes(x, c, unsure_flags, m, r, divide, signed):
    """The vectorised pass over one block: every code from the fast rank, and a flag where
    it may be one rank off; returns whether any is flagged. ``divide``: y = x / m, else
    y = x * r."""
    flagged = False
    for j in range(x.size):
        y = x[j] / m if divide else x[j] * r
        if signed:
            a = signed_magnitude(y)
            z = fast_rank_signed(a)
        else:
            a = unsigned_magnitude(y)
            z = fast_rank_unsigned(a)
        f = np.floor(z)
        flag = unsure(z, f)
        unsure_flags[j] = flag
        flagged |= flag
        c[j] = np.uint8(signed_code(y, f) if signed else f)
    return flagged


@device
def _exact_codes(x, c, unsure_flags, m, r, divide, signed):
    """The flagged codes of a block made exact (about one block in twenty has any)."""
    for j in range(x.size):
        if unsure_flags[j]:
            y = x[j] / m if divide else x[j] * r
            if signed:
                a = signed_magnitude(y)
                f = np.floor(fast_rank_signed(a))
                f = np.float32(magnitude_correct(a, np.uint32(f), _UP_SIGNED))
                c[j] = np.uint8(signed_code(y, f))
            else:
                a = unsigned_magnitude(y)
                f = np.floor(fast_rank_unsigned(a))
                c[j] = np.uint8(magnitude_correct(a, np.uint32(f), _UP_UNSIGNED))


def _quantize_blocks(values, codes, absmax, signed):
    bits = values.view(np.int32)
    absmax_bits = absmax.view(np.int32)
    n = values.size
    flags = np.empty(BLOCK, dtype=np.bool_)  # the codes that may be one rank off
    for block in range(absmax.size):
        start = block * BLOCK
        stop = min(n, start + BLOCK)
        x = values[start:stop]
        c = codes[start:stop]
        absmax_bits[block] = _block_absmax(bits[start:stop])
        m = absmax[block]
        if not m > 0:  # an all-zero block (or a NaN absmax)
            for j in range(stop - start):
                c[j] = 127 if signed else 0
            continue
        r = _ONE / m
        if _RECIPROCAL_LOW <= m < _RECIPROCAL_HIGH:  # the same loops, specialised
            if _fast_codes(x, c, flags, m, r, False, signed):
                _exact_codes(x, c, flags, m, r, False, signed)
        elif _fast_codes(x, c, flags, m, r, True, signed):
            _exact_codes(x, c, flags, m, r, True, signed)
    return 0


def _dequantize_blocks(codes, absmax, out, signed):
    table = MAP_SIGNED if signed else MAP_UNSIGNED
    n = codes.size
    for block in range(absmax.size):
        start = block * BLOCK
        stop = min(n, start + BLOCK)
        c = codes[start:stop]
        o = out[start:stop]
        m = absmax[block]
        for i in range(c.size):  # from 0: no negative-index wrap-around in the loop
            o[i] = table[c[i]] * m
    return 0


#: The block loops, for the fused steps of :mod:`mxopt.kernels.cpu_precision` (which compile
#: them into their stages).
quantize_block_loop = _quantize_blocks
dequantize_block_loop = _dequantize_blocks

_lock = threading.Lock()
_compiled: dict = {}


def _loop(name: str):
    function = _compiled.get(name)
    if function is None:
        from mxopt.kernels import cpu  # Numba, imported on first use

        with _lock:
            function = _compiled.get(name)
            if function is None:
                source = {"quantize": _quantize_blocks, "dequantize": _dequantize_blocks}
                function = cpu.compile_loop(source[name], f"mxopt_quantize_{name}_{TABLES_DIGEST}")
                _compiled[name] = function
    return function


def block_count(n: int) -> int:
    """Blocks (absmax values) of a flat array of ``n`` elements."""
    return -(-n // BLOCK)


def _flat(array, dtype, what: str) -> np.ndarray:
    if not (isinstance(array, np.ndarray) and array.dtype == dtype and array.ndim == 1
            and array.flags.c_contiguous):  # fmt: skip
        raise TypeError(f"{what} must be a flat contiguous {np.dtype(dtype)} NumPy array")
    return array


def quantize_blocks(values, codes, absmax, signed: bool) -> None:
    """Quantize ``values`` (float32, flat) into ``codes`` (uint8, same size) and
    ``absmax`` (float32, one per block of :data:`BLOCK`; the last block may be shorter)."""
    _check_sizes(values, codes, absmax)
    _loop("quantize")(values, codes, absmax, bool(signed))


def dequantize_blocks(codes, absmax, out, signed: bool) -> None:
    """``out[i] = map[codes[i]] * absmax[i // BLOCK]`` in float32."""
    _check_sizes(out, codes, absmax)
    _loop("dequantize")(codes, absmax, out, bool(signed))


def _check_sizes(values, codes, absmax) -> None:
    _flat(values, np.float32, "values")
    _flat(codes, np.uint8, "codes")
    _flat(absmax, np.float32, "absmax")
    if codes.size != values.size or absmax.size != block_count(values.size):
        raise ValueError(
            f"{values.size} values need {values.size} codes and {block_count(values.size)} "
            f"absmax values, got {codes.size} and {absmax.size}"
        )


def quantize(values, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, absmax)`` of a flat float32 NumPy array."""
    values = _flat(values, np.float32, "values")
    codes = np.empty(values.size, dtype=np.uint8)
    absmax = np.empty(block_count(values.size), dtype=np.float32)
    quantize_blocks(values, codes, absmax, signed)
    return codes, absmax


def dequantize(codes, absmax, signed: bool) -> np.ndarray:
    """The float32 values of ``codes`` and ``absmax`` (from :func:`quantize`)."""
    out = np.empty(_flat(codes, np.uint8, "codes").size, dtype=np.float32)
    dequantize_blocks(codes, absmax, out, signed)
    return out

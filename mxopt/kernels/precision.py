"""Low-precision storage: float16 and bfloat16 arrays, widened to float32 and rounded back.

A weight (or gradient) of a 16-bit float dtype is stored in 16 bits and computed in
float32: a step widens it (exactly), runs the optimizer's float32 kernels, and rounds the
result back into the 16-bit array, to nearest (ties to even) or stochastically. The
kernels here work on the bits (a ``uint16`` view of the 16-bit array, a ``uint32`` view
of the float32 one) with integer arithmetic only, so the CPU loops (Numba) and their CUDA
twins (:data:`CUDA_SOURCE`) give the same bits, and the results match NumPy's and
ml_dtypes' own conversions (to nearest; a NaN stays a quiet NaN: bfloat16 keeps the sign
and the top of the payload, as ml_dtypes does, float16 becomes the canonical quiet NaN).

**Stochastic rounding** rounds ``x`` up (away from zero) to the next representable value
with probability equal to the fraction of the spacing that ``x`` lies beyond the value
below it, so the expected result is ``x`` exactly (unbiased): random bits are added below
the kept bits and the sum is truncated. The random bits of element ``e`` come from a
counter-based generator, a pure function of a 64-bit stream key and ``e``: the key is
derived on the host from (seed, index, step) (:func:`stream_key`), so a rounding does not
depend on the backend, on how a step is cut into pieces, or on anything but those four
numbers, and a resumed run rounds exactly as an uninterrupted one. The generator is
SplitMix64's output function (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014) applied to ``key + (e + 1) * golden``.

Edge cases: a value that rounds beyond the largest finite number becomes infinite (to
nearest: at or above the halfway point, as IEEE; stochastically: with the probability
of rounding up); NaN stays NaN (quiet), infinities stay infinite. Stochastic rounding of
a value below float16's smallest subnormal by more than 2**40 gives zero.
"""

from __future__ import annotations

import hashlib

import numpy as np

from mxopt.kernels.kernel import device, largest_magnitude_bits

__all__ = [
    "BFLOAT16",
    "CUDA_SOURCE",
    "FLOAT16",
    "FORMAT_CODES",
    "index_key",
    "low_precision_format",
    "narrow_loop",
    "stream_key",
    "widen_loop",
]

FLOAT16 = "float16"
BFLOAT16 = "bfloat16"

#: The kernels' integer code of each format.
FORMAT_CODES = {FLOAT16: 0, BFLOAT16: 1}

#: How a fused step reads and writes a state array: as float32 (in place), as bfloat16
#: bits widened to float32, or as 8-bit codes and block absmax, signed or not.
FLOAT32, BITS16, INT8_SIGNED, INT8_UNSIGNED = "float32", "bits16", "int8s", "int8u"


_formats: dict = {}


def bfloat16_dtype() -> np.dtype:
    """ml_dtypes' bfloat16 (imported on first use: it is not needed until then)."""
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def low_precision_format(dtype) -> str | None:
    """``"float16"`` or ``"bfloat16"`` (ml_dtypes' type, as JAX and CuPy use it) for a
    16-bit float dtype, ``None`` for any other dtype."""
    try:
        return _formats[dtype]
    except (KeyError, TypeError):
        pass
    dtype = np.dtype(dtype)
    fmt = dtype.name if dtype.itemsize == 2 and dtype.name in FORMAT_CODES else None
    _formats[dtype] = fmt
    return fmt


# -- the counter-based random stream (host half) ---------------------------------------------

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _mix(z: int) -> int:
    """SplitMix64's output function on a Python int (the host twin of ``_random_bits``)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


def index_key(index) -> int:
    """A 64-bit number for an updater index, the same in every process: an int is itself
    (modulo 2**64); anything else is hashed from its ``repr`` (BLAKE2b), since Python's own
    ``hash`` of a string changes from one process to the next."""
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        return int(index) & _MASK
    digest = hashlib.blake2b(repr(index).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def stream_key(seed: int, index, step: int) -> int:
    """The 64-bit key of the random stream that rounds the ``step``-th update of the weight
    under ``index`` (its elements draw ``_random_bits(key, element)``)."""
    key = _mix(seed * _GOLDEN + 1)
    key = _mix(key ^ index_key(index))
    return _mix(key ^ (int(step) & _MASK))


# -- the bits of one element (Numba device functions; CUDA twins below) ----------------------

_U64_GOLDEN = np.uint64(_GOLDEN)
_U64_MIX1 = np.uint64(_MIX1)
_U64_MIX2 = np.uint64(_MIX2)
_U64_ONE = np.uint64(1)
_U32 = np.uint32
_S27, _S30, _S31 = np.uint64(27), np.uint64(30), np.uint64(31)


@device
def _random_bits(key, element):
    """64 random bits for ``element`` of the stream ``key`` (uint64 arithmetic, wrapping)."""
    z = key + (np.uint64(element) + _U64_ONE) * _U64_GOLDEN
    z = (z ^ (z >> _S30)) * _U64_MIX1
    z = (z ^ (z >> _S27)) * _U64_MIX2
    return z ^ (z >> _S31)


@device
def _half_to_single(h):
    """The float32 bits of the float16 bits ``h`` (exact)."""
    h = np.uint32(h)
    sign = (h & np.uint32(0x8000)) << np.uint32(16)
    exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
    mantissa = h & np.uint32(0x3FF)
    if exponent == np.uint32(0x1F):  # infinity or NaN, payload kept
        return sign | np.uint32(0x7F800000) | (mantissa << np.uint32(13))
    if exponent != np.uint32(0):
        return sign | ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13))
    if mantissa == np.uint32(0):
        return sign
    exponent = np.uint32(113)  # a subnormal: normalise (rare; a short loop)
    while (mantissa & np.uint32(0x400)) == np.uint32(0):
        mantissa = mantissa << np.uint32(1)
        exponent = exponent - np.uint32(1)
    return sign | (exponent << np.uint32(23)) | ((mantissa & np.uint32(0x3FF)) << np.uint32(13))


@device
def _single_to_half(f, stochastic, random):
    """The float16 bits of the float32 bits ``f``: to nearest, ties to even, or
    stochastically with the 64 random bits ``random``."""
    f = np.uint32(f)
    sign = (f >> np.uint32(16)) & np.uint32(0x8000)
    a = f & np.uint32(0x7FFFFFFF)
    if a > np.uint32(0x7F800000):
        return np.uint16(sign | np.uint32(0x7E00))
    if a == np.uint32(0x7F800000):
        return np.uint16(sign | np.uint32(0x7C00))
    if a >= np.uint32(0x38800000):  # a normal float16 (or an overflow)
        t = a - np.uint32(0x38000000)  # exponent rebiased from 127 to 15
        if stochastic:
            t = t + np.uint32(random & np.uint64(0x1FFF))
        else:
            if a >= np.uint32(0x477FF000):  # at or above 65520: infinite
                return np.uint16(sign | np.uint32(0x7C00))
            t = t + np.uint32(0xFFF) + ((t >> np.uint32(13)) & np.uint32(1))
        r = t >> np.uint32(13)
        if r > np.uint32(0x7C00):
            r = np.uint32(0x7C00)
        return np.uint16(sign | r)
    exponent = a >> np.uint32(23)
    if exponent == np.uint32(0):
        return np.uint16(sign)  # a float32 subnormal: far below half of float16's smallest
    mantissa = np.uint64((a & np.uint32(0x7FFFFF)) | np.uint32(0x800000))
    shift = np.uint64(126) - np.uint64(exponent)  # the value is mantissa >> shift units of 2**-24
    if stochastic:
        if shift > np.uint64(63):  # below 2**-64: the sum below cannot reach a unit
            return np.uint16(sign)
        keep = (mantissa + (random & ((_U64_ONE << shift) - _U64_ONE))) >> shift
        return np.uint16(sign | np.uint32(keep))
    if shift > np.uint64(24):
        return np.uint16(sign)
    keep = mantissa >> shift
    rest = mantissa & ((_U64_ONE << shift) - _U64_ONE)
    half = _U64_ONE << (shift - _U64_ONE)
    if rest > half or (rest == half and (keep & _U64_ONE) == _U64_ONE):
        keep = keep + _U64_ONE
    return np.uint16(sign | np.uint32(keep))


@device
def _single_to_bfloat(f, stochastic, random):
    """The bfloat16 bits of the float32 bits ``f``: to nearest, ties to even, or
    stochastically with the 64 random bits ``random``."""
    f = np.uint32(f)
    if (f & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: quiet, payload kept
        return np.uint16((f >> np.uint32(16)) | np.uint32(0x0040))
    if stochastic:
        return np.uint16((f + np.uint32(random & np.uint64(0xFFFF))) >> np.uint32(16))
    rounded = f + np.uint32(0x7FFF) + ((f >> np.uint32(16)) & np.uint32(1))
    return np.uint16(rounded >> np.uint32(16))


# -- loops over flat arrays (compiled by mxopt.kernels.cpu) -----------------------------------


@device
def widen_loop(bits, out, code):
    """``out[i]`` (float32 bits) = the value of ``bits[i]`` (a 16-bit format, exact)."""
    if code == 1:
        for i in range(bits.size):
            out[i] = np.uint32(bits[i]) << np.uint32(16)
    else:
        for i in range(bits.size):
            out[i] = _half_to_single(bits[i])
    return 0


@device
def narrow_block(source, bits, code, key, first, stochastic):
    """``bits[i]`` = ``source[i]`` (float32 bits) rounded to the 16-bit format, element ``i``
    drawing its random bits from stream ``key`` at element ``first + i``."""
    if code == 1 and not stochastic:
        # the common case without a branch in the loop, so that it vectorises (the same
        # bits as _single_to_bfloat)
        # (every intermediate cast back to uint32: Numba widens uint32 arithmetic to 64 bits,
        # which halves the vector lanes; measured 0.92 against 0.37 ns an element)
        for i in range(bits.size):
            f = source[i]
            rounded = _U32(_U32(f + _U32(0x7FFF)) + ((f >> _U32(16)) & _U32(1))) >> _U32(16)
            quiet = np.uint16((f >> _U32(16)) | _U32(0x0040))
            nan = (f & _U32(0x7FFFFFFF)) > _U32(0x7F800000)
            bits[i] = quiet if nan else np.uint16(rounded)
    elif code == 1:
        for i in range(bits.size):
            bits[i] = _single_to_bfloat(source[i], True, _random_bits(key, first + i))
    elif not stochastic:
        # float16 to nearest without a branch in the loop (the same bits as
        # _single_to_half): the normal and the subnormal result both made, then selected
        values = source.view(np.float32)
        for i in range(bits.size):
            f = source[i]
            a = f & _U32(0x7FFFFFFF)
            t = _U32(a - _U32(0x38000000))  # a normal float16: exponent rebiased 127 -> 15
            normal = _U32(_U32(t + _U32(0xFFF)) + ((t >> _U32(13)) & _U32(1))) >> _U32(13)
            normal = _U32(0x7C00) if normal > _U32(0x7C00) else normal  # 65520 and up: inf
            # a subnormal float16 counts units of 2**-24: |x| * 2**24 rounded to even by
            # rint (exact: a power-of-two scaling; |x| clamped so that the cast stays in range)
            x = min(abs(values[i]), np.float32(1.0))
            subnormal = _U32(np.int32(np.rint(x * np.float32(16777216.0))))
            r = normal if a >= _U32(0x38800000) else subnormal
            r = _U32(0x7E00) if a > _U32(0x7F800000) else r
            bits[i] = np.uint16(((f >> _U32(16)) & _U32(0x8000)) | r)
    else:
        for i in range(bits.size):
            random = _random_bits(key, first + i) if stochastic else np.uint64(0)
            bits[i] = _single_to_half(source[i], stochastic, random)
    return 0


def narrow_loop(source, bits, code, offsets, keys, stochastic):
    """:func:`narrow_block` over segments: element ``i`` of segment ``k`` (``[offsets[k],
    offsets[k+1])``) draws its random bits from stream ``keys[k]`` at element
    ``i - offsets[k]``."""
    for k in range(keys.size):
        a, b = offsets[k], offsets[k + 1]
        narrow_block(source[a:b], bits[a:b], code, keys[k], 0, stochastic)
    return 0


#: Clears the sign bit of a 16-bit float's pattern.
_MAGNITUDE_16 = np.uint16(0x7FFF)


@device
def count_nonfinite_bits(bits, start, stop, code):
    """The number of NaN and infinite values among the 16-bit ``bits[start:stop]``
    (exponent bits all set); a fast read pass first says whether there is any."""
    mask = np.uint16(0x7F80) if code == 1 else np.uint16(0x7C00)
    part = bits[start:stop]
    if largest_magnitude_bits(part, _MAGNITUDE_16) < mask:
        return 0
    bad = 0
    for i in range(part.size):
        if (part[i] & mask) == mask:
            bad += 1
    return bad


# -- the CUDA twins ---------------------------------------------------------------------------

#: Widening and rounding for CuPy arrays: the same integer arithmetic as the device
#: functions above, one thread per element (grid-stride).
CUDA_SOURCE = r"""
__device__ __forceinline__ unsigned long long mx_random_bits(const unsigned long long key,
                                                             const long long element) {
    unsigned long long z = key + ((unsigned long long)element + 1ULL) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

__device__ __forceinline__ float mx_as_float(const unsigned int bits) {
    union { unsigned int u; float f; } v;
    v.u = bits;
    return v.f;
}

__device__ __forceinline__ unsigned int mx_as_uint(const float value) {
    union { unsigned int u; float f; } v;
    v.f = value;
    return v.u;
}

__device__ __forceinline__ unsigned int mx_half_to_single(const unsigned short bits) {
    const unsigned int h = bits;
    const unsigned int sign = (h & 0x8000u) << 16;
    unsigned int exponent = (h >> 10) & 0x1Fu;
    unsigned int mantissa = h & 0x3FFu;
    if (exponent == 0x1Fu) return sign | 0x7F800000u | (mantissa << 13);
    if (exponent != 0u) return sign | ((exponent + 112u) << 23) | (mantissa << 13);
    if (mantissa == 0u) return sign;
    exponent = 113u;
    while ((mantissa & 0x400u) == 0u) {
        mantissa <<= 1;
        exponent -= 1u;
    }
    return sign | (exponent << 23) | ((mantissa & 0x3FFu) << 13);
}

__device__ __forceinline__ unsigned int mx_widen(const unsigned short bits, const int code) {
    return code == 1 ? ((unsigned int)bits) << 16 : mx_half_to_single(bits);
}

__device__ __forceinline__ unsigned short mx_single_to_half(const unsigned int f,
                                                            const bool stochastic,
                                                            const unsigned long long random) {
    const unsigned int sign = (f >> 16) & 0x8000u;
    const unsigned int a = f & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (unsigned short)(sign | 0x7E00u);
    if (a == 0x7F800000u) return (unsigned short)(sign | 0x7C00u);
    if (a >= 0x38800000u) {
        unsigned int t = a - 0x38000000u;
        if (stochastic) {
            t += (unsigned int)(random & 0x1FFFULL);
        } else {
            if (a >= 0x477FF000u) return (unsigned short)(sign | 0x7C00u);
            t += 0xFFFu + ((t >> 13) & 1u);
        }
        unsigned int r = t >> 13;
        if (r > 0x7C00u) r = 0x7C00u;
        return (unsigned short)(sign | r);
    }
    const unsigned int exponent = a >> 23;
    if (exponent == 0u) return (unsigned short)sign;
    const unsigned long long mantissa = (unsigned long long)((a & 0x7FFFFFu) | 0x800000u);
    const unsigned long long shift = 126ULL - exponent;
    if (stochastic) {
        if (shift > 63ULL) return (unsigned short)sign;
        const unsigned long long keep = (mantissa + (random & ((1ULL << shift) - 1ULL))) >> shift;
        return (unsigned short)(sign | (unsigned int)keep);
    }
    if (shift > 24ULL) return (unsigned short)sign;
    unsigned long long keep = mantissa >> shift;
    const unsigned long long rest = mantissa & ((1ULL << shift) - 1ULL);
    const unsigned long long half = 1ULL << (shift - 1ULL);
    if (rest > half || (rest == half && (keep & 1ULL) == 1ULL)) keep += 1ULL;
    return (unsigned short)(sign | (unsigned int)keep);
}

__device__ __forceinline__ unsigned short mx_single_to_bfloat(const unsigned int f,
                                                              const bool stochastic,
                                                              const unsigned long long random) {
    if ((f & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((f >> 16) | 0x0040u);
    if (stochastic) return (unsigned short)((f + (unsigned int)(random & 0xFFFFULL)) >> 16);
    return (unsigned short)((f + 0x7FFFu + ((f >> 16) & 1u)) >> 16);
}

extern "C" __global__ void mxopt_widen(const unsigned short* bits, unsigned int* out,
                                       const int code, const long long n) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = code == 1 ? ((unsigned int)bits[i]) << 16 : mx_half_to_single(bits[i]);
}

extern "C" __global__ void mxopt_narrow(const unsigned int* source, unsigned short* bits,
                                        const int code, const long long* offsets,
                                        const unsigned long long* keys, const int segments,
                                        const int stochastic, const long long start,
                                        const long long stop) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < stop;
         i += stride) {
        int lo = 0, hi = segments;
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (offsets[mid] <= i) lo = mid; else hi = mid;
        }
        const unsigned long long random =
            stochastic ? mx_random_bits(keys[lo], i - offsets[lo]) : 0ULL;
        bits[i] = code == 1 ? mx_single_to_bfloat(source[i], stochastic != 0, random)
                            : mx_single_to_half(source[i], stochastic != 0, random);
    }
}
"""

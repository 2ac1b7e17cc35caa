"""Independent references for float16/bfloat16 storage: rounding to nearest, stochastic
rounding and its counter-based random stream.

Written from the published descriptions, not from mxopt's kernels:

* the random stream is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom
  number generators", OOPSLA 2014): element ``e`` of stream ``key`` draws the output
  function ("mix") of ``key + (e + 1) * 0x9E3779B97F4A7C15`` (mod 2**64); the key of
  (seed, index, step) is derived as :mod:`mxopt.kernels.precision` documents it;
* rounding to nearest is NumPy's / ml_dtypes' own conversion (IEEE, ties to even);
* stochastic rounding is computed on float64 values (the two neighbours of ``x`` in the
  16-bit format and the position of ``x`` between them), not on bits.

This module declares no optimizer (it has no ``OPTIMIZERS``).
"""

from __future__ import annotations

import hashlib

import numpy as np

try:  # bfloat16 (JAX's NumPy dtype); this package imports every module, so it stays optional
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None

__all__ = ["FORMATS", "random_bits", "round_nearest", "round_stochastic", "stream_key"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix_int(z: int) -> int:
    """SplitMix64's output function (xor-shift-multiply, constants of the paper's mix64
    variant 13) on a Python int, modulo 2**64."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _mix_array(z: np.ndarray) -> np.ndarray:
    """The same function on a uint64 array (NumPy's uint64 arithmetic wraps modulo 2**64)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def random_bits(key: int, elements) -> np.ndarray:
    """uint64 random bits of ``elements`` (ints >= 0) of the stream ``key``."""
    e = np.asarray(elements, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key & _MASK) + (e + np.uint64(1)) * np.uint64(_GOLDEN)
        return _mix_array(z)


def _index_key(index) -> int:
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        return int(index) % (1 << 64)
    return int.from_bytes(hashlib.blake2b(repr(index).encode(), digest_size=8).digest(), "little")


def stream_key(seed: int, index, step: int) -> int:
    """The key of the stream rounding update ``step`` of the weight under ``index``:
    mix(seed * golden + 1), then xor the index's key and mix, then xor the step and mix."""
    key = _mix_int(seed * _GOLDEN + 1)
    key = _mix_int(key ^ _index_key(index))
    return _mix_int(key ^ (step % (1 << 64)))


# -- the formats ------------------------------------------------------------------------------

#: precision p (significant bits), smallest normal exponent, largest finite value
FORMATS = {np.dtype(np.float16): (11, -14, 65504.0)}
if ml_dtypes is not None:
    FORMATS[np.dtype(ml_dtypes.bfloat16)] = (
        8,
        -126,
        float(ml_dtypes.finfo(ml_dtypes.bfloat16).max),
    )
_FLOAT32 = (24, -126)


def round_nearest(x, dtype) -> np.ndarray:
    """``x`` (float32) rounded to nearest, ties to even: NumPy's / ml_dtypes' conversion."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is the point
        return np.asarray(x, np.float32).astype(dtype)


def _binade(a: np.ndarray) -> np.ndarray:
    """floor(log2(a)) of positive finite float64 values (exact, from frexp)."""
    return np.frexp(a)[1].astype(np.int64) - 1


def round_stochastic(x, dtype, bits) -> np.ndarray:
    """``x`` (float32) rounded stochastically to ``dtype`` with the uint64 random ``bits``
    (one per element).

    With ``lo`` the neighbour of ``x`` toward zero in the format, ``spacing`` the format's
    spacing there (``hi = lo + spacing``, infinite past the largest finite value) and ``k``
    the number of float32 bits below the format's precision at ``x``, ``x`` rounds away
    from zero iff ``bits mod 2**k >= 2**k - frac``, ``frac = (|x| - |lo|) / spacing * 2**k``
    (an integer): the probability is exactly ``(|x| - |lo|) / spacing``. Zero, infinities
    and NaN stay what they are; a value below 2**-40 of float16's smallest subnormal
    (2**-64) gives zero.
    """
    p, emin, largest = FORMATS[np.dtype(dtype)]
    x = np.asarray(x, np.float32).reshape(-1)
    bits = np.asarray(bits, np.uint64).reshape(-1)
    a = np.abs(x.astype(np.float64))
    out = a.copy()  # zero, inf and NaN stay
    finite = np.isfinite(a) & (a > 0)
    af, r = a[finite], bits[finite]
    emax = _binade(np.array([largest]))[0]
    e = np.clip(_binade(af), emin, emax)
    spacing = np.ldexp(1.0, e - (p - 1))
    lo = np.minimum(np.floor(af / spacing) * spacing, largest)
    e32 = np.maximum(_binade(af), _FLOAT32[1]) - (_FLOAT32[0] - 1)
    k = (e - (p - 1)) - e32
    beyond = af >= largest + spacing  # past the largest finite value plus its spacing
    tiny = k > 63
    k = np.clip(k, 0, 63)
    frac = np.where(beyond | tiny, 0.0, (af - lo) / spacing * np.ldexp(1.0, k)).astype(np.uint64)
    low_bits = r & ((np.uint64(1) << k.astype(np.uint64)) - np.uint64(1))
    up = (low_bits + frac) >= (np.uint64(1) << k.astype(np.uint64))
    result = np.where(up, lo + spacing, lo)
    result = np.where(result > largest, np.inf, result)
    result = np.where(beyond, np.inf, result)
    result = np.where(tiny, 0.0, result)
    out[finite] = result
    out = np.copysign(out, x.astype(np.float64))
    return out.astype(dtype)

"""The CUDA twin of :mod:`mxopt.kernels.quantize`: the same nearest codes and dequantized
values, one thread per block of ``BLOCK`` elements (grid-stride over blocks), with the
codec's tables compiled in as constants.

A module of its own so that the CPU codec stays readable; :mod:`mxopt.kernels.cuda`
launches it and the tests compile it with NVRTC and run it on the GPU emulation.
"""

from __future__ import annotations

import numpy as np

from mxopt.kernels import quantize as q

__all__ = ["QUANTIZE_SOURCE"]


def _c_array(name: str, values: np.ndarray) -> str:
    items = []
    for v in values.astype(np.float32):
        items.append(f"{float(v)!r}f")
    rows = [", ".join(items[k : k + 6]) for k in range(0, len(items), 6)]
    body = ",\n    ".join(rows)
    return f"__device__ const float {name}[{values.size}] = {{\n    {body}\n}};\n"


def _cuda_source() -> str:
    tables = "".join(
        _c_array(name, values)
        for name, values in [
            ("mxq_map_signed", q.MAP_SIGNED),
            ("mxq_map_unsigned", q.MAP_UNSIGNED),
            ("mxq_up_signed", q._UP_SIGNED),
            ("mxq_up_unsigned", q._UP_UNSIGNED),
            ("mxq_decade_limits", q._DECADE_LIMITS),
            ("mxq_slope_signed", q._SLOPE_SIGNED),
            ("mxq_offset_signed", q._OFFSET_SIGNED),
            ("mxq_slope_unsigned", q._SLOPE_UNSIGNED),
            ("mxq_offset_unsigned", q._OFFSET_UNSIGNED),
        ]
    )
    code = _QUANTIZE_CODE.replace("BLOCK_SIZE", str(q.BLOCK))
    bounds = [("RECIPROCAL_LOW", q._RECIPROCAL_LOW), ("RECIPROCAL_HIGH", q._RECIPROCAL_HIGH)]
    for name, value in bounds:
        code = code.replace(name, f"{float(value)!r}f")  # powers of two: exact decimals
    return tables + code


_QUANTIZE_CODE = r"""
__device__ __forceinline__ unsigned int mxq_abs_bits(const float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x) & 0x7fffffffu;
#else
    unsigned int b;
    __builtin_memcpy(&b, &x, sizeof b);
    return b & 0x7fffffffu;
#endif
}

__device__ __forceinline__ float mxq_float_of_bits(const unsigned int b) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(b);
#else
    float x;
    __builtin_memcpy(&x, &b, sizeof x);
    return x;
#endif
}

// Rank (0 = zero .. top = 1.0) of the magnitude nearest to a >= 0: decade, linear step,
// then one comparison with each neighbour's threshold (estimate_signed / _unsigned and
// magnitude_correct in quantize.py; the estimate may differ by one, the result cannot).
__device__ __forceinline__ int mxq_magnitude_rank(float a, const float* slope,
        const float* offset, const float* up, const int top) {
    if (!(a < 1.0f)) a = 1.0f;  // y infinite or NaN (as the CPU loops: NaN counts as 1)
    int e = 0;
    for (int k = 0; k < 6; ++k) e += a < mxq_decade_limits[k];
    float z = a * slope[e] + offset[e];
    if (!(z >= 0.0f)) z = 0.0f;
    if (z > (float)top) z = (float)top;
    const int q = (int)z;
    return q + (a >= up[q + 1]) - (a < up[q]);
}

__device__ __forceinline__ int mxq_nearest_code_signed(const float y) {
    const int q = mxq_magnitude_rank(fabsf(y), mxq_slope_signed, mxq_offset_signed,
                                     mxq_up_signed, 128);
    return y < 0.0f ? 127 - (q < 127 ? q : 127) : 127 + q;
}

__device__ __forceinline__ int mxq_nearest_code_unsigned(const float y) {
    const float a = y > 0.0f ? y : 0.0f;
    return mxq_magnitude_rank(a, mxq_slope_unsigned, mxq_offset_unsigned, mxq_up_unsigned, 255);
}

__device__ __forceinline__ float mxq_dequantize(const unsigned char code, const float absmax,
                                                const bool is_signed) {
    return (is_signed ? mxq_map_signed[code] : mxq_map_unsigned[code]) * absmax;
}

__device__ void mxq_quantize_blocks(const float* values, unsigned char* codes, float* absmax,
                                    const long long n, const bool is_signed) {
    const long long blocks = (n + BLOCK_SIZE - 1) / BLOCK_SIZE;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < blocks; b += stride) {
        const long long start = b * BLOCK_SIZE;
        const long long stop = start + BLOCK_SIZE < n ? start + BLOCK_SIZE : n;
        unsigned int largest = 0;
        for (long long i = start; i < stop; ++i) {
            const unsigned int bits = mxq_abs_bits(values[i]);
            if (bits > largest) largest = bits;
        }
        const float m = mxq_float_of_bits(largest);
        absmax[b] = m;
        // y = x * (1 / m), an IEEE division once per block (no --use_fast_math), or x / m
        // where 1 / m could be subnormal or overflow (as _quantize_blocks)
        const float r = 1.0f / m;
        const bool divide = !(m >= RECIPROCAL_LOW && m < RECIPROCAL_HIGH);
        if (!(m > 0.0f)) {
            for (long long i = start; i < stop; ++i) codes[i] = is_signed ? 127 : 0;
        } else if (is_signed) {
            for (long long i = start; i < stop; ++i)
                codes[i] = (unsigned char)mxq_nearest_code_signed(
                    divide ? values[i] / m : values[i] * r);
        } else {
            for (long long i = start; i < stop; ++i)
                codes[i] = (unsigned char)mxq_nearest_code_unsigned(
                    divide ? values[i] / m : values[i] * r);
        }
    }
}

__device__ void mxq_dequantize_blocks(const unsigned char* codes, const float* absmax,
                                      float* out, const long long n, const bool is_signed) {
    const long long blocks = (n + BLOCK_SIZE - 1) / BLOCK_SIZE;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < blocks; b += stride) {
        const long long start = b * BLOCK_SIZE;
        const long long stop = start + BLOCK_SIZE < n ? start + BLOCK_SIZE : n;
        const float m = absmax[b];
        for (long long i = start; i < stop; ++i) out[i] = mxq_dequantize(codes[i], m, is_signed);
    }
}

extern "C" __global__ void mxopt_quantize_blocks_signed(const float* values,
        unsigned char* codes, float* absmax, const long long n) {
    mxq_quantize_blocks(values, codes, absmax, n, true);
}
extern "C" __global__ void mxopt_quantize_blocks_unsigned(const float* values,
        unsigned char* codes, float* absmax, const long long n) {
    mxq_quantize_blocks(values, codes, absmax, n, false);
}
extern "C" __global__ void mxopt_dequantize_blocks_signed(const unsigned char* codes,
        const float* absmax, float* out, const long long n) {
    mxq_dequantize_blocks(codes, absmax, out, n, true);
}
extern "C" __global__ void mxopt_dequantize_blocks_unsigned(const unsigned char* codes,
        const float* absmax, float* out, const long long n) {
    mxq_dequantize_blocks(codes, absmax, out, n, false);
}
"""

#: The CUDA module: the map and threshold tables, ``mxq_nearest_code_signed`` /
#: ``_unsigned`` and ``mxq_dequantize`` (device functions for fused kernels), and the
#: kernels ``mxopt_(de)quantize_blocks_(un)signed(..., n)``, one thread per block.
QUANTIZE_SOURCE = _cuda_source()

"""CUDA kernels for CuPy arrays, generated from each kernel's CUDA twin.

:func:`module_source` turns a :class:`~mxopt.kernels.kernel.Kernel` into one
self-contained CUDA C++ translation unit: the shared preamble, the element as a
``__device__`` template, and an ``extern "C"`` grid-stride kernel per dtype. The
same text is what CuPy compiles on a GPU machine (with NVRTC, lazily, memoised
per device) and what the tests compile-check on machines without a GPU.

The build uses ``--fmad=false``: without fused multiply-adds, and with CUDA's
IEEE-exact division and square root, a GPU step gives the same bits as the CPU
step, so state moves between backends without drift.

CuPy is imported only when a CuPy array reaches an update.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from mxopt.kernels import precision, quantize, quantize_cuda
from mxopt.kernels.kernel import CUDA_PREAMBLE, DTYPES, REDUCE_BLOCK, Kernel, reduction_blocks

__all__ = [
    "NVRTC_OPTIONS",
    "count_nonfinite",
    "dequantize",
    "device_of",
    "kernel_symbol",
    "module_source",
    "narrow",
    "run_staged",
    "quantize_into",
    "run",
    "run_rows",
    "run_segments",
    "sum_rows",
    "widen",
]

#: Options for NVRTC: C++14, no FMA contraction (bit-identical to the CPU kernels).
NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")

THREADS = 256
_CHUNK_THREADS = 128  # reductions: one thread per chunk of REDUCE_BLOCK elements


def kernel_symbol(kernel: Kernel, ctype: str) -> str:
    """The name of ``kernel``'s global function for ``ctype`` (``float`` or ``double``)."""
    return f"mxopt_{kernel.name}_{ctype}"


def element_source(kernel: Kernel) -> str:
    """``kernel``'s CUDA twin as a ``__device__`` function template over ``T``."""
    params = ["const long long i", "T* w", "const T* g"]
    params += [f"T* __restrict__ {name}" for name in kernel.state]
    params += [f"const T {name}" for name in kernel.scalars]
    joined = ",\n        ".join(params)
    result = "mx_pair" if kernel.reduces else "void"
    return (
        f"template <typename T>\n__device__ __forceinline__ {result} {kernel.name}_element(\n"
        f"        {joined}) {{\n{kernel.cuda.strip(chr(10))}\n}}\n"
    )


def _array_params(kernel: Kernel, ctype: str) -> list:
    params = [f"{ctype}* w", f"const {ctype}* g"]
    return params + [f"{ctype}* __restrict__ {name}" for name in kernel.state]


def _call(kernel: Kernel, ctype: str, scalars: list) -> str:
    args = ", ".join(["i", "w", "g", *kernel.state, *scalars])
    return f"{kernel.name}_element<{ctype}>({args})"


def _table_scalars(kernel: Kernel, row: str) -> list:
    count = len(kernel.scalars)
    return [f"{row}[{j}]" for j in range(count)]


def _segment_lookup(offsets: str, segments: str) -> str:
    # the last segment k with offsets[k] <= i (empty segments are skipped)
    return (
        f"        int lo = 0, hi = {segments};\n"
        f"        while (hi - lo > 1) {{\n"
        f"            const int mid = (lo + hi) / 2;\n"
        f"            if ({offsets}[mid] <= i) lo = mid; else hi = mid;\n"
        f"        }}\n"
    )


def _chunk_sum(call: str) -> str:
    # One thread sums one chunk of REDUCE_BLOCK elements in index order, in double: the
    # same additions, in the same order, as the CPU kernels, so the sums (and what
    # depends on them, e.g. LAMB's trust ratio) have the same bits on both backends.
    # The host adds the chunks' sums in order.
    return (
        "    double sum_a = 0.0, sum_b = 0.0;\n"
        "    for (long long i = first; i < last; ++i) {\n"
        f"        const mx_pair p = {call};\n"
        "        sum_a += p.a;\n"
        "        sum_b += p.b;\n"
        "    }\n"
        "    partials[2 * chunk] = sum_a;\n"
        "    partials[2 * chunk + 1] = sum_b;\n"
    )


def _global_source(kernel: Kernel, ctype: str) -> str:
    """The ``extern "C"`` kernels of ``kernel`` for ``ctype``: one flat array, and segments."""
    symbol = kernel_symbol(kernel, ctype)
    arrays = _array_params(kernel, ctype)
    scalar_params = [f"const {ctype} {name}" for name in kernel.scalars]
    row_scalars = _table_scalars(kernel, "s")
    count = len(kernel.scalars)

    def row_pointer(row: str) -> str:
        return f"    const {ctype}* s = table + {row} * {count};\n" if count else ""

    table = [f"const {ctype}* __restrict__ table"]
    stride = "    const long long stride = (long long)blockDim.x * gridDim.x;\n"
    first = "(long long)blockIdx.x * blockDim.x + threadIdx.x"
    if not kernel.reduces:
        single = (
            f'extern "C" __global__ void {symbol}('
            f"{', '.join([*arrays, *scalar_params, 'const long long n'])}) {{\n"
            f"{stride}"
            f"    for (long long i = {first}; i < n; i += stride)\n"
            f"        {_call(kernel, ctype, list(kernel.scalars))};\n"
            f"}}\n"
        )
        segment_params = [
            *arrays, "const long long* __restrict__ offsets", *table, "const int segments",
            "const long long start", "const long long stop",
        ]  # fmt: skip
        segments = (
            f'extern "C" __global__ void {symbol}_segments({", ".join(segment_params)}) {{\n'
            f"{stride}"
            f"    for (long long i = start + {first}; i < stop; i += stride) {{\n"
            f"{_segment_lookup('offsets', 'segments')}"
            f"    {row_pointer('(long long)lo')}"
            f"        {_call(kernel, ctype, row_scalars)};\n"
            f"    }}\n"
            f"}}\n"
        )
        return single + segments + _rows_source(kernel, ctype)
    chunk = "    const long long chunk = (long long)blockIdx.x * blockDim.x + threadIdx.x;\n"
    single_params = [*arrays, *scalar_params, "const long long n", "const long long chunks",
                     "double* __restrict__ partials"]  # fmt: skip
    single = (
        f'extern "C" __global__ void {symbol}({", ".join(single_params)}) {{\n'
        f"{chunk}"
        f"    if (chunk >= chunks) return;\n"
        f"    const long long first = chunk * {REDUCE_BLOCK};\n"
        f"    const long long last = first + {REDUCE_BLOCK} < n ? first + {REDUCE_BLOCK} : n;\n"
        f"{_chunk_sum(_call(kernel, ctype, list(kernel.scalars)))}"
        f"}}\n"
    )
    segment_params = [*arrays, "const long long* __restrict__ blocks", *table,
                      "const long long chunks", "double* __restrict__ partials"]  # fmt: skip
    segments = (
        f'extern "C" __global__ void {symbol}_segments({", ".join(segment_params)}) {{\n'
        f"{chunk}"
        f"    if (chunk >= chunks) return;\n"
        f"    const long long first = blocks[3 * chunk + 1];\n"
        f"    const long long last = blocks[3 * chunk + 2];\n"
        f"{row_pointer('blocks[3 * chunk]')}"
        f"{_chunk_sum(_call(kernel, ctype, row_scalars))}"
        f"}}\n"
    )
    return single + segments


def _rows_source(kernel: Kernel, ctype: str) -> str:
    """The lazy update of an elementwise kernel: element ``j`` of row ``k`` of the gradient
    updates element ``j`` of row ``rows[k]`` of the weight and state arrays. The element
    is called with pointers to the rows, so its index ``i`` is the column ``j`` and its
    math is the dense kernel's exactly."""
    params = [*_array_params(kernel, ctype), "const long long* __restrict__ rows"]
    params += [f"const {ctype} {name}" for name in kernel.scalars]
    params += ["const long long row_size", "const long long n"]
    offset = [f"{name} + a" for name in kernel.state]
    args = ", ".join(["j", "w + a", "g + k * row_size", *offset, *kernel.scalars])
    return (
        f'extern "C" __global__ void {kernel_symbol(kernel, ctype)}_rows({", ".join(params)}) {{\n'
        f"    const long long stride = (long long)blockDim.x * gridDim.x;\n"
        f"    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n;\n"
        f"         t += stride) {{\n"
        f"        const long long k = t / row_size;\n"
        f"        const long long j = t - k * row_size;\n"
        f"        const long long a = rows[k] * row_size;\n"
        f"        {kernel.name}_element<{ctype}>({args});\n"
        f"    }}\n"
        f"}}\n"
    )


@functools.cache
def module_source(kernel: Kernel) -> str:
    """The complete CUDA source CuPy compiles for ``kernel`` (float and double kernels)."""
    parts = [CUDA_PREAMBLE, element_source(kernel)]
    parts += [_global_source(kernel, ctype) for ctype in DTYPES.values()]
    return "\n".join(parts)


#: Counts non-finite values of a gradient into ``*count``: an atomic add per thread that
#: found any (none at all in the normal, all-finite case).
NONFINITE_SOURCE = r"""
template <typename T>
__device__ void count_nonfinite(const T* g, const long long n, unsigned long long* count) {
    unsigned long long mine = 0;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        if (!isfinite(g[i])) mine += 1;
    if (mine) atomicAdd(count, mine);
}
extern "C" __global__ void mxopt_count_nonfinite_float(const float* g, const long long n,
                                                       unsigned long long* count) {
    count_nonfinite<float>(g, n, count);
}
extern "C" __global__ void mxopt_count_nonfinite_double(const double* g, const long long n,
                                                        unsigned long long* count) {
    count_nonfinite<double>(g, n, count);
}
"""

_lock = threading.Lock()
_modules: dict = {}
_launch_limits: dict = {}


def compiled_module(key, make_source):
    """The compiled CuPy module for ``make_source()`` on the current device (memoised)."""
    import cupy

    device = cupy.cuda.Device().id
    module = _modules.get((key, device))
    if module is None:
        with _lock:
            module = _modules.get((key, device))
            if module is None:
                module = cupy.RawModule(code=make_source(), options=NVRTC_OPTIONS)
                _modules[(key, device)] = module
    return module


def grid_size(n: int) -> int:
    import cupy

    device = cupy.cuda.Device().id
    limit = _launch_limits.get(device)
    if limit is None:
        sms = cupy.cuda.Device(device).attributes["MultiProcessorCount"]
        limit = _launch_limits[device] = sms * 32
    return max(1, min((n + THREADS - 1) // THREADS, limit))


def runner(kernel: Kernel, dtype, size: int):
    """``f(w, g, state, scalars, check)``: :func:`run` of ``kernel`` (same contract as
    :func:`mxopt.kernels.cpu.runner`)."""
    return functools.partial(run, kernel)


def device_of(array):
    """A context manager making ``array``'s GPU the current device: kernels, their compiled
    modules and their outputs must live where the arrays do."""
    import cupy

    return cupy.cuda.Device(array.device.id)


def _on_device_of(function):
    """Run ``function(first_array, ...)`` inside :func:`device_of` its first array."""

    @functools.wraps(function)
    def on_device(array, *args, **kwargs):
        with device_of(array):
            return function(array, *args, **kwargs)

    return on_device


def _first_array_last(function):
    """``f(kernel, w, ...)`` seen by :func:`_on_device_of` as ``f(w, kernel, ...)``."""

    @_on_device_of
    def swapped(w, kernel, *args, **kwargs):
        return function(kernel, w, *args, **kwargs)

    @functools.wraps(function)
    def call(kernel, w, *args, **kwargs):
        return swapped(w, kernel, *args, **kwargs)

    return call


@_on_device_of
def count_nonfinite(g) -> int:
    """The number of NaN and infinite values in the CuPy array ``g`` (synchronises)."""
    import cupy

    n = g.size
    if n == 0:
        return 0
    ctype = DTYPES[g.dtype]
    function = compiled_module("nonfinite", lambda: NONFINITE_SOURCE).get_function(
        f"mxopt_count_nonfinite_{ctype}"
    )
    count = cupy.zeros(1, dtype=np.uint64)
    function((grid_size(n),), (THREADS,), (g, np.int64(n), count))
    return int(count.get()[0])


@_first_array_last
def run(kernel: Kernel, w, g, state: tuple, scalars: tuple, check: bool):
    """Run ``kernel`` over flat CuPy arrays (same contract as :func:`mxopt.kernels.cpu.run`).

    A reducing kernel synchronises to bring its sums to the host.
    """
    if check:
        bad = count_nonfinite(g)
        if bad:
            return (bad, 0.0, 0.0) if kernel.reduces else bad
    n = w.size
    if n == 0:
        return (0, 0.0, 0.0) if kernel.reduces else 0
    ctype = DTYPES[w.dtype]
    module = compiled_module(kernel, lambda: module_source(kernel))
    function = module.get_function(kernel_symbol(kernel, ctype))
    scalar_type = w.dtype.type
    args = (w, g, *state, *(scalar_type(s) for s in scalars), np.int64(n))
    if not kernel.reduces:
        function((grid_size(n),), (THREADS,), args)
        return 0
    import cupy

    chunks = (n + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    partials = cupy.empty(2 * chunks, dtype=np.float64)
    grid = (chunks + _CHUNK_THREADS - 1) // _CHUNK_THREADS
    function((grid,), (_CHUNK_THREADS,), (*args, np.int64(chunks), partials))
    total_a = total_b = 0.0
    for a, b in partials.get().reshape(chunks, 2):  # in chunk order, as the CPU adds them
        total_a += float(a)
        total_b += float(b)
    return 0, total_a, total_b


@_first_array_last
def run_segments(kernel: Kernel, w, g, state: tuple, offsets, table, check: bool):
    """Segments of flat CuPy arrays (same contract as :func:`mxopt.kernels.cpu.run_segments`).

    ``offsets`` is a host (NumPy) int64 array; ``table`` a CuPy array of ``w``'s dtype.
    """
    import cupy

    start, stop = int(offsets[0]), int(offsets[-1])
    segments = len(offsets) - 1
    if check:
        bad = count_nonfinite(g[start:stop])
        if bad:
            return (bad, np.zeros((segments, 2))) if kernel.reduces else bad
    ctype = DTYPES[w.dtype]
    module = compiled_module(kernel, lambda: module_source(kernel))
    function = module.get_function(kernel_symbol(kernel, ctype) + "_segments")
    if not kernel.reduces:
        if stop > start:
            device_offsets = cupy.asarray(offsets)
            function(
                (grid_size(stop - start),), (THREADS,),
                (w, g, *state, device_offsets, table, np.int32(segments), np.int64(start),
                 np.int64(stop)),
            )  # fmt: skip
        return 0
    blocks = reduction_blocks(np.asarray(offsets, dtype=np.int64))
    sums = np.zeros((segments, 2))
    if len(blocks):
        chunks = len(blocks)
        partials = cupy.empty(2 * chunks, dtype=np.float64)
        grid = (chunks + _CHUNK_THREADS - 1) // _CHUNK_THREADS
        function(
            (grid,), (_CHUNK_THREADS,),
            (w, g, *state, cupy.asarray(blocks), table, np.int64(chunks), partials),
        )  # fmt: skip
        for (segment, _, _), (a, b) in zip(blocks, partials.get().reshape(-1, 2), strict=True):
            sums[segment, 0] += a
            sums[segment, 1] += b
    return 0, sums


@_first_array_last
def run_rows(kernel: Kernel, w, g, rows, row_size: int, state: tuple, scalars: tuple,
             check: bool) -> int:  # fmt: skip
    """The lazy update over distinct rows of flat CuPy arrays (same contract as
    :func:`mxopt.kernels.cpu.run_rows`); ``rows`` is an int64 CuPy array."""
    if check:
        bad = count_nonfinite(g)
        if bad:
            return bad
    n = rows.size * row_size
    if n == 0:
        return 0
    ctype = DTYPES[w.dtype]
    module = compiled_module(kernel, lambda: module_source(kernel))
    function = module.get_function(kernel_symbol(kernel, ctype) + "_rows")
    scalar_type = w.dtype.type
    args = (w, g, *state, rows, *(scalar_type(s) for s in scalars), np.int64(row_size),
            np.int64(n))  # fmt: skip
    function((grid_size(n),), (THREADS,), args)
    return 0


#: Sums the rows of ``values`` by groups (duplicate rows of a RowSparse gradient), in the
#: order of ``order`` and from the first row, as :func:`mxopt.kernels.cpu.sum_rows`.
SUM_ROWS_SOURCE = r"""
template <typename T>
__device__ void sum_rows(const T* values, const long long* order, const long long* bounds,
                         const long long row_size, const long long n, T* out) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += stride) {
        const long long u = t / row_size;
        const long long j = t - u * row_size;
        T acc = values[order[bounds[u]] * row_size + j];
        for (long long k = bounds[u] + 1; k < bounds[u + 1]; ++k)
            acc = acc + values[order[k] * row_size + j];
        out[t] = acc;
    }
}
extern "C" __global__ void mxopt_sum_rows_float(const float* values, const long long* order,
        const long long* bounds, const long long row_size, const long long n, float* out) {
    sum_rows<float>(values, order, bounds, row_size, n, out);
}
extern "C" __global__ void mxopt_sum_rows_double(const double* values, const long long* order,
        const long long* bounds, const long long row_size, const long long n, double* out) {
    sum_rows<double>(values, order, bounds, row_size, n, out);
}
"""


@_on_device_of
def sum_rows(values, order, bounds, row_size: int):
    """:func:`mxopt.kernels.cpu.sum_rows` on the GPU: ``values`` a flat CuPy array,
    ``order`` and ``bounds`` host int64 arrays; returns a new flat CuPy array."""
    import cupy

    n = (bounds.size - 1) * row_size
    out = cupy.empty(n, dtype=values.dtype)
    if n:
        function = compiled_module("sum_rows", lambda: SUM_ROWS_SOURCE).get_function(
            f"mxopt_sum_rows_{DTYPES[values.dtype]}"
        )
        function((grid_size(n),), (THREADS,),
                 (values, cupy.asarray(order), cupy.asarray(bounds), np.int64(row_size),
                  np.int64(n), out))  # fmt: skip
    return out


@_on_device_of
def widen(bits, fmt: str):
    """:func:`mxopt.kernels.cpu.widen` on the GPU: a new float32 CuPy array."""
    import cupy

    n = bits.size
    out = cupy.empty(n, dtype=np.float32)
    if n:
        function = compiled_module("precision", lambda: precision.CUDA_SOURCE).get_function(
            "mxopt_widen"
        )
        function((grid_size(n),), (THREADS,), (bits.view(np.uint16), out.view(np.uint32),
                 np.int32(precision.FORMAT_CODES[fmt]), np.int64(n)))  # fmt: skip
    return out


@_on_device_of
def narrow(source, bits, fmt: str, offsets, keys, stochastic: bool) -> None:
    """:func:`mxopt.kernels.cpu.narrow` on the GPU (``offsets`` and ``keys`` on the host)."""
    import cupy

    start, stop = int(offsets[0]), int(offsets[-1])
    if stop > start:
        function = compiled_module("precision", lambda: precision.CUDA_SOURCE).get_function(
            "mxopt_narrow"
        )
        function(
            (grid_size(stop - start),), (THREADS,),
            (source.view(np.uint32), bits.view(np.uint16), np.int32(precision.FORMAT_CODES[fmt]),
             cupy.asarray(np.asarray(offsets, np.int64)), cupy.asarray(np.asarray(keys, np.uint64)),
             np.int32(len(keys)), np.int32(bool(stochastic)), np.int64(start), np.int64(stop)),
        )  # fmt: skip


def _quantize_function(kind: str, signed: bool):
    source = lambda: quantize_cuda.QUANTIZE_SOURCE  # noqa: E731
    name = f"mxopt_{kind}_blocks_{'signed' if signed else 'unsigned'}"
    return compiled_module("quantize", source).get_function(name)


def _block_grid(n: int) -> int:
    return max(1, min(-(-quantize.block_count(n) // _CHUNK_THREADS), 4096))


@_on_device_of
def quantize_into(values, codes, absmax, signed: bool) -> None:
    """:func:`mxopt.kernels.cpu_precision.quantize_into` on the GPU (one thread a block)."""
    n = values.size
    if n:
        _quantize_function("quantize", signed)(
            (_block_grid(n),), (_CHUNK_THREADS,), (values, codes, absmax, np.int64(n))
        )


@_on_device_of
def dequantize(codes, absmax, signed: bool):
    """:func:`mxopt.kernels.cpu_precision.dequantize` on the GPU: a new float32 CuPy array."""
    import cupy

    n = codes.size
    out = cupy.empty(n, dtype=np.float32)
    if n:
        _quantize_function("dequantize", signed)(
            (_block_grid(n),), (_CHUNK_THREADS,), (codes, absmax, out, np.int64(n))
        )
    return out


#: The weights of a fused step: float32, or 16 bits with or without a float32 master copy.
FUSED_WEIGHTS = (
    (None, False),
    (precision.FLOAT16, False), (precision.FLOAT16, True),
    (precision.BFLOAT16, False), (precision.BFLOAT16, True),
)  # fmt: skip


def fused_symbol(kernel: Kernel, fmt: str | None, has_master: bool, storages: tuple) -> str:
    """The name of ``kernel``'s fused step for a weight in ``fmt`` (float16, bfloat16 or
    None: float32), with a master copy or not, and state arrays stored as ``storages``
    (float32 or bfloat16)."""
    layout = "".join("b" if s == precision.BITS16 else "f" for s in storages)
    weight = {None: "w32", precision.FLOAT16: "f16", precision.BFLOAT16: "bf16"}[fmt]
    return f"mxopt_{kernel.name}_fused_{weight}{'_master' if has_master else ''}_{layout or 'none'}"


def _fused_function(kernel: Kernel, fmt: str | None, has_master: bool, storages: tuple) -> str:
    """One fused step (see :func:`fused_source`). Every value lives in a register: the
    element gets pointers to locals only, which inlining turns into registers (a pointer
    that may be global or local would keep a local in memory, a stack store per element),
    and the weight's format and master copy are fixed at compile time."""
    widen = "((unsigned int)({})) << 16" if fmt == precision.BFLOAT16 else "mx_half_to_single({})"
    narrow = "mx_single_to_bfloat" if fmt == precision.BFLOAT16 else "mx_single_to_half"
    if fmt is None:
        params = ["float* w", "const float* g"]
        load = ["float wv = w[i];", "const float gv = g[i];"]
    else:
        params = ["unsigned short* wbits", "const unsigned short* gbits"]
        params += ["float* __restrict__ master"] * has_master
        weight = "master[i]" if has_master else f"mx_as_float({widen.format('wbits[i]')})"
        load = [
            f"float wv = {weight};",
            f"const float gv = mx_as_float({widen.format('gbits[i]')});",
        ]
    store, pointers = [], []
    random = "stochastic ? mx_random_bits({key}, i) : 0ULL"
    for k, storage in enumerate(storages):
        if storage == precision.BITS16:
            params.append(f"unsigned short* __restrict__ s{k}")
            load.append(f"float v{k} = mx_as_float(((unsigned int)s{k}[i]) << 16);")
            store.append(f"s{k}[i] = mx_single_to_bfloat(mx_as_uint(v{k}), stochastic != 0, "
                         f"{random.format(key=f'skey{k}')});")  # fmt: skip
        else:
            params.append(f"float* __restrict__ s{k}")
            load.append(f"float v{k} = s{k}[i];")
            store.append(f"s{k}[i] = v{k};")
        pointers.append(f"&v{k}")
    params += [f"const float {name}" for name in kernel.scalars]
    params += ["const unsigned long long key"]
    params += [f"const unsigned long long skey{k}" for k in range(len(storages))]
    params += ["const int stochastic", "const long long n"]
    arguments = ", ".join(["0", "&wv", "&gv", *pointers, *kernel.scalars])
    body = [*load, f"{kernel.name}_element<float>({arguments});", *store]
    if fmt is None:
        body.append("w[i] = wv;")
    else:
        body += ["master[i] = wv;"] * has_master
        body.append(f"wbits[i] = {narrow}(mx_as_uint(wv), stochastic != 0, "
                    f"{random.format(key='key')});")  # fmt: skip
    symbol = fused_symbol(kernel, fmt, has_master, storages)
    return (
        f'extern "C" __global__ void {symbol}({", ".join(params)}) {{\n'
        "    const long long stride = (long long)blockDim.x * gridDim.x;\n"
        "    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;"
        " i += stride) {\n" + "".join(f"        {line}\n" for line in body) + "    }\n}\n"
    )


def fused_source(kernel: Kernel, storages: tuple) -> str:
    """The fused steps of an elementwise ``kernel`` with state arrays stored as
    ``storages`` (float32 or bfloat16), one per weight of :data:`FUSED_WEIGHTS`: each
    thread widens its elements into registers, calls the element on them (index 0 of
    pointers to them: the element's own code, unchanged) and rounds them back, the same
    bits as widening everything, one :func:`run` and rounding everything (see
    :mod:`mxopt.kernels.precision`)."""
    functions = [_fused_function(kernel, fmt, master, storages) for fmt, master in FUSED_WEIGHTS]
    return "\n".join([CUDA_PREAMBLE, precision.CUDA_SOURCE, element_source(kernel), *functions])


@_first_array_last
def run_staged(kernel: Kernel, w, g, master, state: tuple, storages: tuple, absmax: tuple,
               scalars: tuple, check: bool, fmt: str | None, key: int, state_keys: tuple,
               stochastic: bool) -> int:  # fmt: skip
    """:func:`mxopt.kernels.cpu_precision.run_staged` on the GPU, for state arrays in float32
    or bfloat16 (8-bit state takes the general path on the GPU)."""
    storages = tuple(storages)
    if any(s not in (precision.FLOAT32, precision.BITS16) for s in storages):
        raise ValueError("the fused GPU step takes float32 and bfloat16 state arrays only")
    weight_bits = fmt is not None
    if check:
        bad = count_nonfinite(widen(g, fmt) if weight_bits else g)
        if bad:
            return bad
    n = w.size
    if n == 0:
        return 0
    module = compiled_module(("fused", kernel, storages), lambda: fused_source(kernel, storages))
    has_master = weight_bits and master is not None
    function = module.get_function(fused_symbol(kernel, fmt, has_master, storages))
    if weight_bits:
        head = (w.view(np.uint16), g.view(np.uint16)) + ((master,) if has_master else ())
    else:
        head = (w, g)
    arrays = tuple(a.view(np.uint16) if s == precision.BITS16 else a
                   for a, s in zip(state, storages, strict=True))  # fmt: skip
    function(
        (grid_size(n),), (THREADS,),
        (*head, *arrays, *(np.float32(s) for s in scalars), np.uint64(key),
         *(np.uint64(k) for k in state_keys), np.int32(bool(stochastic)), np.int64(n)),
    )  # fmt: skip
    return 0

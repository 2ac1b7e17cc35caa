"""The factored second moment of a matrix (Adafactor's), on both backends.

For a weight of shape ``(*lead, R, C)``, the running means of :math:`g^2` over each
row (``row_var``, ``R`` values) and over each column (``col_var``, ``C`` values) per
leading index, and the step :math:`W \\leftarrow W \\rho - \\text{lr}_t\\, U` with
:math:`U = g / \\sqrt{\\max(r c / \\max(\\operatorname{mean} r, \\epsilon_1),
\\epsilon_1^2)}`. Passes over memory: (1) sums of :math:`g^2` over chunks of at most
:data:`CHUNK` elements of each row and of each column, (2) the row and column factors and
the per-matrix row means, (3) sums of :math:`W^2` and :math:`U^2` over blocks of
:data:`CHUNK` elements, (4) the step. Every sum is float64, in a fixed order that depends
only on the shape, so the CPU (Numba) and GPU (CUDA) code give the same bits, whatever
the thread count. The temporaries are vectors of the size of the factors or of
``n / CHUNK``, never of the weight's size.

:func:`factored_update` runs one update; the optimizer computes the scalars.
"""

from __future__ import annotations

import threading

import numpy as np

from mxopt.kernels.kernel import CUDA_PREAMBLE, DTYPES, device, normalize_gradient_element

__all__ = ["CHUNK", "factored_module_source", "factored_update", "run_factored"]

#: Elements per chunk of a row or column sum, and per block of the global sums.
CHUNK = 4096

# ---------------------------------------------------------------------------------------
# Each function below handles one work item (a row
# chunk, a column chunk, a factor entry, a block, an element) exactly as its CUDA twin
# in FACTORED_DEVICE_SOURCE does; the CPU loops run the items in any order or split
# them over threads, which cannot change any result.


@device
def adafactor_factored_update(gi, rv, cv, rn, eps1sq):
    """``U = g / sqrt(max(r c / max(mean r, eps1), eps1^2))`` for one element."""
    v = (rv * cv) / rn
    if v < eps1sq:
        v = eps1sq
    return gi / np.sqrt(v)


def _row_partials(first, last, w, g, rpart, C, ncc, rescale, clip, wd):
    # Item t = (row j, chunk q of the row): sum of g^2 over the chunk.
    for t in range(first, last):
        j = t // ncc
        q = t - j * ncc
        start = j * C + q * CHUNK
        stop = min(start + CHUNK, (j + 1) * C)
        s = 0.0
        for i in range(start, stop):
            x = np.float64(normalize_gradient_element(g[i], w[i], rescale, clip, wd))
            s += x * x
        rpart[t] = s


def _col_partials(first, last, w, g, cpart, R, C, nrc, rescale, clip, wd):
    # Item (matrix b, row chunk p, column c) -> cpart[(b * nrc + p) * C + c]: sum of g^2
    # over the chunk's rows, in row order. Computed for groups of columns at a time so
    # that memory is read row by row; the order of each sum is the item's.
    groups = (C + _COL_GROUP - 1) // _COL_GROUP
    for task in range(first, last):  # of (cpart.size // C) * groups
        bp = task // groups
        c0 = (task - bp * groups) * _COL_GROUP
        c1 = min(C, c0 + _COL_GROUP)
        b = bp // nrc
        p = bp - b * nrc
        out = bp * C
        for c in range(c0, c1):
            cpart[out + c] = 0.0
        for r in range(p * CHUNK, min(R, (p + 1) * CHUNK)):
            base = (b * R + r) * C
            for c in range(c0, c1):
                x = np.float64(
                    normalize_gradient_element(g[base + c], w[base + c], rescale, clip, wd)
                )
                cpart[out + c] += x * x


def _combine(first, last, row_var, col_var, rpart, cpart, R, C, ncc, nrc, w8):
    # Items 0 .. rows-1: row factors; then the column factors.
    rows = row_var.size
    for t in range(first, last):
        if t < rows:
            s = 0.0
            for q in range(ncc):
                s += rpart[t * ncc + q]
            mean = row_var.dtype.type(s / C)
            v = row_var[t]
            row_var[t] = v + w8 * (mean - v)
        else:
            u = t - rows
            b = u // C
            c = u - b * C
            s = 0.0
            for p in range(nrc):
                s += cpart[(b * nrc + p) * C + c]
            mean = col_var.dtype.type(s / R)
            v = col_var[u]
            col_var[u] = v + w8 * (mean - v)


def _row_norms(first, last, row_var, rn, R, eps1):
    # Item b: max(mean of matrix b's row factor, eps1).
    for b in range(first, last):
        s = 0.0
        for r in range(R):
            s += np.float64(row_var[b * R + r])
        m = rn.dtype.type(s / R)
        if m < eps1:
            m = eps1
        rn[b] = m


def _factored_sums(
    first, last, w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq
):
    # Item k: sums of W^2 and U^2 over elements [k * CHUNK, (k + 1) * CHUNK), in element
    # order. U is first computed row segment by row segment into a small buffer (a loop
    # the compiler vectorises), then summed.
    n = w.size
    for k in range(first, last):  # of partials.size // 2
        start = k * CHUNK
        stop = min(n, start + CHUNK)
        buffer = np.empty(stop - start, dtype=w.dtype)
        i = start
        j = start // C
        c0 = start - j * C
        while i < stop:
            b = j // R
            rv = row_var[j]
            rnb = rn[b]
            cbase = b * C + c0
            length = min(stop - i, C - c0)
            out = i - start
            for e in range(length):
                gi = normalize_gradient_element(g[i + e], w[i + e], rescale, clip, wd)
                buffer[out + e] = adafactor_factored_update(gi, rv, col_var[cbase + e], rnb, eps1sq)
            i += length
            j += 1
            c0 = 0
        sw = 0.0
        su = 0.0
        for e in range(stop - start):
            wi = np.float64(w[start + e])
            u = np.float64(buffer[e])
            sw += wi * wi
            su += u * u
        partials[2 * k] = sw
        partials[2 * k + 1] = su


def _factored_step(
    first, last, w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq, decay, lr_t
):
    # Item i (element), run row by row: W = W * decay - lr_t * U.
    for j in range(first, last):  # of row_var.size
        b = j // R
        rv = row_var[j]
        rnb = rn[b]
        base = j * C
        cbase = b * C
        for c in range(C):
            i = base + c
            wi = w[i]
            gi = normalize_gradient_element(g[i], wi, rescale, clip, wd)
            u = adafactor_factored_update(gi, rv, col_var[cbase + c], rnb, eps1sq)
            w[i] = wi * decay - lr_t * u


#: Columns per CPU task of the column sums (a cache-friendly width; no effect on results).
_COL_GROUP = 256

_CPU_FUNCTIONS = {
    "row_partials": _row_partials,
    "col_partials": _col_partials,
    "combine": _combine,
    "row_norms": _row_norms,
    "sums": _factored_sums,
    "step": _factored_step,
}

_compile_lock = threading.Lock()
_compiled: dict = {}


def cpu_function(name: str):
    """The factored path's CPU function ``name``, ``f(first, last, ...)`` over its work
    items ``[first, last)``, compiled with Numba on first use."""
    function = _compiled.get(name)
    if function is not None:
        return function
    with _compile_lock:
        function = _compiled.get(name)
        if function is None:
            from mxopt.kernels import cpu

            function = cpu.compile_loop(_CPU_FUNCTIONS[name], f"mxopt_adafactor_{name}")
            _compiled[name] = function
    return function


# CUDA twins of the work items above (one thread per item, grid-stride loops).
FACTORED_DEVICE_SOURCE = (
    r"""
template <typename T>
__device__ __forceinline__ T adafactor_factored_update(const T gi, const T rv, const T cv,
                                                       const T rn, const T eps1sq) {
    T v = (rv * cv) / rn;
    if (v < eps1sq) v = eps1sq;
    return gi / sqrt(v);
}

template <typename T>
__device__ __forceinline__ void adafactor_row_partials(
        const long long t, const T* w, const T* g, double* rpart, const long long C,
        const long long ncc, const T rescale, const T clip, const T wd) {
    const long long j = t / ncc;
    const long long q = t - j * ncc;
    const long long start = j * C + q * CHUNK;
    long long stop = start + CHUNK;
    if (stop > (j + 1) * C) stop = (j + 1) * C;
    double s = 0.0;
    for (long long i = start; i < stop; ++i) {
        const double x = (double)normalize_gradient_element(g[i], w[i], rescale, clip, wd);
        s += x * x;
    }
    rpart[t] = s;
}

template <typename T>
__device__ __forceinline__ void adafactor_col_partials(
        const long long t, const T* w, const T* g, double* cpart, const long long R,
        const long long C, const long long nrc, const T rescale, const T clip, const T wd) {
    const long long bp = t / C;
    const long long c = t - bp * C;
    const long long b = bp / nrc;
    const long long p = bp - b * nrc;
    long long stop = (p + 1) * CHUNK;
    if (stop > R) stop = R;
    double s = 0.0;
    for (long long r = p * CHUNK; r < stop; ++r) {
        const long long i = (b * R + r) * C + c;
        const double x = (double)normalize_gradient_element(g[i], w[i], rescale, clip, wd);
        s += x * x;
    }
    cpart[t] = s;
}

template <typename T>
__device__ __forceinline__ void adafactor_combine(
        const long long t, T* row_var, T* col_var, const double* rpart, const double* cpart,
        const long long rows, const long long R, const long long C, const long long ncc,
        const long long nrc, const T w8) {
    if (t < rows) {
        double s = 0.0;
        for (long long q = 0; q < ncc; ++q) s += rpart[t * ncc + q];
        const T mean = (T)(s / (double)C);
        const T v = row_var[t];
        row_var[t] = v + w8 * (mean - v);
    } else {
        const long long u = t - rows;
        const long long b = u / C;
        const long long c = u - b * C;
        double s = 0.0;
        for (long long p = 0; p < nrc; ++p) s += cpart[(b * nrc + p) * C + c];
        const T mean = (T)(s / (double)R);
        const T v = col_var[u];
        col_var[u] = v + w8 * (mean - v);
    }
}

template <typename T>
__device__ __forceinline__ void adafactor_row_norms(
        const long long b, const T* row_var, T* rn, const long long R, const T eps1) {
    double s = 0.0;
    for (long long r = 0; r < R; ++r) s += (double)row_var[b * R + r];
    T m = (T)(s / (double)R);
    if (m < eps1) m = eps1;
    rn[b] = m;
}

template <typename T>
__device__ __forceinline__ void adafactor_sums(
        const long long k, const T* w, const T* g, const T* row_var, const T* col_var,
        const T* rn, double* partials, const long long n, const long long R,
        const long long C, const T rescale, const T clip, const T wd, const T eps1sq) {
    const long long start = k * CHUNK;
    long long stop = start + CHUNK;
    if (stop > n) stop = n;
    long long j = start / C;
    long long c = start - j * C;
    long long b = j / R;
    long long r = j - b * R;
    double sw = 0.0, su = 0.0;
    for (long long i = start; i < stop; ++i) {
        const T wi = w[i];
        const T gi = normalize_gradient_element(g[i], wi, rescale, clip, wd);
        const T u = adafactor_factored_update(gi, row_var[j], col_var[b * C + c], rn[b], eps1sq);
        sw += (double)wi * (double)wi;
        su += (double)u * (double)u;
        c += 1;
        if (c == C) {
            c = 0;
            j += 1;
            r += 1;
            if (r == R) {
                r = 0;
                b += 1;
            }
        }
    }
    partials[2 * k] = sw;
    partials[2 * k + 1] = su;
}

template <typename T>
__device__ __forceinline__ void adafactor_step(
        const long long i, T* w, const T* g, const T* row_var, const T* col_var, const T* rn,
        const long long R, const long long C, const T rescale, const T clip, const T wd,
        const T eps1sq, const T decay, const T lr_t) {
    const long long j = i / C;
    const long long c = i - j * C;
    const long long b = j / R;
    const T wi = w[i];
    const T gi = normalize_gradient_element(g[i], wi, rescale, clip, wd);
    const T u = adafactor_factored_update(gi, row_var[j], col_var[b * C + c], rn[b], eps1sq);
    w[i] = wi * decay - lr_t * u;
}
"""
).replace("CHUNK", f"{CHUNK}LL")

#: The CUDA work items by name: their parameters after the item index (``T`` is the
#: weight's type). Each becomes ``mxopt_adafactor_<name>_<float|double>(..., count)``.
FACTORED_ITEMS = {
    "row_partials": (
        "const T* w", "const T* g", "double* rpart", "const long long C",
        "const long long ncc", "const T rescale", "const T clip", "const T wd",
    ),
    "col_partials": (
        "const T* w", "const T* g", "double* cpart", "const long long R",
        "const long long C", "const long long nrc", "const T rescale", "const T clip",
        "const T wd",
    ),
    "combine": (
        "T* row_var", "T* col_var", "const double* rpart", "const double* cpart",
        "const long long rows", "const long long R", "const long long C",
        "const long long ncc", "const long long nrc", "const T w8",
    ),
    "row_norms": ("const T* row_var", "T* rn", "const long long R", "const T eps1"),
    "sums": (
        "const T* w", "const T* g", "const T* row_var", "const T* col_var", "const T* rn",
        "double* partials", "const long long n", "const long long R", "const long long C",
        "const T rescale", "const T clip", "const T wd", "const T eps1sq",
    ),
    "step": (
        "T* w", "const T* g", "const T* row_var", "const T* col_var", "const T* rn",
        "const long long R", "const long long C", "const T rescale", "const T clip",
        "const T wd", "const T eps1sq", "const T decay", "const T lr_t",
    ),
}  # fmt: skip


def _global_source(name: str, ctype: str) -> str:
    params = [p.replace("T*", f"{ctype}*").replace("const T ", f"const {ctype} ")
              for p in FACTORED_ITEMS[name]]  # fmt: skip
    args = ", ".join(["t", *(p.split()[-1] for p in params)])
    return (
        f'extern "C" __global__ void mxopt_adafactor_{name}_{ctype}('
        f"{', '.join(params)}, const long long count) {{\n"
        f"    const long long stride = (long long)blockDim.x * gridDim.x;\n"
        f"    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < count;"
        f" t += stride)\n"
        f"        adafactor_{name}<{ctype}>({args});\n"
        f"}}\n"
    )


def factored_module_source() -> str:
    """The complete CUDA source of the factored path (float and double kernels)."""
    parts = [CUDA_PREAMBLE, FACTORED_DEVICE_SOURCE]
    parts += [_global_source(name, ctype) for name in FACTORED_ITEMS for ctype in DTYPES.values()]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# Backends of the factored path: the same calls, on NumPy (Numba) or CuPy (CUDA) arrays.


class _CpuFactored:
    """The work items on NumPy arrays: each function over its items, cut into chunks that
    mxopt's threads run when the weight is big (items are independent: the same bits)."""

    def __init__(self, n: int):
        from mxopt.kernels import cpu, threads

        self.cpu = cpu
        self.pool = threads.pool() if n >= cpu.parallel_min_size() else None

    def _items(self, name: str, count: int, *args) -> None:
        function = cpu_function(name)
        pool = self.pool
        if pool is None or not pool.parallel or count < 2:
            function(0, count, *args)
            return
        size = -(-count // min(count, 4 * pool.threads))
        pool.run(lambda k: function(k * size, min(count, (k + 1) * size), *args),
                 -(-count // size))  # fmt: skip

    def empty(self, size, dtype):
        return np.empty(size, dtype=dtype)

    def count_nonfinite(self, g) -> int:
        return self.cpu.count_nonfinite(g)

    def row_partials(self, w, g, rpart, C, ncc, rescale, clip, wd):
        self._items("row_partials", rpart.size, w, g, rpart, C, ncc, rescale, clip, wd)

    def col_partials(self, w, g, cpart, R, C, nrc, rescale, clip, wd):
        items = (cpart.size // C) * (-(-C // _COL_GROUP))
        self._items("col_partials", items, w, g, cpart, R, C, nrc, rescale, clip, wd)

    def combine(self, row_var, col_var, rn, rpart, cpart, R, C, ncc, nrc, w8, eps1):
        items = row_var.size + col_var.size
        self._items("combine", items, row_var, col_var, rpart, cpart, R, C, ncc, nrc, w8)
        self._items("row_norms", rn.size, row_var, rn, R, eps1)  # needs every row factor

    def sums(self, w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq):
        self._items("sums", partials.size // 2, w, g, row_var, col_var, rn, partials, R, C,
                    rescale, clip, wd, eps1sq)  # fmt: skip
        return partials

    def step(self, w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq, decay, lr_t):
        self._items("step", row_var.size, w, g, row_var, col_var, rn, R, C, rescale, clip,
                    wd, eps1sq, decay, lr_t)  # fmt: skip


class _CudaFactored:
    #: The array module (CuPy; the tests substitute NumPy to run the CUDA items on the CPU).
    xp = None

    def __init__(self, cuda, dtype):
        self.cuda = cuda
        self.ctype = DTYPES[np.dtype(dtype)]
        self.module = cuda.compiled_module("adafactor_factored", factored_module_source)
        if self.xp is None:
            import cupy

            self.xp = cupy

    def empty(self, size, dtype):
        return self.xp.empty(size, dtype=dtype)

    def _launch(self, name, count, *args):
        if count == 0:
            return
        function = self.module.get_function(f"mxopt_adafactor_{name}_{self.ctype}")
        grid = self.cuda.grid_size(count)
        function((grid,), (self.cuda.THREADS,), (*args, np.int64(count)))

    def count_nonfinite(self, g) -> int:
        return self.cuda.count_nonfinite(g)

    def row_partials(self, w, g, rpart, C, ncc, rescale, clip, wd):
        self._launch("row_partials", rpart.size, w, g, rpart, *_ints(C, ncc), rescale, clip, wd)

    def col_partials(self, w, g, cpart, R, C, nrc, rescale, clip, wd):
        self._launch("col_partials", cpart.size, w, g, cpart, *_ints(R, C, nrc), rescale, clip, wd)

    def combine(self, row_var, col_var, rn, rpart, cpart, R, C, ncc, nrc, w8, eps1):
        rows = row_var.size
        self._launch(
            "combine", rows + col_var.size, row_var, col_var, rpart, cpart,
            *_ints(rows, R, C, ncc, nrc), w8,
        )  # fmt: skip
        self._launch("row_norms", rn.size, row_var, rn, np.int64(R), eps1)

    def sums(self, w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq):
        self._launch(
            "sums", partials.size // 2, w, g, row_var, col_var, rn, partials,
            *_ints(w.size, R, C), rescale, clip, wd, eps1sq,
        )  # fmt: skip
        return self.xp.asnumpy(partials)

    def step(self, w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq, decay, lr_t):
        self._launch(
            "step", w.size, w, g, row_var, col_var, rn, *_ints(R, C),
            rescale, clip, wd, eps1sq, decay, lr_t,
        )  # fmt: skip


def _ints(*values):
    return tuple(np.int64(v) for v in values)


def factored_update(ops, w, g, row_var, col_var, shape, scalars: dict, check: bool) -> int:
    """One update of a weight of ``shape`` (2-D or more, no zero extent) on flat arrays.

    ``ops`` is the backend (:class:`_CpuFactored` or :class:`_CudaFactored`);
    ``scalars`` holds the host scalars (see :meth:`Adafactor.host_scalars`).
    Returns the number of non-finite gradient values (then nothing was written), or 0.
    """
    if check:
        bad = ops.count_nonfinite(g)
        if bad:
            return bad
    R, C = shape[-2], shape[-1]
    B = w.size // (R * C)
    ncc = -(-C // CHUNK)
    nrc = -(-R // CHUNK)
    T = w.dtype.type
    rescale, clip, wd = T(scalars["rescale"]), T(scalars["clip"]), T(scalars["wd"])
    eps1sq = T(scalars["eps1sq"])
    rpart = ops.empty(B * R * ncc, np.float64)
    cpart = ops.empty(B * nrc * C, np.float64)
    rn = ops.empty(B, w.dtype)
    partials = ops.empty(2 * (-(-w.size // CHUNK)), np.float64)
    ops.row_partials(w, g, rpart, C, ncc, rescale, clip, wd)
    ops.col_partials(w, g, cpart, R, C, nrc, rescale, clip, wd)
    ops.combine(row_var, col_var, rn, rpart, cpart, R, C, ncc, nrc,
                T(scalars["w8"]), T(scalars["eps1"]))  # fmt: skip
    sums = ops.sums(w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq)
    with np.errstate(over="ignore"):  # nothing may raise once the factors are written
        # in block order (cumsum adds sequentially): the same bits on every backend
        lr_t = scalars["step_size"](float(np.cumsum(sums[0::2])[-1]),
                                    float(np.cumsum(sums[1::2])[-1]))  # fmt: skip
    ops.step(w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq,
             T(scalars["decay"]), T(lr_t))  # fmt: skip
    return 0


def run_factored(backend, w, g, row_var, col_var, shape, scalars: dict, check: bool) -> int:
    """:func:`factored_update` on ``backend`` (:mod:`mxopt.kernels.cpu` or
    :mod:`mxopt.kernels.cuda`), on the device ``w`` lives on."""
    if backend.__name__ == "mxopt.kernels.cuda":
        with backend.device_of(w):  # compile, allocate and launch on w's GPU
            return factored_update(
                _CudaFactored(backend, w.dtype), w, g, row_var, col_var, shape, scalars, check
            )
    return factored_update(_CpuFactored(w.size), w, g, row_var, col_var, shape, scalars, check)

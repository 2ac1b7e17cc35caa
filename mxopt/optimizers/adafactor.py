"""Adafactor (Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
Cost", ICML 2018, arXiv:1804.04235), as torch.optim.Adafactor computes it.

An Adam-like method without first moment whose second moment of a matrix is
kept factored: for a weight of shape ``(*lead, R, C)`` only the running means
of :math:`g^2` over each row (``R`` values) and over each column (``C``
values) are stored, per leading index. For the ``k``-th update of a weight,
with :math:`g` the :func:`~mxopt.normalized_gradient` (no L2 term unless
``decoupled_weight_decay=False``):

.. math::

    \\hat\\beta_{2,k} &= 1 - k^{\\tau}, \\qquad \\rho_k = \\min(\\eta, 1/\\sqrt{k}), \\qquad
    \\alpha_k = \\max(\\epsilon_2, \\operatorname{RMS}(W))\\, \\rho_k \\\\
    W &\\leftarrow (1 - \\eta\\lambda) W \\\\
    r &\\leftarrow r + (1-\\hat\\beta_{2,k}) (\\operatorname{mean}_c g^2 - r), \\qquad
    c \\leftarrow c + (1-\\hat\\beta_{2,k}) (\\operatorname{mean}_r g^2 - c) \\\\
    \\hat V &= \\frac{r\\, c^\\top}{\\max(\\operatorname{mean}(r), \\epsilon_1)}
        \\quad (\\text{or } \\hat V \\leftarrow \\hat V + (1-\\hat\\beta_{2,k})(g^2 - \\hat V)
        \\text{ for 0-d and 1-d weights}) \\\\
    U &= g / \\sqrt{\\max(\\hat V, \\epsilon_1^2)}, \\qquad
    W \\leftarrow W - \\frac{\\alpha_k}{\\max(1, \\operatorname{RMS}(U) / d)}\\, U

:math:`\\operatorname{RMS}(W)` is taken before the decay.

Passes over memory. 0-d and 1-d weights: two fused kernels (the first updates
:math:`\\hat V` and sums :math:`W^2` and :math:`U^2`, the second applies the
step), like LAMB. Matrices and batches of matrices: (1) sums of :math:`g^2`
over chunks of at most :data:`CHUNK` elements of each row and of each column,
(2) the row and column factors and the per-matrix row means, (3) sums of
:math:`W^2` and :math:`U^2` over blocks of :data:`CHUNK` elements, (4) the
step. Every sum is float64, in a fixed order that depends only on the shape,
so the CPU (Numba) and GPU (CUDA) code of this path give the same bits,
whatever the thread count. Its temporaries are vectors of the size of the
factors or of ``n / CHUNK``, never of the weight's size.
"""

from __future__ import annotations

import math
import threading
import types

import numpy as np

from mxopt.optimizers.base import (
    AbstractOptimizer,
    AbstractOptimizerOptions,
    decay_factor,
    decoupled_weight_decay_option,
    gradient_scalars,
    hyperparameter,
    options,
    read_hyperparameter,
)
from mxopt.kernels.kernel import CUDA_PREAMBLE, DTYPES, Kernel, device, normalize_gradient_element

__all__ = ["Adafactor", "AdafactorOptions"]

#: Elements per chunk of a row or column sum, and per block of the global sums.
CHUNK = 4096

# ---------------------------------------------------------------------------------------
# 0-d and 1-d weights: full second moment, two fused kernels.


def adafactor_vector_element(i, w, g, state, s):
    (variance,) = state
    rescale, clip, wd, w8, eps1sq = s
    wi = w[i]
    gi = normalize_gradient_element(g[i], wi, rescale, clip, wd)
    v = variance[i]
    v = v + w8 * (gi * gi - v)
    variance[i] = v
    if v < eps1sq:
        v = eps1sq
    u = gi / np.sqrt(v)
    return np.float64(wi) * np.float64(wi), np.float64(u) * np.float64(u)


ADAFACTOR_VECTOR_KERNEL = Kernel(
    name="adafactor_vector",
    state=("variance",),
    scalars=("rescale", "clip", "wd", "w8", "eps1sq"),
    cpu=adafactor_vector_element,
    reduces=True,
    cuda="""
    const T wi = w[i];
    const T gi = normalize_gradient_element(g[i], wi, rescale, clip, wd);
    T v = variance[i];
    v = v + w8 * (gi * gi - v);
    variance[i] = v;
    if (v < eps1sq) v = eps1sq;
    const T u = gi / sqrt(v);
    return mx_pair{(double)wi * (double)wi, (double)u * (double)u};
""",
)


def adafactor_vector_step_element(i, w, g, state, s):
    (variance,) = state
    rescale, clip, wd, eps1sq, decay, lr_t = s
    wi = w[i]
    gi = normalize_gradient_element(g[i], wi, rescale, clip, wd)
    v = variance[i]
    if v < eps1sq:
        v = eps1sq
    w[i] = wi * decay - lr_t * (gi / np.sqrt(v))


ADAFACTOR_VECTOR_STEP_KERNEL = Kernel(
    name="adafactor_vector_step",
    state=("variance",),
    scalars=("rescale", "clip", "wd", "eps1sq", "decay", "lr_t"),
    cpu=adafactor_vector_step_element,
    cuda="""
    const T wi = w[i];
    const T gi = normalize_gradient_element(g[i], wi, rescale, clip, wd);
    T v = variance[i];
    if (v < eps1sq) v = eps1sq;
    w[i] = wi * decay - lr_t * (gi / sqrt(v));
""",
)

# ---------------------------------------------------------------------------------------
# Matrices: factored second moment. Each function below handles one work item (a row
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


def _count_nonfinite(g):
    bad = 0
    for i in prange(g.size):
        if not np.isfinite(g[i]):
            bad += 1
    return bad


def _row_partials(w, g, rpart, C, ncc, rescale, clip, wd):
    # Item t = (row j, chunk q of the row): sum of g^2 over the chunk.
    for t in prange(rpart.size):
        j = t // ncc
        q = t - j * ncc
        start = j * C + q * CHUNK
        stop = min(start + CHUNK, (j + 1) * C)
        s = 0.0
        for i in range(start, stop):
            x = np.float64(normalize_gradient_element(g[i], w[i], rescale, clip, wd))
            s += x * x
        rpart[t] = s


def _col_partials(w, g, cpart, R, C, nrc, rescale, clip, wd):
    # Item (matrix b, row chunk p, column c) -> cpart[(b * nrc + p) * C + c]: sum of g^2
    # over the chunk's rows, in row order. Computed for groups of columns at a time so
    # that memory is read row by row; the order of each sum is the item's.
    groups = (C + _COL_GROUP - 1) // _COL_GROUP
    for task in prange((cpart.size // C) * groups):
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


def _combine(row_var, col_var, rn, rpart, cpart, R, C, ncc, nrc, w8, eps1):
    # Items 0 .. rows-1: row factors; then the column factors.
    rows = row_var.size
    for t in prange(rows + col_var.size):
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
    # Item b: max(mean of matrix b's row factor, eps1).
    for b in prange(rn.size):
        s = 0.0
        for r in range(R):
            s += np.float64(row_var[b * R + r])
        m = rn.dtype.type(s / R)
        if m < eps1:
            m = eps1
        rn[b] = m


def _factored_sums(w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq):
    # Item k: sums of W^2 and U^2 over elements [k * CHUNK, (k + 1) * CHUNK), in element
    # order. U is first computed row segment by row segment into a small buffer (a loop
    # the compiler vectorises), then summed.
    n = w.size
    for k in prange(partials.size // 2):
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


def _factored_step(w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq, decay, lr_t):
    # Item i (element), run row by row: W = W * decay - lr_t * U.
    for j in prange(row_var.size):
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

prange = range  # replaced by numba.prange in the compiled copies

_CPU_FUNCTIONS = {
    "count_nonfinite": _count_nonfinite,
    "row_partials": _row_partials,
    "col_partials": _col_partials,
    "combine": _combine,
    "sums": _factored_sums,
    "step": _factored_step,
}

_compile_lock = threading.Lock()
_compiled: dict = {}


def cpu_function(name: str, parallel: bool):
    """The factored path's CPU function ``name``, compiled with Numba on first use.

    With ``parallel``, the returned callable runs under mxopt's lock for parallel
    kernels (Numba's thread pool must not be entered by two threads at once).
    """
    key = (name, parallel)
    function = _compiled.get(key)
    if function is not None:
        return function
    with _compile_lock:
        function = _compiled.get(key)
        if function is None:
            import numba

            from mxopt.kernels import cpu as _cpu

            template = _CPU_FUNCTIONS[name]
            namespace = dict(template.__globals__)
            namespace["prange"] = numba.prange
            for helper_name, helper in _cpu._device_helpers(template).items():
                namespace[helper_name] = _cpu._compile_device(helper)
            variant = "parallel" if parallel else "serial"
            digest = _cpu._code_digest(template).hexdigest()[:12]
            qualname = f"mxopt_adafactor_{name}_{variant}_{digest}"
            copy = types.FunctionType(template.__code__, namespace, qualname)
            copy.__qualname__ = qualname
            compiled = numba.njit(
                cache=True, nogil=True, error_model="numpy", fastmath=False, parallel=parallel
            )(copy)
            if parallel:
                lock = _cpu._parallel_launch

                def function(*args, _compiled=compiled, _lock=lock):
                    with _lock:
                        return _compiled(*args)

            else:
                function = compiled
            _compiled[key] = function
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
    def __init__(self, n: int):
        from mxopt.kernels import cpu as _cpu

        self.parallel = n >= _cpu.parallel_min_size()

    def empty(self, size, dtype):
        return np.empty(size, dtype=dtype)

    def count_nonfinite(self, g) -> int:
        return int(cpu_function("count_nonfinite", self.parallel)(g))

    def row_partials(self, w, g, rpart, C, ncc, rescale, clip, wd):
        cpu_function("row_partials", self.parallel)(w, g, rpart, C, ncc, rescale, clip, wd)

    def col_partials(self, w, g, cpart, R, C, nrc, rescale, clip, wd):
        cpu_function("col_partials", self.parallel)(w, g, cpart, R, C, nrc, rescale, clip, wd)

    def combine(self, row_var, col_var, rn, rpart, cpart, R, C, ncc, nrc, w8, eps1):
        cpu_function("combine", self.parallel)(
            row_var, col_var, rn, rpart, cpart, R, C, ncc, nrc, w8, eps1
        )

    def sums(self, w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq):
        cpu_function("sums", self.parallel)(
            w, g, row_var, col_var, rn, partials, R, C, rescale, clip, wd, eps1sq
        )
        return partials

    def step(self, w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq, decay, lr_t):
        cpu_function("step", self.parallel)(
            w, g, row_var, col_var, rn, R, C, rescale, clip, wd, eps1sq, decay, lr_t
        )


class _CudaFactored:
    #: The array module (CuPy; the tests substitute NumPy to run the CUDA items on the CPU).
    xp = None

    def __init__(self, cuda, dtype):
        self.cuda = cuda
        self.ctype = DTYPES[np.dtype(dtype)]
        self.module = cuda._module("adafactor_factored", factored_module_source)
        if self.xp is None:
            import cupy

            self.xp = cupy

    def empty(self, size, dtype):
        return self.xp.empty(size, dtype=dtype)

    def _launch(self, name, count, *args):
        if count == 0:
            return
        function = self.module.get_function(f"mxopt_adafactor_{name}_{self.ctype}")
        grid = self.cuda._grid(count)
        function((grid,), (self.cuda._THREADS,), (*args, np.int64(count)))

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


# ---------------------------------------------------------------------------------------
# Options and optimizer


@options
class AdafactorOptions(AbstractOptimizerOptions):
    """Options of :class:`Adafactor` (defaults as torch.optim.Adafactor)."""

    lr: float = hyperparameter(
        1e-2, ge=0.0, doc="cap of the relative step size min(lr, 1/sqrt(k)); scales the decay"
    )
    beta2_decay: float = hyperparameter(-0.8, le=0.0, doc="tau: 1 - beta2_k = k**tau")
    eps1: float = hyperparameter(
        0.0, ge=0.0, doc="floor of sqrt(V) and of the row-factor mean; 0: the dtype's epsilon"
    )
    eps2: float = hyperparameter(1e-3, ge=0.0, doc="floor of RMS(W) in the step size")
    d: float = hyperparameter(1.0, ge=1.0, doc="clipping threshold of RMS(U)")
    weight_decay: float = hyperparameter(0.0, ge=0.0, doc="weight decay coefficient lambda")
    decoupled_weight_decay: bool = decoupled_weight_decay_option(True)


class Adafactor(AbstractOptimizer):
    """Adafactor (Shazeer & Stern 2018): factored second moment, relative step sizes.

    ``Adafactor(*, lr=1e-2, beta2_decay=-0.8, eps1=0.0, eps2=1e-3, d=1.0, grad_clip=0.0,
    weight_decay=0.0, decoupled_weight_decay=True, grad_scale=1.0, maximize=False,
    lr_scheduler=None, state=None)``

    Paper: Noam Shazeer, Mitchell Stern, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost", arXiv:1804.04235, in torch.optim.Adafactor's form. For
    the ``k``-th update of a weight (``k`` counts that weight's updates):

    .. math::

        1-\\hat\\beta_{2,k} &= k^{\\tau}, \\quad \\rho_k = \\min(\\eta, k^{-1/2}), \\quad
        \\alpha_k = \\max(\\epsilon_2, \\operatorname{RMS}(W)) \\rho_k \\\\
        r &\\leftarrow r + k^{\\tau} (\\operatorname{mean}_{c} g^2 - r), \\quad
        c \\leftarrow c + k^{\\tau} (\\operatorname{mean}_{r} g^2 - c), \\quad
        \\hat V = r c^\\top / \\max(\\operatorname{mean}(r), \\epsilon_1) \\\\
        U &= g / \\sqrt{\\max(\\hat V, \\epsilon_1^2)}, \\qquad
        W \\leftarrow (1-\\eta\\lambda) W - \\frac{\\alpha_k}{\\max(1,
        \\operatorname{RMS}(U)/d)} U

    :math:`\\operatorname{RMS}(W)` is taken before the decay. A weight of 2 or
    more dimensions, shape ``(*lead, R, C)``, is factored over its last two
    dimensions, separately for each leading index. 0-d and 1-d weights keep the
    full :math:`\\hat V \\leftarrow \\hat V + k^\\tau (g^2 - \\hat V)` (Adam's
    second moment without first moment). ``eps1=0`` (the default) means the
    machine epsilon of the weight's dtype, as torch's ``eps=(None, ...)``; an
    exact 0 cannot be asked for (use a tiny positive value). A weight with no
    elements is left alone (its step count still advances).

    State: ``"row_var"`` of shape ``(*lead, R, 1)`` and ``"col_var"`` of shape
    ``(*lead, 1, C)`` for matrices (torch's names and shapes), ``"variance"``
    shaped like the weight otherwise. Memory: ``R + C`` values for an ``R x C``
    matrix, i.e. ``itemsize * (R + C) / (R C)`` bytes per parameter (0.008 bytes
    for a float32 1024 x 1024 matrix, against 8 for Adam); 1-d weights keep one
    value per parameter. A step allocates float64 vectors of ``R ceil(C/4096) +
    C ceil(R/4096) + 2 ceil(n/4096)`` values per matrix, never one of size ``n``.

    With ``batch_size=1`` this is ``torch.optim.Adafactor(lr, beta2_decay,
    eps=(eps1 or None, eps2), d, weight_decay, maximize)``. With
    ``decoupled_weight_decay=False`` the decay is instead L2 added to the
    gradient (MXNet.jl's convention). optax's ``adafactor`` differs (its
    epsilon is added to :math:`g^2`, it factors only large dimensions, and it
    has no ``lr`` cap on :math:`\\rho_k`).
    """

    Options = AdafactorOptions

    def kernel(self) -> Kernel:
        return ADAFACTOR_VECTOR_KERNEL

    def state_spec(self, shape: tuple) -> dict:
        shape = tuple(shape)
        if len(shape) >= 2:
            return {
                "row_var": ((*shape[:-1], 1), 0.0),
                "col_var": ((*shape[:-2], 1, shape[-1]), 0.0),
            }
        return {"variance": 0.0}

    def host_scalars(self, state, step: int, n: int, dtype) -> dict:
        """Every scalar of the ``step``-th update of a weight of ``n`` elements (float64).

        ``step_size(sum_w2, sum_u2)`` gives :math:`\\alpha_k / \\max(1,
        \\operatorname{RMS}(U)/d)` from the sums of :math:`W^2` and :math:`U^2`.
        """
        opts = self.opts
        rescale, clip, wd = gradient_scalars(opts, state)
        lr = self.lr_value(state)
        eps1 = read_hyperparameter(opts, "eps1", state) or float(np.finfo(dtype).eps)
        eps2 = read_hyperparameter(opts, "eps2", state)
        d = read_hyperparameter(opts, "d", state)
        rho = min(lr, 1.0 / math.sqrt(step))
        root_n = math.sqrt(n)

        def step_size(sum_w2: float, sum_u2: float) -> float:
            alpha = max(eps2, math.sqrt(sum_w2) / root_n) * rho
            return alpha / max(1.0, math.sqrt(sum_u2) / (root_n * d))

        return {
            "rescale": rescale, "clip": clip, "wd": wd,
            "w8": float(step) ** read_hyperparameter(opts, "beta2_decay", state),
            "eps1": eps1, "eps1sq": eps1 * eps1, "decay": decay_factor(opts, state, lr),
            "step_size": step_size,
        }  # fmt: skip

    def kernel_scalars(self, state, step, memory):
        """The first vector kernel's scalars (``eps1=0`` taken as float64's epsilon)."""
        x = self.host_scalars(state, step, 1, np.float64)
        return (x["rescale"], x["clip"], x["wd"], x["w8"], x["eps1sq"])

    def apply(self, backend, w, g, wstate, state, step, check):
        n = w.size
        x = self.host_scalars(state, step, max(n, 1), w.dtype)
        if n == 0:
            return 0
        if "variance" in wstate.flat:
            arrays = wstate.arrays_for(ADAFACTOR_VECTOR_KERNEL)
            scalars = (x["rescale"], x["clip"], x["wd"], x["w8"], x["eps1sq"])
            bad, sum_w2, sum_u2 = backend.run(ADAFACTOR_VECTOR_KERNEL, w, g, arrays, scalars, check)
            if bad:
                return bad
            step_scalars = (*scalars[:3], x["eps1sq"], x["decay"], x["step_size"](sum_w2, sum_u2))
            backend.run(ADAFACTOR_VECTOR_STEP_KERNEL, w, g, arrays, step_scalars, False)
            return 0
        flat = wstate.flat
        if backend.__name__ == "mxopt.kernels.cuda":
            with backend.device_of(w):  # compile, allocate and launch on w's GPU
                ops = _CudaFactored(backend, w.dtype)
                return factored_update(
                    ops, w, g, flat["row_var"], flat["col_var"], wstate.shape, x, check
                )
        ops = _CpuFactored(n)
        return factored_update(ops, w, g, flat["row_var"], flat["col_var"], wstate.shape, x, check)

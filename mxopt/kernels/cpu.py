"""Numba compilation of kernels for NumPy arrays, and their runs on big arrays.

Imported on first use, never by ``import mxopt`` (Numba takes about 0.3 s to
import). For each :class:`~mxopt.kernels.kernel.Kernel` the loops below are specialised
to its element function: the element is compiled, wrapped in a small adapter that
unpacks the state and scalar tuples into its named parameters (generated for the
kernel's arity; unpacking with ``*`` inside a loop stops SIMD, measured 2-3 times
slower), and substituted for the placeholder ``_ELEMENT`` in a fresh copy of the loop.
Each copy gets a name derived from the kernel's name and a digest of the element's
code, so Numba's on-disk cache (``cache=True``) keeps one entry per kernel and an edited
element is never served from a stale cache.

Compilation flags (measured, see DESIGN.md): ``error_model="numpy"`` removes
the division-by-zero check that stops SIMD; ``fastmath`` stays off (it breaks
NaN checks and reorders arithmetic); ``nogil`` lets other threads run during a step.

Every loop is serial. An array of :func:`parallel_min_size` elements or more is cut into
chunks that mxopt's own threads run (:mod:`mxopt.kernels.threads`: workers that block
rather than spin, and a caller that works too); a chunk is a slice handed to the same
serial loop, and sums are taken per block of :data:`~mxopt.kernels.kernel.REDUCE_BLOCK`
elements and added in block order, so a step has the same bits whatever the number of
threads. Numba's own threading layer is never used.

Calls go straight to the compiled entry point of the exact signature, which
skips Numba's argument-type dispatch (about 2 microseconds); callers must pass
exactly the types that signature was built for, which :mod:`mxopt.kernels.backends`
guarantees.
"""

from __future__ import annotations

import hashlib
import os
import threading
import types

import numba
import numpy as np
from numba.np.unsafe.ndarray import to_fixed_tuple

from mxopt.kernels import threads
from mxopt.kernels.kernel import REDUCE_BLOCK, Kernel, largest_magnitude_bits, reduction_blocks

__all__ = [
    "compile_loop",
    "count_nonfinite",
    "entry_point",
    "parallel_min_size",
    "run",
    "run_rows",
    "run_segments",
    "runner",
    "sum_rows",
]

_JIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": False}

_ELEMENT = None  # placeholder, replaced in each specialised copy of the loops
_NSCALARS = 0  # placeholder: the kernel's number of scalars, a compile-time constant
_COUNT_NONFINITE = None  # placeholder: _count_nonfinite, compiled and inlined by LLVM
_ROW = None  # placeholder in the row loop: the element over one row (_row_adapter)

#: Elements per inner piece of the segmented loops (a piece starts a segment lookup).
SEGMENT_CHUNK = 1 << 16


#: Magnitude masks and the patterns of infinity of float32 and float64, as integers.
_MAGNITUDE_32, _INFINITY_32 = np.int32(0x7FFFFFFF), np.int32(0x7F800000)
_MAGNITUDE_64, _INFINITY_64 = np.int64(0x7FFFFFFFFFFFFFFF), np.int64(0x7FF0000000000000)


def _count_nonfinite(g, start, stop):
    """The number of NaN and infinite values in ``g[start:stop]`` (float32 or float64).

    A fast read pass on the bit patterns says whether there is any; only then are they
    counted (a step that finds one writes nothing, so that pass's speed does not matter).
    """
    # Over a slice from 0: with range(start, stop) the index may be negative as far as
    # Numba knows, and the wrap-around check stops SIMD (3.5x slower, measured at 1M).
    part = g[start:stop]
    if part.itemsize == 4:
        if largest_magnitude_bits(part.view(np.int32), _MAGNITUDE_32) < _INFINITY_32:
            return 0
    elif largest_magnitude_bits(part.view(np.int64), _MAGNITUDE_64) < _INFINITY_64:
        return 0
    bad = 0
    for i in range(part.size):
        if not np.isfinite(part[i]):
            bad += 1
    return bad


def _elementwise(w, g, state, s, check):
    """Apply the element to every index; with ``check``, first count non-finite gradients.

    Returns the number of non-finite gradient values found (then nothing was
    written), or 0 after a complete update.
    """
    n = w.size
    if check:
        bad = _COUNT_NONFINITE(g, 0, n)
        if bad:
            return bad
    for i in range(n):
        _ELEMENT(i, w, g, state, s)
    return 0


def _reduce(w, g, state, s, check, partial):
    """Apply a reducing element to every index and sum its pairs.

    Returns ``(n_bad, sum_a, sum_b)``. The sums are float64, taken over fixed blocks of
    ``REDUCE_BLOCK`` elements (written to ``partial[block]``), then over the blocks in
    order: a chunked run that fills ``partial`` slice by slice and adds it up in order
    gets the same bits.
    """
    n = w.size
    if check:
        bad = _COUNT_NONFINITE(g, 0, n)
        if bad:
            return bad, 0.0, 0.0
    blocks = (n + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    for block in range(blocks):
        sum_a = 0.0
        sum_b = 0.0
        for i in range(block * REDUCE_BLOCK, min(n, (block + 1) * REDUCE_BLOCK)):
            a, b = _ELEMENT(i, w, g, state, s)
            sum_a += a
            sum_b += b
        partial[block, 0] = sum_a
        partial[block, 1] = sum_b
    total_a = 0.0
    total_b = 0.0
    for block in range(blocks):
        total_a += partial[block, 0]
        total_b += partial[block, 1]
    return 0, total_a, total_b


def _segments(w, g, state, offsets, table, check, start, stop):
    """The element over ``[start, stop)`` of segments ``[offsets[k], offsets[k+1])``, with
    scalars ``table[k]``.

    Many tensors packed in one buffer, each with its own scalars (step count,
    learning-rate multiplier...): the same bits as one call per tensor. The range is
    walked in pieces of ``SEGMENT_CHUNK`` elements, each starting at the segment that
    holds its first element.
    """
    if check:
        bad = _COUNT_NONFINITE(g, start, stop)
        if bad:
            return bad
    pieces = (stop - start + SEGMENT_CHUNK - 1) // SEGMENT_CHUNK
    for piece in range(pieces):
        i = start + piece * SEGMENT_CHUNK
        piece_stop = min(stop, i + SEGMENT_CHUNK)
        segment = np.searchsorted(offsets, i, side="right") - 1
        while i < piece_stop:
            segment_stop = min(piece_stop, offsets[segment + 1])
            s = to_fixed_tuple(table[segment], _NSCALARS)
            for j in range(i, segment_stop):
                _ELEMENT(j, w, g, state, s)
            i = segment_stop
            segment += 1
    return 0


def _segment_sums(w, g, state, table, blocks, partial):
    """A reducing element over the blocks ``blocks[b] = (segment, start, stop)``: the pair
    of sums of block ``b`` goes to ``partial[b]`` (the caller adds them up per segment,
    in block order)."""
    for b in range(blocks.shape[0]):
        s = to_fixed_tuple(table[blocks[b, 0]], _NSCALARS)
        sum_a = 0.0
        sum_b = 0.0
        for i in range(blocks[b, 1], blocks[b, 2]):
            a, c = _ELEMENT(i, w, g, state, s)
            sum_a += a
            sum_b += c
        partial[b, 0] = sum_a
        partial[b, 1] = sum_b
    return 0


def _rows(w, g, state, s, rows, row_size, check):
    """The element over the rows ``rows`` of the weight (row ``r`` is elements
    ``[r * row_size, (r + 1) * row_size)`` of ``w`` and of every state array), reading the
    gradient of ``rows[k]`` from row ``k`` of ``g`` (distinct rows: a lazy update).

    With ``check``, first counts the non-finite values of ``g`` (then nothing is written).
    """
    if check:
        bad = _COUNT_NONFINITE(g, 0, g.size)
        if bad:
            return bad
    for k in range(rows.size):
        _ROW(w, g, state, s, rows[k] * row_size, k * row_size, row_size)
    return 0


_TEMPLATES = {
    "rows": _rows,
    "elementwise": _elementwise,
    "reduce": _reduce,
    "segments": _segments,
    "segment_sums": _segment_sums,
}


def _device_helpers(function) -> dict:
    """The :func:`mxopt.kernels.kernel.device` helpers ``function`` refers to, by global name."""
    helpers = {}
    for name in function.__code__.co_names:
        value = function.__globals__.get(name)
        if getattr(value, "__mxopt_device__", False):
            helpers[name] = value
    return helpers


def _code_digest(function, digest=None):
    """A digest of ``function``'s code and of the device helpers it calls."""
    digest = digest or hashlib.sha1()
    code = function.__code__
    digest.update(code.co_code)
    digest.update(repr((code.co_consts, code.co_names, code.co_varnames)).encode())
    for name, helper in sorted(_device_helpers(function).items()):
        digest.update(name.encode())
        _code_digest(helper, digest)
    return digest


_compiled_devices: dict = {}


def _compile_device(function):
    """``function`` compiled with Numba, its device helpers compiled likewise."""
    compiled = _compiled_devices.get(function)
    if compiled is None:
        namespace = dict(function.__globals__)
        for name, helper in _device_helpers(function).items():
            namespace[name] = _compile_device(helper)
        copy = types.FunctionType(function.__code__, namespace, function.__name__)
        compiled = numba.njit(error_model="numpy")(copy)  # LLVM inlines it into the loops
        _compiled_devices[function] = compiled
    return compiled


_lock = threading.RLock()
_dispatchers: dict = {}
_entries: dict = {}


def _specialised(template, name: str, *, nogil: bool = True, **constants):
    """A Numba dispatcher for a copy of ``template`` named ``name`` (a unique name keeps
    one disk-cache entry per copy), with ``constants`` replacing its placeholder globals
    and the device helpers it calls compiled."""
    namespace = dict(template.__globals__)
    for helper_name, helper in _device_helpers(template).items():
        namespace[helper_name] = _compile_device(helper)
    namespace.update(constants)
    copy = types.FunctionType(template.__code__, namespace, name)
    copy.__qualname__ = name
    return numba.njit(**{**_JIT_OPTIONS, "nogil": nogil})(copy)


def compile_loop(function, prefix: str):
    """``function`` (plain Python) compiled like the kernel loops: its device helpers
    compiled, cached on disk under ``prefix`` and a digest of its code."""
    namespace = dict(function.__globals__)
    for name, helper in _device_helpers(function).items():
        namespace[name] = _compile_device(helper)
    name = f"{prefix}_{_code_digest(function).hexdigest()[:12]}"
    copy = types.FunctionType(function.__code__, namespace, name)
    copy.__qualname__ = name
    return numba.njit(**_JIT_OPTIONS)(copy)


_count_nonfinite_compiled = _compile_device(_count_nonfinite)
_count_entry = compile_loop(_count_nonfinite, "mxopt_count_nonfinite")


def adapter_name(role: str, kernel: Kernel) -> str:
    """A generated function's name, unique to its role, kernel and element code. Numba
    names compiled symbols after functions: cached loops compiled in several processes at
    once, each with its own "element" adapters of the same name, could link one kernel's
    adapter into another's loop (numba/numba#10486, #10128; seen here as a step with the
    wrong bits from a cache filled by parallel test workers)."""
    return f"mxopt_{role}_{kernel.name}_{_code_digest(kernel.cpu).hexdigest()[:12]}"


def _element_adapter(kernel: Kernel):
    """``element(i, w, g, state, s)`` calling the kernel's element with every state array
    and scalar as its own argument (the loops pass tuples of any length)."""
    arguments = ["i", "w", "g"]
    arguments += [f"state[{k}]" for k in range(len(kernel.state))]
    arguments += [f"s[{k}]" for k in range(len(kernel.scalars))]
    name = adapter_name("element", kernel)
    source = f"def {name}(i, w, g, state, s):\n    return named({', '.join(arguments)})\n"
    namespace = {"named": _compile_device(kernel.cpu)}
    exec(compile(source, f"<mxopt element adapter {kernel.name}>", "exec"), namespace)
    return numba.njit(error_model="numpy")(namespace[name])


def _row_adapter(kernel: Kernel):
    """``row(w, g, state, s, a, b, n)``: the kernel's element over ``n`` elements with the
    weight and state arrays seen from element ``a`` and the gradient from element ``b``
    (views, so the element's one index ``i`` serves both, and its math is the dense
    kernel's exactly)."""
    name = adapter_name("row", kernel)
    lines = [f"def {name}(w, g, state, s, a, b, n):", "    w_ = w[a:a + n]", "    g_ = g[b:b + n]"]
    lines += [f"    s{k} = state[{k}][a:a + n]" for k in range(len(kernel.state))]
    arguments = ["j", "w_", "g_", *(f"s{k}" for k in range(len(kernel.state)))]
    arguments += [f"s[{k}]" for k in range(len(kernel.scalars))]
    lines += ["    for j in range(n):", f"        named({', '.join(arguments)})", ""]
    namespace = {"named": _compile_device(kernel.cpu)}
    exec(compile("\n".join(lines), f"<mxopt row adapter {kernel.name}>", "exec"), namespace)
    return numba.njit(error_model="numpy")(namespace[name])


def checked_loop_digest(kernel: Kernel) -> str:
    """The name part of a cached loop that runs ``kernel`` after the non-finite count: a
    digest of both (Numba checks a cached loop against its own file only, and the count's
    read pass lives in kernel.py)."""
    return _code_digest(kernel.cpu, _code_digest(_count_nonfinite)).hexdigest()[:12]


def _dispatcher(kernel: Kernel, loop: str):
    key = (kernel, loop)
    dispatcher = _dispatchers.get(key)
    if dispatcher is None:
        digest = checked_loop_digest(kernel)
        row = {"_ROW": _row_adapter(kernel)} if loop == "rows" else {}
        dispatcher = _specialised(
            _TEMPLATES[loop],
            f"mxopt_{kernel.name}_{loop}_{digest}",
            _ELEMENT=_element_adapter(kernel),
            _NSCALARS=len(kernel.scalars),
            _COUNT_NONFINITE=_count_nonfinite_compiled,
            **row,
        )
        _dispatchers[key] = dispatcher
    return dispatcher


def _signature(kernel: Kernel, dtype: np.dtype, loop: str):
    scalar = numba.from_dtype(dtype)
    array = numba.types.Array(scalar, 1, "C")
    n_state, n_scalars = len(kernel.state), len(kernel.scalars)
    state = numba.types.UniTuple(array, n_state) if n_state else numba.types.Tuple(())
    partial = numba.types.Array(numba.float64, 2, "C")
    int64s = numba.types.Array(numba.int64, 1, "C")
    if loop in ("elementwise", "reduce", "rows"):
        scalars = numba.types.UniTuple(scalar, n_scalars) if n_scalars else numba.types.Tuple(())
        if loop == "rows":
            return (array, array, state, scalars, int64s, numba.int64, numba.types.boolean)
        signature = (array, array, state, scalars, numba.types.boolean)
        return signature + (partial,) if loop == "reduce" else signature
    table = numba.types.Array(scalar, 2, "C")
    if loop == "segments":
        return (array, array, state, int64s, table, numba.types.boolean, numba.int64,
                numba.int64)  # fmt: skip
    return (array, array, state, table, numba.types.Array(numba.int64, 2, "C"), partial)


def entry_point(kernel: Kernel, dtype: np.dtype, layout: str = "single"):
    """The compiled serial loop of ``kernel`` for ``dtype``.

    ``layout="single"``: ``f(w, g, state, scalars, check)`` over one flat array, returning
    ``n_bad``; a reducing kernel takes a float64 ``partial`` array of one row per block
    of ``REDUCE_BLOCK`` elements last and returns ``(n_bad, sum_a, sum_b)``.

    ``layout="rows"`` (elementwise kernels): ``f(w, g, state, scalars, rows, row_size,
    check)`` over the distinct rows ``rows`` (int64) of ``row_size`` elements, the
    gradient of ``rows[k]`` in row ``k`` of ``g``, returning ``n_bad`` (see :func:`run_rows`).

    ``layout="segments"``: ``f(w, g, state, offsets, table, check, start, stop)`` over
    elements ``[start, stop)`` of segments ``[offsets[k], offsets[k+1])`` with scalars
    ``table[k]``, returning ``n_bad``; a reducing kernel is ``f(w, g, state, table,
    blocks, partial)`` (see :func:`run_segments`).

    Compiles (or loads from Numba's cache) on first use. Arguments must be
    1-D C-contiguous arrays of ``dtype`` (``g`` may be read-only), scalars as a
    tuple of floats or a C-contiguous table of ``dtype``, int64 offsets.
    """
    key = (kernel, dtype, layout)
    entry = _entries.get(key)
    if entry is None:
        with _lock:
            entry = _entries.get(key)
            if entry is None:
                if layout == "segments":
                    loop = "segment_sums" if kernel.reduces else "segments"
                elif layout == "rows":
                    loop = "rows"
                else:
                    loop = "reduce" if kernel.reduces else "elementwise"
                dispatcher = _dispatcher(kernel, loop)
                signature = _signature(kernel, np.dtype(dtype), loop)
                dispatcher.compile(signature)
                entry = _entries[key] = dispatcher.overloads[signature].entry_point
    return entry


def _default_parallel_min_size() -> int:
    configured = os.environ.get("MXOPT_PARALLEL_MIN_SIZE")
    if configured:
        return int(configured)
    # Below this a step takes about a millisecond or less, and waking the workers, cutting
    # the arrays and waiting for the last chunk cost more than two threads save (measured:
    # see "Threads" in docs/performance.md).
    return 1 << 20


_parallel_min_size = _default_parallel_min_size()


def parallel_min_size() -> int:
    """Arrays with at least this many elements are cut into chunks that mxopt's threads
    run (``MXOPT_PARALLEL_MIN_SIZE`` overrides it; with one thread nothing is cut)."""
    return _parallel_min_size


#: The smallest chunk of a parallel run (elements); a run has at most 4 chunks a thread.
MIN_CHUNK = 1 << 16


def _chunks(n: int, pool) -> list:
    """``[(start, stop)]`` cutting ``n`` elements into pieces of whole reduction blocks."""
    count = max(1, min(4 * pool.threads, n // MIN_CHUNK))
    size = -(-n // count)
    size = -(-size // REDUCE_BLOCK) * REDUCE_BLOCK
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def _parallel(n: int):
    """The pool when an array of ``n`` elements is worth cutting, else ``None``."""
    if n < _parallel_min_size or n == 0:
        return None
    pool = threads.pool()
    return pool if pool.parallel else None


def count_nonfinite(g, start: int = 0, stop: int | None = None) -> int:
    """The number of NaN and infinite values of the flat array ``g[start:stop]``."""
    stop = g.size if stop is None else stop
    pool = _parallel(stop - start)
    if pool is None:
        return int(_count_entry(g, start, stop))
    pieces = [(start + a, start + b) for a, b in _chunks(stop - start, pool)]
    counts = [0] * len(pieces)

    def count(k):
        counts[k] = _count_entry(g, *pieces[k])

    pool.run(count, len(pieces))
    return int(sum(counts))


def _run_chunked(entry, pool, w, g, state, scalars, check, reduces):
    n = w.size
    if check:
        bad = count_nonfinite(g)
        if bad:
            return (bad, 0.0, 0.0) if reduces else bad
    pieces = _chunks(n, pool)
    partial = np.empty(((n + REDUCE_BLOCK - 1) // REDUCE_BLOCK, 2)) if reduces else None

    def piece(k):
        a, b = pieces[k]
        parts = tuple(array[a:b] for array in state)
        if reduces:
            blocks = partial[a // REDUCE_BLOCK : (b + REDUCE_BLOCK - 1) // REDUCE_BLOCK]
            entry(w[a:b], g[a:b], parts, scalars, False, blocks)
        else:
            entry(w[a:b], g[a:b], parts, scalars, False)

    pool.run(piece, len(pieces))
    if not reduces:
        return 0
    totals = np.cumsum(partial, axis=0)[-1]  # in block order, as the serial loop adds
    return 0, float(totals[0]), float(totals[1])


def runner(kernel: Kernel, dtype, size: int):
    """``f(w, g, state, scalars, check)``: :func:`run` for an elementwise kernel and arrays
    of ``dtype`` and ``size``, looked up once (callers keep it)."""
    entry = entry_point(kernel, np.dtype(dtype))
    pool = _parallel(size)
    if kernel.reduces or pool is None:
        return entry if not kernel.reduces else lambda w, g, st, s, c: run(kernel, w, g, st, s, c)
    return lambda w, g, st, s, c: _run_chunked(entry, pool, w, g, st, s, c, False)


def run(kernel: Kernel, w, g, state: tuple, scalars: tuple, check: bool):
    """Run ``kernel`` over flat arrays.

    Returns the count of non-finite gradient values found by ``check`` (then
    nothing was written), or 0; a reducing kernel returns ``(n_bad, sum_a, sum_b)``.
    """
    entry = _entries.get((kernel, w.dtype, "single")) or entry_point(kernel, w.dtype)
    pool = _parallel(w.size)
    if pool is not None:
        return _run_chunked(entry, pool, w, g, state, scalars, check, kernel.reduces)
    if kernel.reduces:
        partial = np.empty(((w.size + REDUCE_BLOCK - 1) // REDUCE_BLOCK, 2))
        return entry(w, g, state, scalars, check, partial)
    return entry(w, g, state, scalars, check)


def run_segments(kernel: Kernel, w, g, state: tuple, offsets, table, check: bool):
    """Run ``kernel`` over segments of flat arrays, each with its row of ``table``.

    ``offsets`` (int64, ``nseg + 1`` boundaries) and ``table`` (``nseg`` rows of
    scalars, in the arrays' dtype). Returns ``n_bad`` (0 when done), or for a
    reducing kernel ``(n_bad, sums)`` with ``sums[k] = (sum_a, sum_b)`` of segment
    ``k``; every segment gets exactly the bits of a :func:`run` on it alone.
    """
    entry = entry_point(kernel, w.dtype, "segments")
    start, stop = int(offsets[0]), int(offsets[-1])
    if check:
        bad = count_nonfinite(g, start, stop)
        if bad:
            return (bad, np.zeros((len(offsets) - 1, 2))) if kernel.reduces else bad
    pool = _parallel(stop - start)
    if kernel.reduces:
        blocks = reduction_blocks(offsets)
        partial = np.empty((blocks.shape[0], 2))
        if pool is None:
            entry(w, g, state, table, blocks, partial)
        else:
            rows = _chunks(blocks.shape[0] * REDUCE_BLOCK, pool)
            rows = [(a // REDUCE_BLOCK, -(-b // REDUCE_BLOCK)) for a, b in rows]

            def piece(k):
                a, b = rows[k]
                entry(w, g, state, table, blocks[a:b], partial[a:b])

            pool.run(piece, len(rows))
        sums = np.zeros((len(offsets) - 1, 2))
        np.add.at(sums, blocks[:, 0], partial)  # per segment, in block order
        return 0, sums
    if pool is None:
        return entry(w, g, state, offsets, table, False, start, stop)
    pieces = [(start + a, start + b) for a, b in _chunks(stop - start, pool)]
    pool.run(lambda k: entry(w, g, state, offsets, table, False, *pieces[k]), len(pieces))
    return 0


def run_rows(kernel: Kernel, w, g, rows, row_size: int, state: tuple, scalars: tuple,
             check: bool) -> int:  # fmt: skip
    """Run an elementwise ``kernel`` over the distinct rows ``rows`` (int64) of flat arrays
    whose rows have ``row_size`` elements; the gradient of ``rows[k]`` is row ``k`` of
    ``g``. The rest of ``w`` and of the state arrays is neither read nor written.

    Each element gets the bits of a :func:`run` over the whole arrays. Returns the count
    of non-finite values of ``g`` found by ``check`` (then nothing was written), or 0.
    Many rows are cut into runs of rows that mxopt's threads update (the rows are
    distinct, so the runs never touch the same memory).
    """
    entry = entry_point(kernel, w.dtype, "rows")
    count = rows.size
    pool = _parallel(count * row_size)
    if pool is None or count < 2:
        return entry(w, g, state, scalars, rows, row_size, check)
    if check:
        bad = count_nonfinite(g)
        if bad:
            return bad
    pieces = min(4 * pool.threads, count)
    bounds = [count * p // pieces for p in range(pieces + 1)]

    def piece(k):
        a, b = bounds[k], bounds[k + 1]
        entry(w, g[a * row_size : b * row_size], state, scalars, rows[a:b], row_size, False)

    pool.run(piece, pieces)
    return 0


def _sum_rows(values, order, bounds, row_size, out):
    """Row ``u`` of ``out`` = the sum of rows ``order[bounds[u]:bounds[u + 1]]`` of
    ``values``, added in that order starting from the first (no ``0 +``)."""
    for u in range(bounds.size - 1):
        o = out[u * row_size : (u + 1) * row_size]
        first = order[bounds[u]] * row_size
        v = values[first : first + row_size]
        for j in range(row_size):
            o[j] = v[j]
        for k in range(bounds[u] + 1, bounds[u + 1]):
            start = order[k] * row_size
            v = values[start : start + row_size]
            for j in range(row_size):
                o[j] = o[j] + v[j]
    return 0


_sum_rows_compiled = None


def sum_rows(values, order, bounds, row_size: int):
    """The rows of the flat ``values`` (rows of ``row_size``) summed by groups: group ``u``
    is rows ``order[bounds[u]:bounds[u + 1]]``, in that order. A new flat array."""
    global _sum_rows_compiled
    if _sum_rows_compiled is None:
        _sum_rows_compiled = compile_loop(_sum_rows, "mxopt_sum_rows")
    out = np.empty((bounds.size - 1) * row_size, dtype=values.dtype)
    _sum_rows_compiled(values, order, bounds, np.int64(row_size), out)
    return out

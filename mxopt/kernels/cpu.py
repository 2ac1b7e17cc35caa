"""Numba compilation of kernels for NumPy arrays.

Imported on first use, never by ``import mxopt`` (Numba takes about 0.3 s to
import). For each :class:`~mxopt.kernels.kernel.Kernel` the loops below are specialised
to its element function: the element is compiled, wrapped in a small adapter that
unpacks the state and scalar tuples into its named parameters (generated for the
kernel's arity; unpacking with ``*`` inside a loop stops SIMD, measured 2-3 times
slower), and substituted for the placeholder ``_ELEMENT`` in a fresh copy of the loop. Each
copy gets a name derived from the kernel's name and a digest of the element's
code, so Numba's on-disk cache (``cache=True``) keeps one entry per kernel and
an edited element is never served from a stale cache.

Compilation flags (measured, see DESIGN.md): ``error_model="numpy"`` removes
the division-by-zero check that stops SIMD; ``fastmath`` stays off (it breaks
NaN checks and reorders arithmetic); ``nogil`` lets other Python threads run
during a step.

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
from numba import prange
from numba.np.unsafe.ndarray import to_fixed_tuple

from mxopt.kernels.kernel import REDUCE_BLOCK, Kernel, reduction_blocks

__all__ = ["entry_point", "parallel_min_size", "run", "run_segments"]

_JIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": False}

_ELEMENT = None  # placeholder, replaced in each specialised copy of the loops
_NSCALARS = 0  # placeholder: the kernel's number of scalars, a compile-time constant
_COUNT_NONFINITE = None  # placeholder: _count_nonfinite, inlined into the loop calling it

# Each template below is compiled twice, with parallel=True and parallel=False; without
# it Numba runs prange as range, so both variants run the same code and give the same bits.

#: Elements per work item of the segmented loops (whole items, so threads split evenly).
SEGMENT_CHUNK = 1 << 16


def _count_nonfinite(g, start, stop):
    """The number of NaN and infinite values in ``g[start:stop]``."""
    # Over a slice from 0: with prange(start, stop) the index may be negative as far as
    # Numba knows, and the wrap-around check stops SIMD (3.5x slower, measured at 1M).
    part = g[start:stop]
    bad = 0
    for i in prange(part.size):
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
    for i in prange(n):
        _ELEMENT(i, w, g, state, s)
    return 0


def _reduce(w, g, state, s, check):
    """Apply a reducing element to every index and sum its pairs.

    Returns ``(n_bad, sum_a, sum_b)``. The sums are float64, taken over fixed
    blocks of ``REDUCE_BLOCK`` elements, then over the blocks in order: the same
    bits for any number of threads.
    """
    n = w.size
    if check:
        bad = _COUNT_NONFINITE(g, 0, n)
        if bad:
            return bad, 0.0, 0.0
    blocks = (n + REDUCE_BLOCK - 1) // REDUCE_BLOCK
    partial = np.empty((blocks, 2))
    for block in prange(blocks):
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


def _segments(w, g, state, offsets, table, check):
    """The element over segments ``[offsets[k], offsets[k+1])``, with scalars ``table[k]``.

    Many tensors packed in one buffer, each with its own scalars (step count,
    learning-rate multiplier...): the same bits as one call per tensor. Work is
    split in chunks of ``SEGMENT_CHUNK`` elements of the whole range, each
    starting at the segment that holds its first element.
    """
    start = offsets[0]
    stop = offsets[offsets.size - 1]
    if check:
        bad = _COUNT_NONFINITE(g, start, stop)
        if bad:
            return bad
    chunks = (stop - start + SEGMENT_CHUNK - 1) // SEGMENT_CHUNK
    for chunk in prange(chunks):
        i = start + chunk * SEGMENT_CHUNK
        chunk_stop = min(stop, i + SEGMENT_CHUNK)
        segment = np.searchsorted(offsets, i, side="right") - 1
        while i < chunk_stop:
            segment_stop = min(chunk_stop, offsets[segment + 1])
            s = to_fixed_tuple(table[segment], _NSCALARS)
            for j in range(i, segment_stop):
                _ELEMENT(j, w, g, state, s)
            i = segment_stop
            segment += 1
    return 0


def _segment_sums(w, g, state, offsets, table, check, blocks):
    """A reducing element over segments: returns ``(n_bad, sums[segment, 2])``.

    ``blocks[b] = (segment, start, stop)`` lists every segment's blocks of
    ``REDUCE_BLOCK`` elements in order, so each segment's sum has exactly the
    bits a call on that tensor alone gives.
    """
    nseg = offsets.size - 1
    sums = np.zeros((nseg, 2))
    if check:
        bad = _COUNT_NONFINITE(g, offsets[0], offsets[nseg])
        if bad:
            return bad, sums
    partial = np.empty((blocks.shape[0], 2))
    for b in prange(blocks.shape[0]):
        s = to_fixed_tuple(table[blocks[b, 0]], _NSCALARS)
        sum_a = 0.0
        sum_b = 0.0
        for i in range(blocks[b, 1], blocks[b, 2]):
            a, c = _ELEMENT(i, w, g, state, s)
            sum_a += a
            sum_b += c
        partial[b, 0] = sum_a
        partial[b, 1] = sum_b
    for b in range(blocks.shape[0]):
        sums[blocks[b, 0], 0] += partial[b, 0]
        sums[blocks[b, 0], 1] += partial[b, 1]
    return 0, sums


_TEMPLATES = {
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
        # Not inline="always": Numba's parfor pass loses writes to arrays unpacked from a
        # tuple inside an inlined prange body (numba 0.68); LLVM inlines the call anyway.
        compiled = numba.njit(error_model="numpy")(copy)
        _compiled_devices[function] = compiled
    return compiled


_lock = threading.RLock()
_dispatchers: dict = {}
_entries: dict = {}


def _specialised(template, name: str, parallel: bool, **constants):
    """A Numba dispatcher for a copy of ``template`` named ``name`` (a unique name keeps
    one disk-cache entry per copy), with ``constants`` replacing its placeholder globals."""
    namespace = dict(template.__globals__)
    namespace.update(constants)
    copy = types.FunctionType(template.__code__, namespace, name)
    copy.__qualname__ = name
    return numba.njit(**_JIT_OPTIONS, parallel=parallel)(copy)


def compile_loop(function, prefix: str, parallel: bool):
    """``function`` (plain Python whose loops use ``prange``, a global that is ``range``
    until now) compiled like the kernel loops: its device helpers compiled, ``prange``
    made Numba's, cached on disk under ``prefix`` and a digest of its code; a parallel
    variant runs one at a time (see :func:`_serialised`)."""
    namespace = dict(function.__globals__)
    namespace["prange"] = prange
    for name, helper in _device_helpers(function).items():
        namespace[name] = _compile_device(helper)
    variant = "parallel" if parallel else "serial"
    name = f"{prefix}_{variant}_{_code_digest(function).hexdigest()[:12]}"
    copy = types.FunctionType(function.__code__, namespace, name)
    copy.__qualname__ = name
    compiled = numba.njit(**_JIT_OPTIONS, parallel=parallel)(copy)
    return _serialised(compiled) if parallel else compiled


# Inlined into each loop at Numba's IR level, so its prange becomes part of the loop's
# own parallel region (a parallel function called from a parallel one runs serially).
_count_nonfinite_inlined = numba.njit(inline="always", error_model="numpy")(_count_nonfinite)


def _element_adapter(kernel: Kernel):
    """``element(i, w, g, state, s)`` calling the kernel's element with every state array
    and scalar as its own argument (the loops pass tuples of any length)."""
    arguments = ["i", "w", "g"]
    arguments += [f"state[{k}]" for k in range(len(kernel.state))]
    arguments += [f"s[{k}]" for k in range(len(kernel.scalars))]
    source = f"def element(i, w, g, state, s):\n    return named({', '.join(arguments)})\n"
    namespace = {"named": _compile_device(kernel.cpu)}
    exec(compile(source, f"<mxopt element adapter {kernel.name}>", "exec"), namespace)
    return numba.njit(error_model="numpy")(namespace["element"])


def _dispatcher(kernel: Kernel, loop: str, parallel: bool):
    key = (kernel, loop, parallel)
    dispatcher = _dispatchers.get(key)
    if dispatcher is None:
        variant = "parallel" if parallel else "serial"
        digest = _code_digest(kernel.cpu).hexdigest()[:12]
        dispatcher = _specialised(
            _TEMPLATES[loop],
            f"mxopt_{kernel.name}_{loop}_{variant}_{digest}",
            parallel,
            _ELEMENT=_element_adapter(kernel),
            _NSCALARS=len(kernel.scalars),
            _COUNT_NONFINITE=_count_nonfinite_inlined,
        )
        _dispatchers[key] = dispatcher
    return dispatcher


def _signature(kernel: Kernel, dtype: np.dtype, layout: str):
    scalar = numba.from_dtype(dtype)
    array = numba.types.Array(scalar, 1, "C")
    n_state, n_scalars = len(kernel.state), len(kernel.scalars)
    state = numba.types.UniTuple(array, n_state) if n_state else numba.types.Tuple(())
    if layout == "single":
        scalars = numba.types.UniTuple(scalar, n_scalars) if n_scalars else numba.types.Tuple(())
        return (array, array, state, scalars, numba.types.boolean)
    offsets = numba.types.Array(numba.int64, 1, "C")
    table = numba.types.Array(scalar, 2, "C")
    signature = (array, array, state, offsets, table, numba.types.boolean)
    if kernel.reduces:
        signature += (numba.types.Array(numba.int64, 2, "C"),)
    return signature


def entry_point(kernel: Kernel, dtype: np.dtype, parallel: bool = False, layout: str = "single"):
    """The compiled loop of ``kernel`` for ``dtype``.

    ``layout="single"``: ``f(w, g, state, scalars, check)`` over one flat array;
    returns ``n_bad``, or ``(n_bad, sum_a, sum_b)`` for a reducing kernel.

    ``layout="segments"``: ``f(w, g, state, offsets, table, check)`` over
    segments ``[offsets[k], offsets[k+1])`` with scalars ``table[k]``; returns
    ``n_bad``, or for a reducing kernel ``f(..., check, blocks)`` returns
    ``(n_bad, sums[segment, 2])``.

    Compiles (or loads from Numba's cache) on first use. Arguments must be
    1-D C-contiguous arrays of ``dtype`` (``g`` may be read-only), scalars as a
    tuple of floats or a C-contiguous table of ``dtype``, int64 offsets.
    """
    parallel = bool(parallel)
    key = (kernel, dtype, parallel, layout)
    entry = _entries.get(key)
    if entry is None:
        with _lock:
            entry = _entries.get(key)
            if entry is None:
                if layout == "segments":
                    loop = "segment_sums" if kernel.reduces else "segments"
                else:
                    loop = "reduce" if kernel.reduces else "elementwise"
                dispatcher = _dispatcher(kernel, loop, parallel)
                signature = _signature(kernel, np.dtype(dtype), layout)
                dispatcher.compile(signature)
                entry = dispatcher.overloads[signature].entry_point
                if parallel:
                    entry = _serialised(entry)
                _entries[key] = entry
    return entry


_parallel_launch = threading.Lock()


def _serialised(entry):
    """Run parallel kernels one at a time.

    Numba's default threading layer (workqueue) must not be entered by two
    Python threads at once; a parallel kernel already uses every core, so
    queueing them costs nothing.
    """

    def run_parallel(*args):
        with _parallel_launch:
            return entry(*args)

    return run_parallel


def _default_parallel_min_size() -> int:
    configured = os.environ.get("MXOPT_PARALLEL_MIN_SIZE")
    if configured:
        return int(configured)
    if numba.config.NUMBA_NUM_THREADS <= 1:
        return 1 << 62
    # Below this size a step fits in the L2/L3 caches and thread start-up costs
    # more than it saves (measured: see "Threads" in docs/performance.md).
    return 1 << 16


_parallel_min_size = _default_parallel_min_size()


def parallel_min_size() -> int:
    """Arrays with at least this many elements use the multi-threaded loops.

    Set ``MXOPT_PARALLEL_MIN_SIZE`` to override; with ``NUMBA_NUM_THREADS=1``
    the parallel loops are never used.
    """
    return _parallel_min_size


def runner(kernel: Kernel, dtype, size: int):
    """``f(w, g, state, scalars, check)``: :func:`run` for arrays of ``dtype`` and ``size``,
    looked up once (callers keep it)."""
    return entry_point(kernel, np.dtype(dtype), size >= _parallel_min_size)


_run_entries: dict = {}  # (kernel, dtype char, parallel) -> entry point: the per-call lookup


def run(kernel: Kernel, w, g, state: tuple, scalars: tuple, check: bool):
    """Run ``kernel`` over flat arrays.

    Returns the count of non-finite gradient values found by ``check`` (then
    nothing was written), or 0; a reducing kernel returns ``(n_bad, sum_a, sum_b)``.
    """
    key = (kernel, w.dtype.char, w.size >= _parallel_min_size)
    entry = _run_entries.get(key)
    if entry is None:
        entry = _run_entries[key] = entry_point(kernel, w.dtype, key[2])
    return entry(w, g, state, scalars, check)


def run_segments(kernel: Kernel, w, g, state: tuple, offsets, table, check: bool):
    """Run ``kernel`` over segments of flat arrays, each with its row of ``table``.

    ``offsets`` (int64, ``nseg + 1`` boundaries) and ``table`` (``nseg`` rows of
    scalars, in the arrays' dtype). Returns ``n_bad`` (0 when done), or for a
    reducing kernel ``(n_bad, sums)`` with ``sums[k] = (sum_a, sum_b)`` of segment
    ``k``; every segment gets exactly the bits of a :func:`run` on it alone.
    """
    parallel = bool(offsets[-1] - offsets[0] >= _parallel_min_size)
    entry = entry_point(kernel, w.dtype, parallel, "segments")
    if kernel.reduces:
        return entry(w, g, state, offsets, table, check, reduction_blocks(offsets))
    return entry(w, g, state, offsets, table, check)

"""One compiled call for a list of NumPy arrays: ``update_many`` without a call per array.

``update_many(indices, grads, weights)`` over a thousand small tensors used to cost a
Python call, an argument check and a kernel entry per tensor (about 8 microseconds each),
more than the arithmetic. Here one compiled call takes the *address of a Python list*
of arrays, reads its items and each array's header (type, dtype, shape, flags, data
pointer) in compiled code, checks it against what the step expects, counts the
gradients' non-finite values, and only then runs the kernel's element over every array,
with exactly the loop, element and scalars of the single-array path (so the same bits).

Reading object headers is safe only under these rules, all enforced here:

* the layouts (``PyArrayObject_fields`` of NumPy's C API, stable since NumPy 1.7, and
  CPython's ``PyListObject``) are *checked at import* against what Python reports for a
  list of sample arrays; on any difference (a free-threaded CPython, say) the fast path
  is off (:data:`AVAILABLE`) and ``update_many`` takes the
  general path;
* an object's type pointer is compared with ``numpy.ndarray`` before anything else of it
  is read (exact type: subclasses take the general path), and its dtype object with the
  expected builtin dtype (by identity);
* shapes, C-contiguity, alignment and (for weights) writeability are checked per array,
  and a gradient whose memory overlaps its weight's is refused;
* the list is the caller's own copy, so it cannot change during the call, and it holds
  every array alive.

Any array that fails a check stops the call before anything is written and is reported
back: the general path then gives the precise error (or accepts the array, e.g. a
non-contiguous gradient, which it copies).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic
from numba.np.unsafe.ndarray import to_fixed_tuple

from mxopt.kernels import threads
from mxopt.kernels.cpu import (
    _INFINITY_32,
    _INFINITY_64,
    _JIT_OPTIONS,
    _MAGNITUDE_32,
    _MAGNITUDE_64,
    _code_digest,
    _count_nonfinite,
    _count_nonfinite_compiled,
    _element_adapter,
    _specialised,
    parallel_min_size,
)
from mxopt.kernels.kernel import Kernel, largest_magnitude_bits, largest_magnitude_bits_of_four

__all__ = ["AVAILABLE", "array_data", "check_headers", "count_nonfinite", "run"]

# Byte offsets in a NumPy array object (PyArrayObject_fields) and in a Python list
# (PyListObject: its size, then its array of item pointers), checked by _layout_holds().
_TYPE, _DATA, _NDIM, _DIMS, _DESCR, _FLAGS = 8, 16, 24, 32, 56, 64
_LIST_SIZE, _LIST_ITEMS = 16, 24
_C_CONTIGUOUS, _ALIGNED, _WRITEABLE = 0x0001, 0x0100, 0x0400
READ_FLAGS = _C_CONTIGUOUS | _ALIGNED
WRITE_FLAGS = READ_FLAGS | _WRITEABLE


@intrinsic
def _load_int64(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.load(builder.inttoptr(args[0], ir.IntType(64).as_pointer()))

    return types.int64(types.int64), codegen


@intrinsic
def _load_int32(typingctx, address):
    def codegen(context, builder, signature, args):
        value = builder.load(builder.inttoptr(args[0], ir.IntType(32).as_pointer()))
        return builder.sext(value, ir.IntType(64))

    return types.int64(types.int64), codegen


def _pointer_to(numba_type):
    """An intrinsic turning an address into a typed pointer (for ``numba.carray``)."""

    @intrinsic
    def pointer(typingctx, address):
        result = types.CPointer(numba_type)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(result))

        return result(types.int64), codegen

    return pointer


_float32_pointer = _pointer_to(types.float32)
_float64_pointer = _pointer_to(types.float64)
_POINTERS = {np.dtype(np.float32): _float32_pointer, np.dtype(np.float64): _float64_pointer}
#: For the read pass on bit patterns: their pointer, magnitude mask and pattern of infinity.
_BIT_PATTERNS = {
    np.dtype(np.float32): (_pointer_to(types.int32), _MAGNITUDE_32, _INFINITY_32),
    np.dtype(np.float64): (_pointer_to(types.int64), _MAGNITUDE_64, _INFINITY_64),
}


@numba.njit(**_JIT_OPTIONS)
def array_data(address, type_address, descr_address, flags, ndim, dims_address):
    """The data pointer of the object at ``address`` when it is an exact ndarray (type
    object at ``type_address``) of the dtype object at ``descr_address``, with every bit
    of ``flags``, ``ndim`` dimensions and the ``ndim`` int64 extents at ``dims_address``;
    else 0. Nothing of the object is read before its type is known to be ndarray."""
    if _load_int64(address + _TYPE) != type_address:
        return 0
    if _load_int64(address + _DESCR) != descr_address:
        return 0
    if _load_int32(address + _FLAGS) & flags != flags:
        return 0
    if _load_int32(address + _NDIM) != ndim:
        return 0
    dims = _load_int64(address + _DIMS)
    for axis in range(ndim):
        if _load_int64(dims + 8 * axis) != _load_int64(dims_address + 8 * axis):
            return 0
    return _load_int64(address + _DATA)


@numba.njit(**_JIT_OPTIONS)
def _headers(list_address, type_address, descr_address, flags, shapes, shape_starts, sizes,
             itemsize, data, weights_data):  # fmt: skip
    """Check the arrays of the list at ``list_address`` and write their data pointers to
    ``data``.

    Array ``k`` must be an exact ndarray of the dtype at ``descr_address``, shaped
    ``shapes[shape_starts[k]:shape_starts[k + 1]]``, with every bit of ``flags``; when
    ``weights_data`` is not empty, its memory must not overlap ``weights_data[k]``'s.
    Returns -1 when all hold, else the first ``k`` that fails (nothing of it trusted).
    """
    count = data.shape[0]
    if _load_int64(list_address + _LIST_SIZE) != count:
        return 0
    items = _load_int64(list_address + _LIST_ITEMS)
    dims_at = shapes.ctypes.data
    for k in range(count):
        first = shape_starts[k]
        pointer = array_data(_load_int64(items + 8 * k), type_address, descr_address, flags,
                             shape_starts[k + 1] - first, dims_at + 8 * first)  # fmt: skip
        if pointer == 0:
            return k
        if weights_data.shape[0]:
            nbytes = sizes[k] * itemsize
            other = weights_data[k]
            if pointer < other + nbytes and other < pointer + nbytes and nbytes > 0:
                return k
        data[k] = pointer
    return -1


_POINTER = None  # placeholder: the dtype's pointer intrinsic
_COUNT_NONFINITE = None  # placeholder: mxopt.kernels.cpu's count of one array
_ELEMENT = None  # placeholder: the kernel's element adapter
_NSCALARS = 0  # placeholder: the kernel's number of scalars
_STATE_VIEWS = None  # placeholder: (state_data, k, size) -> tuple of the state arrays
_BITS = None  # placeholder: the pointer to the dtype's bit patterns
_MAGNITUDE = _INFINITY = 0  # placeholders: the dtype's magnitude mask, infinity's pattern


def _count_list(data, sizes, first, last):
    """The number of NaN and infinite values in arrays ``first..last-1``.

    The read pass (on the values' bit patterns, as the single-array one) takes four arrays
    at once, one from each quarter of the range: four streams through memory, as the
    single-array pass reads the four quarters of an array, where reading each array's own
    quarters makes four short streams per array (1000 arrays of 1024 float32 not in cache,
    one thread: 0.45 against 0.80 ms). Only when it finds a value that is not finite are
    they counted, array by array.
    """
    quarter = (last - first) // 4
    largest = _MAGNITUDE & 0
    for k in range(first, first + quarter):
        a = numba.carray(_BITS(data[k]), sizes[k])
        b = numba.carray(_BITS(data[k + quarter]), sizes[k + quarter])
        c = numba.carray(_BITS(data[k + 2 * quarter]), sizes[k + 2 * quarter])
        d = numba.carray(_BITS(data[k + 3 * quarter]), sizes[k + 3 * quarter])
        n = min(min(a.size, b.size), min(c.size, d.size))
        largest = largest_magnitude_bits_of_four(a, b, c, d, n, _MAGNITUDE, largest)
        for rest in (a[n:], b[n:], c[n:], d[n:]):  # what the shortest lacks
            largest = max(largest, largest_magnitude_bits(rest, _MAGNITUDE))
    for k in range(first + 4 * quarter, last):
        bits = numba.carray(_BITS(data[k]), sizes[k])
        largest = max(largest, largest_magnitude_bits(bits, _MAGNITUDE))
    if largest < _INFINITY:
        return 0
    bad = 0
    for k in range(first, last):
        g = numba.carray(_POINTER(data[k]), sizes[k])
        bad += _COUNT_NONFINITE(g, 0, g.size)
    return bad


def _apply_list(w_data, g_data, state_data, sizes, table, rows, first, last):
    """The kernel's element over every element of arrays ``first..last-1``, array ``k``
    with the scalars ``table[rows[k]]`` (the loop of the single-array path)."""
    for k in range(first, last):
        size = sizes[k]
        w = numba.carray(_POINTER(w_data[k]), size)
        g = numba.carray(_POINTER(g_data[k]), size)
        state = _STATE_VIEWS(state_data, k, size)
        s = to_fixed_tuple(table[rows[k]], _NSCALARS)
        for i in range(size):
            _ELEMENT(i, w, g, state, s)
    return 0


def _state_views(n_state: int, pointer):
    """``views(state_data, k, size)``: the tuple of array ``k``'s state arrays."""
    items = "".join(f"numba.carray(pointer(state_data[k, {j}]), size), " for j in range(n_state))
    source = f"def views(state_data, k, size):\n    return ({items})\n"
    namespace = {"numba": numba, "pointer": pointer}
    exec(compile(source, f"<mxopt state views {n_state}>", "exec"), namespace)
    return numba.njit(namespace["views"])


_lock = threading.RLock()
_compiled: dict = {}


def _counter(dtype: np.dtype):
    key = ("count", dtype)
    if key not in _compiled:
        with _lock:
            if key not in _compiled:
                # the helpers in kernel.py and cpu.py: Numba checks a cached loop
                # against its own file only
                digest = _code_digest(_count_list, _code_digest(_count_nonfinite))
                name = f"mxopt_count_list_{dtype.name}_{digest.hexdigest()[:12]}"
                bits, magnitude, infinity = _BIT_PATTERNS[dtype]
                _compiled[key] = _specialised(
                    _count_list,
                    name,
                    _POINTER=_POINTERS[dtype],
                    _BITS=bits,
                    _MAGNITUDE=magnitude,
                    _INFINITY=infinity,
                    _COUNT_NONFINITE=_count_nonfinite_compiled,
                )
    return _compiled[key]


def _applier(kernel: Kernel, dtype: np.dtype):
    key = (kernel, dtype)
    if key not in _compiled:
        with _lock:
            if key not in _compiled:
                digest = _code_digest(kernel.cpu).hexdigest()[:12]
                pointer = _POINTERS[dtype]
                _compiled[key] = _specialised(
                    _apply_list,
                    f"mxopt_{kernel.name}_list_{dtype.name}_{digest}",
                    _POINTER=pointer,
                    _ELEMENT=_element_adapter(kernel),
                    _NSCALARS=len(kernel.scalars),
                    _STATE_VIEWS=_state_views(len(kernel.state), pointer),
                )
    return _compiled[key]


_EMPTY = np.empty(0, np.int64)


def check_headers(arrays, dtype: np.dtype, shapes, shape_starts, sizes, *, writeable: bool,
                  apart_from=_EMPTY):  # fmt: skip
    """``(data, bad)``: the data pointers of ``arrays`` (a list of NumPy arrays that only
    the caller holds, so it cannot change during the call), and -1, or the position of
    the first array that is not an exact, C-contiguous, aligned (and ``writeable``)
    ndarray of ``dtype`` and its expected shape, or whose memory overlaps
    ``apart_from[k]``'s array of the same size."""
    if type(arrays) is not list:
        raise TypeError(f"check_headers: expected a list, got {type(arrays).__name__}")
    data = np.empty(len(arrays), np.int64)
    flags = WRITE_FLAGS if writeable else READ_FLAGS
    bad = _headers(id(arrays), id(np.ndarray), id(dtype), flags, shapes, shape_starts, sizes,
                   dtype.itemsize, data, apart_from)  # fmt: skip
    return data, int(bad)


def _groups(sizes, pool) -> list:
    """``[(first, last)]``: consecutive arrays in about equal shares of the elements."""
    total = int(sizes.sum())
    share = -(-total // (4 * pool.threads))
    bounds, acc, first = [], 0, 0
    for k, size in enumerate(sizes.tolist()):
        acc += size
        if acc >= share:
            bounds.append((first, k + 1))
            first, acc = k + 1, 0
    if first < len(sizes):
        bounds.append((first, len(sizes)))
    return bounds


#: Pieces of a long array that the threads share start at multiples of this many elements.
PIECE_ALIGN = 4096


def _pool_for(sizes):
    """mxopt's thread pool when the arrays are worth sharing out, else None."""
    total = int(sizes.sum())
    if total < parallel_min_size() or total == 0:
        return None
    pool = threads.pool()
    return pool if pool.parallel else None


def _cut(pool, sizes):
    """``(source, start, piece_sizes)``: the arrays as pieces of at most a share of the
    elements (the threads' work comes in about ``4 * threads`` shares, so one long array
    is no longer one thread's work), piece ``p`` being elements ``start[p]:start[p] +
    piece_sizes[p]`` of array ``source[p]``; None when no array is longer than a share.
    Elementwise work on a piece is the work on that slice: the same bits."""
    share = -(-int(sizes.sum()) // (4 * pool.threads))
    share = -(-share // PIECE_ALIGN) * PIECE_ALIGN
    if int(sizes.max()) <= share:
        return None
    counts = np.maximum(1, -(-sizes // share))
    source = np.repeat(np.arange(sizes.size), counts)
    first_piece = np.cumsum(counts) - counts
    start = (np.arange(source.size) - first_piece[source]) * share
    return source, start, np.minimum(sizes[source] - start, share)


def count_nonfinite(dtype: np.dtype, g_data, sizes) -> int:
    """The number of NaN and infinite values in the arrays at ``g_data`` (checked)."""
    counter = _counter(dtype)
    pool = _pool_for(sizes)
    if pool is None:
        return int(counter(g_data, sizes, 0, len(sizes)))
    cut = _cut(pool, sizes)
    if cut is not None:
        source, start, sizes = cut
        g_data = g_data[source] + start * dtype.itemsize
    groups = _groups(sizes, pool)
    counts = [0] * len(groups)

    def count(j):
        counts[j] = counter(g_data, sizes, *groups[j])

    pool.run(count, len(groups))
    return int(sum(counts))


def run(kernel: Kernel, dtype: np.dtype, w_data, g_data, state_data, sizes, table, rows):
    """The elementwise ``kernel`` over every array (pointers checked by
    :func:`check_headers`; ``state_data[k, j]`` the data of array ``k``'s ``j``-th state
    array, ``table`` the scalar rows in ``dtype``, ``rows[k]`` array ``k``'s row)."""
    applier = _applier(kernel, dtype)
    pool = _pool_for(sizes)
    if pool is None:
        applier(w_data, g_data, state_data, sizes, table, rows, 0, len(sizes))
        return
    cut = _cut(pool, sizes)
    if cut is not None:  # the pieces' data pointers; each piece keeps its array's scalars
        source, start, sizes = cut
        offset = start * dtype.itemsize
        w_data, g_data = w_data[source] + offset, g_data[source] + offset
        state_data, rows = state_data[source] + offset[:, None], rows[source]
    groups = _groups(sizes, pool)
    pool.run(lambda j: applier(w_data, g_data, state_data, sizes, table, rows, *groups[j]),
             len(groups))  # fmt: skip


@numba.njit(cache=True)
def _read_int64(address):
    return _load_int64(address)


@numba.njit(cache=True)
def _read_int32(address):
    return _load_int32(address)


def _layout_holds() -> bool:
    """Whether this NumPy's array objects have the header layout read above."""
    try:
        samples = [np.zeros((3, 4), np.float32), np.zeros(5, np.float64)[::2],
                   np.zeros(7, np.float32)]  # fmt: skip
        samples[2].flags.writeable = False
        for array in samples:
            address = id(array)
            dims = int(_read_int64(address + _DIMS))
            flags = (
                (_C_CONTIGUOUS if array.flags.c_contiguous else 0)
                | (_ALIGNED if array.flags.aligned else 0)
                | (_WRITEABLE if array.flags.writeable else 0)
            )
            if (
                _read_int64(address + _TYPE) != id(np.ndarray)
                or _read_int64(address + _DESCR) != id(array.dtype)
                or _read_int64(address + _DATA) != array.ctypes.data
                or _read_int32(address + _NDIM) != array.ndim
                or [_read_int64(dims + 8 * a) for a in range(array.ndim)] != list(array.shape)
                or _read_int32(address + _FLAGS) & WRITE_FLAGS != flags
            ):
                return False
        items = _read_int64(id(samples) + _LIST_ITEMS)
        if _read_int64(id(samples) + _LIST_SIZE) != len(samples) or [
            _read_int64(items + 8 * k) for k in range(len(samples))
        ] != [id(array) for array in samples]:
            return False
        # Builtin dtypes are singletons: an array's dtype object is the one compared with.
        return all(np.empty(1, dtype).dtype is dtype for dtype in _POINTERS)
    except Exception:  # noqa: BLE001 - any surprise turns the fast path off
        return False


#: Whether the compiled list path can be used with this NumPy (checked at import).
AVAILABLE = _layout_holds()

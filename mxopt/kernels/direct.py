"""One compiled call for ``updater(index, grad, weight)``, checks included.

On a 16-element weight the step's arithmetic takes nanoseconds; what costs is the
Python around it: checking the two arrays (type, shape, dtype, flags, overlap: about
a dozen attribute reads, one of them allocating a flags object) and handing four or
five arrays to compiled code, which unboxes each. Here the compiled call takes the
*addresses* of the weight and gradient objects and of a small table the weight's plan
keeps (what the arrays must be, and where its state arrays are), reads both headers
itself with :func:`mxopt.kernels.lists.array_data` (layouts checked at import, the
type pointer compared before anything else is read, builtin dtypes by identity), and
runs the kernel's element with exactly the loop of the single-array path: the same
bits.

The table (int64): ``[ndarray type, dtype object, ndim, size, dim 0..3, state data
pointers...]``. The plan holds the state arrays alive; the caller holds the weight and
gradient during the call. A header that differs from the table returns ``-1`` before
anything is written, and the caller takes the general path (which then gives the precise
error, or accepts the array, e.g. a strided gradient it copies).
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np

from mxopt.kernels import lists
from mxopt.kernels.cpu import (
    _count_nonfinite_compiled,
    _element_adapter,
    _specialised,
    checked_loop_digest,
)
from mxopt.kernels.kernel import Kernel
from mxopt.kernels.lists import _POINTERS, READ_FLAGS, WRITE_FLAGS, _pointer_to, array_data

__all__ = ["AVAILABLE", "MAX_NDIM", "MAX_SIZE", "entry", "table"]

#: Whether direct calls can be used with this NumPy (the list path's layout check).
AVAILABLE = lists.AVAILABLE
#: Weights of this many elements or more take the ordinary plan: a direct call keeps the
#: GIL (releasing and taking it back costs about 0.1 microsecond, a tenth of a small
#: step), which other Python threads should not wait on for long (2**16 Adam elements:
#: about 50 microseconds).
MAX_SIZE = 1 << 16
#: Weights of more dimensions take the ordinary plan.
MAX_NDIM = 4
_DIMS_AT = 4  # where the weight's extents start in the table
_STATE_AT = _DIMS_AT + MAX_NDIM  # where the state pointers start
_int64_pointer = _pointer_to(numba.types.int64)

_POINTER = None  # placeholder: the dtype's pointer intrinsic
_ELEMENT = None  # placeholder: the kernel's element adapter
_STATE_VIEWS = None  # placeholder: (table, size) -> tuple of the state arrays
_COUNT = 0  # placeholder: the table's length
_COUNT_NONFINITE = None  # placeholder: mxopt.kernels.cpu's count of one array


def _apply_one(w_address, g_address, table_address, s, check):
    """The single-array loop (:func:`mxopt.kernels.cpu._elementwise`) on the arrays at
    ``w_address`` and ``g_address``; ``-1`` when either is not what the table says or
    their memory overlaps (nothing written), else the count of non-finite gradient
    values (nothing written when not 0) or 0 after the update."""
    table = numba.carray(_int64_pointer(table_address), _COUNT)
    size = table[3]
    dims_address = table_address + 8 * _DIMS_AT
    w_data = array_data(w_address, table[0], table[1], WRITE_FLAGS, table[2], dims_address)
    g_data = array_data(g_address, table[0], table[1], READ_FLAGS, table[2], dims_address)
    if w_data == 0 or g_data == 0:
        return -1
    w = numba.carray(_POINTER(w_data), size)
    g = numba.carray(_POINTER(g_data), size)
    nbytes = size * w.itemsize
    if g_data < w_data + nbytes and w_data < g_data + nbytes:
        return -1
    if check:
        bad = _COUNT_NONFINITE(g, 0, size)
        if bad:
            return bad
    state = _STATE_VIEWS(table, size)
    for i in range(size):
        _ELEMENT(i, w, g, state, s)
    return 0


def _state_views(n_state: int, pointer):
    """``views(table, size)``: the tuple of the weight's state arrays."""
    items = "".join(f"numba.carray(pointer(table[{_STATE_AT + j}]), size), "
                    for j in range(n_state))  # fmt: skip
    source = f"def views(table, size):\n    return ({items})\n"
    namespace = {"numba": numba, "pointer": pointer}
    exec(compile(source, f"<mxopt direct state views {n_state}>", "exec"), namespace)
    return numba.njit(namespace["views"])


_lock = threading.Lock()
_entries: dict = {}


def entry(kernel: Kernel, dtype: np.dtype):
    """``f(id(weight), id(grad), table address, scalars, check) -> int`` for an
    elementwise ``kernel`` and float32/float64 arrays (compiled on first use)."""
    key = (kernel, np.dtype(dtype))
    found = _entries.get(key)
    if found is None:
        with _lock:
            found = _entries.get(key)
            if found is None:
                found = _entries[key] = _compile(kernel, key[1])
    return found


def _compile(kernel: Kernel, dtype: np.dtype):
    pointer = _POINTERS[dtype]
    digest = checked_loop_digest(kernel)
    dispatcher = _specialised(
        _apply_one,
        f"mxopt_{kernel.name}_direct_{dtype.name}_{digest}",
        _POINTER=pointer,
        _ELEMENT=_element_adapter(kernel),
        _STATE_VIEWS=_state_views(len(kernel.state), pointer),
        _COUNT=_STATE_AT + len(kernel.state),
        _COUNT_NONFINITE=_count_nonfinite_compiled,
        nogil=False,
    )
    scalar = numba.from_dtype(dtype)
    n_scalars = len(kernel.scalars)
    scalars = numba.types.UniTuple(scalar, n_scalars) if n_scalars else numba.types.Tuple(())
    int64 = numba.types.int64
    signature = (int64, int64, int64, scalars, numba.types.boolean)
    dispatcher.compile(signature)
    return dispatcher.overloads[signature].entry_point


def table(shape: tuple, dtype: np.dtype, arrays: tuple) -> np.ndarray | None:
    """The table a direct call reads for a weight of ``shape`` and ``dtype`` with state
    ``arrays`` (kept alive by the caller), or ``None`` when direct calls cannot serve it."""
    canonical = [known for known in _POINTERS if known == dtype]
    if not AVAILABLE or not canonical or len(shape) > MAX_NDIM or math.prod(shape) >= MAX_SIZE:
        return None
    dtype = canonical[0]  # the builtin dtype object arrays of it point to
    if any(type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous
           for a in arrays):  # fmt: skip
        return None
    size = math.prod(shape)
    dims = list(shape) + [0] * (MAX_NDIM - len(shape))
    pointers = [a.ctypes.data for a in arrays]
    return np.array([id(np.ndarray), id(dtype), len(shape), size, *dims, *pointers], np.int64)

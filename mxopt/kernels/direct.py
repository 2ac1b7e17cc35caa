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

The step's scalars come by address too: a float64 array of the kernel's scalars followed
by the optimizer's step inputs (handing a tuple of a dozen floats over costs about a
quarter of a small step). When every call is a new update of its weight (one weight per
step), the scalars that change with the update count (ADAM's bias corrections) are
computed in the call: the array holds an earlier step's scalars, ``at`` is the step (0
when the array's scalars are the step's), and the call computes the changed ones with the
optimizer's compiled :meth:`~mxopt.optimizers.base.AbstractOptimizer.step_formula` (float64
arithmetic and libm's ``pow``, as in Python: the same bits; each scalar is then rounded to
the kernel's dtype, as when a Python float is handed over).

The table (int64): ``[ndarray type, dtype object, ndim, size, dim 0..3, state data
pointers...]``. The plan holds the state arrays alive; the caller holds the weight and
gradient during the call. A header that differs from the table returns ``-1`` before
anything is written, and the caller takes the general path (which then gives the precise
error, or accepts the array, e.g. a strided gradient it copies).
"""

from __future__ import annotations

import array
import hashlib
import math
import threading
import types
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np

from mxopt.kernels import lists
from mxopt.kernels.cpu import (
    _code_digest,
    _count_nonfinite_compiled,
    _element_adapter,
    _specialised,
    checked_loop_digest,
)
from mxopt.kernels.kernel import Kernel
from mxopt.kernels.lists import _POINTERS, READ_FLAGS, WRITE_FLAGS, _pointer_to, array_data

__all__ = ["AVAILABLE", "MAX_NDIM", "MAX_SIZE", "NO_STEP_SCALARS", "StepScalars", "entry",
           "scalar_array", "table"]  # fmt: skip

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
_SCALARS = None  # placeholder: (scalars address, at) -> the kernel's scalars at step ``at``


class StepScalars(NamedTuple):
    """How a direct call computes the scalars of a new step: ``formula(inputs, step)``
    gives the values of the scalars at ``positions`` from ``n_inputs`` floats."""

    formula: Callable | None
    positions: tuple[int, ...]
    n_inputs: int


#: For kernels whose scalars the caller always gives for the step (``at`` is 0).
NO_STEP_SCALARS = StepScalars(None, (), 0)


def _apply_one(w_address, g_address, table_address, scalars_address, check, at):
    """The single-array loop (:func:`mxopt.kernels.cpu._elementwise`) on the arrays at
    ``w_address`` and ``g_address`` with the scalars of step ``at`` read from
    ``scalars_address``; ``-1`` when either array is not what the table says or their
    memory overlaps (nothing written), else the count of non-finite gradient values
    (nothing written when not 0) or 0 after the update."""
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
    s = _SCALARS(scalars_address, at)
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


def _scalars(kernel: Kernel, dtype: np.dtype, step: StepScalars, digest: str):
    """``scalars(address, at)``: the kernel's scalars in its dtype from the float64 array
    at ``address`` (:func:`scalar_array`), those at ``step.positions`` replaced by
    ``step.formula(inputs, at)`` when ``at`` is not 0."""
    name = f"mxopt_direct_scalars_{digest}"  # unique: see mxopt.kernels.cpu.adapter_name
    n_scalars = len(kernel.scalars)
    stored = [f"cast(array[{k}]), " for k in range(n_scalars)]
    source = (
        f"def {name}(address, at):\n"
        f"    array = numba.carray(pointer(address), {n_scalars + step.n_inputs})\n"
    )
    namespace = {"numba": numba, "pointer": _POINTERS[np.dtype(np.float64)],
                 "cast": numba.from_dtype(dtype)}  # fmt: skip
    if step.positions:
        inputs = "".join(f"array[{n_scalars + k}], " for k in range(step.n_inputs))
        computed = [f"cast(values[{step.positions.index(k)}]), " if k in step.positions
                    else stored[k] for k in range(n_scalars)]  # fmt: skip
        source += (f"    if at != 0:\n        values = formula(({inputs}), at)\n"
                   f"        return ({''.join(computed)})\n")  # fmt: skip
        formula = step.formula
        copy = types.FunctionType(formula.__code__, dict(formula.__globals__),
                                  f"mxopt_step_formula_{digest}")  # fmt: skip
        namespace["formula"] = numba.njit(copy)
    source += f"    return ({''.join(stored)})\n"
    exec(compile(source, f"<mxopt direct scalars {kernel.name}>", "exec"), namespace)
    return numba.njit(namespace[name])


def scalar_array(scalars: tuple, inputs: tuple) -> tuple[array.array, int]:
    """What a direct call reads the step's scalars from: the kernel's ``scalars``, then
    the step ``inputs``, as float64 (a standard-library array: made in a third of the
    time of a NumPy one and its address), and its address."""
    values = array.array("d", (*scalars, *inputs))
    return values, values.buffer_info()[0]


_lock = threading.Lock()
_entries: dict = {}


def entry(kernel: Kernel, dtype: np.dtype, step: StepScalars = NO_STEP_SCALARS):
    """``f(id(weight), id(grad), table address, scalar array address, check, at) -> int``
    for an elementwise ``kernel`` and float32/float64 arrays (compiled on first use),
    computing new steps' scalars with ``step`` (the array: :func:`scalar_array` of the
    kernel's scalars and ``step.n_inputs`` inputs)."""
    key = (kernel, np.dtype(dtype), step)
    found = _entries.get(key)
    if found is None:
        with _lock:
            found = _entries.get(key)
            if found is None:
                found = _entries[key] = _compile(kernel, key[1], step)
    return found


def _compile(kernel: Kernel, dtype: np.dtype, step: StepScalars):
    pointer = _POINTERS[dtype]
    digest = hashlib.sha1(checked_loop_digest(kernel).encode())
    if step.formula is not None:  # the cached loop inlines it: its code is in the name
        _code_digest(step.formula, digest).update(repr(step[1:]).encode())
    digest = digest.hexdigest()[:12]
    dispatcher = _specialised(
        _apply_one,
        f"mxopt_{kernel.name}_direct_{dtype.name}_{digest}",
        _POINTER=pointer,
        _ELEMENT=_element_adapter(kernel),
        _STATE_VIEWS=_state_views(len(kernel.state), pointer),
        _COUNT=_STATE_AT + len(kernel.state),
        _COUNT_NONFINITE=_count_nonfinite_compiled,
        _SCALARS=_scalars(kernel, dtype, step, f"{kernel.name}_{dtype.name}_{digest}"),
        nogil=False,
    )
    int64 = numba.types.int64
    signature = (int64, int64, int64, int64, numba.types.boolean, int64)
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

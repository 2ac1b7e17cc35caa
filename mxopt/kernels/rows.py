"""Row-sparse gradients: :class:`RowSparse`, checked and coalesced for the row kernels.

An embedding's gradient is zero outside the rows its mini-batch looked up. A
``RowSparse(rows, values)`` gradient carries only those rows: ``values[k]`` is the
gradient of row ``rows[k]`` of the weight (its first axis). Before an update,
:func:`coalesce` checks it against the weight and turns it into what the row kernels
read (:class:`CoalescedRows`): distinct int64 row numbers and one flat row of values
for each, duplicate rows summed (as ``torch.Tensor.coalesce``). The caller's arrays are
only read; the sums go to a new array the size of the distinct rows.

Duplicates are summed in the order they appear in ``rows``, starting from the first
value (no ``0 +``), by the same loop on both backends, so a GPU step gives the CPU's
bits. The row numbers are read on the host (a copy of ``rows`` from the GPU, a few
kilobytes), to check them and to find duplicates.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.checks import shown
from mxopt.kernels import backends
from mxopt.kernels.kernel import DTYPES

__all__ = ["CoalescedRows", "RowSparse", "coalesce", "densify"]


class RowSparse:
    """A gradient that is zero outside some rows of the weight (an embedding's).

    ``RowSparse(rows, values)``: ``rows`` is a 1-D integer array (NumPy or CuPy) of row
    numbers of the weight (its first axis), ``values`` the gradient of those rows, of
    shape ``(len(rows), *weight.shape[1:])`` and the weight's dtype, on the weight's
    backend and device. A row may appear more than once: its values are summed first.

    Pass it as the gradient: ``updater(index, mxopt.RowSparse(rows, values), weight)``
    (or in :meth:`~mxopt.Updater.update_many`'s list). With ``lazy_update=True`` (SGD,
    ADAM, AdamW, AdaGrad) or :class:`~mxopt.SparseAdam`, only those rows of the weight
    and of its state arrays are read and written; otherwise the gradient is scattered
    into a dense one (zeros elsewhere) and the usual update runs. Packed buffers
    (``update_buffer``) and ``ShardedUpdater`` do not take them.

    The arrays are checked here on their own (types, dtypes, shapes, backends) and
    against the weight at each update (shape, dtype, device, rows in range); they are
    never modified. Non-finite values are handled as in dense gradients (the updater's
    ``nonfinite`` policy).
    """

    __slots__ = ("rows", "values")

    def __init__(self, rows, values):
        backend = backends.backend_of(rows)
        if backend is None:
            raise TypeError(
                f"RowSparse: rows must be a 1-D integer numpy.ndarray or cupy.ndarray, got "
                f"{type(rows).__module__}.{type(rows).__qualname__}"
            )
        if rows.dtype.kind not in "iu":
            raise TypeError(f"RowSparse: rows must hold integers, got dtype {rows.dtype}")
        if rows.ndim != 1:
            raise ValueError(f"RowSparse: rows must be 1-D, got shape {rows.shape}")
        values_backend = backends.backend_of(values)
        if values_backend is None:
            raise TypeError(
                f"RowSparse: values must be a numpy.ndarray or cupy.ndarray, got "
                f"{type(values).__module__}.{type(values).__qualname__}"
            )
        if values_backend != backend:
            raise TypeError(
                f"RowSparse: rows is a {backend} array but values is a {values_backend} "
                f"array; both must be on the weight's backend"
            )
        if isinstance(values, np.ma.MaskedArray) or isinstance(rows, np.ma.MaskedArray):
            raise TypeError("RowSparse: masked arrays are not accepted (pass .filled(0))")
        if values.dtype not in DTYPES:
            raise TypeError(
                f"RowSparse: values dtype {values.dtype} is not supported; expected "
                f"{' or '.join(str(d) for d in DTYPES)} (the weight's)"
            )
        if values.ndim < 1 or values.shape[0] != rows.shape[0]:
            raise ValueError(
                f"RowSparse: values must have one row per entry of rows: shape "
                f"({rows.shape[0]}, *weight.shape[1:]), got {values.shape}"
            )
        if backend == backends.CUPY and rows.device.id != values.device.id:
            raise ValueError(
                f"RowSparse: rows is on GPU {rows.device.id} but values is on GPU "
                f"{values.device.id}"
            )
        self.rows = rows
        self.values = values

    @property
    def dtype(self):
        """The values' dtype."""
        return self.values.dtype

    def __repr__(self) -> str:
        return f"RowSparse({len(self.rows)} rows, values {self.values.shape} {self.values.dtype})"


class CoalescedRows:
    """What a row kernel reads besides the flat values: distinct int64 row numbers (on the
    weight's backend) and the number of elements in a row."""

    __slots__ = ("rows", "row_size")

    def __init__(self, rows, row_size: int):
        self.rows = rows
        self.row_size = row_size


def coalesce(index, grad: RowSparse, weight, backend_module):
    """``(values, rows)``: ``grad`` checked against ``weight`` (already checked against its
    state), as flat values (C-contiguous, one row per distinct row number, duplicates
    summed) and :class:`CoalescedRows`. Errors name ``index``; nothing is modified."""
    rows, values = grad.rows, grad.values
    backend = backends.backend_of(weight)
    if backends.backend_of(values) != backend:
        raise TypeError(
            f"index {shown(index)}: weight is a {backend} array but the RowSparse gradient is "
            f"on {backends.backend_of(values)}; both must be on the same backend"
        )
    if backend == backends.CUPY and values.device.id != weight.device.id:
        raise ValueError(
            f"index {shown(index)}: the RowSparse gradient is on GPU {values.device.id} but "
            f"weight is on GPU {weight.device.id}"
        )
    if weight.ndim < 1:
        raise ValueError(
            f"index {shown(index)}: a RowSparse gradient needs a weight with rows (at least "
            f"one dimension), got a 0-d weight"
        )
    if values.dtype != weight.dtype:
        raise TypeError(
            f"index {shown(index)}: RowSparse values dtype {values.dtype} does not match "
            f"weight dtype {weight.dtype}"
        )
    if values.shape[1:] != weight.shape[1:]:
        raise ValueError(
            f"index {shown(index)}: RowSparse values of shape {values.shape} do not fit weight "
            f"shape {weight.shape}: expected ({len(rows)}, *{weight.shape[1:]})"
        )
    if backends.overlap(backends.memory_interval(values), backends.memory_interval(weight)):
        raise ValueError(
            f"index {shown(index)}: the RowSparse values overlap the memory of weight; pass a copy"
        )
    row_size = 1
    for extent in weight.shape[1:]:
        row_size *= extent
    host = backends.to_host(rows)
    count = weight.shape[0]
    order = np.argsort(host, kind="stable")
    ordered = host[order]
    if host.size and (ordered[0] < 0 or ordered[-1] >= count):
        bad = ordered[0] if ordered[0] < 0 else ordered[-1]
        position = int(np.flatnonzero(host == bad)[0])
        raise IndexError(
            f"index {shown(index)}: RowSparse row {int(bad)} (rows[{position}]) is out of range "
            f"for a weight of {count} rows (shape {weight.shape})"
        )
    if not values.flags.c_contiguous or (backend == backends.NUMPY and not values.flags.aligned):
        xp = np if backend == backends.NUMPY else __import__("cupy")
        values = xp.ascontiguousarray(values)
    values = backends.plain(values).reshape(-1)
    first = np.ones(host.size, dtype=bool)  # where a run of equal row numbers starts
    first[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(first)
    device = backends.device_of(weight, backend)
    if starts.size == host.size:  # no duplicates: the caller's values, read in place
        if backend == backends.NUMPY:
            device_rows = np.ascontiguousarray(host, dtype=np.int64)
        elif rows.dtype == np.int64 and rows.flags.c_contiguous:
            device_rows = rows
        else:
            device_rows = backends.to_backend(host.astype(np.int64), backend, device)
        return values, CoalescedRows(device_rows, row_size)
    bounds = np.append(starts, host.size).astype(np.int64)
    summed = backend_module.sum_rows(values, order.astype(np.int64), bounds, row_size)
    unique = backends.to_backend(ordered[starts].astype(np.int64), backend, device)
    return summed, CoalescedRows(unique, row_size)


def densify(w, values, rows: CoalescedRows):
    """A new dense flat gradient shaped like the flat weight ``w``: zeros, and ``values``
    in the rows ``rows`` (distinct, so each element is written once)."""
    if backends.backend_of(w) == backends.NUMPY:
        dense = np.zeros(w.size, dtype=w.dtype)
        if rows.row_size:
            dense.reshape(-1, rows.row_size)[rows.rows] = values.reshape(-1, rows.row_size)
        return dense
    import cupy

    with cupy.cuda.Device(w.device.id):
        dense = cupy.zeros(w.size, dtype=w.dtype)
        if rows.row_size:
            dense.reshape(-1, rows.row_size)[rows.rows] = values.reshape(-1, rows.row_size)
        return dense

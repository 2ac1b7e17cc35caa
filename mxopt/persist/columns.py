"""Format 3 of checkpoints: the states of every index as columns.

Format 2 wrote one JSON record per index (15 MB of header for 100,000 indices, and a
Python dict per index to make and to check). Format 3 keeps the small things in the JSON
header and stores the states as a table: ``header["states"]`` is ::

    {"count": n, "indices": null or [<encoded index>, ...], "dtypes": ["float32", ...],
     "memory": [[row, {"name": float, ...}], ...],
     "arrays": [{"name": "mean", "dtype": "float32", "rows": false, "shapes": false}, ...]}

and these archive members hold the columns (one row per index, in order; all int64):

* ``states.index`` when every index is an int (``"indices": null``);
* ``states.step``, ``states.skipped``, ``states.dtype`` (a code into ``"dtypes"``, the
  weight's dtype), ``states.ndim`` and ``states.dims`` (the weight's shape: the number
  of dimensions, then every row's dimensions one after the other);
* for the ``k``-th entry of ``"arrays"``, member ``<name>.<dtype>`` holds the state arrays
  of that name and dtype of every index that has one, concatenated in row order (their
  offsets follow from their sizes); ``states.<k>.rows`` the rows that have one (absent
  when every row has one: ``"rows": false``), and ``states.<k>.ndim`` and
  ``states.<k>.dims`` their shapes (absent when each is shaped like its weight).

``memory`` lists only the rows with per-weight scalars (most have none). Everything is
checked with NumPy over whole columns, so a save or a load costs Python work per index
only where an object per index must be made.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import MutableSequence

import numpy as np

from mxopt.core.checks import shown
from mxopt.kernels import backends
from mxopt.kernels.kernel import DTYPES
from mxopt.kernels.precision import BFLOAT16, bfloat16_dtype
from mxopt.persist.archive import CheckpointError, decode_index, encode_index

__all__ = ["Member", "StateColumns", "StateRecords", "dtype_name", "paused_gc", "read_columns",
           "weight_dtype"]  # fmt: skip

_NAMES = {np.dtype(d): np.dtype(d).name for d in DTYPES}
_TABLE_KEYS = {"count", "indices", "dtypes", "memory", "arrays"}
_ARRAY_KEYS = {"name", "dtype", "rows", "shapes"}
_INT64_MAX = 2**63 - 1


def dtype_name(dtype) -> str:
    # A dict lookup: np.dtype.name costs several microseconds, a lot per 100,000 indices.
    name = _NAMES.get(dtype)
    if name is None:  # bfloat16 state, 8-bit codes, float16 weights: looked up once
        name = _NAMES[dtype] = np.dtype(dtype).name
    return name


_WEIGHT_DTYPES = {name: np.dtype(name) for name in ("float32", "float64", "float16")}


def weight_dtype(name):
    """The weight dtype saved as ``name``, or None (bfloat16 is ml_dtypes')."""
    if name == BFLOAT16:
        return bfloat16_dtype()
    return _WEIGHT_DTYPES.get(name) if isinstance(name, str) else None


@contextlib.contextmanager
def paused_gc():
    """No garbage collection inside: making 100,000 states (none of them garbage) would
    start several full collections, each walking every object (a third of a load)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Member:
    """The state arrays of one name and dtype: ``data`` (1-D, every array concatenated),
    ``rows`` (the rows that have one, or None: every row) and ``shapes`` (or None: each
    shaped like its weight)."""

    __slots__ = ("data", "dtype", "name", "rows", "shapes", "sizes")

    def __init__(self, name, dtype, data, rows, shapes, sizes=None):
        self.name, self.dtype, self.data, self.rows, self.shapes = name, dtype, data, rows, shapes
        self.sizes = sizes

    def views(self, copy: bool = False) -> list:
        """Each row's flat array: slices of ``data`` (of one copy of it with ``copy``)."""
        ends = np.cumsum(self.sizes).tolist()
        data = self.data.copy() if copy else self.data
        return [data[a:b] for a, b in zip([0, *ends], ends, strict=False)]


class StateColumns:
    """The states of a checkpoint, one row per index (see the module)."""

    __slots__ = ("codes", "dtypes", "indices", "members", "memory", "shapes", "skipped", "steps")

    def __init__(self, indices, steps, skipped, memory, shapes, dtypes, codes, members):
        self.indices = indices  # list of indices (decoded)
        self.steps, self.skipped = steps, skipped  # int64 columns
        self.memory = memory  # {row: {name: float}}, rows with any only
        self.shapes = shapes  # list of tuples
        self.dtypes, self.codes = dtypes, codes  # distinct weight dtypes; int64 codes
        self.members = members  # list of Member

    @property
    def count(self) -> int:
        return len(self.indices)

    @classmethod
    def of_states(cls, states: dict) -> StateColumns:
        """The columns of an updater's ``states`` (``{index: WeightState}``), read without
        making a record per index."""
        indices, values = list(states), list(states.values())
        steps = _int_column([s.step for s in values], "step", indices)
        skipped = _int_column([s.skipped for s in values], "skipped", indices)
        memory = {row: dict(s.memory) for row, s in enumerate(values) if s.memory}
        arrays = [
            s.arrays if s.backend == backends.NUMPY else {k: a.get() for k, a in s.arrays.items()}
            for s in values
        ]
        return cls._make(indices, steps, skipped, memory, [s.shape for s in values],
                         [s.dtype for s in values], arrays)  # fmt: skip

    @classmethod
    def of_records(cls, records) -> StateColumns:
        """The columns of per-index records (the layout of ``updater_state_dict``)."""
        records = list(records)
        indices = [decode_index(r["index"]) for r in records]
        steps = _int_column([r["step"] for r in records], "step", indices)
        skipped = _int_column([r["skipped"] for r in records], "skipped", indices)
        memory = {row: dict(r["memory"]) for row, r in enumerate(records) if r["memory"]}
        dtypes = [weight_dtype(r["dtype"]) or r["dtype"] for r in records]
        return cls._make(indices, steps, skipped, memory, [tuple(r["shape"]) for r in records],
                         dtypes, [r["arrays"] for r in records])  # fmt: skip

    @classmethod
    def _make(cls, indices, steps, skipped, memory, shapes, dtypes, arrays) -> StateColumns:
        code_of: dict = {}
        codes = np.array([code_of.setdefault(d, len(code_of)) for d in dtypes], np.int64)
        groups: dict = {}  # (name, dtype) -> (rows, arrays)
        for row, named in enumerate(arrays):
            for name, array in named.items():
                group = groups.get((name, array.dtype))
                if group is None:
                    group = groups[(name, array.dtype)] = ([], [])
                group[0].append(row)
                group[1].append(array)
        members = []
        for (name, dtype), (rows, parts) in groups.items():
            own = [a.shape for a in parts]
            every = len(rows) == len(indices)
            like = own == (shapes if every else [shapes[r] for r in rows])
            data = np.concatenate([a.reshape(-1) for a in parts]) if parts else None
            members.append(Member(name, dtype, data, None if every else rows,
                                  None if like else own))  # fmt: skip
        return cls(indices, steps, skipped, memory, shapes, list(code_of), codes, members)

    # -- writing -----------------------------------------------------------------------

    def table(self) -> tuple[dict, dict]:
        """``(header["states"], members)`` of format 3."""
        members = {"states.step": self.steps, "states.skipped": self.skipped,
                   "states.dtype": self.codes}  # fmt: skip
        if all(type(i) is int and -_INT64_MAX - 1 <= i <= _INT64_MAX for i in self.indices):
            members["states.index"], encoded = np.array(self.indices, np.int64), None
        else:
            encoded = [encode_index(i) for i in self.indices]
        members["states.ndim"], members["states.dims"] = _shape_columns(self.shapes)
        entries = []
        for k, member in enumerate(self.members):
            name = dtype_name(member.dtype)
            data = member.data.view(np.uint16) if name == BFLOAT16 else member.data
            members[f"{member.name}.{name}"] = data  # .npy cannot name bfloat16: its bits
            if member.rows is not None:
                members[f"states.{k}.rows"] = np.array(member.rows, np.int64)
            if member.shapes is not None:
                members[f"states.{k}.ndim"], members[f"states.{k}.dims"] = _shape_columns(
                    member.shapes
                )
            entries.append({"name": member.name, "dtype": name, "rows": member.rows is not None,
                            "shapes": member.shapes is not None})  # fmt: skip
        table = {
            "count": self.count,
            "indices": encoded,
            "dtypes": [dtype_name(d) if isinstance(d, np.dtype) else d for d in self.dtypes],
            "memory": [[row, m] for row, m in self.memory.items()],
            "arrays": entries,
        }
        return table, members

    # -- records -----------------------------------------------------------------------

    def records(self) -> list:
        """One record per index, as :func:`~mxopt.training.checkpoint.updater_state_dict`
        lays them out (the arrays: views of the members)."""
        n = self.count
        arrays: list = [{} for _ in range(n)]
        for member in self.members:
            rows = range(n) if member.rows is None else member.rows
            shapes = self.shapes if member.shapes is None else member.shapes
            for k, (row, view) in enumerate(zip(rows, member.views(), strict=True)):
                arrays[row][member.name] = view.reshape(shapes[row if member.shapes is None else k])
        names = [dtype_name(d) for d in self.dtypes]
        codes = self.codes.tolist()
        return [
            {"index": encode_index(index), "step": step, "skipped": skipped,
             "memory": dict(self.memory.get(row, {})), "shape": list(self.shapes[row]),
             "dtype": names[codes[row]], "arrays": arrays[row]}
            for row, (index, step, skipped) in enumerate(
                zip(self.indices, self.steps.tolist(), self.skipped.tolist(), strict=True))
        ]  # fmt: skip


class StateRecords(MutableSequence):
    """``d["states"]`` of a format-3 file read by ``read_checkpoint``: the per-index records,
    made on first use. Until then :attr:`columns` is the whole truth, and loading or
    writing it goes column by column."""

    def __init__(self, columns: StateColumns):
        self._columns, self._records = columns, None

    @property
    def columns(self) -> StateColumns | None:
        """The columns, or None once a record was made (it may have been changed)."""
        return self._columns if self._records is None else None

    def _list(self) -> list:
        if self._records is None:
            self._records = self._columns.records()
        return self._records

    def __len__(self) -> int:
        return self._columns.count if self._records is None else len(self._records)

    def __getitem__(self, k):
        return self._list()[k]

    def __setitem__(self, k, value):
        self._list()[k] = value

    def __delitem__(self, k):
        del self._list()[k]

    def insert(self, k, value):
        self._list().insert(k, value)

    def __repr__(self) -> str:
        return f"StateRecords({len(self)} indices)"


# -- reading ---------------------------------------------------------------------------


def read_columns(path, table, members: dict) -> StateColumns:
    """The columns of a format-3 file, checked against each other (see the module)."""
    if not isinstance(table, dict) or table.keys() != _TABLE_KEYS:
        keys = sorted(table) if isinstance(table, dict) else shown(table)
        raise CheckpointError(f"{path}: bad 'states' table: keys {keys}, expected "
                              f"{sorted(_TABLE_KEYS)}")  # fmt: skip
    n, entries = table["count"], table["arrays"]
    if type(n) is not int or n < 0:
        raise CheckpointError(f"{path}: bad state count {shown(n)}")
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and e.keys() == _ARRAY_KEYS and isinstance(e["name"], str)
        and isinstance(e["dtype"], str) and type(e["rows"]) is bool
        and type(e["shapes"]) is bool for e in entries
    ):  # fmt: skip
        raise CheckpointError(f"{path}: bad 'arrays' entries in the states table")
    expected = ["states.step", "states.skipped", "states.dtype", "states.ndim", "states.dims"]
    if table["indices"] is None:
        expected.append("states.index")
    for k, e in enumerate(entries):
        expected.append(f"{e['name']}.{e['dtype']}")
        expected.extend([f"states.{k}.rows"] * e["rows"])
        expected.extend([f"states.{k}.ndim", f"states.{k}.dims"] * e["shapes"])
    if len(set(expected)) != len(expected):
        raise CheckpointError(f"{path}: a state array name and dtype is listed twice")
    expected = set(expected)
    missing, unknown = sorted(expected - members.keys()), sorted(members.keys() - expected)
    if missing:
        raise CheckpointError(f"{path}: the states refer to missing arrays {missing}")
    if unknown:
        raise CheckpointError(f"{path}: unexpected members {unknown}")

    indices = _read_indices(path, table["indices"], members, n)
    where = _Where(indices)
    steps = _counts(path, members, "step", n, where)
    skipped = _counts(path, members, "skipped", n, where)
    dtypes = table["dtypes"]
    if not isinstance(dtypes, list) or any(weight_dtype(d) is None for d in dtypes):
        raise CheckpointError(
            f"{path}: weight dtypes {shown(dtypes)}: each must be float32, float64, float16 or "
            f"bfloat16"
        )
    codes = _int64(path, members, "states.dtype", n)
    bad = np.flatnonzero((codes < 0) | (codes >= len(dtypes)))
    if bad.size:
        raise CheckpointError(f"{path}: {where(bad[0])}: bad dtype code {codes[bad[0]]}")
    shapes, sizes = _read_shapes(path, members, "states", n, where)
    memory = _read_memory(path, table["memory"], n, where)
    read = []
    for k, e in enumerate(entries):
        read.append(_read_member(path, members, k, e, n, sizes, where))
    _check_one_per_name(path, read, where)
    return StateColumns(indices, steps, skipped, memory, shapes, [weight_dtype(d) for d in dtypes],
                        codes, read)  # fmt: skip


class _Where:
    """``state <row> (index <repr>)`` in a message, made only when one is written."""

    def __init__(self, indices):
        self.indices = indices

    def __call__(self, row) -> str:
        row = int(row)
        if self.indices is None:
            return f"state {row}"
        return f"state {row} (index {shown(self.indices[row])})"


def _int64(path, members, key, length) -> np.ndarray:
    column = members[key]
    if column.dtype != np.int64 or column.ndim != 1 or (
        length is not None and column.size != length
    ):  # fmt: skip
        raise CheckpointError(
            f"{path}: member {shown(key)} must be {length} int64 values, got "
            f"{column.dtype} of shape {column.shape}"
        )
    return column


def _read_indices(path, encoded, members, n) -> list:
    if encoded is None:
        indices = _int64(path, members, "states.index", n).tolist()
    elif isinstance(encoded, list) and len(encoded) == n:
        indices = [decode_index(e) for e in encoded]  # refuses bad ones (NaN, inf, ...)
    else:
        what = f"{len(encoded)} indices" if isinstance(encoded, list) else shown(encoded)
        raise CheckpointError(f"{path}: the states table lists {what} for {n} states")
    if len(set(indices)) != n:
        seen: set = set()
        twice = next(i for i in indices if i in seen or seen.add(i))
        raise CheckpointError(f"{path}: index {shown(twice)}: saved twice")
    return indices


def _counts(path, members, name, n, where) -> np.ndarray:
    column = _int64(path, members, f"states.{name}", n)
    bad = np.flatnonzero(column < 0)
    if bad.size:  # int64 cannot exceed 2**63 - 1
        raise CheckpointError(
            f"{path}: {where(bad[0])}: {name} must be an integer from 0 to 2**63 - 1, got "
            f"{column[bad[0]]}"
        )
    return column


def _int_column(values: list, name: str, indices) -> np.ndarray:
    """``values`` (Python ints from 0 to 2**63 - 1) as an int64 column."""
    for row, value in enumerate(values):
        if type(value) is not int or not 0 <= value <= _INT64_MAX:
            raise CheckpointError(f"index {shown(indices[row])}: {name} must be an integer "
                                  f"from 0 to 2**63 - 1, got {shown(value)}")  # fmt: skip
    return np.array(values, np.int64) if values else np.zeros(0, np.int64)


def _shape_columns(shapes: list) -> tuple[np.ndarray, np.ndarray]:
    ndim = np.fromiter(map(len, shapes), np.int64, len(shapes))
    dims = np.fromiter((d for s in shapes for d in s), np.int64, int(ndim.sum()))
    return ndim, dims


def _read_shapes(path, members, prefix, n, where, rows=None) -> tuple[list, np.ndarray]:
    """The shapes (tuples) in ``<prefix>.ndim`` and ``<prefix>.dims``, and their sizes."""
    ndim = _int64(path, members, f"{prefix}.ndim", n)
    bad = np.flatnonzero((ndim < 0) | (ndim > 64))
    if bad.size:
        row = bad[0] if rows is None else rows[bad[0]]
        raise CheckpointError(f"{path}: {where(row)}: bad number of dimensions {ndim[bad[0]]}")
    dims = _int64(path, members, f"{prefix}.dims", int(ndim.sum()))
    starts = np.cumsum(ndim) - ndim
    bad = np.flatnonzero(dims < 0)
    if bad.size:
        k = int(np.searchsorted(starts, bad[0], side="right")) - 1  # the row holding it
        row = k if rows is None else rows[k]
        raise CheckpointError(f"{path}: {where(row)}: negative dimension {dims[bad[0]]} in "
                              f"{shown(prefix)}")  # fmt: skip
    shapes: list = [()] * n
    sizes = np.ones(n, np.int64)
    for d in np.unique(ndim).tolist():
        if d == 0:
            continue
        same = np.flatnonzero(ndim == d)
        block = dims[starts[same, None] + np.arange(d)]
        huge = np.flatnonzero(np.prod(block.astype(np.float64), axis=1) >= 2.0**62)
        if huge.size:
            row = same[huge[0]] if rows is None else rows[same[huge[0]]]
            raise CheckpointError(f"{path}: {where(row)}: shape {tuple(block[huge[0]])} is too "
                                  f"large")  # fmt: skip
        sizes[same] = np.prod(block, axis=1)
        tuples = list(map(tuple, block.tolist()))
        if same.size == n:
            shapes = tuples
        else:
            for row, shape in zip(same.tolist(), tuples, strict=True):
                shapes[row] = shape
    return shapes, sizes


def _read_memory(path, saved, n, where) -> dict:
    if not isinstance(saved, list):
        raise CheckpointError(f"{path}: bad memory record: not a list")
    memory, last = {}, -1
    for entry in saved:
        valid = (
            isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int
            and last < entry[0] < n and isinstance(entry[1], dict)
        )  # fmt: skip
        if not valid:
            raise CheckpointError(f"{path}: bad memory entry {shown(entry)}")
        row, values = entry
        if not all(isinstance(k, str) and isinstance(v, float) for k, v in values.items()):
            raise CheckpointError(f"{path}: {where(row)}: memory must map names to floats, got "
                                  f"{shown(values)}")  # fmt: skip
        memory[row], last = values, row
    return memory


def _read_member(path, members, k, entry, n, weight_sizes, where) -> Member:
    name, dtype = entry["name"], entry["dtype"]
    key = f"{name}.{dtype}"
    data = members[key]
    if dtype == BFLOAT16:
        if data.dtype != np.uint16 or data.ndim != 1:
            raise CheckpointError(f"{path}: member {shown(key)} does not hold bfloat16 bits")
        data = data.view(bfloat16_dtype())
    elif data.ndim != 1 or data.dtype.name != dtype:
        raise CheckpointError(f"{path}: member {shown(key)} holds {data.dtype} of shape "
                              f"{data.shape}, not {dtype} values")  # fmt: skip
    rows = None
    if entry["rows"]:
        column = _int64(path, members, f"states.{k}.rows", None)
        if column.size and (column[0] < 0 or column[-1] >= n or (np.diff(column) <= 0).any()):
            raise CheckpointError(f"{path}: member {shown(key)}: its rows must increase, from 0 "
                                  f"to {n - 1}")  # fmt: skip
        rows = column.tolist()
    count = n if rows is None else len(rows)
    if entry["shapes"]:
        own, sizes = _read_shapes(path, members, f"states.{k}", count, where, rows)
    else:
        own, sizes = None, weight_sizes if rows is None else weight_sizes[rows]
    total = int(sizes.sum())
    if total != data.size:
        raise CheckpointError(
            f"{path}: member {shown(key)} holds {data.size} values, but the sizes of its "
            f"{count} state arrays sum to {total}; the states refer to missing arrays"
        )
    return Member(name, data.dtype, data, rows, own, sizes)


def _check_one_per_name(path, read: list, where) -> None:
    """No row has two arrays of one name (in two dtypes)."""
    by_name: dict = {}
    for member in read:
        by_name.setdefault(member.name, []).append(member)
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        if any(m.rows is None for m in group):
            raise CheckpointError(f"{path}: state array {shown(name)} is saved twice")
        rows = np.concatenate([np.array(m.rows, np.int64) for m in group])
        unique, counts = np.unique(rows, return_counts=True)
        if (counts > 1).any():
            raise CheckpointError(f"{path}: {where(unique[counts > 1][0])}: state array "
                                  f"{shown(name)} is saved twice")  # fmt: skip

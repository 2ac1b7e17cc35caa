"""Saving and restoring an updater exactly, without pickle.

A checkpoint holds everything a run needs to continue bit for bit as if it had
never stopped: the optimizer (type and options, as a config dict), its
OptimizationState (counters and score history), the averaging rule, the
non-finite policy, ``max_grad_norm``, the loss scaler's state, the parameter groups,
and for every index its step count, per-weight scalars and state arrays. The file is
a checksummed archive written atomically (:mod:`mxopt.persist.archive`).

:func:`~mxopt.load_updater` checks the format and version, the checksum, the optimizer
and every state (names, shapes, dtypes) before it builds anything, and raises
:class:`~mxopt.CheckpointError` with a clear message for a truncated, corrupted,
tampered, newer or mismatched file. States load onto the CPU and move to the
weights' backend and device (NumPy or CuPy) at their first update.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from mxopt.core.checks import shown
from mxopt.core.state import OptimizationState
from mxopt.core.version import __version__
from mxopt.kernels import backends
from mxopt.kernels.precision import BFLOAT16, bfloat16_dtype, low_precision_format
from mxopt.optimizers.base import AbstractOptimizer
from mxopt.persist.archive import (
    CheckpointError,
    decode_index,
    encode_index,
    read_archive,
    write_archive,
)
from mxopt.persist.columns import (
    StateColumns,
    StateRecords,
    dtype_name,
    paused_gc,
    read_columns,
    weight_dtype,
)
from mxopt.persist.config import ConfigError, from_config, registry_name, to_config
from mxopt.persist.registry import registered
from mxopt.training import precision
from mxopt.training.accumulation import ACCUMULATOR, check_accumulate
from mxopt.training.engine import NONFINITE_POLICIES
from mxopt.training.groups import ParamGroups
from mxopt.training.loss_scaling import DynamicLossScaler
from mxopt.training.weights import WeightState

__all__ = [
    "CheckpointError",
    "FORMAT",
    "FORMAT_VERSION",
    "load_updater_state_dict",
    "read_checkpoint",
    "save_updater",
    "updater_state_dict",
    "write_checkpoint",
]

FORMAT = "mxopt.updater"

#: 1: one archive member per state array (0.1.0). 2: the state arrays of one name and dtype
#: concatenated in one member, each state record naming ``[member, offset, shape]``. 3: the
#: states as columns (:mod:`mxopt.persist.columns`): no JSON record and no Python dict per
#: index, so save and load cost follows the bytes. All three are read.
FORMAT_VERSION = 3


def _host_copy(array, copy: bool = True) -> np.ndarray:
    if backends.backend_of(array) == backends.CUPY:
        return array.get()
    return np.array(array, copy=True) if copy else array


def _optimization_state_dict(state):
    return None if state is None else attrs.asdict(state)


def updater_state_dict(updater, *, copy: bool = True) -> dict:
    """``updater``'s complete state as plain values and NumPy arrays (copies; with
    ``copy=False`` NumPy state arrays are handed out as they are, for a writer that copies
    them anyway).

    Layout::

        {"format": "mxopt.updater", "version": 3, "mxopt": "<version>",
         "optimizer": <config dict, or None if it cannot be written>,
         "optimizer_type": "mxopt.ADAM.v1", "optimizer_repr": "...",
         "optimization_state": {"batch_size": ..., "curr_epoch": ..., ...} or None,
         "averaging": <config dict> or None,
         "nonfinite": "raise", "max_grad_norm": None, "loss_scaler": {...} or None,
         "accumulate": 1, "accumulate_mode": "mean", "micro_steps": [[{"str": "fc1"}, 2]],
         "states": [{"index": {"str": "fc1"}, "step": 12, "skipped": 0, "memory": {},
                     "shape": [3, 4], "dtype": "float32", "arrays": {"mean": array, ...}}]}

    (:func:`read_checkpoint` returns the same layout; a file stores the states as columns.)
    """
    states = []
    for index, state in updater.states.items():
        states.append(
            {
                "index": encode_index(index),
                "step": state.step,
                "skipped": state.skipped,
                "memory": dict(state.memory),
                "shape": list(state.shape),
                "dtype": dtype_name(state.dtype),
                "arrays": {name: _host_copy(array, copy) for name, array in state.arrays.items()},
            }
        )
    return _header(updater, states)


def _header(updater, states) -> dict:
    optimizer = updater.optimizer
    try:
        optimizer_config = to_config(optimizer, "optimizer")
    except ConfigError:
        optimizer_config = None  # e.g. a schedule wrapping a Python callable
    scaler = updater.loss_scaler
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "mxopt": __version__,
        "optimizer": optimizer_config,
        "optimizer_type": registry_name(optimizer),
        "optimizer_repr": repr(optimizer),
        "optimization_state": _optimization_state_dict(optimizer.state),
        "averaging": None if updater.averaging is None else to_config(updater.averaging),
        "nonfinite": updater.nonfinite,
        "max_grad_norm": updater.max_grad_norm,
        "loss_scaler": None if scaler is None else scaler.state_dict(),
        "groups": updater.groups.to_dict(encode_index),
        # gradient accumulation: the accumulators are state arrays ("grad_sum")
        "accumulate": getattr(updater, "accumulate", 1),
        "accumulate_mode": getattr(updater, "accumulate_mode", "mean"),
        "micro_steps": [
            [encode_index(i), n] for i, n in getattr(updater, "micro_steps", {}).items() if n
        ],  # fmt: skip
        "states": states,
    }


_HEADER_KEYS = {"optimizer", "optimizer_type", "optimization_state", "averaging", "nonfinite",
                "max_grad_norm", "loss_scaler", "groups", "states"}  # fmt: skip
_STATE_KEYS = {"index", "step", "skipped", "memory", "shape", "dtype", "arrays"}
#: Entries that files written before gradient accumulation existed do not have.
_OPTIONAL_KEYS = {"accumulate", "accumulate_mode", "micro_steps"}


def _check_header(d: dict) -> None:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError("not an mxopt updater checkpoint (wrong or missing 'format')")
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"checkpoint format version {shown(version)} is not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format version {version} is newer than this mxopt understands "
            f"({FORMAT_VERSION}; written by mxopt {shown(d.get('mxopt'))}); upgrade mxopt"
        )
    missing = sorted(_HEADER_KEYS - d.keys())
    if missing:
        raise CheckpointError(f"checkpoint is missing {missing}")
    unknown = sorted(d.keys() - _HEADER_KEYS - _OPTIONAL_KEYS
                     - {"format", "version", "mxopt", "optimizer_repr"})  # fmt: skip
    if unknown:
        raise CheckpointError(f"checkpoint has unknown entries {unknown}")


def build_optimizer(d: dict, optimizer):
    saved_type = d["optimizer_type"]
    if saved_type not in registered()["optimizers"]:
        raise CheckpointError(
            f"unknown optimizer {shown(saved_type)} in checkpoint; known: "
            f"{', '.join(sorted(registered()['optimizers']))}"
        )
    if optimizer is None:
        if d["optimizer"] is None:
            raise CheckpointError(
                f"the saved optimizer ({d.get('optimizer_repr')}) has options that cannot be "
                f"written as a config (e.g. a schedule from a Python callable); pass an "
                f"equivalent optimizer: load_updater(path, optimizer=...)"
            )
        try:
            optimizer = from_config(d["optimizer"], "optimizer", extensions=False)
        except ConfigError as error:
            raise CheckpointError(f"bad optimizer in checkpoint: {error}") from None
    elif registry_name(optimizer) != saved_type:
        raise CheckpointError(
            f"the checkpoint holds a {saved_type} but the given optimizer is a "
            f"{registry_name(optimizer)}"
        )
    return optimizer


def _build_optimization_state(saved):
    if saved is None:
        return None
    if not isinstance(saved, dict):
        raise CheckpointError(f"bad OptimizationState record {shown(saved)}")
    fields = {field.name for field in attrs.fields(OptimizationState)}
    if saved.keys() != fields:
        missing, extra = sorted(fields - saved.keys()), sorted(saved.keys() - fields)
        raise CheckpointError(
            f"bad OptimizationState in checkpoint: missing {missing}, unknown {extra} (a "
            f"missing counter would silently restart the schedules)"
        )
    try:
        return OptimizationState(**saved)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"bad OptimizationState in checkpoint: {error}") from None


class _Index:
    """``index <its repr>`` in a message: the repr is made only when a message is written
    (checking 100,000 states, making each one cost a second)."""

    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index

    def __format__(self, spec: str) -> str:
        return f"index {shown(self.index)}"


def _build_states(saved_states, optimizer, averaging, accumulate: int = 1) -> dict:
    if isinstance(saved_states, StateRecords):
        columns = saved_states.columns  # None once a record was made (and maybe changed)
        if columns is not None:
            with paused_gc():
                return _states_of_columns(columns, optimizer, averaging, accumulate)
        saved_states = list(saved_states)
    if not isinstance(saved_states, list):
        raise CheckpointError("bad 'states' record: not a list")
    states = {}
    layouts: dict = {}  # (shape, dtype) -> expected arrays, when they do not depend on index
    by_shape = type(optimizer).state_spec_for is AbstractOptimizer.state_spec_for
    for position, saved in enumerate(saved_states):
        where = f"state {position}"
        try:
            index = decode_index(saved["index"])
            where = _Index(index)  # written out only in a message
            step, skipped, memory = saved["step"], saved["skipped"], saved["memory"]
            shape, saved_dtype, arrays = tuple(saved["shape"]), saved["dtype"], saved["arrays"]
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{where}: incomplete state record ({error})") from None
        if saved.keys() != _STATE_KEYS:
            raise CheckpointError(
                f"{where}: the state record has keys {sorted(saved)}, expected "
                f"{sorted(_STATE_KEYS)}"
            )
        for name, value in (("step", step), ("skipped", skipped)):
            if type(value) is not int or not 0 <= value < 2**63:
                raise CheckpointError(
                    f"{where}: {name} must be an integer from 0 to 2**63 - 1, got {shown(value)}"
                )
        if not isinstance(memory, dict) or not all(
            isinstance(k, str) and isinstance(v, float) for k, v in memory.items()
        ):
            raise CheckpointError(f"{where}: memory must map names to floats, got {shown(memory)}")
        if not all(type(n) is int and n >= 0 for n in shape):
            raise CheckpointError(f"{where}: bad shape {shown(saved['shape'])}")
        dtype = weight_dtype(saved_dtype)
        if dtype is None:
            raise CheckpointError(
                f"{where}: dtype {shown(saved_dtype)} is not float32, float64, float16 or bfloat16"
            )
        array_dtype = backends.compute_dtype(dtype)
        if not isinstance(arrays, dict):
            raise CheckpointError(f"{where}: 'arrays' must map names to arrays")
        try:  # per index: an optimizer's state may depend on which weight it is (Muon)
            spec = layouts.get((shape, dtype)) if by_shape else None
            if spec is None:
                spec = _expected_shapes(optimizer, averaging, index, shape, dtype)
                if by_shape:
                    layouts[(shape, dtype)] = spec
        except ValueError as error:
            raise CheckpointError(f"{where}: {error}") from None
        if accumulate > 1 and isinstance(arrays, dict) and ACCUMULATOR in arrays:
            # made at first use: may be absent (a new dict: spec may be shared)
            spec = {**spec, ACCUMULATOR: (shape, array_dtype)}
        if arrays.keys() != spec.keys():
            raise CheckpointError(
                f"{where}: the saved state arrays {sorted(arrays)} do not match what "
                f"{type(optimizer).__name__} with these options keeps: {sorted(spec)}"
            )
        flat, shapes = {}, {}
        for name, array in arrays.items():
            expected, stored_dtype = spec[name]
            stored_dtype = array_dtype if stored_dtype is None else stored_dtype
            if not isinstance(array, np.ndarray) or array.dtype != stored_dtype:
                raise CheckpointError(
                    f"{where}: state array {shown(name)} is not a {stored_dtype} array"
                )
            if array.shape != expected:
                raise CheckpointError(
                    f"{where}: state array {shown(name)} has shape {array.shape}, expected "
                    f"{expected}"
                )
            flat[name] = np.ascontiguousarray(array).reshape(-1).copy()
            shapes[name] = expected
        state = WeightState(index, flat, shapes, shape, dtype, backends.NUMPY, None, step=step)
        state.skipped, state.memory, state.portable = skipped, dict(memory), True
        if index in states:
            raise CheckpointError(f"{where}: saved twice")
        states[index] = state
    return states


def _states_of_columns(columns: StateColumns, optimizer, averaging, accumulate: int) -> dict:
    """The states of a format-3 file, whose columns :func:`read_columns` has checked against
    each other: the optimizer's layout is checked once per distinct weight shape, dtype and
    set of arrays (per index where it depends on the index), one WeightState per index."""
    n, shapes, members = columns.count, columns.shapes, columns.members
    flats: list = [{} for _ in range(n)]
    shaped: list = [{} for _ in range(n)]
    rows_of = [range(n) if m.rows is None else m.rows for m in members]
    signatures = None  # which members each row has: all of them unless some have rows
    if any(m.rows is not None for m in members):
        signatures = [[] for _ in range(n)]
        for k, rows in enumerate(rows_of):
            for row in rows:
                signatures[row].append(k)
    for member, rows in zip(members, rows_of, strict=True):
        name, own = member.name, member.shapes
        # a copy: states loaded twice from one dict, or its records, must not share memory
        views = member.views(copy=True)
        for k, (row, view) in enumerate(zip(rows, views, strict=True)):
            flats[row][name] = view
            shape = shapes[row] if own is None else own[k]
            # a 1-D shape is the flat view's own: no reshape (100,000 of them cost)
            shaped[row][name] = view if len(shape) == 1 else view.reshape(shape)
    by_shape = type(optimizer).state_spec_for is AbstractOptimizer.state_spec_for
    everyone = tuple(range(len(members)))
    checked: dict = {}  # (shape, dtype code, members) -> the names whose shapes to check
    codes, dtypes = columns.codes.tolist(), columns.dtypes
    steps, skipped, memory = columns.steps.tolist(), columns.skipped.tolist(), columns.memory
    states = {}
    for row, index in enumerate(columns.indices):
        shape, code = shapes[row], codes[row]
        signature = everyone if signatures is None else tuple(signatures[row])
        key = (shape, code, signature)
        check = checked.get(key) if by_shape else None
        if check is None:
            check = _check_layout(optimizer, averaging, accumulate, index, shape, dtypes[code],
                                  [members[k] for k in signature])  # fmt: skip
            if by_shape:
                checked[key] = check
        arrays = shaped[row]
        for name, expected in check:  # arrays not shaped like the weight
            if arrays[name].shape != expected:
                raise CheckpointError(
                    f"{_Index(index)}: state array {shown(name)} has shape "
                    f"{arrays[name].shape}, expected {expected}"
                )
        states[index] = WeightState.loaded(
            index, flats[row], arrays, shape, dtypes[code], steps[row], skipped[row],
            dict(memory[row]) if row in memory else {},  # its own: a step may change it
        )  # fmt: skip
    return states


def _check_layout(optimizer, averaging, accumulate, index, shape, dtype, members) -> list:
    """Whether ``members`` (their names, dtypes, and shapes where they are the weight's) are
    the state arrays ``optimizer`` keeps for a weight of ``shape`` and ``dtype`` at
    ``index``; ``[(name, expected shape)]`` of those whose shapes are saved apart."""
    where = _Index(index)
    try:
        spec = _expected_shapes(optimizer, averaging, index, shape, dtype)
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from None
    array_dtype = backends.compute_dtype(dtype)
    names = [m.name for m in members]
    if accumulate > 1 and ACCUMULATOR in names:  # made at first use: may be absent
        spec = {**spec, ACCUMULATOR: (shape, array_dtype)}
    if set(names) != spec.keys():
        raise CheckpointError(
            f"{where}: the saved state arrays {sorted(names)} do not match what "
            f"{type(optimizer).__name__} with these options keeps: {sorted(spec)}"
        )
    apart = []
    for member in members:
        expected, stored_dtype = spec[member.name]
        stored_dtype = array_dtype if stored_dtype is None else stored_dtype
        if member.dtype != stored_dtype:
            raise CheckpointError(
                f"{where}: state array {shown(member.name)} is not a {stored_dtype} array"
            )
        if member.shapes is not None:
            apart.append((member.name, expected))
        elif expected != shape:
            raise CheckpointError(
                f"{where}: state array {shown(member.name)} has shape {shape}, expected {expected}"
            )
    return apart


def _expected_shapes(optimizer, averaging, index, shape: tuple, dtype) -> dict:
    """``{name: (shape, dtype)}`` of the state arrays ``optimizer`` keeps for the weight at
    ``index``, of ``shape`` and ``dtype`` (``dtype`` None: the weight's compute dtype;
    moments stored in bfloat16 or 8 bits have theirs)."""
    spec = dict(optimizer.state_spec_for(index, shape))
    if averaging is not None:
        spec["average"] = None
    if precision.wants_master(optimizer, low_precision_format(dtype)):
        spec[precision.MASTER] = None
    shapes = {
        name: tuple(start[0]) if isinstance(start, tuple) else shape for name, start in spec.items()
    }
    return precision.stored_layout(optimizer, shapes)


def _check_against_weights(states: dict, weights) -> None:
    if weights is None:
        return
    problems = []
    for index, weight in dict(weights).items():
        state = states.get(index)
        if state is None:
            continue
        shape, dtype = tuple(getattr(weight, "shape", ())), getattr(weight, "dtype", None)
        if shape != tuple(state.shape) or dtype != state.dtype:
            problems.append(
                f"index {shown(index)}: saved for shape {tuple(state.shape)} {state.dtype}, "
                f"weight is {shape} {dtype}"
            )
    if problems:
        raise CheckpointError("state does not match the weights: " + "; ".join(problems))


def load_updater_state_dict(updater, d: dict, weights=None, optimizer=None) -> None:
    """Restore ``d`` (from :func:`updater_state_dict`) into ``updater``, all or nothing."""

    _check_header(d)
    if optimizer is None and d["optimizer_type"] != registry_name(updater.optimizer):
        raise CheckpointError(
            f"the checkpoint holds a {d['optimizer_type']} but this updater's optimizer is a "
            f"{registry_name(updater.optimizer)}"
        )
    if optimizer is None and d["optimizer"] is None:
        optimizer = updater.optimizer  # options not writable: keep the live ones
    new_optimizer = build_optimizer(d, optimizer)
    new_state = _build_optimization_state(d["optimization_state"])
    try:
        averaging = (
            None
            if d["averaging"] is None
            else from_config(d["averaging"], "averaging", extensions=False)
        )
    except ConfigError as error:
        raise CheckpointError(f"bad averaging in checkpoint: {error}") from None
    if d["nonfinite"] not in NONFINITE_POLICIES:
        raise CheckpointError(f"bad nonfinite policy {shown(d['nonfinite'])}")
    max_grad_norm = d["max_grad_norm"]
    if max_grad_norm is not None and not (
        isinstance(max_grad_norm, float) and 0 < max_grad_norm < math.inf
    ):
        raise CheckpointError(f"bad max_grad_norm {shown(max_grad_norm)}")
    try:
        scaler = (
            None
            if d["loss_scaler"] is None
            else DynamicLossScaler.from_state_dict(d["loss_scaler"])
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"bad loss scaler in checkpoint: {error}") from None
    lent_state = new_optimizer.state is None
    if lent_state:
        new_optimizer.state = new_state  # some initial values read the state (Rprop's lr)
    try:
        try:
            groups = ParamGroups.from_dict(d["groups"], decode_index)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"bad parameter groups in checkpoint: {error}") from None
        accumulate, accumulate_mode = d.get("accumulate", 1), d.get("accumulate_mode", "mean")
        try:
            check_accumulate(accumulate, accumulate_mode, scaler)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"bad gradient accumulation in checkpoint: {error}") from None
        states = _build_states(d["states"], new_optimizer, averaging, accumulate)
        micro_steps = _micro_steps(d.get("micro_steps", []), states, accumulate)
        _check_against_weights(states, weights)
    except BaseException:
        if lent_state:  # a refused load leaves the caller's optimizer as it was
            new_optimizer.state = None
        raise

    # Everything is checked: now replace.
    live_state = updater.optimizer.state
    if new_optimizer is not updater.optimizer:
        updater.optimizer.opts = new_optimizer.opts
    if new_state is not None and live_state is not None:
        for field in attrs.fields(OptimizationState):  # in place: the loop keeps its reference
            setattr(live_state, field.name, getattr(new_state, field.name))
    updater.optimizer.state = live_state if live_state is not None else new_state
    updater.averaging = averaging
    updater.nonfinite = d["nonfinite"]
    updater.max_grad_norm = max_grad_norm
    updater.loss_scaler = scaler
    updater.groups = groups
    updater.accumulate, updater.accumulate_mode = accumulate, accumulate_mode
    updater.micro_steps = micro_steps
    updater.states = states
    updater._groups = {}  # packed buffers re-pack the restored state on their next step


def _micro_steps(saved, states: dict, accumulate: int) -> dict:
    """``{index: n}`` from the saved ``[[index, n], ...]``, checked against the states."""
    if not isinstance(saved, list):
        raise CheckpointError(f"bad micro_steps record {shown(saved)}: not a list")
    counts = {}
    for entry in saved:
        try:
            encoded, count = entry
            index = decode_index(encoded)
        except (TypeError, ValueError, KeyError, CheckpointError):
            raise CheckpointError(f"bad micro_steps entry {shown(entry)}") from None
        if type(count) is not int or not 0 < count < accumulate:
            raise CheckpointError(
                f"index {shown(index)}: micro_steps must be an integer from 1 to "
                f"accumulate - 1 = {accumulate - 1}, got {shown(count)}"
            )
        state = states.get(index)
        if state is None or ACCUMULATOR not in state.flat:
            raise CheckpointError(
                f"index {shown(index)}: {count} micro-step(s) saved but no accumulator"
            )
        counts[index] = count
    return counts


def save_updater(updater, path) -> None:
    """Write ``updater``'s checkpoint to ``path`` (atomic: temporary file, fsync, rename)."""
    # straight from updater.states to columns: no record per index (see persist.columns)
    with paused_gc():
        columns = StateColumns.of_states(updater.states)
    _write(path, _header(updater, None), columns)


def write_checkpoint(path, state_dict: dict) -> None:
    """Write a state dict (as :func:`updater_state_dict` or :func:`read_checkpoint` makes
    it, e.g. several merged, or a subset) to ``path`` as a checkpoint file (atomic), in the
    current format. The dict is not changed."""
    states = state_dict["states"]
    columns = states.columns if isinstance(states, StateRecords) else None
    if columns is None:
        columns = StateColumns.of_records(states)
    _write(path, state_dict, columns)


def _write(path, d: dict, columns: StateColumns) -> None:
    table, members = columns.table()
    header = {**d, "version": FORMAT_VERSION, "mxopt": __version__, "states": table}
    write_archive(path, header, members)


def _unpack(path, position, place, arrays) -> np.ndarray:
    """The state array at ``place`` (``[member, offset, shape]``) of a version-2 file."""
    try:
        member, offset, shape = place
        packed = arrays[member]
        shape = tuple(shape)
        size = math.prod(shape)
        valid = (
            type(offset) is int
            and all(type(n) is int and n >= 0 for n in shape)
            and 0 <= offset <= offset + size <= packed.size
        )
    except (TypeError, ValueError, KeyError):
        valid = False
    if not valid:
        raise CheckpointError(f"{path}: state {position} refers to missing arrays ({shown(place)})")
    if member.endswith("." + BFLOAT16):
        if packed.dtype != np.uint16:
            raise CheckpointError(f"{path}: member {shown(member)} does not hold bfloat16 bits")
        packed = packed.view(bfloat16_dtype())
    return packed[offset : offset + size].reshape(shape)


def read_checkpoint(path) -> dict:
    """The state dict stored at ``path``, verified (format, checksum), with NumPy arrays.

    ``d["states"]`` of a format-3 file is a :class:`~mxopt.persist.columns.StateRecords`:
    a sequence of the per-index records of :func:`updater_state_dict`, made on first use
    (loading or writing it untouched goes column by column)."""
    d, arrays = read_archive(path)
    _check_header(d)
    if d["version"] >= 3:  # the records are made on first use (StateRecords)
        d["states"] = StateRecords(read_columns(path, d["states"], arrays))
        return d
    packed = d["version"] >= 2
    for position, saved in enumerate(d["states"] if isinstance(d["states"], list) else []):
        places = saved.get("arrays") if isinstance(saved, dict) else None
        if not isinstance(places, dict):
            raise CheckpointError(f"{path}: state {position} refers to missing arrays")
        if packed:
            saved["arrays"] = {
                name: _unpack(path, position, place, arrays) for name, place in places.items()
            }
            continue
        if not all(isinstance(k, str) and k in arrays for k in places.values()):
            raise CheckpointError(f"{path}: state {position} refers to missing arrays")
        saved["arrays"] = {name: arrays[key] for name, key in places.items()}
    return d

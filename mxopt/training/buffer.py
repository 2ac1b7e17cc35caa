"""Many weights packed into one flat buffer, for whole-model updates in a few kernel calls.

A step over a real model touches hundreds or thousands of tensors; calling a
kernel per tensor pays a Python round-trip per tensor. A
:class:`ParameterBuffer` allocates all the weights (and, beside them, all the
gradients) contiguously and hands out views, so the updater can treat the
whole model as one array::

    buffer = mxopt.ParameterBuffer({"w1": (784, 256), "b1": (256,), "w2": (256, 10)})
    buffer.weights["w1"][...] = initial_w1          # views: write into them in place
    ...
    loss, grads = backward(buffer.weights)          # write the gradients into buffer.grads
    for name, grad in grads.items():
        buffer.grads[name][...] = grad
    state.begin_batch()
    updater.update_buffer(buffer)                   # every weight, one fused kernel

Each weight keeps its own index in ``updater.states`` (the per-index state
arrays are views of the updater's flat state buffers), so per-tensor calls,
checkpoints and averages work as usual, and the results are bit-identical to
updating each weight with ``updater(index, grad, weight)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np

from mxopt.core.checks import shown
from mxopt.kernels import backends
from mxopt.kernels.kernel import DTYPES
from mxopt.kernels.precision import low_precision_format
from mxopt.optimizers.base import WEIGHT_COPY, Multipliers
from mxopt.training import precision
from mxopt.training.engine import Item
from mxopt.training.weights import WeightState, create_state

__all__ = ["BufferGroup", "ParameterBuffer"]


class _Views(list):
    """A list of a buffer's views that knows its buffer (so update_many can take the
    packed path)."""

    buffer = None


class ParameterBuffer:
    """Weights and their gradients packed in two flat arrays, handed out as views.

    Args:
        shapes: ``{index: shape}``, in the order the weights are packed (may be empty: a
            buffer of nothing, e.g. a rank's share of a model when it owns no weight).
        dtype: float32 (default) or float64.
        xp: the array module, ``numpy`` (default) or ``cupy``.
        weight, grad: flat arrays to pack into instead of new ones (e.g. slices of a
            larger buffer: a rank's share in :mod:`mxopt.distributed`): 1-D, C-contiguous,
            writeable, of ``dtype`` and of the total size; ``xp`` is then theirs.

    Attributes:
        indices: the indices, in packing order.
        weight, grad: the flat arrays.
        weights, grads: ``{index: view}`` shaped as given.
        offsets: int64 array of ``len(indices) + 1`` boundaries in the flat arrays.
    """

    def __init__(self, shapes: Mapping[Hashable, tuple], dtype=np.float32, xp=np, *,
                 weight=None, grad=None):  # fmt: skip
        dtype = np.dtype(dtype)
        if dtype not in DTYPES and not low_precision_format(dtype):
            raise TypeError(
                f"ParameterBuffer: dtype {dtype} is not supported; use float32, float64, "
                f"float16 or bfloat16"
            )
        if not isinstance(shapes, Mapping):
            raise ValueError(
                f"ParameterBuffer: shapes must be an {{index: shape}} mapping, got {shown(shapes)}"
            )
        self.indices = tuple(shapes)
        self.shapes = {}
        sizes = []
        for index, shape in shapes.items():
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
                raise ValueError(
                    f"ParameterBuffer: index {shown(index)} has a bad shape {shown(shape)}"
                )
            self.shapes[index] = tuple(int(n) for n in shape)
            sizes.append(int(np.prod(shape, dtype=np.int64)))
        self.offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        total = int(self.offsets[-1])
        self.weight = _flat("weight", weight, total, dtype) if weight is not None else None
        self.grad = _flat("grad", grad, total, dtype) if grad is not None else None
        if self.weight is None:
            self.weight = (xp if grad is None else _module_of(grad)).zeros(total, dtype=dtype)
        if self.grad is None:
            self.grad = _module_of(self.weight).zeros(total, dtype=dtype)
        if backends.backend_of(self.weight) != backends.backend_of(self.grad):
            raise TypeError("ParameterBuffer: weight and grad must both be NumPy or both CuPy")
        self.weights = self._views(self.weight)
        self.grads = self._views(self.grad)
        self.weight_list = _Views(self.weights[i] for i in self.indices)
        self.grad_list = _Views(self.grads[i] for i in self.indices)
        self.weight_list.buffer = self.grad_list.buffer = self
        self.backend = backends.backend_of(self.weight)

    def _views(self, flat) -> dict:
        views = {}
        for k, index in enumerate(self.indices):
            start, stop = int(self.offsets[k]), int(self.offsets[k + 1])
            views[index] = flat[start:stop].reshape(self.shapes[index])
        return views

    @classmethod
    def from_arrays(cls, arrays: Mapping[Hashable, object], dtype=None) -> ParameterBuffer:
        """A buffer holding copies of ``arrays`` (NumPy or CuPy, one dtype), in their order.

        Use ``buffer.weights[index]`` from then on: the originals are not updated.
        """
        arrays = dict(arrays)
        if not arrays:
            raise ValueError("ParameterBuffer.from_arrays: no arrays")
        first = next(iter(arrays.values()))
        backend = backends.backend_of(first)
        if backend is None:
            raise TypeError("ParameterBuffer.from_arrays: arrays must be NumPy or CuPy arrays")
        xp = np if backend == backends.NUMPY else __import__("cupy")
        dtype = np.dtype(dtype or first.dtype)
        buffer = cls({index: a.shape for index, a in arrays.items()}, dtype=dtype, xp=xp)
        for index, a in arrays.items():
            buffer.weights[index][...] = a
        return buffer

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return (
            f"ParameterBuffer({len(self.indices)} weights, {self.weight.size} elements, "
            f"{self.weight.dtype}, {self.backend})"
        )


def _module_of(array):
    return np if backends.backend_of(array) == backends.NUMPY else __import__("cupy")


def _flat(name: str, array, size: int, dtype):
    """``array`` checked as a buffer's flat ``name`` array."""
    backend = backends.backend_of(array)
    if backend is None or isinstance(array, np.ma.MaskedArray):
        raise TypeError(
            f"ParameterBuffer: {name} must be a NumPy or CuPy array, got {type(array).__name__}"
        )
    array = backends.plain(array)
    if array.ndim != 1 or array.size != size or array.dtype != dtype:
        raise ValueError(
            f"ParameterBuffer: {name} must be 1-D of {size} {dtype} values (the shapes' total), "
            f"got shape {array.shape} {array.dtype}"
        )
    flags = array.flags
    if not flags.c_contiguous or (backend == backends.NUMPY and not flags.writeable):
        raise ValueError(f"ParameterBuffer: {name} must be C-contiguous and writeable")
    return array


class Run:
    """Consecutive weights of a buffer that move together: the same step count,
    per-weight scalars and multipliers, none frozen. ``state`` is a WeightState of
    views spanning them, so the optimizer updates the run as one array; its step and
    per-weight scalars are those of every member (``WeightState.packed``)."""

    __slots__ = ("first", "last", "lr_mult", "wd_mult", "state", "offsets", "group")

    def __init__(self, first, last, lr_mult, wd_mult, state, offsets):
        self.first, self.last = first, last  # segments [first, last)
        self.lr_mult, self.wd_mult = lr_mult, wd_mult
        self.state = state
        self.offsets = offsets  # the run's segment boundaries, from 0
        self.group = None


class BufferGroup:
    """An updater's state for one :class:`ParameterBuffer`: flat state arrays for the
    whole buffer, each index's :class:`~mxopt.WeightState` holding views of them, and
    the buffer cut into :class:`Run` s of weights that move together (usually one)."""

    __slots__ = ("buffer", "members", "pending", "state", "runs", "groups_version", "dirty",
                 "kernel")  # fmt: skip

    def __init__(self, buffer, members, pending, state, runs, groups_version, kernel):
        self.buffer = buffer
        self.kernel = kernel  # the optimizer's kernel when packed: its state arrays
        self.members = members  # WeightStates, in buffer order
        self.pending = {id(m) for m in pending}  # created here; stored on the first success
        self.state = state  # spans the whole buffer
        self.runs = runs
        self.groups_version = groups_version
        self.dirty = False  # set when a member is updated on its own (WeightState._unpack)
        for run in runs:
            run.group = self
            for member in members[run.first : run.last]:
                # a plan's arrays are the unpacked ones: a call takes the general path
                member.packed, member.plan = run, None

    @classmethod
    def build(cls, updater, buffer: ParameterBuffer) -> BufferGroup | None:
        """Pack the state of every index of ``buffer`` into flat arrays (copying existing
        state); ``None`` when the optimizer's state cannot be packed."""
        optimizer = updater.optimizer
        existing = [updater.states.get(index) for index in buffer.indices]
        backend = buffer.backend
        for index, state in zip(buffer.indices, existing, strict=True):
            if state is None:
                continue
            state._unpack()  # own step and scalars again, until packed below
            weight = buffer.weights[index]
            if state.portable:
                state.place_like(index, weight)
            backends.flat_weight(index, weight, state)  # same shape, dtype, backend, device
        if optimizer.compressed_state()[0] != "float32":
            return None  # moments in bfloat16 or 8 bits, blockwise per weight: no packed path
        spec = dict(optimizer.state_spec((int(buffer.offsets[-1]),)))
        for index in buffer.indices:
            own = optimizer.state_spec_for(index, buffer.shapes[index])
            if own.keys() != spec.keys() or any(isinstance(v, tuple) for v in own.values()):
                return None  # state not shaped like the weights (Adafactor): no packed path
        if updater.averaging is not None:
            spec["average"] = WEIGHT_COPY
        if precision.wants_master(optimizer, low_precision_format(buffer.weight.dtype)):
            spec[precision.MASTER] = WEIGHT_COPY
        names = tuple(spec)
        flat = {}
        for name, start in spec.items():
            if isinstance(start, str) and start == WEIGHT_COPY:
                flat[name] = backends.flat_copy(buffer.weight)
            else:
                flat[name] = backends.full(
                    buffer.weight, backend, buffer.weight.size, start, slot=len(flat)
                )
        members, pending = [], []
        for k, (index, state) in enumerate(zip(buffer.indices, existing, strict=True)):
            lo, hi = int(buffer.offsets[k]), int(buffer.offsets[k + 1])
            if state is None:
                state = create_state(optimizer, index, buffer.weights[index],
                                     averaging=updater.averaging)  # fmt: skip
                pending.append(state)
            missing = [name for name in names if name not in state.flat]
            if missing:  # as engine.require_state_arrays says it on the other paths
                raise ValueError(
                    f"{state.describe()}: the optimizer's options now call for state arrays "
                    f"{missing} that this index's state (made for {tuple(state.flat)}) does "
                    f"not have; create new state (a new updater) after changing such options"
                )
            for name in names:
                flat[name][lo:hi] = state.flat[name]
            # arrays the options no longer use stay with the state, unpacked, as on the
            # other paths (they return if the option does)
            extras = {k: a for k, a in state.flat.items() if k not in spec}
            state.replace_arrays({**extras, **{name: flat[name][lo:hi] for name in names}})
            members.append(state)
        whole = _span(buffer, flat, 0, len(members), members[0].step if members else 0)
        runs = cls._runs(updater, buffer, flat, members)
        return cls(buffer, members, pending, whole, runs, updater.groups.version,
                   optimizer.kernel())  # fmt: skip

    @staticmethod
    def _runs(updater, buffer, flat, members) -> list:
        runs, first = [], None
        key = None
        for k, (index, member) in enumerate(zip(buffer.indices, members, strict=True)):
            lr_mult, wd_mult, frozen = updater.groups.resolve(index)
            this = None if frozen else (member.step, tuple(sorted(member.memory.items())),
                                        lr_mult, wd_mult)  # fmt: skip
            if this != key:
                if key is not None:
                    runs.append(_run(buffer, flat, first, k, key, members[first]))
                first, key = k, this
        if key is not None:
            runs.append(_run(buffer, flat, first, len(members), key, members[first]))
        return runs

    def is_current(self, updater) -> bool:
        """Whether the runs still hold: no member was updated on its own, the groups did
        not change, the options still call for the same kernel (so the same state arrays)
        and the updater's states are still these (O(1))."""
        return (
            not self.dirty
            and updater.groups.version == self.groups_version
            and updater.optimizer.kernel() is self.kernel
        )

    def items(self) -> list:
        """The step's items: one per run, its arrays checked once for the whole buffer."""
        buffer = self.buffer
        w, g = backends.flat_arrays("<ParameterBuffer>", buffer.weight, buffer.grad, self.state)
        fmt = low_precision_format(buffer.weight.dtype)
        offsets, items = buffer.offsets, []
        for run in self.runs:
            lo, hi = int(offsets[run.first]), int(offsets[run.last])
            # float16/bfloat16: float32 working arrays made by the engine (precision.py)
            store = None if fmt is None else (w[lo:hi], g[lo:hi], fmt)
            items.append(Item(
                "<ParameterBuffer>", None if store else w[lo:hi], None if store else g[lo:hi],
                run.state, mult=Multipliers(run.lr_mult, run.wd_mult), offsets=run.offsets,
                members=self.members[run.first : run.last], store=store,
            ))  # fmt: skip
        return items

    def commit(self, updater) -> None:
        """After the first step that did not fail (applied, or skipped and counted): store
        the states this group created."""
        if self.pending:
            # frozen weights took no step: their new states stay pending, as on the other
            # paths, where a frozen weight gets no state
            stepped = {id(m) for run in self.runs for m in self.members[run.first : run.last]}
            for index, member in zip(self.buffer.indices, self.members, strict=True):
                if id(member) in self.pending and id(member) in stepped:
                    updater.states[index] = member
            self.pending -= stepped


def _span(buffer, flat, first, last, step):
    """A WeightState of views over segments ``[first, last)`` of the flat state."""
    lo, hi = int(buffer.offsets[first]), int(buffer.offsets[last])
    views = {name: a[lo:hi] for name, a in flat.items()}
    state = WeightState(
        "<ParameterBuffer>", views, {name: (hi - lo,) for name in views}, (hi - lo,),
        buffer.weight.dtype, buffer.backend, backends.device_of(buffer.weight, buffer.backend),
        step=step,
    )  # fmt: skip
    return state


def _run(buffer, flat, first, last, key, member):
    step, _, lr_mult, wd_mult = key
    state = _span(buffer, flat, first, last, step)
    state.memory = dict(member.memory)
    offsets = buffer.offsets[first : last + 1] - buffer.offsets[first]
    return Run(first, last, lr_mult, wd_mult, state, offsets)

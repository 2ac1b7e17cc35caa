"""The optimizer state of one weight, and how it is created.

A :class:`WeightState` holds a weight's state arrays (flat, and shaped views of them),
its update count, its per-weight scalars and the description of the weight it belongs
to (index, shape, dtype, backend, device). :func:`create_state` makes one as the
optimizer's ``state_spec`` says.
"""

from __future__ import annotations

from collections.abc import Hashable

from mxopt.core.checks import shown
from mxopt.kernels import backends
from mxopt.kernels.precision import low_precision_format
from mxopt.optimizers.base import WEIGHT_COPY, AbstractOptimizer, StateArrays
from mxopt.training import precision

__all__ = ["WeightState", "check_optimizer", "create_state"]


class WeightState(StateArrays):
    """The optimizer state of one weight.

    Attributes:
        step: updates applied so far (the per-weight count that bias
            corrections use).
        arrays: the state arrays by name, each shaped like the weight (some
            optimizers keep differently shaped ones, e.g. Adafactor's factors).
        memory: per-weight scalars kept between updates (e.g. Nadam's running
            momentum product); empty for most optimizers.
        skipped: updates skipped because of non-finite gradients.
        index, shape, dtype, backend, device: the weight this state belongs to.
        portable: a state loaded from a checkpoint, not yet used: its first
            update moves it to the weight's backend and device.
    """

    __slots__ = (
        "_memory",
        "_step",
        "arrays",
        "backend",
        "checked",
        "device",
        "dtype",
        "index",
        "packed",
        "plan",
        "portable",
        "skipped",
    )

    #: Bumped whenever any state's arrays are replaced (list plans hold their addresses).
    replacements = 0
    #: ``[n]``, bumped by every write of an existing state's update count: while it stays,
    #: a list plan knows its states' counts without reading them (a list, not a class
    #: attribute: assigning one would reset the interpreter's attribute caches of states).
    step_writes = [0]

    def __init__(self, index, flat: dict, shapes: dict, shape, dtype, backend, device, step=0):
        super().__init__(flat, shape)
        self.index = index
        self.arrays = {name: flat[name].reshape(shapes[name]) for name in flat}
        self.dtype = dtype
        self.backend = backend
        self.device = device
        self.packed = None  # the buffer Run this state moves with, if any (see buffer.py)
        self.plan = None  # the updater's ready-to-run step for this weight (see engine.py)
        self.checked = None  # the optimizer revision whose state this was last checked for
        self._step = step
        self._memory = {}
        self.skipped = 0
        self.portable = False

    @classmethod
    def loaded(cls, index, flat, arrays, shape, dtype, step, skipped, memory) -> WeightState:
        """A portable NumPy state from a checkpoint, whose arrays were checked there:
        ``arrays`` are ``flat``'s arrays shaped. Skips ``__init__``'s work (a checkpoint
        makes 100,000 of them); sets every attribute ``__init__`` sets."""
        self = cls.__new__(cls)
        self.flat, self.shape, self._by_kernel = flat, shape, {}
        self.index, self.arrays, self.dtype = index, arrays, dtype
        self.backend, self.device = backends.NUMPY, None
        self.packed = self.plan = self.checked = None
        self._step, self._memory, self.skipped, self.portable = step, memory, skipped, True
        return self

    def __getstate__(self) -> dict:
        # What a copy keeps: the flat arrays and their shapes (the shaped views are made
        # again from the copied flat arrays: a copied view would be memory of its own), the
        # step and scalars as this state has them (a packed state's are its run's); no plan
        # (compiled code) and no packing (the copy packs again into its own buffers).
        state = super().__getstate__()
        state.update(
            arrays={name: array.shape for name, array in self.arrays.items()},
            plan=None, packed=None, _step=self.step, _memory=dict(self.memory),
        )  # fmt: skip
        return state

    def __setstate__(self, state: dict) -> None:
        shapes = state.pop("arrays")
        super().__setstate__(state)
        self.arrays = {name: self.flat[name].reshape(shape) for name, shape in shapes.items()}

    def describe(self) -> str:
        return f"index {shown(self.index)}"

    # While packed in a ParameterBuffer, the step count and the per-weight scalars are the
    # run's (one value for all its weights); updating the weight on its own unpacks it.

    @property
    def step(self) -> int:
        run = self.packed
        return self._step if run is None else run.state._step

    @step.setter
    def step(self, value: int) -> None:
        self._unpack()
        self._step = value
        WeightState.step_writes[0] += 1

    @property
    def memory(self) -> dict:
        run = self.packed
        return self._memory if run is None else run.state._memory

    @memory.setter
    def memory(self, value: dict) -> None:
        self._unpack()
        self._memory = value

    def _unpack(self) -> None:
        run = self.packed
        if run is not None:
            self._step, self._memory = run.state._step, run.state._memory
            WeightState.step_writes[0] += 1
            self.packed = None
            run.group.dirty = True

    def place_like(self, index, weight) -> None:
        """Move a portable (just loaded) state to ``weight``'s backend and device."""
        backend = backends.check_weight(index, weight)
        self.move_to(backend, backends.device_of(weight, backend))

    def move_to(self, backend: str, device) -> None:
        """Move the state arrays to ``backend`` (``"numpy"`` or ``"cupy"``) and ``device``."""
        if (backend, device) == (self.backend, self.device):
            return
        flat = {name: backends.to_backend(a, backend, device) for name, a in self.flat.items()}
        self.replace_arrays(flat)
        self.backend, self.device = backend, device

    def replace_arrays(self, flat: dict) -> None:
        """Hold ``flat`` (same names and sizes) instead of the current flat state arrays."""
        shapes = {name: a.shape for name, a in self.arrays.items()}
        self.flat = flat
        self.arrays = {name: flat[name].reshape(shapes[name]) for name in flat}
        self._by_kernel = {}  # cached tuples and plans point at the old arrays
        self.plan = None
        WeightState.replacements += 1

    def __repr__(self) -> str:
        names = ", ".join(self.arrays) or "no arrays"
        return (
            f"WeightState(step={self.step}, {names}; shape={self.shape}, "
            f"dtype={self.dtype}, backend={self.backend})"
        )


def check_optimizer(optimizer) -> None:
    """A clear error unless ``optimizer`` is an mxopt optimizer."""
    if not isinstance(optimizer, AbstractOptimizer):
        raise TypeError(
            f"optimizer must be an mxopt optimizer (e.g. mxopt.SGD()), got {shown(optimizer)}"
        )


def _never_equal(index) -> bool:
    """Whether ``index`` is, or (in a tuple) holds, a float NaN."""
    if isinstance(index, tuple):
        return any(map(_never_equal, index))
    return isinstance(index, float) and index != index


def create_state(
    optimizer: AbstractOptimizer, index: Hashable, weight, *, averaging=None, arena=None
) -> WeightState:
    """New state for ``weight``: the state arrays ``optimizer`` needs, and a step count of 0.

    State arrays live on the weight's backend and device and have its dtype (float32 for a
    float16 or bfloat16 weight, which with ``multi_precision`` also gets a float32 master
    copy, ``"master"``: see :mod:`mxopt.training.precision`);
    each is shaped and starts as ``optimizer.state_spec_for(index, weight.shape)`` says
    (shaped like the weight and 0 unless stated). With ``averaging``
    (:class:`mxopt.EMA` or :class:`mxopt.Polyak`) the state also holds
    ``"average"``, starting as a copy of the weight.
    """
    check_optimizer(optimizer)
    if _never_equal(index):
        raise ValueError(
            f"index {shown(index)} holds a NaN, which never equals itself: its state could never "
            f"be found again (each call would start a new one); use another index"
        )
    backend = backends.check_weight(index, weight)
    spec = dict(optimizer.state_spec_for(index, weight.shape))
    if averaging is not None:
        spec["average"] = WEIGHT_COPY
    if precision.wants_master(optimizer, low_precision_format(weight.dtype)):
        spec[precision.MASTER] = WEIGHT_COPY
    flat, shapes = {}, {}
    for name, start in spec.items():
        shape = weight.shape
        if isinstance(start, tuple):  # (shape, fill): a state array not shaped like the weight
            shape, start = start
        if isinstance(start, str) and start == WEIGHT_COPY:
            flat[name] = backends.flat_copy(weight)
        else:
            size = 1
            for extent in shape:
                size *= extent
            flat[name] = backends.full(weight, backend, size, start, slot=len(flat), arena=arena)
        shapes[name] = shape
    precision.compress_new_state(optimizer, flat, shapes, backend)
    return WeightState(
        index,
        flat,
        shapes,
        weight.shape,
        weight.dtype,
        backend,
        backends.device_of(weight, backend),
    )

"""Per-weight state and the updater, MXNet.jl's ``get_updater`` in Python.

``get_updater(optimizer)`` returns an :class:`Updater`, called as
``updater(index, grad, weight)`` (grad before weight, as in MXNet). On the first
call for an ``index`` (any hashable value) it creates that index's state with
:func:`create_state`; every call then runs :func:`update`. Nothing else is
hidden: the state of each index is in ``updater.states``.

Every update checks everything first (arrays, state, hyperparameters,
non-finite gradient values) and only then runs its kernels, so it either
happens completely or not at all. :meth:`Updater.update_many` extends that to a
set of weights: all are updated or none is.

Thread safety: calls for *different* indices may run in several threads at once
(the kernels release the GIL) and give the same bits as serial calls. Two
threads updating the *same* index at once, or changing options or the
OptimizationState during updates, is not supported.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable

import numpy as np

from mxopt.kernels import backends
from mxopt.optimizers.averaging import AVERAGE_KERNEL, EMA, SWAP_KERNEL, Polyak
from mxopt.optimizers.base import (
    GRAD_MULTIPLIER,
    LR_MULTIPLIER,
    WD_MULTIPLIER,
    WEIGHT_COPY,
    AbstractOptimizer,
    Interval,
    check_number,
)
from mxopt.training.groups import ParamGroups

_DEFAULT_APPLY = AbstractOptimizer.apply
_ndarray = np.ndarray
_NUMPY = backends.NUMPY

__all__ = [
    "NONFINITE_POLICIES",
    "Updater",
    "WeightState",
    "create_state",
    "get_updater",
    "update",
]

#: What an update does with a gradient that holds NaN or infinite values.
#: ``"raise"`` (the default): raise FloatingPointError, nothing modified.
#: ``"skip"``: leave weight, state and step count untouched and count the skip.
#: ``"apply"``: do not check (fastest; NaN and inf flow into the weights).
NONFINITE_POLICIES = ("raise", "skip", "apply")


class WeightState:
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
        "_by_kernel",
        "_fast",
        "_memory",
        "_step",
        "arrays",
        "backend",
        "device",
        "dtype",
        "flat",
        "index",
        "packed",
        "portable",
        "shape",
        "skipped",
    )

    def __init__(self, index, flat: dict, shapes: dict, shape, dtype, backend, device, step=0):
        self.index = index
        self.flat = flat
        self.arrays = {name: flat[name].reshape(shapes[name]) for name in flat}
        self.shape = shape
        self.dtype = dtype
        self.backend = backend
        self.device = device
        self.packed = None  # the buffer Run this state moves with, if any (see mxopt.buffer)
        self._fast = None  # (kernel, arrays, runner) of the last single-kernel update
        self._step = step
        self._memory = {}
        self.skipped = 0
        self.portable = False
        self._by_kernel = {}

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
            self.packed = None
            run.group.dirty = True

    def arrays_for(self, kernel) -> tuple:
        """The flat state arrays ``kernel`` works on, in its order."""
        arrays = self._by_kernel.get(kernel)
        if arrays is None:
            missing = [name for name in kernel.state if name not in self.flat]
            if missing:
                raise ValueError(
                    f"index {self.index!r}: the optimizer's options now call for the "
                    f"{kernel.name!r} kernel, which needs state arrays {missing} that this "
                    f"index's state (made for {tuple(self.flat)}) does not have; create new "
                    f"state (a new updater) after changing such options"
                )
            arrays = self._by_kernel[kernel] = tuple(self.flat[name] for name in kernel.state)
        return arrays

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
        self._by_kernel = {}  # cached tuples and runners point at the old arrays
        self._fast = None

    def __repr__(self) -> str:
        names = ", ".join(self.arrays) or "no arrays"
        return (
            f"WeightState(step={self.step}, {names}; shape={self.shape}, "
            f"dtype={self.dtype}, backend={self.backend})"
        )


def _check_optimizer(optimizer) -> None:
    if not isinstance(optimizer, AbstractOptimizer):
        raise TypeError(
            f"optimizer must be an mxopt optimizer (e.g. mxopt.SGD()), got {optimizer!r}"
        )


def _check_policy(nonfinite) -> None:
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(
            f"nonfinite must be one of {', '.join(map(repr, NONFINITE_POLICIES))}, "
            f"got {nonfinite!r}"
        )


def create_state(
    optimizer: AbstractOptimizer, index: Hashable, weight, *, averaging=None
) -> WeightState:
    """New state for ``weight``: the state arrays ``optimizer`` needs, and a step count of 0.

    State arrays live on the weight's backend and device and have its dtype;
    each is shaped and starts as ``optimizer.state_spec(weight.shape)`` says
    (shaped like the weight and 0 unless stated). With ``averaging``
    (:class:`mxopt.EMA` or :class:`mxopt.Polyak`) the state also holds
    ``"average"``, starting as a copy of the weight.
    """
    _check_optimizer(optimizer)
    backend = backends.check_weight(index, weight)
    spec = dict(optimizer.state_spec(weight.shape))
    if averaging is not None:
        spec["average"] = WEIGHT_COPY
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
            flat[name] = backends.full(weight, backend, size, start, slot=len(flat))
        shapes[name] = shape
    return WeightState(
        index,
        flat,
        shapes,
        weight.shape,
        weight.dtype,
        backend,
        backends.device_of(weight, backend),
    )


_backend_modules: dict = {}


def backend_module(backend: str):
    """The kernel runner for ``"numpy"`` (:mod:`mxopt.kernels.cpu`) or ``"cupy"`` (:mod:`mxopt.kernels.cuda`)."""
    module = _backend_modules.get(backend)
    if module is None:
        import importlib

        name = "mxopt.kernels.cpu" if backend == backends.NUMPY else "mxopt.kernels.cuda"
        module = _backend_modules[backend] = importlib.import_module(name)
    return module


def _flat_arrays(index, weight, grad, state: WeightState):
    if not isinstance(state, WeightState):
        raise TypeError(
            f"index {index!r}: state must be a WeightState made by create_state, got {state!r}"
        )
    if state.portable:
        state.place_like(index, weight)
    return backends.flat_arrays(index, weight, grad, state)


@contextlib.contextmanager
def multipliers(lr_mult: float, wd_mult: float):
    """Set the learning-rate and weight-decay multipliers of the updates inside."""
    if lr_mult == 1.0 and wd_mult == 1.0:
        yield
        return
    lr_token, wd_token = LR_MULTIPLIER.set(lr_mult), WD_MULTIPLIER.set(wd_mult)
    try:
        yield
    finally:
        LR_MULTIPLIER.reset(lr_token)
        WD_MULTIPLIER.reset(wd_token)


def _nonfinite_error(bad: int, size: int, indices) -> FloatingPointError:
    where = ", ".join(repr(i) for i in indices[:5]) + (", ..." if len(indices) > 5 else "")
    label = "index" if len(indices) == 1 else "indices"
    return FloatingPointError(
        f"{label} {where}: grad holds {bad} NaN or infinite value(s) out of {size}; "
        f"the update was not applied (nonfinite='raise'; use nonfinite='skip' to skip such "
        f"steps)"
    )


def update(
    optimizer: AbstractOptimizer,
    index: Hashable,
    weight,
    grad,
    state: WeightState,
    *,
    averaging=None,
    nonfinite: str = "raise",
) -> bool:
    """Apply one update of ``optimizer`` to ``weight`` in place (weight before grad).

    ``grad`` is the gradient summed over the mini-batch; it is never modified.
    Raises ``TypeError``/``ValueError`` naming ``index`` for bad arrays and
    ``RuntimeError`` when the optimizer has no ``OptimizationState``; a
    gradient with NaN or infinite values is handled by ``nonfinite`` (see
    :data:`NONFINITE_POLICIES`). In every case where the update is not applied
    nothing has been modified. With ``averaging``, the state's ``"average"``
    then moves towards the new weight. Returns whether the update was applied.
    """
    w, g = _flat_arrays(index, weight, grad, state)
    opt_state = optimizer.require_state()
    step = state.step + 1
    if optimizer.has_memory:
        memory = optimizer.next_memory(opt_state, step, state.memory)
    if averaging is not None:
        average = state.arrays_for(AVERAGE_KERNEL)
        rate = averaging.rate(step)
    backend = backend_module(state.backend)
    bad = optimizer.apply(backend, w, g, state, opt_state, step, nonfinite != "apply")
    if bad:
        if nonfinite == "skip":
            state.skipped += 1
            return False
        raise _nonfinite_error(bad, g.size, [index])
    if averaging is not None:
        backend.run(AVERAGE_KERNEL, w, g, average, (rate,), False)
    if optimizer.has_memory:
        state.memory = memory
    state.step = step
    state.portable = False
    return True


class Updater:
    """``updater(index, grad, weight)``: per-index state created on first use, then updated.

    Args:
        optimizer: the optimizer to apply.
        averaging: ``None``, :class:`~mxopt.EMA` or :class:`~mxopt.Polyak`: keep a
            moving average of each weight in its state as ``"average"``.
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"apply"``: what to do
            with NaN or infinite gradient values (see :data:`NONFINITE_POLICIES`).
        max_grad_norm: clip the global norm of the (normalized) gradients of
            each :meth:`update_many` call to this value, as torch's
            ``clip_grad_norm_``.
        loss_scaler: a :class:`~mxopt.DynamicLossScaler` for float16 training
            (gradients are divided by its scale; overflowing steps are skipped).

    Attributes:
        states: ``{index: WeightState}`` for every index seen so far.
    """

    def __init__(
        self,
        optimizer: AbstractOptimizer,
        *,
        averaging=None,
        nonfinite: str = "raise",
        max_grad_norm: float | None = None,
        loss_scaler=None,
    ):
        from mxopt.training.loss_scaling import DynamicLossScaler

        _check_optimizer(optimizer)
        if averaging is not None and not isinstance(averaging, (EMA, Polyak)):
            raise TypeError(
                f"averaging must be None, mxopt.EMA(...) or mxopt.Polyak(), got {averaging!r}"
            )
        _check_policy(nonfinite)
        if max_grad_norm is not None:
            check_number("Updater", "max_grad_norm", max_grad_norm, Interval(gt=0.0))
        if loss_scaler is not None and not isinstance(loss_scaler, DynamicLossScaler):
            raise TypeError(
                f"loss_scaler must be None or a mxopt.DynamicLossScaler, got {loss_scaler!r}"
            )
        self._plain = False
        self.optimizer = optimizer
        self.averaging = averaging
        self.nonfinite = nonfinite
        self.max_grad_norm = max_grad_norm
        self.loss_scaler = loss_scaler
        self.states: dict = {}
        self.groups = ParamGroups()
        self._creating = threading.Lock()
        self._groups: dict = {}  # id(ParameterBuffer) -> BufferGroup

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in ("optimizer", "averaging", "loss_scaler", "max_grad_norm"):
            # The short path of __call__ serves the updates that need no more than one
            # kernel: decided here, once, rather than at every call.
            optimizer = getattr(self, "optimizer", None)
            object.__setattr__(
                self,
                "_plain",
                optimizer is not None
                and type(optimizer).apply is _DEFAULT_APPLY
                and not optimizer.has_memory
                and getattr(self, "averaging", None) is None
                and getattr(self, "loss_scaler", None) is None
                and getattr(self, "max_grad_norm", None) is None,
            )

    # -- one weight ----------------------------------------------------------------------

    def __call__(self, index: Hashable, grad, weight) -> None:
        try:
            state = self.states.get(index)
        except TypeError:
            raise TypeError(f"index must be hashable, got {index!r}") from None
        if (
            state is not None
            and self._plain
            and state.packed is None
            and not state.portable
            and self.groups.trivial
        ):
            # The common case, kept short: one elementwise kernel, scalars cached per step.
            optimizer = self.optimizer
            shape = state.shape
            if (  # backends.flat_arrays's own fast path, inline (NumPy arrays as expected)
                type(weight) is _ndarray
                and type(grad) is _ndarray
                and weight.shape == shape
                and grad.shape == shape
                and weight.dtype is state.dtype
                and grad.dtype is state.dtype
                and state.backend == _NUMPY
                and grad is not weight
                and weight.flags.carray
                and grad.flags.carray
            ):
                w = weight if weight.ndim == 1 else weight.reshape(-1)
                g = grad if grad.ndim == 1 else grad.reshape(-1)
            else:
                w, g = backends.flat_arrays(index, weight, grad, state)
            opt_state = optimizer._state or optimizer.require_state()
            step = state._step + 1
            kernel = optimizer.kernel()
            fast = state._fast
            if fast is None or fast[0] is not kernel:
                runner = backend_module(state.backend).runner(kernel, state.dtype, w.size)
                fast = state._fast = (kernel, state.arrays_for(kernel), runner)
            scalars = optimizer.cached_kernel_scalars(opt_state, step, state._memory)
            bad = fast[2](w, g, fast[1], scalars, self.nonfinite != "apply")
            if bad:
                if self.nonfinite == "skip":
                    state.skipped += 1
                    return
                raise _nonfinite_error(bad, g.size, [index])
            state._step = step
            return
        self._general_call(index, grad, weight, state)

    def _general_call(self, index, grad, weight, state) -> None:
        if self.loss_scaler is not None or self.max_grad_norm is not None:
            raise ValueError(
                "this updater has a loss_scaler or max_grad_norm, which act on all the "
                "gradients of a step together: call updater.update_many(indices, grads, weights)"
            )
        groups = self.groups
        if not groups.trivial:
            lr_mult, wd_mult, frozen = groups.resolve(index)
            if frozen:
                return
            with multipliers(lr_mult, wd_mult):
                return self._call(index, grad, weight, state)
        self._call(index, grad, weight, state)

    def _call(self, index, grad, weight, state) -> None:
        if state is None:
            with self._creating:  # one state per index, even with concurrent first calls
                state = self.states.get(index)
                if state is None:
                    state = create_state(self.optimizer, index, weight, averaging=self.averaging)
                    applied = update(
                        self.optimizer, index, weight, grad, state,
                        averaging=self.averaging, nonfinite=self.nonfinite,
                    )  # fmt: skip
                    if applied:
                        self.states[index] = state  # kept only once an update succeeded
                    return
        update(
            self.optimizer, index, weight, grad, state,
            averaging=self.averaging, nonfinite=self.nonfinite,
        )  # fmt: skip

    # -- many weights at once ------------------------------------------------------------

    def update_many(self, indices, grads, weights) -> bool:
        """Update several weights as one step: all of them, or none.

        Every weight, gradient and state is checked, and the gradients'
        non-finite values and global norm are computed (one read of each
        gradient, float64 sums), before anything is written. Then:

        * non-finite values: with a loss scaler, or ``nonfinite="skip"``, the
          whole step is skipped and counted; with ``"raise"`` a
          FloatingPointError names the indices; with ``"apply"`` the step goes on;
        * with ``max_grad_norm``, every gradient is scaled by
          ``min(1, max_grad_norm / (norm + 1e-6))``, ``norm`` being the global
          norm of the normalized gradients (``grad * grad_scale / batch_size``,
          divided by the loss scale);
        * each weight is updated by the optimizer (the scaling happens inside
          the kernels; your gradients are not modified).

        Returns whether the step was applied. The lists of a
        :class:`~mxopt.ParameterBuffer` (``buffer.indices, buffer.grad_list,
        buffer.weight_list``) take the packed path of :meth:`update_buffer`.
        """
        buffer = getattr(grads, "buffer", None)
        if buffer is not None and buffer.indices is indices and buffer.weight_list is weights:
            return self.update_buffer(buffer)  # a ParameterBuffer's own lists: the packed path
        return self._update_lists(indices, grads, weights)

    def _update_lists(self, indices, grads, weights) -> bool:
        from mxopt.kernels.statistics import gradient_statistics

        indices, grads, weights = list(indices), list(grads), list(weights)
        if not self.groups.trivial:  # frozen weights are left out of the step entirely
            kept = [k for k, i in enumerate(indices) if not self.groups.resolve(i)[2]]
            if len(kept) != len(indices) and len(indices) == len(grads) == len(weights):
                indices = [indices[k] for k in kept]
                grads = [grads[k] for k in kept]
                weights = [weights[k] for k in kept]
        if not (len(indices) == len(grads) == len(weights)):
            raise ValueError(
                f"update_many: got {len(indices)} indices, {len(grads)} grads and "
                f"{len(weights)} weights; they must be parallel lists"
            )
        if len(set(indices)) != len(indices):
            raise ValueError("update_many: an index appears more than once")
        optimizer = self.optimizer
        prepared, by_backend = [], {}
        for index, grad, weight in zip(indices, grads, weights, strict=True):
            state = self.states.get(index)
            new = state is None
            if new:
                state = create_state(optimizer, index, weight, averaging=self.averaging)
            w, g = _flat_arrays(index, weight, grad, state)
            prepared.append((index, w, g, state, new))
            by_backend.setdefault(state.backend, []).append(g)
        opt_state = optimizer.require_state()

        multiplier = 1.0
        overflow = False
        if self.nonfinite != "apply" or self.loss_scaler is not None or self.max_grad_norm:
            sum_squares, bad = 0.0, 0
            for backend, flats in by_backend.items():
                stats = gradient_statistics(backend_module(backend), flats)
                sum_squares += stats.sum_squares
                bad += stats.nonfinite
            if bad:
                if self.loss_scaler is None and self.nonfinite == "raise":
                    # name the culprits (a second look, only on this failure path)
                    counts = self._nonfinite_counts(prepared)
                    bad_indices = [p[0] for p, count in zip(prepared, counts, strict=True) if count]
                    size = sum(p[2].size for p in prepared)
                    raise _nonfinite_error(bad, size, bad_indices)
                overflow = self.loss_scaler is not None or self.nonfinite == "skip"
            if overflow:
                for _, _, _, state, new in prepared:
                    if not new:
                        state.skipped += 1
                if self.loss_scaler is not None:
                    self.loss_scaler.record(overflow=True)
                return False
            if self.loss_scaler is not None:
                multiplier = 1.0 / self.loss_scaler.scale
            if self.max_grad_norm and not bad:
                norm = (sum_squares**0.5) * abs(optimizer.gradient_rescale(opt_state)) * multiplier
                if norm > self.max_grad_norm:
                    multiplier *= self.max_grad_norm / (norm + 1e-6)

        token = GRAD_MULTIPLIER.set(multiplier)
        try:
            self._apply_all(prepared, opt_state)
        finally:
            GRAD_MULTIPLIER.reset(token)
        if self.loss_scaler is not None:
            self.loss_scaler.record(overflow=False)
        return True

    def update_buffer(self, buffer) -> bool:
        """Update every weight of a :class:`~mxopt.ParameterBuffer` from its gradient.

        The same step, with the same bits, as ``update_many(buffer.indices,
        buffer.grad_list, buffer.weight_list)``, but in a handful of kernel calls
        over the flat buffer instead of one per weight: the state of all indices
        lives in flat arrays (each index's ``WeightState`` holds views of them).
        Optimizers with per-tensor norms (LAMB, LARS) run segmented kernels, one
        segment per weight. The step falls back to one call per weight when the
        indices' step counts differ (some were updated on their own) or the
        optimizer keeps state not shaped like the weights (Adafactor).
        """
        from mxopt.training.buffer import BufferGroup, ParameterBuffer

        if not isinstance(buffer, ParameterBuffer):
            raise TypeError(f"update_buffer: expected a mxopt.ParameterBuffer, got {buffer!r}")
        group = self._groups.get(id(buffer))
        if group is None or group.buffer is not buffer or not group.is_current(self):
            group = BufferGroup.build(self, buffer)
            self._groups[id(buffer)] = group
        if group is None:
            return self._update_lists(buffer.indices, buffer.grad_list, buffer.weight_list)
        return self._update_group(group)

    def _update_group(self, group) -> bool:
        from mxopt.kernels.statistics import GRAD_SQUARES_KERNEL

        optimizer, buffer, averaging = self.optimizer, group.buffer, self.averaging
        w, g = _flat_arrays("<ParameterBuffer>", buffer.weight, buffer.grad, group.state)
        opt_state = optimizer.require_state()
        backend = backend_module(group.state.backend)
        offsets, runs, members = buffer.offsets, group.runs, group.members
        plans = []
        for run in runs:  # everything that can fail, first
            step = run.state.step + 1
            with multipliers(run.lr_mult, run.wd_mult):
                memory = optimizer.next_memory(opt_state, step, run.state.memory)
                optimizer.cached_kernel_scalars(opt_state, step, run.state.memory)
            average = run.state.arrays_for(AVERAGE_KERNEL) if averaging is not None else None
            rate = averaging.rate(step) if averaging is not None else None
            plans.append((run, step, memory, average, rate))

        def per_index_statistics():
            empty = backends.scalar_table(w, np.empty((len(offsets) - 1, 0)))
            _, sums = backend.run_segments(GRAD_SQUARES_KERNEL, g, g, (), offsets, empty, False)
            sums = backends.to_host(sums).copy()
            active = np.zeros(len(offsets) - 1, dtype=bool)
            for run in runs:
                active[run.first : run.last] = True
            sums[~active] = 0  # frozen weights' gradients do not matter
            return sums

        def refuse(bad, sums):
            """Skip (and count) or raise for a step with non-finite gradients."""
            if self.loss_scaler is not None or self.nonfinite == "skip":
                for run in runs:
                    for member in members[run.first : run.last]:
                        if id(member) not in group.pending:
                            member.skipped += 1
                if self.loss_scaler is not None:
                    self.loss_scaler.record(overflow=True)
                return False
            culprits = [i for i, c in zip(buffer.indices, sums[:, 1], strict=True) if c]
            raise _nonfinite_error(bad, g.size, culprits)

        whole = len(runs) == 1 and runs[0].first == 0 and runs[0].last == len(members)
        multiplier, check = 1.0, self.nonfinite != "apply"
        if self.loss_scaler is not None or self.max_grad_norm or (check and not whole):
            sums = per_index_statistics()
            bad = int(sums[:, 1].sum())
            if bad and (self.loss_scaler is not None or self.nonfinite != "apply"):
                return refuse(bad, sums)
            if self.loss_scaler is not None:
                multiplier = 1.0 / self.loss_scaler.scale
            if self.max_grad_norm and not bad:
                sum_squares = 0.0
                for run in runs:
                    for value in sums[run.first : run.last, 0]:  # in index order, as update_many
                        sum_squares += float(value)
                norm = (sum_squares**0.5) * abs(optimizer.gradient_rescale(opt_state)) * multiplier
                if norm > self.max_grad_norm:
                    multiplier *= self.max_grad_norm / (norm + 1e-6)
            check = False  # done above
        # else: one run over the whole buffer, whose first kernel checks the gradient

        token = GRAD_MULTIPLIER.set(multiplier)
        try:
            for run, step, memory, average, rate in plans:
                lo, hi = int(offsets[run.first]), int(offsets[run.last])
                w_run, g_run = w[lo:hi], g[lo:hi]
                with multipliers(run.lr_mult, run.wd_mult):
                    if optimizer.per_tensor:
                        bad = optimizer.apply_segments(
                            backend, w_run, g_run, run.state, run.offsets, opt_state, step, check
                        )
                    else:
                        bad = optimizer.apply(
                            backend, w_run, g_run, run.state, opt_state, step, check
                        )
                if bad:  # only from the fused check of a whole-buffer run: nothing was written
                    return refuse(bad, per_index_statistics())
                if average is not None:
                    backend.run(AVERAGE_KERNEL, w_run, g_run, average, (rate,), False)
                run.state.step, run.state.memory = step, memory  # its members read these
        finally:
            GRAD_MULTIPLIER.reset(token)
        if group.pending:
            for index, member in zip(buffer.indices, members, strict=True):
                if id(member) in group.pending:
                    self.states[index] = member
            group.pending = set()
        if self.loss_scaler is not None:
            self.loss_scaler.record(overflow=False)
        return True

    def _nonfinite_counts(self, prepared):
        from mxopt.kernels.statistics import gradient_statistics

        return [
            gradient_statistics(backend_module(state.backend), [g]).nonfinite
            for _, _, g, state, _ in prepared
        ]

    def _apply_all(self, prepared, opt_state) -> None:
        optimizer, averaging, groups = self.optimizer, self.averaging, self.groups
        plans = []
        for index, w, g, state, new in prepared:  # everything that can fail, first
            step = state.step + 1
            lr_mult, wd_mult, _ = groups.resolve(index) if not groups.trivial else (1.0, 1.0, 0)
            with multipliers(lr_mult, wd_mult):
                memory = optimizer.next_memory(opt_state, step, state.memory)
                optimizer.cached_kernel_scalars(opt_state, step, state.memory)
            average = state.arrays_for(AVERAGE_KERNEL) if averaging is not None else None
            rate = averaging.rate(step) if averaging is not None else None
            plans.append((index, w, g, state, new, step, memory, average, rate, lr_mult, wd_mult))
        for index, w, g, state, new, step, memory, average, rate, lr_mult, wd_mult in plans:
            backend = backend_module(state.backend)
            with multipliers(lr_mult, wd_mult):
                optimizer.apply(backend, w, g, state, opt_state, step, False)
            if average is not None:
                backend.run(AVERAGE_KERNEL, w, g, average, (rate,), False)
            if optimizer.has_memory:
                state.memory = memory
            state.step = step
            state.portable = False
            if new:
                self.states[index] = state

    # -- parameter groups ------------------------------------------------------------------

    def set_lr_mult(self, mapping) -> None:
        """Learning-rate multipliers by index or glob pattern (see :mod:`mxopt.groups`)."""
        self.groups.set_lr_mult(mapping)

    def set_wd_mult(self, mapping) -> None:
        """Weight-decay multipliers by index or glob pattern (see :mod:`mxopt.groups`)."""
        self.groups.set_wd_mult(mapping)

    def exclude_from_weight_decay(self, patterns=None) -> None:
        """No weight decay for indices matching ``patterns`` (default: biases and norms)."""
        if patterns is None:
            self.groups.exclude_from_weight_decay()
        else:
            self.groups.exclude_from_weight_decay(patterns)

    def set_groups(self, groups) -> None:
        """Ordered groups of indices, for :meth:`discriminative_lr` and freezing."""
        self.groups.set_groups(groups)

    def discriminative_lr(self, lr, base_lr=None) -> list:
        """Per-group learning rates from ``slice(lo, hi)`` (fastai); see :mod:`mxopt.groups`."""
        return self.groups.discriminative_lr(lr, base_lr)

    def freeze_to(self, n: int) -> None:
        """Freeze the groups before group ``n``; unfreeze the rest."""
        self.groups.freeze_to(n)

    def freeze(self) -> None:
        """Freeze every group but the last."""
        self.groups.freeze()

    def unfreeze(self) -> None:
        """Unfreeze every group."""
        self.groups.unfreeze()

    @property
    def skipped(self) -> int:
        """Updates skipped because of non-finite gradients, summed over indices."""
        return sum(state.skipped for state in self.states.values())

    # -- averages ------------------------------------------------------------------------

    @property
    def averages(self) -> dict:
        """``{index: average array}`` (empty without ``averaging``)."""
        if self.averaging is None:
            return {}
        return {index: state.arrays["average"] for index, state in self.states.items()}

    def swap_averages(self, weights) -> None:
        """Exchange each weight's contents with its average, in place.

        ``weights`` maps indices to their weight arrays (e.g. a dict of your
        model's parameters). Calling it twice restores everything exactly. All
        weights are checked before anything is swapped.
        """
        if self.averaging is None:
            raise ValueError("swap_averages: this updater keeps no averages (averaging=None)")
        checked = []
        for index, weight in dict(weights).items():
            state = self.states.get(index)
            if state is None:
                raise KeyError(f"swap_averages: index {index!r} has no state (never updated)")
            if state.portable:
                state.place_like(index, weight)
            w = backends.flat_weight(index, weight, state)
            checked.append((w, state))
        for w, state in checked:
            backend_module(state.backend).run(
                SWAP_KERNEL, w, w, state.arrays_for(SWAP_KERNEL), (), False
            )

    @contextlib.contextmanager
    def averaged(self, weights):
        """``with updater.averaged(weights):`` evaluate with the averaged weights."""
        self.swap_averages(weights)
        try:
            yield weights
        finally:
            self.swap_averages(weights)

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume exactly, as plain values and NumPy arrays (copies).

        See :func:`mxopt.checkpoint.updater_state_dict` for the layout.
        """
        from mxopt.training.checkpoint import updater_state_dict

        return updater_state_dict(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned; checked completely before anything changes.

        The optimizer's options, its OptimizationState (updated in place when
        it has one), the averaging rule, the policies, the loss scaler and every
        index's state are restored; the saved optimizer must be of the same type.
        """
        from mxopt.training.checkpoint import load_updater_state_dict

        load_updater_state_dict(self, state_dict)

    def save(self, path) -> None:
        """Write a checkpoint to ``path`` atomically (see :mod:`mxopt.checkpoint`)."""
        from mxopt.training.checkpoint import save_updater

        save_updater(self, path)

    def __repr__(self) -> str:
        return f"Updater({self.optimizer!r}, {len(self.states)} indices)"


def get_updater(
    optimizer: AbstractOptimizer,
    *,
    averaging=None,
    nonfinite: str = "raise",
    max_grad_norm: float | None = None,
    loss_scaler=None,
) -> Updater:
    """An :class:`Updater` for ``optimizer``; call it as ``updater(index, grad, weight)``.

    See :class:`Updater` for the options: ``averaging`` (a moving average of
    every weight), ``nonfinite`` (what to do with NaN/inf gradients),
    ``max_grad_norm`` (global norm clipping) and ``loss_scaler`` (float16).
    """
    return Updater(
        optimizer,
        averaging=averaging,
        nonfinite=nonfinite,
        max_grad_norm=max_grad_norm,
        loss_scaler=loss_scaler,
    )

"""The step engine: the one path every update takes.

A *step* is a list of :class:`Item` s: single weights (``updater(index, grad, weight)``,
``update_many``) or runs of a packed buffer (``update_buffer``). :func:`run_step` takes
it through the same phases whatever its origin:

1. **check** (when the items are made, :func:`make_item`): every array against the
   weight's state; state found, or created but not yet stored;
2. **decide**: the step's gradient statistics (computed here, or handed in by the caller,
   e.g. global ones from a distributed step) against the non-finite policy, the loss
   scaler and ``max_grad_norm``: skip, raise, or go on with a gradient multiplier;
3. **prepare**: for every item its update count, per-weight scalars, host scalars
   (computed once per step and shared by the items that have the same step count and
   multipliers), averaging rate, and the presence of every state array the optimizer's
   current options need;
4. **apply**: kernels only; nothing is written before this phase;
5. **commit**: step counts, per-weight scalars, new states, the loss scaler's record.

Everything that can fail happens in phases 1 to 3, so a step is applied completely or
not at all. When a step has a single item and needs no statistics beyond the
non-finite check, that check is fused into the item's first kernel (which returns
before writing anything when it finds a NaN or an infinity).

The updater's per-weight *plan* (:class:`Plan`) is the same step for one weight with
the results of phases 2 and 3 that do not change from call to call kept ready: it is a
cache of this path, not a second copy of it.
"""

from __future__ import annotations

import math

from mxopt.core.checks import Interval, check_number, shown, to_float
from mxopt.core.state import warn_if_not_advanced
from mxopt.kernels import backend_module, backends, direct_module
from mxopt.kernels.precision import low_precision_format
from mxopt.kernels.rows import RowSparse, coalesce, densify
from mxopt.kernels.statistics import GRAD_SQUARES_KERNEL, segment_statistics
from mxopt.optimizers.averaging import AVERAGE_KERNEL
from mxopt.optimizers.base import NO_MULTIPLIERS, AbstractOptimizer, Multipliers
from mxopt.training import precision

__all__ = [
    "NONFINITE_POLICIES",
    "Item",
    "Plan",
    "make_plan",
    "StepStatistics",
    "check_disjoint",
    "check_policy",
    "host_scalars",
    "scalars_entry",
    "make_item",
    "nonfinite_error",
    "ordered_sums",
    "run_step",
]

#: What an update does with a gradient that holds NaN or infinite values.
#: ``"raise"`` (the default): raise FloatingPointError, nothing modified.
#: ``"skip"``: leave weight, state and step count untouched and count the skip.
#: ``"apply"``: do not check (fastest; NaN and inf flow into the weights).
NONFINITE_POLICIES = ("raise", "skip", "apply")


def check_policy(nonfinite) -> None:
    """A clear error unless ``nonfinite`` is one of :data:`NONFINITE_POLICIES`."""
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(
            f"nonfinite must be one of {', '.join(map(repr, NONFINITE_POLICIES))}, "
            f"got {shown(nonfinite)}"
        )


class StepStatistics:
    """What a step's decisions read from its gradients.

    Attributes:
        sum_squares: the sum of the squares of the finite gradient values (float64).
        nonfinite: how many gradient values are NaN or infinite.
        culprits: the indices whose gradients hold those values (where known).
    """

    __slots__ = ("culprits", "nonfinite", "sum_squares")

    def __init__(self, sum_squares: float = 0.0, nonfinite: int = 0, culprits=()):
        self.sum_squares = float(sum_squares)
        self.nonfinite = int(nonfinite)
        self.culprits = list(culprits)

    @property
    def norm(self) -> float:
        """The global L2 norm, or ``inf`` when any value is not finite."""
        return math.inf if self.nonfinite else math.sqrt(self.sum_squares)


class Item:
    """One unit of a step: a weight, or a run of a packed buffer's weights.

    Made by :func:`make_item` (a weight; ``new`` when its state is not stored yet) or by
    a buffer group (a run): then ``offsets`` are the boundaries of the run's weights
    within ``w`` and ``members`` their states. The engine fills ``step``, ``memory``,
    ``prepared`` and ``rate`` in its prepare phase. A :class:`~mxopt.RowSparse`
    gradient gives an item whose ``g`` is the flat values of its distinct rows and
    ``rows`` their :class:`~mxopt.kernels.rows.CoalescedRows` (None for dense ones). For
    a float16 or bfloat16 weight, ``w`` and ``g`` are float32 working arrays and ``store``
    is ``(16-bit flat weight, 16-bit flat gradient, format)``: the weight is rounded into
    at the end of the step; ``work``, when the state holds moments in bfloat16 or 8 bits,
    is the float32 state the step computes with (stored back at the end; see
    :mod:`mxopt.training.precision`).
    """

    __slots__ = ("g", "index", "members", "memory", "mult", "new", "offsets", "prepared",
                 "rate", "rows", "state", "step", "store", "w", "work")  # fmt: skip

    def __init__(self, index, w, g, state, *, new=False, mult=NO_MULTIPLIERS, offsets=None,
                 members=None, rows=None, store=None):  # fmt: skip
        self.index = index
        self.w = w
        self.g = g
        self.state = state
        self.new = new
        self.mult = mult
        self.offsets = offsets
        self.members = members
        self.rows = rows
        self.store = store
        self.work = None  # float32 state arrays of moments stored in bfloat16 or 8 bits

    def indices(self) -> list:
        """The indices this item updates."""
        return [self.index] if self.members is None else [m.index for m in self.members]


def make_item(index, grad, weight, state, optimizer, *, new=False,
              mult=NO_MULTIPLIERS) -> Item:  # fmt: skip
    """The item of one weight: its arrays checked against its state and flattened (a
    :class:`~mxopt.RowSparse` gradient checked against the weight and coalesced; a
    float16/bfloat16 weight's arrays widened to float32 working arrays)."""
    if state.portable:
        state.place_like(index, weight)
    fmt = low_precision_format(state.dtype)
    if isinstance(grad, RowSparse):
        if fmt is not None:
            raise precision.refuse(index, "a RowSparse gradient", state.dtype)
        if precision.is_compressed(state):
            raise ValueError(
                f"index {shown(index)}: a RowSparse gradient cannot update moments stored in "
                f"bfloat16 or 8 bits (state_dtype); use state_dtype='float32'"
            )
        w = backends.flat_weight(index, weight, state)
        g, rows = coalesce(index, grad, weight, backend_module(state.backend))
        return Item(index, w, g, state, new=new, mult=mult, rows=rows)
    w, g = backends.flat_arrays(index, weight, grad, state)
    if fmt is not None:  # float32 working arrays made when the step knows it needs them
        precision.check_master(optimizer, state)
        return Item(index, None, None, state, new=new, mult=mult, store=(w, g, fmt))
    return Item(index, w, g, state, new=new, mult=mult)


def lazy_rows(optimizer) -> bool:
    """Whether ``optimizer`` updates only the rows of a RowSparse gradient (a lazy update);
    a clear error when it is asked to but its options call for more than one elementwise
    kernel (e.g. ``cautious=True``, whose scale counts the whole tensor)."""
    if not optimizer.updates_rows():
        return False
    if not optimizer.single_kernel or optimizer.kernel().reduces:
        raise ValueError(
            f"{type(optimizer).__name__}: lazy updates of RowSparse gradients need a step of "
            f"one elementwise kernel, which these options do not give (cautious updates, "
            f"say); use lazy_update=False (the rows are then scattered into a dense gradient)"
        )
    return True


def check_disjoint(items) -> None:
    """A clear error when the memory of one item's weight overlaps another's weight or any
    item's gradient (the same array under two indices, or overlapping views): the step
    would update memory twice, or read what it has already written."""
    singles = [item for item in items if item.offsets is None]
    if len(singles) < 2:
        return  # one weight: flat_arrays has checked its gradient against it
    intervals = [
        backends.memory_interval(a)
        for item in singles
        for a in ((item.w, item.g) if item.store is None else item.store[:2])
    ]
    starts, stops = zip(*intervals, strict=True)
    writable = [k % 2 == 0 for k in range(len(intervals))]
    k = backends.first_overlap(starts, stops, writable)
    if k < 0:
        return
    for j in range(len(intervals)):  # the partner, for the message
        if j != k and (writable[j] or writable[k]) and backends.overlap(intervals[j], intervals[k]):
            break

    def what(n):
        return f"the {'weight' if n % 2 == 0 else 'grad'} of index {shown(singles[n // 2].index)}"

    raise ValueError(
        f"update_many: the memory of {what(k)} overlaps {what(j)}; an array (or views of "
        f"one memory) under two indices would be updated twice or read after it was written"
    )


def nonfinite_error(bad: int, size: int, indices) -> FloatingPointError:
    """The error of ``nonfinite="raise"``, naming (up to five of) the culprits."""
    where = ", ".join(repr(i) for i in indices[:5]) + (", ..." if len(indices) > 5 else "")
    label = "index" if len(indices) == 1 else "indices"
    return FloatingPointError(
        f"{label} {where}: grad holds {bad} NaN or infinite value(s) out of {size}; "
        f"the update was not applied (nonfinite='raise'; use nonfinite='skip' to skip such "
        f"steps)"
    )


# -- phase 2: statistics and decisions -------------------------------------------------------


def local_statistics(items) -> StepStatistics:
    """The statistics of the items' gradients: one read of each, float64 sums in the
    items' order (and their members' order within a run)."""
    stats = StepStatistics()
    for item in items:
        backend = backend_module(item.state.backend)
        if item.offsets is None:
            _, sum_squares, bad = backend.run(GRAD_SQUARES_KERNEL, item.g, item.g, (), (), False)
            stats.sum_squares += sum_squares
            if bad:
                stats.nonfinite += int(bad)
                stats.culprits.append(item.index)
            continue
        sums, counts = segment_statistics(backend, item.g, item.offsets)
        for member, sum_squares, bad in zip(item.members, sums.tolist(), counts.tolist(),
                                            strict=True):  # fmt: skip
            stats.sum_squares += sum_squares
            if bad:
                stats.nonfinite += bad
                stats.culprits.append(member.index)
    return stats


def _refuse(policy, items, stats: StepStatistics) -> bool:
    """Skip (counting the skip) or raise for a step whose gradients are not finite."""
    if policy.loss_scaler is not None or policy.nonfinite == "skip":
        # new states count the skip too: the caller keeps them (at step 0), as optax's
        # apply_if_finite keeps its count for parameters that never took a step
        for item in items:
            for member in item.members if item.members is not None else (item.state,):
                member.skipped += 1
        if policy.loss_scaler is not None:
            policy.loss_scaler.record(overflow=True)
        return False
    culprits = stats.culprits or [index for item in items for index in item.indices()]
    named = set(culprits)
    # the size of the gradients named, not of the whole step (a run names its members)
    size = sum(item.g.size for item in items if named.issuperset(item.indices()))
    raise nonfinite_error(stats.nonfinite, size or sum(item.g.size for item in items), culprits)


def checked_factor(name: str, value) -> float:
    """A caller's factor on the gradients or the learning rate as a float, or a clear
    error unless it is a finite real number >= 0 (a NaN or negative one would corrupt
    the weights or reverse the step)."""
    value = to_float(value)
    check_number("update", name, value, Interval(ge=0.0))
    return value


def gradient_multiplier(policy, optimizer, opt_state, stats, multiplier: float) -> float:
    """The factor every gradient of the step is multiplied by: ``multiplier`` (given by
    the caller), divided by the loss scale, times the global-norm clipping factor."""
    if policy.loss_scaler is not None:
        multiplier = multiplier / policy.loss_scaler.scale
    if policy.max_grad_norm and not stats.nonfinite:
        rescale = abs(optimizer.gradient_rescale(opt_state))
        norm = (stats.sum_squares**0.5) * rescale * multiplier
        if norm > policy.max_grad_norm:
            multiplier *= policy.max_grad_norm / (norm + 1e-6)
    return multiplier


# -- phase 3: host scalars ---------------------------------------------------------------------


def host_scalars(optimizer, opt_state, step: int, memory, mult: Multipliers):
    """``optimizer.prepare`` for one weight's step, computed once for every weight that
    shares the state, the options, the update count and the multipliers (usually all
    the weights of a mini-batch); optimizers with per-weight scalars are not shared."""
    if memory:
        warn_if_not_advanced(opt_state)
        return optimizer.prepare(optimizer.values(opt_state, mult), step, memory)
    return scalars_entry(optimizer, opt_state, step, mult)[6]


def scalars_entry(optimizer, opt_state, step: int, mult: Multipliers) -> tuple:
    """The optimizer's scalar cache entry for ``step`` (no per-weight scalars): ``(state,
    its revision, options, their revision, step, multipliers, prepared, step inputs,
    step positions, scalar array, its address, its step)``. ``prepared`` is
    :meth:`~AbstractOptimizer.prepare`'s result; the step positions are where
    :meth:`~AbstractOptimizer.step_scalars` are in it (``None`` when the optimizer names
    none), and the step inputs what its :meth:`~AbstractOptimizer.step_formula` computes
    them from (``()`` when there are no positions). The scalar array is what direct calls
    read (:func:`with_scalar_array`; ``None`` until one needs it)."""
    opts, revision = optimizer.opts, optimizer.revision()
    cached = optimizer.__dict__.get("_scalars_cache")
    if (
        cached is not None
        and cached[0] is opt_state
        and cached[1] == opt_state._revision
        and cached[2] is opts
        and cached[3] == revision
        and cached[5] == mult
    ):
        if cached[4] == step:
            return cached
        if cached[8] is not None:
            return next_step_entry(optimizer, cached, step)
    warn_if_not_advanced(opt_state)
    v = optimizer.values(opt_state, mult)
    prepared = optimizer.prepare(v, step, {})  # no per-weight scalars yet, or none kept
    changing = step_positions(optimizer)
    inputs = optimizer.step_inputs(v) if changing else ()
    entry = (opt_state, opt_state._revision, opts, revision, step, mult, prepared, inputs,
             changing, None, 0, 0)  # fmt: skip
    # Straight into __dict__, as it is read: not through the optimizer's __setattr__ (which
    # routes option names), on a path taken once per step.
    optimizer.__dict__["_scalars_cache"] = entry
    return entry


def step_positions(optimizer) -> tuple[int, ...] | None:
    """Where the optimizer's :meth:`~AbstractOptimizer.step_scalars` are in its packed
    kernel scalars (``None`` when it names none)."""
    changing = optimizer.step_scalars()
    return None if changing is None else tuple(map(optimizer.kernel().scalars.index, changing))


def next_step_entry(optimizer, cached: tuple, step: int) -> tuple:
    """The cache entry of ``step`` from the entry of another step of the same options,
    state and multipliers (one that knows where its step scalars are: ``cached[8]``):
    only the optimizer's :meth:`step_formula` is computed (ADAM's bias corrections, when
    each call is a new update of one weight)."""
    prepared, positions = cached[6], cached[8]
    if positions:
        scalars = list(prepared)
        values = optimizer.step_formula(cached[7], step)
        for position, value in zip(positions, values, strict=True):
            scalars[position] = value
        prepared = tuple(scalars)
    # the scalar array stays: a direct call computes this step's scalars from it
    entry = (*cached[:4], step, cached[5], prepared, *cached[7:])
    optimizer.__dict__["_scalars_cache"] = entry
    return entry


def with_scalar_array(optimizer, cached: tuple) -> tuple:
    """The cache entry ``cached`` with the array direct calls read its scalars from
    (:func:`mxopt.kernels.direct.scalar_array`), its address and its scalars' step (the
    entry's own); the cache keeps it while it holds ``cached``. Never written after: a
    direct call in another thread may be reading it."""
    values, address = direct_module().scalar_array(cached[6], cached[7])
    entry = (*cached[:9], values, address, cached[4])
    if optimizer.__dict__.get("_scalars_cache") is cached:
        optimizer.__dict__["_scalars_cache"] = entry
    return entry


def require_state_arrays(optimizer, state) -> None:
    """A clear error, before anything is written, when ``state`` lacks an array the
    optimizer's current options need (an option changed after the state was made).
    Checked once per options revision."""
    revision = (optimizer.opts, optimizer.revision())
    if state.checked == revision:
        return
    spec = optimizer.state_spec_for(state.index, state.shape)
    missing = [name for name in spec if name not in state.flat]
    if missing:
        raise ValueError(
            f"{state.describe()}: the optimizer's options now call for the "
            f"{shown(optimizer.kernel().name)} kernel, which needs state arrays {missing} that "
            f"this index's state (made for {tuple(state.flat)}) does not have; create new "
            f"state (a new updater) after changing such options"
        )
    state.checked = revision


def _prepare(policy, optimizer, opt_state, items, multiplier: float) -> None:
    averaging = policy.averaging
    for item in items:
        state = item.state
        if item.rows is not None and not lazy_rows(optimizer):
            # not a lazy update: the rows scattered into a dense gradient, zeros elsewhere
            item.g, item.rows = densify(item.w, item.g, item.rows), None
        require_state_arrays(optimizer, state)
        step = state.step + 1
        mult = item.mult if multiplier == 1.0 else item.mult._replace(grad=multiplier)
        memory = state.memory
        if optimizer.has_memory:
            item.memory = optimizer.next_memory(optimizer.values(opt_state, mult), step, memory)
        item.prepared = host_scalars(optimizer, opt_state, step, memory, mult)
        item.step = step
        if averaging is not None:
            state.arrays_for(AVERAGE_KERNEL)
            item.rate = averaging.rate(step)


def ordered_sums(per_weight) -> tuple[float, float]:
    """The two sums of a step from its weights' pairs, added from 0.0 in their order
    (which a distributed step reproduces from every rank's pairs)."""
    first = second = 0.0
    for a, b in per_weight:
        first, second = first + a, second + b
    return first, second


def _step_sums(optimizer, items, combine) -> None:
    """Phase 3, end: the sums over every weight of the step that the update reads
    (Prodigy's), read-only. Each weight's pair is computed on its own (a run of a packed
    buffer segment by segment), so a step gives the same bits whether its weights come
    one by one, in a list or packed; ``combine`` turns the ``(n, 2)`` pairs into the
    step's sums (a distributed step gathers every rank's)."""
    kernel = optimizer.step_sums_kernel
    per_weight = []
    for item in items:
        backend = backend_module(item.state.backend)
        arrays = (item.work or item.state).arrays_for(kernel)
        if item.offsets is None:
            _, a, b = backend.run(kernel, item.w, item.g, arrays, kernel.pack(item.prepared),
                                  False)  # fmt: skip
            per_weight.append((a, b))
        else:
            rows = kernel.rows(item.prepared, len(item.offsets) - 1)
            table = backends.scalar_table(item.w, rows)
            _, sums = backend.run_segments(kernel, item.w, item.g, arrays, item.offsets, table,
                                           False)  # fmt: skip
            per_weight.extend(backends.to_host(sums).tolist())
    sums = ordered_sums(per_weight) if combine is None else combine(per_weight)
    for item in items:
        item.prepared, item.memory = optimizer.with_step_sums(item.prepared, sums)


# -- the step ----------------------------------------------------------------------------------


def run_step(policy, items, *, statistics: StepStatistics | None = None,
             multiplier: float = 1.0, combine_sums=None, opt_state=None) -> bool:  # fmt: skip
    """Apply one step to ``items``, all of them or none; returns whether it was applied.

    ``policy`` is what decides (an :class:`~mxopt.Updater`, or any object with its
    ``optimizer``, ``averaging``, ``nonfinite``, ``loss_scaler`` and ``max_grad_norm``).
    ``statistics``: the step's gradient statistics when the caller has them (global
    ones in a distributed step); computed from the items otherwise, when the policy
    needs them. ``multiplier``: a factor on every gradient, given by the caller.
    ``combine_sums``: turns the step's sums that an optimizer reads across weights
    (``step_sums_kernel``, Prodigy's) into global ones, in a distributed step.
    ``opt_state``: the OptimizationState the step reads instead of the optimizer's own
    (gradient accumulation passes a view counting optimizer steps,
    :class:`~mxopt.core.state.OptimizerSteps`).
    """
    optimizer = policy.optimizer
    if multiplier != 1.0:
        multiplier = checked_factor("multiplier", multiplier)
    if statistics is not None and not isinstance(statistics, StepStatistics):
        raise TypeError(f"update: statistics must be None or a StepStatistics, got "
                        f"{shown(statistics)}")  # fmt: skip
    if opt_state is None:
        opt_state = optimizer.require_state()
    check = policy.nonfinite != "apply" or policy.loss_scaler is not None
    needs_statistics = policy.loss_scaler is not None or policy.max_grad_norm is not None
    fused_check = False
    fused_precision = precision.fusable(policy, optimizer, items, statistics)
    if not fused_precision:
        for item in items:
            precision.materialize(optimizer, item)
    if statistics is None and (needs_statistics or (check and len(items) != 1)):
        statistics = local_statistics(items)
    if statistics is not None:
        if statistics.nonfinite and check:
            return _refuse(policy, items, statistics)
        multiplier = gradient_multiplier(policy, optimizer, opt_state, statistics, multiplier)
    else:
        fused_check = check  # one item: its first kernel checks before it writes
    _prepare(policy, optimizer, opt_state, items, multiplier)
    if optimizer.step_sums_kernel is not None:
        _step_sums(optimizer, items, combine_sums)

    for item in items:  # phase 4: kernels only
        backend = backend_module(item.state.backend)
        if fused_precision:  # a float16/bfloat16 weight in one pass
            bad = precision.apply_fused(optimizer, item, fused_check)
            if bad:
                precision.materialize(optimizer, item)
        elif item.offsets is not None and optimizer.per_tensor:
            bad = optimizer.apply_segments(backend, item.w, item.g, item.work or item.state,
                                           item.offsets, item.prepared, fused_check)  # fmt: skip
        elif item.rows is not None:  # a lazy update: only the gradient's rows
            kernel, rows, arrays = optimizer.kernel(), item.rows, item.state
            bad = backend.run_rows(
                kernel,
                item.w,
                item.g,
                rows.rows,
                rows.row_size,
                arrays.arrays_for(kernel),
                item.prepared,
                fused_check,
            )
        else:
            bad = optimizer.apply(backend, item.w, item.g, item.work or item.state, item.prepared,
                                  fused_check)  # fmt: skip
        if bad:  # only from a fused check, before anything was written
            stats = local_statistics(items) if item.offsets is not None else None
            return _refuse(policy, items, stats or StepStatistics(0.0, bad, [item.index]))
        if policy.averaging is not None:
            average = item.state.arrays_for(AVERAGE_KERNEL)
            # it reads no gradient: a lazy item passes w (its g is smaller than w)
            g = item.g if item.rows is None else item.w
            backend.run(AVERAGE_KERNEL, item.w, g, average, (item.rate,), False)
        if item.work is not None:
            precision.store_state(optimizer, item)
        if item.store is not None and not fused_precision:
            precision.round_into_weight(optimizer, item)  # last: the rounded result

    for item in items:  # phase 5
        state = item.state
        if optimizer.has_memory:
            state.memory = item.memory
        state.step = item.step
        state.portable = False
    if policy.loss_scaler is not None:
        policy.loss_scaler.record(overflow=False)
    return True


def make_plan(updater, state, mult: Multipliers):
    """The :class:`Plan` of ``state``'s weight on ``updater``, or ``None`` when its step is
    not one kernel call with scalars shared by the weights of a step."""
    optimizer = updater.optimizer
    if (
        not optimizer.single_kernel
        or type(optimizer).revision is not AbstractOptimizer.revision  # stamps read opts
        or optimizer.has_memory
        or updater.averaging is not None
        or state.packed is not None
        or low_precision_format(state.dtype) is not None
        or precision.is_compressed(state)
    ):
        return None
    kernel = optimizer.kernel()
    size = math.prod(state.shape)
    runner = backend_module(state.backend).runner(kernel, state.dtype, size)
    stamp = (optimizer.opts, optimizer.opts._revision, updater._generation,
             updater.groups.version)  # fmt: skip
    arrays = state.arrays_for(kernel)
    direct = table = None
    if state.backend == backends.NUMPY and not kernel.reduces:
        calls = direct_module()
        table = calls.table(state.shape, state.dtype, arrays)
        if table is not None:
            direct = calls.entry(kernel, state.dtype, _direct_step_scalars(calls, optimizer, mult))
    return Plan(stamp, arrays, runner, mult, updater.nonfinite != "apply", direct, table)


def _direct_step_scalars(calls, optimizer, mult: Multipliers):
    """How a weight's direct call (:mod:`mxopt.kernels.direct`, ``calls``) computes a new
    step's scalars: the optimizer's step formula (for the inputs of
    :func:`scalars_entry`), or none."""
    positions = step_positions(optimizer)
    if not positions:
        return calls.NO_STEP_SCALARS
    inputs = optimizer.step_inputs(optimizer.values(optimizer.require_state(), mult))
    return calls.StepScalars(type(optimizer).step_formula, positions, len(inputs))


class Plan:
    """A weight's step kept ready: the updater runs it directly while its ``stamp`` holds.

    Made for single-kernel optimizers without per-weight scalars, on updaters with no
    averaging, loss scaler or ``max_grad_norm``: then a step of one weight is exactly
    checking its arrays, the cached host scalars, one kernel call and the commit.

    ``direct`` (small NumPy weights): one compiled call that checks the arrays' headers
    itself against ``table`` (:mod:`mxopt.kernels.direct`) and runs the kernel; it
    returns -1 for arrays it does not take, which then go through ``runner``.
    """

    __slots__ = ("arrays", "check", "direct", "mult", "runner", "stamp", "table", "table_address")

    def __init__(self, stamp, arrays, runner, mult, check, direct=None, table=None):
        self.stamp = stamp
        self.arrays = arrays
        self.runner = runner
        self.mult = mult
        self.check = check  # count non-finite gradient values first (the updater's policy)
        self.direct = direct
        self.table = table  # kept alive: the direct call reads it by address
        self.table_address = 0 if table is None else table.ctypes.data

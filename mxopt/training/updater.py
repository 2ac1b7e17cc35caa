"""The updater, MXNet.jl's ``get_updater`` in Python.

``get_updater(optimizer)`` returns an :class:`Updater`, called as
``updater(index, grad, weight)`` (grad before weight, as in MXNet). On the first
call for an ``index`` (any hashable value) it creates that index's state with
:func:`~mxopt.create_state`; every call then runs one step of the step engine
(:mod:`mxopt.training.engine`). Nothing else is hidden: the state of each index is
in ``updater.states``.

Every update checks everything first (arrays, state, hyperparameters,
non-finite gradient values) and only then runs its kernels, so it either
happens completely or not at all. :meth:`Updater.update_many` and
:meth:`Updater.update_buffer` extend that to a set of weights: all are updated or
none is.

Thread safety: calls for *different* indices may run in several threads at once
(the kernels release the GIL) and give the same bits as serial calls. Two
threads updating the *same* index at once, or changing options or the
OptimizationState during updates, is not supported.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from mxopt.core.checks import Interval, check_number, shown
from mxopt.kernels import backends
from mxopt.kernels.rows import RowSparse
from mxopt.optimizers.averaging import EMA, Polyak
from mxopt.optimizers.base import NO_MULTIPLIERS, AbstractOptimizer, Multipliers
from mxopt.training import accumulation, checkpoint
from mxopt.training.averages import AverageMethods
from mxopt.training.buffer import BufferGroup, ParameterBuffer
from mxopt.training.engine import (
    NONFINITE_POLICIES,
    Item,
    StepStatistics,
    check_disjoint,
    check_policy,
    checked_factor,
    make_item,
    make_plan,
    next_step_entry,
    run_step,
    scalars_entry,
    with_scalar_array,
)
from mxopt.training.groups import GroupMethods, ParamGroups
from mxopt.training.lists import list_step
from mxopt.training.loss_scaling import DynamicLossScaler
from mxopt.training.weights import WeightState, check_optimizer, create_state

_step_writes = WeightState.step_writes  # bumped with every update count a plan writes

__all__ = [
    "NONFINITE_POLICIES",
    "Updater",
    "load_updater",
    "WeightState",
    "create_state",
    "get_updater",
    "update",
]

#: Updater attributes whose change invalidates the weights' plans.
_POLICY = ("optimizer", "averaging", "nonfinite", "loss_scaler", "max_grad_norm", "groups",
           "accumulate")  # fmt: skip


class _Policy:
    """The policy of a lone :func:`update` call (what an :class:`Updater` holds)."""

    loss_scaler = max_grad_norm = None

    def __init__(self, optimizer, averaging, nonfinite):
        self.optimizer, self.averaging, self.nonfinite = optimizer, averaging, nonfinite


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
    check_optimizer(optimizer)
    check_policy(nonfinite)
    if not isinstance(state, WeightState):
        raise TypeError(
            f"index {shown(index)}: state must be a WeightState made by create_state, got "
            f"{shown(state)}"
        )
    policy = _Policy(optimizer, averaging, nonfinite)
    return run_step(policy, [make_item(index, grad, weight, state, optimizer)])


class Updater(GroupMethods, AverageMethods):
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
        accumulate: gradient accumulation: ``k >= 1`` micro-batches per optimizer
            step (1: off). Each call adds its gradient into the index's accumulator
            (state array ``"grad_sum"``) and returns False; the k-th call of the index
            runs the optimizer on the accumulated gradient and returns True. Schedules
            then read ``ceil(curr_iter / k)`` and ``ceil(curr_batch / k)`` (see
            :mod:`mxopt.training.accumulation`). Not with ``loss_scaler``.
        accumulate_mode: ``"mean"`` (default: the optimizer sees the sum of the k
            micro-gradients divided by k) or ``"sum"``.

    Attributes:
        states: ``{index: WeightState}`` for every index seen so far.
        micro_steps: ``{index: n}``: gradients accumulated in the current window of
            each index (with ``accumulate > 1``; empty windows are left out).
    """

    def __init__(
        self,
        optimizer: AbstractOptimizer,
        *,
        averaging=None,
        nonfinite: str = "raise",
        max_grad_norm: float | None = None,
        loss_scaler=None,
        accumulate: int = 1,
        accumulate_mode: str = "mean",
    ):
        check_optimizer(optimizer)
        accumulation.check_accumulate(accumulate, accumulate_mode, loss_scaler)
        if averaging is not None and not isinstance(averaging, (EMA, Polyak)):
            raise TypeError(
                f"averaging must be None, mxopt.EMA(...) or mxopt.Polyak(), got {shown(averaging)}"
            )
        check_policy(nonfinite)
        if max_grad_norm is not None:
            check_number("Updater", "max_grad_norm", max_grad_norm, Interval(gt=0.0))
        if loss_scaler is not None and not isinstance(loss_scaler, DynamicLossScaler):
            raise TypeError(
                f"loss_scaler must be None or a mxopt.DynamicLossScaler, got {shown(loss_scaler)}"
            )
        self._generation = 0
        self.optimizer = optimizer
        self.averaging = averaging
        self.nonfinite = nonfinite
        self.max_grad_norm = max_grad_norm
        self.loss_scaler = loss_scaler
        self.accumulate = accumulate
        self.accumulate_mode = accumulate_mode
        self.micro_steps: dict = {}  # index -> gradients accumulated in its current window
        self.states: dict = {}
        self.groups = ParamGroups()
        self._creating = threading.Lock()
        self._groups: dict = {}  # id(ParameterBuffer) -> BufferGroup
        self._list_plans: dict = {}  # tuple of indices -> ListPlan (or None: general path)

    def __getstate__(self) -> dict:
        """What a copy or a pickle keeps: everything but the lock, the list plans
        (compiled code and array addresses) and the packed buffers' groups (states are
        copied unpacked, and pack again at the copy's next ``update_buffer``). A deep copy
        shares nothing with the original."""
        state = dict(self.__dict__)
        del state["_creating"], state["_list_plans"], state["_groups"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.update(_creating=threading.Lock(), _list_plans={}, _groups={})

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _POLICY:  # the weights' plans were made for the old policy
            object.__setattr__(self, "_generation", self._generation + 1)

    # -- one weight ----------------------------------------------------------------------

    def __call__(self, index: Hashable, grad, weight) -> bool:
        """Update ``weight`` in place from ``grad``; returns whether the step was applied
        (False when it was skipped, the index is frozen, or with ``accumulate > 1`` the
        gradient was only accumulated)."""
        try:
            state = self.states.get(index)
        except TypeError:
            raise TypeError(f"index must be hashable, got {shown(index)}") from None
        plan = state.plan if state is not None else None
        if plan is not None:
            optimizer = self.optimizer
            opts = optimizer.opts
            stamp = plan.stamp
            if (
                stamp[0] is opts
                and stamp[1] == opts._revision
                and stamp[2] == self._generation
                and stamp[3] == self.groups.version
            ):  # (a packed state has no plan: see BufferGroup)
                # The weight's plan: the same step as below, its fixed parts kept ready.
                step = state._step + 1
                opt_state = optimizer._state or optimizer.require_state()
                # scalars_entry's cache read in line (most calls of a step hit it); the
                # stamp already holds for opts and its revision, which is the optimizer's
                cached = optimizer.__dict__.get("_scalars_cache")
                if not (
                    cached is not None
                    and cached[0] is opt_state
                    and cached[1] == opt_state._revision
                    and cached[2] is opts
                    and cached[3] == stamp[1]
                    and cached[5] == plan.mult
                    and (cached[4] == step or cached[8] is not None)
                ):
                    cached = scalars_entry(optimizer, opt_state, step, plan.mult)
                if plan.direct is not None:
                    if cached[9] is None:  # once per cache entry
                        cached = with_scalar_array(optimizer, cached)
                    # the arrays' checks and the step in one compiled call, which computes
                    # the step's own scalars when the array holds another step's
                    bad = plan.direct(id(weight), id(grad), plan.table_address, cached[10],
                                      plan.check, 0 if cached[11] == step else step)  # fmt: skip
                    if bad == 0:
                        state._step = step
                        _step_writes[0] += 1
                        return True
                prepared = cached[6] if cached[4] == step else next_step_entry(
                    optimizer, cached, step)[6]  # fmt: skip
                if isinstance(grad, RowSparse):
                    return self.update_one(index, grad, weight)
                w, g = backends.flat_arrays(index, weight, grad, state)
                bad = plan.runner(w, g, plan.arrays, prepared, plan.check)
                if bad:
                    item = Item(index, w, g, state, mult=plan.mult)
                    return run_step(self, [item], statistics=StepStatistics(0.0, bad, [index]))
                state._step = step
                _step_writes[0] += 1
                return True
        return self.update_one(index, grad, weight)

    def update_one(self, index: Hashable, grad, weight, *, multiplier: float = 1.0,
                   lr_scale: float = 1.0) -> bool:  # fmt: skip
        """``updater(index, grad, weight)`` with a factor on the gradient (``multiplier``)
        and on the learning rate (``lr_scale``, on top of the index's ``lr_mult``), as
        Thinc's per-parameter clipping and ``lr_scale`` need. Returns whether the step
        was applied."""
        if self.loss_scaler is not None or self.max_grad_norm is not None:
            raise ValueError(
                "this updater has a loss_scaler or max_grad_norm, which act on all the "
                "gradients of a step together: call updater.update_many(indices, grads, weights)"
            )
        if self.accumulate != 1:
            accumulation.refuse_step_arguments("update_one", multiplier=multiplier != 1.0,
                                               lr_scale=lr_scale != 1.0)  # fmt: skip
            return self._accumulate([index], [grad], [weight])
        try:
            state = self.states.get(index)
        except TypeError:
            raise TypeError(f"index must be hashable, got {shown(index)}") from None
        mult = self._multipliers(index)
        if mult is None:
            return False  # frozen
        if lr_scale != 1.0:
            mult = mult._replace(lr=mult.lr * checked_factor("lr_scale", lr_scale))
        if state is None:
            with self._creating:  # one state per index, even with concurrent first calls
                state = self.states.get(index)
                if state is None:
                    state = create_state(self.optimizer, index, weight, averaging=self.averaging)
                    item = make_item(index, grad, weight, state, self.optimizer, new=True,
                                     mult=mult)  # fmt: skip
                    applied = run_step(self, [item], multiplier=multiplier)
                    # kept once the step did not fail: applied, or skipped and counted
                    self.states[index] = state
                    if applied:
                        self._make_plan(state, mult)
                    return applied
        if not run_step(self, [make_item(index, grad, weight, state, self.optimizer, mult=mult)],
                        multiplier=multiplier):  # fmt: skip
            return False
        if multiplier == 1.0 and lr_scale == 1.0:
            self._make_plan(state, mult)
        return True

    def _multipliers(self, index) -> Multipliers | None:
        """The index's multipliers, or ``None`` when it is frozen."""
        groups = self.groups
        if groups.trivial:
            return NO_MULTIPLIERS
        lr_mult, wd_mult, frozen = groups.resolve(index)
        return None if frozen else Multipliers(lr_mult, wd_mult)

    def _make_plan(self, state: WeightState, mult: Multipliers) -> None:
        """Keep the weight's step ready when it is one kernel call with shared scalars."""
        state.plan = make_plan(self, state, mult)

    # -- many weights at once ------------------------------------------------------------

    def update_many(self, indices, grads, weights, *, statistics: StepStatistics | None = None,
                    multiplier: float = 1.0, combine_sums=None) -> bool:  # fmt: skip
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

        ``statistics`` (a :class:`~mxopt.training.engine.StepStatistics`) replaces the
        statistics computed from these gradients (e.g. global ones in a distributed
        step); ``multiplier`` multiplies every gradient; ``combine_sums`` gives the global
        sums of an optimizer that reads sums across weights (Prodigy) from this step's
        per-weight ones (a distributed step; see
        :func:`mxopt.training.engine.run_step`). Returns whether the step was
        applied. The lists of a :class:`~mxopt.ParameterBuffer` (``buffer.indices,
        buffer.grad_list, buffer.weight_list``) take the packed path of
        :meth:`update_buffer`.
        """
        if self.accumulate != 1:
            accumulation.refuse_step_arguments(
                "update_many", statistics=statistics is not None,
                multiplier=multiplier != 1.0, combine_sums=combine_sums is not None,
            )  # fmt: skip
            return self._accumulate(grads=grads, indices=indices, weights=weights)
        buffer = getattr(grads, "buffer", None)
        if buffer is not None and buffer.indices is indices and buffer.weight_list is weights:
            return self.update_buffer(buffer, statistics=statistics, multiplier=multiplier,
                                      combine_sums=combine_sums)  # fmt: skip
        indices, grads, weights = tuple(indices), list(grads), list(weights)
        if (statistics is None and multiplier == 1.0 and combine_sums is None
                and len(indices) == len(grads) == len(weights)):  # fmt: skip
            applied = list_step(self, indices, grads, weights)
            if applied is not None:
                return applied
        if not (len(indices) == len(grads) == len(weights)):
            raise ValueError(
                f"update_many: got {len(indices)} indices, {len(grads)} grads and "
                f"{len(weights)} weights; they must be parallel lists"
            )
        if len(set(indices)) != len(indices):
            raise ValueError("update_many: an index appears more than once")
        items = _list_items(self, indices, grads, weights)
        applied = run_step(self, items, statistics=statistics, multiplier=multiplier,
                           combine_sums=combine_sums)  # fmt: skip
        for item in items:  # kept once the step did not fail: applied, or skipped and counted
            if item.new:
                self.states[item.index] = item.state
        return applied

    def update_buffer(self, buffer, *, statistics: StepStatistics | None = None,
                      multiplier: float = 1.0, combine_sums=None) -> bool:  # fmt: skip
        """Update every weight of a :class:`~mxopt.ParameterBuffer` from its gradient.

        The same step, with the same bits, as ``update_many(buffer.indices,
        buffer.grad_list, buffer.weight_list)``, but in a handful of kernel calls
        over the flat buffer instead of one per weight: the state of all indices
        lives in flat arrays (each index's ``WeightState`` holds views of them).
        Optimizers with per-tensor norms (LAMB, LARS) run segmented kernels, one
        segment per weight. The step falls back to one call per weight when the
        optimizer keeps state not shaped like the weights (Adafactor). The keyword
        arguments are :meth:`update_many`'s.
        """
        if not isinstance(buffer, ParameterBuffer):
            raise TypeError(f"update_buffer: expected a mxopt.ParameterBuffer, got {shown(buffer)}")
        if self.accumulate != 1:  # accumulated weight by weight: the update_many path
            return self.update_many(list(buffer.indices), list(buffer.grad_list),
                                    list(buffer.weight_list), statistics=statistics,
                                    multiplier=multiplier, combine_sums=combine_sums)  # fmt: skip
        group = self._groups.get(id(buffer))
        if group is None or group.buffer is not buffer or not group.is_current(self):
            group = BufferGroup.build(self, buffer)
            self._groups[id(buffer)] = group
        if group is None:
            return self.update_many(list(buffer.indices), list(buffer.grad_list),
                                    list(buffer.weight_list), statistics=statistics,
                                    multiplier=multiplier, combine_sums=combine_sums)  # fmt: skip
        try:
            applied = run_step(self, group.items(), statistics=statistics, multiplier=multiplier,
                               combine_sums=combine_sums)  # fmt: skip
        except BaseException:
            if group.pending:  # its new states were never stored: make them again next time
                self._groups.pop(id(buffer), None)
            raise
        group.commit(self)
        return applied

    def _accumulate(self, indices, grads, weights) -> bool:
        """An accumulating call (``accumulate > 1``): see :mod:`mxopt.training.accumulation`."""
        indices, grads, weights = tuple(indices), list(grads), list(weights)
        if not (len(indices) == len(grads) == len(weights)):
            raise ValueError(
                f"update_many: got {len(indices)} indices, {len(grads)} grads and "
                f"{len(weights)} weights; they must be parallel lists"
            )
        for index in indices:
            try:
                hash(index)
            except TypeError:
                raise TypeError(f"index must be hashable, got {shown(index)}") from None
        distinct = len(set(indices))
        if distinct != len(indices):
            raise ValueError("update_many: an index appears more than once")
        return accumulation.micro_step(self, _list_items(self, indices, grads, weights))

    @property
    def skipped(self) -> int:
        """Updates skipped because of non-finite gradients (with ``accumulate > 1``,
        micro-steps dropped), summed over indices."""
        return sum(state.skipped for state in self.states.values())

    # -- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to resume exactly, as plain values and NumPy arrays (copies).

        See :func:`mxopt.training.checkpoint.updater_state_dict` for the layout.
        """
        return checkpoint.updater_state_dict(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned; checked completely before anything changes.

        The optimizer's options, its OptimizationState (updated in place when
        it has one), the averaging rule, the policies, the loss scaler and every
        index's state are restored; the saved optimizer must be of the same type.
        """
        checkpoint.load_updater_state_dict(self, state_dict)

    def save(self, path) -> None:
        """Write a checkpoint to ``path`` atomically (see :mod:`mxopt.training.checkpoint`)."""
        checkpoint.save_updater(self, path)

    def __repr__(self) -> str:
        return f"Updater({self.optimizer!r}, {len(self.states)} indices)"


def _list_items(updater: Updater, indices, grads, weights) -> list:
    """The items of an ``update_many`` step through the general path: arrays checked,
    states found or made (not stored yet), frozen weights left out, no memory shared."""
    items, arena = [], None
    for index, grad, weight in zip(indices, grads, weights, strict=True):
        mult = updater._multipliers(index)
        if mult is None:
            continue  # frozen weights are left out of the step entirely
        state = updater.states.get(index)
        new = state is None
        if new:
            if arena is None:  # the small state arrays of the new weights, consecutive
                arena = backends.StateArena.for_weights(weights)
            state = create_state(updater.optimizer, index, weight, averaging=updater.averaging,
                                 arena=arena)  # fmt: skip
        items.append(make_item(index, grad, weight, state, updater.optimizer, new=new, mult=mult))
    check_disjoint(items)
    return items


def get_updater(
    optimizer: AbstractOptimizer,
    *,
    averaging=None,
    nonfinite: str = "raise",
    max_grad_norm: float | None = None,
    loss_scaler=None,
    accumulate: int = 1,
    accumulate_mode: str = "mean",
) -> Updater:
    """An :class:`Updater` for ``optimizer``; call it as ``updater(index, grad, weight)``.

    See :class:`Updater` for the options: ``averaging`` (a moving average of
    every weight), ``nonfinite`` (what to do with NaN/inf gradients),
    ``max_grad_norm`` (global norm clipping), ``loss_scaler`` (float16) and
    ``accumulate`` / ``accumulate_mode`` (one optimizer step per k micro-batches).
    """
    return Updater(
        optimizer,
        averaging=averaging,
        nonfinite=nonfinite,
        max_grad_norm=max_grad_norm,
        loss_scaler=loss_scaler,
        accumulate=accumulate,
        accumulate_mode=accumulate_mode,
    )


def load_updater(path, *, optimizer=None, weights=None) -> Updater:
    """The :class:`~mxopt.Updater` saved at ``path``, with its optimizer and state restored.

    Args:
        path: a file written by ``updater.save(path)``.
        optimizer: use this optimizer (of the saved type) instead of building one
            from the saved config; needed when the saved one had options that
            cannot be written as a config (e.g. a schedule from a callable).
        weights: optional ``{index: weight}``; every saved state must match its
            weight's shape and dtype.
    """
    d = checkpoint.read_checkpoint(path)
    built = checkpoint.build_optimizer(d, optimizer)
    updater = Updater(built)
    checkpoint.load_updater_state_dict(updater, d, weights=weights, optimizer=built)
    return updater

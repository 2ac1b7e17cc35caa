"""``update_many`` over a list of NumPy arrays in one compiled call, when nothing needs more.

A :class:`ListPlan` is the step engine's path for a list of weights (:func:`run_step` over
one item per weight) with everything that does not change from step to step kept ready:
the states and their arrays' addresses, the shapes, the scalar rows of each weight's
multipliers. A step through it checks every gradient and weight header and counts the
gradients' non-finite values in compiled code (:mod:`mxopt.kernels.lists`) before the
kernel writes anything, then commits the step counts: the same checks, order and bits
as the general path, without a Python call per weight.

It is made only for steps that are one elementwise kernel per weight with shared host
scalars (the optimizers the per-weight :class:`~mxopt.training.engine.Plan` serves), on
updaters without averaging, loss scaler or ``max_grad_norm``, for weights whose states
exist, on NumPy, all of one dtype and at the same step. Anything else, and anything a
check does not accept (a wrong shape, a non-contiguous or aliasing gradient, a
non-finite value), goes to the general path, which gives the precise error or result.
"""

from __future__ import annotations

import importlib
from operator import attrgetter

import numpy as np

from mxopt.kernels import backends
from mxopt.kernels.backends import first_overlap
from mxopt.training.engine import host_scalars, require_state_arrays
from mxopt.training.precision import is_compressed
from mxopt.training.weights import WeightState

__all__ = ["ListPlan", "list_step"]

_step_of = attrgetter("_step")

#: List plans an updater keeps (one per distinct list of indices it was called with).
MAX_PLANS = 8


def list_step(updater, indices: tuple, grads: list, weights: list) -> bool | None:
    """``updater.update_many``'s step through the list's plan: whether it was applied, or
    ``None`` when the general path must take it (nothing written then)."""
    plans = updater._list_plans
    try:
        plan = plans.get(indices)
    except TypeError:
        return None  # an unhashable index: the general path names it
    if plan is None or not plan.current(updater, indices):
        if plan is not None and plan.refused(updater):
            return None  # nothing changed since the general path was chosen
        plan = ListPlan.build(updater, indices)
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plans[indices] = plan
    return plan.run(updater, grads, weights)


def _lists_module():
    """:mod:`mxopt.kernels.lists`, imported on first use (it imports Numba)."""
    return importlib.import_module("mxopt.kernels.lists")


def _stamp(updater) -> tuple:
    opts = updater.optimizer.opts
    return (opts, opts._revision, updater._generation, updater.groups.version,
            WeightState.replacements)  # fmt: skip


class ListPlan:
    """A list of weights' step kept ready (see the module's docstring)."""

    __slots__ = ("apart", "dtype", "kernel", "like", "module", "mults", "prepared", "rows",
                 "seen", "shape_starts", "shapes", "sizes", "stamp", "state_data", "states",
                 "step", "table")  # fmt: skip

    @classmethod
    def build(cls, updater, indices: tuple) -> ListPlan:
        """The plan of ``indices``; a refusal (see :meth:`refused`) when the general path
        must run their steps."""
        plan = cls()
        plan.stamp = _stamp(updater)
        plan.kernel = None
        plan.seen = len(updater.states)  # a refusal holds while no state is added
        return plan._fill(updater, indices) or plan

    def refused(self, updater) -> bool:
        """Whether this is a refusal that still holds (no option, group or state changed)."""
        return self.kernel is None and self.stamp == _stamp(updater) and \
            self.seen == len(updater.states)  # fmt: skip

    def _fill(self, updater, indices: tuple) -> ListPlan | None:
        optimizer = updater.optimizer
        if (
            not optimizer.single_kernel
            or optimizer.has_memory
            or optimizer.per_tensor
            or updater.averaging is not None
            or updater.loss_scaler is not None
            or updater.max_grad_norm is not None
            or not indices
        ):
            return None
        kernel = optimizer.kernel()
        states = list(map(updater.states.get, indices))
        if kernel.reduces or None in states or len(set(indices)) != len(indices):
            return None
        first = states[0]
        dtype = np.dtype(first.dtype)
        if dtype not in (np.float32, np.float64):
            return None
        mults = []
        for index, state in zip(indices, states, strict=True):
            if (
                state.backend != "numpy"
                or state.packed is not None
                or state.portable
                or state.dtype != dtype
                or state._step != first._step
                or is_compressed(state)
            ):
                return None
            mult = updater._multipliers(index)
            if mult is None:  # frozen: the general path leaves it out
                return None
            try:
                require_state_arrays(optimizer, state)
            except ValueError:
                return None  # the general path raises it
            mults.append(mult)
        module = _lists_module()
        if not module.AVAILABLE:
            return None
        plan = self
        plan.module = module
        plan.kernel = kernel
        plan.dtype = dtype
        plan.like = np.empty(0, dtype)  # for the scalar table's dtype
        plan.states = states
        plan.shapes = np.array([e for s in states for e in s.shape], np.int64)
        plan.shape_starts = np.cumsum([0] + [len(s.shape) for s in states], dtype=np.int64)
        plan.sizes = np.array([int(np.prod(s.shape, dtype=np.int64)) for s in states], np.int64)
        arrays = [state.arrays_for(kernel) for state in states]
        plan.state_data = np.array(
            [[a.ctypes.data for a in row] for row in arrays], np.int64
        ).reshape(len(states), len(kernel.state))
        distinct = list(dict.fromkeys(mults))
        plan.mults = distinct
        plan.rows = np.array([distinct.index(m) for m in mults], np.int64)
        plan.prepared = None
        plan.table = None
        plan.step = None  # (update count, step_writes) after this plan's last step
        plan.apart = None  # (weights' data, gradients' data) last found not to overlap
        return plan

    def current(self, updater, indices: tuple) -> bool:
        """Whether this is a plan that still describes ``indices`` of ``updater``."""
        return self.kernel is not None and self.stamp == _stamp(updater) and \
            list(map(updater.states.get, indices)) == self.states  # fmt: skip

    def _overlapping(self, w_data, g_data) -> bool:
        """Whether a weight's memory overlaps another weight's or any gradient's (the
        general path then names them)."""
        apart = self.apart
        if apart is not None and np.array_equal(apart[0], w_data) and \
                np.array_equal(apart[1], g_data):  # fmt: skip
            return False  # the same memory as the last step's (sizes are the plan's)
        nbytes = self.sizes * self.dtype.itemsize
        starts = np.concatenate([w_data, g_data])
        writable = np.arange(starts.size) < w_data.size
        if first_overlap(starts, starts + np.concatenate([nbytes, nbytes]), writable) >= 0:
            return True
        self.apart = (w_data, g_data)
        return False

    def run(self, updater, grads: list, weights: list) -> bool | None:
        """Apply the step; ``None`` when a check asks for the general path (nothing
        written then)."""
        if self.kernel is None:
            return None
        states = self.states
        writes = WeightState.step_writes
        if self.step is not None and self.step[1] == writes[0]:
            step = self.step[0] + 1  # no update count was written since this plan's last step
        else:
            steps = list(map(_step_of, states))
            step = steps[0] + 1
            if steps.count(steps[0]) != len(steps):
                return None
        module, dtype = self.module, self.dtype
        layout = (dtype, self.shapes, self.shape_starts, self.sizes)
        w_data, bad = module.check_headers(weights, *layout, writeable=True)
        if bad >= 0:
            return None
        g_data, bad = module.check_headers(grads, *layout, writeable=False, apart_from=w_data)
        if bad >= 0 or self._overlapping(w_data, g_data):
            return None
        if updater.nonfinite != "apply" and module.count_nonfinite(dtype, g_data, self.sizes):
            return None
        optimizer = updater.optimizer
        opt_state = optimizer._state or optimizer.require_state()
        prepared = [host_scalars(optimizer, opt_state, step, None, m) for m in self.mults]
        if self.prepared is None or any(map(lambda a, b: a is not b, prepared, self.prepared)):
            self.table = backends.scalar_table(self.like, prepared)
            self.prepared = prepared
        module.run(self.kernel, dtype, w_data, g_data, self.state_data, self.sizes, self.table,
                   self.rows)  # fmt: skip
        for state in states:
            state._step = step
        writes[0] += 1
        self.step = (step, writes[0])
        return True

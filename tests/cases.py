"""How the generic tests use the optimizer cases.

A case (:class:`tests.reference.table.Case`) is an optimizer name from
``mxopt.OPTIMIZERS`` and options for it, declared in the optimizer's oracle file;
:data:`CASES` gathers them all. Each case is crossed with the shared :data:`VARIANTS`
(gradient clipping, weight decay, grad_scale), float32/float64, several shapes and every
available backend. A test fails if an optimizer has no case.
"""

from __future__ import annotations

import types

import attrs
import numpy as np

import mxopt
from tests.reference import CASES, REQUIRED_OPTIONS
from tests.reference.table import Case

__all__ = [
    "CASES", "SHAPES", "TOLERANCE", "VARIANTS", "Case", "make_optimizer", "oracle_inputs",
    "required_options", "trajectory",
]  # fmt: skip


def required_options(name: str) -> dict:
    make = REQUIRED_OPTIONS.get(name)
    return make() if make else {}


#: Shared option variants every case is crossed with.
VARIANTS = {
    "plain": {},
    "clip": {"grad_clip": 0.3},
    "decay": {"weight_decay": 0.05},
    "no-decay": {"weight_decay": 0.0},
    "scale": {"grad_scale": 2.5},
}

SHAPES = {"size0": (0,), "size1": (1,), "odd": (37,), "2d": (3, 5)}

#: (rtol, atol) of a kernel's trajectory against the float64 oracle.
TOLERANCE = {np.float32: (2e-5, 2e-6), np.float64: (1e-12, 1e-14)}


def make_optimizer(case: Case, variant: dict, state=None):
    if case.inner is not None:
        name, options = case.inner
        inner = mxopt.OPTIMIZERS[name](**{**options, **variant}, state=state)
        return mxopt.OPTIMIZERS[case.optimizer](inner, **case.options)
    return mxopt.OPTIMIZERS[case.optimizer](**{**case.options, **variant}, state=state)


def optimizer_name(optimizer) -> str:
    return next(k for k, v in mxopt.OPTIMIZERS.items() if v is type(optimizer))


def oracle_inputs(optimizer, state, k, dtype=np.float64):
    """Plain numbers for an oracle: every option at ``state``, the effective lr and mu.

    Options are also in ``x.options`` (``x.k`` is the update count, whatever the
    options are called); a wrapped optimizer's inputs are in ``x.<option>_inputs``
    and its name in ``x.<option>_name``.
    """
    opts = optimizer.opts
    x = {}
    for a in attrs.fields(type(opts)):
        value = getattr(opts, a.name)
        if isinstance(value, mxopt.AbstractSchedule) and not a.name.endswith("_scheduler"):
            value = value.value(state)
        if isinstance(value, mxopt.AbstractOptimizer):
            x[f"{a.name}_inputs"] = oracle_inputs(value, state, k, dtype)
            x[f"{a.name}_name"] = optimizer_name(value)
        x[a.name] = value
    x["options"] = dict(x)
    if hasattr(opts, "lr_scheduler"):
        x["lr"] = optimizer.lr_value(state) if opts.lr_scheduler else opts.lr
    scheduler = getattr(opts, "momentum_scheduler", None)
    if scheduler is not None:
        x["mu"] = mxopt.get_momentum(scheduler, state)
    elif "momentum" in x:
        x["mu"] = x["momentum"]
    x["batch_size"] = state.batch_size
    x["dtype"] = dtype
    x["curr_iter"] = state.curr_iter
    x["k"] = k
    return types.SimpleNamespace(**x)


def trajectory(case, variant, dtype, shape, xp=np, epochs=3, batches=3, zero_step=4, seed=0):
    """Train one weight with mxopt and with the oracle side by side.

    Yields ``(step, weight, weight_state, oracle_weight, oracle_state)`` after
    every update; update ``zero_step`` gets an all-zero gradient.
    """
    from tests.reference import ORACLES

    oracle = ORACLES[case.optimizer]
    rng = np.random.default_rng(seed)
    state = mxopt.OptimizationState(batch_size=4)
    optimizer = make_optimizer(case, variant, state)
    updater = mxopt.get_updater(optimizer)
    start = rng.normal(size=shape).astype(dtype)
    weight = xp.asarray(start)
    reference = start.astype(np.float64)
    reference_state = None
    step = 0
    for _ in range(epochs):
        state.begin_epoch()
        for _ in range(batches):
            state.begin_batch()
            step += 1
            grad = (rng.normal(size=shape) * 2).astype(dtype)
            if step == zero_step:
                grad[...] = 0
            updater("w", xp.asarray(grad), weight)
            x = oracle_inputs(optimizer, state, step, dtype)
            if reference_state is None:
                reference_state = oracle.init(shape, x)
            oracle.step(reference, grad.astype(np.float64), reference_state, x)
            yield step, weight, updater.states["w"], reference, reference_state

"""Float16 and bfloat16 weights: computed in float32, stored in 16 bits.

A step on a weight of a 16-bit float dtype (``numpy.float16``, ``ml_dtypes.bfloat16``)
works on float32 copies: its gradient (same dtype as the weight) is widened to float32
(exactly), and so is the weight, unless the optimizer has ``multi_precision=True``: then
the weight's state holds a float32 master copy (state array ``"master"``, made from the
weight when the state is created), which the step updates instead. The optimizer's
float32 kernels run unchanged; then the float32 result is rounded into the 16-bit weight,
to nearest (ties to even) or, with ``stochastic_rounding=True``, stochastically from the
random stream of (``rounding_seed``, index, step) (:mod:`mxopt.kernels.precision`).
Everything else about a step (the checks, the non-finite policy, loss scaling and clipping,
which read the widened gradient; the all-or-nothing rule: the weight is written last)
is the float32 step's. State arrays are float32.

Without a master copy an update smaller than half the weight's spacing is lost when it
is rounded to nearest (bfloat16 keeps 8 significant bits: an update below 1/256 of
the weight vanishes); stochastic rounding keeps it in expectation.
"""

from __future__ import annotations

from mxopt.core.checks import shown
from mxopt.kernels import precision_module
from mxopt.kernels.precision import stream_key

__all__ = [
    "MASTER",
    "apply_fused",
    "check_master",
    "fusable",
    "materialize",
    "refuse",
    "round_into_weight",
    "wants_master",
]

#: The state array of a float16/bfloat16 weight's float32 master copy (``multi_precision``).
MASTER = "master"


def wants_master(optimizer, fmt) -> bool:
    """Whether new state for a weight of 16-bit format ``fmt`` (None: not one) holds a
    master copy."""
    return fmt is not None and optimizer.precision()[0]


def check_master(optimizer, state) -> None:
    """A clear error when the ``multi_precision`` option and the state disagree on the
    master copy (the option changed after the state was made)."""
    has_master = MASTER in state.flat
    if optimizer.precision()[0] != has_master:
        has = "has" if has_master else "has no"
        raise ValueError(
            f"{state.describe()}: multi_precision is {optimizer.precision()[0]} but this "
            f"index's state {has} a float32 master copy (it was made with the other setting); "
            f"create new state (a new updater) after changing multi_precision"
        )


def materialize(item) -> None:
    """Give a float16/bfloat16 item its float32 working arrays: ``item.w`` the master copy
    (``multi_precision``) or a widened copy of the weight, ``item.g`` the widened gradient."""
    bits, grad_bits, fmt = item.store
    backend = precision_module(item.state.backend)
    master = item.state.flat.get(MASTER)
    item.w = master if master is not None else backend.widen(bits, fmt)
    item.g = backend.widen(grad_bits, fmt)


def _key(optimizer, item) -> int:
    _, stochastic, seed = optimizer.precision()
    return stream_key(seed, item.index, item.step) if stochastic else 0


def round_into_weight(optimizer, item) -> None:
    """Round the step's float32 weight into the item's 16-bit weight (``item.store``)."""
    bits, _, fmt = item.store
    precision_module(item.state.backend).narrow(item.w, bits, fmt, (0, bits.size),
                                              (_key(optimizer, item),),
                                              optimizer.precision()[1])  # fmt: skip


def fusable(policy, optimizer, items, statistics) -> bool:
    """Whether a step can update its float16/bfloat16 weight in one fused pass, without
    float32 copies of whole arrays: one item, one elementwise kernel, on the CPU, and
    nothing else that reads the widened arrays (statistics, averages, step sums)."""
    if len(items) != 1 or items[0].w is not None or statistics is not None:
        return False
    return (
        items[0].state.backend == "numpy"
        and policy.averaging is None
        and policy.loss_scaler is None
        and policy.max_grad_norm is None
        and optimizer.single_kernel
        and optimizer.step_sums_kernel is None
        and not optimizer.kernel().reduces
    )


def apply_fused(optimizer, item, check: bool) -> int:
    """The fused step of a float16/bfloat16 item (see :func:`fusable`): returns the count
    of non-finite gradient values found by ``check`` (nothing written), or 0."""
    bits, grad_bits, fmt = item.store
    kernel = optimizer.kernel()
    return precision_module(item.state.backend).run_staged(
        kernel, bits, grad_bits, item.state.flat.get(MASTER), item.state.arrays_for(kernel),
        item.prepared, check, fmt, _key(optimizer, item), optimizer.precision()[1],
    )  # fmt: skip


def refuse(index, what: str, dtype) -> ValueError:
    """The error for a feature that float16/bfloat16 weights do not have."""
    return ValueError(f"index {shown(index)}: {what} is not available for {dtype} weights")

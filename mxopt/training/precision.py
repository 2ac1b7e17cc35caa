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

import math

import numpy as np

from mxopt.core.checks import shown
from mxopt.kernels import precision as kernel_precision
from mxopt.kernels import precision_module, quantize
from mxopt.kernels.precision import (
    BFLOAT16,
    bfloat16_dtype,
    index_key,
    low_precision_format,
    stream_key,
)
from mxopt.optimizers.base import StateArrays

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


def materialize(optimizer, item) -> None:
    """Give an item its float32 working arrays, where it needs them: a float16/bfloat16
    weight ``item.w`` (the master copy with ``multi_precision``, or a widened copy) and
    ``item.g`` (the widened gradient); moments stored in bfloat16 or 8 bits
    ``item.work`` (:func:`working_state`)."""
    if item.store is not None and item.w is None:
        bits, grad_bits, fmt = item.store
        backend = precision_module(item.state.backend)
        master = item.state.flat.get(MASTER)
        item.w = master if master is not None else backend.widen(bits, fmt)
        item.g = backend.widen(grad_bits, fmt)
    if item.work is None and is_compressed(item.state):
        item.work = working_state(optimizer, item.state)


def _key(optimizer, item) -> int:
    _, stochastic, seed = optimizer.precision()
    return stream_key(seed, item.index, item.step) if stochastic else 0


def round_into_weight(optimizer, item) -> None:
    """Round the step's float32 weight into the item's 16-bit weight (``item.store``); a
    run of a packed buffer rounds each member with its own stream, from its first element,
    as its own step would."""
    bits, _, fmt = item.store
    _, stochastic, seed = optimizer.precision()
    if item.offsets is None:
        offsets, keys = (0, bits.size), (_key(optimizer, item),)
    else:
        offsets = item.offsets
        keys = [stream_key(seed, m.index, item.step) if stochastic else 0 for m in item.members]
    precision_module(item.state.backend).narrow(item.w, bits, fmt, offsets, keys, stochastic)


def fusable(policy, optimizer, items, statistics) -> bool:
    """Whether a step can update its float16/bfloat16 weight, or its moments stored in
    bfloat16 or 8 bits, in one fused pass without float32 copies of whole arrays: one
    item, one elementwise kernel (8-bit state: on the CPU only), and nothing else that
    reads the float32 arrays (statistics, averages, step sums)."""
    if len(items) != 1 or statistics is not None:
        return False
    item = items[0]
    if item.store is not None:
        if item.w is not None:
            return False  # its float32 working arrays are made already (and may differ)
    elif not is_compressed(item.state):
        return False
    if item.state.backend != "numpy" and any(a.dtype == np.uint8 for a in item.state.flat.values()):
        return False  # the GPU's fused step takes float32 and bfloat16 state only
    return (
        item.offsets is None
        and item.rows is None
        and policy.averaging is None
        and policy.loss_scaler is None
        and policy.max_grad_norm is None
        and optimizer.single_kernel
        and optimizer.step_sums_kernel is None
        and not optimizer.kernel().reduces
    )


def apply_fused(optimizer, item, check: bool) -> int:
    """The fused step of an item (see :func:`fusable`): returns the count of non-finite
    gradient values found by ``check`` (nothing written), or 0."""
    module = precision_module(item.state.backend)
    kernel = optimizer.kernel()
    _, stochastic, seed = optimizer.precision()
    signs = optimizer.compressed_state()[1]
    flat = item.state.flat
    storages, absmax, keys = [], [], []
    for name in kernel.state:
        array = flat[name]
        if array.dtype == np.uint8:
            storages.append(kernel_precision.INT8_SIGNED if signs[name]
                            else kernel_precision.INT8_UNSIGNED)  # fmt: skip
            absmax.append(flat[name + ABSMAX])
        else:
            storages.append(kernel_precision.BITS16 if _is_bfloat16(array)
                            else kernel_precision.FLOAT32)  # fmt: skip
            absmax.append(None)
        keys.append(state_key(seed, item.index, item.step, name) if stochastic else 0)
    if item.store is not None:
        w, g, fmt = item.store
    else:
        w, g, fmt = item.w, item.g, None
    return module.run_staged(
        kernel, w, g, flat.get(MASTER), item.state.arrays_for(kernel), tuple(storages),
        tuple(absmax), item.prepared, check, fmt, _key(optimizer, item), tuple(keys), stochastic,
    )  # fmt: skip


def refuse(index, what: str, dtype) -> ValueError:
    """The error for a feature that float16/bfloat16 weights do not have."""
    return ValueError(f"index {shown(index)}: {what} is not available for {dtype} weights")


# -- moments stored in bfloat16 or 8 bits (state_dtype) -----------------------------------------

#: The name suffix of an 8-bit state array's per-block absmax array.
ABSMAX = "_absmax"


def _storage(optimizer, name: str, size: int) -> str:
    """How the state array ``name`` of ``size`` elements is stored: ``"float32"`` (as
    computed), ``"bfloat16"`` or ``"int8"`` (only moments, and 8 bits only from
    ``MIN_QUANTIZED_SIZE`` elements: a small array's absmax would cost more than it saves)."""
    state_dtype, signs = optimizer.compressed_state()
    if state_dtype == "float32" or name not in signs:
        return "float32"
    if state_dtype == "int8" and size < quantize.MIN_QUANTIZED_SIZE:
        return "float32"
    return state_dtype


def stored_layout(optimizer, shapes: dict) -> dict:
    """``{name: (shape, dtype)}`` of the stored state arrays, from ``{name: shape}`` of the
    float32 ones the optimizer computes with (what a checkpoint must hold)."""
    layout = {}
    for name, shape in shapes.items():
        size = math.prod(shape)
        storage = _storage(optimizer, name, size)
        if storage == "int8":
            layout[name] = (shape, np.dtype(np.uint8))
            layout[name + ABSMAX] = ((quantize.block_count(size),), np.dtype(np.float32))
        else:
            layout[name] = (shape, bfloat16_dtype() if storage == "bfloat16" else None)
    return layout


def compress_new_state(optimizer, flat: dict, shapes: dict, backend: str) -> None:
    """Store the moments of new state (``flat``: float32 arrays, changed in place) as the
    optimizer's ``state_dtype`` says: bfloat16 rounded to nearest, or 8-bit codes and one
    absmax per block."""
    module = precision_module(backend)
    state_dtype, signs = optimizer.compressed_state()
    for name in list(flat):
        values = flat[name]
        if state_dtype != "float32" and name in signs and values.dtype != np.float32:
            # whatever its size (small int8 ones stay float32): a float64 model would
            # otherwise fail only at its first large weight
            raise TypeError(
                f"state_dtype={state_dtype!r} stores moments computed in float32: the weight "
                f"must be float32, float16 or bfloat16, not {values.dtype}"
            )
        storage = _storage(optimizer, name, values.size)
        if storage == "bfloat16":
            bits = _empty_like(values, bfloat16_dtype())
            module.narrow(values, bits, "bfloat16", (0, values.size), (0,), False)
            flat[name] = bits
        elif storage == "int8":
            signed = optimizer.compressed_state()[1][name]
            codes = _empty_like(values, np.uint8)
            absmax = _empty_like(values, np.float32, quantize.block_count(values.size))
            module.quantize_into(values, codes, absmax, signed)
            flat[name], flat[name + ABSMAX] = codes, absmax
            shapes[name + ABSMAX] = absmax.shape


def _empty_like(array, dtype, size=None):
    size = array.size if size is None else size
    if isinstance(array, np.ndarray):
        return np.empty(size, dtype=dtype)
    import cupy

    with cupy.cuda.Device(array.device.id):
        return cupy.empty(size, dtype=dtype)


def is_compressed(state) -> bool:
    """Whether ``state`` holds moments in bfloat16 or 8 bits."""
    # state arrays are float arrays unless compressed (bfloat16 is kind "V", codes "u");
    # dtype.kind, not dtype.name: this runs on every step, and .name costs microseconds
    return any(a.dtype.kind != "f" for a in state.flat.values())


def _is_bfloat16(array) -> bool:
    return low_precision_format(array.dtype) == BFLOAT16  # a cached look-up


def _is_absmax(flat: dict, name: str) -> bool:
    """Whether ``flat[name]`` is the absmax array of an 8-bit state array."""
    owner = flat.get(name[: -len(ABSMAX)]) if name.endswith(ABSMAX) else None
    return owner is not None and owner.dtype == np.uint8


def working_state(optimizer, state) -> StateArrays:
    """The float32 state arrays a step computes with: the stored ones, with bfloat16 and
    8-bit moments widened into new float32 arrays."""
    module = precision_module(state.backend)
    flat = {}
    for name, array in state.flat.items():
        if _is_absmax(state.flat, name):
            continue
        if _is_bfloat16(array):
            flat[name] = module.widen(array, "bfloat16")
        elif array.dtype == np.uint8:
            signed = optimizer.compressed_state()[1][name]
            flat[name] = module.dequantize(array, state.flat[name + ABSMAX], signed)
        else:
            flat[name] = array
    return StateArrays(flat, state.shape)


def store_state(optimizer, item) -> None:
    """Round the step's float32 moments back into their bfloat16 or 8-bit storage:
    bfloat16 to nearest, or stochastically with a stream of its own per state array
    (:func:`state_key`); 8 bits to the nearest code of the new block absmax."""
    state, work = item.state, item.work
    module = precision_module(state.backend)
    _, stochastic, seed = optimizer.precision()
    for name, stored in state.flat.items():
        if _is_bfloat16(stored):
            key = state_key(seed, item.index, item.step, name) if stochastic else 0
            values = work.flat[name]
            module.narrow(values, stored, "bfloat16", (0, values.size), (key,), stochastic)
        elif stored.dtype == np.uint8:
            signed = optimizer.compressed_state()[1][name]
            module.quantize_into(work.flat[name], stored, state.flat[name + ABSMAX], signed)


def state_key(seed: int, index, step: int, name: str) -> int:
    """The stream that rounds state array ``name`` of the ``step``-th update of ``index``
    (another stream than the weight's: the key of (seed, index, step) mixed with the
    name's :func:`~mxopt.kernels.precision.index_key`)."""
    return stream_key(seed, index, step) ^ index_key(name)

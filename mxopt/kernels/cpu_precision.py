"""Numba loops of float16 and bfloat16 arrays (:mod:`mxopt.kernels.precision`) and of 8-bit
state (:mod:`mxopt.kernels.quantize`): widening, rounding, and the fused step of an
elementwise kernel on a 16-bit weight or on moments stored in bfloat16 or 8 bits.

The CPU half of :func:`mxopt.kernels.precision_module` (the GPU half is in
:mod:`mxopt.kernels.cuda`); built on the loop machinery of :mod:`mxopt.kernels.cpu`.
Imported on first use, like it.
"""

from __future__ import annotations

import hashlib
import threading

import numba
import numpy as np

from mxopt.kernels import precision, quantize
from mxopt.kernels.cpu import (
    _chunks,
    _code_digest,
    _compile_device,
    _count_nonfinite,
    _count_nonfinite_compiled,
    _parallel,
    _specialised,
    compile_loop,
    count_nonfinite,
)
from mxopt.kernels.kernel import Kernel
from mxopt.kernels.precision import count_nonfinite_bits

__all__ = ["STAGE", "dequantize", "narrow", "quantize_into", "run_staged", "widen"]

_lock = threading.RLock()


_precision_loops: dict = {}


def _precision_loop(function, name: str):
    loop = _precision_loops.get(name)
    if loop is None:
        with _lock:
            loop = _precision_loops.get(name)
            if loop is None:
                loop = _precision_loops[name] = compile_loop(function, name)
    return loop


def widen(bits, fmt: str):
    """The flat 16-bit float array ``bits`` (``"float16"`` or ``"bfloat16"``) as a new
    float32 array, exactly."""
    out = np.empty(bits.size, dtype=np.float32)
    loop = _precision_loop(precision.widen_loop, "mxopt_widen")
    loop(bits.view(np.uint16), out.view(np.uint32), np.int64(precision.FORMAT_CODES[fmt]))
    return out


def narrow(source, bits, fmt: str, offsets, keys, stochastic: bool) -> None:
    """Round the flat float32 ``source`` into the flat 16-bit array ``bits`` over the
    segments ``[offsets[k], offsets[k+1])``, to nearest or ``stochastic`` ally with the random
    stream ``keys[k]`` (uint64) for segment ``k`` (see :mod:`mxopt.kernels.precision`)."""
    loop = _precision_loop(precision.narrow_loop, "mxopt_narrow")
    loop(source.view(np.uint32), bits.view(np.uint16), np.int64(precision.FORMAT_CODES[fmt]),
         np.asarray(offsets, np.int64), np.asarray(keys, np.uint64), bool(stochastic))  # fmt: skip


# -- fused steps: 16-bit weights, moments in bfloat16 or 8 bits -----------------------------------

#: Elements per stage of a fused step: widened (or dequantized), updated and rounded (or
#: quantized) back while they are in the cache. A multiple of the quantization block.
STAGE = 2048

FLOAT32, BITS16, INT8_SIGNED = precision.FLOAT32, precision.BITS16, precision.INT8_SIGNED


_WEIGHT_BITS = False  # placeholders of _staged: whether w and g are 16-bit bits, and the
_LOAD = None  # generated helpers of a kernel and its storages (see _helpers_source)
_BLOCK = None
_STORE = None
_WIDEN = None
_NARROW = None
_COUNT = None
_COUNT_BITS = None


def _staged(w, g, master, state, absmax, s, check, code, key, stochastic, skeys, start, stop):
    """A kernel's step over elements ``[start, stop)``, stage by stage: the gradient and
    weight (16-bit ones widened, or a float32 ``master`` used; else as they are) and the
    state arrays (bfloat16 and 8-bit ones widened or dequantized: ``_LOAD``) as float32
    stages, the element applied (``_BLOCK``), the state (``_STORE``) and a 16-bit weight
    rounded back. ``absmax[k]``: the block absmax of an 8-bit state array ``k`` (else
    empty); ``code``: the weight's 16-bit format; ``key`` and ``skeys[k]``: the rounding
    streams of the weight and of state array ``k``. With ``check``, first counts the
    non-finite gradient values and returns their number, having written nothing."""
    if check:
        bad = _COUNT_BITS(g, start, stop, code) if _WEIGHT_BITS else _COUNT(g, start, stop)
        if bad:
            return bad
    scratch = np.empty((2 + len(state)) * STAGE, dtype=np.float32)
    for a in range(start, stop, STAGE):
        n = min(stop - a, STAGE)
        if _WEIGHT_BITS:
            g32 = scratch[:n]
            _WIDEN(g[a : a + n], g32.view(np.uint32), code)
            if master.size:
                w32 = master[a : a + n]
            else:
                w32 = scratch[STAGE : STAGE + n]
                _WIDEN(w[a : a + n], w32.view(np.uint32), code)
        else:
            g32 = g[a : a + n]
            w32 = w[a : a + n]
        views = _LOAD(state, absmax, scratch, a, n)
        _BLOCK(w32, g32, views, s, n)
        _STORE(views, state, absmax, skeys, a, n, stochastic)
        if _WEIGHT_BITS:
            _NARROW(w32.view(np.uint32), w[a : a + n], code, key, a, stochastic)
    return 0


def _helpers_source(kernel: Kernel, storages: tuple) -> str:
    """``load``, ``block`` and ``store`` of :func:`_staged` for ``kernel`` and state arrays
    stored as ``storages``: one line per array, so that Numba sees each array's own type
    (a tuple of mixed arrays cannot be indexed by a loop variable)."""
    load = [
        "def load(state, absmax, scratch, a, n):",
        "    b = a // QBLOCK",
        "    nb = (n + QBLOCK - 1) // QBLOCK",
    ]
    store = [
        "def store(views, state, absmax, skeys, a, n, stochastic):",
        "    b = a // QBLOCK",
        "    nb = (n + QBLOCK - 1) // QBLOCK",
    ]
    for k, storage in enumerate(storages):
        part = f"state[{k}][a : a + n]"
        if storage == FLOAT32:
            load.append(f"    v{k} = {part}")
            continue
        load.append(f"    v{k} = scratch[{2 + k} * STAGE : {2 + k} * STAGE + n]")
        if storage == BITS16:
            load.append(f"    WIDEN({part}, v{k}.view(np.uint32), BF16)")
            store.append(
                f"    NARROW(views[{k}].view(np.uint32), {part}, BF16, skeys[{k}], a, stochastic)"
            )
        else:
            signed = storage == INT8_SIGNED
            load.append(f"    DEQUANTIZE({part}, absmax[{k}][b : b + nb], v{k}, {signed})")
            store.append(f"    QUANTIZE(views[{k}], {part}, absmax[{k}][b : b + nb], {signed})")
    views = ", ".join(f"v{k}" for k in range(len(storages)))
    load.append(f"    return ({views}{',' if len(storages) == 1 else ''})")
    store.append("    return 0")
    arguments = ["j", "w", "g", *(f"u{k}" for k in range(len(storages)))]
    arguments += [f"s{k}" for k in range(len(kernel.scalars))]
    block = [
        "def block(w, g, views, s, n):",
        *(f"    u{k} = views[{k}]" for k in range(len(storages))),
        *(f"    s{k} = s[{k}]" for k in range(len(kernel.scalars))),
        "    for j in range(n):",
        f"        ELEMENT({', '.join(arguments)})",
    ]
    return "\n".join([*load, "", *store, "", *block, ""])


_staged_dispatchers: dict = {}


def _staged_dispatcher(kernel: Kernel, weight_bits: bool, storages: tuple):
    key = (kernel, weight_bits, storages)
    dispatcher = _staged_dispatchers.get(key)
    if dispatcher is None:
        with _lock:
            dispatcher = _staged_dispatchers.get(key)
            if dispatcher is None:
                source = _helpers_source(kernel, storages)
                namespace = {
                    "np": np,
                    "STAGE": STAGE,
                    "QBLOCK": quantize.BLOCK,
                    "BF16": np.int64(precision.FORMAT_CODES[precision.BFLOAT16]),
                    "WIDEN": _compile_device(precision.widen_loop),
                    "NARROW": _compile_device(precision.narrow_block),
                    "QUANTIZE": _compile_device(quantize.quantize_block_loop),
                    "DEQUANTIZE": _compile_device(quantize.dequantize_block_loop),
                    "ELEMENT": _compile_device(kernel.cpu),
                }
                # names unique to the kernel and storages (see cpu.adapter_name: why)
                tag = f"{kernel.name}_{hashlib.sha1(source.encode()).hexdigest()[:12]}"
                for role in ("load", "block", "store"):
                    source = source.replace(f"def {role}(", f"def mxopt_{role}_{tag}(")
                exec(compile(source, f"<mxopt staged helpers {kernel.name}>", "exec"), namespace)
                helpers = {role: numba.njit(error_model="numpy")(namespace[f"mxopt_{role}_{tag}"])
                           for role in ("load", "block", "store")}  # fmt: skip
                # the cached code's name: the kernel, the helpers' source, the loops' code
                # (and the 8-bit tables and constants, compiled into the loops)
                digest = hashlib.sha1(source.encode() + bytes([weight_bits])
                                      + quantize.TABLES_DIGEST.encode())  # fmt: skip
                for function in (_staged, kernel.cpu, precision.narrow_block, _count_nonfinite,
                                 count_nonfinite_bits,
                                 quantize.quantize_block_loop,
                                 quantize.dequantize_block_loop):  # fmt: skip
                    digest = _code_digest(function, digest)
                dispatcher = _specialised(
                    _staged,
                    f"mxopt_{kernel.name}_staged_{digest.hexdigest()[:12]}",
                    _WEIGHT_BITS=weight_bits,
                    _LOAD=helpers["load"],
                    _BLOCK=helpers["block"],
                    _STORE=helpers["store"],
                    _WIDEN=_compile_device(precision.widen_loop),
                    _NARROW=_compile_device(precision.narrow_block),
                    _COUNT=_count_nonfinite_compiled,
                    _COUNT_BITS=_compile_device(count_nonfinite_bits),
                )
                _staged_dispatchers[key] = dispatcher
    return dispatcher


def run_staged(kernel: Kernel, w, g, master, state: tuple, storages: tuple, absmax: tuple,
               scalars: tuple, check: bool, fmt: str | None, key: int, state_keys: tuple,
               stochastic: bool) -> int:  # fmt: skip
    """An elementwise ``kernel``'s step, fused, where the weight is float16/bfloat16 (format
    ``fmt``; ``w`` and ``g`` its flat 16-bit arrays, ``master`` its float32 master or None)
    or float32 (``fmt`` None), and the state arrays ``state`` are stored as ``storages``
    (:data:`FLOAT32`, :data:`BITS16` for bfloat16, :data:`INT8_SIGNED`/:data:`INT8_UNSIGNED`
    with their block ``absmax``; None for the others). ``key`` and ``state_keys``: the
    streams of the stochastic roundings. The same bits as widening everything, one call
    of :func:`mxopt.kernels.cpu.run`, and rounding or quantizing everything back; returns
    the count of non-finite gradient values found by ``check`` (then nothing was
    written), or 0."""
    weight = FLOAT32 if fmt is None else BITS16
    dispatcher = _staged_dispatcher(kernel, weight == BITS16, tuple(storages))
    code = np.int64(precision.FORMAT_CODES[fmt or precision.BFLOAT16])
    master = _NO_MASTER if master is None else master
    scalars = tuple(np.float32(value) for value in scalars)
    absmax = tuple(_NO_MASTER if a is None else a for a in absmax)
    pairs = zip(state, storages, strict=True)
    state = tuple(a.view(np.uint16) if s == BITS16 else a for a, s in pairs)
    if weight == BITS16:
        w, g = w.view(np.uint16), g.view(np.uint16)
    key, stochastic, n = np.uint64(key), bool(stochastic), w.size
    skeys = np.asarray(state_keys, dtype=np.uint64)
    arguments = (w, g, master, state, absmax, scalars)
    rounding = (code, key, stochastic, skeys)
    pool = _parallel(n)
    if pool is None:
        return dispatcher(*arguments, check, *rounding, np.int64(0), np.int64(n))
    if check:
        count = (
            _precision_loop(_count_bits_all, "mxopt_count_nonfinite_bits")(g, code)
            if weight == BITS16 else count_nonfinite(g)
        )  # fmt: skip
        if count:
            return int(count)
    pieces = _chunks(n, pool)  # whole reduction blocks: whole quantization blocks too

    def piece(k):
        a, b = pieces[k]
        dispatcher(*arguments, False, *rounding, np.int64(a), np.int64(b))

    pool.run(piece, len(pieces))
    return 0


_NO_MASTER = np.empty(0, dtype=np.float32)


def _count_bits_all(bits, code):
    return count_nonfinite_bits(bits, 0, bits.size, code)


def quantize_into(values, codes, absmax, signed: bool) -> None:
    """Blockwise 8-bit quantization of the flat float32 ``values`` into ``codes`` (uint8) and
    ``absmax`` (float32, one per block; see :mod:`mxopt.kernels.quantize`)."""
    quantize.quantize_blocks(values, codes, absmax, signed)


def dequantize(codes, absmax, signed: bool):
    """The float32 values of 8-bit ``codes`` and their blocks' ``absmax`` (a new array)."""
    return quantize.dequantize(codes, absmax, signed)

"""Numba loops of float16 and bfloat16 arrays (:mod:`mxopt.kernels.precision`): widening,
rounding, and the fused step of an elementwise kernel on a 16-bit weight.

The CPU half of :func:`mxopt.kernels.precision_module` (the GPU half is in
:mod:`mxopt.kernels.cuda`); built on the loop machinery of :mod:`mxopt.kernels.cpu`.
Imported on first use, like it.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from mxopt.kernels import precision
from mxopt.kernels.cpu import (
    _chunks,
    _code_digest,
    _compile_device,
    _parallel,
    _specialised,
    compile_loop,
)
from mxopt.kernels.kernel import Kernel
from mxopt.kernels.precision import count_nonfinite_bits

__all__ = ["STAGE", "narrow", "run_staged", "widen"]

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


# -- fused steps of float16/bfloat16 weights ----------------------------------------------------

#: Elements per stage of a fused float16/bfloat16 step: widened, updated and rounded back
#: while they are in the cache (two float32 stages: 16 KiB).
STAGE = 2048

_WIDEN = None  # placeholders of the staged loop: precision.widen_loop, narrow_block,
_NARROW = None  # count_nonfinite_bits (compiled), and the kernel's block adapter
_COUNT_BITS = None
_BLOCK = None


def _staged(wbits, gbits, master, state, s, check, code, key, stochastic, start, stop):
    """A kernel's step over elements ``[start, stop)`` of a 16-bit weight ``wbits`` and
    gradient ``gbits``, stage by stage: the gradient (and the weight, unless a float32
    ``master`` of the same size is given) widened to float32, the element applied, the
    float32 weight rounded into ``wbits`` (random stream ``key`` for element ``i``'s
    rounding at ``i``). The same bits as widening everything, one kernel call and
    rounding everything. With ``check``, returns the number of non-finite gradient
    values, having written nothing."""
    if check:
        bad = _COUNT_BITS(gbits, start, stop, code)
        if bad:
            return bad
    scratch = np.empty(2 * STAGE, dtype=np.float32)
    for a in range(start, stop, STAGE):
        n = min(stop - a, STAGE)
        g32 = scratch[:n]
        _WIDEN(gbits[a : a + n], g32.view(np.uint32), code)
        if master.size:
            w32 = master[a : a + n]
        else:
            w32 = scratch[STAGE : STAGE + n]
            _WIDEN(wbits[a : a + n], w32.view(np.uint32), code)
        _BLOCK(w32, g32, state, s, a, n)
        _NARROW(w32.view(np.uint32), wbits[a : a + n], code, key, a, stochastic)
    return 0


def _block_adapter(kernel: Kernel):
    """``block(w, g, state, s, a, n)``: the kernel's element over ``n`` elements of the
    stage arrays ``w`` and ``g`` and of the state arrays from element ``a``."""
    lines = ["def block(w, g, state, s, a, n):"]
    lines += [f"    s{k} = state[{k}][a:a + n]" for k in range(len(kernel.state))]
    arguments = ["j", "w", "g", *(f"s{k}" for k in range(len(kernel.state)))]
    arguments += [f"s[{k}]" for k in range(len(kernel.scalars))]
    lines += ["    for j in range(n):", f"        named({', '.join(arguments)})", ""]
    namespace = {"named": _compile_device(kernel.cpu)}
    exec(compile("\n".join(lines), f"<mxopt block adapter {kernel.name}>", "exec"), namespace)
    return numba.njit(error_model="numpy")(namespace["block"])


_staged_dispatchers: dict = {}


def _staged_dispatcher(kernel: Kernel):
    dispatcher = _staged_dispatchers.get(kernel)
    if dispatcher is None:
        with _lock:
            dispatcher = _staged_dispatchers.get(kernel)
            if dispatcher is None:
                digest = _code_digest(kernel.cpu, _code_digest(_staged)).hexdigest()[:12]
                dispatcher = _specialised(
                    _staged,
                    f"mxopt_{kernel.name}_staged_{digest}",
                    _WIDEN=_compile_device(precision.widen_loop),
                    _NARROW=_compile_device(precision.narrow_block),
                    _COUNT_BITS=_compile_device(precision.count_nonfinite_bits),
                    _BLOCK=_block_adapter(kernel),
                )
                _staged_dispatchers[kernel] = dispatcher
    return dispatcher


def run_staged(kernel: Kernel, wbits, gbits, master, state: tuple, scalars: tuple, check: bool,
               fmt: str, key: int, stochastic: bool) -> int:  # fmt: skip
    """An elementwise ``kernel``'s step on a float16/bfloat16 weight, fused: flat 16-bit
    ``wbits`` and ``gbits``, float32 ``master`` (or ``None``) and state arrays, the scalars
    (rounded to float32), the rounding's stream ``key``. The same bits as :func:`widen`,
    :func:`run` and :func:`narrow`; returns the count of non-finite gradient values found
    by ``check`` (then nothing was written), or 0."""
    dispatcher = _staged_dispatcher(kernel)
    code = np.int64(precision.FORMAT_CODES[fmt])
    master = _NO_MASTER if master is None else master
    scalars = tuple(np.float32(value) for value in scalars)
    key, stochastic, n = np.uint64(key), bool(stochastic), wbits.size
    wbits, gbits = wbits.view(np.uint16), gbits.view(np.uint16)
    pool = _parallel(n)
    if pool is None:
        return dispatcher(wbits, gbits, master, state, scalars, check, code, key, stochastic,
                          np.int64(0), np.int64(n))  # fmt: skip
    if check:
        count = _precision_loop(_count_bits_all, "mxopt_count_nonfinite_bits")(gbits, code)
        if count:
            return int(count)
    pieces = _chunks(n, pool)

    def piece(k):
        a, b = pieces[k]
        dispatcher(wbits, gbits, master, state, scalars, False, code, key, stochastic,
                   np.int64(a), np.int64(b))  # fmt: skip

    pool.run(piece, len(pieces))
    return 0


_NO_MASTER = np.empty(0, dtype=np.float32)


def _count_bits_all(bits, code):
    return count_nonfinite_bits(bits, 0, bits.size, code)

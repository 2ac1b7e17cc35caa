"""Array-type dispatch and the checks every update makes before it touches memory.

Two backends: ``"numpy"`` (Numba kernels, :mod:`mxopt.kernels.cpu`) and ``"cupy"``
(CUDA kernels, :mod:`mxopt.kernels.cuda`). A CuPy array is recognised by its type's
module, so nothing here imports CuPy.

The checks raise ``TypeError`` for a wrong kind of object (array type, dtype,
mixed backends) and ``ValueError`` for a wrong value (shape, layout,
writability, device), with messages that name the updater index. They run
before any write, so a failed update leaves weight and state untouched.
"""

from __future__ import annotations

import numpy as np

from mxopt.core.checks import shown
from mxopt.kernels.kernel import DTYPES
from mxopt.kernels.precision import low_precision_format

__all__ = ["StateArena", "backend_of", "check_weight", "flat_arrays", "full"]

NUMPY = "numpy"
CUPY = "cupy"

_SUPPORTED = ", ".join(str(d) for d in DTYPES) + ", float16 or bfloat16 (ml_dtypes)"
_FLOAT32 = np.dtype(np.float32)


def compute_dtype(dtype) -> np.dtype:
    """The dtype a weight of ``dtype`` is computed in, and its state arrays have: float32
    for float16 and bfloat16 weights, else the weight's own."""
    return _FLOAT32 if low_precision_format(dtype) else np.dtype(dtype)


def backend_of(array) -> str | None:
    """``"numpy"``, ``"cupy"`` or ``None`` for anything else."""
    if isinstance(array, np.ndarray):
        return NUMPY
    cls = type(array)
    if cls.__name__ == "ndarray" and cls.__module__.split(".")[0] == "cupy":
        return CUPY
    return None


def plain(array):
    """``array`` as an exact ``numpy.ndarray`` view of the same memory (a subclass such as
    ``np.memmap`` or ``np.matrix`` is used through its plain view, on purpose: compiled
    kernels are built for plain arrays, and a matrix would not even flatten); CuPy arrays
    as they are."""
    if type(array) is not np.ndarray and isinstance(array, np.ndarray):
        return array.view(np.ndarray)
    return array


def _refuse_masked(index, what: str, array) -> None:
    if isinstance(array, np.ma.MaskedArray):
        raise TypeError(
            f"index {shown(index)}: {what} is a numpy masked array; optimizers update every "
            f"element and cannot honour a mask: pass {what}.filled(0) (or {what}.data, "
            f"whose masked values would then be used)"
        )


def _describe(array) -> str:
    cls = type(array)
    return f"{cls.__module__}.{cls.__qualname__}"


def device_of(array, backend: str):
    """The CuPy device id of ``array``, or ``None`` for NumPy arrays."""
    return array.device.id if backend == CUPY else None


def check_weight(index, weight) -> str:
    """Check that ``weight`` can be updated in place; returns its backend."""
    backend = backend_of(weight)
    if backend is None:
        raise TypeError(
            f"index {shown(index)}: weight must be a numpy.ndarray or cupy.ndarray, "
            f"got {_describe(weight)}"
        )
    _refuse_masked(index, "weight", weight)
    if weight.dtype not in DTYPES and not low_precision_format(weight.dtype):
        raise TypeError(
            f"index {shown(index)}: weight dtype {weight.dtype} is not supported; expected "
            f"{_SUPPORTED}"
        )
    flags = weight.flags
    if not flags.c_contiguous:
        raise ValueError(
            f"index {shown(index)}: weight is not C-contiguous (strides {weight.strides}); "
            f"updates are in place, so keep and pass a contiguous array "
            f"(e.g. numpy.ascontiguousarray(weight))"
        )
    if backend == NUMPY and not flags.writeable:
        raise ValueError(f"index {shown(index)}: weight is read-only; updates are in place")
    if backend == NUMPY and not flags.aligned:
        raise ValueError(f"index {shown(index)}: weight is not aligned to its dtype")
    return backend


def _check_grad(index, weight, grad, backend: str):
    """Full check of ``grad`` against ``weight``; returns a C-contiguous grad."""
    grad_backend = backend_of(grad)
    if grad_backend is None:
        raise TypeError(
            f"index {shown(index)}: grad must be a numpy.ndarray or cupy.ndarray, got "
            f"{_describe(grad)}"
        )
    _refuse_masked(index, "grad", grad)
    if grad_backend != backend:
        raise TypeError(
            f"index {shown(index)}: weight is a {backend} array but grad is a {grad_backend} "
            f"array; both must be on the same backend"
        )
    if grad.dtype != weight.dtype:
        raise TypeError(
            f"index {shown(index)}: grad dtype {grad.dtype} does not match weight dtype "
            f"{weight.dtype}"
        )
    if grad.shape != weight.shape:
        raise ValueError(
            f"index {shown(index)}: grad shape {grad.shape} does not match weight shape "
            f"{weight.shape}"
        )
    if backend == CUPY and grad.device.id != weight.device.id:
        raise ValueError(
            f"index {shown(index)}: grad is on GPU {grad.device.id} but weight is on GPU "
            f"{weight.device.id}"
        )
    if grad is weight:
        raise ValueError(f"index {shown(index)}: grad and weight are the same array")
    if overlap(memory_interval(grad), memory_interval(weight)):
        raise ValueError(
            f"index {shown(index)}: grad overlaps the memory of weight (a view of it?); the "
            f"update would read values it has already written: pass a copy"
        )
    if not grad.flags.c_contiguous or (backend == NUMPY and not grad.flags.aligned):
        # The kernels read flat memory; a strided gradient is copied once, in C order.
        xp = np if backend == NUMPY else __import__("cupy")
        grad = xp.ascontiguousarray(grad)
    return grad


def memory_interval(array) -> tuple[int, int]:
    """``(start, stop)``: the bytes a C-contiguous NumPy or CuPy array occupies."""
    start = array.data.ptr if backend_of(array) == CUPY else array.__array_interface__["data"][0]
    return start, start + array.nbytes


def overlap(a: tuple, b: tuple) -> bool:
    """Whether byte intervals ``a`` and ``b`` (``(start, stop)``, empty ones overlap nothing)
    share a byte."""
    return a[0] < a[1] and b[0] < b[1] and a[0] < b[1] and b[0] < a[1]


def first_overlap(starts, stops, writable) -> int:
    """The position of an interval ``[starts[k], stops[k])`` that overlaps another one where
    at least one of the two is ``writable``, or -1 (empty intervals overlap nothing).

    Sorted by start, an interval overlaps an earlier one exactly when it starts before the
    largest stop seen so far: of all earlier intervals when it is writable, of the earlier
    writable ones when it is only read.
    """
    starts, stops = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
    writable = np.asarray(writable, bool)
    keep = np.flatnonzero(stops > starts)
    order = keep[np.argsort(starts[keep], kind="stable")]
    if order.size < 2:
        return -1
    s, e, w = starts[order], stops[order], writable[order]
    before_all = np.maximum.accumulate(e)[:-1]
    before_writable = np.maximum.accumulate(np.where(w, e, np.iinfo(np.int64).min))[:-1]
    clash = np.where(w[1:], before_all, before_writable) > s[1:]
    hits = np.flatnonzero(clash)
    return int(order[hits[0] + 1]) if hits.size else -1


def _check_against_state(index, weight, backend: str, wstate) -> None:
    if backend != wstate.backend or device_of(weight, backend) != wstate.device:
        where = lambda b, d: f"{b} array" + (f" on GPU {d}" if d is not None else "")  # noqa: E731
        raise ValueError(
            f"index {shown(index)}: the state of this index lives with a "
            f"{where(wstate.backend, wstate.device)} but weight is a "
            f"{where(backend, device_of(weight, backend))}"
        )
    if weight.shape != wstate.shape or weight.dtype != wstate.dtype:
        raise ValueError(
            f"index {shown(index)}: the state of this index was created for a weight of shape "
            f"{wstate.shape} and dtype {wstate.dtype}, but this weight has shape "
            f"{weight.shape} and dtype {weight.dtype}"
        )


def _same_owner(a, b) -> bool:
    """Whether ``a`` and ``b`` are views of one memory owner (they may overlap: the full
    checks decide). Two attribute reads: NumPy points a view's base at the owner."""
    base_a, base_b = a.base, b.base
    if base_a is None and base_b is None:
        return False
    return (a if base_a is None else base_a) is (b if base_b is None else base_b)


def flat_arrays(index, weight, grad, wstate):
    """Check an update's arrays against each other and the index's state.

    Returns flat views ``(w, g)`` ready for a kernel. The common case (NumPy
    arrays that match the state) takes a fast path of a few attribute reads.
    """
    if type(weight) is np.ndarray and type(grad) is np.ndarray and wstate.backend == NUMPY:
        shape = wstate.shape
        dtype = wstate.dtype
        # flags.carray: C-contiguous, aligned and writeable, in one attribute read. A
        # read-only gradient leaves the fast path and is accepted by the full checks.
        if (
            weight.shape == shape
            and grad.shape == shape
            and (weight.dtype is dtype or weight.dtype == dtype)
            and (grad.dtype is dtype or grad.dtype == dtype)
            and grad is not weight
            and not _same_owner(grad, weight)
            and weight.flags.carray
            and grad.flags.carray
        ):
            if weight.ndim == 1:
                return weight, grad
            return weight.reshape(-1), grad.reshape(-1)
    backend = check_weight(index, weight)
    _check_against_state(index, weight, backend, wstate)
    grad = _check_grad(index, weight, grad, backend)
    return plain(weight).reshape(-1), plain(grad).reshape(-1)


def flat_weight(index, weight, wstate):
    """Check ``weight`` against the index's state; returns its flat view."""
    backend = check_weight(index, weight)
    _check_against_state(index, weight, backend, wstate)
    return plain(weight).reshape(-1)


def to_backend(array, backend: str, device):
    """``array`` (NumPy or CuPy) as an array of ``backend`` on ``device`` (copied if needed)."""
    if backend == NUMPY:
        return array.get() if backend_of(array) == CUPY else np.ascontiguousarray(array)
    import cupy

    with cupy.cuda.Device(device):
        return cupy.ascontiguousarray(cupy.asarray(array))


def scalar_table(like, rows):
    """Per-segment scalars for segmented kernels: ``rows`` (2-D, float64) as a C-contiguous
    array of ``like``'s dtype on its backend and device (each value rounded once, as kernel
    arguments are)."""
    host = np.ascontiguousarray(np.asarray(rows, dtype=np.float64).astype(like.dtype))
    if backend_of(like) == CUPY:
        import cupy

        with cupy.cuda.Device(like.device.id):
            return cupy.asarray(host)
    return host


def to_host(array) -> np.ndarray:
    """``array`` as a NumPy array (copied from the GPU if needed)."""
    return array.get() if backend_of(array) == CUPY else np.asarray(array)


def flat_copy(array):
    """A flat copy of ``array`` on its own backend and device; a float16 or bfloat16 array
    is copied as float32 (exactly), the dtype it is computed in."""
    fmt = low_precision_format(array.dtype)
    if fmt is not None:
        from mxopt.kernels import precision_module

        return precision_module(backend_of(array)).widen(plain(array).reshape(-1), fmt)
    if backend_of(array) == CUPY:
        import cupy

        with cupy.cuda.Device(array.device.id):
            return array.reshape(-1).copy()
    return plain(array).reshape(-1).copy()


#: NumPy state arrays of at least this many bytes are staggered within a memory page.
STAGGER_MIN_BYTES = 1 << 18
#: How far apart, within a 4096-byte page, a weight and its state arrays start: 1 KiB and
#: one cache line per state array.
STAGGER_STEP_BYTES = 1024 + 64
_PAGE = 4096


class StateArena:
    """Consecutive memory for the small state arrays of weights made together (the first
    ``update_many`` of a model): state array number ``slot`` of each weight is a slice of one
    flat array per slot, in the order the weights come, 64-byte aligned.

    Made one by one, a weight's arrays alternate in memory (``mean`` then ``var``, weight
    after weight), so a kernel over many small weights starts a new stream at every array,
    where the hardware prefetcher stops; from an arena each state array of a list of
    weights is one stream, as in a :class:`~mxopt.ParameterBuffer`. Measured on ADAM over
    1000 weights of 1024 float32 elements (one thread): the list kernel 2.3 against 1.8 ms
    with the arrays of each slot allocated one after another. A slice keeps its arena's
    memory alive until every slice of it is gone.
    """

    _ALIGN = 64  # bytes: slices start on cache lines

    def __init__(self, elements: int):
        self.elements = elements  # one slot's arena (it grows when it is short)
        self._arenas: dict = {}  # (slot, dtype) -> [flat array, elements handed out]

    @classmethod
    def for_weights(cls, weights) -> StateArena:
        """An arena sized for the states of the small NumPy arrays among ``weights``."""
        small = (w.size + cls._ALIGN // 4 for w in weights if isinstance(w, np.ndarray)
                 and w.size * max(w.itemsize, 4) < STAGGER_MIN_BYTES)  # fmt: skip
        return cls(sum(small))  # with each slice's alignment (in float32 elements)

    def take(self, slot: int, dtype: np.dtype, size: int, fill: float) -> np.ndarray:
        """The next ``size`` elements of slot ``slot``'s arena, set to ``fill``."""
        step = self._ALIGN // dtype.itemsize
        padded = -(-size // step) * step
        arena = self._arenas.get((slot, dtype))
        if arena is None or arena[1] + padded > arena[0].size:
            flat = np.empty(max(self.elements, padded) + step, dtype=dtype)
            arena = [flat, (-flat.ctypes.data % self._ALIGN) // dtype.itemsize]  # aligned
            self._arenas[(slot, dtype)] = arena
        start = arena[1]
        arena[1] = start + padded
        array = arena[0][start : start + size]
        array.fill(fill)
        return array


def full(weight, backend: str, size: int, fill: float, slot: int = 0, arena=None):
    """A flat array of ``size`` elements of ``weight``'s compute dtype
    (:func:`compute_dtype`), on its backend and device.

    Large NumPy arrays all start at the same offset within a page (16 bytes into it), so
    a kernel that stores ``w[i]`` and then loads ``m[i]`` and ``v[i]`` keeps stalling on
    loads that look, by their low 12 address bits, like they depend on the store (4K
    aliasing). State array number ``slot`` of a large weight therefore starts
    ``(slot + 1) * STAGGER_STEP_BYTES`` after the weight's offset in the page. Measured
    on a 2-core AMD EPYC: the ADAM step over 16M float32 elements 9-14% faster (12.9 to
    11.4 ms), other sizes and SGD within noise (``benchmarks/bench_stagger.py``). It
    costs at most one page per state array. Smaller ones come from ``arena`` (a
    :class:`StateArena`) when given.
    """
    dtype = compute_dtype(weight.dtype)
    if backend == NUMPY:
        itemsize = dtype.itemsize
        if size * itemsize < STAGGER_MIN_BYTES:
            if arena is not None:
                return arena.take(slot, dtype, size, fill)
            return np.full(size, fill, dtype=dtype)
        raw = np.empty(size + _PAGE // itemsize, dtype=dtype)
        wanted = (weight.ctypes.data + (slot + 1) * STAGGER_STEP_BYTES) % _PAGE
        start = ((wanted - raw.ctypes.data) % _PAGE) // itemsize
        array = raw[start : start + size]
        array.fill(fill)
        return array
    import cupy

    with cupy.cuda.Device(weight.device.id):
        return cupy.full(size, fill, dtype=dtype)

"""A CPU stand-in for the part of CuPy that mxopt uses, for tests on machines without a GPU.

Arrays are NumPy arrays in disguise (:class:`ndarray`, whose type is named
``cupy.ndarray`` so mxopt's backend detection takes them for CuPy arrays), and
``RawModule`` builds the CUDA source it is given with g++ and runs each kernel
launch on the CPU, block by block and thread by thread (see
:mod:`tests.fake_cupy._kernels`). So the real CUDA kernels of mxopt run, and
their bits can be compared with the Numba kernels'.

The fake is strict where CuPy is strict and where a real GPU would misbehave
silently, so that code passing here does not fail on a GPU for those reasons:

* no implicit conversion to NumPy (``numpy.asarray(a)`` raises, use ``a.get()``),
  no arithmetic with NumPy arrays, no assignment of a non-scalar NumPy array;
* kernel arguments are checked against the kernel's C signature: exact scalar
  types, array dtypes, C-contiguous arrays, arrays on the launching device;
* ``empty`` returns poisoned memory (all bits set: NaN for floats), so a kernel
  that leaves part of an output unwritten is caught;
* several devices (:data:`DEVICE_COUNT`), with a current device per thread; new
  arrays, copies and ``asarray`` of another device's array go to the current
  device, elementwise work needs its arrays on the current device (no peer
  access), and a kernel runs on the device it was loaded on, with its arrays there;
* ``cupy.cuda.nccl`` (:mod:`tests.fake_cupy.cuda_nccl`): NCCL between threads, each
  thread a rank on its own device, handed device pointers (``array.data.ptr``) that must
  lie in a live allocation of that device.

Use :func:`install` (with pytest's ``monkeypatch``) to make ``import cupy`` find
it for one test; nothing stays behind afterwards.
"""

from __future__ import annotations

import builtins  # the module defines all, any, sum and abs, as CuPy does
import collections
import numbers
import sys
import threading
import types
import weakref

import numpy as np

from tests.fake_cupy._kernels import CUDADriverError, RawModule, precompile

__all__ = [
    "DEVICE_COUNT", "MULTIPROCESSOR_COUNT", "LAUNCHES", "RawModule", "asarray", "array",
    "ascontiguousarray", "asnumpy", "copyto", "cuda", "empty", "full", "install", "ndarray",
    "ones", "zeros", "precompile",
]  # fmt: skip

# NumPy's scalar types and constants, as CuPy re-exports them
dtype = np.dtype
bool_, int8, uint8, int32, uint32 = np.bool_, np.int8, np.uint8, np.int32, np.uint32
int64, uint64, float16, float32, float64 = np.int64, np.uint64, np.float16, np.float32, np.float64
nan, inf, newaxis = np.nan, np.inf, None

#: Devices the fake pretends to have.
DEVICE_COUNT = 2
#: ``Device.attributes["MultiProcessorCount"]``: small, so that mxopt's grids reach their
#: limit (32 blocks per SM) on small arrays and grid-stride loops go round more than once.
MULTIPROCESSOR_COUNT = 1
#: Kernel launches by kernel name (cleared by :func:`reset`).
LAUNCHES: collections.Counter = collections.Counter()

# -- devices ---------------------------------------------------------------------------

_local = threading.local()


def _current() -> int:
    return getattr(_local, "device", 0)


class CUDARuntimeError(RuntimeError):
    pass


class Device:
    """``cupy.cuda.Device(id)``: a context manager that makes ``id`` the current device."""

    def __init__(self, device=None):
        if device is None:
            device = _current()
        elif isinstance(device, Device):
            device = device.id
        if not isinstance(device, numbers.Integral) or not 0 <= int(device) < DEVICE_COUNT:
            raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device!r}")
        self.id = int(device)
        self._previous = []

    def __enter__(self):
        self._previous.append(_current())
        _local.device = self.id
        return self

    def __exit__(self, *exc):
        _local.device = self._previous.pop()
        return False

    def use(self) -> None:
        _local.device = self.id

    def synchronize(self) -> None:
        pass

    @property
    def attributes(self) -> dict:
        return {
            "MultiProcessorCount": MULTIPROCESSOR_COUNT,
            "MaxThreadsPerBlock": 1024,
            "MaxGridDimX": 2**31 - 1,
        }

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(("fake_cupy.Device", self.id))

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


def _get_device_count() -> int:
    return DEVICE_COUNT


def _set_device(device: int) -> None:
    Device(device).use()


cuda = types.ModuleType("cupy.cuda")
cuda.Device = Device
cuda.runtime = types.ModuleType("cupy.cuda.runtime")
cuda.runtime.getDeviceCount = _get_device_count
cuda.runtime.getDevice = _current
cuda.runtime.setDevice = _set_device
cuda.runtime.CUDARuntimeError = CUDARuntimeError
cuda.driver = types.ModuleType("cupy.cuda.driver")
cuda.driver.CUDADriverError = CUDADriverError


class Stream:
    """``cupy.cuda.Stream``: the fake runs everything at once, in order, so there is only
    the null stream (``ptr`` 0) of each device."""

    def __init__(self, device_id: int):
        self.ptr = 0
        self.device_id = device_id

    def synchronize(self) -> None:
        pass


def _get_current_stream(device_id=None) -> Stream:
    return Stream(_current() if device_id is None or device_id < 0 else int(device_id))


cuda.Stream = Stream
cuda.get_current_stream = _get_current_stream


def _require_current(*arrays, what: str) -> None:
    """CuPy's elementwise kernels run on the current device, on its arrays only."""
    here = _current()
    for a in arrays:
        if isinstance(a, ndarray) and a._device != here:
            raise ValueError(
                f"{what}: the array is on device {a._device} but the current device is {here} "
                f"(fake cupy allows no peer access)"
            )


# -- arrays ----------------------------------------------------------------------------


class Flags:
    """CuPy's flags: only the contiguity and ownership (no ``writeable`` or ``aligned``)."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, host: np.ndarray):
        self.c_contiguous = bool(host.flags.c_contiguous)
        self.f_contiguous = bool(host.flags.f_contiguous)
        self.owndata = bool(host.flags.owndata)

    def __getitem__(self, name):
        return getattr(self, {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous",
                              "OWNDATA": "owndata"}[name])  # fmt: skip


class MemoryPointer:
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr: int, device_id: int):
        self.ptr = ptr
        self.device_id = device_id

    @property
    def device(self) -> Device:
        return Device(self.device_id)


# Device pointers: NCCL (tests/fake_cupy/cuda_nccl.py) is handed pointers, not arrays. Every
# allocation whose pointer was taken is remembered (weakly), so that a pointer can be
# turned back into its memory, and a pointer into freed or foreign memory is refused.
_ALLOCATIONS: dict = {}  # id(owner) -> (weak reference to the owning host array, device)


def _pointer(a: ndarray) -> MemoryPointer:
    owner = a._host
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    key = id(owner)
    if key not in _ALLOCATIONS:
        forget = lambda _, key=key: _ALLOCATIONS.pop(key, None)  # noqa: E731
        _ALLOCATIONS[key] = (weakref.ref(owner, forget), a._device)
    return MemoryPointer(a._host.ctypes.data, a._device)


def _device_memory(ptr: int, nbytes: int) -> tuple[np.ndarray, int]:
    """``nbytes`` bytes at device pointer ``ptr`` (as a writable uint8 host view) and the
    device they are on; ValueError unless they lie in one live allocation."""
    for ref, device in list(_ALLOCATIONS.values()):
        owner = ref()
        if owner is None or not (owner.flags.c_contiguous or owner.flags.f_contiguous):
            continue
        start = owner.ctypes.data
        if start <= ptr and ptr + nbytes <= start + owner.nbytes:
            memory = owner.reshape(-1, order="A").view(np.uint8)
            return memory[ptr - start : ptr - start + nbytes], device
    raise ValueError(
        f"fake cupy: no live device allocation holds the {nbytes} bytes at {ptr:#x} (a "
        f"pointer past an array's end, into freed memory, or not from ndarray.data.ptr)"
    )


def _is_scalar(value) -> bool:
    return isinstance(value, (numbers.Number, np.generic)) or (
        isinstance(value, np.ndarray) and value.shape == ()
    )


def _operand(value, what: str):
    """A host value for elementwise work: our arrays (on the current device) or scalars."""
    if isinstance(value, ndarray):
        _require_current(value, what=what)
        return value._host
    if _is_scalar(value):
        return value
    raise TypeError(f"Unsupported type {type(value)}")


class ndarray:
    """A "device" array: a NumPy array (``_host``) and the id of the device it lives on."""

    __slots__ = ("_host", "_device")
    __module__ = "cupy"  # mxopt recognises CuPy arrays by their type's module and name

    def __init__(self, shape, dtype=float, order="C"):
        # as cupy.ndarray(shape, dtype): uninitialised memory on the current device
        self._host = np.empty(shape, dtype=dtype, order=order)
        self._host.reshape(-1, order="A").view(np.uint8)[...] = 0xFF
        self._device = _current()

    @classmethod
    def _wrap(cls, host: np.ndarray, device: int) -> ndarray:
        a = cls.__new__(cls)
        a._host = host
        a._device = device
        return a

    # -- attributes
    shape = property(lambda self: self._host.shape)
    dtype = property(lambda self: self._host.dtype)
    size = property(lambda self: self._host.size)
    ndim = property(lambda self: self._host.ndim)
    strides = property(lambda self: self._host.strides)
    itemsize = property(lambda self: self._host.itemsize)
    nbytes = property(lambda self: self._host.nbytes)
    flags = property(lambda self: Flags(self._host))
    device = property(lambda self: Device(self._device))
    data = property(lambda self: _pointer(self))
    T = property(lambda self: ndarray._wrap(self._host.T, self._device))  # a view, as CuPy's

    def __array__(self, *args, **kwargs):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # numpy ufuncs on our arrays run "on the device" (as CuPy's do); NumPy arrays refuse
        if (
            method != "__call__"
            or kwargs
            or not builtins.all(isinstance(x, ndarray) or _is_scalar(x) for x in inputs)
        ):
            return NotImplemented
        return _wrap_result(ufunc(*(_operand(x, ufunc.__name__) for x in inputs)))

    # -- copies and conversions
    def get(self, stream=None, order="C", out=None) -> np.ndarray:
        if out is not None:
            out[...] = self._host
            return out
        return np.array(self._host, order=order, copy=True)

    def set(self, host, stream=None) -> None:
        host = np.asarray(host)
        if host.shape != self.shape or host.dtype != self.dtype:
            raise ValueError(f"set: shape/dtype mismatch {host.shape} {host.dtype}")
        self._host[...] = host

    def copy(self, order="C") -> ndarray:
        # CuPy copies onto the *current* device, whatever device the array is on
        return ndarray._wrap(np.array(self._host, order=order, copy=True), _current())

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> ndarray:
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        _require_current(self, what="astype")
        return ndarray._wrap(self._host.astype(dtype, order=order), _current())

    def view(self, dtype=None) -> ndarray:
        return ndarray._wrap(self._host.view() if dtype is None else self._host.view(dtype),
                             self._device)  # fmt: skip

    def reshape(self, *shape, order="C") -> ndarray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ndarray._wrap(self._host.reshape(shape, order=order), self._device)

    def ravel(self, order="C") -> ndarray:
        return self.reshape(-1, order=order)

    def fill(self, value) -> None:
        if isinstance(value, np.ndarray) and value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        _require_current(self, what="fill")
        self._host.fill(value)

    def dot(self, other):
        # NumPy's dot: cuBLAS may round differently, which the fake cannot reproduce
        return _wrap_result(np.dot(_operand(self, "dot"), _operand(other, "dot")))

    def item(self):
        return self._host.item()

    def tolist(self):
        return self._host.tolist()

    # -- indexing
    def _key(self, key):
        def host(k):
            if isinstance(k, ndarray):
                _require_current(self, k, what="indexing")
                return k._host
            return k

        return tuple(host(k) for k in key) if isinstance(key, tuple) else host(key)

    def __getitem__(self, key) -> ndarray:
        return ndarray._wrap(self._host[self._key(key)], self._device)

    def __setitem__(self, key, value) -> None:
        key = self._key(key)
        if isinstance(value, ndarray):
            keys = key if isinstance(key, tuple) else (key,)
            target = self._host[key]
            same_layout = (  # CuPy's memcpy case: same shape, dtype and C-contiguous layout
                not builtins.any(isinstance(k, (np.ndarray, list)) for k in keys)
                and target.shape == value.shape
                and target.dtype == value.dtype
                and target.flags.c_contiguous
                and value._host.flags.c_contiguous
            )
            if not same_layout:  # an elementwise copy, on the current device
                _require_current(self, value, what="__setitem__")
            # else a device-to-device memcpy, which works between devices
            self._host[key] = value._host
            return
        if isinstance(value, np.ndarray) and value.shape != ():
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        if not _is_scalar(value):
            raise TypeError(f"Unsupported type {type(value)}")
        _require_current(self, what="__setitem__")
        self._host[key] = value

    def __len__(self):
        return len(self._host)

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    # -- scalars out (a synchronising read, allowed for one element as in CuPy)
    def __bool__(self):
        return bool(self._host)

    def __int__(self):
        return int(self._host)

    def __float__(self):
        return float(self._host)

    def __index__(self):
        return self._host.__index__()

    def __repr__(self):
        return repr(self._host)

    __str__ = __repr__

    # -- reductions (0-d arrays, as CuPy)
    def all(self, axis=None):
        return _wrap_result(np.all(_operand(self, "all"), axis=axis))

    def any(self, axis=None):
        return _wrap_result(np.any(_operand(self, "any"), axis=axis))

    def sum(self, axis=None, dtype=None):
        return _wrap_result(np.sum(_operand(self, "sum"), axis=axis, dtype=dtype))

    def max(self, axis=None):
        return _wrap_result(np.max(_operand(self, "max"), axis=axis))

    def min(self, axis=None):
        return _wrap_result(np.min(_operand(self, "min"), axis=axis))


def _wrap_result(result) -> ndarray:
    return ndarray._wrap(np.asarray(result), _current())


def _binary(op, reflected=False):
    def method(self, other):
        if isinstance(other, np.ndarray) and other.shape != ():
            raise TypeError(f"Unsupported type {type(other)}")
        a, b = _operand(self, op.__name__), _operand(other, op.__name__)
        return _wrap_result(op(b, a) if reflected else op(a, b))

    return method


def _unary(op):
    return lambda self: _wrap_result(op(_operand(self, op.__name__)))


for _name, _op in {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
    "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power,
    "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
}.items():  # fmt: skip
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))


def _in_place(op):
    def method(self, other):
        if isinstance(other, np.ndarray) and other.shape != ():
            raise TypeError(f"Unsupported type {type(other)}")
        _require_current(self, what=op.__name__)
        op(self._host, _operand(other, op.__name__), out=self._host)
        return self

    return method


for _name, _op in {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                   "truediv": np.true_divide}.items():  # fmt: skip
    setattr(ndarray, f"__i{_name}__", _in_place(_op))
for _name, _op in {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
                   "gt": np.greater, "ge": np.greater_equal}.items():  # fmt: skip
    setattr(ndarray, f"__{_name}__", _binary(_op))
for _name, _op in {"neg": np.negative, "pos": np.positive, "abs": np.absolute,
                   "invert": np.invert}.items():  # fmt: skip
    setattr(ndarray, f"__{_name}__", _unary(_op))
ndarray.__hash__ = None


# -- module functions ------------------------------------------------------------------


def _new(host: np.ndarray) -> ndarray:
    """A new array on the current device holding ``host`` (already a fresh copy)."""
    return ndarray._wrap(host, _current())


def array(obj, dtype=None, copy=True, order="K", ndmin=0) -> ndarray:
    if isinstance(obj, ndarray):
        if obj._device != _current():  # as CuPy: copied onto the current device
            obj, copy = obj.copy(order="C" if order == "K" else order), False
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
            return obj
        return obj.astype(obj.dtype if dtype is None else dtype, order=order)
    return _new(np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asarray(a, dtype=None, order=None) -> ndarray:
    return array(a, dtype=dtype, copy=False, order="K" if order is None else order)


def ascontiguousarray(a, dtype=None) -> ndarray:
    if isinstance(a, ndarray):
        if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        return a.astype(a.dtype if dtype is None else dtype, order="C")
    return _new(np.array(a, dtype=dtype, copy=True, order="C"))


def asnumpy(a, stream=None, order="C") -> np.ndarray:
    return a.get(order=order) if isinstance(a, ndarray) else np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


def empty(shape, dtype=float, order="C") -> ndarray:
    return ndarray(shape, dtype=dtype, order=order)  # poisoned: every bit set


def zeros(shape, dtype=float, order="C") -> ndarray:
    return _new(np.zeros(shape, dtype=dtype, order=order))


def ones(shape, dtype=float, order="C") -> ndarray:
    return _new(np.ones(shape, dtype=dtype, order=order))


def full(shape, fill_value, dtype=None, order="C") -> ndarray:
    if isinstance(fill_value, ndarray):
        fill_value = fill_value.item()
    return _new(np.full(shape, fill_value, dtype=dtype, order=order))


def empty_like(a, dtype=None) -> ndarray:
    return empty(a.shape, dtype=a.dtype if dtype is None else dtype)


def zeros_like(a, dtype=None) -> ndarray:
    return zeros(a.shape, dtype=a.dtype if dtype is None else dtype)


def ones_like(a, dtype=None) -> ndarray:
    return ones(a.shape, dtype=a.dtype if dtype is None else dtype)


def full_like(a, fill_value, dtype=None) -> ndarray:
    return full(a.shape, fill_value, dtype=a.dtype if dtype is None else dtype)


def arange(*args, dtype=None) -> ndarray:
    return _new(np.arange(*args, dtype=dtype))


def copyto(dst: ndarray, src, casting="same_kind") -> None:
    if not isinstance(dst, ndarray):
        raise TypeError(f"copyto: dst must be a cupy.ndarray, got {type(dst)}")
    if isinstance(src, ndarray) or _is_scalar(src):
        _require_current(dst, what="copyto")
        np.copyto(dst._host, _operand(src, "copyto"), casting=casting)
        return
    raise TypeError(f"Unsupported type {type(src)}")


def _function(numpy_function):
    def function(*arrays, **kwargs):
        return _wrap_result(numpy_function(*(_operand(a, numpy_function.__name__)
                                             for a in arrays), **kwargs))  # fmt: skip

    function.__name__ = numpy_function.__name__
    return function


isfinite = _function(np.isfinite)
isnan = _function(np.isnan)
isinf = _function(np.isinf)
all = _function(np.all)  # noqa: A001
any = _function(np.any)  # noqa: A001
sum = _function(np.sum)  # noqa: A001
abs = _function(np.absolute)  # noqa: A001
sqrt = _function(np.sqrt)
maximum = _function(np.maximum)
minimum = _function(np.minimum)
array_equal = _function(np.array_equal)
argmax = _function(np.argmax)


def _factors(numpy_function):
    """A decomposition giving a tuple of arrays (``eigh``, ``qr``): LAPACK's bits, where
    cuSOLVER may round differently, which the fake cannot reproduce."""

    def function(a, *args, **kwargs):
        result = numpy_function(_operand(a, numpy_function.__name__), *args, **kwargs)
        return tuple(_wrap_result(x) for x in result)

    function.__name__ = numpy_function.__name__
    return function


linalg = types.SimpleNamespace(eigh=_factors(np.linalg.eigh), qr=_factors(np.linalg.qr))


# -- installation ----------------------------------------------------------------------


def reset() -> None:
    """Current device 0 in this thread, launch counts cleared."""
    _local.device = 0
    LAUNCHES.clear()


def install(monkeypatch) -> types.ModuleType:
    """Make ``import cupy`` (and ``cupy.cuda``) give this module until ``monkeypatch``
    undoes it; returns the module."""
    module = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.runtime", cuda.runtime)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", cuda.nccl)
    reset()
    return module


# cupy.cuda.nccl: collectives between threads of this process (see the module)
from tests.fake_cupy import cuda_nccl  # noqa: E402

cuda.nccl = cuda_nccl

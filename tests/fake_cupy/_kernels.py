"""``cupy.RawModule`` on the CPU: CUDA C++ built with g++, launches run thread by thread.

The CUDA source is compiled as C++ after a shim that defines away ``__global__``,
``__device__`` and ``__forceinline__``, makes ``blockIdx``/``threadIdx``/
``blockDim``/``gridDim`` thread-local globals and provides ``atomicAdd`` for
``unsigned long long``. For every ``extern "C" __global__`` kernel a launcher
``fake_launch_<name>(grid, block, <the kernel's parameters>)`` is generated that
calls the kernel once per (block, thread), in order. That is exact for kernels
whose threads do not talk to each other (grid-stride loops, one thread per
chunk, atomics on a counter): a source with ``__syncthreads``, ``__shared__`` or
warp primitives is refused.

NVRTC's semantics are kept: ``--fmad=false`` becomes ``-ffp-contract=off`` (no
fused multiply-add), and without it contraction is on (with FMA instructions
when the CPU has them), as NVRTC's default is. Division and square root are
IEEE-exact in both, denormals are kept.

Arguments are checked against the parsed signature, as a GPU would need them to
be (CuPy itself checks nothing and passes bytes): scalars of the exact C type
(``np.float32`` for ``float``, ``np.float64`` or ``float`` for ``double``,
``np.int64`` or ``int`` for ``long long``, ``np.int32`` for ``int``), arrays of
the pointer's element type, C-contiguous, on the device the function was loaded
on, which must be the current device at launch.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["CUDADriverError", "RawModule", "kernel_signatures", "precompile"]


class CUDADriverError(RuntimeError):
    pass


SHIM = r"""// fake_cupy: CUDA C++ built for the CPU
#include <cmath>
using std::sqrt; using std::fabs; using std::fmax; using std::fmin;
using std::isfinite; using std::isnan; using std::isinf;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
struct fake_uint3 { unsigned int x, y, z; };
static thread_local fake_uint3 threadIdx, blockIdx, blockDim, gridDim;
static inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long v) {
    return __atomic_fetch_add(address, v, __ATOMIC_RELAXED);
}
#line 1 "cupy_module.cu"
"""

#: Inter-thread communication cannot be emulated by running threads one after another.
UNSUPPORTED = ("__syncthreads", "__shared__", "__syncwarp", "__shfl", "__ballot", "__any_sync",
               "__all_sync", "warpSize", "cooperative_groups", "__threadfence")  # fmt: skip

#: C types of kernel parameters: (ctypes type, NumPy dtype, Python types accepted as scalars).
C_TYPES = {
    "float": (ctypes.c_float, np.float32, ()),
    "double": (ctypes.c_double, np.float64, (float,)),
    "int": (ctypes.c_int, np.int32, ()),
    "unsigned char": (ctypes.c_ubyte, np.uint8, ()),
    "unsigned short": (ctypes.c_ushort, np.uint16, ()),
    "unsigned int": (ctypes.c_uint, np.uint32, ()),
    "long long": (ctypes.c_longlong, np.int64, (int,)),
    "unsigned long long": (ctypes.c_ulonglong, np.uint64, ()),
}

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def _strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", " ", source, flags=re.S)


class Param:
    __slots__ = ("text", "name", "ctype", "pointer")

    def __init__(self, text: str):
        self.text = " ".join(text.split())
        tokens = self.text.replace("*", " * ").split()
        self.name = tokens[-1]
        self.pointer = tokens.count("*")
        self.ctype = " ".join(t for t in tokens[:-1] if t not in ("const", "__restrict__", "*"))
        if self.ctype not in C_TYPES or self.pointer > 1 or not self.name.isidentifier():
            raise NotImplementedError(f"fake cupy: kernel parameter {self.text!r} is not emulated")

    def __repr__(self):
        return self.text


def kernel_signatures(source: str) -> dict:
    """``{name: [Param, ...]}`` of the ``extern "C" __global__`` kernels of ``source``."""
    code = _strip_comments(source)
    for word in UNSUPPORTED:
        if word in code:
            raise NotImplementedError(
                f"fake cupy: the source uses {word}; threads that cooperate cannot be run one "
                f"after another"
            )
    kernels = {name: [Param(p) for p in params.split(",") if p.strip()]
               for name, params in _KERNEL.findall(code)}  # fmt: skip
    if code.count("__global__") != len(kernels):
        raise NotImplementedError('fake cupy: every __global__ must be `extern "C" ... void`')
    return kernels


def _launcher(name: str, params: list) -> str:
    declared = ", ".join(["unsigned int fake_grid", "unsigned int fake_block"]
                         + [p.text for p in params])  # fmt: skip
    return (
        f'extern "C" void fake_launch_{name}({declared}) {{\n'
        f"    gridDim = fake_uint3{{fake_grid, 1, 1}};\n"
        f"    blockDim = fake_uint3{{fake_block, 1, 1}};\n"
        f"    for (unsigned int fake_b = 0; fake_b < fake_grid; ++fake_b)\n"
        f"        for (unsigned int fake_t = 0; fake_t < fake_block; ++fake_t) {{\n"
        f"            blockIdx = fake_uint3{{fake_b, 0, 0}};\n"
        f"            threadIdx = fake_uint3{{fake_t, 0, 0}};\n"
        f"            {name}({', '.join(p.name for p in params)});\n"
        f"        }}\n"
        f"}}\n"
    )


@functools.cache
def _host_has_fma() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " fma " in f.read()
    except OSError:
        return False


def compiler_flags(options) -> list:
    """g++ flags for NVRTC ``options`` (only those mxopt uses are emulated)."""
    std, fmad = "c++17", True  # NVRTC 12's defaults
    for option in options:
        if not isinstance(option, str):
            raise TypeError(f"fake cupy: options must be strings, got {option!r}")
        key, _, value = option.lstrip("-").partition("=")
        if key == "std":
            std = value
        elif key == "fmad" and value in ("true", "false"):
            fmad = value == "true"
        else:
            raise NotImplementedError(f"fake cupy: NVRTC option {option!r} is not emulated")
    flags = ["-O2", f"-std={std}", "-shared", "-fPIC", "-fno-fast-math"]
    if fmad:
        fma = platform.machine() in ("x86_64", "AMD64") and _host_has_fma()
        flags += ["-ffp-contract=fast", *(["-mfma"] if fma else [])]
    else:
        flags += ["-ffp-contract=off"]
    return flags


def _cache_dir() -> str:
    folder = os.environ.get("FAKE_CUPY_CACHE") or os.path.join(
        tempfile.gettempdir(), f"fake-cupy-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    )
    os.makedirs(folder, exist_ok=True)
    return folder


_lock = threading.Lock()
_libraries: dict = {}


def build(source: str, options) -> ctypes.CDLL:
    """The g++ build of ``source`` (with the shim and launchers), cached by content."""
    kernels = kernel_signatures(source)
    flags = compiler_flags(options)
    unit = SHIM + source + "\n" + "".join(_launcher(n, p) for n, p in kernels.items())
    key = hashlib.sha256(("\0".join(flags) + "\0" + unit).encode()).hexdigest()[:24]
    library = _libraries.get(key)
    if library is not None:
        return library
    path = os.path.join(_cache_dir(), f"{key}.so")
    if not os.path.exists(path):
        fd, cpp = tempfile.mkstemp(suffix=".cpp", dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as f:
            f.write(unit)
        partial = cpp[:-4] + ".so"
        try:
            result = subprocess.run(["g++", *flags, cpp, "-o", partial],
                                    capture_output=True, text=True)  # fmt: skip
            if result.returncode != 0:
                raise CUDADriverError(f"fake cupy: compilation failed:\n{result.stderr}")
            os.replace(partial, path)  # atomic: concurrent builds of one key are harmless
        finally:
            for leftover in (cpp, partial):
                if os.path.exists(leftover):
                    os.remove(leftover)
    with _lock:
        library = _libraries.setdefault(key, ctypes.CDLL(path))
    return library


def precompile(sources, options, workers: int | None = None) -> None:
    """Build ``sources`` in parallel (g++ runs in subprocesses), to warm the cache."""
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(lambda s: build(s, options), sources))


class RawModule:
    """``cupy.RawModule(code=..., options=...)``; compiled on the first ``get_function``."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, jitify=False, name_expressions=None):  # fmt: skip
        if code is None or path is not None or backend != "nvrtc" or jitify or name_expressions:
            raise NotImplementedError("fake cupy: only RawModule(code=..., options=...)")
        self.code = code
        self.options = tuple(options)
        self.kernels = kernel_signatures(code)  # refuses what cannot be emulated, early
        self._functions = {}

    def get_function(self, name: str) -> Function:
        """The kernel ``name``, loaded on the current device."""
        if name not in self.kernels:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found: {name}")
        from tests import fake_cupy

        device = fake_cupy.cuda.runtime.getDevice()
        function = self._functions.get((name, device))
        if function is None:
            params = self.kernels[name]
            launcher = getattr(build(self.code, self.options), f"fake_launch_{name}")
            launcher.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
                ctypes.c_void_p if p.pointer else C_TYPES[p.ctype][0] for p in params
            ]
            launcher.restype = None
            function = self._functions[(name, device)] = Function(name, params, launcher, device)
        return function


class Function:
    """A kernel loaded on one device: ``f(grid, block, args)`` runs it there."""

    def __init__(self, name, params, launcher, device: int):
        self.name, self.params, self.launcher, self.device = name, params, launcher, device

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        from tests import fake_cupy

        current = fake_cupy.cuda.runtime.getDevice()
        if current != self.device:
            raise CUDADriverError(
                f"CUDA_ERROR_INVALID_HANDLE: {self.name} was loaded on device {self.device} but "
                f"launched with device {current} current"
            )
        grid_x, block_x = _dimension(grid, "grid", 2**31 - 1), _dimension(block, "block", 1024)
        if shared_mem:
            raise NotImplementedError("fake cupy: dynamic shared memory is not emulated")
        if not isinstance(args, tuple):
            raise TypeError(f"{self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(
                f"{self.name}: {len(args)} arguments for {len(self.params)} parameters "
                f"({', '.join(map(str, self.params))})"
            )
        converted = [self._convert(p, a, current) for p, a in zip(self.params, args, strict=True)]
        fake_cupy.LAUNCHES[self.name] += 1
        self.launcher(grid_x, block_x, *converted)

    def _convert(self, param: Param, arg, device: int):
        from tests import fake_cupy

        _, dtype, python_types = C_TYPES[param.ctype]
        where = f"{self.name}: parameter {param.text!r}"
        if param.pointer:
            if not isinstance(arg, fake_cupy.ndarray):
                raise TypeError(f"{where}: expected a cupy.ndarray, got {type(arg).__name__}")
            if arg.dtype != dtype:
                raise TypeError(
                    f"{where}: array of dtype {arg.dtype}, the kernel reads {np.dtype(dtype)}"
                )
            if not arg._host.flags.c_contiguous:
                raise ValueError(f"{where}: the array is not C-contiguous (strides {arg.strides})")
            if arg._device != device:
                raise CUDADriverError(
                    f"CUDA_ERROR_ILLEGAL_ADDRESS: {where}: the array is on device {arg._device}, "
                    f"the kernel runs on device {device}"
                )
            return arg._host.ctypes.data
        if not (type(arg) is dtype or type(arg) in python_types):
            raise TypeError(
                f"{where}: got {type(arg).__module__}.{type(arg).__name__}; a GPU would read its "
                f"bytes as {param.ctype} (pass {dtype.__name__})"
            )
        return arg.item() if isinstance(arg, np.generic) else arg


def _dimension(value, what: str, limit: int) -> int:
    dims = (value,) if isinstance(value, int) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"fake cupy: bad {what} {value!r}")
    if any(int(d) != 1 for d in dims[1:]):
        raise NotImplementedError(f"fake cupy: only one-dimensional {what}s are emulated")
    x = int(dims[0])
    if not 1 <= x <= limit:
        raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {what} dimension {x} (1..{limit})")
    return x

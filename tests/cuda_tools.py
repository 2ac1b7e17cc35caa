"""Tools to check CUDA kernel sources on machines without a GPU.

* :func:`nvrtc_compile`: compile with NVRTC (the compiler CuPy uses at run
  time), loaded with ctypes from the ``nvidia-cuda-nvrtc-cu12`` wheel; works
  without a GPU or driver.
* :func:`nvcc_compile`: compile with ``nvcc`` when it is on the PATH.
* :func:`cpu_twin`: build the CUDA element with the host C++ compiler and a
  tiny shim, so the GPU math itself runs on the CPU and can be compared bit for
  bit with the Numba kernel.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile

from mxopt.kernels.cuda import NVRTC_OPTIONS, element_source
from mxopt.kernels.kernel import CUDA_PREAMBLE, DTYPES, REDUCE_BLOCK

#: Virtual architectures to compile for: Turing (older ones are deprecated in CUDA 12.9) and Hopper.
ARCHITECTURES = ("compute_75", "compute_90")


@functools.cache
def _nvrtc():
    candidates = []
    try:
        import nvidia.cuda_nvrtc as package

        for root in package.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    candidates += ["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13"]
    for path in candidates:
        if "alt" in os.path.basename(path) or "builtins" in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def have_nvrtc() -> bool:
    return _nvrtc() is not None


def nvrtc_compile(source: str, arch: str, options=NVRTC_OPTIONS) -> tuple[bool, str]:
    """Compile ``source`` to PTX for ``arch``; returns (success, compiler log)."""
    ok, log, _ = _nvrtc_run(source, arch, options)
    return ok, log


def nvrtc_ptx(source: str, arch: str, options=NVRTC_OPTIONS) -> str:
    """The PTX of ``source`` for ``arch`` (an AssertionError with the log if it fails)."""
    ok, log, ptx = _nvrtc_run(source, arch, options)
    assert ok, log
    return ptx


def _nvrtc_run(source: str, arch: str, options) -> tuple[bool, str, str]:
    lib = _nvrtc()
    program = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(
        ctypes.byref(program), source.encode(), b"mxopt.cu", 0, None, None
    )
    assert status == 0, f"nvrtcCreateProgram failed with {status}"
    flags = [*options, f"--gpu-architecture={arch}"]
    array = (ctypes.c_char_p * len(flags))(*[f.encode() for f in flags])
    status = lib.nvrtcCompileProgram(program, len(flags), array)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(program, log)
    ptx = ""
    if status == 0:
        lib.nvrtcGetPTXSize(program, ctypes.byref(size))
        text = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(program, text)
        ptx = text.value.decode()
    lib.nvrtcDestroyProgram(ctypes.byref(program))
    return status == 0, log.value.decode(errors="replace"), ptx


def have_nvcc() -> bool:
    return shutil.which("nvcc") is not None


def nvcc_compile(source: str, arch: str) -> tuple[bool, str]:
    """Compile ``source`` with nvcc to PTX for ``arch``; returns (success, output)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "mxopt.cu")
        with open(path, "w") as f:
            f.write(source)
        result = subprocess.run(
            [
                "nvcc",
                "--ptx",
                "--std=c++14",
                "--fmad=false",
                f"-arch={arch}",
                path,
                "-o",
                os.path.join(folder, "mxopt.ptx"),
            ],
            capture_output=True,
            text=True,
        )
    return result.returncode == 0, result.stdout + result.stderr


def have_cxx() -> bool:
    return shutil.which("g++") is not None


_SHIM = r"""
#include <cmath>
using std::sqrt; using std::fabs; using std::fmax; using std::fmin; using std::isfinite;
#define __device__
#define __forceinline__ inline
"""


def _driver(kernel, ctype: str) -> str:
    """``run_<ctype>(w, g, state, s, n, sums)``: the element over every index, summing a
    reducing kernel's pairs in the CPU kernel's order (fixed blocks, then blocks in order)."""
    states = ", ".join(f"state[{j}]" for j in range(len(kernel.state)))
    scalars = ", ".join(f"s[{j}]" for j in range(len(kernel.scalars)))
    args = ", ".join(a for a in ("i, w, g", states, scalars) if a)
    call = f"{kernel.name}_element<{ctype}>({args})"
    if kernel.reduces:
        body = (
            "    double total_a = 0.0, total_b = 0.0;\n"
            f"    for (long long start = 0; start < n; start += {REDUCE_BLOCK}) {{\n"
            "        double sum_a = 0.0, sum_b = 0.0;\n"
            f"        long long stop = start + {REDUCE_BLOCK};\n"
            "        if (stop > n) stop = n;\n"
            "        for (long long i = start; i < stop; ++i) {\n"
            f"            const mx_pair p = {call};\n"
            "            sum_a += p.a;\n"
            "            sum_b += p.b;\n"
            "        }\n"
            "        total_a += sum_a;\n"
            "        total_b += sum_b;\n"
            "    }\n"
            "    sums[0] = total_a;\n"
            "    sums[1] = total_b;\n"
        )
    else:
        body = f"    for (long long i = 0; i < n; ++i) {call};\n"
    return (
        f'extern "C" void run_{ctype}({ctype}* w, const {ctype}* g, {ctype}** state, '
        f"const {ctype}* s, long long n, double* sums) {{\n{body}}}\n"
    )


def build_cpu_library(source: str, path_stem: str) -> ctypes.CDLL:
    """Compile C++ ``source`` (CUDA device code behind the shim) into ``path_stem.so`` with
    g++ and load it; ``-ffp-contract=off`` keeps NVRTC's ``--fmad=false`` semantics."""
    cpp, lib = f"{path_stem}.cpp", f"{path_stem}.so"
    with open(cpp, "w") as f:
        f.write(source)
    subprocess.run(
        ["g++", "-O2", "-std=c++14", "-ffp-contract=off", "-shared", "-fPIC", cpp, "-o", lib],
        check=True,
        capture_output=True,
        text=True,
    )
    return ctypes.CDLL(lib)


_twins: dict = {}


def cpu_twin(kernel, workdir: str):
    """The CUDA element of ``kernel`` compiled for the CPU: ``ctypes`` library with
    ``run_float`` and ``run_double(w, g, state_pointers, scalars, n)``."""
    source = "\n".join(
        [_SHIM, CUDA_PREAMBLE, element_source(kernel)]
        + [_driver(kernel, ctype) for ctype in DTYPES.values()]
    )
    key = hashlib.sha1(source.encode()).hexdigest()[:16]
    if key not in _twins:
        _twins[key] = build_cpu_library(source, os.path.join(workdir, f"{kernel.name}_{key}"))
    return _twins[key]

"""Compiling and launching the CUDA kernels, in one place.

Each kernel file holds its CUDA source as an r'''...''' constant (SOURCE) next to its
Python launchers. A source is compiled by CuPy on its first launch (memoized), so that
importing npdlrm needs no GPU. Every kernel is an ``extern "C" __global__`` function
named ``npdlrm_*``, one per dtype (suffix ``_f32`` / ``_f64``; a file writes each once and
``for_each_dtype`` makes both); the kernels use no shared memory, no barriers, no atomics
and no warp intrinsics, so that each thread's work is independent (and
tests/cuda_emulator.py can run them on the CPU).
"""
import functools

import numpy as np

from ...backend import cupy_module, nvrtc_module

# The same arithmetic as the Numba kernels: no multiply-add contraction, IEEE-rounded
# division and square root (sums run in the same order, so values agree bitwise).
OPTIONS = ("--std=c++17", "--fmad=false", "--prec-div=true", "--prec-sqrt=true")
THREADS = 256  # threads per block of every launch

# The kernels' dtypes: NumPy dtype -> (C element type, kernel name suffix).
_DTYPES = {np.dtype(np.float32): ("float", "_f32"), np.dtype(np.float64): ("double", "_f64")}


@functools.lru_cache(maxsize=None)
def _raw_module(source):
    return cupy_module().RawModule(code=source, options=OPTIONS)


def launch(source, kernel, grid, block, args):
    """Run ``kernel`` of ``source`` on the current stream: grid, block: int or tuple;
    args: tuple of arrays (passed as pointers) and NumPy scalars (passed by value)."""
    fn = _raw_module(source).get_function(kernel)
    fn(_dims(grid), _dims(block), args)


def device_ptr(a):
    """The device address of array ``a``'s data (for tables of pointers)."""
    return a.data.ptr


def blocks(n, threads=THREADS):
    """Blocks of ``threads`` covering n work items (at least one)."""
    return max(1, (int(n) + threads - 1) // threads)


def suffix(dtype):
    """'_f32' or '_f64': the kernel name's dtype suffix; TypeError for other dtypes."""
    dt = np.dtype(dtype)
    if dt not in _DTYPES:
        raise TypeError(f"the CUDA kernels take float32 or float64, got {dt}")
    return _DTYPES[dt][1]


def for_each_dtype(wrappers):
    """The extern "C" kernels of ``wrappers`` (CUDA text written with REAL for the element
    type and _SFX for the name suffix), once for float (_f32) and once for double (_f64)."""
    return "".join(wrappers.replace("REAL", ctype).replace("_SFX", sfx)
                   for ctype, sfx in _DTYPES.values())


def _dims(d):
    return tuple(int(v) for v in d) if isinstance(d, tuple) else (int(d),)


def compile_to_ptx(source, name="npdlrm.cu", arch="compute_90"):
    """Compile ``source`` to PTX text with NVRTC (needs no GPU); RuntimeError with the
    compiler's log on a syntax or type error, or when NVRTC is not installed."""
    nvrtc = nvrtc_module()
    if nvrtc is None:
        raise RuntimeError("NVRTC is not available (pip install cupy-cuda12x "
                           "nvidia-cuda-nvrtc-cu12)")
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(OPTIONS) + [f"-arch={arch}"])
        except Exception as e:
            raise RuntimeError(f"{name}: NVRTC failed: {e}\n{nvrtc.getProgramLog(prog)}") from None
        ptx = nvrtc.getPTX(prog)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(prog)

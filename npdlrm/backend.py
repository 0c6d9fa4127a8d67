"""The one CPU/GPU dispatch point: where arrays live picks the array module and kernels.

A model lives on one device, 'cpu' (NumPy, the Numba kernels) or 'gpu' (CuPy, the CUDA
kernels of `npdlrm.kernels.cuda`). This is the only file that imports CuPy, and only
when a GPU is asked for: npdlrm imports and runs fully without CuPy or a GPU.
"""
import functools
import importlib
import os

import numpy as np

DEVICES = ("cpu", "gpu")


def check_device(device):
    """'cpu' or 'gpu' (also accepted: 'cuda'), else ValueError naming the value."""
    d = {"cuda": "gpu"}.get(device, device)
    if d not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    return d


def _is_cupy(a):
    t = type(a)
    if t is np.ndarray:  # the CPU's hot path: dispatch runs at every layer call
        return False
    m = t.__module__
    return m == "cupy" or m.startswith("cupy.")


def get_array_module(*arrays):
    """numpy, or cupy when any argument is a CuPy array."""
    for a in arrays:
        if _is_cupy(a):
            return cupy_module()
    return np


def device_of(a):
    """'gpu' for a CuPy array, else 'cpu'."""
    return "gpu" if _is_cupy(a) else "cpu"


@functools.lru_cache(maxsize=None)
def _import_cupy():
    """(cupy, None), or (None, why it cannot be used)."""
    if os.environ.get("NPDLRM_NO_CUPY"):
        return None, "NPDLRM_NO_CUPY is set"
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install
        return None, f"CuPy cannot be imported ({type(e).__name__}: {e}); install cupy-cuda12x or cupy-cuda13x"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or a driver older than CuPy's CUDA
        return None, f"CuPy finds no usable GPU ({type(e).__name__}: {e})"
    if n < 1:
        return None, "CuPy finds no GPU"
    return cupy, None


def gpu_unavailable_reason():
    """None when a GPU is usable here, else one line saying why not."""
    return _import_cupy()[1]


def cupy_module():
    """The cupy module; RuntimeError with the reason when no GPU is usable."""
    cp, why = _import_cupy()
    if cp is None:
        raise RuntimeError(f"no GPU for npdlrm: {why}")
    return cp


def nvrtc_module():
    """CuPy's NVRTC bindings (compile CUDA source to PTX; needs no GPU), or None."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception:
        return None
    return nvrtc


def array_module(device):
    """numpy for 'cpu', cupy for 'gpu' (RuntimeError with the reason when no GPU)."""
    return cupy_module() if check_device(device) == "gpu" else np


def kernels(*arrays):
    """The kernel home of the arrays' device: npdlrm.kernels.cuda or npdlrm.kernels.cpu."""
    for a in arrays:
        if _is_cupy(a):
            return _kernel_home("cuda")
    return _kernel_home("cpu")


@functools.lru_cache(maxsize=None)
def _kernel_home(name):
    return importlib.import_module(f"{__package__}.kernels.{name}")


def to_device(a, device):
    """`a` on `device` ('cpu': a NumPy array; 'gpu': a CuPy array); no copy if already there.
    None stays None."""
    if a is None:
        return None
    if check_device(device) == "gpu":
        return cupy_module().asarray(a)
    return to_host(a)


def to_host(a):
    """`a` as a NumPy array (copied from the GPU when it is a CuPy array)."""
    if _is_cupy(a):
        return a.get()
    return np.asarray(a)


def copy_into(target, source):
    """target[...] = source, across devices."""
    if _is_cupy(target):
        target[...] = cupy_module().asarray(source)
    else:
        target[...] = to_host(source)


def synchronize(*arrays):
    """Wait for the GPU work queued so far (before MPI, timers or host reads); a no-op on
    the CPU."""
    if any(_is_cupy(a) for a in arrays):
        cupy_module().cuda.get_current_stream().synchronize()

"""Run npdlrm's CUDA kernel sources on the CPU, to test their logic where there is no GPU.

A kernel source is compiled as C++ by g++ with a small shim (the CUDA qualifiers removed,
threadIdx/blockIdx/blockDim/gridDim as plain globals) and a generated wrapper per kernel
that runs every thread of the grid serially, in order. `emulated(monkeypatch)` swaps
`npdlrm.kernels.cuda._module.launch` and `device_ptr` for this, so that the CUDA launchers
run unchanged on NumPy arrays. It holds because npdlrm's kernels use no shared memory,
barriers, atomics or warp intrinsics: each thread's work stands alone. `-ffp-contract=off`
mirrors NVRTC's `--fmad=false`, so float results are those the GPU computes (with the
IEEE division and square root that --prec-div / --prec-sqrt ask for).

The wrapper also checks every argument against the kernel's C parameter list: an array
for a pointer, a NumPy scalar of exactly the C type for a value (CuPy would pass a wrong
one silently).
"""
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

SHIM = r'''
#include <math.h>
#include <cmath>
struct npdlrm_emu_dim3 { unsigned int x, y, z; };
static npdlrm_emu_dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
using std::sqrt;
'''
FLAGS = ["-O1", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
         "-w"]
KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(npdlrm_\w+)\s*\(([^)]*)\)')
# C value types -> (ctypes type, the NumPy dtype CuPy would pass as it)
VALUE_TYPES = {"long long": (ctypes.c_longlong, np.int64), "int": (ctypes.c_int, np.int32),
               "float": (ctypes.c_float, np.float32), "double": (ctypes.c_double, np.float64),
               "unsigned long long": (ctypes.c_ulonglong, np.uint64),
               "unsigned int": (ctypes.c_uint, np.uint32)}


def emulator_skip_reason():
    """None when a C++ compiler is here, else why the emulated tests cannot run."""
    return None if _compiler() else "no C++ compiler (g++) to emulate the CUDA kernels"


def _compiler():
    return shutil.which("g++") or shutil.which("c++")


def _params(plist):
    """[(C type, is_pointer)] of a kernel's parameter list."""
    out = []
    for p in plist.split(","):
        p = p.strip()
        if not p:
            continue
        pointer = "*" in p
        words = p.replace("*", " ").replace("const", " ").replace("__restrict__", " ").split()
        ctype = " ".join(words[:-1])  # drop the parameter's name
        if not pointer and ctype not in VALUE_TYPES:
            raise TypeError(f"emulator: unsupported parameter type {ctype!r} in ({plist})")
        out.append((ctype, pointer))
    return out


def _wrapper(name, plist):
    params = [p.strip() for p in plist.split(",") if p.strip()]
    names = [re.split(r"[\s*]+", p)[-1] for p in params]
    head = ("unsigned npdlrm_emu_g0, unsigned npdlrm_emu_g1, unsigned npdlrm_emu_g2, "
            "unsigned npdlrm_emu_b0, unsigned npdlrm_emu_b1, unsigned npdlrm_emu_b2")
    return (f'extern "C" void emu_{name}({head}{"".join(", " + p for p in params)}) {{\n'
            f'  gridDim.x = npdlrm_emu_g0; gridDim.y = npdlrm_emu_g1; gridDim.z = npdlrm_emu_g2;\n'
            f'  blockDim.x = npdlrm_emu_b0; blockDim.y = npdlrm_emu_b1; blockDim.z = npdlrm_emu_b2;\n'
            f'  for (unsigned npdlrm_emu_z = 0; npdlrm_emu_z < gridDim.z; ++npdlrm_emu_z)\n'
            f'  for (unsigned npdlrm_emu_y = 0; npdlrm_emu_y < gridDim.y; ++npdlrm_emu_y)\n'
            f'  for (unsigned npdlrm_emu_x = 0; npdlrm_emu_x < gridDim.x; ++npdlrm_emu_x) {{\n'
            f'    blockIdx.x = npdlrm_emu_x; blockIdx.y = npdlrm_emu_y; blockIdx.z = npdlrm_emu_z;\n'
            f'    for (unsigned npdlrm_emu_tz = 0; npdlrm_emu_tz < blockDim.z; ++npdlrm_emu_tz)\n'
            f'    for (unsigned npdlrm_emu_ty = 0; npdlrm_emu_ty < blockDim.y; ++npdlrm_emu_ty)\n'
            f'    for (unsigned npdlrm_emu_tx = 0; npdlrm_emu_tx < blockDim.x; ++npdlrm_emu_tx) {{\n'
            f'      threadIdx.x = npdlrm_emu_tx; threadIdx.y = npdlrm_emu_ty; '
            f'threadIdx.z = npdlrm_emu_tz;\n'
            f'      {name}({", ".join(names)});\n'
            f'    }}\n  }}\n}}\n')


@functools.lru_cache(maxsize=None)
def _build(source):
    """(ctypes library, {kernel: [(C type, is_pointer)]}) of one CUDA source."""
    kernels = {m.group(1): m.group(2) for m in KERNEL_RE.finditer(source)}
    if not kernels:
        raise ValueError("emulator: no extern \"C\" __global__ npdlrm_* kernel in the source")
    text = SHIM + source + "\n" + "".join(_wrapper(k, p) for k, p in kernels.items())
    digest = hashlib.sha256((text + " ".join(FLAGS)).encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "npdlrm-cuda-emulator")
    os.makedirs(folder, exist_ok=True)
    lib = os.path.join(folder, f"{digest}.so")
    if not os.path.exists(lib):
        src = os.path.join(folder, f"{digest}.{os.getpid()}.cpp")
        with open(src, "w") as f:
            f.write(text)
        tmp = f"{lib}.{os.getpid()}.tmp"
        done = subprocess.run([_compiler(), *FLAGS, "-x", "c++", src, "-o", tmp],
                              capture_output=True, text=True)
        os.unlink(src)
        if done.returncode:
            raise RuntimeError(f"emulator: g++ failed on the CUDA source:\n{done.stderr[-4000:]}")
        os.replace(tmp, lib)
    return ctypes.CDLL(lib), {k: _params(p) for k, p in kernels.items()}


def _dims(d):
    d = tuple(int(v) for v in d) if isinstance(d, tuple) else (int(d),)
    return d + (1,) * (3 - len(d))


def _arg(value, ctype, pointer, kernel, i):
    if pointer:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{kernel} argument {i}: a pointer needs an array, got "
                            f"{type(value).__name__}")
        return ctypes.c_void_p(value.ctypes.data)
    ct, dtype = VALUE_TYPES[ctype]
    if not isinstance(value, np.generic) or value.dtype != dtype:
        raise TypeError(f"{kernel} argument {i}: C type {ctype} needs a NumPy {np.dtype(dtype)} "
                        f"scalar, got {type(value).__name__} {getattr(value, 'dtype', '')}")
    return ct(value.item())


def launch(source, kernel, grid, block, args):
    """The emulated `_module.launch`: every thread of the grid, serially, on the CPU."""
    lib, kernels = _build(source)
    if kernel not in kernels:
        raise AttributeError(f"emulator: no kernel {kernel!r} in the source")
    params = kernels[kernel]
    if len(args) != len(params):
        raise TypeError(f"{kernel} takes {len(params)} arguments, got {len(args)}")
    cargs = [_arg(a, t, p, kernel, i) for i, (a, (t, p)) in enumerate(zip(args, params))]
    getattr(lib, f"emu_{kernel}")(*[ctypes.c_uint(v) for v in _dims(grid) + _dims(block)],
                                 *cargs)


def emulated(monkeypatch):
    """Make npdlrm's CUDA launchers run their kernels on the CPU, on NumPy arrays, for this
    test (pytest.skip when there is no C++ compiler)."""
    why = emulator_skip_reason()
    if why:
        pytest.skip(why)
    from npdlrm.kernels.cuda import _module
    monkeypatch.setattr(_module, "launch", launch)
    monkeypatch.setattr(_module, "device_ptr", lambda a: a.ctypes.data)

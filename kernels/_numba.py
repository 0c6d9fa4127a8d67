"""Numba decorator options, in one place.

No fastmath anywhere: every kernel must be exact and deterministic, and the
serial and parallel variant of a kernel must sum in the same order.
"""
import functools
import os

# After each parallel region, OpenMP workers spin by default; between the BLAS calls of
# a training step they then fight OpenBLAS's threads for the cores (measured on 2
# cores: 80 ms per step instead of 3). Sleeping workers avoid it. This must be set
# before Numba first loads its OpenMP runtime; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402

jit = functools.partial(numba.njit, cache=True, nogil=True)
pjit = functools.partial(numba.njit, cache=True, nogil=True, parallel=True)
# Same, with NumPy's float error model: a float division by zero gives inf/nan instead
# of raising, so that element-wise loops with divisions vectorize (no per-element
# branch). The values are the same IEEE results; callers check for zero divisors
# themselves where the Python error must be kept.
jit_vec = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")


# --------------------------------------------------------------------------
# software prefetch
# --------------------------------------------------------------------------
from llvmlite import ir  # noqa: E402
from llvmlite.binding import llvm_version_info  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402


# LLVM 15 and newer have opaque pointers (llvm.prefetch.p0); older ones mangle the i8*
_PREFETCH_NAME = ("llvm.prefetch.p0" if llvm_version_info >= (15,) else "llvm.prefetch.p0i8")


def _prefetch_intrinsic(rw):
    """An intrinsic ``f(arr, i, j)`` that prefetches the line holding ``arr[i, j]`` of a
    2-D array (``rw``: 0 read, 1 write intent). A hint only: no load, no fault, no
    effect on any value, so any address is allowed (no bounds check)."""

    @intrinsic
    def prefetch(typingctx, arr, i, j):
        if not (isinstance(arr, types.Array) and arr.ndim == 2
                and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
            return None
        sig = types.void(arr, i, j)

        def codegen(context, builder, signature, args):
            arrty, ity, jty = signature.args
            ary = context.make_array(arrty)(context, builder, args[0])
            iv = context.cast(builder, args[1], ity, types.intp)
            jv = context.cast(builder, args[2], jty, types.intp)
            strides = cgutils.unpack_tuple(builder, ary.strides, 2)
            off = builder.add(builder.mul(iv, strides[0]), builder.mul(jv, strides[1]))
            base = builder.ptrtoint(ary.data, off.type)
            ptr = builder.inttoptr(builder.add(base, off), ir.IntType(8).as_pointer())
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH_NAME)
            builder.call(fn, [ptr, i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


# prefetch_read(arr, i, j) / prefetch_write(arr, i, j): hint the line of arr[i, j].
prefetch_read = _prefetch_intrinsic(0)
prefetch_write = _prefetch_intrinsic(1)

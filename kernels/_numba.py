"""Numba decorator options, in one place.

No fastmath anywhere: every kernel must be exact and deterministic, and the
serial and parallel variant of a kernel must sum in the same order.
"""
import functools

import numba

jit = functools.partial(numba.njit, cache=True, nogil=True)
pjit = functools.partial(numba.njit, cache=True, nogil=True, parallel=True)

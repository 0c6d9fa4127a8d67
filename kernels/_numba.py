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

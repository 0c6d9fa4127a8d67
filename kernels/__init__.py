"""The kernels of npdlrm.

The compute kernels have two homes with the same names and signatures: `cpu` (Numba)
and `cuda` (CUDA source compiled by CuPy on first use). `npdlrm.backend.kernels(*arrays)`
is the one place that picks between them. This package's own namespace re-exports the
CPU ones; the data kernels (Criteo parsing, the hash dictionary) and the quantized
lookups run on the CPU only.
"""
from .cpu import *  # noqa: F401,F403
from .cpu import __all__ as _compute
from .criteo_parse import parse_criteo_lines
from .pairs import num_pairs, pair_indices

__all__ = list(_compute) + ["num_pairs", "pair_indices", "parse_criteo_lines"]

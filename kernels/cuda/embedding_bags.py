"""All tables at once on the GPU: the embedding-bag forward and the fused sparse update of
T tables, each in one launch (the update: one coalesce, one sort, one update launch).

The CUDA twin of ``kernels/cpu/embedding_bags.py``: same names, signatures and results,
bit for bit (float32 and float64). Packed bags: ``indices`` (nnz,) holds every table's
bags back to back, and ``offsets`` (T, B + 1) gives table t's bag b as
``indices[offsets[t, b]:offsets[t, b + 1]]``. The T weight (and state) arrays are reached
through a device table of their addresses, memoized by the tuple of addresses.
Forward: one thread per (b, t, d), summing in the CPU order (``embedding_bag.DEVICE``).
"""
import numpy as np

from ...backend import get_array_module
from . import _module
from .embedding_bag import (DEVICE, dout_arg, element_strides, index_arrays, int64_table,
                            weights_arg)
from .embedding_update import KINDS, update_tables

_DEVICE = r'''
// out: (B, T, D) strides (so0, so1, so2)  wptrs: (T,) addresses of (V_t, D) C-contiguous
// offsets: (T, B + 1)
template <typename T>
__device__ void npdlrm_bags_fwd(T* out, const long long* wptrs, const long long* indices,
                                const long long* offsets, const T* psw, int has_w, int mean,
                                long long B, long long ntab, long long D, long long so0,
                                long long so1, long long so2)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * ntab * D) return;
    long long bt = i / D;
    long long d = i - bt * D;
    long long b = bt / ntab;
    long long t = bt - b * ntab;
    const long long* off = offsets + t * (B + 1) + b;
    const T* w = reinterpret_cast<const T*>(wptrs[t]);
    out[b * so0 + t * so1 + d * so2] = npdlrm_pool<T>(w, indices, psw, has_w, mean, off[0],
                                                      off[1], D, d);
}
'''

# The extern "C" kernels, written once (REAL, _SFX) for both dtypes.
WRAPPERS = r'''
extern "C" __global__ void npdlrm_embedding_bags_fwd_SFX(
    REAL* out, const long long* wptrs, const long long* indices, const long long* offsets,
    const REAL* psw, int has_w, int mean, long long B, long long ntab, long long D,
    long long so0, long long so1, long long so2)
{
    npdlrm_bags_fwd<REAL>(out, wptrs, indices, offsets, psw, has_w, mean, B, ntab, D, so0,
                          so1, so2);
}
'''

SOURCE = DEVICE + _DEVICE + _module.for_each_dtype(WRAPPERS)


def _check_weights(weights, D, dtype):
    """ValueError unless the T weights are C-contiguous (V_t, D) arrays of ``dtype``."""
    for t, w in enumerate(weights):
        if w.ndim != 2 or w.shape[1] != D or w.dtype != dtype:
            raise ValueError(f"weights[{t}] must be {np.dtype(dtype)} (V, {D}), got "
                             f"{w.dtype} {w.shape}")
        if not w.flags.c_contiguous:
            raise ValueError(f"weights[{t}] must be C-contiguous (read through its address)")


def _check_bags(offsets, B, T):
    if offsets.shape != (T, B + 1):
        raise ValueError(f"offsets must have shape ({T}, {B + 1}), got {offsets.shape}")


def embedding_bags_forward(out, weights, indices, offsets, per_sample_weights, mean):
    """Pool every table's bags into ``out`` (overwritten).

    out: (B, T, D), may be a strided view; weights: T arrays (V_t, D), one dtype (out's),
    C-contiguous; indices: (nnz,) int64; offsets: (T, B + 1) int64 positions into indices;
    per_sample_weights: None or (nnz,); mean: bool.
    """
    B, T, D = out.shape
    if len(weights) != T:
        raise ValueError(f"out has {T} tables, got {len(weights)} weights")
    _check_weights(weights, D, out.dtype)
    _check_bags(offsets, B, T)
    if T == 0:
        return
    xp = get_array_module(out, indices, offsets, *weights)
    sfx = _module.suffix(out.dtype)
    indices, offsets = index_arrays(xp, indices, offsets)
    psw, has_w = weights_arg(xp, per_sample_weights, indices.shape[0], out.dtype)
    wptrs = int64_table(xp, tuple(_module.device_ptr(w) for w in weights))
    target, st = out, element_strides(out)
    if st is None:
        target = xp.empty((B, T, D), out.dtype)
        st = element_strides(target)
    _module.launch(SOURCE, "npdlrm_embedding_bags_fwd" + sfx, _module.blocks(B * T * D),
                   _module.THREADS,
                   (target, wptrs, indices, offsets, psw, has_w, np.int32(bool(mean)),
                    np.int64(B), np.int64(T), np.int64(D), np.int64(st[0]), np.int64(st[1]),
                    np.int64(st[2])))
    if target is not out:
        out[...] = target


def embedding_bags_update(kind, weights, states, dout, indices, offsets, per_sample_weights,
                          mean, lr, eps):
    """Fused backward + sparse optimizer ``kind`` ('sgd', 'adagrad', 'rwsadagrad') of
    every table, on the rows its bags touched: one sort and one update launch for all.

    weights: T arrays (V_t, D), one dtype, C-contiguous; states: T arrays (None for sgd,
    (V_t, D) adagrad, (V_t,) rwsadagrad), C-contiguous; dout: (B, T, D), may be a strided
    view; indices, offsets, per_sample_weights, mean: as embedding_bags_forward;
    lr, eps: floats (cast to the weight dtype). No host synchronisation.
    """
    if kind not in KINDS:
        raise ValueError(f"sparse optimizer must be sgd, adagrad or rwsadagrad, got {kind!r}")
    B, T, D = dout.shape
    if len(weights) != T:
        raise ValueError(f"dout has {T} tables, got {len(weights)} weights")
    if kind != "sgd" and (states is None or len(states) != T):
        raise ValueError(f"{kind} needs {T} states, one per table")
    if T == 0:
        return
    dtype = weights[0].dtype
    _check_weights(weights, D, dtype)
    _check_bags(offsets, B, T)
    if D == 0:
        return
    xp = get_array_module(dout, indices, offsets, *weights)
    indices, offsets = index_arrays(xp, indices, offsets)
    dout, st = dout_arg(xp, dout, dtype)
    update_tables(KINDS[kind], weights, states, dout, st, indices, offsets,
                  per_sample_weights, mean, lr, eps)

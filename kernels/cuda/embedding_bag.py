"""EmbeddingBag forward (sum / mean pooling) and its sparse gradient on the GPU.

The CUDA twin of ``kernels/cpu/embedding_bag.py``: same names, signatures and results,
bit for bit (float32 and float64). Bags are in CSR form: bag ``b`` is
``indices[offsets[b]:offsets[b + 1]]``.

- forward: one thread per (bag b, column d) sums its bag in position order, as the CPU:
  ``acc = w_s * W[r_s, d]`` (or ``W[r_s, d]``), then ``acc += w_k * W[r_k, d]``, then
  ``acc / n`` for mean; an empty bag gives 0.
- gradient: the occurrences are coalesced without a stable argsort: ``coalesce`` gives
  position k the unique int64 key ``(row_base[t] + row) * nnz + k`` (t: its table, 0 for
  one table), and one ``sort`` of the keys orders them by row, then by position, which is
  the CPU's stable order. ``embedding_segments.segments`` lays the sorted occurrences out
  contiguously (dout offset and coefficient by sorted position, the first position of
  each segment), and a segment (one global row) is summed in that order:
  ``g = c_0 * dout[bag_0, d]``, then ``g += c_j * dout[bag_j, d]``, with ``c`` the CPU
  ``coalesce`` coefficient (weight, divided by the bag length when ``mean``).
  Positions outside every bag (none in CSR bags) get the sentinel row ``sum(V_t)`` and are
  ignored. ``embedding_update`` and ``embedding_bags`` reuse these pieces (``DEVICE``,
  ``coalesce``, ``segments``), so their updates see bitwise the same gradient rows.
"""
import functools

import numpy as np

from ...backend import get_array_module
from . import _module
from .embedding_segments import SEGMENT, segments

# Device code shared with embedding_update.py and embedding_bags.py (templates only).
DEVICE = r'''
// One pooled value: bag positions s..e-1 of table `w` (V, D) C-contiguous, column d.
template <typename T>
__device__ T npdlrm_pool(const T* w, const long long* indices, const T* psw, int has_w,
                         int mean, long long s, long long e, long long D, long long d)
{
    if (e <= s) return T(0);
    T acc;
    if (has_w) {
        acc = psw[s] * w[indices[s] * D + d];
        for (long long k = s + 1; k < e; ++k) acc += psw[k] * w[indices[k] * D + d];
    } else {
        acc = w[indices[s] * D + d];
        for (long long k = s + 1; k < e; ++k) acc += w[indices[k] * D + d];
    }
    if (mean) acc = acc / (T)(e - s);
    return acc;
}

// Thread i = t * B + b (bag b of table t): for each of its positions k, the sort key,
// the element offset of dout[b, t, 0] and the coefficient (the CPU `coalesce`).
// offsets: (T, B + 1)  row_base: (T,)  psw: (nnz,) | unused
template <typename T>
__device__ void npdlrm_coalesce(long long* keys, long long* doff, T* coef,
                                const long long* indices, const long long* offsets,
                                const long long* row_base, const T* psw, int has_w, int mean,
                                long long B, long long ntab, long long nnz,
                                long long dsb, long long dst)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * ntab) return;
    long long t = i / B;
    long long b = i - t * B;
    long long s = offsets[t * (B + 1) + b];
    long long e = offsets[t * (B + 1) + b + 1];
    T n = (T)(e - s);
    long long base = row_base[t];
    long long off = b * dsb + t * dst;
    for (long long k = s; k < e; ++k) {
        T c = has_w ? psw[k] : T(1);
        if (mean) c = c / n;
        coef[k] = c;
        doff[k] = off;
        keys[k] = (base + indices[k]) * nnz + k;
    }
}
'''

_BAG_DEVICE = r'''
// out: (B, D) strides (so0, so1)  w: (V, D)  offsets: (B + 1,)
template <typename T>
__device__ void npdlrm_bag_fwd(T* out, const T* w, const long long* indices,
                               const long long* offsets, const T* psw, int has_w, int mean,
                               long long B, long long D, long long so0, long long so1)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B * D) return;
    long long b = i / D;
    long long d = i - b * D;
    out[b * so0 + d * so1] = npdlrm_pool<T>(w, indices, psw, has_w, mean, offsets[b],
                                            offsets[b + 1], D, d);
}

// values: (U, D)  sstart: (> U,) first sorted position of each segment (segment u ends
// where u + 1 starts)  sdoff, scoef: (nnz,) by sorted position (embedding_segments)
template <typename T>
__device__ void npdlrm_bag_grad(T* values, const long long* sstart, const long long* sdoff,
                                const T* scoef, const T* dout, long long U, long long D)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= U * D) return;
    long long u = i / D;
    long long d = i - u * D;
    values[i] = npdlrm_segment_sum<T>(sdoff, scoef, dout, sstart[u], sstart[u + 1], d);
}
'''

# The extern "C" kernels, written once (REAL, _SFX) for both dtypes.
WRAPPERS = r'''
extern "C" __global__ void npdlrm_embedding_bag_fwd_SFX(
    REAL* out, const REAL* w, const long long* indices, const long long* offsets,
    const REAL* psw, int has_w, int mean, long long B, long long D, long long so0,
    long long so1)
{
    npdlrm_bag_fwd<REAL>(out, w, indices, offsets, psw, has_w, mean, B, D, so0, so1);
}

extern "C" __global__ void npdlrm_embedding_coalesce_SFX(
    long long* keys, long long* doff, REAL* coef, const long long* indices,
    const long long* offsets, const long long* row_base, const REAL* psw, int has_w,
    int mean, long long B, long long ntab, long long nnz, long long dsb, long long dst)
{
    npdlrm_coalesce<REAL>(keys, doff, coef, indices, offsets, row_base, psw, has_w, mean,
                          B, ntab, nnz, dsb, dst);
}

extern "C" __global__ void npdlrm_embedding_bag_grad_SFX(
    REAL* values, const long long* sstart, const long long* sdoff, const REAL* scoef,
    const REAL* dout, long long U, long long D)
{
    npdlrm_bag_grad<REAL>(values, sstart, sdoff, scoef, dout, U, D);
}
'''

SOURCE = DEVICE + SEGMENT + _BAG_DEVICE + _module.for_each_dtype(WRAPPERS)


# --------------------------------------------------------------------------
# helpers shared with embedding_update.py and embedding_bags.py
# --------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def int64_table(xp, values):
    """A device int64 array holding the tuple ``values`` (pointer tables, row bases),
    memoized by the tuple: uploaded once per distinct tuple, never written."""
    return xp.asarray(np.array(values, dtype=np.int64))


def element_strides(a):
    """a's strides in elements, or None when one is not a whole number of elements."""
    item = a.dtype.itemsize
    if any(s % item for s in a.strides):
        return None
    return tuple(int(s) // item for s in a.strides)


def dout_arg(xp, dout, dtype):
    """(dout in ``dtype``, its strides in elements): ``dout`` itself when it has that dtype,
    whole-element strides and a unit last stride (any such view), else a C-contiguous
    converted copy."""
    dout = xp.asarray(dout, dtype=dtype)
    st = element_strides(dout)
    if st is None or st[-1] != 1:
        dout = xp.ascontiguousarray(dout)
        st = element_strides(dout)
    return dout, st


def weights_arg(xp, per_sample_weights, nnz, dtype):
    """(psw array of ``dtype``, has_w as np.int32) for the kernels; ValueError on a wrong
    length."""
    if per_sample_weights is None:
        return xp.empty(0, dtype), np.int32(0)
    if per_sample_weights.shape != (nnz,):
        raise ValueError(f"per_sample_weights must have shape ({nnz},), got "
                         f"{per_sample_weights.shape}")
    return xp.ascontiguousarray(xp.asarray(per_sample_weights, dtype=dtype)), np.int32(1)


def check_key_range(total_rows, nnz):
    """ValueError unless every key ``(row_base + row) * nnz + k`` (the sentinel row
    ``total_rows`` included) fits in an int64."""
    if (int(total_rows) + 1) * int(nnz) >= 1 << 63:
        raise ValueError(f"sum of table rows {total_rows} times nnz {nnz} does not fit the "
                         "int64 sort keys")


def coalesce(xp, indices, offsets, row_base, total_rows, psw, has_w, mean, dtype, dsb, dst):
    """Sorted keys, dout offsets and coefficients of the packed bags (on the device).

    indices: (nnz,) int64 contiguous; offsets: (T, B + 1) int64 contiguous;
    row_base: (T,) device int64; total_rows: sum(V_t) (the sentinel row of positions in
    no bag); psw/has_w: as ``weights_arg``; dout strides (dsb, dst) in elements.
    Returns ``keys`` (nnz,) sorted, ``doff`` (nnz,) element offset of dout[bag, table]
    and ``coef`` (nnz,) in ``dtype``, both indexed by position (``keys[p] % nnz``).
    """
    nnz = indices.shape[0]
    T, B1 = offsets.shape
    B = B1 - 1
    keys = xp.arange(total_rows * nnz, (total_rows + 1) * nnz, dtype=xp.int64)
    doff = xp.zeros(nnz, xp.int64)
    coef = xp.zeros(nnz, dtype)
    _module.launch(SOURCE, "npdlrm_embedding_coalesce" + _module.suffix(dtype),
                   _module.blocks(T * B), _module.THREADS,
                   (keys, doff, coef, indices, offsets, row_base, psw, has_w,
                    np.int32(bool(mean)), np.int64(B), np.int64(T), np.int64(nnz),
                    np.int64(dsb), np.int64(dst)))
    return xp.sort(keys), doff, coef


def index_arrays(xp, indices, offsets):
    """indices and offsets as contiguous int64 device arrays."""
    return (xp.ascontiguousarray(xp.asarray(indices, dtype=xp.int64)),
            xp.ascontiguousarray(xp.asarray(offsets, dtype=xp.int64)))


# --------------------------------------------------------------------------
# public launchers
# --------------------------------------------------------------------------
def embedding_bag_forward(out, weight, indices, offsets, per_sample_weights, mean):
    """Pool the bags of ``weight`` rows into ``out`` (overwritten).

    out: (B, D), may be a strided view; weight: (V, D) float32/float64;
    indices: (nnz,) int32/int64; offsets: (B + 1,) int64;
    per_sample_weights: None or (nnz,); mean: bool (empty bag -> zeros).
    One launch, one thread per (bag, column); out must have weight's dtype.
    """
    xp = get_array_module(out, weight, indices, offsets)
    B, D = out.shape
    if weight.ndim != 2 or weight.shape[1] != D or offsets.shape != (B + 1,):
        raise ValueError(f"embedding_bag_forward: out {out.shape}, weight {weight.shape} "
                         f"and offsets {offsets.shape} do not match")
    if out.dtype != weight.dtype:
        raise ValueError(f"out dtype {out.dtype} must be the weight dtype {weight.dtype}")
    sfx = _module.suffix(weight.dtype)
    indices, offsets = index_arrays(xp, indices, offsets)
    psw, has_w = weights_arg(xp, per_sample_weights, indices.shape[0], weight.dtype)
    weight = xp.ascontiguousarray(weight)
    target, st = out, element_strides(out)
    if st is None:
        target = xp.empty((B, D), out.dtype)
        st = element_strides(target)
    _module.launch(SOURCE, "npdlrm_embedding_bag_fwd" + sfx, _module.blocks(B * D),
                   _module.THREADS,
                   (target, weight, indices, offsets, psw, has_w, np.int32(bool(mean)),
                    np.int64(B), np.int64(D), np.int64(st[0]), np.int64(st[1])))
    if target is not out:
        out[...] = target


def embedding_bag_grad(dout, indices, offsets, per_sample_weights, mean, num_rows):
    """Sparse gradient of ``sum(dout * pooled)`` wrt the table.

    dout: (B, D), may be strided; indices: (nnz,); offsets: (B + 1,) int64;
    per_sample_weights: None or (nnz,); mean: bool; num_rows: V.
    Returns ``rows`` (U,) int64 sorted unique ids and ``values`` (U, D) in
    dout's dtype (device arrays), each row summed in increasing position order.
    Synchronises with the host: U (and the row range check) are read back.
    """
    xp = get_array_module(dout, indices, offsets)
    B, D = dout.shape
    if offsets.shape != (B + 1,):
        raise ValueError(f"embedding_bag_grad: offsets {offsets.shape} do not match dout "
                         f"{dout.shape}")
    dtype = dout.dtype
    sfx = _module.suffix(dtype)
    indices, offsets = index_arrays(xp, indices, offsets)
    nnz = indices.shape[0]
    if nnz == 0:
        return xp.empty(0, xp.int64), xp.empty((0, D), dtype)
    lo, hi = int(indices.min()), int(indices.max())  # host sync
    if lo < 0 or hi >= num_rows:
        raise ValueError(f"embedding_bag_grad: indices must lie in [0, {num_rows}), got "
                         f"[{lo}, {hi}]")
    check_key_range(num_rows, nnz)
    dout, (dsb, _) = dout_arg(xp, dout, dtype)
    psw, has_w = weights_arg(xp, per_sample_weights, nnz, dtype)
    keys, doff, coef = coalesce(xp, indices, offsets.reshape(1, B + 1), xp.zeros(1, xp.int64),
                                num_rows, psw, has_w, mean, dtype, dsb, 0)
    seg = segments(xp, keys, doff, coef, num_rows)
    U = int(seg.count[-1])  # host sync: the number of segments ...
    rows = seg.srow[seg.sstart[:U]]
    if int(rows[-1]) >= num_rows:  # ... less the last one's when it holds no bag's positions
        U -= 1
        rows = rows[:U]
    values = xp.empty((U, D), dtype)
    _module.launch(SOURCE, "npdlrm_embedding_bag_grad" + sfx, _module.blocks(U * D),
                   _module.THREADS,
                   (values, seg.sstart, seg.sdoff, seg.scoef, dout, np.int64(U), np.int64(D)))
    return rows, values

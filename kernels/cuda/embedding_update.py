"""Fused embedding backward + sparse optimizer step on the GPU.

The CUDA twin of ``kernels/cpu/embedding_update.py``: same names, signatures and results,
bit for bit (float32 and float64). No dense (V, D) gradient is formed, no float atomics
are used and nothing is read back to the host:

1. ``embedding_bag.coalesce``: one thread per bag writes, for each of its positions k,
   the coefficient (weight, / n for mean), the offset of its dout row and the key
   ``(row_base[t] + row) * nnz + k``; one ``sort`` of the keys groups the occurrences of
   every (table, row) in increasing position order (the CPU's stable argsort order).
2. ``embedding_segments.segments`` (a gather launch, a cumsum, a scatter launch) lays the
   sorted occurrences out by sorted position (row, dout offset, coefficient) and numbers
   the segments: segment u covers sorted positions ``sstart[u] .. sstart[u + 1] - 1``.
3. the update, per segment (one global row), exactly as the CPU formulas, in the weight
   dtype (``lr`` and ``eps`` too), with the segment's ``c * dout`` rows summed in order
   (``g = c_0 dout_0``, then ``g += c_j dout_j``, ``npdlrm_segment_sum``):
   sgd ``w -= lr * g`` and adagrad ``s = state + g * g; state = s;
   w -= lr * (g / (sqrt(s) + eps))``: one launch, one thread per (segment, column), which
   sums its column and updates it; row-wise adagrad: two launches, one thread per
   (segment, column) writing the gradient row into a scratch ``G`` (nb, D), then one
   thread per segment: ``acc = g_0 g_0``, ``acc += g_d g_d`` (d = 1..D-1),
   ``s = state + acc / D; state = s; w -= lr * (g / (sqrt(s) + eps))``.
   Threads past the last segment (their number is not known on the host) return at once.
All T tables of ``embedding_bags_update`` share one sort and the same launches (pointer
tables of weights and states); the single-table functions here are its T = 1 case.

Difference from the CPU: a zero divisor ``sqrt(s) + eps`` (eps = 0 and a zero gradient on
a zero state) raises ZeroDivisionError on the CPU but gives inf/nan here (no host sync).
Indices are not range-checked here (that would need a sync): the callers validate them.
"""
import numpy as np

from ...backend import get_array_module
from . import _module
from .embedding_bag import (check_key_range, coalesce, dout_arg, index_arrays, int64_table,
                            weights_arg)
from .embedding_segments import SEGMENT, segments

SGD = 0
ADAGRAD = 1
ROWWISE_ADAGRAD = 2
KINDS = {"sgd": SGD, "adagrad": ADAGRAD, "rwsadagrad": ROWWISE_ADAGRAD}

_DEVICE = r'''
__device__ __forceinline__ float npdlrm_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double npdlrm_sqrt(double x) { return sqrt(x); }

// The table of global row g: the t with row_base[t] <= g < row_base[t + 1].
__device__ __forceinline__ long long npdlrm_table_of(const long long* row_base,
                                                     long long ntab, long long g)
{
    long long lo = 0, hi = ntab - 1;
    while (lo < hi) {
        long long mid = (lo + hi + 1) / 2;
        if (row_base[mid] <= g) lo = mid; else hi = mid - 1;
    }
    return lo;
}

// The segments (embedding_segments.py): sstart (nb + 1,) first sorted position of each
// segment (nnz past the last); srow, sdoff, scoef (nnz,) by sorted position.
// row_base (ntab + 1,); wptrs, sptrs (ntab,) addresses of the (V_t, D) weights and the
// states ((V_t, D) adagrad, (V_t,) row-wise, unused for sgd), all C-contiguous.
struct npdlrm_seg {
    long long p, e;  // sorted positions p..e-1
    long long t, r;  // table, row
};

// Segment u's positions, table and row; false when u is past the last segment or is
// the sentinel row's (positions in no bag).
__device__ __forceinline__ bool npdlrm_seg_of(npdlrm_seg& s, long long u,
                                              const long long* sstart, const long long* srow,
                                              const long long* row_base, long long ntab,
                                              long long nnz)
{
    s.p = sstart[u];
    if (s.p >= nnz) return false;
    long long g = srow[s.p];
    if (g >= row_base[ntab]) return false;
    s.e = sstart[u + 1];
    s.t = npdlrm_table_of(row_base, ntab, g);
    s.r = g - row_base[s.t];
    return true;
}

// sgd (opt 0) and adagrad (opt 1): thread i = u * D + d, segment u, column d.
template <typename T>
__device__ void npdlrm_update(int opt, const long long* sstart, const long long* srow,
                              const long long* sdoff, const T* scoef, const T* dout,
                              const long long* row_base, const long long* wptrs,
                              const long long* sptrs, long long ntab, long long nb,
                              long long nnz, long long D, T lr, T eps)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long u = i / D;
    long long d = i - u * D;
    npdlrm_seg s;
    if (u >= nb || !npdlrm_seg_of(s, u, sstart, srow, row_base, ntab, nnz)) return;
    T gd = npdlrm_segment_sum<T>(sdoff, scoef, dout, s.p, s.e, d);
    T* w = reinterpret_cast<T*>(wptrs[s.t]) + s.r * D;
    if (opt == 0) {
        w[d] -= lr * gd;
    } else {
        T* st = reinterpret_cast<T*>(sptrs[s.t]) + s.r * D;
        T v = st[d] + gd * gd;
        st[d] = v;
        w[d] -= lr * (gd / (npdlrm_sqrt(v) + eps));
    }
}

// Row-wise adagrad, first launch: G[u * D + d] = column d of segment u's gradient row.
// G: (nb, D)
template <typename T>
__device__ void npdlrm_rw_grad(T* G, const long long* sstart, const long long* srow,
                               const long long* sdoff, const T* scoef, const T* dout,
                               const long long* row_base, long long ntab, long long nb,
                               long long nnz, long long D)
{
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long u = i / D;
    long long d = i - u * D;
    npdlrm_seg s;
    if (u >= nb || !npdlrm_seg_of(s, u, sstart, srow, row_base, ntab, nnz)) return;
    G[i] = npdlrm_segment_sum<T>(sdoff, scoef, dout, s.p, s.e, d);
}

// Row-wise adagrad, second launch: thread u applies the step to segment u's row from
// G[u, :] (acc = g_0 g_0, then acc += g_d g_d in d order, as the CPU).
template <typename T>
__device__ void npdlrm_rw_step(const T* G, const long long* sstart, const long long* srow,
                               const long long* row_base, const long long* wptrs,
                               const long long* sptrs, long long ntab, long long nb,
                               long long nnz, long long D, T lr, T eps)
{
    long long u = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    npdlrm_seg s;
    if (u >= nb || !npdlrm_seg_of(s, u, sstart, srow, row_base, ntab, nnz)) return;
    const T* g = G + u * D;
    T* w = reinterpret_cast<T*>(wptrs[s.t]) + s.r * D;
    T* st = reinterpret_cast<T*>(sptrs[s.t]) + s.r;
    T acc = g[0] * g[0];
    for (long long c = 1; c < D; ++c) acc += g[c] * g[c];
    T v = st[0] + acc / (T)D;
    st[0] = v;
    T den = npdlrm_sqrt(v) + eps;
    for (long long c = 0; c < D; ++c) w[c] -= lr * (g[c] / den);
}
'''

# The extern "C" kernels, written once (REAL, _SFX) for both dtypes.
WRAPPERS = r'''
extern "C" __global__ void npdlrm_embedding_update_SFX(
    int opt, const long long* sstart, const long long* srow, const long long* sdoff,
    const REAL* scoef, const REAL* dout, const long long* row_base, const long long* wptrs,
    const long long* sptrs, long long ntab, long long nb, long long nnz, long long D,
    REAL lr, REAL eps)
{
    npdlrm_update<REAL>(opt, sstart, srow, sdoff, scoef, dout, row_base, wptrs, sptrs, ntab,
                        nb, nnz, D, lr, eps);
}

extern "C" __global__ void npdlrm_rowwise_grad_SFX(
    REAL* G, const long long* sstart, const long long* srow, const long long* sdoff,
    const REAL* scoef, const REAL* dout, const long long* row_base, long long ntab,
    long long nb, long long nnz, long long D)
{
    npdlrm_rw_grad<REAL>(G, sstart, srow, sdoff, scoef, dout, row_base, ntab, nb, nnz, D);
}

extern "C" __global__ void npdlrm_rowwise_step_SFX(
    const REAL* G, const long long* sstart, const long long* srow, const long long* row_base,
    const long long* wptrs, const long long* sptrs, long long ntab, long long nb,
    long long nnz, long long D, REAL lr, REAL eps)
{
    npdlrm_rw_step<REAL>(G, sstart, srow, row_base, wptrs, sptrs, ntab, nb, nnz, D, lr, eps);
}
'''

SOURCE = SEGMENT + _DEVICE + _module.for_each_dtype(WRAPPERS)


def _check_table(name, a, shape, dtype):
    if a.shape != shape or a.dtype != dtype:
        raise ValueError(f"{name} must be {np.dtype(dtype)} {shape}, got {a.dtype} {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (updated in place through its "
                         "device pointer)")


def update_tables(opt, weights, states, dout, dout_strides, indices, offsets,
                  per_sample_weights, mean, lr, eps):
    """Fused backward + optimizer ``opt`` (SGD, ADAGRAD, ROWWISE_ADAGRAD) of T tables: one
    coalesce, one sort, the segment layout and the update launch(es); no host sync.

    weights: T arrays (V_t, D) of one dtype, C-contiguous; states: T arrays (None for sgd,
    (V_t, D) adagrad, (V_t,) row-wise); dout: the gradient of the pooled bags, addressed as
    ``dout[b * dsb + t * dst + d]`` with (dsb, dst, dsd) = dout_strides in elements
    (dsd == 1); indices: (nnz,) int64; offsets: (T, B + 1) int64 positions into indices.
    """
    T = len(weights)
    w0 = weights[0]
    dtype = w0.dtype
    D = w0.shape[1]
    sfx = _module.suffix(dtype)
    sizes = []
    for t, w in enumerate(weights):
        _check_table(f"weights[{t}]", w, (w.shape[0], D), dtype)
        sizes.append(int(w.shape[0]))
        if opt == ADAGRAD:
            _check_table(f"states[{t}]", states[t], w.shape, dtype)
        elif opt == ROWWISE_ADAGRAD:
            _check_table(f"states[{t}]", states[t], w.shape[:1], dtype)
    xp = get_array_module(dout, indices, offsets, *weights)
    nnz = indices.shape[0]
    if nnz == 0 or D == 0:
        return
    total = sum(sizes)
    check_key_range(total, nnz)
    dsb, dst, dsd = dout_strides
    assert dsd == 1
    psw, has_w = weights_arg(xp, per_sample_weights, nnz, dtype)
    row_base = int64_table(xp, tuple(np.cumsum([0] + sizes).tolist()))
    keys, doff, coef = coalesce(xp, indices, offsets, row_base, total, psw, has_w, mean,
                                dtype, dsb, dst)
    seg = segments(xp, keys, doff, coef, total)
    wptrs = int64_table(xp, tuple(_module.device_ptr(w) for w in weights))
    sptrs = wptrs if opt == SGD else int64_table(
        xp, tuple(_module.device_ptr(s) for s in states))
    dt = dtype.type
    common = (seg.sstart, seg.srow)
    sizes = (np.int64(T), np.int64(seg.nb), np.int64(nnz), np.int64(D))
    grid = _module.blocks(seg.nb * D)
    if opt != ROWWISE_ADAGRAD:
        _module.launch(SOURCE, "npdlrm_embedding_update" + sfx, grid, _module.THREADS,
                       (np.int32(opt), *common, seg.sdoff, seg.scoef, dout, row_base, wptrs,
                        sptrs, *sizes, dt(lr), dt(eps)))
        return
    G = xp.empty((seg.nb, D), dtype)  # gradient rows by segment (scratch)
    _module.launch(SOURCE, "npdlrm_rowwise_grad" + sfx, grid, _module.THREADS,
                   (G, *common, seg.sdoff, seg.scoef, dout, row_base, *sizes))
    _module.launch(SOURCE, "npdlrm_rowwise_step" + sfx, _module.blocks(seg.nb),
                   _module.THREADS,
                   (G, *common, row_base, wptrs, sptrs, *sizes, dt(lr), dt(eps)))


def _update(opt, weight, state, dout, indices, offsets, per_sample_weights, mean, lr, eps):
    """One table: the T = 1 case of ``update_tables``."""
    # weight: (V, D)  state: (V, D) | (V,) | None  dout: (B, D)  offsets: (B + 1,)
    V, D = weight.shape
    B = offsets.shape[0] - 1
    if D == 0 or dout.shape != (B, D):
        raise ValueError(f"dout {dout.shape} must be (B, D) = ({B}, {D}), D > 0")
    xp = get_array_module(weight, dout, indices, offsets)
    indices, offsets = index_arrays(xp, indices, offsets)
    dout, (dsb, dsd) = dout_arg(xp, dout, weight.dtype)
    update_tables(opt, [weight], [state], dout, (dsb, 0, dsd), indices,
                  offsets.reshape(1, B + 1), per_sample_weights, mean, lr, eps)


def embedding_sgd_update(weight, dout, indices, offsets, per_sample_weights, mean, lr):
    """In place ``weight[r] -= lr * g[r]`` for each looked-up row r.

    weight: (V, D) C-contiguous; dout: (B, D), may be strided; indices: (nnz,);
    offsets: (B + 1,) int64; per_sample_weights: None or (nnz,); mean: bool; lr: float.
    """
    _update(SGD, weight, None, dout, indices, offsets, per_sample_weights, mean, lr, 0.0)


def embedding_adagrad_update(weight, state, dout, indices, offsets, per_sample_weights,
                             mean, lr, eps):
    """In place Adagrad: ``state[r] += g**2; weight[r] -= lr * (g / (sqrt(state[r]) + eps))``.

    weight, state: (V, D) same dtype, C-contiguous; dout: (B, D), may be strided;
    indices: (nnz,); offsets: (B + 1,) int64; per_sample_weights: None or (nnz,); mean: bool.
    """
    _update(ADAGRAD, weight, state, dout, indices, offsets, per_sample_weights, mean, lr, eps)


def embedding_rowwise_adagrad_update(weight, state, dout, indices, offsets,
                                     per_sample_weights, mean, lr, eps):
    """In place row-wise Adagrad (one state value per row).

    ``state[r] += mean_d(g[r]**2); weight[r] -= lr * (g[r] / (sqrt(state[r]) + eps))``.

    weight: (V, D); state: (V,) same dtype (both C-contiguous); dout: (B, D);
    indices: (nnz,); offsets: (B + 1,) int64; per_sample_weights: None or (nnz,); mean: bool.
    The mean over D sums g**2 sequentially over d, then divides by D.
    """
    _update(ROWWISE_ADAGRAD, weight, state, dout, indices, offsets, per_sample_weights, mean,
            lr, eps)

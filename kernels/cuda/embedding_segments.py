"""The sorted occurrences of the embedding backward, laid out for the segment sums (GPU).

After ``embedding_bag.coalesce`` and the sort, the occurrences of every global row form a
segment of consecutive sorted positions, in increasing position order (the CPU's stable
order). ``segments`` rearranges them so that summing a segment reads contiguous arrays:

1. ``npdlrm_segment_gather``, one thread per sorted position t: with ``k = keys[t] % nnz``
   (the position) and ``g = keys[t] / nnz`` (the global row), writes ``srow[t] = g``,
   ``sdoff[t] = doff[k]``, ``scoef[t] = coef[k]`` and ``flag[t] = 1`` where a segment
   starts (t = 0, or the row differs from position t - 1's);
2. ``cs = cumsum(flag)`` numbers the segments (segment u = cs[t] - 1);
3. ``npdlrm_segment_starts``, one thread per t: the first position of segment u is written
   to ``sstart[u]``; ``sstart`` (nb + 1,) starts filled with nnz, so segment u covers the
   sorted positions ``sstart[u] .. sstart[u + 1] - 1`` and ``sstart[u] == nnz`` marks a u
   past the last segment. nb = min(nnz, total_rows + 1) bounds the number of segments
   (the sentinel row ``total_rows`` of positions in no bag included: always the last).

No host synchronisation: every size comes from the shapes. ``SEGMENT`` is the device code
of the sum itself (included by embedding_bag.py and embedding_update.py): the loads of a
step depend only on the position, never on the running sum, and the terms are added
strictly in position order, so the result is bitwise the CPU ``segment_grad`` row.
"""
from collections import namedtuple

import numpy as np

from . import _module

# Device code of the segment sum (templates only).
SEGMENT = r'''
// Column d of the gradient row of the segment at sorted positions p..e-1 (p < e):
// g = c_p * dout[p], then g += c_q * dout[q] for q = p+1..e-1 in that order.
// sdoff, scoef: (nnz,) by sorted position. Eight steps at a time, all loads first: they
// depend only on q (not on g), so up to eight dout rows are in flight per thread; the
// adds then run in order, one rounding each, as the CPU.
template <typename T>
__device__ T npdlrm_segment_sum(const long long* sdoff, const T* scoef, const T* dout,
                                long long p, long long e, long long d)
{
    T acc = scoef[p] * dout[sdoff[p] + d];
    long long q = p + 1;
    for (; q + 8 <= e; q += 8) {
        const long long* o = sdoff + q;
        const T* c = scoef + q;
        T x0 = dout[o[0] + d], x1 = dout[o[1] + d], x2 = dout[o[2] + d],
          x3 = dout[o[3] + d], x4 = dout[o[4] + d], x5 = dout[o[5] + d],
          x6 = dout[o[6] + d], x7 = dout[o[7] + d];
        T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6],
          c7 = c[7];
        acc += c0 * x0;
        acc += c1 * x1;
        acc += c2 * x2;
        acc += c3 * x3;
        acc += c4 * x4;
        acc += c5 * x5;
        acc += c6 * x6;
        acc += c7 * x7;
    }
    for (; q < e; ++q) acc += scoef[q] * dout[sdoff[q] + d];
    return acc;
}
'''

_DEVICE = r'''
// keys (nnz,) sorted, key = global_row * nnz + position; doff, coef (nnz,) by position.
// Out, by sorted position t: srow, sdoff, scoef (nnz,), flag (nnz,) 1 at segment starts.
template <typename T>
__device__ void npdlrm_seg_gather(long long* srow, long long* sdoff, T* scoef,
                                  long long* flag, const long long* keys,
                                  const long long* doff, const T* coef, long long nnz)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nnz) return;
    long long key = keys[t];
    long long g = key / nnz;
    long long k = key - g * nnz;
    srow[t] = g;
    sdoff[t] = doff[k];
    scoef[t] = coef[k];
    flag[t] = (t == 0 || keys[t - 1] / nnz != g) ? 1 : 0;
}

// cs (nnz,) inclusive cumsum of the flags; sstart (> number of segments,) prefilled with
// nnz: the first sorted position of segment cs[t] - 1 where a segment starts.
__device__ void npdlrm_seg_starts(long long* sstart, const long long* cs, long long nnz)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nnz) return;
    long long c = cs[t];
    if (t == 0 || cs[t - 1] != c) sstart[c - 1] = t;
}
'''

# The extern "C" kernels, written once (REAL, _SFX) for both dtypes.
WRAPPERS = r'''
extern "C" __global__ void npdlrm_segment_gather_SFX(
    long long* srow, long long* sdoff, REAL* scoef, long long* flag, const long long* keys,
    const long long* doff, const REAL* coef, long long nnz)
{
    npdlrm_seg_gather<REAL>(srow, sdoff, scoef, flag, keys, doff, coef, nnz);
}

// (dtype-free; one per suffix, as every npdlrm kernel)
extern "C" __global__ void npdlrm_segment_starts_SFX(long long* sstart, const long long* cs,
                                                     long long nnz)
{
    npdlrm_seg_starts(sstart, cs, nnz);
}
'''

SOURCE = _DEVICE + _module.for_each_dtype(WRAPPERS)

# nb: the bound on the number of segments (sstart has nb + 1 entries); sstart (nb + 1,);
# srow, sdoff (nnz,) int64 and scoef (nnz,) by sorted position; count (nnz,) the
# inclusive cumsum of the segment starts (count[-1]: the number of segments).
Segments = namedtuple("Segments", "nb sstart srow sdoff scoef count")


def segments(xp, keys, doff, coef, total_rows):
    """The sorted occurrences by segment (module docstring); no host synchronisation.

    keys: (nnz,) sorted int64 ``global_row * nnz + position``, nnz > 0; doff (nnz,) int64,
    coef (nnz,) float32/float64, both by position; total_rows: the sentinel row (positions
    in no bag), so at most ``min(nnz, total_rows + 1)`` segments.
    """
    nnz = keys.shape[0]
    sfx = _module.suffix(coef.dtype)
    nb = min(nnz, int(total_rows) + 1)
    srow = xp.empty(nnz, xp.int64)
    sdoff = xp.empty(nnz, xp.int64)
    scoef = xp.empty(nnz, coef.dtype)
    flag = xp.empty(nnz, xp.int64)
    grid = _module.blocks(nnz)
    _module.launch(SOURCE, "npdlrm_segment_gather" + sfx, grid, _module.THREADS,
                   (srow, sdoff, scoef, flag, keys, doff, coef, np.int64(nnz)))
    count = xp.cumsum(flag)
    sstart = xp.full(nb + 1, nnz, dtype=xp.int64)
    _module.launch(SOURCE, "npdlrm_segment_starts" + sfx, grid, _module.THREADS,
                   (sstart, count, np.int64(nnz)))
    return Segments(nb, sstart, srow, sdoff, scoef, count)

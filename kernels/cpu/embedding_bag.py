"""EmbeddingBag forward (sum / mean pooling) and its sparse gradient.

Bags are in CSR form: bag ``b`` is ``indices[offsets[b]:offsets[b + 1]]``.
The gradient is coalesced by a stable argsort of ``indices`` followed by a
segment reduction, so each unique row is summed in increasing position order
of its occurrences; ``embedding_update`` reuses the same code so that its
fused updates see bitwise the same gradient rows.
"""
import numpy as np
from numba import prange

from .._numba import jit, pjit, prefetch_read, prefetch_write

# Work (nnz * D) below which the serial kernels are used.
PARALLEL_MIN_WORK = 16384
# Unique rows handled per task in the parallel segment loop (one scratch
# buffer per task); independent of the thread count.
SEGMENT_CHUNK = 64
# Bags per task in the parallel forward.
BAG_CHUNK = 64
# Work (nnz * D) from which the forward runs in parallel: below it (e.g. one row per bag
# at B=2048, D=16), waking the second thread costs more than the prefetched serial loop.
FORWARD_PARALLEL_MIN_WORK = 1 << 18
# Stable argsort of the indices: radix sort from this length on.
RADIX_MIN_N = 512
RADIX_BITS = 11
# Software prefetch distance (positions ahead) of the row loops: rows of big tables are
# random DRAM misses, and a few dozen hinted ahead keep many misses in flight.
PREFETCH_AHEAD = 16


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@jit
def _pool_bags(out, weight, indices, offsets, psw, has_w, mean, lo, hi):
    """Overwrite ``out[b]`` with the pooled bag b, for b in lo..hi-1.

    The sum runs sequentially in bag order, starting from the first row.
    """
    # out: (B, D)  weight: (V, D)  indices: (nnz,)  offsets: (B + 1,)
    # psw: (nnz,) or (0,) when has_w is False
    D = weight.shape[1]
    if hi <= lo:
        return
    # prefetch cursor: positions [offsets[lo], pf) of this range were hinted already;
    # hints are kept PREFETCH_AHEAD positions (and bags, for out) ahead of the sums
    pend = offsets[hi]
    pf = offsets[lo]
    for b in range(lo, hi):
        s = offsets[b]
        e = offsets[b + 1]
        tgt = min(e + PREFETCH_AHEAD, pend)
        while pf < tgt:
            r = indices[pf]
            prefetch_read(weight, r, 0)
            prefetch_read(weight, r, D - 1)
            pf += 1
        if b + PREFETCH_AHEAD < hi:
            prefetch_write(out, b + PREFETCH_AHEAD, 0)
            prefetch_write(out, b + PREFETCH_AHEAD, D - 1)
        if e == s:
            for d in range(D):
                out[b, d] = 0
            continue
        r = indices[s]
        if has_w:
            w = psw[s]
            for d in range(D):
                out[b, d] = w * weight[r, d]
            for k in range(s + 1, e):
                r = indices[k]
                w = psw[k]
                for d in range(D):
                    out[b, d] += w * weight[r, d]
        else:
            for d in range(D):
                out[b, d] = weight[r, d]
            for k in range(s + 1, e):
                r = indices[k]
                for d in range(D):
                    out[b, d] += weight[r, d]
        if mean:
            n = out.dtype.type(e - s)
            for d in range(D):
                out[b, d] = out[b, d] / n


@jit
def _forward_serial(out, weight, indices, offsets, psw, has_w, mean):
    # out: (B, D)  weight: (V, D)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    _pool_bags(out, weight, indices, offsets, psw, has_w, mean, 0, out.shape[0])


@pjit
def _forward_parallel(out, weight, indices, offsets, psw, has_w, mean):
    # out: (B, D)  weight: (V, D)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    B = out.shape[0]
    nchunks = (B + BAG_CHUNK - 1) // BAG_CHUNK
    for c in prange(nchunks):
        lo = c * BAG_CHUNK
        _pool_bags(out, weight, indices, offsets, psw, has_w, mean, lo,
                   min(lo + BAG_CHUNK, B))


def _weights_arg(per_sample_weights, dtype):
    """(psw array of ``dtype``, has_w flag) for the kernels."""
    if per_sample_weights is None:
        return np.empty(0, dtype), False
    return np.asarray(per_sample_weights, dtype=dtype), True


def embedding_bag_forward(out, weight, indices, offsets, per_sample_weights, mean):
    """Pool the bags of ``weight`` rows into ``out`` (overwritten).

    out: (B, D), may be a strided view; weight: (V, D) float32/float64;
    indices: (nnz,) int32/int64; offsets: (B + 1,) int64;
    per_sample_weights: None or (nnz,); mean: bool (empty bag -> zeros).
    """
    B, D = out.shape
    assert weight.shape[1] == D and offsets.shape[0] == B + 1
    psw, has_w = _weights_arg(per_sample_weights, weight.dtype)
    if indices.shape[0] * D < FORWARD_PARALLEL_MIN_WORK:
        _forward_serial(out, weight, indices, offsets, psw, has_w, bool(mean))
    else:
        _forward_parallel(out, weight, indices, offsets, psw, has_w, bool(mean))


# --------------------------------------------------------------------------
# gradient: coalescing + segment reduction (shared with embedding_update)
# --------------------------------------------------------------------------
@jit
def _stable_argsort(indices):
    """Stable argsort of indices: returns (perm, sorted_keys), both int64.

    LSD radix sort (11-bit digits) for non-negative indices; for short
    inputs a sort of the unique keys ``index * n + position``; a merge
    argsort for negative ids.  All give the same permutation.
    """
    # indices: (n,)
    n = indices.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo = indices[0]
    hi = indices[0]
    for k in range(n):
        if indices[k] < lo:
            lo = indices[k]
        if indices[k] > hi:
            hi = indices[k]
    if lo < 0:
        perm = np.argsort(indices, kind="mergesort").astype(np.int64)
        keys = np.empty(n, np.int64)
        for t in range(n):
            keys[t] = indices[perm[t]]
        return perm, keys
    hi64 = np.int64(hi)
    if n < RADIX_MIN_N and hi64 < (np.int64(1) << 62) // n:
        key = np.empty(n, np.int64)
        for k in range(n):
            key[k] = np.int64(indices[k]) * n + k
        key.sort()
        perm = np.empty(n, np.int64)
        for t in range(n):
            perm[t] = key[t] % n
            key[t] = key[t] // n
        return perm, key
    keys = np.empty(n, np.int64)
    perm = np.empty(n, np.int64)
    for k in range(n):
        keys[k] = indices[k]
        perm[k] = k
    tkeys = np.empty(n, np.int64)
    tperm = np.empty(n, np.int64)
    nb = 1 << RADIX_BITS
    mask = np.int64(nb - 1)
    count = np.empty(nb, np.int64)
    shift = 0
    while (hi64 >> shift) > 0:
        count[:] = 0
        for t in range(n):
            count[(keys[t] >> shift) & mask] += 1
        tot = 0
        for i in range(nb):
            c = count[i]
            count[i] = tot
            tot += c
        for t in range(n):
            dgt = (keys[t] >> shift) & mask
            pos = count[dgt]
            count[dgt] = pos + 1
            tkeys[pos] = keys[t]
            tperm[pos] = perm[t]
        keys, tkeys = tkeys, keys
        perm, tperm = tperm, perm
        shift += RADIX_BITS
    return perm, keys


@jit
def coalesce(indices, offsets, psw, has_w, mean, coef, bag):
    """Group the occurrences of each unique row, in position order.

    Fills ``bag[k]`` (bag of position k) and ``coef[k]`` (scale of
    ``dout[bag[k]]`` for position k: weight, divided by the bag length when
    ``mean``).  Returns ``perm`` (stable argsort of indices) and ``seg``
    (U + 1,): the occurrences of unique row u are ``perm[seg[u]:seg[u + 1]]``.
    """
    # indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)  coef: (nnz,)  bag: (nnz,)
    one = coef.dtype.type(1)
    for b in range(offsets.shape[0] - 1):
        s = offsets[b]
        e = offsets[b + 1]
        n = coef.dtype.type(e - s)
        for k in range(s, e):
            bag[k] = b
            c = psw[k] if has_w else one
            if mean:
                c = c / n
            coef[k] = c
    nnz = indices.shape[0]
    perm, keys = _stable_argsort(indices)
    seg = np.empty(nnz + 1, np.int64)
    U = 0
    for t in range(nnz):
        if t == 0 or keys[t] != keys[t - 1]:
            seg[U] = t
            U += 1
    seg[U] = nnz
    return perm, seg[: U + 1]


@jit
def segment_grad(G, lo, hi, perm, seg, bag, coef, dout):
    """G[u - lo] = gradient row of unique row u, for u in lo..hi-1.

    Each row is summed in increasing position order of its occurrences.
    """
    # G: (>= hi - lo, D)  perm: (nnz,)  seg: (U + 1,)  bag: (nnz,)  coef: (nnz,)  dout: (B, D)
    D = G.shape[1]
    tend = seg[hi]
    for u in range(lo, hi):
        i = u - lo
        t = seg[u]
        # hint the dout rows of the occurrences PREFETCH_AHEAD positions ahead
        for tp in range(min(t + PREFETCH_AHEAD, tend), min(seg[u + 1] + PREFETCH_AHEAD, tend)):
            bp = bag[perm[tp]]
            prefetch_read(dout, bp, 0)
            prefetch_read(dout, bp, D - 1)
        k = perm[t]
        b = bag[k]
        c = coef[k]
        for d in range(D):
            G[i, d] = c * dout[b, d]
        for t in range(seg[u] + 1, seg[u + 1]):
            k = perm[t]
            b = bag[k]
            c = coef[k]
            for d in range(D):
                G[i, d] += c * dout[b, d]


@jit
def _grad_rows(rows, values, indices, perm, seg, bag, coef, dout, lo, hi):
    # rows: (U,)  values: (U, D)  indices: (nnz,)  dout: (B, D)
    for u in range(lo, hi):
        rows[u] = indices[perm[seg[u]]]
    segment_grad(values[lo:hi], lo, hi, perm, seg, bag, coef, dout)


@jit
def _grad_serial(rows, values, indices, perm, seg, bag, coef, dout):
    # rows: (U,)  values: (U, D)
    _grad_rows(rows, values, indices, perm, seg, bag, coef, dout, 0, rows.shape[0])


@pjit
def _grad_parallel(rows, values, indices, perm, seg, bag, coef, dout):
    # rows: (U,)  values: (U, D)
    U = rows.shape[0]
    nchunks = (U + SEGMENT_CHUNK - 1) // SEGMENT_CHUNK
    for c in prange(nchunks):
        lo = c * SEGMENT_CHUNK
        hi = min(lo + SEGMENT_CHUNK, U)
        _grad_rows(rows, values, indices, perm, seg, bag, coef, dout, lo, hi)


def prepare(dout, indices, offsets, per_sample_weights, mean, dtype):
    """Coalesce the occurrences; returns (dout, perm, seg, bag, coef) in ``dtype``."""
    nnz = indices.shape[0]
    dout = np.asarray(dout, dtype=dtype)
    psw, has_w = _weights_arg(per_sample_weights, dtype)
    coef = np.empty(nnz, dtype)
    bag = np.empty(nnz, np.int64)
    perm, seg = coalesce(indices, offsets, psw, has_w, bool(mean), coef, bag)
    return dout, perm, seg, bag, coef


def embedding_bag_grad(dout, indices, offsets, per_sample_weights, mean, num_rows):
    """Sparse gradient of ``sum(dout * pooled)`` wrt the table.

    dout: (B, D), may be strided; indices: (nnz,); offsets: (B + 1,) int64;
    per_sample_weights: None or (nnz,); mean: bool; num_rows: V.
    Returns ``rows`` (U,) int64 sorted unique ids and ``values`` (U, D) in
    dout's dtype, each row summed in increasing position order.
    """
    B, D = dout.shape
    assert offsets.shape[0] == B + 1
    dout, perm, seg, bag, coef = prepare(
        dout, indices, offsets, per_sample_weights, mean, dout.dtype)
    U = seg.shape[0] - 1
    rows = np.empty(U, np.int64)
    values = np.empty((U, D), dout.dtype)
    if U:
        assert 0 <= indices[perm[0]] and indices[perm[-1]] < num_rows
    if indices.shape[0] * D < PARALLEL_MIN_WORK:
        _grad_serial(rows, values, indices, perm, seg, bag, coef, dout)
    else:
        _grad_parallel(rows, values, indices, perm, seg, bag, coef, dout)
    return rows, values

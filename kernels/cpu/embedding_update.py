"""Fused embedding backward + sparse optimizer step.

No dense (V, D) gradient is formed: the occurrences are coalesced by a stable
argsort of ``indices`` and each unique row's gradient is segment-reduced in
position order (bitwise the rows ``embedding_bag_grad`` returns), then the
optimizer updates that row once.  Rows not looked up are never touched.
Arithmetic is done in the weight dtype (dout and per-sample weights are cast
to it; ``lr`` and ``eps`` too), left to right as the formulas are written,
as torch does: ``w - lr * (g / (sqrt(s) + eps))``.
"""
import math

import numpy as np
from numba import prange

from .._numba import jit, jit_vec, pjit, prefetch_write
from .embedding_bag import PARALLEL_MIN_WORK, SEGMENT_CHUNK, prepare, segment_grad

# Table size (bytes of weight) from which the update may run in parallel.
UPDATE_PARALLEL_MIN_BYTES = 16 << 20

SGD = 0
ADAGRAD = 1
ROWWISE_ADAGRAD = 2


@jit_vec
def _adagrad_rows(weight, state, indices, perm, seg, G, lo, hi, lr, eps):
    """Adagrad on unique rows lo..hi-1 with gradient rows G[0:hi-lo].

    Per element, as written: ``s = state + g * g; w -= lr * (g / (sqrt(s) + eps))``.
    Row views and NumPy's error model (no per-division branch) let the loop over d
    vectorize; the values are the same IEEE operations. Returns True when a divisor
    was zero (the caller raises ZeroDivisionError, as the scalar code did).
    """
    # weight, state: (V, D)  G: (>= hi - lo, D)
    D = weight.shape[1]
    zero = False
    for u in range(lo, hi):
        r = indices[perm[seg[u]]]
        wr = weight[r]
        sr = state[r]
        gr = G[u - lo]
        for d in range(D):
            g = gr[d]
            s = sr[d] + g * g
            sr[d] = s
            den = math.sqrt(s) + eps
            zero |= den == 0
            wr[d] -= lr * (g / den)
    return zero


@jit
def _prefetch_rows(weight, state, opt, indices, perm, seg, lo, hi):
    """Hint the weight (and Adagrad state) rows of unique rows lo..hi-1 for writing."""
    D = weight.shape[1]
    for u in range(lo, hi):
        r = indices[perm[seg[u]]]
        prefetch_write(weight, r, 0)
        prefetch_write(weight, r, D - 1)
        if opt == ADAGRAD:
            prefetch_write(state, r, 0)
            prefetch_write(state, r, D - 1)


@jit
def _update_rows(weight, state, rowstate, opt, indices, perm, seg, bag, coef, dout,
                 lr, eps, G, lo, hi):
    """Apply the update of optimizer ``opt`` to unique rows lo..hi-1."""
    # weight: (V, D)  state: (V, D) | (0, D)  rowstate: (V,) | (0,)
    # indices: (nnz,)  perm: (nnz,)  seg: (U + 1,)  bag: (nnz,)  coef: (nnz,)  dout: (B, D)
    # G: (>= hi - lo, D) C-contiguous scratch for the gradient rows
    D = weight.shape[1]
    Df = weight.dtype.type(D)
    # hint the rows to update (random DRAM lines of big tables) before the gradient
    # rows are summed, so that their misses overlap with each other and that work
    _prefetch_rows(weight, state, opt, indices, perm, seg, lo, hi)
    segment_grad(G, lo, hi, perm, seg, bag, coef, dout)
    # and those of the next chunk, while this one's are updated
    _prefetch_rows(weight, state, opt, indices, perm, seg, hi,
                   min(hi + (hi - lo), seg.shape[0] - 1))
    if opt == ADAGRAD:
        if _adagrad_rows(weight, state, indices, perm, seg, G, lo, hi, lr, eps):
            raise ZeroDivisionError("division by zero")
        return
    for u in range(lo, hi):
        r = indices[perm[seg[u]]]
        i = u - lo
        if opt == SGD:
            for d in range(D):
                weight[r, d] -= lr * G[i, d]
        else:
            acc = G[i, 0] * G[i, 0]
            for d in range(1, D):
                acc += G[i, d] * G[i, d]
            s = rowstate[r] + acc / Df
            rowstate[r] = s
            den = math.sqrt(s) + eps
            for d in range(D):
                weight[r, d] -= lr * (G[i, d] / den)


@jit
def _update_serial(weight, state, rowstate, opt, indices, perm, seg, bag, coef, dout,
                   lr, eps):
    # weight: (V, D)  state: (V, D) | (0, D)  rowstate: (V,) | (0,)
    U = seg.shape[0] - 1
    G = np.empty((SEGMENT_CHUNK, weight.shape[1]), weight.dtype)
    for lo in range(0, U, SEGMENT_CHUNK):
        _update_rows(weight, state, rowstate, opt, indices, perm, seg, bag, coef, dout,
                     lr, eps, G, lo, min(lo + SEGMENT_CHUNK, U))


@pjit
def _update_parallel(weight, state, rowstate, opt, indices, perm, seg, bag, coef, dout,
                     lr, eps):
    # weight: (V, D)  state: (V, D) | (0, D)  rowstate: (V,) | (0,)
    U = seg.shape[0] - 1
    nchunks = (U + SEGMENT_CHUNK - 1) // SEGMENT_CHUNK
    for c in prange(nchunks):
        G = np.empty((SEGMENT_CHUNK, weight.shape[1]), weight.dtype)
        lo = c * SEGMENT_CHUNK
        _update_rows(weight, state, rowstate, opt, indices, perm, seg, bag, coef, dout,
                     lr, eps, G, lo, min(lo + SEGMENT_CHUNK, U))


def _update(opt, weight, state, rowstate, dout, indices, offsets, per_sample_weights,
            mean, lr, eps):
    """Coalesce, then run the serial or parallel update of optimizer ``opt``."""
    # weight: (V, D)  state: (V, D) | None  rowstate: (V,) | None  dout: (B, D)
    V, D = weight.shape
    B = offsets.shape[0] - 1
    assert D > 0 and dout.shape == (B, D)
    dt = weight.dtype.type
    dout, perm, seg, bag, coef = prepare(
        dout, indices, offsets, per_sample_weights, mean, weight.dtype)
    if seg.shape[0] == 1:
        return
    assert 0 <= indices[perm[0]] and indices[perm[-1]] < V
    if state is None:
        state = np.empty((0, D), weight.dtype)
    if rowstate is None:
        rowstate = np.empty(0, weight.dtype)
    # parallel only when the rows to update are many and mostly not in cache: for a
    # cache-resident table, waking the second thread costs more than it saves
    big = (seg.shape[0] - 1) * D >= PARALLEL_MIN_WORK and weight.nbytes > UPDATE_PARALLEL_MIN_BYTES
    kernel = _update_parallel if big else _update_serial
    kernel(weight, state, rowstate, opt, indices, perm, seg, bag, coef, dout,
           dt(lr), dt(eps))


def embedding_sgd_update(weight, dout, indices, offsets, per_sample_weights, mean, lr):
    """In place ``weight[r] -= lr * g[r]`` for each looked-up row r.

    weight: (V, D); dout: (B, D), may be strided; indices: (nnz,); offsets: (B + 1,) int64;
    per_sample_weights: None or (nnz,); mean: bool; lr: float.
    """
    _update(SGD, weight, None, None, dout, indices, offsets, per_sample_weights,
            mean, lr, 0.0)


def embedding_adagrad_update(weight, state, dout, indices, offsets, per_sample_weights,
                             mean, lr, eps):
    """In place Adagrad: ``state[r] += g**2; weight[r] -= lr * (g / (sqrt(state[r]) + eps))``.

    weight, state: (V, D) same dtype; dout: (B, D), may be strided; indices: (nnz,);
    offsets: (B + 1,) int64; per_sample_weights: None or (nnz,); mean: bool.
    """
    assert state.shape == weight.shape and state.dtype == weight.dtype
    _update(ADAGRAD, weight, state, None, dout, indices, offsets, per_sample_weights,
            mean, lr, eps)


def embedding_rowwise_adagrad_update(weight, state, dout, indices, offsets,
                                     per_sample_weights, mean, lr, eps):
    """In place row-wise Adagrad (one state value per row).

    ``state[r] += mean_d(g[r]**2); weight[r] -= lr * (g[r] / (sqrt(state[r]) + eps))``.

    weight: (V, D); state: (V,) same dtype; dout: (B, D); indices: (nnz,);
    offsets: (B + 1,) int64; per_sample_weights: None or (nnz,); mean: bool.
    The mean over D sums g**2 sequentially over d, then divides by D.
    """
    assert state.shape == weight.shape[:1] and state.dtype == weight.dtype
    _update(ROWWISE_ADAGRAD, weight, None, state, dout, indices, offsets,
            per_sample_weights, mean, lr, eps)

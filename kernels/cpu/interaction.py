"""DLRM dot interaction, forward and backward.

``T`` (B, F, D) stacks [bottom_out, e_0, ..., e_{F-2}].  Pairs are taken in
the reference DLRM order ``for i in range(F): for j in range(i + s)``
(s = 1 with self interaction), and out = [T[:, 0, :], z(pair 0), z(pair 1), ...].
Each z is a dot product summed sequentially over d.  Only the needed pairs are
computed.  Both kernels work on chunks of BATCH_CHUNK samples transposed to a
(F, D, lanes) scratch so that the innermost loop runs over samples
(vectorized, no reassociation); chunks are the parallel tasks.

Every sum is evaluated in a fixed order that does not depend on the chunking
or the thread count: z = (((0 + t_0) + t_1) + ...) + t_{D-1}, and
dT[b, i, d] = ((init + g_0 x_0) + g_1 x_1) + ... over the partners j = 0..F-1
in increasing order.  Several terms are added per pass over the lanes (the
partial sums stay in registers); the lane count is a compile-time constant so
that the rows of the scratch are at fixed offsets from each other.
"""
import numpy as np
from numba import prange

from .._numba import jit, pjit
from ..pairs import num_pairs, pair_indices  # noqa: F401 (re-exported)

# Work (B * P * D) below which the serial kernels are used (also when the
# batch is a single chunk).
PARALLEL_MIN_WORK = 131072  # B * P * D; below it, waking a second thread costs more than it saves
# Samples per chunk (vector lanes of the scratch; one parallel task).  The
# scratch always has BATCH_CHUNK lanes (a compile-time constant); lanes past
# the batch are zero and never written out.
BATCH_CHUNK = 64
# Terms of a sum added per pass over the lanes in the general loops.
DBLK = 8


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@jit
def _load_chunk(X, T, lo, hi):
    """X[f, d, q] = T[lo + q, f, d]; lanes q >= hi - lo are zeroed."""
    # X: (F, D, BATCH_CHUNK) scratch  T: (B, F, D)
    F = T.shape[1]
    D = T.shape[2]
    nq = hi - lo
    if nq < BATCH_CHUNK:
        for f in range(F):
            for d in range(D):
                for q in range(nq, BATCH_CHUNK):
                    X[f, d, q] = 0
    # f outermost: one (D, lanes) slab of X and the rows T[lo:hi, f] at a time
    # stay in L1 (q outermost would sweep all of X once per sample).
    for f in range(F):
        for q in range(nq):
            for d in range(D):
                X[f, d, q] = T[lo + q, f, d]


@jit
def _fwd_pairs16(X, Z, s):
    """Z[p, q] = 0 + x_i0 x_j0 + ... + x_i15 x_j15 (left to right), D == 16."""
    # X: (F, 16, BATCH_CHUNK)  Z: (P, BATCH_CHUNK)
    F = X.shape[0]
    zero = np.zeros(1, X.dtype)[0]
    p = 0
    for i in range(F):
        for j in range(i + s):
            for q in range(BATCH_CHUNK):
                z = zero + X[i, 0, q] * X[j, 0, q]
                z = z + X[i, 1, q] * X[j, 1, q]
                z = z + X[i, 2, q] * X[j, 2, q]
                z = z + X[i, 3, q] * X[j, 3, q]
                z = z + X[i, 4, q] * X[j, 4, q]
                z = z + X[i, 5, q] * X[j, 5, q]
                z = z + X[i, 6, q] * X[j, 6, q]
                z = z + X[i, 7, q] * X[j, 7, q]
                z = z + X[i, 8, q] * X[j, 8, q]
                z = z + X[i, 9, q] * X[j, 9, q]
                z = z + X[i, 10, q] * X[j, 10, q]
                z = z + X[i, 11, q] * X[j, 11, q]
                z = z + X[i, 12, q] * X[j, 12, q]
                z = z + X[i, 13, q] * X[j, 13, q]
                z = z + X[i, 14, q] * X[j, 14, q]
                z = z + X[i, 15, q] * X[j, 15, q]
                Z[p, q] = z
            p += 1


@jit
def _fwd_pairs(X, Z, s):
    """Z[p, q] = 0 + x_i0 x_j0 + ... (left to right), any D."""
    # X: (F, D, BATCH_CHUNK)  Z: (P, BATCH_CHUNK)
    F = X.shape[0]
    D = X.shape[1]
    Dfull = D - D % DBLK
    p = 0
    for i in range(F):
        for j in range(i + s):
            for q in range(BATCH_CHUNK):
                Z[p, q] = 0
            for d in range(0, Dfull, DBLK):
                for q in range(BATCH_CHUNK):
                    Z[p, q] = ((((((((Z[p, q] + X[i, d, q] * X[j, d, q])
                                     + X[i, d + 1, q] * X[j, d + 1, q])
                                    + X[i, d + 2, q] * X[j, d + 2, q])
                                   + X[i, d + 3, q] * X[j, d + 3, q])
                                  + X[i, d + 4, q] * X[j, d + 4, q])
                                 + X[i, d + 5, q] * X[j, d + 5, q])
                                + X[i, d + 6, q] * X[j, d + 6, q])
                               + X[i, d + 7, q] * X[j, d + 7, q])
            for d in range(Dfull, D):
                for q in range(BATCH_CHUNK):
                    Z[p, q] += X[i, d, q] * X[j, d, q]
            p += 1


@jit
def _fwd_chunk(out, T, s, X, Z, lo, hi):
    """out[b] for the samples b in lo..hi-1 (at most BATCH_CHUNK)."""
    # out: (B, D + P)  T: (B, F, D)  X: (F, D, BATCH_CHUNK)  Z: (P, BATCH_CHUNK)
    D = T.shape[2]
    nq = hi - lo
    _load_chunk(X, T, lo, hi)
    if D == 16:
        _fwd_pairs16(X, Z, s)
    else:
        _fwd_pairs(X, Z, s)
    for q in range(nq):
        for d in range(D):
            out[lo + q, d] = T[lo + q, 0, d]
    for q in range(nq):
        for p in range(Z.shape[0]):
            out[lo + q, D + p] = Z[p, q]


@jit
def _fwd_serial(out, T, s):
    # out: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    X = np.empty((F, D, BATCH_CHUNK), T.dtype)
    Z = np.empty((out.shape[1] - D, BATCH_CHUNK), T.dtype)
    for lo in range(0, B, BATCH_CHUNK):
        _fwd_chunk(out, T, s, X, Z, lo, min(lo + BATCH_CHUNK, B))


@pjit
def _fwd_parallel(out, T, s):
    # out: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    nchunks = (B + BATCH_CHUNK - 1) // BATCH_CHUNK
    for c in prange(nchunks):
        X = np.empty((F, D, BATCH_CHUNK), T.dtype)
        Z = np.empty((out.shape[1] - D, BATCH_CHUNK), T.dtype)
        lo = c * BATCH_CHUNK
        _fwd_chunk(out, T, s, X, Z, lo, min(lo + BATCH_CHUNK, B))


def dot_interaction_forward(out, T, self_interaction):
    """out[:, :D] = T[:, 0, :]; out[:, D + p] = dot(T[:, i_p], T[:, j_p]).

    out: (B, D + P) overwritten; T: (B, F, D) contiguous; self_interaction: bool.
    """
    B, F, D = T.shape
    P = num_pairs(F, self_interaction)
    assert out.shape == (B, D + P)
    s = 1 if self_interaction else 0
    if B <= BATCH_CHUNK or B * P * D < PARALLEL_MIN_WORK:
        _fwd_serial(out, T, s)
    else:
        _fwd_parallel(out, T, s)


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
@jit
def _bwd_terms(dX, X, G, i, j0, j1):
    """dX[i, d, q] += G[i, j, q] * X[j, d, q] for j = j0, ..., j1 - 1 in turn."""
    # dX, X: (F, D, BATCH_CHUNK)  G: (F, F, BATCH_CHUNK)
    D = X.shape[1]
    j = j0
    while j + DBLK <= j1:
        for d in range(D):
            for q in range(BATCH_CHUNK):
                dX[i, d, q] = ((((((((dX[i, d, q] + G[i, j, q] * X[j, d, q])
                                     + G[i, j + 1, q] * X[j + 1, d, q])
                                    + G[i, j + 2, q] * X[j + 2, d, q])
                                   + G[i, j + 3, q] * X[j + 3, d, q])
                                  + G[i, j + 4, q] * X[j + 4, d, q])
                                 + G[i, j + 5, q] * X[j + 5, d, q])
                                + G[i, j + 6, q] * X[j + 6, d, q])
                               + G[i, j + 7, q] * X[j + 7, d, q])
        j += DBLK
    if j + 4 <= j1:
        for d in range(D):
            for q in range(BATCH_CHUNK):
                dX[i, d, q] = ((((dX[i, d, q] + G[i, j, q] * X[j, d, q])
                                 + G[i, j + 1, q] * X[j + 1, d, q])
                                + G[i, j + 2, q] * X[j + 2, d, q])
                               + G[i, j + 3, q] * X[j + 3, d, q])
        j += 4
    while j < j1:
        for d in range(D):
            for q in range(BATCH_CHUNK):
                dX[i, d, q] += G[i, j, q] * X[j, d, q]
        j += 1


@jit
def _bwd_chunk(dT, dout, T, s, X, G, dX, lo, hi):
    """dT[b] for the samples b in lo..hi-1 (at most BATCH_CHUNK).

    dT[b, i, d] = [i == 0] dout[b, d] + sum_j g(i, j) * T[b, j, d], summed in
    increasing j (j != i without self interaction), where g(i, j) = g(j, i) =
    dz(pair (i, j)) and g(i, i) = 2 dz(i, i) (self interaction only).
    """
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    # X, dX: (F, D, BATCH_CHUNK)  G: (F, F, BATCH_CHUNK) scratch
    F = T.shape[1]
    D = T.shape[2]
    nq = hi - lo
    _load_chunk(X, T, lo, hi)
    if nq < BATCH_CHUNK:
        for i in range(F):
            for j in range(F):
                for q in range(nq, BATCH_CHUNK):
                    G[i, j, q] = 0
    p = D
    for i in range(F):
        for j in range(i):
            for q in range(nq):
                G[i, j, q] = dout[lo + q, p]
            for q in range(nq):
                G[j, i, q] = G[i, j, q]
            p += 1
        if s:
            for q in range(nq):
                G[i, i, q] = 2 * dout[lo + q, p]
            p += 1
    for i in range(F):
        for d in range(D):
            for q in range(BATCH_CHUNK):
                dX[i, d, q] = 0
    for q in range(nq):
        for d in range(D):
            dX[0, d, q] = dout[lo + q, d]
    for i in range(F):
        _bwd_terms(dX, X, G, i, 0, i + s)
        _bwd_terms(dX, X, G, i, i + 1, F)
    for i in range(F):
        for q in range(nq):
            for d in range(D):
                dT[lo + q, i, d] = dX[i, d, q]


@jit
def _bwd_serial(dT, dout, T, s):
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    X = np.empty((F, D, BATCH_CHUNK), T.dtype)
    dX = np.empty((F, D, BATCH_CHUNK), T.dtype)
    G = np.empty((F, F, BATCH_CHUNK), T.dtype)
    for lo in range(0, B, BATCH_CHUNK):
        _bwd_chunk(dT, dout, T, s, X, G, dX, lo, min(lo + BATCH_CHUNK, B))


@pjit
def _bwd_parallel(dT, dout, T, s):
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    nchunks = (B + BATCH_CHUNK - 1) // BATCH_CHUNK
    for c in prange(nchunks):
        X = np.empty((F, D, BATCH_CHUNK), T.dtype)
        dX = np.empty((F, D, BATCH_CHUNK), T.dtype)
        G = np.empty((F, F, BATCH_CHUNK), T.dtype)
        lo = c * BATCH_CHUNK
        _bwd_chunk(dT, dout, T, s, X, G, dX, lo, min(lo + BATCH_CHUNK, B))


def dot_interaction_backward(dT, dout, T, self_interaction):
    """Gradient of the dot interaction wrt T.

    dT: (B, F, D) overwritten; dout: (B, D + P); T: (B, F, D) contiguous;
    self_interaction: bool.
    """
    B, F, D = T.shape
    P = num_pairs(F, self_interaction)
    assert dT.shape == (B, F, D) and dout.shape == (B, D + P)
    s = 1 if self_interaction else 0
    if B <= BATCH_CHUNK or B * P * D < PARALLEL_MIN_WORK:
        _bwd_serial(dT, dout, T, s)
    else:
        _bwd_parallel(dT, dout, T, s)

"""Frozen copy of kernels/interaction.py before issue 12 item 3 (baseline for bench_interaction.py).

DLRM dot interaction, forward and backward.

``T`` (B, F, D) stacks [bottom_out, e_0, ..., e_{F-2}].  Pairs are taken in
the reference DLRM order ``for i in range(F): for j in range(i + s)``
(s = 1 with self interaction), and out = [T[:, 0, :], z(pair 0), z(pair 1), ...].
Each z is a dot product summed sequentially over d.  Only the needed pairs are
computed.  Both kernels work on chunks of BATCH_CHUNK samples transposed to a
(F, D, lanes) scratch so that the innermost loop runs over samples
(vectorized, no reassociation); chunks are the parallel tasks.
"""
import numpy as np
from numba import prange

from npdlrm.kernels._numba import jit, pjit

# Work (B * P * D) below which the serial kernels are used (also when the
# batch is a single chunk).
PARALLEL_MIN_WORK = 131072  # B * P * D; below it, waking a second thread costs more than it saves
# Samples per chunk (vector lanes of the scratch; one parallel task).
BATCH_CHUNK = 32


def num_pairs(F, self_interaction):
    """P = F(F-1)/2, or F(F+1)/2 with self interaction."""
    return F * (F + 1) // 2 if self_interaction else F * (F - 1) // 2


def pair_indices(F, self_interaction):
    """(li, lj) int64 arrays of the pairs, in the reference order."""
    s = 1 if self_interaction else 0
    li = np.concatenate([np.full(i + s, i, np.int64) for i in range(F)])
    lj = np.concatenate([np.arange(i + s, dtype=np.int64) for i in range(F)])
    return li, lj


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
@jit
def _load_chunk(X, T, lo, hi):
    """X[f, d, q] = T[lo + q, f, d]; lanes q >= hi - lo are zeroed."""
    # X: (F, D, nb) scratch  T: (B, F, D)
    F = T.shape[1]
    D = T.shape[2]
    nb = X.shape[2]
    nq = hi - lo
    if nq < nb:
        for f in range(F):
            for d in range(D):
                for q in range(nq, nb):
                    X[f, d, q] = 0
    for q in range(nq):
        for f in range(F):
            for d in range(D):
                X[f, d, q] = T[lo + q, f, d]


@jit
def _fwd_chunk(out, T, s, X, Z, lo, hi):
    """out[b] for the samples b in lo..hi-1 (at most nb).

    The samples are vectorized along the last axis of the scratch; each z is
    still summed sequentially over d.
    """
    # out: (B, D + P)  T: (B, F, D)  X: (F, D, nb)  Z: (P, nb)
    F = T.shape[1]
    D = T.shape[2]
    P = Z.shape[0]
    nb = Z.shape[1]
    _load_chunk(X, T, lo, hi)
    for p in range(P):
        for q in range(nb):
            Z[p, q] = 0
    for d in range(D):
        p = 0
        for i in range(F):
            for j in range(i + s):
                for q in range(nb):
                    Z[p, q] += X[i, d, q] * X[j, d, q]
                p += 1
    for q in range(hi - lo):
        b = lo + q
        for d in range(D):
            out[b, d] = T[b, 0, d]
        for p in range(P):
            out[b, D + p] = Z[p, q]


@jit
def _fwd_serial(out, T, s):
    # out: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    nb = min(BATCH_CHUNK, B)
    X = np.empty((F, D, nb), T.dtype)
    Z = np.empty((out.shape[1] - D, nb), T.dtype)
    for lo in range(0, B, BATCH_CHUNK):
        _fwd_chunk(out, T, s, X, Z, lo, min(lo + BATCH_CHUNK, B))


@pjit
def _fwd_parallel(out, T, s):
    # out: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    nb = min(BATCH_CHUNK, B)
    nchunks = (B + BATCH_CHUNK - 1) // BATCH_CHUNK
    for c in prange(nchunks):
        X = np.empty((F, D, nb), T.dtype)
        Z = np.empty((out.shape[1] - D, nb), T.dtype)
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
def _bwd_chunk(dT, dout, T, s, X, GZ, dX, lo, hi):
    """dT[b] for the samples b in lo..hi-1 (at most nb).

    dT[b, i, d] = [i == 0] dout[b, d] + sum_j g(i, j) * T[b, j, d], summed in
    increasing j, where g(i, j) = g(j, i) = dz(pair (i, j)) and
    g(i, i) = 2 dz(i, i) (self interaction only).
    """
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    # X, dX: (F, D, nb)  GZ: (P, nb) scratch
    F = T.shape[1]
    D = T.shape[2]
    P = GZ.shape[0]
    nb = GZ.shape[1]
    nq = hi - lo
    _load_chunk(X, T, lo, hi)
    for p in range(P):
        for q in range(nq, nb):
            GZ[p, q] = 0
    for q in range(nq):
        for p in range(P):
            GZ[p, q] = dout[lo + q, D + p]
    if s:
        for i in range(F):
            p = i * (i + 1) // 2 + i
            for q in range(nb):
                GZ[p, q] = 2 * GZ[p, q]
    for i in range(F):
        for d in range(D):
            for q in range(nb):
                dX[i, d, q] = 0
    for d in range(D):
        for q in range(nq):
            dX[0, d, q] = dout[lo + q, d]
    for j in range(F):
        for i in range(F):
            if i == j and not s:
                continue
            a = i if i > j else j
            m = j if i > j else i
            p = a * (a - 1 + 2 * s) // 2 + m  # pair (a, m), a >= m
            for d in range(D):
                for q in range(nb):
                    dX[i, d, q] += GZ[p, q] * X[j, d, q]
    for q in range(nq):
        for i in range(F):
            for d in range(D):
                dT[lo + q, i, d] = dX[i, d, q]


@jit
def _bwd_serial(dT, dout, T, s):
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    nb = min(BATCH_CHUNK, B)
    X = np.empty((F, D, nb), T.dtype)
    dX = np.empty((F, D, nb), T.dtype)
    GZ = np.empty((dout.shape[1] - D, nb), T.dtype)
    for lo in range(0, B, BATCH_CHUNK):
        _bwd_chunk(dT, dout, T, s, X, GZ, dX, lo, min(lo + BATCH_CHUNK, B))


@pjit
def _bwd_parallel(dT, dout, T, s):
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    B, F, D = T.shape
    nb = min(BATCH_CHUNK, B)
    nchunks = (B + BATCH_CHUNK - 1) // BATCH_CHUNK
    for c in prange(nchunks):
        X = np.empty((F, D, nb), T.dtype)
        dX = np.empty((F, D, nb), T.dtype)
        GZ = np.empty((dout.shape[1] - D, nb), T.dtype)
        lo = c * BATCH_CHUNK
        _bwd_chunk(dT, dout, T, s, X, GZ, dX, lo, min(lo + BATCH_CHUNK, B))


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

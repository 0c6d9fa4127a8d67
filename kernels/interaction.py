"""DLRM dot interaction, forward and backward.

``T`` (B, F, D) stacks [bottom_out, e_0, ..., e_{F-2}].  Pairs are taken in
the reference DLRM order ``for i in range(F): for j in range(i + s)``
(s = 1 with self interaction), and out = [T[:, 0, :], z(pair 0), z(pair 1), ...].
Each z is a dot product summed sequentially over d.  Only the needed pairs are
computed.  Both kernels are parallel over the batch.
"""
import numpy as np
from numba import prange

from ._numba import jit, pjit

# Work (B * P * D) below which the serial kernels are used.
PARALLEL_MIN_WORK = 32768
# Samples per parallel task (one scratch buffer per task).
BATCH_CHUNK = 16


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
def _fwd_samples(out, T, s, Tt, z, lo, hi):
    """out[b] for b in lo..hi-1."""
    # out: (B, D + P)  T: (B, F, D)  Tt: (D, F) scratch  z: (F,) scratch
    F = T.shape[1]
    D = T.shape[2]
    for b in range(lo, hi):
        for d in range(D):
            out[b, d] = T[b, 0, d]
        for j in range(F):
            for d in range(D):
                Tt[d, j] = T[b, j, d]
        p = D
        for i in range(F):
            n = i + s
            for j in range(n):
                z[j] = 0
            for d in range(D):
                t = T[b, i, d]
                for j in range(n):
                    z[j] += t * Tt[d, j]
            for j in range(n):
                out[b, p + j] = z[j]
            p += n


@jit
def _fwd_serial(out, T, s):
    # out: (B, D + P)  T: (B, F, D)
    F = T.shape[1]
    D = T.shape[2]
    Tt = np.empty((D, F), T.dtype)
    z = np.empty(F, T.dtype)
    _fwd_samples(out, T, s, Tt, z, 0, T.shape[0])


@pjit
def _fwd_parallel(out, T, s):
    # out: (B, D + P)  T: (B, F, D)
    B = T.shape[0]
    F = T.shape[1]
    D = T.shape[2]
    nchunks = (B + BATCH_CHUNK - 1) // BATCH_CHUNK
    for c in prange(nchunks):
        Tt = np.empty((D, F), T.dtype)
        z = np.empty(F, T.dtype)
        lo = c * BATCH_CHUNK
        _fwd_samples(out, T, s, Tt, z, lo, min(lo + BATCH_CHUNK, B))


def dot_interaction_forward(out, T, self_interaction):
    """out[:, :D] = T[:, 0, :]; out[:, D + p] = dot(T[:, i_p], T[:, j_p]).

    out: (B, D + P) overwritten; T: (B, F, D) contiguous; self_interaction: bool.
    """
    B, F, D = T.shape
    P = num_pairs(F, self_interaction)
    assert out.shape == (B, D + P)
    s = 1 if self_interaction else 0
    if B * P * D < PARALLEL_MIN_WORK:
        _fwd_serial(out, T, s)
    else:
        _fwd_parallel(out, T, s)


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
@jit
def _bwd_samples(dT, dout, T, s, G, lo, hi):
    """dT[b] for b in lo..hi-1.

    dT[b, i, d] = [i == 0] dout[b, d] + sum_j G[i, j] * T[b, j, d], j increasing,
    with G the symmetric pair-gradient matrix (diagonal 2 * dz(i, i)).
    """
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)  G: (F, F) scratch
    F = T.shape[1]
    D = T.shape[2]
    for b in range(lo, hi):
        p = D
        for i in range(F):
            for j in range(i):
                G[i, j] = dout[b, p]
                G[j, i] = dout[b, p]
                p += 1
            if s:
                G[i, i] = 2 * dout[b, p]
                p += 1
        for i in range(F):
            if i == 0:
                for d in range(D):
                    dT[b, 0, d] = dout[b, d]
            else:
                for d in range(D):
                    dT[b, i, d] = 0
            for j in range(F):
                if j == i and not s:
                    continue
                g = G[i, j]
                for d in range(D):
                    dT[b, i, d] += g * T[b, j, d]


@jit
def _bwd_serial(dT, dout, T, s):
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    F = T.shape[1]
    G = np.empty((F, F), T.dtype)
    _bwd_samples(dT, dout, T, s, G, 0, T.shape[0])


@pjit
def _bwd_parallel(dT, dout, T, s):
    # dT: (B, F, D)  dout: (B, D + P)  T: (B, F, D)
    B = T.shape[0]
    F = T.shape[1]
    nchunks = (B + BATCH_CHUNK - 1) // BATCH_CHUNK
    for c in prange(nchunks):
        G = np.empty((F, F), T.dtype)
        lo = c * BATCH_CHUNK
        _bwd_samples(dT, dout, T, s, G, lo, min(lo + BATCH_CHUNK, B))


def dot_interaction_backward(dT, dout, T, self_interaction):
    """Gradient of the dot interaction wrt T.

    dT: (B, F, D) overwritten; dout: (B, D + P); T: (B, F, D) contiguous;
    self_interaction: bool.
    """
    B, F, D = T.shape
    P = num_pairs(F, self_interaction)
    assert dT.shape == (B, F, D) and dout.shape == (B, D + P)
    s = 1 if self_interaction else 0
    if B * P * D < PARALLEL_MIN_WORK:
        _bwd_serial(dT, dout, T, s)
    else:
        _bwd_parallel(dT, dout, T, s)

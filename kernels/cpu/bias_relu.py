"""Bias add + ReLU for the MLP layers, forward and backward.

Column sums of the backward are deterministic: rows are split in fixed-size
chunks (independent of the thread count), each chunk's partial sums run
sequentially over its rows, and the partials are combined in chunk order.
"""
import numpy as np
from numba import prange

from .._numba import jit, pjit

# Work (B * N) below which the serial kernels are used.
PARALLEL_MIN_WORK = 131072  # serial below: a 128 x 512 layer is faster on one thread
# Rows per chunk of the column-sum reductions (and per parallel task).
ROW_CHUNK = 64


@jit
def _bias_rows(y, bias, relu, lo, hi):
    """y[i] = y[i] + bias (then max(., 0) if relu) for rows lo..hi-1."""
    # y: (B, N)  bias: (N,)
    N = y.shape[1]
    zero = y.dtype.type(0)
    for i in range(lo, hi):
        if relu:
            for n in range(N):
                v = y[i, n] + bias[n]
                y[i, n] = zero if v < zero else v  # NaN propagates, as np.maximum
        else:
            for n in range(N):
                y[i, n] += bias[n]


@jit
def _bias_serial(y, bias, relu):
    # y: (B, N)  bias: (N,)
    _bias_rows(y, bias, relu, 0, y.shape[0])


@pjit
def _bias_parallel(y, bias, relu):
    # y: (B, N)  bias: (N,)
    B = y.shape[0]
    nchunks = (B + ROW_CHUNK - 1) // ROW_CHUNK
    for c in prange(nchunks):
        lo = c * ROW_CHUNK
        _bias_rows(y, bias, relu, lo, min(lo + ROW_CHUNK, B))


def bias_relu_forward(y, bias):
    """In place ``y = max(y + bias, 0)``; y: (B, N) contiguous, bias: (N,).

    NaN propagates as with ``np.maximum`` (so a non-finite loss is seen).
    """
    assert y.ndim == 2 and bias.shape == y.shape[1:]
    kernel = _bias_serial if y.size < PARALLEL_MIN_WORK else _bias_parallel
    kernel(y, bias, True)


def bias_forward(y, bias):
    """In place ``y += bias``; y: (B, N) contiguous, bias: (N,).

    A kernel rather than ``np.add(y, bias, out=y)`` (measured 2-4x faster),
    except for a single column, where NumPy is faster.
    """
    assert y.ndim == 2 and bias.shape == y.shape[1:]
    if y.shape[1] == 1:
        np.add(y, bias, out=y)
        return
    kernel = _bias_serial if y.size < PARALLEL_MIN_WORK else _bias_parallel
    kernel(y, bias, False)


@jit
def _colsum_chunk(partial, c, dy, y, relu, lo, hi):
    """partial[c] = sum of (masked) dy rows lo..hi-1; masks dy in place if relu."""
    # partial: (nchunks, N)  dy: (B, N)  y: (B, N) | (0, N)
    N = dy.shape[1]
    zero = dy.dtype.type(0)
    for n in range(N):
        partial[c, n] = zero
    for i in range(lo, hi):
        if relu:
            for n in range(N):
                v = dy[i, n] if y[i, n] > zero else zero
                dy[i, n] = v
                partial[c, n] += v
        else:
            for n in range(N):
                partial[c, n] += dy[i, n]


@jit
def _combine(dbias, partial):
    """dbias += partial summed over chunks, in chunk order."""
    # dbias: (N,)  partial: (nchunks, N)
    N = partial.shape[1]
    for n in range(N):
        acc = partial[0, n]
        for c in range(1, partial.shape[0]):
            acc += partial[c, n]
        dbias[n] += acc


@jit
def _bwd_serial(dbias, dy, y, relu):
    # dbias: (N,)  dy: (B, N)  y: (B, N) | (0, N)
    B, N = dy.shape
    nchunks = (B + ROW_CHUNK - 1) // ROW_CHUNK
    partial = np.empty((nchunks, N), dy.dtype)
    for c in range(nchunks):
        lo = c * ROW_CHUNK
        _colsum_chunk(partial, c, dy, y, relu, lo, min(lo + ROW_CHUNK, B))
    _combine(dbias, partial)


@pjit
def _bwd_parallel(dbias, dy, y, relu):
    # dbias: (N,)  dy: (B, N)  y: (B, N) | (0, N)
    B, N = dy.shape
    nchunks = (B + ROW_CHUNK - 1) // ROW_CHUNK
    partial = np.empty((nchunks, N), dy.dtype)
    for c in prange(nchunks):
        lo = c * ROW_CHUNK
        _colsum_chunk(partial, c, dy, y, relu, lo, min(lo + ROW_CHUNK, B))
    _combine(dbias, partial)


def relu_bias_backward(dbias, dy, y):
    """In place ``dy *= (y > 0)`` and ``dbias += dy.sum(axis=0)``.

    dbias: (N,); dy: (B, N) contiguous; y: (B, N) the ReLU output.
    Masked entries (y <= 0 or NaN) become +0 (``np.where(y > 0, dy, 0)``, as
    torch's threshold_backward), even where dy is not finite.
    """
    assert dy.ndim == 2 and y.shape == dy.shape and dbias.shape == dy.shape[1:]
    if dy.shape[0] == 0:
        return
    kernel = _bwd_serial if dy.size < PARALLEL_MIN_WORK else _bwd_parallel
    kernel(dbias, dy, y, True)


def bias_backward(dbias, dy):
    """In place ``dbias += dy.sum(axis=0)``; dbias: (N,), dy: (B, N) contiguous.

    A single column is summed by NumPy (faster there; also deterministic).
    """
    assert dy.ndim == 2 and dbias.shape == dy.shape[1:]
    if dy.shape[0] == 0:
        return
    if dy.shape[1] == 1:
        dbias += dy.sum(axis=0)
        return
    kernel = _bwd_serial if dy.size < PARALLEL_MIN_WORK else _bwd_parallel
    kernel(dbias, dy, np.empty((0, dy.shape[1]), dy.dtype), False)

"""Bias add + ReLU for the MLP layers on the GPU (CuPy RawModule), forward and backward.

The CUDA twin of ``kernels/cpu/bias_relu.py``: same names, signatures and results, bit
for bit (float32 and float64).  The forward is one thread per element.  The column sums
of the backward run in the CPU's order without atomics: rows are split in chunks of the
CPU's ROW_CHUNK; one launch has a thread per (chunk, column) sum its chunk's rows in
order into partial[chunk, column] (masking dy in place for the ReLU), a second has a
thread per column add the partials in chunk order and add the total into dbias.
``bias_backward`` of a single column (the CPU uses NumPy there) follows NumPy's pairwise
sum instead: a thread per leaf of its tree (<= 128 terms, 8 accumulators), then one
thread adding the leaves up the tree.

Arrays may have any strides (passed in elements), as the Numba kernels accept.
"""
import numpy as np

from ...backend import get_array_module
from ..cpu.bias_relu import ROW_CHUNK
from . import _module
from .interaction import common_suffix, elem_strides

_DEVICE = r'''
// y: (B, N) strides (sy0, sy1)  bias: (N,) stride sb
template <typename T>
__device__ void bias_fwd(T* y, const T* bias, long long B, long long N, long long relu,
                         long long sy0, long long sy1, long long sb)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * N) return;
    long long i = k / N;
    long long n = k - i * N;
    T* yi = y + i * sy0 + n * sy1;
    T v = *yi + bias[n * sb];
    if (relu) v = (v < T(0)) ? T(0) : v;  // NaN propagates, as np.maximum
    *yi = v;
}

// partial: (nchunks, N) contiguous  dy: (B, N) strides (sd0, sd1)
// y: (B, N) strides (sy0, sy1), read only when relu
template <typename T>
__device__ void colsum_chunk(T* partial, T* dy, const T* y, long long B, long long N,
                             long long nchunks, long long chunk, long long relu,
                             long long sd0, long long sd1, long long sy0, long long sy1)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= nchunks * N) return;
    long long c = k / N;
    long long n = k - c * N;
    long long lo = c * chunk;
    long long hi = (lo + chunk < B) ? lo + chunk : B;
    T acc = T(0);
    for (long long i = lo; i < hi; ++i) {
        T* d = dy + i * sd0 + n * sd1;
        T v = *d;
        if (relu) {
            v = (y[i * sy0 + n * sy1] > T(0)) ? v : T(0);
            *d = v;
        }
        acc = acc + v;
    }
    partial[c * N + n] = acc;
}

// dbias: (N,) stride sb  partial: (nchunks, N) contiguous
template <typename T>
__device__ void colsum_combine(T* dbias, const T* partial, long long nchunks, long long N,
                               long long sb)
{
    long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    T acc = partial[n];
    for (long long c = 1; c < nchunks; ++c) {
        acc = acc + partial[c * N + n];
    }
    dbias[n * sb] = dbias[n * sb] + acc;
}

// NumPy's pairwise sum of a column (np.add.reduce: numpy/_core/src/umath/loops_utils.h
// pairwise_sum), which the CPU's bias_backward uses for a single column.  A node of n > 128
// terms splits in n2 = (n / 2) rounded down to a multiple of 8, and n - n2.
__device__ __forceinline__ long long npdlrm_pw_split(long long n)
{
    long long n2 = n / 2;
    return n2 - n2 % 8;
}

// partial: (2^levels,)  x: (n,) stride sx.  Thread k follows the bits of k (highest
// first) from the root down to a leaf (a node of <= 128 terms); the thread whose unused
// bits are all 0 writes the leaf's sum to partial[k] (other slots stay unwritten).
template <typename T>
__device__ void pw_leaves(T* partial, const T* x, long long n, long long levels, long long sx)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1LL << levels)) return;
    long long off = 0, len = n, lev = levels;
    while (len > 128) {
        --lev;
        long long n2 = npdlrm_pw_split(len);
        if ((k >> lev) & 1) {
            off += n2;
            len -= n2;
        } else {
            len = n2;
        }
    }
    if (k & ((1LL << lev) - 1)) return;
    const T* a = x + off * sx;
    T res = T(0);
    if (len < 8) {
        for (long long i = 0; i < len; ++i) res = res + a[i * sx];
    } else {
        T r[8];
        for (int q = 0; q < 8; ++q) r[q] = a[q * sx];
        long long i = 8;
        for (; i < len - len % 8; i += 8) {
            for (int q = 0; q < 8; ++q) r[q] = r[q] + a[(i + q) * sx];
        }
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < len; ++i) res = res + a[i * sx];
    }
    partial[k] = res;
}

// The sum of the node of n terms whose leaves start at partial[k], lev bits left.
template <typename T>
__device__ T pw_node(const T* partial, long long n, long long k, long long lev)
{
    if (n <= 128) return partial[k];
    long long n2 = npdlrm_pw_split(n);
    T left = pw_node(partial, n2, k, lev - 1);
    T right = pw_node(partial, n - n2, k | (1LL << (lev - 1)), lev - 1);
    return left + right;
}

// dbias: (1,)  One thread: dbias[0] = dbias[0] + (0 + pairwise sum), as
// `dbias += dy.sum(axis=0)`.
template <typename T>
__device__ void pw_combine(T* dbias, const T* partial, long long n, long long levels)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k != 0) return;
    T total = T(0) + pw_node(partial, n, 0, levels);
    dbias[0] = dbias[0] + total;
}
'''

# The extern "C" kernels, written once (REAL, _SFX) for both dtypes.
WRAPPERS = r'''
extern "C" __global__ void npdlrm_bias_fwd_SFX(
    REAL* yb, const REAL* bias, long long B, long long N, long long relu,
    long long sy0, long long sy1, long long sb)
{
    bias_fwd<REAL>(yb, bias, B, N, relu, sy0, sy1, sb);
}

extern "C" __global__ void npdlrm_colsum_chunk_SFX(
    REAL* partial, REAL* dy, const REAL* yr, long long B, long long N, long long nchunks,
    long long chunk, long long relu, long long sd0, long long sd1, long long sy0,
    long long sy1)
{
    colsum_chunk<REAL>(partial, dy, yr, B, N, nchunks, chunk, relu, sd0, sd1, sy0, sy1);
}

extern "C" __global__ void npdlrm_colsum_combine_SFX(
    REAL* dbias, const REAL* partial, long long nchunks, long long N, long long sb)
{
    colsum_combine<REAL>(dbias, partial, nchunks, N, sb);
}

extern "C" __global__ void npdlrm_pw_leaves_SFX(
    REAL* partial, const REAL* col, long long n, long long levels, long long sx)
{
    pw_leaves<REAL>(partial, col, n, levels, sx);
}

extern "C" __global__ void npdlrm_pw_combine_SFX(
    REAL* dbias, const REAL* partial, long long n, long long levels)
{
    pw_combine<REAL>(dbias, partial, n, levels);
}
'''

SOURCE = _DEVICE + _module.for_each_dtype(WRAPPERS)


def _bias(y, bias, relu):
    # y: (B, N)  bias: (N,)
    sfx = common_suffix(y, bias)
    if y.size == 0:
        return
    B, N = y.shape
    args = (y, bias, np.int64(B), np.int64(N), np.int64(relu),
            *elem_strides(y), *elem_strides(bias))
    _module.launch(SOURCE, "npdlrm_bias_fwd" + sfx, _module.blocks(B * N),
                   _module.THREADS, args)


def _colsum(dbias, dy, y, relu):
    """dbias += the column sums of dy (masked in place by y > 0 if relu), in the CPU's
    order: ROW_CHUNK-row partials, then the partials in chunk order."""
    # dbias: (N,)  dy: (B, N)  y: (B, N) (ignored unless relu)
    sfx = common_suffix(dbias, dy, y)
    if dy.size == 0:
        return
    B, N = dy.shape
    nchunks = (B + ROW_CHUNK - 1) // ROW_CHUNK
    partial = get_array_module(dy).empty((nchunks, N), dy.dtype)
    args = (partial, dy, y, np.int64(B), np.int64(N), np.int64(nchunks),
            np.int64(ROW_CHUNK), np.int64(relu), *elem_strides(dy), *elem_strides(y))
    _module.launch(SOURCE, "npdlrm_colsum_chunk" + sfx, _module.blocks(nchunks * N),
                   _module.THREADS, args)
    args = (dbias, partial, np.int64(nchunks), np.int64(N), *elem_strides(dbias))
    _module.launch(SOURCE, "npdlrm_colsum_combine" + sfx, _module.blocks(N),
                   _module.THREADS, args)


def _pw_split(n):
    """The left part of a node of n > 128 terms in NumPy's pairwise sum (npdlrm_pw_split)."""
    return n // 2 - (n // 2) % 8


def _pw_levels(n):
    """Depth of NumPy's pairwise-sum tree over n terms (leaves: nodes of <= 128)."""
    levels, sizes = 0, {n}
    while any(m > 128 for m in sizes):
        levels += 1
        sizes = {c for m in sizes if m > 128 for c in (_pw_split(m), m - _pw_split(m))}
    return levels


def _pairwise_colsum(dbias, dy):
    """dbias += dy[:, 0] summed as NumPy's pairwise sum (the CPU's single column)."""
    # dbias: (1,)  dy: (B, 1)
    sfx = common_suffix(dbias, dy)
    n = dy.shape[0]
    levels = _pw_levels(n)
    partial = get_array_module(dy).empty((1 << levels,), dy.dtype)
    args = (partial, dy, np.int64(n), np.int64(levels), elem_strides(dy)[0])
    _module.launch(SOURCE, "npdlrm_pw_leaves" + sfx, _module.blocks(1 << levels),
                   _module.THREADS, args)
    args = (dbias, partial, np.int64(n), np.int64(levels))
    _module.launch(SOURCE, "npdlrm_pw_combine" + sfx, 1, 1, args)


def bias_relu_forward(y, bias):
    """In place ``y = max(y + bias, 0)``; y: (B, N) contiguous, bias: (N,).

    NaN propagates as with ``np.maximum`` (so a non-finite loss is seen).
    """
    assert y.ndim == 2 and bias.shape == y.shape[1:]
    _bias(y, bias, True)


def bias_forward(y, bias):
    """In place ``y += bias``; y: (B, N) contiguous, bias: (N,)."""
    assert y.ndim == 2 and bias.shape == y.shape[1:]
    _bias(y, bias, False)


def relu_bias_backward(dbias, dy, y):
    """In place ``dy *= (y > 0)`` and ``dbias += dy.sum(axis=0)``.

    dbias: (N,); dy: (B, N) contiguous; y: (B, N) the ReLU output.
    Masked entries (y <= 0 or NaN) become +0 (``np.where(y > 0, dy, 0)``, as
    torch's threshold_backward), even where dy is not finite.
    """
    assert dy.ndim == 2 and y.shape == dy.shape and dbias.shape == dy.shape[1:]
    if dy.shape[0] == 0:
        return
    _colsum(dbias, dy, y, True)


def bias_backward(dbias, dy):
    """In place ``dbias += dy.sum(axis=0)``; dbias: (N,), dy: (B, N) contiguous.

    A single column is summed as NumPy's pairwise sum (as the CPU, which uses NumPy there).
    """
    assert dy.ndim == 2 and dbias.shape == dy.shape[1:]
    if dy.shape[0] == 0:
        return
    if dy.shape[1] == 1:
        _pairwise_colsum(dbias, dy)
        return
    _colsum(dbias, dy, dy, False)

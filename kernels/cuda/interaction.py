"""DLRM dot interaction on the GPU (CuPy RawModule), forward and backward.

The CUDA twin of ``kernels/cpu/interaction.py``: same names, signatures and results,
bit for bit (float32 and float64).  ``T`` (B, F, D) stacks [bottom_out, e_0, ...];
pairs run in the reference order ``for i in range(F): for j in range(i + s)``
(s = 1 with self interaction; kernels/pairs.py), and out = [T[:, 0, :], z(pair 0), ...].

One thread per output element, adding its terms in the CPU kernels' order:
- forward, thread (b, c): c < D copies T[b, 0, c]; else pair p = c - D = (i, j) and
  z = (((0 + t_0) + t_1) + ...) + t_{D-1} with t_d = T[b, i, d] * T[b, j, d];
- backward, thread (b, i, d): dT[b, i, d] = ((init + g_0 x_0) + g_1 x_1) + ... over the
  partners j = 0..F-1 in increasing order (j != i without self interaction), where
  init = dout[b, d] for i == 0 else 0, x_j = T[b, j, d], g_j = dz(pair (i, j)) or
  dz(pair (j, i)), and g_i = 2 dz(pair (i, i)) with self interaction.
The pair (i, j) of a column is found arithmetically in the kernel (no index tables):
row i of the pairs starts at column off(i) = i (i - 1) / 2 + i s.

Arrays may have any strides (passed in elements), as the Numba kernels accept.
"""
import numpy as np

from ..pairs import num_pairs
from . import _module

_DEVICE = r'''
// Column where row i of the pairs starts: sum over k < i of (k + s).
__device__ __forceinline__ long long npdlrm_pair_off(long long i, long long s)
{
    return i * (i - 1) / 2 + i * s;
}

// The row i of pair column p (0 <= p < P): the largest i with off(i) <= p.
__device__ __forceinline__ long long npdlrm_pair_row(long long p, long long s)
{
    double b = (double)(2 * s - 1);
    long long i = (long long)((sqrt(b * b + 8.0 * (double)p) - b) * 0.5);
    if (i < 0) i = 0;
    while (i > 0 && npdlrm_pair_off(i, s) > p) --i;
    while (npdlrm_pair_off(i + 1, s) <= p) ++i;
    return i;
}

// out: (B, D + P) strides (so0, so1)  T: (B, F, D) strides (st0, st1, st2)
template <typename T>
__device__ void dot_fwd(T* out, const T* tin, long long B, long long F, long long D,
                        long long P, long long s,
                        long long so0, long long so1,
                        long long st0, long long st1, long long st2)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long W = D + P;
    if (k >= B * W) return;
    long long b = k / W;
    long long c = k - b * W;
    const T* tb = tin + b * st0;
    if (c < D) {
        out[b * so0 + c * so1] = tb[c * st2];
        return;
    }
    long long p = c - D;
    long long i = npdlrm_pair_row(p, s);
    long long j = p - npdlrm_pair_off(i, s);
    const T* ti = tb + i * st1;
    const T* tj = tb + j * st1;
    T z = T(0);
    for (long long d = 0; d < D; ++d) {
        z = z + ti[d * st2] * tj[d * st2];
    }
    out[b * so0 + c * so1] = z;
}

// dT: (B, F, D) strides (sg0, sg1, sg2)  dout: (B, D + P) strides (sd0, sd1)
// T: (B, F, D) strides (st0, st1, st2)
template <typename T>
__device__ void dot_bwd(T* dt, const T* dout, const T* tin, long long B, long long F,
                        long long D, long long s,
                        long long sg0, long long sg1, long long sg2,
                        long long sd0, long long sd1,
                        long long st0, long long st1, long long st2)
{
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= B * F * D) return;
    long long b = k / (F * D);
    long long r = k - b * (F * D);
    long long i = r / D;
    long long d = r - i * D;
    const T* db = dout + b * sd0;
    const T* tb = tin + b * st0 + d * st2;
    T acc = (i == 0) ? db[d * sd1] : T(0);
    // partners j < i: pair (i, j) at column D + off(i) + j
    long long row = D + npdlrm_pair_off(i, s);
    for (long long j = 0; j < i; ++j) {
        acc = acc + db[(row + j) * sd1] * tb[j * st1];
    }
    if (s) {
        T g = T(2) * db[(row + i) * sd1];
        acc = acc + g * tb[i * st1];
    }
    // partners j > i: pair (j, i) at column D + off(j) + i
    for (long long j = i + 1; j < F; ++j) {
        acc = acc + db[(D + npdlrm_pair_off(j, s) + i) * sd1] * tb[j * st1];
    }
    dt[b * sg0 + i * sg1 + d * sg2] = acc;
}
'''

# The extern "C" kernels, written once (REAL, _SFX) for both dtypes.
WRAPPERS = r'''
extern "C" __global__ void npdlrm_dot_fwd_SFX(
    REAL* out, const REAL* tin, long long B, long long F, long long D, long long P,
    long long s, long long so0, long long so1, long long st0, long long st1, long long st2)
{
    dot_fwd<REAL>(out, tin, B, F, D, P, s, so0, so1, st0, st1, st2);
}

extern "C" __global__ void npdlrm_dot_bwd_SFX(
    REAL* dt, const REAL* dout, const REAL* tin, long long B, long long F, long long D,
    long long s, long long sg0, long long sg1, long long sg2, long long sd0, long long sd1,
    long long st0, long long st1, long long st2)
{
    dot_bwd<REAL>(dt, dout, tin, B, F, D, s, sg0, sg1, sg2, sd0, sd1, st0, st1, st2);
}
'''

SOURCE = _DEVICE + _module.for_each_dtype(WRAPPERS)


def elem_strides(a):
    """a's strides in elements, as np.int64 kernel arguments."""
    out = []
    for st in a.strides:
        if st % a.itemsize:
            raise ValueError(f"array strides {a.strides} are not multiples of its "
                             f"item size {a.itemsize}")
        out.append(np.int64(st // a.itemsize))
    return tuple(out)


def common_suffix(*arrays):
    """The kernel name suffix of the arrays' common dtype; TypeError when they differ."""
    dts = {np.dtype(a.dtype) for a in arrays}
    if len(dts) != 1:
        raise TypeError(f"the CUDA kernels take arrays of one dtype, got "
                        f"{sorted(str(d) for d in dts)}")
    return _module.suffix(dts.pop())


def dot_interaction_forward(out, T, self_interaction):
    """out[:, :D] = T[:, 0, :]; out[:, D + p] = dot(T[:, i_p], T[:, j_p]).

    out: (B, D + P) overwritten; T: (B, F, D) contiguous; self_interaction: bool.
    """
    B, F, D = T.shape
    P = num_pairs(F, self_interaction)
    assert out.shape == (B, D + P)
    sfx = common_suffix(out, T)
    n = B * (D + P)
    if n == 0:
        return
    s = 1 if self_interaction else 0
    args = (out, T, np.int64(B), np.int64(F), np.int64(D), np.int64(P), np.int64(s),
            *elem_strides(out), *elem_strides(T))
    _module.launch(SOURCE, "npdlrm_dot_fwd" + sfx, _module.blocks(n), _module.THREADS, args)


def dot_interaction_backward(dT, dout, T, self_interaction):
    """Gradient of the dot interaction wrt T.

    dT: (B, F, D) overwritten; dout: (B, D + P); T: (B, F, D) contiguous;
    self_interaction: bool.
    """
    B, F, D = T.shape
    P = num_pairs(F, self_interaction)
    assert dT.shape == (B, F, D) and dout.shape == (B, D + P)
    sfx = common_suffix(dT, dout, T)
    n = B * F * D
    if n == 0:
        return
    s = 1 if self_interaction else 0
    args = (dT, dout, T, np.int64(B), np.int64(F), np.int64(D), np.int64(s),
            *elem_strides(dT), *elem_strides(dout), *elem_strides(T))
    _module.launch(SOURCE, "npdlrm_dot_bwd" + sfx, _module.blocks(n), _module.THREADS, args)

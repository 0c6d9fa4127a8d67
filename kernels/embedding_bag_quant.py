"""EmbeddingBag forward (sum / mean pooling) over quantized rows: float16, row-wise int8
and row-wise int4 (the layouts: npdlrm/quantize.py).

Each looked-up row is dequantized to float32 exactly as `quantize.dequantize_table` does
(`float32(q) * scale + bias`; float16 widened exactly), then pooled like the float32
kernel (kernels/embedding_bag.py): out[b] = w_0 * row_0, then += w_k * row_k in bag
order (w = 1 without per-sample weights), divided by the bag length for mean. The
result therefore equals, bit for bit, dequantize-then-lookup with the float32 kernel.
Bags are CSR: bag b is indices[offsets[b]:offsets[b + 1]]; the parallel kernel hands
whole chunks of bags to the threads, so no output row is written by two threads.
"""
import numpy as np
from numba import prange

from ._numba import jit, pjit, prefetch_read, prefetch_write
from .cpu.embedding_bag import BAG_CHUNK, FORWARD_PARALLEL_MIN_WORK, PREFETCH_AHEAD

FP16, INT8, INT4 = 0, 1, 2
KINDS = {"float16": FP16, "int8": INT8, "int4": INT4}

# POW2[s * 32 + e] = (-1)^s 2^(e - 25) for e >= 1, and (-1)^s 2^-24 for e = 0: a half with
# sign bit s, exponent field e and mantissa field m is (m + 1024 [e > 0]) * POW2[s * 32 + e],
# exactly, in float32 (h >> 10 is s * 32 + e): the scale and bias of int4 rows.
_P = [2.0 ** -24] + [2.0 ** (e - 25) for e in range(1, 32)]
POW2 = np.array(_P + [-v for v in _P], np.float32)


@jit(inline="always")
def half_to_float(h, pow2):
    """The float32 value of the IEEE half with bits h (a finite one; the formats refuse
    inf and NaN when they quantize)."""
    h = np.int32(h)
    m = (h & 1023) | (np.int32((h & 0x7C00) != 0) << 10)
    return np.float32(m) * pow2[h >> 10]


# A half's bits h, moved to float32 bits ((h & 0x7fff) << 13, sign at bit 31), are the
# float32 of its value times 2^-112 (normal and subnormal halves alike); times 2^112: exact.
HALF_SCALE = np.float32(2.0 ** 112)


@jit(inline="always")
def _add_fp16(out, b, first, w, q, sbv, col, pow2, bits, fbits, r):
    """out[b] = w * row r (first) or out[b] += w * row r, row r widened from float16.

    q: (V, D) the halves (uint16); bits: (D,) uint32 scratch, fbits its float32 view."""
    D = out.shape[1]
    for d in range(D):
        h = np.uint32(q[r, d])
        bits[d] = ((h & 0x7fff) << 13) | ((h & 0x8000) << 16)
    if first:
        for d in range(D):
            out[b, d] = w * (fbits[d] * HALF_SCALE)
    else:
        for d in range(D):
            out[b, d] += w * (fbits[d] * HALF_SCALE)


@jit(inline="always")
def _add_int8(out, b, first, w, q, sbv, col, pow2, bits, fbits, r):
    """As _add_fp16 for an int8 row: q: (V, row_bytes) uint8; sbv: its float32 view, the
    row's scale and bias at columns col, col + 1."""
    D = out.shape[1]
    s = np.float32(sbv[r, col])
    c = np.float32(sbv[r, col + 1])
    if first:
        for d in range(D):
            out[b, d] = w * (np.float32(q[r, d]) * s + c)
    else:
        for d in range(D):
            out[b, d] += w * (np.float32(q[r, d]) * s + c)


@jit(inline="always")
def _add_int4(out, b, first, w, q, sbv, col, pow2, bits, fbits, r):
    """As _add_fp16 for an int4 row: q: (V, row_bytes) uint8, element d in the low (even
    d) or high nibble of byte d // 2; sbv: its uint16 view, the float16 scale and bias at
    columns col, col + 1."""
    D = out.shape[1]
    s = half_to_float(sbv[r, col], pow2)
    c = half_to_float(sbv[r, col + 1], pow2)
    if first:
        for j in range(D // 2):
            byte = np.int32(q[r, j])
            out[b, 2 * j] = w * (np.float32(byte & 15) * s + c)
            out[b, 2 * j + 1] = w * (np.float32(byte >> 4) * s + c)
        if D % 2:
            out[b, D - 1] = w * (np.float32(np.int32(q[r, D // 2]) & 15) * s + c)
    else:
        for j in range(D // 2):
            byte = np.int32(q[r, j])
            out[b, 2 * j] += w * (np.float32(byte & 15) * s + c)
            out[b, 2 * j + 1] += w * (np.float32(byte >> 4) * s + c)
        if D % 2:
            out[b, D - 1] += w * (np.float32(np.int32(q[r, D // 2]) & 15) * s + c)


@jit(inline="always")
def _prefetch(out, q, indices, offsets, b, hi, pf):
    """Hint the rows of the positions up to PREFETCH_AHEAD past bag b, and the output row
    PREFETCH_AHEAD bags ahead; positions before pf were hinted already. Returns the new pf."""
    D = out.shape[1]
    last = q.shape[1] - 1
    tgt = min(offsets[b + 1] + PREFETCH_AHEAD, offsets[hi])
    while pf < tgt:
        r = indices[pf]
        prefetch_read(q, r, 0)
        prefetch_read(q, r, last)
        pf += 1
    if b + PREFETCH_AHEAD < hi:
        prefetch_write(out, b + PREFETCH_AHEAD, 0)
        prefetch_write(out, b + PREFETCH_AHEAD, D - 1)
    return pf


@jit(inline="always")
def _finish(out, b, n, mean):
    """Bag b of n rows is summed in out[b]: zeros for an empty bag, / n for mean."""
    D = out.shape[1]
    if n == 0:
        for d in range(D):
            out[b, d] = 0
    elif mean:
        m = np.float32(n)
        for d in range(D):
            out[b, d] = out[b, d] / m


# One pool function per format, so that each row loop is compiled for its format alone: a
# format branch inside the row loop costs 4x at one row per bag. _pool picks one per chunk.
@jit
def _pool_fp16(out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi):
    # out: (B, D)  q, sbv: (V, *)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    bits = np.empty(out.shape[1], np.uint32)
    fbits = bits.view(np.float32)
    one = np.float32(1)
    pf = offsets[lo]
    for b in range(lo, hi):
        pf = _prefetch(out, q, indices, offsets, b, hi, pf)
        s, e = offsets[b], offsets[b + 1]
        for k in range(s, e):
            w = np.float32(psw[k]) if has_w else one
            _add_fp16(out, b, k == s, w, q, sbv, col, pow2, bits, fbits, indices[k])
        _finish(out, b, e - s, mean)


@jit
def _pool_int8(out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi):
    # out: (B, D)  q, sbv: (V, *)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    one = np.float32(1)
    pf = offsets[lo]
    for b in range(lo, hi):
        pf = _prefetch(out, q, indices, offsets, b, hi, pf)
        s, e = offsets[b], offsets[b + 1]
        for k in range(s, e):
            w = np.float32(psw[k]) if has_w else one
            _add_int8(out, b, k == s, w, q, sbv, col, pow2, q, q, indices[k])
        _finish(out, b, e - s, mean)


@jit
def _pool_int4(out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi):
    # out: (B, D)  q, sbv: (V, *)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    one = np.float32(1)
    pf = offsets[lo]
    for b in range(lo, hi):
        pf = _prefetch(out, q, indices, offsets, b, hi, pf)
        s, e = offsets[b], offsets[b + 1]
        for k in range(s, e):
            w = np.float32(psw[k]) if has_w else one
            _add_int4(out, b, k == s, w, q, sbv, col, pow2, q, q, indices[k])
        _finish(out, b, e - s, mean)


@jit
def _pool(kind, out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi):
    """Overwrite out[b] with the pooled dequantized bag b, for b in lo..hi-1."""
    if hi <= lo:
        return
    if kind == FP16:
        _pool_fp16(out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi)
    elif kind == INT8:
        _pool_int8(out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi)
    else:
        _pool_int4(out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo, hi)


@jit
def _forward_serial(kind, out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean):
    # out: (B, D)  q, sbv: (V, *)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    _pool(kind, out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, 0, out.shape[0])


@pjit
def _forward_parallel(kind, out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean):
    # out: (B, D)  q, sbv: (V, *)  indices: (nnz,)  offsets: (B + 1,)  psw: (nnz,) | (0,)
    B = out.shape[0]
    nchunks = (B + BAG_CHUNK - 1) // BAG_CHUNK
    for c in prange(nchunks):
        lo = c * BAG_CHUNK
        _pool(kind, out, q, sbv, col, pow2, indices, offsets, psw, has_w, mean, lo,
              min(lo + BAG_CHUNK, B))


def embedding_bag_quant_forward(out, kind, values, scale_bias, scale_col, indices, offsets,
                                per_sample_weights, mean):
    """Pool the bags of dequantized rows into ``out`` (float32, overwritten).

    out: (B, D) float32, may be a strided view; kind: 'float16', 'int8' or 'int4';
    values: (V, *) the stored rows (uint8), or their uint16 view for float16;
    scale_bias: (V, *) the view holding each row's scale and bias at columns
    scale_col and scale_col + 1 (float32 view for int8, uint16 for int4; None for
    float16) -- npdlrm.quantize.QuantizedRows gives all three;
    indices: (nnz,) int32/int64; offsets: (B + 1,) int64;
    per_sample_weights: None or (nnz,); mean: bool (empty bag -> zeros).
    """
    B, D = out.shape
    assert out.dtype == np.float32 and offsets.shape[0] == B + 1
    k = KINDS[kind]
    if scale_bias is None:
        scale_bias = values
    if per_sample_weights is None:
        psw, has_w = np.empty(0, np.float32), False
    else:
        psw, has_w = np.asarray(per_sample_weights, dtype=np.float32), True
    args = (k, out, values, scale_bias, int(scale_col), POW2, indices, offsets, psw, has_w,
            bool(mean))
    if indices.shape[0] * D < FORWARD_PARALLEL_MIN_WORK:
        _forward_serial(*args)
    else:
        _forward_parallel(*args)

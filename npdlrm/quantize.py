"""Storage formats of inference weights: embedding tables (float32, float16, row-wise int8,
row-wise int4) and MLP weights (float32, float16, per-output-channel int8).

Every table format stores a table of V rows of width D as one uint8 array (V, row_bytes):
one contiguous run of bytes per row, so that a lookup touches one place per row and a
file holding the array can later be memory-mapped as it is. The byte layout of each
format has one home here (`TableFormat.row_bytes` and the encoders below):

  float32  D little-endian float32 values                       row_bytes 4 D
  float16  D little-endian IEEE half values                     row_bytes 2 D
  int8     D bytes q_d (uint8), padded to a multiple of 4, then scale and bias as
           float32: x_d ~ scale * q_d + bias                    row_bytes pad4(D) + 8
  int4     ceil(D / 2) bytes, element d in byte d // 2, low nibble for even d, padded
           to a multiple of 2, then scale and bias as float16   row_bytes pad2(ceil(D/2)) + 4

These are the layouts of FBGEMM's fused 8-bit and 4-bit row-wise formats (scale and bias
at the end of each row; float32 for 8 bits, float16 for 4 bits); the padding, absent
when D is a multiple of 4, keeps the scale and bias aligned.

Quantizing a row: bias = min(row) (int4: rounded to float16 first), scale = (max(row) -
bias) / (2^bits - 1) (int4: rounded to float16), 1 when that is 0 (a constant row);
q = clip(rint((x - bias) / scale), 0, 2^bits - 1). Dequantizing: float32(q) * scale + bias,
in float32: the Numba kernels (kernels/embedding_bag_quant.py) compute exactly that.
"""
import numpy as np

from .kernels.cpu.embedding_bag import embedding_bag_forward
from .kernels.embedding_bag_quant import embedding_bag_quant_forward

EMB_BITS = (4, 8, 16, 32)
MLP_BITS = (8, 16, 32)
FP16_MAX = float(np.finfo(np.float16).max)


def _pad(n, m):
    return -(-n // m) * m


class TableFormat:
    """One table storage format: name, bits, and its byte layout for width D."""

    def __init__(self, name, bits):
        self.name, self.bits = name, bits

    def data_bytes(self, D):
        """Bytes of a row's values, padding included (the scale and bias follow)."""
        return {"float32": 4 * D, "float16": 2 * D, "int8": _pad(D, 4),
                "int4": _pad(_pad(D, 2) // 2, 2)}[self.name]

    def row_bytes(self, D):
        """Bytes of one stored row of width D."""
        return self.data_bytes(D) + {"int8": 8, "int4": 4}.get(self.name, 0)

    def table_bytes(self, V, D):
        return int(V) * self.row_bytes(D)

    def __repr__(self):
        return f"TableFormat({self.name!r})"


FORMATS = {4: TableFormat("int4", 4), 8: TableFormat("int8", 8),
           16: TableFormat("float16", 16), 32: TableFormat("float32", 32)}
BY_NAME = {f.name: f for f in FORMATS.values()}


def table_format(bits_or_name):
    """The TableFormat of 4, 8, 16, 32 bits or of its name; ValueError otherwise."""
    fmt = FORMATS.get(bits_or_name) if not isinstance(bits_or_name, str) else \
        BY_NAME.get(bits_or_name)
    if fmt is None:
        raise ValueError(f"embedding tables can be stored in {EMB_BITS} bits "
                         f"({', '.join(BY_NAME)}), got {bits_or_name!r}")
    return fmt


def _check_weight(weight, what):
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"{what}: a table must be 2-D (rows, dim), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{what}: holds non-finite values, which cannot be quantized")
    return w


def _rowwise(w, levels, half):
    """(q (V, D) uint8, scale (V,), bias (V,)) float32 of the row-wise scheme."""
    lo = w.min(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    hi = w.max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    if half:
        lo = lo.astype(np.float16).astype(np.float32)
    scale = (hi - lo) / np.float32(levels)
    if half:
        scale = scale.astype(np.float16).astype(np.float32)
    scale[scale == 0] = 1  # a constant row (or one rounded to a zero float16 scale)
    q = np.rint((w - lo[:, None]) / scale[:, None])
    q = np.clip(q, 0, levels).astype(np.uint8)
    return q, scale.astype(np.float32), lo.astype(np.float32)


def quantize_table(weight, fmt, what="table"):
    """weight: (V, D) float -> the stored rows (V, fmt.row_bytes(D)) uint8."""
    fmt = table_format(fmt) if not isinstance(fmt, TableFormat) else fmt
    w = _check_weight(weight, what)
    V, D = w.shape
    out = np.zeros((V, fmt.row_bytes(D)), np.uint8)
    if fmt.name == "float32":
        out[:, :4 * D] = w.astype("<f4").view(np.uint8).reshape(V, 4 * D)
    elif fmt.name == "float16":
        if V and np.abs(w).max() > FP16_MAX:
            raise ValueError(f"{what}: values up to {np.abs(w).max():.4g} overflow float16 "
                             f"(largest {FP16_MAX:g})")
        out[:, :2 * D] = w.astype("<f2").view(np.uint8).reshape(V, 2 * D)
    else:
        half = fmt.name == "int4"
        if half and V and np.abs(w).max() > FP16_MAX / 2:
            raise ValueError(f"{what}: values up to {np.abs(w).max():.4g} overflow the "
                             f"float16 scale and bias of int4 rows")
        q, scale, bias = _rowwise(w, (1 << fmt.bits) - 1, half)
        P = fmt.data_bytes(D)
        if half:
            qe = np.zeros((V, 2 * P), np.uint8)
            qe[:, :D] = q
            out[:, :P] = qe[:, 0::2] | (qe[:, 1::2] << 4)
            sb = np.stack([scale, bias], axis=1).astype("<f2")
            out[:, P:P + 4] = sb.view(np.uint8).reshape(V, 4)
        else:
            out[:, :D] = q
            sb = np.stack([scale, bias], axis=1).astype("<f4")
            out[:, P:P + 8] = sb.view(np.uint8).reshape(V, 8)
    return out


def check_rows(data, D, fmt, what="table"):
    """data must be (V, fmt.row_bytes(D)) uint8, C-contiguous; returns it."""
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != fmt.row_bytes(D):
        raise ValueError(f"{what}: {fmt.name} rows of width {D} are (V, {fmt.row_bytes(D)}) "
                         f"uint8, got {data.shape} {data.dtype}")
    if not data.flags.c_contiguous:
        raise ValueError(f"{what}: the stored rows must be C-contiguous")
    return data


def row_views(data, D, fmt):
    """The typed views of stored rows the kernels read: (values, scale_bias_column).

    float32: (V, D + pad) float32 view, None; float16: (V, D) uint16 view, None;
    int8: the uint8 rows, and the float32 view (V, row_bytes / 4) with scale at column
    pad4(D) / 4; int4: the uint8 rows and the uint16 view with scale at pad / 2."""
    if fmt.name == "float32":
        return data.view(np.float32), None
    if fmt.name == "float16":
        return data.view(np.uint16), None
    if fmt.name == "int8":
        return data, data.view(np.float32)
    return data, data.view(np.uint16)


class QuantizedTable:
    """One inference table: stored rows (V, fmt.row_bytes(D)) uint8 of width D.

    `rows` may be any C-contiguous uint8 array: in RAM, or a memory map of a file (only
    the looked-up rows are then read). lookup() pools bags like EmbeddingTable.lookup."""

    def __init__(self, rows, dim, fmt, what="table"):
        self.fmt = table_format(fmt) if not isinstance(fmt, TableFormat) else fmt
        self.dim = int(dim)
        self.rows = check_rows(rows, self.dim, self.fmt, what)
        self._values, self._scale_bias = row_views(rows, self.dim, self.fmt)
        # column of each row's scale in the scale_bias view (bias: the next one)
        self.scale_col = {"int8": self.fmt.data_bytes(self.dim) // 4,
                          "int4": self.fmt.data_bytes(self.dim) // 2}.get(self.fmt.name, 0)

    @classmethod
    def from_weight(cls, weight, fmt, what="table"):
        """Quantize a float (V, D) table into format fmt (bits or name)."""
        fmt = table_format(fmt) if not isinstance(fmt, TableFormat) else fmt
        return cls(quantize_table(weight, fmt, what), np.shape(weight)[1], fmt, what)

    @property
    def num_rows(self):
        return self.rows.shape[0]

    @property
    def nbytes(self):
        return self.fmt.table_bytes(self.num_rows, self.dim)

    def dequantize(self):
        """The float32 (V, D) table this one stands for."""
        return dequantize_table(self.rows, self.dim, self.fmt)

    def lookup(self, out, indices, offsets, per_sample_weights=None, mean=False):
        """out: (B, D) float32, may be a strided view; indices: (nnz,); offsets: (B+1,)."""
        if self.fmt.name == "float32":
            embedding_bag_forward(out, self._values, indices, offsets,
                                          per_sample_weights, mean)
        else:
            embedding_bag_quant_forward(out, self.fmt.name, self._values,
                                                self._scale_bias, self.scale_col, indices,
                                                offsets, per_sample_weights, mean)


def dequantize_table(data, D, fmt):
    """The stored rows (V, row_bytes) -> float32 (V, D): float32(q) * scale + bias."""
    fmt = table_format(fmt) if not isinstance(fmt, TableFormat) else fmt
    check_rows(data, D, fmt)
    V, P = data.shape[0], fmt.data_bytes(D)
    if fmt.name == "float32":
        return data[:, :4 * D].copy().view("<f4").astype(np.float32)
    if fmt.name == "float16":
        return data[:, :2 * D].copy().view("<f2").astype(np.float32)
    if fmt.name == "int8":
        q = data[:, :D]
        sb = data[:, P:P + 8].copy().view("<f4").astype(np.float32)
    else:
        packed = data[:, :P]
        q = np.empty((V, 2 * P), np.uint8)
        q[:, 0::2] = packed & 15
        q[:, 1::2] = packed >> 4
        q = q[:, :D]
        sb = data[:, P:P + 4].copy().view("<f2").astype(np.float32)
    return q.astype(np.float32) * sb[:, 0:1] + sb[:, 1:2]


# ---- MLP weights ------------------------------------------------------------------------
def check_mlp_bits(bits):
    if bits not in MLP_BITS:
        raise ValueError(f"MLP weights can be stored in {MLP_BITS} bits (int8 per output "
                         f"channel, float16, float32), got {bits!r}")
    return bits


def quantize_mlp_weight(weight, bits, what="weight"):
    """weight: (m, n) -> {'weight': stored array, 'scale': (m,) float32 (int8 only)}.

    int8: symmetric per output channel (row): scale_o = max|W_o| / 127 (1 for a zero
    row), q = rint(W / scale_o) in [-127, 127]."""
    check_mlp_bits(bits)
    w = np.asarray(weight, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"{what}: holds non-finite values, which cannot be quantized")
    if bits == 32:
        return {"weight": np.ascontiguousarray(w)}
    if bits == 16:
        if w.size and np.abs(w).max() > FP16_MAX:
            raise ValueError(f"{what}: values up to {np.abs(w).max():.4g} overflow float16")
        return {"weight": w.astype(np.float16)}
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    scale = (amax / np.float32(127)).astype(np.float32)
    scale[scale == 0] = 1
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return {"weight": q, "scale": scale}


def dequantize_mlp_weight(stored, bits):
    """The float32 (m, n) weight the forward multiplies by: q * scale_o for int8."""
    check_mlp_bits(bits)
    w = np.asarray(stored["weight"])
    if bits == 8:
        return np.ascontiguousarray(w.astype(np.float32) * stored["scale"][:, None])
    return np.ascontiguousarray(w, dtype=np.float32)


def mlp_weight_bytes(shape, bits):
    """Stored bytes of an (m, n) weight: m n bits / 8, plus m float32 scales for int8."""
    m, n = shape
    return m * n * bits // 8 + (4 * m if bits == 8 else 0)

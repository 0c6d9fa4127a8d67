"""Slow, obvious NumPy references for the quantized tables (layouts: npdlrm/quantize.py),
written from the documented byte layout, without npdlrm's code."""
import numpy as np

from naive_kernels import embedding_bag_forward


def decode_rows(data, D, name):
    """Stored rows (V, row_bytes) uint8 -> float32 (V, D), one element at a time."""
    V = data.shape[0]
    out = np.zeros((V, D), np.float32)
    for r in range(V):
        row = bytes(data[r])
        if name == "float32":
            out[r] = np.frombuffer(row[:4 * D], "<f4")
        elif name == "float16":
            out[r] = np.frombuffer(row[:2 * D], "<f2").astype(np.float32)
        elif name == "int8":
            P = -(-D // 4) * 4
            scale, bias = np.frombuffer(row[P:P + 8], "<f4")
            for d in range(D):
                out[r, d] = np.float32(row[d]) * scale + bias
        elif name == "int4":
            P = -(-(-(-D // 2)) // 2) * 2
            scale, bias = np.frombuffer(row[P:P + 4], "<f2").astype(np.float32)
            for d in range(D):
                nibble = (row[d // 2] >> (4 * (d % 2))) & 15
                out[r, d] = np.float32(nibble) * scale + bias
        else:
            raise ValueError(name)
    return out


def quant_embedding_bag_forward(data, D, name, indices, offsets, per_sample_weights, mean):
    """Dequantize the whole table, then the naive float32 lookup."""
    return embedding_bag_forward(decode_rows(data, D, name), indices, offsets,
                                 per_sample_weights, mean)

"""All tables at once: the embedding-bag forward and the fused sparse update of T tables.

The CUDA home runs each in one launch; here every table runs the single-table Numba
kernel on its slice of the packed bags, so both forms give bitwise the same values.
Packed bags: ``indices`` (nnz,) holds every table's bags back to back, and
``offsets`` (T, B + 1) gives table t's bag b as ``indices[offsets[t, b]:offsets[t, b + 1]]``.
"""
from .embedding_bag import embedding_bag_forward
from .embedding_update import (embedding_adagrad_update, embedding_rowwise_adagrad_update,
                               embedding_sgd_update)


def _table_bags(indices, offsets, per_sample_weights, t):
    """Table t's (indices, local offsets, weights) from the packed bags."""
    s, e = int(offsets[t, 0]), int(offsets[t, -1])
    w = None if per_sample_weights is None else per_sample_weights[s:e]
    return indices[s:e], offsets[t] - s, w


def embedding_bags_forward(out, weights, indices, offsets, per_sample_weights, mean):
    """Pool every table's bags into ``out`` (overwritten).

    out: (B, T, D), may be a strided view; weights: T arrays (V_t, D);
    indices: (nnz,) int64; offsets: (T, B + 1) int64 positions into indices;
    per_sample_weights: None or (nnz,); mean: bool.
    """
    for t, weight in enumerate(weights):
        idx, off, w = _table_bags(indices, offsets, per_sample_weights, t)
        embedding_bag_forward(out[:, t, :], weight, idx, off, w, mean)


def embedding_bags_update(kind, weights, states, dout, indices, offsets, per_sample_weights,
                          mean, lr, eps):
    """Fused backward + sparse optimizer ``kind`` ('sgd', 'adagrad', 'rwsadagrad') of
    every table, on the rows its bags touched.

    weights: T arrays (V_t, D); states: T arrays (None for sgd, (V_t, D) adagrad, (V_t,)
    rwsadagrad); dout: (B, T, D), may be a strided view; indices, offsets,
    per_sample_weights, mean: as embedding_bags_forward; lr, eps: floats.
    """
    for t, weight in enumerate(weights):
        idx, off, w = _table_bags(indices, offsets, per_sample_weights, t)
        g = dout[:, t, :]
        if kind == "sgd":
            embedding_sgd_update(weight, g, idx, off, w, mean, lr)
        elif kind == "adagrad":
            embedding_adagrad_update(weight, states[t], g, idx, off, w, mean, lr, eps)
        elif kind == "rwsadagrad":
            embedding_rowwise_adagrad_update(weight, states[t], g, idx, off, w, mean, lr, eps)
        else:
            raise ValueError(f"sparse optimizer must be sgd, adagrad or rwsadagrad, got {kind!r}")

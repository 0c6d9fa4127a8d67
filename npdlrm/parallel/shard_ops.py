"""Operations on table shards that the single-process kernels do not cover.

- `row_bags`: the part of a batch's bags that falls in a row shard, with shard-local ids;
  a mean bag becomes a weighted sum (weight 1/n), so partial sums add up to the mean.
- `update_rows`: a sparse optimizer step on given rows from their summed gradients, with
  the fused kernels' arithmetic (weight dtype, `w - lr * (g / (sqrt(s) + eps))`); used
  for replicated tables (after the allreduce) and for row-wise Adagrad on column shards,
  whose per-row mean of g^2 needs every column.
"""
import numpy as np


def row_bags(indices, offsets, weights, mean, r0, r1, dtype):
    """indices: (nnz,); offsets: (B + 1,); weights: (nnz,) or None; rows [r0, r1).

    Returns (local indices (m,) int64, offsets (B + 1,) int64, weights (m,) or None):
    bag b keeps its entries in [r0, r1), shifted by -r0, in order."""
    keep = (indices >= r0) & (indices < r1)
    local = indices[keep].astype(np.int64) - r0
    csum = np.zeros(indices.shape[0] + 1, dtype=np.int64)
    np.cumsum(keep, out=csum[1:])
    local_offsets = csum[offsets]
    w = None
    if mean:
        counts = np.diff(offsets)
        per_entry = np.repeat((1 / np.maximum(counts, 1)).astype(dtype), counts)
        w = per_entry if weights is None else (weights * per_entry).astype(dtype)
    elif weights is not None:
        w = weights
    return local, local_offsets, (None if w is None else np.ascontiguousarray(w[keep],
                                                                            dtype=dtype))


def row_square_sums(G):
    """G: (U, d) -> (U,) sums of squares, in G's dtype, left to right like the kernel."""
    acc = G[:, 0] * G[:, 0]
    for d in range(1, G.shape[1]):
        acc += G[:, d] * G[:, d]
    return acc


def update_rows(kind, weight, state, rows, G, lr, eps, square_sums=None, full_dim=None):
    """One step of `kind` ('sgd' | 'adagrad' | 'rwsadagrad') on weight[rows].

    weight: (V, d); state: (V, d) adagrad, (V,) rwsadagrad, None sgd; rows: (U,) unique;
    G: (U, d) their gradients. rwsadagrad: square_sums (U,) of the full rows (default
    from G) and full_dim, the full row width (default d)."""
    dt = weight.dtype.type
    lr, eps = dt(lr), dt(eps)
    G = G.astype(weight.dtype, copy=False)
    if kind == "sgd":
        weight[rows] -= lr * G
    elif kind == "adagrad":
        s = state[rows] + G * G
        state[rows] = s
        weight[rows] -= lr * (G / (np.sqrt(s) + eps))
    elif kind == "rwsadagrad":
        sums = row_square_sums(G) if square_sums is None else square_sums
        s = state[rows] + sums / dt(full_dim or G.shape[1])
        state[rows] = s
        weight[rows] -= lr * (G / (np.sqrt(s) + eps)[:, None])
    else:
        raise ValueError(f"sparse optimizer must be sgd, adagrad or rwsadagrad, got {kind!r}")

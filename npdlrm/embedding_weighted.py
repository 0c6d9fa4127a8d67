"""Learned weighted pooling, as the reference's `--weighted-pooling learned`: table k has
a weight per row, v (n,), initialised to ones and trained; each row is scaled by its
weight in the bag (the reference gathers v at the bag's ids as per-sample weights):

    out[b] = sum_{k in bag b} v[i_k] * w_k * E[i_k]        (/ |bag b| with mean pooling)
    dE[i_k] += v[i_k] * w_k * dout[b]                        (the table's usual job)
    dv[i_k] += w_k * dout[b] . E[i_k]                        (/ |bag b| with mean)

w_k: the batch's own per-sample weights (1 when none). v is stored as an (n, 1)
EmbeddingTable, so its gradient is sparse (the touched rows) and goes through the fused
optimizers, one occurrence per "bag": the reference's dense gradient of v is zero on the
untouched rows, where its SGD and Adagrad change nothing either.

`--weighted-pooling fixed` is weights of one, not trained: exactly the plain table.
"""
import numpy as np

from .embedding import SparseJob


class WeightedBag:
    """table: (n, D) EmbeddingTable; pooling: its (n, 1) EmbeddingTable of row weights."""

    def __init__(self, table, pooling):
        self.table, self.pooling = table, pooling
        self.tables = [table, pooling]
        self._ctx = None

    def forward(self, out, indices, offsets, weights, mean):
        """out: (B, D), may be strided; indices: (nnz,); offsets: (B + 1,);
        weights: None or (nnz,), the batch's own per-sample weights."""
        v = self.pooling.weight[indices, 0]  # (nnz,) a copy: the weights of the forward
        scaled = v if weights is None else v * np.asarray(weights, v.dtype)
        self.table.lookup(out, indices, offsets, scaled, mean)
        self._ctx = (indices, offsets, weights, scaled, mean)

    def backward(self, dout):
        """dout: (B, D), may be strided. Returns the SparseJobs of the table and of v."""
        indices, offsets, weights, scaled, mean = self._ctx
        E = self.table.weight
        lengths = np.diff(offsets)
        bag = np.repeat(np.arange(lengths.size), lengths)  # (nnz,) bag of each occurrence
        s = np.einsum("kd,kd->k", np.asarray(dout, E.dtype)[bag], E[indices])  # (nnz,)
        if weights is not None:
            s *= np.asarray(weights, E.dtype)
        if mean:
            s /= lengths[bag].astype(E.dtype)
        ones = np.arange(indices.shape[0] + 1, dtype=np.int64)  # one occurrence per bag
        return [SparseJob(self.table, dout, indices, offsets, scaled, mean),
                SparseJob(self.pooling, s[:, None], indices, ones, None, False)]

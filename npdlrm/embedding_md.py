"""Mixed-dimension embeddings (Ginart et al. 2019), as the reference's PrEmbeddingBag:
a table of width d < D (`embedding_layout.md_solver`) pooled as usual, then projected to
D by a dense (D, d) matrix P without bias, as torch's nn.Linear(d, D, bias=False):

    forward:  e = pool(table)  (B, d);   out = e @ P.T  (B, D)
    backward: dP += dout.T @ e  (D, d);  de = dout @ P  (B, d) -> the table's sparse job

P lives in the model's FlatParams (the dense optimizer and the distributed allreduce see
it like an MLP weight); its gradient must be added before the dense update, with P's
values of the forward: the model runs this backward before either update.
"""
import numpy as np

from .embedding import SparseJob


class MDBag:
    """table: (n, d) EmbeddingTable; projection, projection_grad: (D, d) views into the
    model's FlatParams data and grad."""

    def __init__(self, table, projection, projection_grad):
        self.table, self.P, self.dP = table, projection, projection_grad
        self.tables = [table]
        self._ctx = None

    def forward(self, out, indices, offsets, weights, mean):
        """out: (B, D), may be strided; indices: (nnz,); offsets: (B + 1,)."""
        e = np.empty((out.shape[0], self.table.dim), self.table.weight.dtype)  # (B, d)
        self.table.lookup(e, indices, offsets, weights, mean)
        out[...] = e @ self.P.T
        self._ctx = (e, indices, offsets, weights, mean)

    def backward(self, dout):
        """dout: (B, D), may be strided. Adds dP; returns the table's SparseJob."""
        e, indices, offsets, weights, mean = self._ctx
        self.dP += dout.T @ e
        de = dout @ self.P  # (B, d)
        return [SparseJob(self.table, de, indices, offsets, weights, mean)]

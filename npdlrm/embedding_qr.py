"""Quotient-remainder embeddings (Shi et al. 2019), as the reference's QREmbeddingBag.

Row i of a table of n rows is composed from row i // c of a quotient table
(ceil(n / c), D) and row i % c of a remainder table (c, D). Each of the two is pooled
over the bag like a plain table (same offsets, per-sample weights and sum/mean), then
the pooled vectors are combined:

    mult:   out = q * r          dq = dout * r        dr = dout * q
    add:    out = q + r          dq = dout            dr = dout
    concat: out = [q, r] (2D)    dq = dout[:, :D]     dr = dout[:, D:]

The quotient and remainder are exact integer division (the reference divides in float32
first, which can be off by one for ids of 2**24 and more). Both tables' gradients are
sparse and go through the fused optimizers.
"""
import numpy as np

from .embedding import SparseJob


class QRBag:
    """One QR table: `quotient` (ceil(n / c), D) and `remainder` (c, D) EmbeddingTables."""

    def __init__(self, quotient, remainder, collisions, operation):
        self.quotient, self.remainder = quotient, remainder
        self.c, self.operation = int(collisions), operation
        self.tables = [quotient, remainder]
        self._ctx = None

    def split(self, indices):
        """indices: (nnz,) -> (quotient ids, remainder ids), each (nnz,) int64."""
        idx = np.asarray(indices, dtype=np.int64)
        return idx // self.c, idx % self.c

    def forward(self, out, indices, offsets, weights, mean):
        """out: (B, D) or (B, 2D) with concat, may be strided; indices: (nnz,);
        offsets: (B + 1,); weights: None or (nnz,). Keeps what backward needs."""
        iq, ir = self.split(indices)
        B, D = out.shape[0], self.quotient.dim
        if self.operation == "concat":
            q, r = out[:, :D], out[:, D:]
            self.quotient.lookup(q, iq, offsets, weights, mean)
            self.remainder.lookup(r, ir, offsets, weights, mean)
        else:
            q = np.empty((B, D), self.quotient.weight.dtype)  # (B, D) pooled quotient rows
            r = np.empty((B, D), self.remainder.weight.dtype)  # (B, D) pooled remainder rows
            self.quotient.lookup(q, iq, offsets, weights, mean)
            self.remainder.lookup(r, ir, offsets, weights, mean)
            if self.operation == "mult":
                np.multiply(q, r, out=out)
            else:
                np.add(q, r, out=out)
        keep = (q, r) if self.operation == "mult" else (None, None)
        self._ctx = (iq, ir, offsets, weights, mean) + keep

    def backward(self, dout):
        """dout: (B, D) or (B, 2D). Returns the SparseJobs of the two tables."""
        iq, ir, offsets, weights, mean, q, r = self._ctx
        D = self.quotient.dim
        if self.operation == "mult":
            dq, dr = dout * r, dout * q  # (B, D) each
        elif self.operation == "add":
            dq = dr = dout
        else:
            dq, dr = dout[:, :D], dout[:, D:]
        return [SparseJob(self.quotient, dq, iq, offsets, weights, mean),
                SparseJob(self.remainder, dr, ir, offsets, weights, mean)]

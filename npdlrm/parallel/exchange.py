"""The all-to-all of pooled embeddings (forward) and of their gradients (backward).

Rank s owns the exchanged shards `plan.exchanged_of(s)`; for the global batch (B) it
pools them into P_s: (B, W_s), the shards side by side (W_s: their widths summed).
Rank r owns samples [lo_r, hi_r) (`rank_bounds`), so s sends rows [lo_r, hi_r) of P_s,
a contiguous (b_r, W_s) block, to r; r adds each block into its interaction input T
at the shards' columns (row shards are partial sums: adding them gives the pooled bag).
Backward is the reverse: r sends dT at the same columns, s stacks the blocks into
dP_s: (B, W_s) and runs the fused update of each shard on its columns.
"""
import numpy as np

from ..data.loader import rank_bounds
from .shard_ops import row_bags, row_square_sums, update_rows


class PooledExchange:
    """The exchange of one rank; `tables`: this rank's EmbeddingTable shards, matched to
    the plan's shards by (table, rows, cols)."""

    def __init__(self, plan, comm, tables, num_features, dtype, wire_dtype=None,
                 column_groups=None, mean=False):
        self.plan, self.comm, self.mean = plan, comm, bool(mean)
        self.F, self.D = int(num_features), plan.dim
        self.dtype = np.dtype(dtype)
        self.wire = np.dtype(wire_dtype or dtype)
        by_key = {(t.table_id, t.rows, t.cols): t for t in tables}
        self.pieces = []  # (table k, EmbeddingTable, kind, column lo, hi in P)
        w = 0
        for k, shard, kind in plan.exchanged_of(comm.rank):
            d = shard.cols[1] - shard.cols[0]
            self.pieces.append((k, by_key[(k, shard.rows, shard.cols)], kind, w, w + d))
            w += d
        self.column_groups = column_groups or {}
        # where rank s's block (b, W_s) goes in T.reshape(b, F * D): runs of columns
        # (block lo, block hi, T lo, add?); row shards' partial sums are added
        self.runs, self.widths = [], plan.exchanged_widths()
        for s in range(comm.size):
            runs, w = [], 0
            for k, sh, kind in plan.exchanged_of(s):
                t0 = (1 + k) * self.D + sh.cols[0]
                d = sh.cols[1] - sh.cols[0]
                add = kind == "row"
                if runs and runs[-1][1] == w and runs[-1][2] + (w - runs[-1][0]) == t0 \
                        and runs[-1][3] == add:
                    runs[-1] = (runs[-1][0], w + d, runs[-1][2], add)
                else:
                    runs.append((w, w + d, t0, add))
                w += d
            self.runs.append(runs)
        self.summed = sorted({(1 + p.table) * self.D for p in plan.placements
                              if p.kind == "row"})  # T columns of row-placed tables
        self._B = None
        self._bags = None  # per piece: the (indices, offsets, weights, mean) it pooled

    @property
    def width(self):
        """W of this rank: the summed widths of its exchanged shards."""
        return self.widths[self.comm.rank]

    # ---- layout of one batch size ----------------------------------------------------
    def _layout(self, B):
        if B == self._B:
            return
        size, me = self.comm.size, self.comm.rank
        bounds = [rank_bounds(B, r, size) for r in range(size)]
        b_me = bounds[me][1] - bounds[me][0]
        W = self.width
        # forward: I send rows of my P to every r; I receive my rows of every P_s
        self.fw_send = (np.array([(hi - lo) * W for lo, hi in bounds], np.int64),
                        np.array([lo * W for lo, _ in bounds], np.int64))
        counts = np.array([b_me * w for w in self.widths], np.int64)
        self.fw_recv = (counts, np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
        self.bw_send, self.bw_recv = self.fw_recv, self.fw_send  # the reverse exchange
        self.P = np.empty((B, W), self.dtype)
        self.P_wire = self.P if self.wire == self.dtype else np.empty((B, W), self.wire)
        self.recv = np.empty(int(counts.sum()), self.wire)
        self.dP = np.empty((B, W), self.wire)
        self.b_me, self._B = b_me, B

    def sent_bytes(self):
        """Bytes this rank sends to other ranks per step for the last batch size:
        {'forward': ..., 'backward': ...} (its own block is a local copy, not counted)."""
        me, item = self.comm.rank, self.wire.itemsize
        fw = int(self.fw_send[0].sum() - self.fw_send[0][me]) * item
        bw = int(self.bw_send[0].sum() - self.bw_send[0][me]) * item
        return {"forward": fw, "backward": bw}

    # ---- forward -----------------------------------------------------------------------
    def _bags_of(self, batch, k, table, kind):
        idx, off, w = batch.indices[k], batch.offsets[k], batch.weights_of(k)
        if kind != "row":
            return idx, off, w, self.mean
        local, loff, lw = row_bags(idx, off, w, self.mean, table.row_start,
                                   table.row_start + table.num_rows, self.dtype)
        return local, loff, lw, False

    def start_forward(self, batch):
        """Pool this rank's shards for the global `batch` and post the exchange."""
        self._layout(batch.size)
        self._bags = []
        for k, table, kind, c0, c1 in self.pieces:
            idx, off, w, m = self._bags_of(batch, k, table, kind)
            table.lookup(self.P[:, c0:c1], idx, off, w, m)
            self._bags.append((idx, off, w, m))
        if self.P_wire is not self.P:
            self.P_wire[...] = self.P
        return self.comm.ialltoallv(self.P_wire, *self.fw_send, self.recv, *self.fw_recv)

    def _blocks(self, T):
        """(T as (b, F * D), [(rank s, its (b, W_s) block of the receive buffer)])."""
        flat = T.reshape(T.shape[0], T.shape[1] * T.shape[2])
        b, start, out = self.b_me, 0, []
        for s in range(self.comm.size):
            n = b * self.widths[s]
            out.append((s, self.recv[start:start + n].reshape(b, self.widths[s])))
            start += n
        return flat, out

    def finish_forward(self, T):
        """After the forward exchange completed: write the received blocks into T:
        (b, F, D) (row shards' partial sums added, in rank order)."""
        flat, blocks = self._blocks(T)
        for c in self.summed:
            flat[:, c:c + self.D] = 0
        for s, block in blocks:
            for lo, hi, t0, add in self.runs[s]:
                if add:
                    flat[:, t0:t0 + hi - lo] += block[:, lo:hi]
                else:
                    flat[:, t0:t0 + hi - lo] = block[:, lo:hi]

    # ---- backward ------------------------------------------------------------------------
    def start_backward(self, dT):
        """Post the reverse exchange of dT: (b, F, D)'s exchanged columns."""
        flat, blocks = self._blocks(dT)
        for s, block in blocks:
            for lo, hi, t0, _ in self.runs[s]:
                block[:, lo:hi] = flat[:, t0:t0 + hi - lo]
        return self.comm.ialltoallv(self.recv, *self.bw_send, self.dP, *self.bw_recv)

    def update(self, optimizer, lr):
        """After the backward exchange completed: each shard's fused backward + optimizer
        on its columns of dP: (B, W)."""
        dP = self.dP if self.wire == self.dtype else self.dP.astype(self.dtype)
        kind, eps = optimizer.sparse, optimizer.eps
        for (k, table, pkind, c0, c1), (idx, off, w, m) in zip(self.pieces, self._bags):
            group = self.column_groups.get(k)
            if pkind == "column" and kind == "rwsadagrad" and group is not None:
                self._column_rowwise(table, group, dP[:, c0:c1], idx, off, w, m, lr, eps)
            else:
                table.update(kind, lr, eps, dP[:, c0:c1], idx, off, w, m)
        self._bags = None

    def _column_rowwise(self, table, group, dout, idx, off, w, mean, lr, eps):
        """Row-wise Adagrad on a column shard: the per-row sum of g^2 over all columns is
        reduced across the table's column group, then each shard updates its columns."""
        table.ensure_state("rwsadagrad")
        g = table.grad(dout, idx, off, w, mean)
        sums = row_square_sums(g.values) if g.rows.size else np.zeros(0, table.weight.dtype)
        group.allreduce(sums)
        if g.rows.size:
            update_rows("rwsadagrad", table.weight, table.state, g.rows, g.values, lr, eps,
                        square_sums=sums, full_dim=table.full_shape[1])

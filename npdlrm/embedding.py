"""Embedding tables with sum/mean bag pooling and sparse (touched-rows) gradients."""
from typing import NamedTuple

import numpy as np

from . import backend
from .backend import get_array_module


class SparseGrad:
    """Gradient of one table: rows (U,) sorted unique ids, values (U, D)."""

    def __init__(self, rows, values, num_rows):
        self.rows, self.values, self.num_rows = rows, values, num_rows

    @property
    def shape(self):
        return (self.num_rows, self.values.shape[1])

    def to_dense(self):
        """The (V, D) dense equivalent (small tables and tests only)."""
        dense = get_array_module(self.values).zeros(self.shape, dtype=self.values.dtype)
        dense[self.rows] = self.values
        return dense

    def __repr__(self):
        return f"SparseGrad(rows={self.rows.size} of {self.num_rows}, dim={self.values.shape[1]})"


class SparseJob(NamedTuple):
    """What one stored table's sparse gradient (and fused update) needs: its bags and the
    gradient of their pooled vectors. dout: (B, D), may be strided; indices: (nnz,);
    offsets: (B + 1,); weights: None or (nnz,); mean: bool."""
    table: "EmbeddingTable"
    dout: np.ndarray
    indices: np.ndarray
    offsets: np.ndarray
    weights: object
    mean: bool

    def grad(self):
        return self.table.grad(self.dout, self.indices, self.offsets, self.weights, self.mean)

    def update(self, kind, lr, eps):
        self.table.update(kind, lr, eps, self.dout, self.indices, self.offsets,
                          self.weights, self.mean)

    def detach(self):
        """A copy that owns its arrays (a job's dout is often a view of a reused buffer)."""
        xp = get_array_module(self.dout)
        return self._replace(dout=xp.array(self.dout), indices=xp.array(self.indices),
                             offsets=xp.array(self.offsets),
                             weights=None if self.weights is None else xp.array(self.weights))


def join_jobs(windows, scale=None):
    """One SparseJob per table from the jobs of several batches: `windows` is a list of
    job lists in the same table order (e.g. DLRM.embedding_backward's of each batch of a
    gradient-accumulation window). Douts are stacked (times `scale` when given), bags
    joined with shifted offsets. A job's dout is often a view of a buffer the next batch
    reuses: keep `job.detach()`ed jobs until they are joined. The joined job's gradient
    is the sum of the batches' gradients."""
    out = []
    for jobs in zip(*windows):
        first = jobs[0]
        xp = get_array_module(first.dout)
        if any(j.table is not first.table or j.mean != first.mean
               or (j.weights is None) != (first.weights is None) for j in jobs):
            raise ValueError("join_jobs: the batches' jobs must be of the same tables, "
                             "pooling and weighting, in the same order")
        dout = xp.concatenate([j.dout for j in jobs])
        if scale is not None:
            dout *= dout.dtype.type(scale)
        shifts = np.cumsum([0] + [j.indices.shape[0] for j in jobs[:-1]])
        end = xp.asarray([sum(j.indices.shape[0] for j in jobs)], dtype=np.int64)
        offsets = xp.concatenate([j.offsets[:-1] + int(s) for j, s in zip(jobs, shifts)]
                                 + [end])
        weights = None if first.weights is None else xp.concatenate([j.weights for j in jobs])
        out.append(SparseJob(first.table, dout, xp.concatenate([j.indices for j in jobs]),
                             offsets.astype(np.int64), weights, first.mean))
    return out


def densify(grads):
    """Dict of gradients with every SparseGrad replaced by its dense array."""
    return {k: g.to_dense() if isinstance(g, SparseGrad) else g for k, g in grads.items()}


class EmbeddingTable:
    """One table, or one shard of it: weights, optimizer state and kernels together.

    A shard holds rows [row_start, row_start + num_rows) and columns
    [col_start, col_start + dim) of a (full_rows, full_dim) table; lookups take
    shard-local row ids.
    """

    def __init__(self, num_rows, dim, dtype, row_start=0, col_start=0, full_shape=None,
                 table_id=0, name=None):
        self.weight = np.empty((num_rows, dim), dtype=dtype)  # (V, D)
        self.name = name or f"embeddings.{table_id}.weight"  # its state-dict name
        self.row_start, self.col_start = int(row_start), int(col_start)
        self.full_shape = tuple(int(v) for v in full_shape) if full_shape else (num_rows, dim)
        self.table_id = int(table_id)
        V, D = self.full_shape
        if not (0 <= self.row_start and self.row_start + num_rows <= V
                and 0 <= self.col_start and self.col_start + dim <= D):
            raise ValueError(f"shard rows [{row_start}, {row_start + num_rows}) x columns "
                             f"[{col_start}, {col_start + dim}) do not fit table "
                             f"{table_id} of shape {self.full_shape}")
        self.state = None  # optimizer accumulator: (V, D) adagrad, (V,) row-wise
        self.state_kind = None
        # makes zeroed state arrays, np.zeros's signature (mmap_tables: in a mapped file;
        # cupy.zeros on the GPU)
        self.new_state = np.zeros

    def to(self, xp, move):
        """Move the weights and optimizer state with `move` (array -> array on xp's
        device); a table in a memory-mapped file stays on the CPU. A table already on
        xp's device is left as it is."""
        if (backend.device_of(self.weight) == "cpu") == (xp is np):
            return
        if xp is not np and (isinstance(self.weight, np.memmap) or self.new_state is not np.zeros):
            raise ValueError(f"{self.name}: a memory-mapped table cannot move to the GPU")
        self.weight = move(self.weight)
        self.state = None if self.state is None else move(self.state)
        self.new_state = xp.zeros

    @property
    def num_rows(self):
        return self.weight.shape[0]

    @property
    def dim(self):
        return self.weight.shape[1]

    @property
    def rows(self):
        """(start, stop) of the full table's rows this shard holds."""
        return self.row_start, self.row_start + self.num_rows

    @property
    def cols(self):
        """(start, stop) of the full table's columns this shard holds."""
        return self.col_start, self.col_start + self.dim

    @property
    def is_whole(self):
        return self.weight.shape == self.full_shape

    def state_shape(self, kind):
        """Shape of optimizer `kind`'s state for this table (None: no state)."""
        return {"sgd": None, "adagrad": self.weight.shape,
                "rwsadagrad": (self.num_rows,)}[kind]

    def lookup(self, out, indices, offsets, per_sample_weights=None, mean=False):
        """out: (B, D), may be a strided view; indices: (nnz,); offsets: (B+1,)."""
        backend.kernels(self.weight).embedding_bag_forward(
            out, self.weight, indices, offsets, per_sample_weights, mean)

    def grad(self, dout, indices, offsets, per_sample_weights=None, mean=False):
        """dout: (B, D), may be a strided view; returns the SparseGrad of this table."""
        rows, values = backend.kernels(self.weight).embedding_bag_grad(
            dout, indices, offsets, per_sample_weights, mean, self.num_rows)
        return SparseGrad(rows, values, self.num_rows)

    def ensure_state(self, kind):
        """Allocate (zeroed) optimizer state for kind, keeping existing state of that kind."""
        if kind == self.state_kind:
            return
        if kind not in ("sgd", "adagrad", "rwsadagrad"):
            raise ValueError(f"sparse optimizer must be sgd, adagrad or rwsadagrad, got {kind!r}")
        shape = self.state_shape(kind)
        self.state = None  # free the old state first
        self.state = None if shape is None else self.new_state(shape, dtype=self.weight.dtype)
        self.state_kind = kind

    def update(self, kind, lr, eps, dout, indices, offsets, per_sample_weights=None, mean=False):
        """Fused backward + optimizer on the touched rows; dout: (B, D), may be strided."""
        self.ensure_state(kind)
        k = backend.kernels(self.weight)
        if kind == "sgd":
            k.embedding_sgd_update(self.weight, dout, indices, offsets, per_sample_weights,
                                   mean, lr)
        elif kind == "adagrad":
            k.embedding_adagrad_update(self.weight, self.state, dout, indices, offsets,
                                       per_sample_weights, mean, lr, eps)
        else:
            k.embedding_rowwise_adagrad_update(self.weight, self.state, dout, indices,
                                               offsets, per_sample_weights, mean, lr, eps)


class EmbeddingBagCollection:
    """T tables of width D, one bag per sample per table.

    shards: None (every table whole), or [(table, (row0, row1), (col0, col1))]: the
    pieces of the tables this process holds (a distributed model's local part). The
    batch-level forward/grads/update need whole tables.
    """

    def __init__(self, table_sizes, dim, dtype, pooling="sum", shards=None):
        self.table_sizes, self.dim, self.mean = tuple(table_sizes), dim, pooling == "mean"
        if shards is None:
            shards = [(k, (0, v), (0, dim)) for k, v in enumerate(self.table_sizes)]
        self.tables = [EmbeddingTable(r1 - r0, c1 - c0, dtype, r0, c0,
                                      (self.table_sizes[k], dim), table_id=k)
                       for k, (r0, r1), (c0, c1) in shards]
        self.whole = (len(self.tables) == len(self.table_sizes) and all(
            t.is_whole and t.table_id == k for k, t in enumerate(self.tables)))

    def __len__(self):
        return len(self.tables)

    @property
    def names(self):
        """The state-dict name of each of self.tables (a shard: its index in the list)."""
        if self.whole:
            return [t.name for t in self.tables]
        return [f"embeddings.{i}.weight" for i in range(len(self.tables))]

    def init_targets(self):
        """What `init.initialize` fills from the reference's stream, in its order: per
        table, ((V, D), the shards of it held here)."""
        return [((v, self.dim), self.shards_of(k)) for k, v in enumerate(self.table_sizes)]

    def shards_of(self, k):
        """The pieces of table k held here (possibly none)."""
        return [t for t in self.tables if t.table_id == k]

    def _check_whole(self):
        if not self.whole:
            raise RuntimeError("this collection holds shards of the tables: batch-level "
                               "lookups run through the distributed model")

    def forward(self, out, batch):
        """out: (B, T, D), e.g. a view of the interaction input; filled with pooled bags
        (all tables in one kernel call when the batch's bags are packed: a GPU batch)."""
        self._check_whole()
        if batch.packed is not None:
            p = batch.packed
            backend.kernels(out).embedding_bags_forward(
                out, [t.weight for t in self.tables], p.indices, p.offsets, p.weights, self.mean)
            return
        for k, table in enumerate(self.tables):
            table.lookup(out[:, k, :], batch.indices[k], batch.offsets[k],
                         batch.weights_of(k), self.mean)

    def grads(self, dout, batch):
        """dout: (B, T, D); returns one SparseGrad per table."""
        self._check_whole()
        return [table.grad(dout[:, k, :], batch.indices[k], batch.offsets[k],
                           batch.weights_of(k), self.mean)
                for k, table in enumerate(self.tables)]

    def update(self, kind, lr, eps, dout, batch):
        """dout: (B, T, D), may be a view; fused sparse update of every table (in one
        kernel call when the batch's bags are packed)."""
        self._check_whole()
        if batch.packed is not None:
            for t in self.tables:
                t.ensure_state(kind)
            p = batch.packed
            backend.kernels(dout).embedding_bags_update(
                kind, [t.weight for t in self.tables], [t.state for t in self.tables], dout,
                p.indices, p.offsets, p.weights, self.mean, lr, eps)
            return
        for k, table in enumerate(self.tables):
            table.update(kind, lr, eps, dout[:, k, :], batch.indices[k], batch.offsets[k],
                         batch.weights_of(k), self.mean)

    def backward(self, dout, batch):
        """dout: (B, T, D), may be a view. The tables' backward up to their sparse
        gradients (plain tables have nothing to do); returns one SparseJob per table."""
        self._check_whole()
        return [SparseJob(table, dout[:, k, :], batch.indices[k], batch.offsets[k],
                          batch.weights_of(k), self.mean)
                for k, table in enumerate(self.tables)]

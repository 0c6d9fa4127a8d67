"""DistributedDLRM: data-parallel MLPs, sharded embedding tables, exact at any world size.

Every rank is handed the same global batch (B samples). Rank r computes the MLPs of its
samples [lo_r, hi_r) (`rank_bounds`); the owners of the tables pool the bags of the whole
batch and the pooled vectors reach the samples' owners through an all-to-all that runs
while the bottom MLP does (`exchange.py`). The loss is the global batch's mean, so the
reduced gradients are those of one process training on the whole batch.

One step: check the global batch (every rank, so every rank refuses the same batches)
-> pool + post the forward exchange -> bottom MLP, replicated-table lookups -> add the
received vectors into T -> interaction, top MLP, loss share -> dense backward -> post
the reverse exchange, replicated-table gradients, post one allreduce of the flat buffer
[MLP gradients | replicated tables' gradients] -> wait -> global loss finite? -> dense
update, replicated-table update, fused update of the owned shards.
"""
import hashlib
import time

import numpy as np

from ..data.loader import rank_bounds
from ..loss import check_loss
from ..model import DLRM
from .agree import agree, attempt
from .exchange import PooledExchange
from .plan import refuse_unshardable
from .shard_ops import update_rows

TIMERS = ("compute", "alltoall", "allreduce")


class DistributedDLRM:
    """The local part of a DLRM trained over `comm` (a parallel.comm.Comm or LocalComm)
    with tables placed by `plan` (a ShardingPlan of comm.size ranks).

    alltoall_dtype: 'float16' halves the exchanged bytes (not exact); check_every: every
    that many steps, check that the replicated parameters are identical on every rank.
    """

    def __init__(self, config, comm, plan, seed=123, init="reference", alltoall_dtype=None,
                 check_every=0):
        refuse_unshardable(config)
        if plan.world_size != comm.size:
            raise ValueError(f"the plan is for {plan.world_size} ranks, the communicator has "
                             f"{comm.size}")
        if tuple(plan.table_sizes) != tuple(config.table_sizes) or \
                plan.dim != config.embedding_dim:
            raise ValueError("the plan was made for other table sizes or another width")
        self.config, self.comm, self.plan = config, comm, plan
        self.rank, self.size = comm.rank, comm.size
        shards = [(k, s.rows, s.cols) for k, s in plan.shards_of(comm.rank)]
        self.local = DLRM(config, seed=seed, init=init, shards=shards)
        params = self.local.params
        self.replicated = {k: self.local.embeddings.shards_of(k)[0] for k in plan.replicated}
        rep_size = sum(t.weight.size for t in self.replicated.values())
        # one buffer, one allreduce: [MLP gradients | replicated tables' gradients]
        self.grad_buffer = np.zeros(params.size + rep_size, params.dtype)
        params.use_grad_buffer(self.grad_buffer[:params.size])
        self.rep_grads, start = {}, params.size
        for k, t in self.replicated.items():
            self.rep_grads[k] = self.grad_buffer[start:start + t.weight.size].reshape(
                t.weight.shape)
            start += t.weight.size
        groups = {}
        self.column_groups = {}
        for p in plan.placements:  # collective: every rank splits in the same order
            if p.kind == "column" and len(p.ranks) > 1:
                if p.ranks not in groups:
                    groups[p.ranks] = comm.split(p.ranks)
                if groups[p.ranks] is not None:
                    self.column_groups[p.table] = groups[p.ranks]
        self.mean = config.pooling == "mean"
        self.exchange = PooledExchange(plan, comm, self.local.embeddings.tables,
                                       config.num_features, params.dtype, alltoall_dtype,
                                       self.column_groups, self.mean)
        self.loss_buffer = np.zeros(1, np.float64)
        self.check_every, self.steps = int(check_every), 0
        self.timers = dict.fromkeys(TIMERS, 0.0)

    # ---- the parts of the batch this rank needs ----------------------------------------
    @property
    def tables_needed(self):
        """The tables whose bags this rank needs from each global batch (those it holds a
        shard of, replicated ones included); a loader may read only these."""
        return sorted({t.table_id for t in self.local.embeddings.tables})

    def check_batch(self, dense, indices, offsets, labels=None, per_sample_weights=None,
                    need_labels=False):
        """The checked global batch. Tables this rank does not need may be None (its
        loader may read only `tables_needed`), so the ranks may have seen different parts
        of the batch: they agree (one small allreduce), and when one rank refuses the
        batch every rank raises, before any change."""
        partial = isinstance(indices, (list, tuple)) and any(i is None for i in indices)

        def check():
            missing = [k for k in self.tables_needed if partial and indices[k] is None]
            if missing:
                raise ValueError(f"rank {self.rank} holds tables {missing}, the batch has no "
                                 f"indices for them")
            return self.local.check_batch(dense, indices, offsets, labels,
                                          per_sample_weights, need_labels, allow_missing=True)
        batch, error = attempt(check)
        if self.comm.any(error is not None):
            agree(self.comm, error)  # raises on every rank
        return batch

    def _mine(self, batch):
        """(lo, hi) of this rank's samples in the global batch."""
        return rank_bounds(batch.size, self.rank, self.size)

    def _replicated_bags(self, batch, k, lo, hi):
        off = batch.offsets[k]
        a, b = int(off[lo]), int(off[hi])
        w = batch.weights_of(k)
        return batch.indices[k][a:b], off[lo:hi + 1] - a, None if w is None else w[a:b]

    def _forward(self, batch, keep):
        """Logits (b,) of this rank's samples, the exchange left ready for backward."""
        lo, hi = self._mine(batch)
        T = self.local.interaction_input(hi - lo)
        t0 = time.perf_counter()
        request = self.exchange.start_forward(batch)
        self.local.bottom_forward(batch.dense[lo:hi], T, keep)
        for k, table in self.replicated.items():
            idx, off, w = self._replicated_bags(batch, k, lo, hi)
            table.lookup(T[:, 1 + k, :], idx, off, w, self.mean)
        t1 = time.perf_counter()
        request.Wait()
        t2 = time.perf_counter()
        self.exchange.finish_forward(T)
        logits = self.local.top_forward(T, keep)
        self._tick(compute=t1 - t0 + time.perf_counter() - t2, alltoall=t2 - t1)
        return logits

    def _tick(self, **seconds):
        for key, value in seconds.items():
            self.timers[key] += value

    # ---- public API ------------------------------------------------------------------
    def train_step(self, dense, indices, offsets, labels, optimizer, per_sample_weights=None):
        """One step on the global batch (the same on every rank); returns its mean loss.

        A refused batch (ValueError) or a non-finite loss (FloatingPointError) changes
        nothing, on every rank."""
        local = self.local
        batch = self.check_batch(dense, indices, offsets, labels, per_sample_weights, True)
        optimizer.bind(local)
        lr = optimizer.lr
        lo, hi = self._mine(batch)
        self.grad_buffer.fill(0)
        logits = self._forward(batch, keep=True)
        t0 = time.perf_counter()
        share, dz = local.loss(logits, batch.labels[lo:hi], count=batch.size)
        self.loss_buffer[0] = share
        loss_request = self.comm.iallreduce(self.loss_buffer)
        dT = local.dense_backward(dz)
        back = self.exchange.start_backward(dT)
        for k, table in self.replicated.items():
            idx, off, w = self._replicated_bags(batch, k, lo, hi)
            g = table.grad(dT[:, 1 + k, :], idx, off, w, self.mean)
            self.rep_grads[k][g.rows] += g.values
        reduce_request = self.comm.iallreduce(self.grad_buffer)
        t1 = time.perf_counter()
        back.Wait()
        t2 = time.perf_counter()
        reduce_request.Wait()
        loss_request.Wait()
        t3 = time.perf_counter()
        loss = float(self.loss_buffer[0])
        check_loss(loss, self.local.state_dict)  # every rank: all refuse, nothing changed
        optimizer.step_dense(local.params, lr)
        for k, table in self.replicated.items():
            G = self.rep_grads[k]
            rows = np.flatnonzero(G.any(axis=1))
            table.ensure_state(optimizer.sparse)
            update_rows(optimizer.sparse, table.weight, table.state, rows, G[rows], lr,
                        optimizer.eps)
        self.exchange.update(optimizer, lr)
        optimizer.finish_step()
        self._tick(compute=t1 - t0 + time.perf_counter() - t3, alltoall=t2 - t1,
                   allreduce=t3 - t2)
        self.steps += 1
        if self.check_every and self.steps % self.check_every == 0:
            self.check_replicas()
        return loss

    def predict(self, dense, indices, offsets, per_sample_weights=None):
        """Click probabilities (B,) of the global batch, on every rank."""
        local = self.local
        batch = self.check_batch(dense, indices, offsets, per_sample_weights=per_sample_weights)
        p = local.probabilities(self._forward(batch, keep=False))
        bounds = [rank_bounds(batch.size, r, self.size) for r in range(self.size)]
        out = np.empty(batch.size, p.dtype)
        self.comm.allgatherv(np.ascontiguousarray(p), out,
                             np.array([hi - lo for lo, hi in bounds], np.int64),
                             np.array([lo for lo, _ in bounds], np.int64))
        return out

    forward = predict

    def check_replicas(self):
        """Raise RuntimeError unless the replicated parameters (MLPs, replicated tables)
        are bitwise identical on every rank."""
        arrays = [self.local.params.data] + [t.weight for t in self.replicated.values()]
        mine = [hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() for a in arrays]
        everyone = self.comm.allgather_obj(mine)
        bad = [r for r, d in enumerate(everyone) if d != everyone[0]]
        if bad:
            raise RuntimeError(f"replicated parameters differ between rank 0 and ranks {bad} "
                               f"at step {self.steps}")

    def reset_timers(self):
        self.timers = dict.fromkeys(TIMERS, 0.0)

    def num_parameters(self):
        return self.local.params.size + sum(v * self.config.embedding_dim
                                            for v in self.config.table_sizes)

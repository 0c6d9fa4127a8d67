"""The embedding bags of a model with QR, MD or learned-weight tables (one process).

Each table is a bag object with forward (pool into its slot of T, keeping what its
backward needs) and backward (dense parts, then one SparseJob per stored table): a
PlainBag, QRBag (`embedding_qr.py`), MDBag (`embedding_md.py`) or WeightedBag
(`embedding_weighted.py`), as `embedding_layout.table_specs` says. `tables` lists every
stored EmbeddingTable in `embedding_layout.stored_tables` order, so state dicts,
optimizer state and checkpoints treat them as they treat plain tables.
"""
from .embedding import EmbeddingTable, SparseJob
from .embedding_layout import table_specs
from .embedding_md import MDBag
from .embedding_qr import QRBag
from .embedding_weighted import WeightedBag
from .init import initialize_variants


class PlainBag:
    def __init__(self, table):
        self.table, self.tables = table, [table]
        self._ctx = None

    def forward(self, out, indices, offsets, weights, mean):
        """out: (B, D), may be strided."""
        self.table.lookup(out, indices, offsets, weights, mean)
        self._ctx = (indices, offsets, weights, mean)

    def backward(self, dout):
        return [SparseJob(self.table, dout, *self._ctx)]


class VariantBagCollection:
    """The T tables of `config` (a DLRMConfig with embedding variants); `params`: the
    model's FlatParams, holding the MD projections `embedding_layout.projection_specs`
    names. Tables are whole (the distributed model refuses these variants)."""

    whole = True

    def __init__(self, config, dtype, params):
        self.config = config
        self.table_sizes, self.dim = config.table_sizes, config.embedding_dim
        self.mean = config.pooling == "mean"
        self.specs = table_specs(config)
        self.tables, self.bags = [], []
        for spec in self.specs:
            made = [EmbeddingTable(rows, width, dtype, table_id=len(self.tables) + j,
                                   name=name)
                    for j, (name, (rows, width)) in enumerate(spec.stored)]
            self.tables += made
            if spec.kind == "qr":
                bag = QRBag(made[0], made[1], spec.collisions, spec.operation)
            elif spec.kind == "md":
                name = spec.projection[0]
                bag = MDBag(made[0], params.views[name], params.grads[name])
            elif spec.learned:
                made[1].weight.fill(1)  # the reference's initial weights: ones
                bag = WeightedBag(made[0], made[1])
            else:
                bag = PlainBag(made[0])
            self.bags.append(bag)
        self.params = params
        self._batch = None  # the last forward's: what the bags' contexts belong to

    def __len__(self):
        return len(self.tables)

    @property
    def names(self):
        return [t.name for t in self.tables]

    def init_targets(self):
        """The tables the reference draws from its NumPy stream, in its order: the plain
        and MD tables (QR tables come from torch's stream there, see init.py)."""
        return [bag.table.weight for bag in self.bags if not isinstance(bag, QRBag)]

    def initialize_rest(self, seed, method, qr_init):
        """The QR tables and MD projections, from streams of their own (init.py)."""
        qr = [(spec.rows, bag.quotient.weight, bag.remainder.weight)
              for spec, bag in zip(self.specs, self.bags) if isinstance(bag, QRBag)]
        projections = [bag.P for bag in self.bags if isinstance(bag, MDBag)]
        initialize_variants(qr, projections, seed, method, qr_init)

    def shards_of(self, k):
        return list(self.bags[k].tables)

    def forward(self, out, batch):
        """out: (B, T, W), e.g. a view of the interaction input (W: the pooled width)."""
        self._batch = batch
        for k, bag in enumerate(self.bags):
            bag.forward(out[:, k, :], batch.indices[k], batch.offsets[k],
                        batch.weights_of(k), self.mean)

    def backward(self, dout, batch):
        """dout: (B, T, W). Adds the projections' gradients into the model's FlatParams
        grad; returns one SparseJob per stored table (self.tables order). `batch` must be
        the last forward's (the bags keep what their backward needs): several batches'
        gradients are joined from their own backward's jobs (embedding.join_jobs)."""
        if batch is not self._batch:
            raise ValueError("the backward of QR, MD and learned-weight tables needs the "
                             "batch of the last forward; join several batches' gradients "
                             "with embedding.join_jobs of each batch's jobs")
        return [job for k, bag in enumerate(self.bags) for job in bag.backward(dout[:, k, :])]

    def grads(self, dout, batch):
        return [job.grad() for job in self.backward(dout, batch)]

    def update(self, kind, lr, eps, dout, batch):
        for job in self.backward(dout, batch):
            job.update(kind, lr, eps)


def table_bytes_report(config):
    """{'plain': bytes, 'variant': bytes} of the embedding parameters of `config` without
    and with its variants (tables plus MD projections)."""
    from dataclasses import replace

    from .embedding_layout import embedding_bytes
    plain = replace(config, qr_flag=False, md_flag=False, weighted_pooling=None,
                    bottom_mlp=config.bottom_mlp[:-1] + (config.embedding_dim,))
    return {"plain": embedding_bytes(plain), "variant": embedding_bytes(config)}

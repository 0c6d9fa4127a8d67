"""DLRM: bottom MLP, embedding bags, interaction, top MLP, loss.

A step runs in public stages that a distributed step reuses with its exchanges in
between: check_batch, lookup (pooled bags into T), bottom_forward, top_forward, loss,
dense_backward, embedding_backward (the tables' dense parts: MD projections; one
SparseJob per stored table), then the dense and the sparse (fused, touched rows) updates.
Tables may be plain, quotient-remainder, mixed-dimension or learned-weight
(`embedding_layout.py`, `embedding_variants.py`).
"""
import numpy as np

from . import backend
from .config import DLRMConfig
from .embedding import EmbeddingBagCollection
from .embedding_layout import projection_specs
from .embedding_variants import VariantBagCollection
from .init import initialize
from .inputs import make_batch
from .interaction import make_interaction
from .loss import check_loss, clamp_logits, compute_loss, sigmoid
from .mlp import MLP
from .params import FlatParams
from .workspace import Workspace


class DLRM:
    """A DLRM with its parameters; see `from_arch` for the reference's vocabulary.

    shards: None (every table whole), or the pieces of the tables this process holds,
    [(table, (row0, row1), (col0, col1))]: the local part of a distributed model
    (`npdlrm.parallel`), whose tables are initialised with the whole model's values.
    qr_init: how quotient-remainder tables start (init.qr_bounds): 'symmetric'
    uniform(+-sqrt(1/n)), or 'reference', the reference's uniform(sqrt(1/n), 1).
    device: 'cpu' or 'gpu' (CuPy): where parameters, optimizer state and batches live
    (the model is initialised on the CPU, from the same stream, then moved).
    """

    def __init__(self, config, seed=123, init="reference", shards=None, qr_init="symmetric",
                 device="cpu"):
        self.config = config
        self.device = "cpu"
        device = backend.check_device(device)
        dtype = np.dtype(config.dtype)
        variants = config.has_embedding_variants
        if device == "gpu":
            self.check_gpu_support(shards)
        if variants and shards is not None:
            raise ValueError("quotient-remainder, mixed-dimension and learned-weight tables "
                             "cannot be sharded")
        specs = (MLP.param_specs(config.bottom_mlp, "bottom_mlp")
                 + MLP.param_specs(config.top_sizes, "top_mlp")
                 + (projection_specs(config) if variants else []))
        self.params = FlatParams(specs, dtype)
        self.bottom = MLP(config.bottom_mlp, True, self.params, "bottom_mlp", config.activation)
        self.top = MLP(config.top_sizes, False, self.params, "top_mlp", config.activation)
        if variants:
            self.embeddings = VariantBagCollection(config, dtype, self.params)
        else:
            self.embeddings = EmbeddingBagCollection(config.table_sizes, config.embedding_dim,
                                                     dtype, config.pooling, shards)
        self.interaction = make_interaction(config.interaction, config.num_features,
                                            config.feature_dim, config.self_interaction)
        self.ws = Workspace(dtype)
        self.profile = None  # a profile.StageTimes: per-stage times of train_step
        initialize(self.embeddings.init_targets(), self.bottom.layers(), self.top.layers(),
                   seed, init)
        if variants:
            self.embeddings.initialize_rest(seed, init, qr_init)
        if device != "cpu":
            self.to(device)

    def check_gpu_support(self, shards=None):
        """ValueError naming what the GPU path does not run (yet); RuntimeError with the
        reason when no GPU is usable."""
        if self.config.has_embedding_variants:
            raise ValueError("quotient-remainder, mixed-dimension and learned-weight tables "
                             "run on the CPU only (the GPU path has plain tables)")
        if shards is not None or not getattr(getattr(self, "embeddings", None), "whole", True):
            raise ValueError("a sharded (distributed) model runs on the CPU only")
        backend.cupy_module()  # RuntimeError with the reason when no GPU is usable

    def to(self, device):
        """Move parameters, optimizer state and scratch buffers to `device` ('cpu' or
        'gpu') in place; returns self. Checkpoints do not depend on the device."""
        device = backend.check_device(device)
        if device == self.device:
            return self
        if device == "gpu":
            self.check_gpu_support()
        try:
            self._move(device)
        except BaseException:  # e.g. out of GPU memory: what had moved comes back
            self._move(self.device)
            raise
        self.device = device
        return self

    def _move(self, device):
        """Every array onto `device` (arrays already there stay as they are)."""
        xp = backend.array_module(device)

        def move(a):
            return backend.to_device(a, device)
        self.params.to(xp, move)
        for t in self.embeddings.tables:
            t.to(xp, move)
        dtype = self.params.dtype
        self.ws = Workspace(dtype, xp)
        self.bottom.ws, self.top.ws = Workspace(dtype, xp), Workspace(dtype, xp)
        self.interaction.ws = None

    @property
    def xp(self):
        """numpy, or cupy for a model on the GPU."""
        return self.params.xp
    @classmethod
    def from_arch(cls, arch_mlp_bot, arch_mlp_top, arch_embedding_size, arch_sparse_feature_size,
                  arch_interaction_op="dot", arch_interaction_itself=False, seed=123,
                  init="reference", qr_init="symmetric", device="cpu", **config):
        """Build from the reference's arguments, e.g. arch_mlp_bot="13-512-256-64-16",
        arch_mlp_top="512-256-1" (its input width is derived), arch_embedding_size="1460-583".
        Extra keywords (pooling, loss, loss_weights, dtype, the embedding variants' qr_flag
        etc.) go to DLRMConfig; device: 'cpu' or 'gpu'."""
        cfg = DLRMConfig.from_arch(arch_mlp_bot, arch_mlp_top, arch_embedding_size,
                                   arch_sparse_feature_size, arch_interaction_op,
                                   arch_interaction_itself, **config)
        return cls(cfg, seed=seed, init=init, qr_init=qr_init, device=device)

    # ---- the stages of a step (a distributed step composes the same ones) -----
    def check_batch(self, dense, indices, offsets, labels=None, per_sample_weights=None,
                    need_labels=False, allow_missing=False):
        """A checked `inputs.Batch` on the model's device (checked on the host, then moved),
        or ValueError before anything changes (allow_missing: tables given as None stay
        None)."""
        batch = make_batch(self.config, dense, indices, offsets, labels, per_sample_weights,
                           need_labels, allow_missing)
        return batch.to_device(self.device)

    def interaction_input(self, batch_size):
        """T: (B, F, W), the reused buffer the stages fill: slot 0 bottom, 1 + k table k
        (W: config.feature_dim, D or 2D with quotient-remainder concat)."""
        cfg = self.config
        return self.ws.get("T", (batch_size, cfg.num_features, cfg.feature_dim))

    def lookup(self, batch, T):
        """Pool every table's bags into T[:, 1:]: (B, F - 1, D)."""
        self.embeddings.forward(T[:, 1:, :], batch)

    def bottom_forward(self, dense, T, keep=True):
        """dense: (B, n) -> T[:, 0]: (B, D)."""
        T[:, 0, :] = self.bottom.forward(dense, keep)

    def top_forward(self, T, keep=True):
        """T: (B, F, D) -> logits (B,) through the interaction and the top MLP."""
        R = self.interaction.forward(T, keep)
        self._lap("interaction forward")
        logits = self.top.forward(R, keep)[:, 0]
        self._lap("top MLP forward")
        return logits

    def dense_forward(self, dense, T, keep=True):
        """dense: (B, n); T: (B, F, D) with its tables filled; returns logits (B,)."""
        self.bottom_forward(dense, T, keep)
        self._lap("bottom MLP forward")
        return self.top_forward(T, keep)

    def loss(self, logits, labels, count=None):
        """logits, labels: (b,); count: the samples the mean runs over (default b; a
        distributed step's global batch). Returns (this part's share of the mean loss,
        dlogits: (b,)). The reference's clamp (loss_threshold) is applied first."""
        z, inside = clamp_logits(logits, self.config.loss_threshold)
        loss, dz = compute_loss(self.config.loss, z, labels, self.config.loss_weights, count)
        if inside is not None:
            dz *= inside  # the clamp passes no gradient where it bites
        return loss, dz

    def dense_backward(self, dlogits):
        """dlogits: (B,); adds the MLP grads into self.params.grad; returns dT: (B, F, D)."""
        dR = self.top.backward(dlogits.reshape(-1, 1))
        self._lap("top MLP backward")
        dT = self.interaction.backward(dR)
        self._lap("interaction backward")
        self.bottom.backward(dT[:, 0, :], need_dx=False)
        self._lap("bottom MLP backward")
        return dT

    def embedding_backward(self, dT, batch):
        """dT: (B, F, W). The tables' backward up to their sparse gradients: the MD
        projections' gradients go into self.params.grad (so it runs before the dense
        update); returns one SparseJob per table of self.embeddings.tables."""
        return self.embeddings.backward(dT[:, 1:, :], batch)

    def sparse_update(self, optimizer, lr, dT, batch, jobs=None):
        """Fused backward + sparse optimizer of every table; dT: (B, F, W); jobs: what
        embedding_backward returned (run here when None). A GPU batch (packed bags) updates
        every table in one kernel call."""
        if batch is not None and batch.packed is not None:
            self.embeddings.update(optimizer.sparse, lr, optimizer.eps, dT[:, 1:, :], batch)
            return
        for job in jobs if jobs is not None else self.embedding_backward(dT, batch):
            job.update(optimizer.sparse, lr, optimizer.eps)

    def _lap(self, stage):
        if self.profile is not None:
            backend.synchronize(self.params.data)  # a GPU stage's time, not its launch's
            self.profile.lap(stage)

    def forward_backward(self, batch, zero_grad=True, divide_by=None):
        """Returns (loss, dT) with the dense grads in self.params.grad (added to them when
        zero_grad is False); divide_by: the loss gradient is divided by it (a gradient
        accumulation window's K)."""
        if zero_grad:
            self.params.zero_grad()
        T = self.interaction_input(batch.size)
        self.lookup(batch, T)
        self._lap("embedding lookup")
        logits = self.dense_forward(batch.dense, T, keep=True)
        loss, dz = self.loss(logits, batch.labels)
        check_loss(loss, self.state_dict)
        self._lap("loss")
        if divide_by is not None:
            dz /= divide_by
        return loss, self.dense_backward(dz)

    def probabilities(self, logits):
        """Click probabilities (B,) of logits (B,), clamped as the loss clamps them."""
        z, _ = clamp_logits(logits, self.config.loss_threshold)
        return backend.to_host(sigmoid(z))

    # ---- public API -----------------------------------------------------------
    def predict(self, dense, indices, offsets, per_sample_weights=None):
        """dense: (B, n_dense); indices/offsets: one array per table. Returns p: (B,)."""
        batch = self.check_batch(dense, indices, offsets, per_sample_weights=per_sample_weights)
        T = self.interaction_input(batch.size)
        self.lookup(batch, T)
        return self.probabilities(self.dense_forward(batch.dense, T, keep=False))

    forward = predict

    def loss_and_grad(self, dense, indices, offsets, labels, per_sample_weights=None):
        """Returns (loss, grads): grads keyed like state_dict, tables as SparseGrad."""
        batch = self.check_batch(dense, indices, offsets, labels, per_sample_weights, True)
        loss, dT = self.forward_backward(batch)
        jobs = self.embedding_backward(dT, batch)
        grads = {name: g.copy() for name, g in self.params.grads.items()}
        for name, job in zip(self.embeddings.names, jobs):
            grads[name] = job.grad()
        return loss, grads

    def train_step(self, dense, indices, offsets, labels, optimizer, per_sample_weights=None):
        """One step of `optimizer` (an npdlrm.Optimizer); returns the batch's mean loss.

        A refused batch (ValueError) or a non-finite loss (FloatingPointError) changes nothing.
        """
        if self.profile is not None:
            self.profile.start()
        batch = self.check_batch(dense, indices, offsets, labels, per_sample_weights, True)
        optimizer.bind(self)
        lr = optimizer.lr
        self._lap("batch check")
        loss, dT = self.forward_backward(batch)
        jobs = self.embedding_backward(dT, batch)
        optimizer.step_dense(self.params, lr)
        self._lap("dense optimizer")
        self.sparse_update(optimizer, lr, dT, batch, jobs)
        self._lap("embedding update")
        optimizer.finish_step()
        if self.profile is not None:
            self.profile.end()
        return loss

    # ---- optimizer state --------------------------------------------------------
    def optimizer_state(self):
        """The optimizer state as a plain dict of (live) arrays:
        `dense.<key>` (FlatParams.state: adagrad.sum, adam.m, adam.v: (P,), adam.step: ())
        and `embeddings.<i>.<kind>` for table (or shard) i of self.embeddings.tables:
        kind adagrad (V, D) or rwsadagrad (V,); sgd tables have no entry."""
        out = {f"dense.{k}": v for k, v in self.params.state.items()}
        for i, t in enumerate(self.embeddings.tables):
            if t.state is not None:
                out[f"embeddings.{i}.{t.state_kind}"] = t.state
        return out

    def optimizer_state_spec(self, sparse_kind, dense_keys):
        """{key: (shape, dtype)} of the state `optimizer_state` holds once a step of an
        optimizer with sparse kind `sparse_kind` and dense state keys `dense_keys` ran."""
        P, dt = self.params.data.shape, self.params.dtype
        spec = {f"dense.{k}": (((), np.dtype(np.int64)) if k == "adam.step" else (P, dt))
                for k in dense_keys}
        for i, t in enumerate(self.embeddings.tables):
            shape = t.state_shape(sparse_kind)
            if shape is not None:
                spec[f"embeddings.{i}.{sparse_kind}"] = (shape, t.weight.dtype)
        return spec

    def load_optimizer_state(self, state, sparse_kind=None, copy=True):
        """Replace the optimizer state with `state` (optimizer_state's keys; copied unless
        copy=False); sparse_kind: the tables' optimizer (None: no table state yet).
        Everything is checked before anything changes; None clears the state."""
        if state is None:
            self.params.state.clear()
            for t in self.embeddings.tables:
                t.state, t.state_kind = None, None
            return
        dense_keys = [k[len("dense."):] for k in state if k.startswith("dense.")]
        spec = self.optimizer_state_spec(sparse_kind or "sgd", dense_keys)
        unknown = sorted(set(state) - set(spec))
        missing = sorted(set(spec) - set(state))
        if unknown or missing:
            raise ValueError(f"optimizer state does not match the model: unexpected "
                             f"{unknown[:3]}, missing {missing[:3]}")
        for key, (shape, dtype) in spec.items():
            a = state[key] if hasattr(state[key], "dtype") else np.asarray(state[key])
            if tuple(a.shape) != tuple(shape) or a.dtype != dtype:
                raise ValueError(f"optimizer state {key} is {tuple(a.shape)} {a.dtype}, the "
                                 f"model needs {tuple(shape)} {np.dtype(dtype)}")
        self.params.state.clear()
        xp = self.xp

        def take(a):  # onto the model's device (a copy unless copy=False and already there)
            return xp.array(a) if copy else xp.ascontiguousarray(xp.asarray(a))
        for k in dense_keys:
            a = state[f"dense.{k}"]
            self.params.state[k] = np.array(backend.to_host(a)) if k == "adam.step" else take(a)
        for i, t in enumerate(self.embeddings.tables):
            key = f"embeddings.{i}.{sparse_kind}"
            t.state = None  # free the old state first
            t.state = take(state[key]) if key in state else None
            t.state_kind = sparse_kind

    def state_dict(self, copy=False):
        """Parameters by name: `{bottom,top}_mlp.{i}.{weight,bias}`, `embeddings.{k}.weight`,
        on the model's device (`backend.to_host` for NumPy).

        Read-only views of the live parameters (copy=True for a snapshot); CuPy arrays
        have no read-only flag: a GPU model's views are writable, do not write them."""
        out = dict(self.params.views)
        for name, table in zip(self.embeddings.names, self.embeddings.tables):
            out[name] = table.weight  # embeddings.{k}.weight: shard k when sharded
        result = {}
        for name, a in out.items():
            if copy:
                result[name] = a.copy()
            elif self.device == "gpu":
                result[name] = a.view()
            else:
                v = a.view()
                v.flags.writeable = False
                result[name] = v
        return result

    def load_state_dict(self, state):
        """Copy `state` into the parameters; names and shapes must match exactly.

        Everything is checked before anything is copied."""
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(f"state dict does not match the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for name, target in own.items():
            shape = tuple(getattr(state[name], "shape", None) or np.shape(state[name]))
            if shape != target.shape:
                raise ValueError(f"{name}: shape {shape} in the state dict, {target.shape} in "
                                 f"the model")
        for name in self.params.names:
            backend.copy_into(self.params.views[name], state[name])
        for name, table in zip(self.embeddings.names, self.embeddings.tables):
            backend.copy_into(table.weight, state[name])

    def num_parameters(self):
        return self.params.size + sum(t.weight.size for t in self.embeddings.tables)

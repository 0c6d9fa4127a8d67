"""DLRM: bottom MLP, embedding bags, interaction, top MLP, loss.

A step runs in stages that a distributed step can reuse: lookup (pooled bags),
dense forward/backward (MLPs, interaction, loss), sparse update of the tables.
"""
import numpy as np

from .config import DLRMConfig
from .embedding import EmbeddingBagCollection
from .init import initialize
from .inputs import make_batch
from .interaction import make_interaction
from .loss import clamp_logits, compute_loss, sigmoid
from .mlp import MLP
from .params import FlatParams
from .workspace import Workspace


class DLRM:
    """A DLRM with its parameters; see `from_arch` for the reference's vocabulary."""

    def __init__(self, config, seed=123, init="reference"):
        self.config = config
        dtype = np.dtype(config.dtype)
        specs = (MLP.param_specs(config.bottom_mlp, "bottom_mlp")
                 + MLP.param_specs(config.top_sizes, "top_mlp"))
        self.params = FlatParams(specs, dtype)
        self.bottom = MLP(config.bottom_mlp, True, self.params, "bottom_mlp")
        self.top = MLP(config.top_sizes, False, self.params, "top_mlp")
        self.embeddings = EmbeddingBagCollection(config.table_sizes, config.embedding_dim,
                                                 dtype, config.pooling)
        self.interaction = make_interaction(config.interaction, config.num_features,
                                            config.embedding_dim, config.self_interaction)
        self.ws = Workspace(dtype)
        initialize([t.weight for t in self.embeddings.tables], self.bottom.layers(),
                   self.top.layers(), seed, init)

    @classmethod
    def from_arch(cls, arch_mlp_bot, arch_mlp_top, arch_embedding_size, arch_sparse_feature_size,
                  arch_interaction_op="dot", arch_interaction_itself=False, seed=123,
                  init="reference", **config):
        """Build from the reference's arguments, e.g. arch_mlp_bot="13-512-256-64-16",
        arch_mlp_top="512-256-1" (its input width is derived), arch_embedding_size="1460-583".
        Extra keywords (pooling, loss, loss_weights, dtype) go to DLRMConfig."""
        cfg = DLRMConfig.from_arch(arch_mlp_bot, arch_mlp_top, arch_embedding_size,
                                   arch_sparse_feature_size, arch_interaction_op,
                                   arch_interaction_itself, **config)
        return cls(cfg, seed=seed, init=init)

    # ---- stages -------------------------------------------------------------
    def _lookup(self, batch):
        """Returns T: (B, F, D) with T[:, 1 + k] the pooled bags of table k."""
        cfg = self.config
        T = self.ws.get("T", (batch.size, cfg.num_features, cfg.embedding_dim))
        self.embeddings.forward(T[:, 1:, :], batch)
        return T

    def _dense_forward(self, dense, T, keep):
        """dense: (B, n); T: (B, F, D), its slot 0 filled here; returns logits (B,)."""
        T[:, 0, :] = self.bottom.forward(dense, keep)
        R = self.interaction.forward(T, keep)
        return self.top.forward(R, keep)[:, 0]

    def _dense_backward(self, dlogit):
        """dlogit: (B,); adds MLP grads into self.params.grad; returns dT: (B, F, D)."""
        dR = self.top.backward(dlogit.reshape(-1, 1))
        dT = self.interaction.backward(dR)
        self.bottom.backward(dT[:, 0, :], need_dx=False)
        return dT

    def _forward_backward(self, batch):
        """Returns (loss, dT) with the dense grads in self.params.grad."""
        self.params.zero_grad()
        T = self._lookup(batch)
        z, inside = clamp_logits(self._dense_forward(batch.dense, T, keep=True),
                                 self.config.loss_threshold)
        loss, dz = compute_loss(self.config.loss, z, batch.labels, self.config.loss_weights)
        if inside is not None:
            dz *= inside  # the clamp passes no gradient where it bites
        if not np.isfinite(loss):
            raise FloatingPointError(f"the loss is {loss}: refusing the step, no parameter "
                                     f"was changed (lower the learning rate?)")
        return loss, self._dense_backward(dz)

    def _batch(self, dense, indices, offsets, labels=None, per_sample_weights=None,
               need_labels=False):
        return make_batch(self.config, dense, indices, offsets, labels, per_sample_weights,
                          need_labels)

    # ---- public API -----------------------------------------------------------
    def predict(self, dense, indices, offsets, per_sample_weights=None):
        """dense: (B, n_dense); indices/offsets: one array per table. Returns p: (B,)."""
        batch = self._batch(dense, indices, offsets, per_sample_weights=per_sample_weights)
        T = self._lookup(batch)
        z, _ = clamp_logits(self._dense_forward(batch.dense, T, keep=False),
                            self.config.loss_threshold)
        return sigmoid(z)

    forward = predict

    def loss_and_grad(self, dense, indices, offsets, labels, per_sample_weights=None):
        """Returns (loss, grads): grads keyed like state_dict, tables as SparseGrad."""
        batch = self._batch(dense, indices, offsets, labels, per_sample_weights, True)
        loss, dT = self._forward_backward(batch)
        grads = {name: g.copy() for name, g in self.params.grads.items()}
        for k, g in enumerate(self.embeddings.grads(dT[:, 1:, :], batch)):
            grads[f"embeddings.{k}.weight"] = g
        return loss, grads

    def train_step(self, dense, indices, offsets, labels, optimizer, per_sample_weights=None):
        """One step of `optimizer` (an npdlrm.Optimizer); returns the batch's mean loss.

        A refused batch (ValueError) or a non-finite loss (FloatingPointError) changes nothing.
        """
        batch = self._batch(dense, indices, offsets, labels, per_sample_weights, True)
        optimizer.bind(self)
        lr = optimizer.lr
        loss, dT = self._forward_backward(batch)
        optimizer.step_dense(self.params, lr)
        self.embeddings.update(optimizer.sparse, lr, optimizer.eps, dT[:, 1:, :], batch)
        optimizer.finish_step()
        return loss

    def state_dict(self, copy=False):
        """Parameters by name: `{bottom,top}_mlp.{i}.{weight,bias}`, `embeddings.{k}.weight`.

        Read-only views of the live parameters (copy=True for a snapshot)."""
        out = dict(self.params.views)
        for k, table in enumerate(self.embeddings.tables):
            out[f"embeddings.{k}.weight"] = table.weight
        result = {}
        for name, a in out.items():
            if copy:
                result[name] = a.copy()
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
            shape = np.shape(state[name])
            if shape != target.shape:
                raise ValueError(f"{name}: shape {shape} in the state dict, {target.shape} in "
                                 f"the model")
        for name in self.params.names:
            self.params.views[name][...] = state[name]
        for k, table in enumerate(self.embeddings.tables):
            table.weight[...] = state[f"embeddings.{k}.weight"]

    def num_parameters(self):
        return self.params.size + sum(t.weight.size for t in self.embeddings.tables)

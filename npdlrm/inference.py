"""A DLRM for scoring only: tables in a storage format, MLP weights stored in a format and
multiplied in float32; forward only, nothing kept for a backward pass.

Formats (npdlrm/quantize.py): tables float32, float16, row-wise int8 or int4
(`emb_bits` 32, 16, 8, 4); MLP weights float32, float16 or per-output-channel int8
(`mlp_bits` 32, 16, 8). The MLPs are stored small but multiplied in float32: each weight
is dequantized once, when the model is built, and the forward is float32 BLAS (NumPy has
no fast float16 or int8 matrix product; see the note of issue 10 for the timings). With
emb_bits = mlp_bits = 32 the probabilities equal DLRM.predict's bit for bit.

The stages are those of DLRM.predict: check_batch, lookup (one QuantizedTable.lookup per
table into T[:, 1:]), the bottom MLP into T[:, 0], the interaction, the top MLP, the
clamp and the sigmoid. A table is anything with QuantizedTable's `lookup`; its rows may
be a memory map of a file.
"""
import numpy as np

from .activations import activation_forward
from .backend import to_host
from .config import DLRMConfig
from .inputs import make_batch
from .interaction import make_interaction
from .linear import linear_forward
from .loss import clamp_logits, sigmoid
from .quantize import (QuantizedTable, check_mlp_bits, dequantize_mlp_weight,
                       mlp_weight_bytes, quantize_mlp_weight, table_format)
from .workspace import Workspace


def check_plain(config, what="this model"):
    """ValueError unless every table of `config` is one plain (V, D) table."""
    if getattr(config, "has_embedding_variants", False):
        raise ValueError(f"{what} uses quotient-remainder, mixed-dimension or learned-weight "
                         f"embeddings: quantized inference and ONNX export support plain "
                         f"tables only")


def float32_config(config):
    """`config` with dtype float32 (the inference model computes in float32)."""
    d = config.to_dict()
    d["dtype"] = "float32"
    return DLRMConfig.from_dict(d)


def mlp_names(config):
    """[(prefix, layer count)] of the two MLPs, in the order of the state dict."""
    return [("bottom_mlp", len(config.bottom_mlp) - 1), ("top_mlp", len(config.top_sizes) - 1)]


class InferenceModel:
    """config: a DLRMConfig; tables: one QuantizedTable per table; mlp: {name: stored}
    for every `{bottom,top}_mlp.{i}.{weight,bias}`: a weight is quantize_mlp_weight's
    dict, a bias a float32 (m,) array."""

    def __init__(self, config, tables, mlp, emb_bits, mlp_bits):
        check_plain(config)
        self.config = float32_config(config)
        cfg = self.config
        self.emb_bits, self.mlp_bits = table_format(emb_bits).bits, check_mlp_bits(mlp_bits)
        if len(tables) != cfg.num_tables:
            raise ValueError(f"{len(tables)} tables given, the config has {cfg.num_tables}")
        for k, t in enumerate(tables):
            if (t.num_rows, t.dim) != (cfg.table_sizes[k], cfg.embedding_dim):
                raise ValueError(f"table {k} is ({t.num_rows}, {t.dim}), the config needs "
                                 f"({cfg.table_sizes[k]}, {cfg.embedding_dim})")
        self.tables = list(tables)
        self.mlp = mlp
        self.layers = {}  # prefix -> [(W float32 (m, n), b float32 (m,))]
        for prefix, n in mlp_names(cfg):
            sizes = cfg.bottom_mlp if prefix == "bottom_mlp" else cfg.top_sizes
            layers = []
            for i in range(n):
                w = dequantize_mlp_weight(mlp[f"{prefix}.{i}.weight"], self.mlp_bits)
                b = np.ascontiguousarray(mlp[f"{prefix}.{i}.bias"], dtype=np.float32)
                if w.shape != (sizes[i + 1], sizes[i]) or b.shape != (sizes[i + 1],):
                    raise ValueError(f"{prefix}.{i}: weight {w.shape} and bias {b.shape}, "
                                     f"the config needs ({sizes[i + 1]}, {sizes[i]})")
                layers.append((w, b))
            self.layers[prefix] = layers
        self.interaction = make_interaction(cfg.interaction, cfg.num_features,
                                            cfg.embedding_dim, cfg.self_interaction)
        self.activation = getattr(cfg, "activation", "relu")
        self.ws = Workspace(np.float32)

    @classmethod
    def from_model(cls, model, emb_bits=32, mlp_bits=32):
        """Quantize a whole (not sharded) DLRM's weights."""
        cfg = model.config
        check_plain(cfg)
        if not getattr(model.embeddings, "whole", False):
            raise ValueError("quantized inference needs a whole model, not a distributed "
                             "model's shards")
        fmt = table_format(emb_bits)
        state = {k: to_host(v) for k, v in model.state_dict().items()}  # a GPU model too
        tables = [QuantizedTable.from_weight(state[f"embeddings.{k}.weight"], fmt,
                                             f"table {k}") for k in range(cfg.num_tables)]
        mlp = {}
        for prefix, n in mlp_names(cfg):
            for i in range(n):
                name = f"{prefix}.{i}"
                mlp[f"{name}.weight"] = quantize_mlp_weight(state[f"{name}.weight"], mlp_bits,
                                                            f"{name}.weight")
                mlp[f"{name}.bias"] = np.asarray(state[f"{name}.bias"], np.float32)
        return cls(cfg, tables, mlp, emb_bits, mlp_bits)

    # ---- sizes ----------------------------------------------------------------------
    @property
    def table_bytes(self):
        return sum(t.nbytes for t in self.tables)

    @property
    def mlp_bytes(self):
        """Stored bytes of the MLPs (weights in their format, float32 biases)."""
        total = 0
        for name, stored in self.mlp.items():
            if name.endswith(".weight"):
                total += mlp_weight_bytes(np.shape(stored["weight"]), self.mlp_bits)
            else:
                total += 4 * np.size(stored)
        return total

    def describe(self):
        mlp = {8: "int8 per output channel", 16: "float16", 32: "float32"}[self.mlp_bits]
        return (f"tables {table_format(self.emb_bits).name} ({self.table_bytes:,} bytes), "
                f"MLP weights {mlp}")

    # ---- forward --------------------------------------------------------------------
    def check_batch(self, dense, indices, offsets, per_sample_weights=None):
        return make_batch(self.config, dense, indices, offsets, None, per_sample_weights)

    def lookup(self, batch, T):
        """Pool every table's bags into T[:, 1:]: (B, F - 1, D)."""
        mean = self.config.pooling == "mean"
        for k, table in enumerate(self.tables):
            table.lookup(T[:, 1 + k, :], batch.indices[k], batch.offsets[k],
                         batch.weights_of(k), mean)

    def mlp_forward(self, prefix, x, act_last):
        """x: (B, n) -> (B, m) through the layers of `prefix`."""
        layers = self.layers[prefix]
        h = x
        for i, (w, b) in enumerate(layers):
            act = i < len(layers) - 1 or act_last
            fused = act and self.activation == "relu"
            out = self.ws.get((prefix, i), (h.shape[0], w.shape[0]))
            h = linear_forward(h, w, b, fused, out=out)
            if act and not fused:
                activation_forward(self.activation, h)
        return h

    def logits(self, batch):
        """The logits (B,) of a checked batch."""
        cfg = self.config
        T = self.ws.get("T", (batch.size, cfg.num_features, cfg.embedding_dim))
        self.lookup(batch, T)
        T[:, 0, :] = self.mlp_forward("bottom_mlp", batch.dense, True)
        R = self.interaction.forward(T, keep=False)
        return self.mlp_forward("top_mlp", R, False)[:, 0]

    def predict(self, dense, indices, offsets, per_sample_weights=None):
        """dense: (B, n_dense); indices/offsets: one array per table. Returns p: (B,)."""
        batch = self.check_batch(dense, indices, offsets, per_sample_weights)
        z, _ = clamp_logits(self.logits(batch), self.config.loss_threshold)
        return sigmoid(z)

    forward = predict

    def float_weights(self):
        """{name: float32 array} of what the forward multiplies by: the dequantized tables
        (`embeddings.{k}.weight`) and MLP weights, the biases (an ONNX export's weights)."""
        out = {}
        for prefix, layers in self.layers.items():
            for i, (w, b) in enumerate(layers):
                out[f"{prefix}.{i}.weight"], out[f"{prefix}.{i}.bias"] = w, b
        for k, t in enumerate(self.tables):
            out[f"embeddings.{k}.weight"] = t.dequantize()
        return out

"""ONNX export of a DLRM or an InferenceModel, the graph built by hand with `onnx`.

Inputs (the reference's export names): dense_x (B, n_dense) float32; for each table k,
offsets_k (B,) int64, the start of each bag in indices_k (nnz_k,) int64. Output: pred
(B,) float32, the click probability (loss_threshold's clamp included).

An embedding bag is Gather then an exact segment sum over bag ids:
  rows   = Gather(W_k, indices_k)                                   (nnz, D)
  marks  = ScatterElements(zeros(nnz + 1), offsets_k[1:], 1, add)    (nnz + 1,)
  bag    = CumSum(marks)[:nnz]                   the bag of each position (nnz,)
  pooled = ScatterND(zeros(B, D), bag[:, None], rows, reduction add) (B, D)
(mean pooling: divided by max(bag length, 1)). Multi-hot and empty bags are exact:
every position lands in its bag, an empty bag's start adds one more mark at the same
place. The reduction attributes need opset 16; the model declares opset 17.

Quantized tables and MLP weights are exported as the float32 values the forward uses
(dequantized), so the graph computes what `npdlrm predict` computes with that model.
Models larger than MAX_PROTO_BYTES keep their weights in `<file>.data` beside the file
(ONNX external data).
"""
import os

import numpy as np

from .atomic import atomic_write
from .backend import to_host
from .inference import InferenceModel, check_plain, mlp_names
from .kernels.pairs import pair_indices

OPSET = 17
IR_VERSION = 8
MAX_PROTO_BYTES = 1 << 30  # protobuf refuses messages of 2 GiB


def require_onnx(what="ONNX export"):
    """The onnx module, or ValueError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise ValueError(f"{what} needs the onnx package: pip install 'npdlrm[onnx]'") \
            from None
    return onnx


class _Graph:
    """Nodes and initializers, with fresh names."""

    def __init__(self, onnx):
        self.onnx, self.h = onnx, onnx.helper
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, array, base="c"):
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, kind, inputs, base=None, **attrs):
        out = self.name(base or kind.lower())
        self.nodes.append(self.h.make_node(kind, list(inputs), [out], **attrs))
        return out


def _mlp(g, x, layers, activation, act_last):
    """Gemm (+ activation) per layer; layers: [(W (m, n), b (m,))]."""
    act = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[activation]
    for i, (w, b) in enumerate(layers):
        x = g.op("Gemm", [x, g.const(np.asarray(w, np.float32), "W"),
                          g.const(np.asarray(b, np.float32), "b")], transB=1)
        if i < len(layers) - 1 or act_last:
            x = g.op(act, [x])
    return x


def _bag(g, k, weight, batch, mean):
    """The pooled (B, D) output of table k for inputs offsets_k, indices_k."""
    D = weight.shape[1]
    idx, off = f"indices_{k}", f"offsets_{k}"
    rows = g.op("Gather", [g.const(np.asarray(weight, np.float32), f"emb{k}"), idx], axis=0)
    nnz = g.op("Shape", [idx])
    tail = g.op("Slice", [off, g.const(np.array([1])), g.const(np.array([2 ** 62]))])
    zeros = g.op("ConstantOfShape", [g.op("Add", [nnz, g.const(np.array([1]))])],
                 value=g.onnx.numpy_helper.from_array(np.zeros(1, np.int64)))
    ones = g.op("Expand", [g.const(np.array(1)), g.op("Shape", [tail])])
    marks = g.op("ScatterElements", [zeros, tail, ones], axis=0, reduction="add")
    bag = g.op("Slice", [g.op("CumSum", [marks, g.const(np.array(0))]),
                         g.const(np.array([0])), nnz])
    bag_col = g.op("Unsqueeze", [bag, g.const(np.array([1]))])
    out_shape = g.op("Concat", [batch, g.const(np.array([D]))], axis=0)
    zeros_bd = g.op("ConstantOfShape", [out_shape],
                    value=g.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
    pooled = g.op("ScatterND", [zeros_bd, bag_col, rows], reduction="add")
    if mean:
        zeros_b = g.op("ConstantOfShape", [batch],
                       value=g.onnx.numpy_helper.from_array(np.zeros(1, np.float32)))
        ones_f = g.op("ConstantOfShape", [nnz],
                      value=g.onnx.numpy_helper.from_array(np.ones(1, np.float32)))
        counts = g.op("ScatterElements", [zeros_b, bag, ones_f], axis=0, reduction="add")
        counts = g.op("Max", [counts, g.const(np.array(1, np.float32))])
        pooled = g.op("Div", [pooled, g.op("Unsqueeze", [counts, g.const(np.array([1]))])])
    return pooled


def build_onnx(model):
    """The onnx.ModelProto of a whole DLRM or an InferenceModel."""
    onnx = require_onnx()
    if not isinstance(model, InferenceModel):
        check_plain(model.config)
        if not getattr(model.embeddings, "whole", False):
            raise ValueError("ONNX export needs a whole model, not a distributed model's "
                             "shards")
        weights = {n: np.asarray(to_host(a), np.float32)  # a GPU model's too
                   for n, a in model.state_dict().items()}
    else:
        weights = model.float_weights()
    cfg = model.config
    layers = {prefix: [(weights[f"{prefix}.{i}.weight"], weights[f"{prefix}.{i}.bias"])
                       for i in range(n)] for prefix, n in mlp_names(cfg)}
    activation = getattr(cfg, "activation", "relu")
    g = _Graph(onnx)
    h = onnx.helper
    F, D = cfg.num_features, cfg.embedding_dim
    batch = g.op("Shape", ["dense_x"], start=0, end=1)
    bottom = _mlp(g, "dense_x", layers["bottom_mlp"], activation, True)
    features = [g.op("Unsqueeze", [bottom, g.const(np.array([1]))])]
    for k in range(cfg.num_tables):
        pooled = _bag(g, k, weights[f"embeddings.{k}.weight"], batch, cfg.pooling == "mean")
        features.append(g.op("Unsqueeze", [pooled, g.const(np.array([1]))]))
    T = g.op("Concat", features, axis=1)  # (B, F, D)
    if cfg.interaction == "cat":
        R = g.op("Reshape", [T, g.const(np.array([0, F * D]))])
    else:
        Z = g.op("MatMul", [T, g.op("Transpose", [T], perm=[0, 2, 1])])  # (B, F, F)
        li, lj = pair_indices(F, cfg.self_interaction)
        pairs = g.op("Gather", [g.op("Reshape", [Z, g.const(np.array([0, F * F]))]),
                                g.const(li * F + lj)], axis=1)
        R = g.op("Concat", [bottom, pairs], axis=1)
    z = _mlp(g, R, layers["top_mlp"], activation, False)  # (B, 1)
    t = cfg.loss_threshold
    if 0 < t < 1:
        hi = np.float32(np.log1p(-t) - np.log(t))
        z = g.op("Clip", [z, g.const(-hi), g.const(hi)])
    p = g.op("Sigmoid", [z])
    g.nodes.append(h.make_node("Reshape", [p, g.const(np.array([-1]))], ["pred"]))
    inputs = [h.make_tensor_value_info("dense_x", onnx.TensorProto.FLOAT,
                                       ["batch_size", cfg.num_dense])]
    inputs += [h.make_tensor_value_info(f"offsets_{k}", onnx.TensorProto.INT64,
                                        ["batch_size"]) for k in range(cfg.num_tables)]
    inputs += [h.make_tensor_value_info(f"indices_{k}", onnx.TensorProto.INT64,
                                        [f"nnz_{k}"]) for k in range(cfg.num_tables)]
    outputs = [h.make_tensor_value_info("pred", onnx.TensorProto.FLOAT, ["batch_size"])]
    graph = h.make_graph(g.nodes, "npdlrm_dlrm", inputs, outputs, g.inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)],
                         producer_name="npdlrm", ir_version=IR_VERSION)
    if sum(len(t.raw_data) for t in g.inits) < MAX_PROTO_BYTES:
        onnx.checker.check_model(proto)
    return proto


def export_onnx(model, path):
    """Write `model` (a whole DLRM or an InferenceModel) to `path` as ONNX, atomically
    (weights beyond MAX_PROTO_BYTES go to `<path>.data`, written beside it first)."""
    onnx = require_onnx()
    proto = build_onnx(model)
    size = sum(len(t.raw_data) for t in proto.graph.initializer)
    path = os.fspath(path)
    if size >= MAX_PROTO_BYTES:
        data = os.path.basename(path) + ".data"
        onnx.external_data_helper.convert_model_to_external_data(
            proto, all_tensors_to_one_file=True, location=data, size_threshold=1024)
        with atomic_write(path, size=size + (1 << 20)) as pending:
            onnx.save_model(proto, pending.tmp)  # the weights go to <folder>/<name>.data
        return path
    blob = proto.SerializeToString()
    with atomic_write(path, size=len(blob)) as pending:
        with open(pending.tmp, "wb") as f:
            pending.reserve()
            f.write(blob)
    return path

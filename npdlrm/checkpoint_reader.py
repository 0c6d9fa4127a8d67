"""Reading a stored checkpoint of either layout (`checkpoint_format.py`):
StoredCheckpoint indexes where every tensor and table piece (Piece) lies, runs every
check a load into a model (whole, or the local part of a distributed one) needs before
anything changes (the checks themselves: `checkpoint_checks.py`), then reads each
target's overlap with every stored piece.

A load verifies, by default, the CRC-32 and finiteness of every dataset it will read in
a separate pass before anything changes (`verify_tensors`); verify=False (`--no-verify`)
checks only that what was read is finite, after reading it.
"""
import json
import os
import re
from typing import NamedTuple, Optional, Tuple

import h5py
import numpy as np

from .checkpoint_checks import (CHECKSUM_ATTR, array_crc32, check_array, check_config,
                                check_loaded, check_optimizer, check_params, check_tiling,
                                describe_state, model_tensors, overlap, short_error,
                                sparse_state_kind, verify_dataset)
from .checkpoint_format import DENSE_STATE_KEYS, FORMAT, FORMAT_VERSION, SHARDED
from .config import DLRMConfig
from .embedding_layout import stored_tables
from .mmap_tables import sequential_access
from .optimizers import Optimizer

# CHECKSUM_ATTR, array_crc32, short_error, sparse_state_kind and verify_dataset are
# re-exported: they were importable from here before the checks moved out.
__all__ = ["Piece", "StoredCheckpoint", "CHECKSUM_ATTR", "array_crc32", "short_error",
           "sparse_state_kind", "verify_dataset"]


# ---- opening the file -----------------------------------------------------------
def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a checkpoint file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file ({short_error(e)})") from None
    fmt = f.attrs.get("format")
    version = f.attrs.get("format_version")
    if fmt != FORMAT:
        f.close()
        raise ValueError(f"{path}: not an npdlrm checkpoint (format {fmt!r}, expected {FORMAT!r})")
    if version != FORMAT_VERSION:
        f.close()
        raise ValueError(f"{path}: checkpoint format version {version}; this npdlrm reads "
                         f"version {FORMAT_VERSION}")
    return f


def _json(f, key):
    """Dataset `key` of h5py file `f`, a JSON string, decoded; ValueError naming both."""
    if key not in f:
        raise ValueError(f"{f.filename}: dataset {key} is missing")
    try:
        return json.loads(f[key].asstr()[()])
    except (ValueError, TypeError, OSError) as e:
        raise ValueError(f"{f.filename}: dataset {key} is not valid JSON "
                         f"({short_error(e)})") from None


def _json_attr(obj, key):
    """Attribute `key` of h5py object `obj`, a JSON string, decoded; ValueError naming it."""
    try:
        return json.loads(obj.attrs[key])
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{obj.file.filename}: attribute {key} of {obj.name} is missing or "
                         f"not valid JSON ({short_error(e)})") from None


# ---- stored pieces: where each part of a table lies ---------------------------------
class Piece(NamedTuple):
    """Rows x columns of table `table`, in file `file` (None: the checkpoint itself, else
    its shard file of that index) at dataset `weight`, its optimizer state at `state`."""
    table: int
    rows: Tuple[int, int]
    cols: Tuple[int, int]
    file: Optional[int]
    weight: str
    state: str

    @property
    def shape(self):
        return (self.rows[1] - self.rows[0], self.cols[1] - self.cols[0])

    def describe(self, files):
        """'table 3', or 'table 3 rows [0, 5) columns [2, 4) in <shard file>'."""
        if self.file is None:
            return f"table {self.table}"
        (r0, r1), (c0, c1) = self.rows, self.cols
        return f"table {self.table} rows [{r0}, {r1}) columns [{c0}, {c1}) in {files[self.file]}"


def _state_shape(kind, shape):
    """The optimizer state's shape of `kind` for weights of `shape` (None: no state)."""
    return {"sgd": None, "adagrad": shape, "rwsadagrad": shape[:1]}[kind]


class StoredCheckpoint:
    """An open checkpoint of either layout: its `info`, the checks of a load into a model
    (whole, or the local part of a distributed one) and the reads. A context manager."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.root = _open(self.path)
        self._files = {}
        try:
            self.sharded = bool(self.root.attrs.get(SHARDED, False))
            self.config = _json(self.root, "config")
            if self.sharded:
                self._index_sharded()
            else:
                self._index_single()
            self.info = self._info()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for f in [self.root, *self._files.values()]:
            f.close()
        self._files = {}

    def file(self, i):
        """The checkpoint itself (i None) or its shard file i, opened once."""
        if i is None:
            return self.root
        if i not in self._files:
            name = self.shard_files[i]
            full = os.path.join(os.path.dirname(os.path.abspath(self.path)), name)
            if not os.path.exists(full):
                raise FileNotFoundError(f"{self.path}: its shard file {name} is missing (a "
                                        f"sharded checkpoint's shard files lie beside it)")
            self._files[i] = h5py.File(full, "r")
        return self._files[i]

    # ---- where everything lies ----------------------------------------------------
    def _index_single(self):
        self.shard_files, self.dense = [], self.root
        params = self.root["params"]
        self.tensors = {name: (ds.shape, ds.dtype) for name, ds in params.items()}
        self.pieces = []
        table_of = _stored_table_index(self.config)  # name -> index in model.embeddings.tables
        for name, (shape, _) in self.tensors.items():
            m = re.fullmatch(r"embeddings\.(\d+)\.weight", name)
            i = table_of.get(name, int(m.group(1)) if m and table_of == {} else None)
            if i is not None and len(shape) == 2:
                self.pieces.append(Piece(i, (0, shape[0]), (0, shape[1]), None,
                                         f"params/{name}", f"optimizer/tables/{i}"))

    def _index_sharded(self):
        self.shard_files = _json(self.root, "shard_files")
        self.pieces = [Piece(int(k), tuple(rows), tuple(cols), int(i), f"{g}/weight",
                             f"{g}/state") for k, rows, cols, i, g in _json(self.root, "pieces")]
        sizes, D = self.config["table_sizes"], self.config["embedding_dim"]
        check_tiling(self.pieces, sizes, D, self.path)
        self.dense = self.file(0)
        self.tensors = {name: (ds.shape, ds.dtype) for name, ds in self.dense["params"].items()}
        for k, V in enumerate(sizes):
            self.tensors[f"embeddings.{k}.weight"] = ((V, D), np.dtype(self.config["dtype"]))

    def _info(self):
        f = self.root
        info = {"path": self.path, "format": FORMAT,
                "format_version": int(f.attrs["format_version"]),
                "npdlrm_version": str(f.attrs["npdlrm_version"]),
                "created": str(f.attrs["created"]),
                "config": self.config, "train_state": _json(f, "train_state"),
                "params": {name: {"shape": list(shape), "dtype": str(dtype)}
                           for name, (shape, dtype) in self.tensors.items()},
                "optimizer": None, "step_count": None,
                "sharded": None}
        if self.sharded:
            info["sharded"] = {"shard_files": list(self.shard_files),
                               "plan": _json(f, "plan"), "token": str(f.attrs["token"])}
        if "optimizer" in f:
            g = f["optimizer"]
            info["optimizer"] = _json_attr(g, "hyper_parameters")
            info["step_count"] = int(g.attrs["step_count"])
        return info

    def _reads(self, target, by_rows=False):
        """(piece, source selection, target selection) of every stored piece of target's
        table overlapping `target` (an EmbeddingTable): in rows and columns, or in rows
        only (by_rows: row-wise state, kept whole by the pieces that start at column 0)."""
        (t0, _), (u0, _) = target.rows, target.cols
        for p in self.pieces:
            rows = overlap(p.rows, target.rows) if p.table == target.table_id else None
            if rows is None:
                continue
            src_rows = slice(rows[0] - p.rows[0], rows[1] - p.rows[0])
            dst_rows = slice(rows[0] - t0, rows[1] - t0)
            if by_rows:
                if p.cols[0] == 0:
                    yield p, np.s_[src_rows], np.s_[dst_rows]
                continue
            cols = overlap(p.cols, target.cols)
            if cols is not None:
                yield p, np.s_[src_rows, cols[0] - p.cols[0]:cols[1] - p.cols[0]], \
                    np.s_[dst_rows, cols[0] - u0:cols[1] - u0]

    def _dataset(self, p, key, what):
        f = self.file(p.file)
        if key not in f:
            raise ValueError(f"{self.path}: {what} is missing")
        return f[key]

    # ---- checks -------------------------------------------------------------------
    def check(self, model, optimizer=None, with_optimizer=True, verify=True):
        """Every check of a load into `model`; nothing changes. Returns the optimizer to
        restore: the given one, a new one from the stored hyper-parameters, or None.
        verify: also read every tensor the load will read, checking its CRC-32 and that
        its values are finite (`verify_tensors`)."""
        path, stored_hyper = self.path, self.info["optimizer"]
        check_params(self.tensors, model_tensors(model), path)
        check_config(self.config, model, path)
        if not with_optimizer and optimizer is not None:
            raise ValueError("with_optimizer=False but an optimizer was given")
        if optimizer is not None:
            check_optimizer(stored_hyper, optimizer, model, path)
        elif with_optimizer and stored_hyper is not None:
            optimizer = Optimizer.from_dict(stored_hyper)
        self._check_pieces(model)
        if optimizer is not None:
            self._check_optimizer_state(model)
        if verify:
            self.verify_tensors(model, optimizer)
        return optimizer

    def verify_tensors(self, model, optimizer=None):
        """The verification pass (after the shape checks): every dataset a load into
        `model` (with `optimizer`: its state too) will read, read whole, once, must match
        its stored CRC-32 and hold only finite values; ValueError naming the tensor."""
        seen, path = set(), self.path

        def one(ds, what):
            if (ds.file.filename, ds.name) not in seen:
                seen.add((ds.file.filename, ds.name))
                verify_dataset(ds, what, path)

        params = self.dense["params"]
        for name in model.params.names:
            one(params[name], f"tensor {name}")
        for t in model.embeddings.tables:
            for p, _, _ in self._reads(t):
                one(self.file(p.file)[p.weight], _describe_piece(p, "weight", self.shard_files))
        if optimizer is None:
            return
        for key, ds in self._dense_state().items():
            one(ds, describe_state(f"dense.{key}"))
        kind = self._table_kind(len(stored_tables(model.config)))
        if kind in (None, "sgd"):
            return
        for t in model.embeddings.tables:
            for p, _, _ in self._reads(t, by_rows=kind == "rwsadagrad"):
                one(self.file(p.file)[p.state],
                    _describe_piece(p, f"{kind} state", self.shard_files))

    def _check_pieces(self, model):
        """Shape and dtype of every stored piece of a table that `model` will read."""
        for t in model.embeddings.tables:
            for p, _, _ in self._reads(t):
                what = p.describe(self.shard_files)
                check_array(self._dataset(p, p.weight, what), p.shape, t.weight.dtype, what,
                             self.path)

    def _dense_state(self):
        """{key: dataset} of the stored dense optimizer state."""
        return dict(self.dense["optimizer/dense"].items())

    def _table_kind(self, num_tables):
        """The tables' stored optimizer state kind, after checking how it is recorded."""
        g, path = self.root["optimizer"], self.path
        if self.sharded:
            kind = _json_attr(g, "state_kind")
        else:
            kinds = _json_attr(g["tables"], "state_kinds")
            kind = sparse_state_kind(kinds, path)
            if len(kinds) != num_tables:
                raise ValueError(f"{path}: optimizer state for {len(kinds)} tables, the model "
                                 f"has {num_tables}")
            for k in g["tables"]:
                if kind is None:
                    raise ValueError(f"{path}: table {k} has optimizer state but no state kind")
                if kind == "sgd" or not (k.isdigit() and int(k) < num_tables):
                    raise ValueError(f"{path}: unexpected optimizer state embeddings.{k}.{kind}")
        if kind not in (None, "sgd", "adagrad", "rwsadagrad"):
            raise ValueError(f"{path}: unknown table optimizer state kind {kind!r}")
        return kind

    def _check_optimizer_state(self, model):
        """Shapes and kinds of the stored optimizer state that `model` will read."""
        path, dense = self.path, self._dense_state()
        unknown = [k for k in dense if k not in DENSE_STATE_KEYS]
        if unknown:
            raise ValueError(f"{path}: unknown dense optimizer state {unknown[0]!r}; expected "
                             f"some of {DENSE_STATE_KEYS}")
        for key, (shape, dtype) in model.optimizer_state_spec("sgd", list(dense)).items():
            check_array(dense[key[len("dense."):]], shape, dtype, describe_state(key), path)
        kind = self._table_kind(len(stored_tables(model.config)))
        for t in model.embeddings.tables:
            for p, _, _ in self._reads(t, by_rows=kind == "rwsadagrad"):
                what = f"optimizer state of {p.describe(self.shard_files)} ({kind})"
                shape = _state_shape(kind or "sgd", p.shape)
                if shape is None:
                    if p.state in self.file(p.file):
                        raise ValueError(f"{path}: unexpected {what}")
                    continue
                check_array(self._dataset(p, p.state, what), shape, t.weight.dtype, what, path)

    # ---- reading ------------------------------------------------------------------
    def load(self, model, optimizer, verify=True):
        """Read the parameters, and with an optimizer its state and step count, into
        `model` (after `check`). verify=False (the check skipped its verification pass):
        refuse non-finite values after reading them."""
        params = self.dense["params"]
        for name in model.params.names:
            _read_into(params[name], model.params.views[name])
        for t in model.embeddings.tables:
            with sequential_access(t.weight, flush=True):  # a mapped working copy
                for p, src, dst in self._reads(t):
                    self.file(p.file)[p.weight].read_direct(t.weight, src, dst)
        model.load_optimizer_state(None)  # free the old state before reading the new
        if optimizer is None:
            if not verify:
                check_loaded(model, self.path)
            return
        kind = self._table_kind(len(stored_tables(model.config)))
        state = {f"dense.{key}": ds[()] for key, ds in self._dense_state().items()}
        for i, t in enumerate(model.embeddings.tables):
            shape = t.state_shape(kind or "sgd")
            if shape is None:
                continue
            a = t.new_state(shape, dtype=t.weight.dtype)  # in RAM, or a mapped file
            with sequential_access(a, flush=True):
                for p, src, dst in self._reads(t, by_rows=kind == "rwsadagrad"):
                    self.file(p.file)[p.state].read_direct(a, src, dst)
            state[f"embeddings.{i}.{kind}"] = a
        model.load_optimizer_state(state, kind, copy=False)
        if not verify:
            check_loaded(model, self.path)
        optimizer.step_count = self.info["step_count"]
        optimizer.bind(model)


def _stored_table_index(config):
    """{name: i} of the stored tables a checkpoint's config names (QR, MD and learned-weight
    tables included: embedding_layout.stored_tables), {} when it is not a valid config."""
    try:
        return {name: i for i, (name, _) in
                enumerate(stored_tables(DLRMConfig.from_dict(config)))}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def _describe_piece(p, part, files):
    """'tensor embeddings.3.weight', 'adagrad state of table 3 rows [0, 5) ... in <file>'."""
    if p.file is None:
        return f"tensor {p.weight[len('params/'):]}" if part == "weight" else \
            f"{part} of table {p.table}"
    return f"{part} of {p.describe(files)}"


def _read_into(ds, target):
    """Read a dataset straight into the C-contiguous array `target`."""
    if target.size:
        ds.read_direct(target)


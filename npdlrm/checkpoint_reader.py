"""Reading and checking a stored checkpoint of either layout (`checkpoint_format.py`):
StoredCheckpoint indexes where every tensor and table piece lies, checks everything a
load into a model (whole, or the local part of a distributed one) will read before
anything changes, then reads each target's overlap with every stored piece.

Checksums: the writers (`checkpoint.py`) give every tensor dataset an attribute
CHECKSUM_ATTR, the CRC-32 (zlib) of its C-order bytes. A load verifies, by default, in a
separate pass before anything changes, the CRC-32 of every dataset it will read and that
every value is finite (`verify_tensors`); verify=False (`--no-verify`) skips that pass
(huge checkpoints: it reads them twice) and checks only that what was read is finite,
after reading it. Files written before checksums existed have no attribute: their
tensors are checked for finite values only.
"""
import itertools
import json
import os
import re
import zlib
from typing import NamedTuple, Optional, Tuple

import h5py
import numpy as np

from .checkpoint_format import DENSE_STATE_KEYS, FORMAT, FORMAT_VERSION, SHARDED
from .optimizers import Optimizer


CHECKSUM_ATTR = "crc32"  # on every tensor dataset: zlib.crc32 of its C-order bytes
VERIFY_BLOCK_BYTES = 64 << 20  # the verification pass reads this much at a time


def array_crc32(array, crc=0):
    """zlib.crc32 of `array`'s C-order bytes, continuing from `crc`."""
    a = np.ascontiguousarray(array).reshape(-1)
    return zlib.crc32(a.view(np.uint8), crc)


def short_error(e):
    """The first line of an exception's text (HDF5's run over several), at most 200 chars."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


def _nonfinite(a):
    """How many values of array `a` are NaN or infinite (0 for non-float dtypes)."""
    if a.dtype.kind not in "fc" or np.isfinite(a).all():
        return 0
    return int(a.size - np.count_nonzero(np.isfinite(a)))


def _refuse_nonfinite(bad, size, what, where, after=False):
    if bad:
        tail = (" (--no-verify: found after reading it into the model, which now holds it)"
                if after else "")
        raise ValueError(f"{where}: {what} holds {bad:,} non-finite values (NaN or inf) of "
                         f"{size:,}: refusing to load it{tail}")


def verify_dataset(ds, what, where):
    """Read dataset `ds` in blocks: its CRC-32 must match the stored one (when the file has
    one) and every value must be finite; else ValueError naming `where` and `what`."""
    stored = ds.attrs.get(CHECKSUM_ATTR)
    fname = ds.file.filename
    crc, bad = 0, 0
    try:
        if ds.ndim == 0:
            block = np.asarray(ds[()])
            crc, bad = array_crc32(block), _nonfinite(block)
        elif ds.size:
            row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
            step = max(1, VERIFY_BLOCK_BYTES // max(row_bytes, 1))
            buf = np.empty((min(step, ds.shape[0]),) + ds.shape[1:], ds.dtype)
            for r0 in range(0, ds.shape[0], step):
                n = min(step, ds.shape[0] - r0)
                block = buf[:n]
                ds.read_direct(block, np.s_[r0:r0 + n], np.s_[0:n])
                crc = array_crc32(block, crc)
                bad += _nonfinite(block)
    except OSError as e:
        raise ValueError(f"{where}: cannot read {what} (dataset {ds.name} in {fname}): "
                         f"{short_error(e)}") from None
    if stored is not None and int(stored) != crc:
        raise ValueError(f"{where}: {what} (dataset {ds.name} in {fname}) fails its CRC-32 "
                         f"checksum (stored {int(stored):08x}, read {crc:08x}): the file is "
                         f"corrupted")
    _refuse_nonfinite(bad, ds.size, what, where)


# ---- reading and checking -------------------------------------------------------
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


def _check_params(stored, own, path):
    """stored, own: {name: (shape, dtype)} of the checkpoint's and the model's tensors."""
    for name, (shape, dtype) in own.items():
        if name not in stored:
            raise ValueError(f"{path}: the model has tensor {name} {shape}, the "
                             f"checkpoint does not: not the same architecture")
        s_shape, s_dtype = stored[name]
        if s_shape != shape or s_dtype != dtype:
            raise ValueError(f"{path}: tensor {name} is {s_shape} {s_dtype} in the checkpoint, "
                             f"{shape} {dtype} in the model")
    for name, (shape, _) in stored.items():
        if name not in own:
            raise ValueError(f"{path}: the checkpoint has tensor {name} {shape}, "
                             f"the model does not: not the same architecture")


def _model_tensors(model):
    """{name: (shape, dtype)} of the whole model `model` is (a part of): tables at full size."""
    out = {name: (v.shape, v.dtype) for name, v in model.params.views.items()}
    D = model.config.embedding_dim
    for k, V in enumerate(model.config.table_sizes):
        out[f"embeddings.{k}.weight"] = ((V, D), model.params.dtype)
    return out


def _check_config(stored, model, path):
    own = model.config.to_dict()
    for key, value in own.items():
        if key != "extra" and stored.get(key) != value:
            raise ValueError(f"{path}: config field {key} is {stored.get(key)!r} in the "
                             f"checkpoint, {value!r} in the model")


def _check_array(ds, shape, dtype, what, path):
    if ds.shape != tuple(shape) or ds.dtype != dtype:
        raise ValueError(f"{path}: {what} is {ds.shape} {ds.dtype} in the checkpoint, expected "
                         f"{tuple(shape)} {np.dtype(dtype)}")


def sparse_state_kind(kinds, path):
    """The one optimizer kind of the stored table states (None: no step was taken)."""
    used = {k for k in kinds if k is not None}
    if len(used) > 1:
        raise ValueError(f"{path}: the tables hold state of different optimizers {sorted(used)}")
    return used.pop() if used else None


def _describe_state(key):
    """'dense optimizer state adam.m' / 'optimizer state of table 3 (adagrad)'."""
    if key.startswith("dense."):
        return f"dense optimizer state {key[len('dense.'):]}"
    _, k, kind = key.split(".")
    return f"optimizer state of table {k} ({kind})"


def _check_optimizer(stored, optimizer, model, path):
    """stored: the checkpoint's hyper-parameters (or None); optimizer: the caller's."""
    optimizer.check_bind(model)
    if stored is None:
        raise ValueError(f"{path} holds no optimizer state: load with optimizer=None and "
                         f"start a fresh optimizer")
    for key, what in (("name", "sparse optimizer"), ("dense", "dense optimizer")):
        given = optimizer.to_dict()[key]
        if stored[key] != given:
            raise ValueError(f"{path}: the checkpoint's {what} is {stored[key]!r}, the given "
                             f"optimizer's {given!r}: its state cannot be restored into it")


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


def _overlap(a, b):
    """The intersection of ranges a and b, None when empty."""
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


def _check_tiling(pieces, table_sizes, dim, path):
    """Raise unless the pieces of every table cover it exactly once."""
    for k, V in enumerate(table_sizes):
        mine = [p for p in pieces if p.table == k]
        inside = all(0 <= p.rows[0] < p.rows[1] <= V and 0 <= p.cols[0] < p.cols[1] <= dim
                     for p in mine)
        area = sum(p.shape[0] * p.shape[1] for p in mine)
        disjoint = not any(_overlap(a.rows, b.rows) and _overlap(a.cols, b.cols)
                           for a, b in itertools.combinations(mine, 2))
        if not (inside and disjoint and area == V * dim):
            raise ValueError(f"{path}: the stored pieces of table {k} do not cover its "
                             f"{V} x {dim} values exactly once")
    stray = sorted({p.table for p in pieces} - set(range(len(table_sizes))))
    if stray:
        raise ValueError(f"{path}: pieces of table {stray[0]}, the model has "
                         f"{len(table_sizes)} tables")


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
        for name, (shape, _) in self.tensors.items():
            m = re.fullmatch(r"embeddings\.(\d+)\.weight", name)
            if m and len(shape) == 2:
                self.pieces.append(Piece(int(m.group(1)), (0, shape[0]), (0, shape[1]), None,
                                         f"params/{name}", f"optimizer/tables/{m.group(1)}"))

    def _index_sharded(self):
        self.shard_files = _json(self.root, "shard_files")
        self.pieces = [Piece(int(k), tuple(rows), tuple(cols), int(i), f"{g}/weight",
                             f"{g}/state") for k, rows, cols, i, g in _json(self.root, "pieces")]
        sizes, D = self.config["table_sizes"], self.config["embedding_dim"]
        _check_tiling(self.pieces, sizes, D, self.path)
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
            rows = _overlap(p.rows, target.rows) if p.table == target.table_id else None
            if rows is None:
                continue
            src_rows = slice(rows[0] - p.rows[0], rows[1] - p.rows[0])
            dst_rows = slice(rows[0] - t0, rows[1] - t0)
            if by_rows:
                if p.cols[0] == 0:
                    yield p, np.s_[src_rows], np.s_[dst_rows]
                continue
            cols = _overlap(p.cols, target.cols)
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
        _check_params(self.tensors, _model_tensors(model), path)
        _check_config(self.config, model, path)
        if not with_optimizer and optimizer is not None:
            raise ValueError("with_optimizer=False but an optimizer was given")
        if optimizer is not None:
            _check_optimizer(stored_hyper, optimizer, model, path)
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
            one(ds, _describe_state(f"dense.{key}"))
        kind = self._table_kind(len(model.config.table_sizes))
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
                _check_array(self._dataset(p, p.weight, what), p.shape, t.weight.dtype, what,
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
            _check_array(dense[key[len("dense."):]], shape, dtype, _describe_state(key), path)
        kind = self._table_kind(len(model.config.table_sizes))
        for t in model.embeddings.tables:
            for p, _, _ in self._reads(t, by_rows=kind == "rwsadagrad"):
                what = f"optimizer state of {p.describe(self.shard_files)} ({kind})"
                shape = _state_shape(kind or "sgd", p.shape)
                if shape is None:
                    if p.state in self.file(p.file):
                        raise ValueError(f"{path}: unexpected {what}")
                    continue
                _check_array(self._dataset(p, p.state, what), shape, t.weight.dtype, what, path)

    # ---- reading ------------------------------------------------------------------
    def load(self, model, optimizer, verify=True):
        """Read the parameters, and with an optimizer its state and step count, into
        `model` (after `check`). verify=False (the check skipped its verification pass):
        refuse non-finite values after reading them."""
        params = self.dense["params"]
        for name in model.params.names:
            _read_into(params[name], model.params.views[name])
        for t in model.embeddings.tables:
            for p, src, dst in self._reads(t):
                self.file(p.file)[p.weight].read_direct(t.weight, src, dst)
        model.load_optimizer_state(None)  # free the old state before reading the new
        if optimizer is None:
            if not verify:
                _check_loaded(model, self.path)
            return
        kind = self._table_kind(len(model.config.table_sizes))
        state = {f"dense.{key}": ds[()] for key, ds in self._dense_state().items()}
        for i, t in enumerate(model.embeddings.tables):
            shape = t.state_shape(kind or "sgd")
            if shape is None:
                continue
            a = np.empty(shape, t.weight.dtype)
            for p, src, dst in self._reads(t, by_rows=kind == "rwsadagrad"):
                self.file(p.file)[p.state].read_direct(a, src, dst)
            state[f"embeddings.{i}.{kind}"] = a
        model.load_optimizer_state(state, kind, copy=False)
        if not verify:
            _check_loaded(model, self.path)
        optimizer.step_count = self.info["step_count"]
        optimizer.bind(model)


def _describe_piece(p, part, files):
    """'tensor embeddings.3.weight', 'adagrad state of table 3 rows [0, 5) ... in <file>'."""
    if p.file is None:
        return f"tensor embeddings.{p.table}.weight" if part == "weight" else \
            f"{part} of table {p.table}"
    return f"{part} of {p.describe(files)}"


def _check_loaded(model, path):
    """After an unverified load: refuse non-finite values in what `model` now holds."""
    arrays = [(f"tensor {name}", model.params.views[name]) for name in model.params.names]
    arrays += [(f"dense optimizer state {k}", np.asarray(v))
               for k, v in model.params.state.items()]
    for t in model.embeddings.tables:
        arrays.append((f"tensor embeddings.{t.table_id}.weight", t.weight))
        if t.state is not None:
            arrays.append((f"{t.state_kind} state of table {t.table_id}", t.state))
    for what, a in arrays:
        _refuse_nonfinite(_nonfinite(a), a.size, what, path, after=True)


def _read_into(ds, target):
    """Read a dataset straight into the C-contiguous array `target`."""
    if target.size:
        ds.read_direct(target)


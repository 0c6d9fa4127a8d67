"""Atomic HDF5 checkpoints: parameters, optimizer state and the caller's train state.

File layout (format "npdlrm-checkpoint", version 1):

    /                       attrs format, format_version, npdlrm_version, created (UTC ISO 8601)
    /config                 JSON string: DLRMConfig.to_dict()
    /train_state            JSON string: the caller's dict ({} when none was given)
    /params/<name>          one dataset per model.state_dict() entry, its exact shape and dtype
    /optimizer              only when an optimizer was saved; attrs hyper_parameters (JSON:
                            Optimizer.to_dict()), step_count
    /optimizer/dense/<key>  model.params.state: adagrad.sum, adam.m, adam.v (P,), adam.step ()
    /optimizer/tables       attr state_kinds: JSON list, EmbeddingTable.state_kind per table
    /optimizer/tables/<k>   EmbeddingTable.state of table k: (V, D) adagrad, (V,) rwsadagrad
                            (absent when the table has no state)

A save writes `.{name}.partial-{pid}` beside the target, fsyncs it, renames it onto the
target and fsyncs the folder. A load checks everything before it changes anything.
"""
import datetime
import json
import os

import h5py
import numpy as np

from . import __version__
from .atomic import atomic_write
from .config import DLRMConfig
from .model import DLRM
from .optimizers import Optimizer

FORMAT = "npdlrm-checkpoint"
FORMAT_VERSION = 1
DENSE_STATE_KEYS = ("adagrad.sum", "adam.m", "adam.v", "adam.step")


class Checkpoint:
    """What load_checkpoint gives back: model, optimizer (or None), train_state, config, path."""

    def __init__(self, model, optimizer, train_state, config, path):
        self.model, self.optimizer, self.train_state = model, optimizer, train_state
        self.config, self.path = config, path

    def __repr__(self):
        return f"Checkpoint({self.path!r}, step_count={getattr(self.optimizer, 'step_count', None)})"


# ---- saving -------------------------------------------------------------------
def _to_json(value, what):
    def default(obj):  # NumPy scalars and arrays, e.g. inside RNG states
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        raise TypeError(f"{type(obj).__name__} is not JSON-able")
    try:
        return json.dumps(value, default=default)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-able (dicts, lists, numbers, strings): {e}") from None


def _write_array(group, name, array):
    """One dataset written straight from `array` (no copy for a contiguous array)."""
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    group.create_dataset(name, data=array)


def _write(f, model, optimizer, config_json, state_json):
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["npdlrm_version"] = __version__
    f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    f.create_dataset("config", data=config_json)
    f.create_dataset("train_state", data=state_json)
    params = f.create_group("params", track_order=True)
    for name, array in model.state_dict().items():
        _write_array(params, name, array)
    if optimizer is None:
        return
    g = f.create_group("optimizer")
    g.attrs["hyper_parameters"] = json.dumps(optimizer.to_dict())
    g.attrs["step_count"] = int(optimizer.step_count)
    write_optimizer_state(g, model)


def write_optimizer_state(g, model):
    """model.optimizer_state() into group g: dense/<key>, tables/<i>, attr state_kinds."""
    state = model.optimizer_state()
    dense = g.create_group("dense")
    tables = g.create_group("tables")
    kinds = [t.state_kind for t in model.embeddings.tables]
    tables.attrs["state_kinds"] = json.dumps(kinds)
    for key, array in state.items():
        if key.startswith("dense."):
            _write_array(dense, key[len("dense."):], array)
        else:
            _write_array(tables, key.split(".")[1], array)


def save_checkpoint(path, model, optimizer=None, train_state=None):
    """Write `model` (and `optimizer`'s state, `train_state`: a JSON-able dict) to `path`.

    Atomic: an exception during the save leaves any previous file at `path` as it was."""
    path = os.fspath(path)
    if train_state is not None and not isinstance(train_state, dict):
        raise ValueError(f"train_state must be a dict, got {type(train_state).__name__}")
    if optimizer is not None:
        optimizer.check_bind(model)
    state_json = _to_json(train_state or {}, "train_state")
    config_json = _to_json(model.config.to_dict(), "the model config")
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path}: folder {folder} does not exist")
    tmp = os.path.join(folder, f".{name}.partial-{os.getpid()}")
    with atomic_write(path, tmp), h5py.File(tmp, "w") as f:
        _write(f, model, optimizer, config_json, state_json)


# ---- reading and checking -------------------------------------------------------
def _open(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not an HDF5 file ({e})") from None
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
    return json.loads(f[key].asstr()[()])


def _info(f, path):
    info = {"path": path, "format": FORMAT, "format_version": int(f.attrs["format_version"]),
            "npdlrm_version": str(f.attrs["npdlrm_version"]), "created": str(f.attrs["created"]),
            "config": _json(f, "config"), "train_state": _json(f, "train_state"),
            "params": {name: {"shape": list(ds.shape), "dtype": str(ds.dtype)}
                       for name, ds in f["params"].items()},
            "optimizer": None, "step_count": None}
    if "optimizer" in f:
        g = f["optimizer"]
        info["optimizer"] = json.loads(g.attrs["hyper_parameters"])
        info["step_count"] = int(g.attrs["step_count"])
    return info


def read_checkpoint_info(path):
    """Config, optimizer hyper-parameters and step count, train_state, tensor shapes and
    dtypes, format and versions of the checkpoint at `path`, without reading tensors."""
    with _open(path) as f:
        return _info(f, os.fspath(path))


def _check_params(f, model, path):
    own = model.state_dict()
    stored = f["params"]
    for name, target in own.items():
        if name not in stored:
            raise ValueError(f"{path}: the model has tensor {name} {target.shape}, the "
                             f"checkpoint does not: not the same architecture")
        ds = stored[name]
        if ds.shape != target.shape or ds.dtype != target.dtype:
            raise ValueError(f"{path}: tensor {name} is {ds.shape} {ds.dtype} in the checkpoint, "
                             f"{target.shape} {target.dtype} in the model")
    for name in stored:
        if name not in own:
            raise ValueError(f"{path}: the checkpoint has tensor {name} {stored[name].shape}, "
                             f"the model does not: not the same architecture")


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


def _stored_optimizer_spec(g, path):
    """{optimizer_state key: dataset} of group g, and the tables' optimizer kind."""
    datasets = {f"dense.{key}": ds for key, ds in g["dense"].items()}
    unknown = [k for k in g["dense"] if k not in DENSE_STATE_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown dense optimizer state {unknown[0]!r}; expected some "
                         f"of {DENSE_STATE_KEYS}")
    kinds = json.loads(g["tables"].attrs["state_kinds"])
    kind = sparse_state_kind(kinds, path)
    for k in g["tables"]:
        if kind is None:
            raise ValueError(f"{path}: table {k} has optimizer state but no state kind")
        datasets[f"embeddings.{k}.{kind}"] = g["tables"][k]
    return datasets, kinds, kind


def _describe_state(key):
    """'dense optimizer state adam.m' / 'optimizer state of table 3 (adagrad)'."""
    if key.startswith("dense."):
        return f"dense optimizer state {key[len('dense.'):]}"
    _, k, kind = key.split(".")
    return f"optimizer state of table {k} ({kind})"


def _check_optimizer_state(g, model, path):
    """Shapes and kinds of the stored optimizer state against `model`."""
    datasets, kinds, kind = _stored_optimizer_spec(g, path)
    tables = model.embeddings.tables
    if len(kinds) != len(tables):
        raise ValueError(f"{path}: optimizer state for {len(kinds)} tables, the model has "
                         f"{len(tables)}")
    if kind not in (None, "sgd", "adagrad", "rwsadagrad"):
        raise ValueError(f"{path}: unknown table optimizer state kind {kind!r}")
    dense_keys = [key[len("dense."):] for key in datasets if key.startswith("dense.")]
    spec = model.optimizer_state_spec(kind or "sgd", dense_keys)
    for key, (shape, dtype) in spec.items():
        if key not in datasets:
            raise ValueError(f"{path}: optimizer state {key} ({kind}) is missing")
        _check_array(datasets[key], shape, dtype, _describe_state(key), path)
    extra = sorted(set(datasets) - set(spec))
    if extra:
        raise ValueError(f"{path}: unexpected optimizer state {extra[0]}")


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


# ---- loading ------------------------------------------------------------------
def _read_into(ds, target):
    """Read a dataset straight into the C-contiguous array `target`."""
    if target.size:
        ds.read_direct(target)


def _load_params(f, model):
    stored = f["params"]
    for name in model.params.names:
        _read_into(stored[name], model.params.views[name])
    for k, table in enumerate(model.embeddings.tables):
        _read_into(stored[f"embeddings.{k}.weight"], table.weight)


def _load_optimizer_state(g, model, path):
    datasets, _, kind = _stored_optimizer_spec(g, path)
    model.load_optimizer_state(None)  # free the old state before reading the new
    model.load_optimizer_state({key: ds[()] for key, ds in datasets.items()}, kind, copy=False)


def load_checkpoint(path, model=None, optimizer=None, with_optimizer=True):
    """Load the checkpoint at `path`; returns a Checkpoint.

    model: load into it (same architecture, else ValueError naming the first difference),
    or None to build one from the stored config. optimizer: restore its step count and the
    model's optimizer state (its kinds must match the stored ones; it keeps its own learning
    rate and schedule), or None for a new Optimizer built from the stored hyper-parameters
    (None if none was saved). with_optimizer=False skips the optimizer state (inference):
    the model is left with none. Nothing changes unless every check passes.
    """
    path = os.fspath(path)
    with _open(path) as f:
        info = _info(f, path)
        config = DLRMConfig.from_dict(info["config"])
        stored_hyper = info["optimizer"]
        if model is None:
            model = DLRM(config, init="none")
        _check_params(f, model, path)
        _check_config(info["config"], model, path)
        if not with_optimizer and optimizer is not None:
            raise ValueError("with_optimizer=False but an optimizer was given")
        if optimizer is not None:
            _check_optimizer(stored_hyper, optimizer, model, path)
        elif with_optimizer and stored_hyper is not None:
            optimizer = Optimizer.from_dict(stored_hyper)
        if optimizer is not None:
            _check_optimizer_state(f["optimizer"], model, path)
        _load_params(f, model)
        if optimizer is None:
            model.load_optimizer_state(None)
        else:
            _load_optimizer_state(f["optimizer"], model, path)
            optimizer.step_count = info["step_count"]
            optimizer.bind(model)
    return Checkpoint(model, optimizer, info["train_state"], config, path)

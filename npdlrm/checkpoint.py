"""Atomic HDF5 checkpoints: parameters, optimizer state and the caller's train state.

The public API: save_checkpoint, load_checkpoint, read_checkpoint_info, open_checkpoint
and Checkpoint (what a load gives back), and the writers of the file layout
(`checkpoint_format.py`, which also describes it) that `save_checkpoint` and
`npdlrm.parallel.checkpoint.save_sharded` use. Reads of a stored checkpoint are in
`checkpoint_reader.py` (StoredCheckpoint), its checks in `checkpoint_checks.py`.

A save writes `partial_path(path, tag)` beside the target, fsyncs it, renames it onto the
target and fsyncs the folder. A load checks everything before it changes anything.
"""
import datetime
import json
import os

import numpy as np

from . import __version__
from .atomic import atomic_h5, partial_path
from .backend import check_device, to_host
from .checkpoint_format import DENSE_STATE_KEYS, FORMAT, FORMAT_VERSION, SHARDED
from .checkpoint_checks import CHECKSUM_ATTR, array_crc32, sparse_state_kind
from .checkpoint_reader import Piece, StoredCheckpoint
from .config import DLRMConfig
from .diskspace import h5_size
from .mmap_tables import sequential_access
from .model import DLRM
from .signals import check_interrupt

__all__ = ["FORMAT", "FORMAT_VERSION", "SHARDED", "DENSE_STATE_KEYS", "Checkpoint",
           "partial_path", "write_header", "write_optimizer_group", "write_optimizer_state",
           "write_dense", "write_piece", "write_manifest", "check_save_args", "check_folder",
           "save_checkpoint", "Piece", "StoredCheckpoint", "sparse_state_kind",
           "open_checkpoint", "read_checkpoint_info", "load_checkpoint"]


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
    """One dataset written straight from `array` (no copy for a contiguous array), with
    the CRC-32 of its bytes in attribute CHECKSUM_ATTR (a load verifies it). A SIGINT /
    SIGTERM deferred during the save (npdlrm.atomic) is acted on first."""
    check_interrupt()
    array = to_host(array)  # a GPU model's arrays: checkpoints do not depend on the device
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    with sequential_access(array):  # a memory-mapped table (mmap_tables) is read ahead
        ds = group.create_dataset(name, data=array)
        ds.attrs[CHECKSUM_ATTR] = np.int64(array_crc32(array))


def write_header(f, config_json, state_json, sharded=False):
    """The root attributes and the config and train_state datasets of either layout."""
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    if sharded:
        f.attrs[SHARDED] = True
    f.attrs["npdlrm_version"] = __version__
    f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    f.create_dataset("config", data=config_json)
    f.create_dataset("train_state", data=state_json)


def write_optimizer_group(f, optimizer):
    """/optimizer with the hyper-parameters and the step count; returns the group."""
    g = f.create_group("optimizer")
    g.attrs["hyper_parameters"] = json.dumps(optimizer.to_dict())
    g.attrs["step_count"] = int(optimizer.step_count)
    return g


def _write(f, model, optimizer, config_json, state_json):
    write_header(f, config_json, state_json)
    params = f.create_group("params", track_order=True)
    for name, array in model.state_dict().items():
        _write_array(params, name, array)
    if optimizer is None:
        return
    write_optimizer_state(write_optimizer_group(f, optimizer), model)


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


def write_dense(f, model, optimizer):
    """A shard file's replicated part: /params (the MLPs) and /optimizer/dense."""
    params = f.create_group("params", track_order=True)
    for name in model.params.names:
        _write_array(params, name, model.params.views[name])
    if optimizer is not None:
        dense = f.create_group("optimizer/dense")
        for key, array in model.params.state.items():
            _write_array(dense, key, array)


def write_piece(f, table, with_state, file_index):
    """Shard `table` (an EmbeddingTable) as a group of shard file `file_index` (f);
    returns its manifest entry [table, [r0, r1], [c0, c1], file_index, group]."""
    (r0, r1), (c0, c1) = table.rows, table.cols
    name = f"table{table.table_id}.rows{r0}-{r1}.cols{c0}-{c1}"
    g = f.create_group(name)
    _write_array(g, "weight", table.weight)
    if with_state and table.state is not None:
        _write_array(g, "state", table.state)
    return [table.table_id, [r0, r1], [c0, c1], file_index, name]


def write_manifest(f, config_json, state_json, token, plan, shard_files, pieces, optimizer,
                   state_kind):
    """A sharded checkpoint's manifest. plan: ShardingPlan.to_dict(); pieces: entries
    [table, [r0, r1], [c0, c1], shard file index, group]; state_kind: the tables' kind."""
    write_header(f, config_json, state_json, sharded=True)
    f.attrs["token"] = token
    for key, value in (("plan", plan), ("shard_files", shard_files), ("pieces", pieces)):
        f.create_dataset(key, data=json.dumps(value))
    if optimizer is not None:
        write_optimizer_group(f, optimizer).attrs["state_kind"] = json.dumps(state_kind)


def check_save_args(model, optimizer, train_state):
    """(config JSON, train_state JSON) of a save, after checking its arguments."""
    if train_state is not None and not isinstance(train_state, dict):
        raise ValueError(f"train_state must be a dict, got {type(train_state).__name__}")
    if optimizer is not None:
        optimizer.check_bind(model)
    state_json = _to_json(train_state or {}, "train_state")
    config_json = _to_json(model.config.to_dict(), "the model config")
    return config_json, state_json


def check_folder(path):
    """The folder `path` is saved into; FileNotFoundError unless it exists."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path}: folder {folder} does not exist")
    return folder


def save_checkpoint(path, model, optimizer=None, train_state=None):
    """Write `model` (and `optimizer`'s state, `train_state`: a JSON-able dict) to `path`.

    Atomic: an exception during the save leaves any previous file at `path` as it was."""
    path = os.fspath(path)
    config_json, state_json = check_save_args(model, optimizer, train_state)
    check_folder(path)
    tmp = partial_path(path, os.getpid())
    with atomic_h5(path, save_size(model, optimizer, config_json, state_json), tmp) as f:
        _write(f, model, optimizer, config_json, state_json)


def save_size(model, optimizer, *jsons):
    """The bytes a checkpoint file of `model` (and `optimizer`'s state) needs, about."""
    arrays = list(model.state_dict().values())
    if optimizer is not None:
        arrays += list(model.optimizer_state().values())
    return h5_size(sum(a.nbytes for a in arrays) + sum(len(j) for j in jsons),
                   len(arrays) + len(jsons))


# ---- reading and loading ---------------------------------------------------------
def open_checkpoint(path):
    """The checkpoint at `path` (either layout), open for checks and reads."""
    return StoredCheckpoint(path)


def read_checkpoint_info(path):
    """Config, optimizer hyper-parameters and step count, train_state, tensor shapes and
    dtypes (tables at full size), format and versions, and for a sharded checkpoint its
    shard files and plan ('sharded'; None otherwise), without reading tensors."""
    with open_checkpoint(path) as stored:
        return stored.info


def load_checkpoint(path, model=None, optimizer=None, with_optimizer=True, verify=True,
                    device=None):
    """Load the checkpoint at `path` (either layout); returns a Checkpoint.

    model: load into it (same architecture, else ValueError naming the first difference),
    or None to build one from the stored config. optimizer: restore its step count and the
    model's optimizer state (its kinds must match the stored ones; it keeps its own learning
    rate and schedule), or None for a new Optimizer built from the stored hyper-parameters
    (None if none was saved). with_optimizer=False skips the optimizer state (inference):
    the model is left with none. Nothing changes unless every check passes.
    verify: the checks include a pass over every tensor to be read (its CRC-32, finite
    values); verify=False skips it (huge files) and refuses non-finite values only after
    reading them into the model.
    device: where a model built here lives ('cpu' default, or 'gpu'); a given model stays on
    its device (a GPU model is read through the host).
    """
    with open_checkpoint(path) as stored:
        config = DLRMConfig.from_dict(stored.config)
        if model is None:
            model = DLRM(config, init="none")
            target = check_device(device or "cpu")
        else:
            target = model.device
            if device is not None and check_device(device) != target:
                raise ValueError(f"device={device!r}, but the given model is on {target!r} "
                                 f"(move it with model.to)")
        if target == "gpu":
            model.check_gpu_support()
        optimizer = stored.check(model, optimizer, with_optimizer, verify)
        model.to("cpu")
        try:
            stored.load(model, optimizer, verify)
        finally:
            model.to(target)
    return Checkpoint(model, optimizer, stored.info["train_state"], config, stored.path)

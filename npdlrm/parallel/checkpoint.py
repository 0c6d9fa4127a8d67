"""Sharded checkpoints of a DistributedDLRM: collective, atomic, resharded on load.

The file layout (a manifest and one shard file per rank) is described in
`npdlrm/checkpoint_format.py`, written by `npdlrm/checkpoint.py` and read by
`npdlrm/checkpoint_reader.py` (checked by `npdlrm/checkpoint_checks.py`); this module runs the collective protocol around them.

A save, on every rank of model.comm:
1. every rank writes the pieces it holds (its table shards, their optimizer state; rank 0
   also the MLPs, their optimizer state and the replicated tables) into its own shard
   file beside `path` (`shard_name`: a new token per save), and fsyncs it;
2. every rank learns whether every rank succeeded; if not, each removes its shard file
   and every rank raises;
3. rank 0 commits: it writes the manifest at `path` atomically (`partial_path(path,
   token)`, then a rename), then removes the shard files of the checkpoint it replaced
   and the leftovers of killed saves (shard files and partial manifests of other tokens).
Until that rename, the previous checkpoint at `path` and its shard files stand. A rank
that dies ends the job (mpiexec stops the others); the files of its save are leftovers
that the next save removes and reports (SaveResult.message).

A load checks, on every rank, all that this rank will read, and every rank raises if
some rank refused; then each rank reads the overlap of every stored piece with every
piece it holds now: any number of ranks and any plan, single-file checkpoints too.
"""
import contextlib
import os
import re
import secrets
from typing import List, NamedTuple

import h5py

from ..atomic import atomic_h5, fsync_path, reserved_h5
from ..diskspace import h5_size
from .agree import agree, attempt
from ..checkpoint import (Checkpoint, check_folder, check_save_args, open_checkpoint,
                          partial_path, sparse_state_kind, write_dense, write_manifest,
                          write_piece)

TOKEN_CHARS = 16  # hex digits of a save's token


def new_token(path):
    """A random token that no file of the checkpoint at `path` carries yet."""
    folder = os.path.dirname(os.path.abspath(path))
    taken = {_token_of(entry, path) for entry in os.listdir(folder)} | {_previous_token(path)}
    while True:
        token = secrets.token_hex(TOKEN_CHARS // 2)
        if token not in taken:
            return token


def shard_name(name, token, rank):
    """The shard file of `rank` in save `token` of the checkpoint named `name`."""
    return f"{name}.shard-{token}-{rank}"


def _token_of(entry, path):
    """The save token of folder entry `entry` when it is a shard file or a partial
    manifest of the checkpoint at `path`, else None."""
    name = os.path.basename(path)
    m = re.fullmatch(re.escape(name) + r"\.shard-([0-9a-f]{%d})-\d+" % TOKEN_CHARS, entry)
    if m:
        return m.group(1)
    token = entry[-TOKEN_CHARS:]
    if re.fullmatch(r"[0-9a-f]+", token) and entry == os.path.basename(partial_path(path, token)):
        return token
    return None


class SaveResult(NamedTuple):
    """What save_sharded did, the same on every rank: the manifest, its shard files, and
    the files it removed: those of the checkpoint it replaced and leftovers of killed saves."""
    path: str
    shard_files: List[str]
    replaced: List[str]
    leftovers: List[str]

    @property
    def message(self):
        """A line about the leftovers removed ('' when there were none)."""
        if not self.leftovers:
            return ""
        return (f"removed {len(self.leftovers)} leftover files of interrupted saves of "
                f"{self.path}: {', '.join(self.leftovers)}")




# ---- saving ------------------------------------------------------------------------
def _stored_tables(model):
    """The shards this rank stores: its own, and the replicated tables on rank 0 only."""
    return [t for t in model.local.embeddings.tables
            if model.rank == 0 or t.table_id not in model.replicated]


def _write_shard(file, model, optimizer):
    """This rank's shard file, fsynced; returns the manifest entries of its pieces. Its
    space is reserved first (a full disk: DiskFullError, the file left to the caller)."""
    with reserved_h5(file, _shard_size(model, optimizer)) as f:
        if model.rank == 0:
            write_dense(f, model.local, optimizer)
        entries = [write_piece(f, t, optimizer is not None, model.rank)
                   for t in _stored_tables(model)]
    fsync_path(file)
    return entries


def _shard_size(model, optimizer):
    """The bytes this rank's shard file needs, about."""
    arrays = [t.weight for t in _stored_tables(model)]
    if optimizer is not None:
        arrays += [t.state for t in _stored_tables(model) if t.state is not None]
    if model.rank == 0:
        arrays += [model.local.params.views[n] for n in model.local.params.names]
        if optimizer is not None:
            arrays += list(model.local.params.state.values())
    return h5_size(sum(a.nbytes for a in arrays), len(arrays))


def _remove(file):
    with contextlib.suppress(OSError):
        os.remove(file)


def _previous_token(path):
    """The token of the sharded checkpoint now at `path` (None: none, or not sharded)."""
    with contextlib.suppress(OSError, KeyError), h5py.File(path, "r") as f:
        return str(f.attrs["token"])
    return None


def _remove_stale(path, token, previous):
    """Remove shard files and partial manifests of `path` of other tokens than `token`;
    returns (those of the replaced checkpoint `previous`, the leftovers)."""
    folder = os.path.dirname(os.path.abspath(path))
    replaced, leftovers = [], []
    for entry in sorted(os.listdir(folder)):
        t = _token_of(entry, path)
        if t is None or t == token:
            continue
        try:
            os.remove(os.path.join(folder, entry))
        except OSError:
            continue
        (replaced if t == previous else leftovers).append(entry)
    return replaced, leftovers


def _commit(path, token, shard_files, pieces, model, optimizer, jsons, state_kind):
    """Rank 0: the manifest at `path`, atomically, then the stale files removed."""
    folder = os.path.dirname(os.path.abspath(path))
    unseen = [n for n in shard_files if not os.path.exists(os.path.join(folder, n))]
    if unseen:
        raise FileNotFoundError(f"cannot save {path}: rank 0 does not see shard file "
                                f"{unseen[0]}: every rank must save into one shared folder")
    with contextlib.suppress(OSError):  # the shard files' names before the manifest's
        fsync_path(folder, directory=True)
    previous = _previous_token(path)
    tmp = partial_path(path, token)
    size = h5_size(sum(len(j) for j in jsons) + 200 * (len(pieces) + len(shard_files)), 8)
    with atomic_h5(path, size, tmp) as f:
        write_manifest(f, *jsons, token, model.plan.to_dict(), shard_files, pieces,
                       optimizer, state_kind)
    return SaveResult(path, shard_files, *_remove_stale(path, token, previous))


def _begin(path, model, optimizer, train_state):
    """A save's checks on every rank; returns (config and train_state JSON, the save's
    token, the tables' optimizer state kind)."""
    comm = model.comm

    def prepare():
        check_folder(path)
        jsons = check_save_args(model.local, optimizer, train_state)
        return jsons, new_token(path) if comm.rank == 0 else None

    prepared, error = attempt(prepare)
    jsons, token = prepared or (None, None)
    kinds = [t.state_kind for t in model.local.embeddings.tables]
    everyone = agree(comm, error, (kinds, token))
    state_kind = sparse_state_kind([k for rank_kinds, _ in everyone for k in rank_kinds], path)
    return jsons, everyone[0][1], state_kind


def save_sharded(path, model, optimizer=None, train_state=None):
    """Save DistributedDLRM `model`, `optimizer`'s state and `train_state` (a JSON-able
    dict; rank 0's is kept) to `path`; collective over model.comm.

    Returns a SaveResult (its `message` reports removed leftovers of killed saves). If
    any rank fails, every rank raises and the checkpoint previously at `path` stands."""
    comm, path = model.comm, os.fspath(path)
    jsons, token, state_kind = _begin(path, model, optimizer, train_state)
    names = [shard_name(os.path.basename(path), token, r) for r in range(comm.size)]
    mine = os.path.join(os.path.dirname(os.path.abspath(path)), names[comm.rank])
    entries, error = attempt(lambda: _write_shard(mine, model, optimizer))
    pieces = agree(comm, error, entries, cleanup=lambda: _remove(mine))
    result, error = None, None
    if comm.rank == 0:
        result, error = attempt(lambda: _commit(
            path, token, names, [e for rank in pieces for e in rank], model, optimizer,
            jsons, state_kind))
    return agree(comm, error, result, cleanup=lambda: _remove(mine))[0]


# ---- loading -----------------------------------------------------------------------
def load_sharded(path, model, optimizer=None, with_optimizer=True, verify=True):
    """Load the checkpoint at `path` (sharded on any number of ranks, or single-file)
    into DistributedDLRM `model`, whatever its plan; collective over model.comm.

    optimizer, with_optimizer and verify as in `npdlrm.checkpoint.load_checkpoint`. Every
    rank checks what it will read (verify: its checksums and finite values too) before
    anything changes; if some rank refuses, every rank raises. Returns a Checkpoint whose
    model is `model`."""
    comm = model.comm
    stored, error = attempt(lambda: open_checkpoint(path))
    try:
        if error is None:
            optimizer, error = attempt(
                lambda: stored.check(model.local, optimizer, with_optimizer, verify))
        agree(comm, error)
        _, error = attempt(lambda: stored.load(model.local, optimizer, verify))
    finally:
        if stored is not None:
            stored.close()
    agree(comm, error)
    return Checkpoint(model, optimizer, stored.info["train_state"], model.config,
                      os.fspath(path))

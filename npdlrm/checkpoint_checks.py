"""The integrity checks of a stored checkpoint and its checks against a model, that
StoredCheckpoint (`checkpoint_reader.py`) runs before a load changes anything: checksums
and non-finite values of the stored tensors, the tensors, config and optimizer of the
checkpoint against the model's, dataset shapes, and the tiling of stored table pieces.

Checksums: the writers (`checkpoint.py`) give every tensor dataset an attribute
CHECKSUM_ATTR, the CRC-32 (zlib) of its C-order bytes. A load verifies, by default, in a
separate pass before anything changes, the CRC-32 of every dataset it will read and that
every value is finite (`verify_dataset`); verify=False (`--no-verify`) skips that pass
(huge checkpoints: it reads them twice) and checks only that what was read is finite,
after reading it (`check_loaded`). Files written before checksums existed have no
attribute: their tensors are checked for finite values only.
"""
import itertools
import zlib

import numpy as np

from .embedding_layout import stored_tables


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
    """How many values of array `a` are NaN or infinite (0 for non-float dtypes); a big
    array (e.g. a memory-mapped table) is scanned in blocks of rows, so the temporary
    stays at most VERIFY_BLOCK_BYTES."""
    if a.dtype.kind not in "fc":
        return 0
    if a.ndim == 0 or a.nbytes <= VERIFY_BLOCK_BYTES:
        finite = np.isfinite(a)
        return 0 if finite.all() else int(a.size - np.count_nonzero(finite))
    step = max(1, VERIFY_BLOCK_BYTES // max(a.nbytes // a.shape[0], 1))
    return sum(_nonfinite(a[r0:r0 + step]) for r0 in range(0, a.shape[0], step))


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


# ---- checks against a model -------------------------------------------------------
def check_params(stored, own, path):
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


def model_tensors(model):
    """{name: (shape, dtype)} of the whole model `model` is (a part of): tables at full size."""
    out = {name: (v.shape, v.dtype) for name, v in model.params.views.items()}
    for name, shape in stored_tables(model.config):  # QR, MD, learned weights included
        out[name] = (shape, model.params.dtype)
    return out


def check_config(stored, model, path):
    own = model.config.to_dict()
    for key in sorted(set(own) | set(stored)):  # a field left out of one: a variant is off
        value = own.get(key)
        if key != "extra" and stored.get(key) != value:
            raise ValueError(f"{path}: config field {key} is {stored.get(key)!r} in the "
                             f"checkpoint, {value!r} in the model")


def check_array(ds, shape, dtype, what, path):
    if ds.shape != tuple(shape) or ds.dtype != dtype:
        raise ValueError(f"{path}: {what} is {ds.shape} {ds.dtype} in the checkpoint, expected "
                         f"{tuple(shape)} {np.dtype(dtype)}")


def sparse_state_kind(kinds, path):
    """The one optimizer kind of the stored table states (None: no step was taken)."""
    used = {k for k in kinds if k is not None}
    if len(used) > 1:
        raise ValueError(f"{path}: the tables hold state of different optimizers {sorted(used)}")
    return used.pop() if used else None


def describe_state(key):
    """'dense optimizer state adam.m' / 'optimizer state of table 3 (adagrad)'."""
    if key.startswith("dense."):
        return f"dense optimizer state {key[len('dense.'):]}"
    _, k, kind = key.split(".")
    return f"optimizer state of table {k} ({kind})"


def check_optimizer(stored, optimizer, model, path):
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


# ---- stored table pieces -----------------------------------------------------------
def overlap(a, b):
    """The intersection of ranges a and b, None when empty."""
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None


def check_tiling(pieces, table_sizes, dim, path):
    """Raise unless the pieces of every table cover it exactly once."""
    for k, V in enumerate(table_sizes):
        mine = [p for p in pieces if p.table == k]
        inside = all(0 <= p.rows[0] < p.rows[1] <= V and 0 <= p.cols[0] < p.cols[1] <= dim
                     for p in mine)
        area = sum(p.shape[0] * p.shape[1] for p in mine)
        disjoint = not any(overlap(a.rows, b.rows) and overlap(a.cols, b.cols)
                           for a, b in itertools.combinations(mine, 2))
        if not (inside and disjoint and area == V * dim):
            raise ValueError(f"{path}: the stored pieces of table {k} do not cover its "
                             f"{V} x {dim} values exactly once")
    stray = sorted({p.table for p in pieces} - set(range(len(table_sizes))))
    if stray:
        raise ValueError(f"{path}: pieces of table {stray[0]}, the model has "
                         f"{len(table_sizes)} tables")


# ---- after an unverified load ----------------------------------------------------
def check_loaded(model, path):
    """After an unverified load: refuse non-finite values in what `model` now holds."""
    arrays = [(f"tensor {name}", model.params.views[name]) for name in model.params.names]
    arrays += [(f"dense optimizer state {k}", np.asarray(v))
               for k, v in model.params.state.items()]
    for t in model.embeddings.tables:
        arrays.append((f"tensor {t.name}", t.weight))
        if t.state is not None:
            arrays.append((f"{t.state_kind} state of table {t.table_id}", t.state))
    for what, a in arrays:
        _refuse_nonfinite(_nonfinite(a), a.size, what, path, after=True)

"""Checking and normalising one batch before anything is computed or changed."""
from typing import NamedTuple

import numpy as np

from .backend import array_module, check_device
from .kernels.validate import BAD_INDEX, BAD_OFFSET, check_bags


class PackedBags(NamedTuple):
    """Every table's bags back to back (what the all-tables kernels take): indices (nnz,)
    int64; offsets (T, B + 1) int64 positions into indices; weights None or (nnz,)."""
    indices: object
    offsets: object
    weights: object


class Batch:
    """A checked batch: dense (B, n); per table indices (nnz,) and offsets (B+1,) int64;
    optional per-sample weights per table; labels (B,) or None. packed: None, or the
    PackedBags of a batch on the GPU (`to_device`)."""

    def __init__(self, dense, indices, offsets, labels=None, per_sample_weights=None,
                 packed=None):
        self.dense, self.indices, self.offsets = dense, indices, offsets
        self.labels, self.per_sample_weights = labels, per_sample_weights
        self.packed = packed

    def to_device(self, device):
        """This (checked, host) batch on `device`: itself for 'cpu'; for 'gpu' a Batch of
        CuPy arrays, its bags packed in one upload (per-table arrays are views of it).
        Every table must be present."""
        if check_device(device) == "cpu":
            return self
        return self.packed_on(array_module(device))

    def packed_on(self, xp):
        """A Batch of xp's arrays (numpy or cupy) with its bags packed (`PackedBags`): one
        upload of all tables' bags, the per-table arrays being views of it."""
        if any(i is None for i in self.indices):
            raise ValueError("a batch for the GPU needs every table's bags")
        counts = [i.shape[0] for i in self.indices]
        starts = np.cumsum([0] + counts[:-1]).astype(np.int64)
        local = np.stack(self.offsets) if self.offsets else np.zeros((0, self.size + 1), np.int64)
        idx = xp.asarray(np.concatenate(self.indices).astype(np.int64, copy=False)
                         if counts else np.zeros(0, np.int64))
        off = xp.asarray(local + starts[:, None])
        loc = xp.asarray(local)
        w = psw = None
        if self.per_sample_weights is not None:
            dt = self.dense.dtype
            w = xp.asarray(np.concatenate([np.ones(c, dt) if a is None else a for a, c
                                           in zip(self.per_sample_weights, counts)]))
            psw = [None if a is None else w[s:s + c] for a, s, c
                   in zip(self.per_sample_weights, starts, counts)]
        return Batch(xp.asarray(self.dense), [idx[s:s + c] for s, c in zip(starts, counts)],
                     [loc[k] for k in range(len(counts))],
                     None if self.labels is None else xp.asarray(self.labels), psw,
                     PackedBags(idx, off, w))

    @property
    def size(self):
        return self.dense.shape[0]

    def weights_of(self, k):
        return None if self.per_sample_weights is None else self.per_sample_weights[k]


def _dense(dense, num_dense, dtype):
    x = np.asarray(dense)
    if x.ndim != 2:
        raise ValueError(f"dense features must be 2-D (batch, {num_dense}), got shape {x.shape}")
    if x.shape[1] != num_dense:
        raise ValueError(f"dense features have width {x.shape[1]}, the bottom MLP expects "
                         f"{num_dense}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"dense features must be real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=dtype)
    if not np.isfinite(x).all():
        r, c = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"dense features hold a non-finite value {x[r, c]} at row {r}, "
                         f"column {c}")
    return x


def _int_array(a, what):
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {a.shape}")
    if a.size == 0 and not np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {a.dtype}")
    if a.dtype not in (np.int32, np.int64):
        if a.size and (a.max() > np.iinfo(np.int64).max):
            raise ValueError(f"{what} holds {a.max()}, beyond int64")
        a = a.astype(np.int64)
    return np.ascontiguousarray(a)


def _bags(k, idx, off, B, num_rows):
    idx = _int_array(idx, f"table {k}: indices")
    off = _int_array(off, f"table {k}: offsets")
    nnz = idx.shape[0]
    if off.shape[0] == B:
        full = np.empty(B + 1, dtype=np.int64)
        full[:B] = off
        full[B] = nnz
    elif off.shape[0] == B + 1:
        full = off.astype(np.int64, copy=False)
    else:
        raise ValueError(f"table {k}: expected {B} offsets (bag starts) or {B + 1}, got "
                         f"{off.shape[0]} for a batch of {B}")
    status, pos = check_bags(idx, full, num_rows)
    if status == BAD_OFFSET:
        if pos == 0:
            raise ValueError(f"table {k}: offsets must start at 0, got {full[0]}")
        if full[pos] > nnz:
            raise ValueError(f"table {k}: offset {full[pos]} at position {pos} is past the end "
                             f"of the {nnz} indices")
        raise ValueError(f"table {k}: offsets must be non-decreasing, got {full[pos - 1]} then "
                         f"{full[pos]} at position {pos}")
    if full[B] != nnz:
        raise ValueError(f"table {k}: {B + 1} offsets for a batch of {B} samples are read "
                         f"as B+1 bag boundaries, whose last must equal the number of "
                         f"indices {nnz}, got {full[B]}; if they are the starts of {B + 1} "
                         f"bags, the dense features hold {B} rows: the batch sizes differ")
    if status == BAD_INDEX:
        raise ValueError(f"table {k}: index {idx[pos]} at position {pos} is out of range "
                         f"[0, {num_rows})")
    return idx, full


def _labels(labels, B, dtype, binary):
    y = np.asarray(labels)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numbers (0/1 or in [0, 1]), got dtype {y.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (B,):
        raise ValueError(f"labels must have shape ({B},) for a batch of {B}, got {y.shape}")
    y = np.ascontiguousarray(y, dtype=dtype)
    bad = ~((y >= 0) & (y <= 1))
    if binary:
        bad |= (y != 0) & (y != 1)
    if bad.any():
        i = int(np.argmax(bad))
        allowed = "0 or 1 (weighted BCE)" if binary else "in [0, 1]"
        raise ValueError(f"label {y[i]} at position {i} must be {allowed}")
    return y


def _sample_weights(per_sample_weights, indices, dtype):
    if per_sample_weights is None:
        return None
    if len(per_sample_weights) != len(indices):
        raise ValueError(f"per_sample_weights: expected one entry per table ({len(indices)}), "
                         f"got {len(per_sample_weights)}")
    out = []
    for k, (w, idx) in enumerate(zip(per_sample_weights, indices)):
        if w is None or idx is None:
            out.append(None)
            continue
        w = np.ascontiguousarray(w, dtype=dtype)
        if w.shape != idx.shape:
            raise ValueError(f"table {k}: per_sample_weights shape {w.shape} does not match "
                             f"indices shape {idx.shape}")
        if not np.isfinite(w).all():
            raise ValueError(f"table {k}: per_sample_weights hold a non-finite value")
        out.append(w)
    return out


def make_batch(config, dense, indices, offsets, labels=None, per_sample_weights=None,
               need_labels=False, allow_missing=False):
    """Check one batch against `config` (a DLRMConfig); returns a Batch or raises ValueError.

    allow_missing: a table whose indices and offsets are both None is left out (None in
    the Batch): a distributed rank gets only the tables it needs."""
    dtype = np.dtype(config.dtype)
    x = _dense(dense, config.num_dense, dtype)
    B, T = x.shape[0], config.num_tables
    if need_labels:
        if labels is None:
            raise ValueError("labels are required for a training step or a loss")
        if B == 0:
            raise ValueError("the batch is empty (0 samples): nothing to train on")
    for what, seq in (("indices", indices), ("offsets", offsets)):
        if isinstance(seq, np.ndarray) and seq.ndim < 2 or not hasattr(seq, "__len__"):
            raise ValueError(f"{what} must be a sequence with one array per table ({T})")
        if len(seq) != T:
            raise ValueError(f"{what}: expected one array per table ({T} tables), got {len(seq)}")
    checked = [(None, None) if allow_missing and indices[k] is None and offsets[k] is None
               else _bags(k, indices[k], offsets[k], B, config.table_sizes[k]) for k in range(T)]
    idx = [c[0] for c in checked]
    off = [c[1] for c in checked]
    y = None if labels is None else _labels(labels, B, dtype, config.loss == "wbce")
    w = _sample_weights(per_sample_weights, idx, dtype)
    return Batch(x, idx, off, y, w)

"""The processed Criteo HDF5 format ("npdlrm-criteo", version 1): writer and reader.

A file holds root attributes (format, format_version, dataset, num_dense, num_tables,
table_sizes, day_rows, num_rows, chunk_rows, parts, preprocessing) and, when `parts`
is empty, the datasets `dense` (n, 13) float32, `labels` (n,) float32 and
`sparse/0..25` (n,) int32 (int64 for a table over 2**31-1 rows). Otherwise the file
is a manifest and the rows live in the part files it names, concatenated in order.
Every file is written under a temporary name and renamed when complete.

The datasets are chunked (`chunk_rows` rows) with HDF5's Fletcher-32 filter: every
chunk read is checked as it is read (no extra pass; h5py cannot skip it), and a chunk
failing its checksum raises ValueError naming the file and dataset. Files written before
the filter was added have none and load unchecked. Opening checks that every dataset
holds the same number of rows.
"""
import contextlib
import json
import os

import h5py
import numpy as np

from ..atomic import atomic_write
from . import splits

FORMAT_NAME = "npdlrm-criteo"
FORMAT_VERSION = 1
NUM_DENSE = 13
NUM_TABLES = 26
INT32_MAX = 2**31 - 1
# HDF5 gives every open dataset its own chunk cache of rdcc_nbytes: a budget for the
# whole file is shared out over its datasets (dense, labels, 26 sparse). The writer
# writes whole chunks, so a cache that holds one chunk per dataset is enough.
CHUNK_CACHE_BUDGET = 64 << 20
NUM_DATASETS = 2 + NUM_TABLES


def chunk_cache_bytes(budget=CHUNK_CACHE_BUDGET, datasets=NUM_DATASETS):
    """rdcc_nbytes (per dataset) so that `datasets` caches fill `budget` bytes."""
    return max(int(budget) // int(datasets), 1 << 16)


def partial_path(path):
    """The temporary name `path` is written under: `.{name}.partial` beside it."""
    head, name = os.path.split(os.fspath(path))
    return os.path.join(head, f".{name}.partial")


def sparse_dtype(table_size):
    """int32, or int64 for a table over 2**31-1 rows."""
    return np.int32 if int(table_size) <= INT32_MAX else np.int64


@contextlib.contextmanager
def atomic_h5(path):
    """Yield an h5py.File written at `partial_path(path)`; renamed to `path` on success.

    On an exception the partial file is removed and the exception propagates.
    """
    path = os.fspath(path)
    tmp = partial_path(path)
    with atomic_write(path, tmp), h5py.File(tmp, "w", rdcc_nbytes=chunk_cache_bytes()) as f:
        yield f


def write_root_attrs(f, dataset, table_sizes, day_rows, chunk_rows, parts, preprocessing):
    """Write the root attributes of a processed file (or part) to h5py.File f."""
    a = f.attrs
    a["format"] = FORMAT_NAME
    a["format_version"] = np.int64(FORMAT_VERSION)
    a["dataset"] = str(dataset)
    a["num_dense"] = np.int64(NUM_DENSE)
    a["num_tables"] = np.int64(NUM_TABLES)
    a["table_sizes"] = np.asarray(table_sizes, dtype=np.int64)
    a["day_rows"] = np.asarray(day_rows, dtype=np.int64)
    a["num_rows"] = np.int64(sum(int(r) for r in day_rows))
    a["chunk_rows"] = np.int64(chunk_rows)
    a["parts"] = json.dumps(list(parts))
    a["preprocessing"] = json.dumps(preprocessing, sort_keys=True)


class RowWriter:
    """Appends rows to the datasets of an open h5py.File, whole chunks at a time."""

    def __init__(self, f, table_sizes, chunk_rows, compression=None, columns=None, dense=True):
        """columns: the sparse columns this writer appends to (default all); dense: create
        every dataset and append the dense values and labels too (else the datasets exist
        and only `columns` are appended, from row 0: a later pass over the same rows)."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows)
        self.rows = 0
        c, z = self.chunk_rows, compression
        columns = range(len(table_sizes)) if columns is None else columns
        self._dense = self._labels = None
        if dense:
            # every chunk carries a Fletcher-32 checksum that HDF5 checks on each read
            self._dense = f.create_dataset("dense", (0, NUM_DENSE), np.float32,
                                           chunks=(c, NUM_DENSE), maxshape=(None, NUM_DENSE),
                                           compression=z, fletcher32=True)
            self._labels = f.create_dataset("labels", (0,), np.float32, chunks=(c,),
                                            maxshape=(None,), compression=z, fletcher32=True)
            grp = f.create_group("sparse")
            for k, n in enumerate(table_sizes):
                grp.create_dataset(str(k), (0,), sparse_dtype(n), chunks=(c,),
                                   maxshape=(None,), compression=z, fletcher32=True)
        self._sparse = [(k, f["sparse"][str(k)]) for k in columns]
        self._pending = []
        self._pending_rows = 0

    def append(self, dense, ids, labels):
        """Queue rows. dense: (n, 13) float32 (None when not writing it); ids: (n, 26)
        int, the writer's columns filled; labels: (n,) float32 (only its length is used
        when not writing it)."""
        if len(labels):
            self._pending.append((dense, ids, labels))
            self._pending_rows += len(labels)
        if self._pending_rows >= self.chunk_rows:
            self._flush(self._pending_rows - self._pending_rows % self.chunk_rows)

    def close(self):
        """Write the rows still queued."""
        self._flush(self._pending_rows)

    def _flush(self, n):
        if n == 0:
            return
        ids = np.concatenate([p[1] for p in self._pending])
        labels = np.concatenate([p[2] for p in self._pending])
        dense = (labels if self._dense is None  # a later pass: sparse columns only
                 else np.concatenate([p[0] for p in self._pending]))
        lo, hi = self.rows, self.rows + n
        if self._dense is not None:
            self._dense.resize((hi, NUM_DENSE))
            self._dense[lo:hi] = dense[:n]
            self._labels.resize((hi,))
            self._labels[lo:hi] = labels[:n]
        for k, ds in self._sparse:
            ds.resize((hi,))
            ds[lo:hi] = ids[:n, k].astype(ds.dtype, copy=False)
        self.rows = hi
        self._pending_rows -= n
        self._pending = [(dense[n:], ids[n:], labels[n:])] if self._pending_rows else []


def read_attrs(path):
    """Root attributes of a processed file as a dict (JSON attributes decoded).

    Raises ValueError when `path` is not an npdlrm processed Criteo file of this version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"processed data file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: f.attrs[k] for k in f.attrs}
    except OSError as e:
        raise ValueError(f"{path} is not an npdlrm processed Criteo file (not HDF5: {e})") from None
    fmt = attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT_NAME:
        raise ValueError(f"{path} is not an npdlrm processed Criteo file "
                         f"(format attribute {fmt!r}, expected {FORMAT_NAME!r})")
    version = int(attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {version}, this npdlrm reads {FORMAT_VERSION}")
    for key in ("parts", "preprocessing"):
        attrs[key] = json.loads(attrs[key])
    return attrs


class ProcessedData:
    """Read access to a processed Criteo file (or manifest and its parts)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        attrs = read_attrs(self.path)
        self.dataset = str(attrs["dataset"])
        self.num_dense = int(attrs["num_dense"])
        self.table_sizes = tuple(int(n) for n in attrs["table_sizes"])
        self.num_rows = int(attrs["num_rows"])
        self.day_rows = tuple(int(n) for n in attrs["day_rows"])
        self.chunk_rows = int(attrs["chunk_rows"])
        self.preprocessing = attrs["preprocessing"]
        folder = os.path.dirname(self.path)
        names = attrs["parts"]
        paths = [os.path.join(folder, n) for n in names] if names else [self.path]
        for p in paths:
            if not os.path.exists(p):
                raise ValueError(f"{self.path}: part file {p} is missing")
        self._files, self._sets = [], []
        try:
            for p in paths:
                if p != self.path:
                    read_attrs(p)
                self._files.append(h5py.File(p, "r"))
            self._sets = [(f["dense"], [f["sparse"][str(k)] for k in range(len(self.table_sizes))],
                           f["labels"]) for f in self._files]
            for dense, sparse, labels in self._sets:
                _check_lengths(dense, sparse, labels, self.num_dense)
            self._bounds = np.concatenate(
                [[0], np.cumsum([s[2].shape[0] for s in self._sets])]).astype(np.int64)
        except KeyError as e:
            self.close()
            raise ValueError(f"{self.path}: a dataset is missing from its data ({e})") from None
        except BaseException:
            self.close()
            raise
        if int(self._bounds[-1]) != self.num_rows:
            self.close()
            raise ValueError(f"{self.path}: num_rows is {self.num_rows} but its data holds "
                             f"{int(self._bounds[-1])} rows")

    def split_ranges(self, split):
        """[(start, stop)] global row ranges of 'train' | 'test' | 'val' | 'all'."""
        return splits.split_ranges(self.day_rows, split)

    def read(self, start, stop, tables=None):
        """(dense (n, 13) float32, [26 x (n,) int64], labels (n,) float32) of rows [start, stop).

        tables: the tables whose columns are read (None: all); the others are None."""
        start, stop = int(start), int(stop)
        wanted = range(len(self.table_sizes)) if tables is None else set(tables)
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"rows [{start}, {stop}) out of range: {self.path} holds "
                             f"{self.num_rows} rows")
        dense, sparse, labels = [], [[] for _ in self.table_sizes], []
        for i, (dense_set, sparse_sets, label_set) in enumerate(self._sets):
            lo = max(start, int(self._bounds[i])) - int(self._bounds[i])
            hi = min(stop, int(self._bounds[i + 1])) - int(self._bounds[i])
            if hi <= lo:
                continue
            dense.append(_read_rows(dense_set, lo, hi))
            labels.append(_read_rows(label_set, lo, hi))
            for k, ds in enumerate(sparse_sets):
                if k in wanted:
                    sparse[k].append(_read_rows(ds, lo, hi).astype(np.int64))
        if not labels:
            return (np.zeros((0, self.num_dense), np.float32),
                    [np.zeros(0, np.int64) if k in wanted else None
                     for k in range(len(self.table_sizes))], np.zeros(0, np.float32))
        return (np.concatenate(dense),
                [np.concatenate(s) if k in wanted else None for k, s in enumerate(sparse)],
                np.concatenate(labels))

    def close(self):
        """Close the HDF5 files."""
        for f in self._files:
            f.close()
        self._files, self._sets = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_lengths(dense, sparse, labels, num_dense):
    """Refuse a file whose datasets disagree on the number of rows (or dense width)."""
    path = dense.file.filename
    if dense.ndim != 2 or dense.shape[1] != num_dense:
        raise ValueError(f"{path}: dataset dense has shape {dense.shape}, expected "
                         f"(rows, {num_dense}): the file is damaged")
    n = labels.shape[0]
    for ds in [dense, *sparse]:
        if ds.shape[0] != n:
            raise ValueError(f"{path}: dataset {ds.name.lstrip('/')} has {ds.shape[0]:,} rows, "
                             f"labels {n:,}: the file is damaged (truncated or mixed)")


def _read_rows(ds, lo, hi):
    """ds[lo:hi]; a failed read (a chunk failing its Fletcher-32 checksum, an I/O error)
    raises ValueError naming the file and the dataset."""
    try:
        return ds[lo:hi]
    except OSError as e:
        text = (str(e).strip().splitlines() or ["read failed"])[0]
        why = ("a chunk fails its Fletcher-32 checksum: the file is corrupted"
               if "filter" in text else "the file is damaged or unreadable")
        raise ValueError(f"{ds.file.filename}: cannot read rows [{lo}, {hi}) of dataset "
                         f"{ds.name.lstrip('/')}: {why} ({text})") from None


def open_processed(path):
    """Open a processed Criteo file: a `ProcessedData` (also a context manager)."""
    return ProcessedData(path)

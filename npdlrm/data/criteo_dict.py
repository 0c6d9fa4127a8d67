"""Per-column dictionaries of categorical keys: hash tables, ids by first appearance.

The first pass adds each block's columns, in file order, to one `KeyTable` per column,
so a key's id is the order of its first appearance (the reference's dict insertion
order). With a frequency threshold t > 1 the tables also count, and keys seen fewer
than t times share the id after the frequent ones.

Out of core: when the tables outgrow `memory_limit`, the builder spills each column's
keys (in first-seen order) and counts as a *run* and starts afresh. A run is also what
a worker hands back for its day (a partial dictionary). `finish` merges runs column by
column in run order, which keeps the order of first appearance: a key's first run
comes first, and within it its first row. Only one column's table is then in memory.

The dictionary file (version 2) stores per column the keys in id order and, with a
threshold, the int32 id of each; its `sha256` (the one the processed files record) is
taken over the keys sorted and their int64 ids, as in version 1.
"""
import concurrent.futures as cf
import hashlib
import json
import os
import shutil

import h5py
import numba
import numpy as np

from .h5data import atomic_h5
from .key_table import KeyTable

DICT_FORMAT = "npdlrm-criteo-dict"
DICT_VERSION = 2
# A lookup table's bytes per key (13.3 B at load 0.75) and per threshold remap entry
LOOKUP_BYTES_PER_KEY = 4 / 0.75 + 8
REMAP_BYTES_PER_KEY = 4
_SHA_CHUNK = 1 << 22


def _finish_column(keys, counts, threshold):
    """(remap or None, table size) of one column. keys: (n,) in id order; counts: (n,)."""
    if threshold <= 1:
        return None, len(keys)
    frequent = counts >= threshold
    n_freq = int(np.count_nonzero(frequent))
    remap = np.where(frequent, np.cumsum(frequent) - 1, n_freq).astype(np.int32)
    return remap, n_freq + (1 if n_freq < len(keys) else 0)


def _hash_column(h, keys, remap):
    """Feed one column to sha256 `h`: its length, the keys sorted, their int64 ids."""
    h.update(np.int64(len(keys)).tobytes())
    order = np.argsort(keys)
    for lo in range(0, len(order), _SHA_CHUNK):
        h.update(np.ascontiguousarray(keys[order[lo:lo + _SHA_CHUNK]], dtype="<u8").tobytes())
    for lo in range(0, len(order), _SHA_CHUNK):
        part = order[lo:lo + _SHA_CHUNK]
        ids = part if remap is None else remap[part]
        h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())


class ColumnThreads:
    """Runs fn(j) for the columns j on Numba's thread count of Python threads (the hash
    table kernels release the GIL); each column stays on one thread, in order."""

    def __init__(self):
        self.threads = numba.get_num_threads()
        self._pool = None

    def run(self, fn, n):
        if self.threads <= 1 or n <= 1:
            for j in range(n):
                fn(j)
            return
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.threads)
        for f in [self._pool.submit(fn, j) for j in range(n)]:
            f.result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


class DictionaryBuilder:
    """Accumulates per column the keys by first appearance (and counts when `count`).

    memory_limit: bytes the tables may hold before they spill into `spill_dir` (0: never).
    """

    def __init__(self, num_columns, count=False, memory_limit=0, spill_dir=None):
        if memory_limit and spill_dir is None:
            raise ValueError("a memory_limit needs a spill_dir to spill key runs into")
        self.num_columns, self.count = int(num_columns), bool(count)
        self.memory_limit, self.spill_dir = int(memory_limit or 0), spill_dir
        self._tables = [KeyTable(count=self.count) for _ in range(self.num_columns)]
        self.runs = []      # folders of spilled runs, in order
        self.rows = 0
        self._columns = ColumnThreads()

    @property
    def nbytes(self):
        return sum(t.nbytes for t in self._tables)

    def add(self, cats, ids=False):
        """Add a block of rows in file order. cats: (n, num_columns) uint64 keys.

        ids: also return the keys' ids ((n, num_columns) int32, Fortran-ordered): the
        final ones when nothing is spilled and there is no threshold."""
        out = np.empty(cats.shape, np.int32, order="F") if ids else None

        def column(j):
            self._tables[j].add(cats[:, j], out_ids=None if out is None else out[:, j])
        self._columns.run(column, self.num_columns)
        self.rows += cats.shape[0]
        if self.memory_limit and self.nbytes > self.memory_limit:
            self.spill()
        return out

    def spill(self):
        """Write the tables' keys (and counts) as the next run and empty the tables."""
        folder = os.path.join(self.spill_dir, f"run_{len(self.runs):05d}")
        save_run(folder, [(t.keys, t.counts) for t in self._tables])
        self.runs.append(folder)
        self._tables = [KeyTable(count=self.count) for _ in range(self.num_columns)]

    def finish(self, threshold=0, path=None, options=None):
        """The `Dictionary` (saved to `path` with `options` when a path is given)."""
        self._columns.close()
        if not self.runs:
            tables = self._tables
            return Dictionary.from_tables(tables, threshold, path, options)
        if self.rows and any(t.n for t in self._tables):
            self.spill()
        return merge_runs(self.runs, self.num_columns, threshold, path, options)


def save_run(folder, columns):
    """Save a run: columns is [(keys (n,) uint64 in first-seen order, counts or None)]."""
    os.makedirs(folder, exist_ok=True)
    for j, (keys, counts) in enumerate(columns):
        np.save(os.path.join(folder, f"keys_{j}.npy"), keys)
        if counts is not None:
            np.save(os.path.join(folder, f"counts_{j}.npy"), counts)


def _read_run(folder, j, count):
    keys = np.load(os.path.join(folder, f"keys_{j}.npy"), mmap_mode="r")
    counts = np.load(os.path.join(folder, f"counts_{j}.npy"), mmap_mode="r") if count else None
    return keys, counts


def merge_runs(runs, num_columns, threshold=0, path=None, options=None, remove=True):
    """Merge runs (folders, in row order) column by column into a `Dictionary`.

    With a path, each column is written to the file and dropped before the next (the
    returned dictionary loads its columns from the file); without one, all stay."""
    count = threshold > 1
    h = hashlib.sha256()
    sizes, kept = [], []
    with _maybe_file(path, options) as f:
        for j in range(num_columns):
            # sized for the longest run and grown as needed: the runs' total may count a
            # frequent key once per run (24 days: several times the distinct keys)
            table = KeyTable(max([len(_read_run(r, j, False)[0]) for r in runs] + [1]),
                             count=count)
            for folder in runs:
                keys, counts = _read_run(folder, j, count)
                for lo in range(0, len(keys), _SHA_CHUNK):
                    table.add(keys[lo:lo + _SHA_CHUNK],
                              None if counts is None else counts[lo:lo + _SHA_CHUNK])
            keys, counts = table.keys, table.counts
            if f is not None:
                del table  # its slots: the sort below needs the room
            remap, size = _finish_column(keys, counts, threshold)
            _hash_column(h, keys, remap)
            sizes.append(size)
            if f is not None:
                _write_column(f, j, keys, remap)
                del keys, counts
                kept.append(None)
            else:
                kept.append((table, remap))
        if f is not None:
            _write_attrs(f, sizes, h.hexdigest(), options)
    if remove:
        for folder in runs:
            shutil.rmtree(folder, ignore_errors=True)
    if path is not None:
        return Dictionary([None] * num_columns, [None] * num_columns, sizes, h.hexdigest(),
                          path=path)
    return Dictionary([t for t, _ in kept], [r for _, r in kept], sizes, h.hexdigest())


class _NoFile:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _maybe_file(path, options):
    return _NoFile() if path is None else atomic_h5(path)


def _write_column(f, j, keys, remap):
    f.create_dataset(f"keys/{j}", data=keys)
    if remap is not None:
        f.create_dataset(f"ids/{j}", data=remap)


def _write_attrs(f, sizes, sha, options):
    f.attrs["format"] = DICT_FORMAT
    f.attrs["format_version"] = np.int64(DICT_VERSION)
    f.attrs["options"] = json.dumps(options or {}, sort_keys=True)
    f.attrs["table_sizes"] = np.asarray(sizes, dtype=np.int64)
    f.attrs["num_keys"] = np.asarray([len(f[f"keys/{j}"]) for j in range(len(sizes))],
                                     dtype=np.int64)
    f.attrs["sha256"] = sha


class Dictionary:
    """Per column a `KeyTable` (None: not loaded, see `load`) and the threshold's remap
    (None: the id is the table's); `table_sizes`; `sha256`; `path` of its file."""

    def __init__(self, tables, remaps, table_sizes, sha256, path=None):
        self.tables, self.remaps = list(tables), list(remaps)
        self.table_sizes = tuple(int(n) for n in table_sizes)
        self._sha256, self.path = sha256, path
        self._num_keys = None
        self._columns = ColumnThreads()

    @classmethod
    def from_tables(cls, tables, threshold=0, path=None, options=None):
        """From the first pass's tables; saved to `path` when given."""
        h = hashlib.sha256()
        remaps, sizes = [], []
        for t in tables:
            remap, size = _finish_column(t.keys, t.counts, threshold)
            _hash_column(h, t.keys, remap)
            remaps.append(remap)
            sizes.append(size)
        d = cls(tables, remaps, sizes, h.hexdigest(), path=path)
        if path is not None:
            d.save(path, options)
        return d

    def sha256(self):
        """Hex digest of the sorted keys and their int64 ids of every column."""
        return self._sha256

    def num_keys(self):
        """Distinct keys of each column (before the threshold merges rare ones)."""
        if self._num_keys is None:
            if all(t is not None for t in self.tables):
                self._num_keys = [t.n for t in self.tables]
                self._has_remap = [r is not None for r in self.remaps]
            else:
                with h5py.File(self.path, "r") as f:
                    self._num_keys = [int(n) for n in f.attrs["num_keys"]]
                    self._has_remap = [f"ids/{j}" in f for j in range(len(self._num_keys))]
        return self._num_keys

    def lookup_bytes(self, j):
        """Bytes column j's lookup table (and threshold remap) takes in memory."""
        per_key = LOOKUP_BYTES_PER_KEY + (REMAP_BYTES_PER_KEY if self._remap(j) else 0)
        return int(self.num_keys()[j] * per_key) + 4096

    def _remap(self, j):
        self.num_keys()
        return self._has_remap[j]

    def load(self, columns):
        """Build the lookup tables of `columns` from the file (those not yet loaded)."""
        todo = [j for j in columns if self.tables[j] is None]
        if not todo:
            return
        with h5py.File(self.path, "r") as f:
            for j in todo:
                self.tables[j] = KeyTable.from_keys(f[f"keys/{j}"][()])
                self.remaps[j] = f[f"ids/{j}"][()] if f"ids/{j}" in f else None

    def release(self, columns):
        """Drop the lookup tables of `columns` (they can be loaded again)."""
        if self.path is None:
            return
        for j in columns:
            self.tables[j], self.remaps[j] = None, None

    def map(self, cats, columns=None):
        """Ids of keys. cats: (n, C) uint64 -> (n, C) int32, Fortran-ordered; only
        `columns` (default all, which must be loaded) are filled. Every key must be known."""
        out = np.empty(cats.shape, dtype=np.int32, order="F")
        columns = list(range(cats.shape[1]) if columns is None else columns)
        for j in columns:
            if self.tables[j] is None:
                raise ValueError(f"categorical column {j}'s table is not loaded")

        def column(k):
            j = columns[k]
            self.tables[j].lookup(cats[:, j], self.remaps[j], out[:, j], column=j)
        self._columns.run(column, len(columns))
        return out

    def save(self, path, options):
        """Write atomically to `path`, with the options it was built with (a dict)."""
        with atomic_h5(path) as f:
            for j, (t, remap) in enumerate(zip(self.tables, self.remaps)):
                _write_column(f, j, t.keys, remap)
            _write_attrs(f, self.table_sizes, self._sha256, options)
        self.path = path


def load_dictionary(path, options, load=True):
    """The `Dictionary` saved at `path` if it was built with `options`, else None.

    load: build every column's lookup table now (else `Dictionary.load` does, by column)."""
    if not os.path.exists(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("format") != DICT_FORMAT or int(a.get("format_version", -1)) != DICT_VERSION:
                return None
            if json.loads(a["options"]) != json.loads(json.dumps(options, sort_keys=True)):
                return None
            sizes, sha = a["table_sizes"], str(a["sha256"])
        n = len(sizes)
        d = Dictionary([None] * n, [None] * n, sizes, sha, path=path)
        if load:
            d.load(range(n))
        return d
    except (OSError, KeyError, ValueError):
        return None

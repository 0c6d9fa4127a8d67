"""Per-column dictionaries of categorical keys, built with vectorised NumPy per block.

Ids follow the order of first appearance (the reference's dict insertion order). With
a frequency threshold t > 1, keys seen fewer than t times share the id after the
frequent ones. A dictionary is kept as sorted keys with the id of each key, so
mapping is one `np.searchsorted` per column.
"""
import hashlib
import json
import os

import h5py
import numpy as np

from .h5data import atomic_h5

DICT_FORMAT = "npdlrm-criteo-dict"
DICT_VERSION = 1
# Pending block summaries are merged when they outgrow the merged keys (or this).
MERGE_MIN_KEYS = 1 << 20


def _merge(parts):
    """Merge (keys, first, counts) summaries into one with sorted unique keys."""
    keys = np.concatenate([p[0] for p in parts])
    first = np.concatenate([p[1] for p in parts])
    counts = np.concatenate([p[2] for p in parts])
    if len(keys) == 0:
        return keys, first, counts
    order = np.lexsort((first, keys))
    keys, first, counts = keys[order], first[order], counts[order]
    head = np.ones(len(keys), dtype=bool)
    head[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(head)
    return keys[starts], first[starts], np.add.reduceat(counts, starts)


class DictionaryBuilder:
    """Accumulates, per column, each key's first global row and its count."""

    def __init__(self, num_columns):
        empty = (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64))
        self._merged = [empty] * num_columns
        self._pending = [[] for _ in range(num_columns)]
        self._pending_keys = [0] * num_columns
        self.rows = 0

    def add(self, cats):
        """Add a block of rows. cats: (n, num_columns) uint64 keys."""
        for j in range(len(self._merged)):
            keys, first, counts = np.unique(cats[:, j], return_index=True, return_counts=True)
            self._pending[j].append((keys, first.astype(np.int64) + self.rows,
                                     counts.astype(np.int64)))
            self._pending_keys[j] += len(keys)
            if self._pending_keys[j] > max(len(self._merged[j][0]), MERGE_MIN_KEYS):
                self._merge_column(j)
        self.rows += cats.shape[0]

    def _merge_column(self, j):
        self._merged[j] = _merge([self._merged[j]] + self._pending[j])
        self._pending[j] = []
        self._pending_keys[j] = 0

    def finish(self, frequency_threshold=0):
        """The `Dictionary`: ids by first appearance, rare keys (count < t) share one id."""
        keys_list, ids_list, sizes = [], [], []
        for j in range(len(self._merged)):
            self._merge_column(j)
            keys, first, counts = self._merged[j]
            frequent = counts >= frequency_threshold if frequency_threshold > 1 \
                else np.ones(len(keys), dtype=bool)
            where = np.flatnonzero(frequent)
            where = where[np.argsort(first[where], kind="stable")]
            n_freq = len(where)
            ids = np.full(len(keys), n_freq, dtype=np.int64)
            ids[where] = np.arange(n_freq, dtype=np.int64)
            keys_list.append(keys)
            ids_list.append(ids)
            sizes.append(n_freq + (1 if n_freq < len(keys) else 0))
        return Dictionary(keys_list, ids_list, tuple(sizes))


class Dictionary:
    """Sorted keys (uint64) and their ids (int64) per column; `table_sizes`."""

    def __init__(self, keys, ids, table_sizes):
        self.keys, self.ids, self.table_sizes = keys, ids, tuple(int(n) for n in table_sizes)

    def map(self, cats):
        """Ids of keys. cats: (n, C) uint64 -> (n, C) int64; every key must be known."""
        out = np.empty(cats.shape, dtype=np.int64, order="F")
        for j, (keys, ids) in enumerate(zip(self.keys, self.ids)):
            col = cats[:, j]
            pos = np.searchsorted(keys, col)
            pos[pos == len(keys)] = 0
            if len(col) and (len(keys) == 0 or np.any(keys[pos] != col)):
                raise ValueError(f"categorical column {j} holds a key absent from the "
                                 "dictionary: the raw files changed since it was built")
            out[:, j] = ids[pos]
        return out

    def sha256(self):
        """Hex digest of the keys and ids of every column."""
        h = hashlib.sha256()
        for keys, ids in zip(self.keys, self.ids):
            h.update(np.int64(len(keys)).tobytes())
            h.update(np.ascontiguousarray(keys, dtype="<u8").tobytes())
            h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
        return h.hexdigest()

    def save(self, path, options):
        """Write atomically to `path`, with the options it was built with (a dict)."""
        with atomic_h5(path) as f:
            f.attrs["format"] = DICT_FORMAT
            f.attrs["format_version"] = np.int64(DICT_VERSION)
            f.attrs["options"] = json.dumps(options, sort_keys=True)
            f.attrs["table_sizes"] = np.asarray(self.table_sizes, dtype=np.int64)
            f.attrs["sha256"] = self.sha256()
            for j, (keys, ids) in enumerate(zip(self.keys, self.ids)):
                f.create_dataset(f"keys/{j}", data=keys)
                f.create_dataset(f"ids/{j}", data=ids)


def load_dictionary(path, options):
    """The `Dictionary` saved at `path` if it was built with `options`, else None."""
    if not os.path.exists(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("format") != DICT_FORMAT or int(a.get("format_version", -1)) != DICT_VERSION:
                return None
            if json.loads(a["options"]) != json.loads(json.dumps(options, sort_keys=True)):
                return None
            n = len(a["table_sizes"])
            keys = [f[f"keys/{j}"][()] for j in range(n)]
            ids = [f[f"ids/{j}"][()] for j in range(n)]
            return Dictionary(keys, ids, a["table_sizes"])
    except (OSError, KeyError, ValueError):
        return None

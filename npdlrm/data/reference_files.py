"""The reference's processed Criteo files, read as they are (no second preprocessing).

Three layouts (reference data_utils.py / data_loader_terabyte.py):

- one npz (kaggleAdDisplayChallenge_processed.npz, terabyte_processed.npz): X_int
  (N, 13) raw counts (negatives already 0), X_cat (N, 26) dictionary ids, y (N,), counts
  (26,) the table sizes; its days come from `<raw>_day_count.npz` (total_per_file);
- day files `<prefix>_{d}_reordered.npz` (--memory-map): X_int, X_cat, y of day d, with
  `<raw>_day_count.npz` and the table sizes in `<raw>_fea_count.npz` (counts);
- MLPerf binary files `<stem>_train.bin`, `<stem>_test.bin` (and `_val.bin`): rows of 40
  int32 (label, 13 counts, 26 ids), with `<raw>_fea_count.npz`.

Every reader has the processed-data API the loaders use (`split_ranges`, `read`,
`table_sizes`, `day_rows`, ...). Dense values are log(count + 1) in float32 and ids are
taken modulo max_ind_range when it is > 0 (tables capped at it), as the reference does
when it loads these files.
"""
import os

import numpy as np

from .preprocess import dense_from_ints
from .splits import split_ranges

NUM_DENSE, NUM_TABLES = 13, 26
BIN_COLUMNS = 1 + NUM_DENSE + NUM_TABLES
_ZIP_MAGIC, _HDF5_MAGIC = b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"
_EMPTY = (np.zeros((0, NUM_DENSE), np.int32), np.zeros((0, NUM_TABLES), np.int32),
          np.zeros(0, np.int32))


def sniff(path):
    """'npz', 'hdf5' or None (missing or something else), from the file's first bytes."""
    try:
        with open(os.fspath(path), "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(_ZIP_MAGIC):
        return "npz"
    return "hdf5" if head == _HDF5_MAGIC else None


def _load(path, keys):
    """{key: array} of an npz file, refusing one that lacks a key."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"reference file {path} does not exist")
    try:
        with np.load(path) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"{path} is not a reference processed file: it lacks "
                                 f"{missing} (has {z.files})")
            return {k: z[k] for k in keys}
    except (OSError, EOFError) as e:  # not a zip / damaged
        raise ValueError(f"{path} is not a readable npz file ({e})") from None


def _counts(path):
    counts = np.asarray(_load(path, ["counts"])["counts"], dtype=np.int64)
    if counts.shape != (NUM_TABLES,) or counts.min() < 1:
        raise ValueError(f"{path}: counts must be {NUM_TABLES} positive table sizes, got "
                         f"{counts.tolist()}")
    return counts


def _day_counts(path):
    days = np.asarray(_load(path, ["total_per_file"])["total_per_file"], dtype=np.int64)
    if days.ndim != 1 or days.size < 2 or days.min() < 0:
        raise ValueError(f"{path}: total_per_file must list >= 2 day sizes, got {days.tolist()}")
    return tuple(int(d) for d in days)


def _ids(cat, max_ind_range):
    """(n,) ids as int64, modulo max_ind_range when > 0."""
    ids = np.asarray(cat).astype(np.int64)
    return ids % max_ind_range if max_ind_range > 0 else ids


class _ReferenceRows:
    """Shared reader: subclasses give `_rows(start, stop)` -> (X_int, X_cat, y) arrays."""

    num_dense = NUM_DENSE

    def __init__(self, kind, dataset, counts, day_rows, max_ind_range, sources):
        self.kind, self.dataset = kind, dataset
        self.max_ind_range = int(max_ind_range) if int(max_ind_range) > 0 else -1
        sizes = [int(c) for c in counts]
        if self.max_ind_range > 0:
            sizes = [min(c, self.max_ind_range) for c in sizes]
        self.table_sizes = tuple(sizes)
        self.day_rows = tuple(int(d) for d in day_rows)
        self.num_rows = sum(self.day_rows)
        self.path = sources[0]
        self.preprocessing = {"from_reference": kind, "max_ind_range": self.max_ind_range,
                              "sources": [os.path.basename(p) for p in sources]}

    def split_ranges(self, split):
        """[(start, stop)] row ranges of 'train' | 'test' | 'val' | 'all' (the reference's
        cut: every day but the last trains; the last day's first half tests)."""
        return split_ranges(self.day_rows, split)

    def read(self, start, stop, tables=None):
        """(dense (n, 13) float32, [26 x (n,) int64], labels (n,) float32) of rows
        [start, stop); tables: the columns read (None: all; the others are None)."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"rows [{start}, {stop}) out of range: {self.path} holds "
                             f"{self.num_rows} rows")
        x_int, x_cat, y = self._rows(start, stop)
        wanted = range(NUM_TABLES) if tables is None else set(tables)
        sparse = [_ids(x_cat[:, k], self.max_ind_range) if k in wanted else None
                  for k in range(NUM_TABLES)]
        for k, col in enumerate(sparse):
            if col is not None and col.size and (col.min() < 0 or col.max() >= self.table_sizes[k]):
                raise ValueError(f"{self.path}: table {k} has id {int(col.max())} (or "
                                 f"{int(col.min())}) outside its {self.table_sizes[k]} rows")
        dense = dense_from_ints(np.asarray(x_int).astype(np.int64))
        return dense, sparse, np.asarray(y).astype(np.float32)

    def close(self):
        """Release the arrays and files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _compact(x_int, x_cat, y):
    """int32 copies of arrays the reference stores as float64 (counts and ids came from
    int32 and fit): half the memory for a whole day or data set."""
    return tuple(np.asarray(a).astype(np.int32, copy=False) for a in (x_int, x_cat, y))


def _check_shapes(path, x_int, x_cat, y):
    n = y.shape[0]
    if x_int.shape != (n, NUM_DENSE) or x_cat.shape != (n, NUM_TABLES) or y.ndim != 1:
        raise ValueError(f"{path}: X_int {x_int.shape}, X_cat {x_cat.shape}, y {y.shape} are "
                         f"not (N, {NUM_DENSE}), (N, {NUM_TABLES}), (N,)")


class ProcessedNpz(_ReferenceRows):
    """One processed npz (Kaggle's kaggleAdDisplayChallenge_processed.npz, or Terabyte's
    terabyte_processed.npz), held in memory as the reference holds it."""

    def __init__(self, path, day_count_file=None, dataset="kaggle", max_ind_range=-1):
        z = _load(path, ["X_int", "X_cat", "y", "counts"])
        _check_shapes(path, z["X_int"], z["X_cat"], z["y"])
        self._x_int, self._x_cat, self._y = _compact(z.pop("X_int"), z.pop("X_cat"), z["y"])
        n = self._y.shape[0]
        if day_count_file:
            days = _day_counts(day_count_file)
            if sum(days) != n:
                raise ValueError(f"{day_count_file} counts {sum(days)} rows, {path} holds {n}")
        elif dataset == "kaggle":
            days = tuple(n // 7 + (1 if d < n % 7 else 0) for d in range(7))
        else:
            raise ValueError(f"{path}: a Terabyte npz needs its day counts "
                             f"(<raw-data-file>_day_count.npz)")
        counts = np.asarray(z["counts"], dtype=np.int64)
        sources = [path] + ([day_count_file] if day_count_file else [])
        super().__init__("npz", dataset, counts, days, max_ind_range, sources)

    def _rows(self, start, stop):
        return self._x_int[start:stop], self._x_cat[start:stop], self._y[start:stop]


class ReorderedDays(_ReferenceRows):
    """The day files `<prefix>_{d}_reordered.npz` of --memory-map, one day in memory at a
    time, as the reference holds them (read them in order, as the loaders do without
    shuffling; compressed npz files cannot be memory-mapped)."""

    def __init__(self, prefix, day_count_file, counts_file, dataset="terabyte",
                 max_ind_range=-1):
        days = _day_counts(day_count_file)
        self.files = [f"{prefix}_{d}_reordered.npz" for d in range(len(days))]
        for p in self.files:
            if not os.path.isfile(p):
                raise ValueError(f"reference day file {p} does not exist "
                                 f"({day_count_file} lists {len(days)} days)")
        super().__init__("days", dataset, _counts(counts_file), days, max_ind_range,
                         self.files + [day_count_file, counts_file])
        self._bounds = np.concatenate([[0], np.cumsum(days)]).astype(np.int64)
        self._day, self._arrays = None, None

    def _load_day(self, d):
        if self._day != d:
            z = _load(self.files[d], ["X_int", "X_cat", "y"])
            _check_shapes(self.files[d], z["X_int"], z["X_cat"], z["y"])
            if z["y"].shape[0] != self.day_rows[d]:
                raise ValueError(f"{self.files[d]} holds {z['y'].shape[0]} rows, the day "
                                 f"counts say {self.day_rows[d]}")
            self._day, self._arrays = d, _compact(z.pop("X_int"), z.pop("X_cat"), z["y"])
        return self._arrays

    def _rows(self, start, stop):
        parts = []
        for d in range(len(self.day_rows)):
            lo, hi = max(start, self._bounds[d]), min(stop, self._bounds[d + 1])
            if hi > lo:
                a, b = int(lo - self._bounds[d]), int(hi - self._bounds[d])
                parts.append(tuple(x[a:b] for x in self._load_day(d)))
        if not parts:
            return _EMPTY
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    def close(self):
        self._day, self._arrays = None, None


class BinFiles(_ReferenceRows):
    """The MLPerf binary files `<stem>_{train,test,val}.bin` (memory-mapped). Rows are
    train, then test, then val; `split_ranges` gives each split its own file's rows."""

    def __init__(self, stem, counts_file, dataset="terabyte", max_ind_range=-1):
        self.files = {s: f"{stem}_{s}.bin" for s in ("train", "test", "val")}
        maps, sizes = {}, {}
        for split, p in self.files.items():
            if not os.path.isfile(p):
                if split == "val":
                    continue
                raise ValueError(f"MLPerf binary file {p} does not exist")
            size = os.path.getsize(p)
            if size % (4 * BIN_COLUMNS):
                raise ValueError(f"{p}: {size} bytes is not a whole number of "
                                 f"{BIN_COLUMNS}-int32 rows")
            sizes[split] = size // (4 * BIN_COLUMNS)
            maps[split] = (np.memmap(p, dtype=np.int32, mode="r", shape=(sizes[split], BIN_COLUMNS))
                           if sizes[split] else np.zeros((0, BIN_COLUMNS), np.int32))
        self._maps = [maps[s] for s in ("train", "test", "val") if s in maps]
        self._splits = [s for s in ("train", "test", "val") if s in maps]
        day_rows = [sizes[s] for s in self._splits]
        super().__init__("bin", dataset, _counts(counts_file), day_rows, max_ind_range,
                         [self.files[s] for s in self._splits] + [counts_file])
        self._bounds = np.concatenate([[0], np.cumsum(day_rows)]).astype(np.int64)

    def split_ranges(self, split):
        if split == "all":
            return [(0, self.num_rows)] if self.num_rows else []
        if split not in ("train", "test", "val"):
            raise ValueError(f"split must be one of ('train', 'test', 'val', 'all'), got "
                             f"{split!r}")
        if split not in self._splits:
            return []
        i = self._splits.index(split)
        lo, hi = int(self._bounds[i]), int(self._bounds[i + 1])
        return [(lo, hi)] if hi > lo else []

    def _rows(self, start, stop):
        parts = []
        for i, m in enumerate(self._maps):
            lo, hi = max(start, self._bounds[i]), min(stop, self._bounds[i + 1])
            if hi > lo:
                parts.append(np.asarray(m[int(lo - self._bounds[i]):int(hi - self._bounds[i])]))
        rows = np.concatenate(parts) if parts else np.zeros((0, BIN_COLUMNS), np.int32)
        return rows[:, 1:1 + NUM_DENSE], rows[:, 1 + NUM_DENSE:], rows[:, 0]

    def close(self):
        self._maps = []


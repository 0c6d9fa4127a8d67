"""In-memory data with the processed-data reader API (what BatchLoader reads)."""
import numpy as np

from .splits import equal_days, split_ranges


class ArrayData:
    """dense: (N, n) float; sparse: (N, T) ints or T arrays (N,); labels: (N,).

    day_rows defaults to 7 equal days (the Kaggle cut); table_sizes to max + 1 per column."""

    def __init__(self, dense, sparse, labels, day_rows=None, table_sizes=None):
        dense = np.asarray(dense)
        if dense.ndim != 2:
            raise ValueError(f"dense must be 2-D (N, num_dense), got shape {dense.shape}")
        N = dense.shape[0]
        if isinstance(sparse, np.ndarray):
            if sparse.ndim != 2 or sparse.shape[0] != N:
                raise ValueError(f"sparse must be (N={N}, T), got shape {sparse.shape}")
            columns = [sparse[:, k] for k in range(sparse.shape[1])]
        else:
            columns = [np.asarray(c) for c in sparse]
        for k, col in enumerate(columns):
            if col.shape != (N,):
                raise ValueError(f"sparse column {k} must have shape ({N},), got {col.shape}")
            if col.size and not np.issubdtype(col.dtype, np.integer):
                raise ValueError(f"sparse column {k} must hold integers, got {col.dtype}")
            if col.size and col.min() < 0:
                raise ValueError(f"sparse column {k} has a negative index {col.min()}")
        labels = np.asarray(labels)
        if labels.shape != (N,):
            raise ValueError(f"labels must have shape ({N},), got {labels.shape}")
        self.dense = np.ascontiguousarray(dense, dtype=np.float32)
        self.sparse = [np.ascontiguousarray(c, dtype=np.int64) for c in columns]
        self.labels = np.ascontiguousarray(labels, dtype=np.float32)
        self.num_rows, self.num_dense = N, dense.shape[1]
        self.day_rows = equal_days(N, 7) if day_rows is None else tuple(int(d) for d in day_rows)
        if any(d < 0 for d in self.day_rows) or sum(self.day_rows) != N:
            raise ValueError(f"day_rows {self.day_rows} must be >= 0 and sum to N={N}")
        if table_sizes is None:
            table_sizes = [int(c.max()) + 1 if c.size else 1 for c in self.sparse]
        self.table_sizes = tuple(int(v) for v in table_sizes)
        if len(self.table_sizes) != len(self.sparse):
            raise ValueError(f"table_sizes has {len(self.table_sizes)} entries, sparse has "
                             f"{len(self.sparse)} columns")
        for k, (col, v) in enumerate(zip(self.sparse, self.table_sizes)):
            if col.size and col.max() >= v:
                raise ValueError(f"sparse column {k} has index {col.max()}, table size is {v}")

    def split_ranges(self, split):
        """[(start, stop)] global row ranges of 'train' | 'test' | 'val' | 'all'."""
        return split_ranges(self.day_rows, split)

    def read(self, start, stop, tables=None):
        """Rows [start, stop): dense (n, n_dense) float32, [T x (n,) int64], labels (n,).

        tables: the tables whose columns are read (None: all); the others are None."""
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"read({start}, {stop}) out of range: need 0 <= start <= stop <= "
                             f"{self.num_rows}")
        wanted = range(len(self.sparse)) if tables is None else set(tables)
        return (self.dense[start:stop].copy(),
                [c[start:stop].copy() if k in wanted else None
                 for k, c in enumerate(self.sparse)], self.labels[start:stop].copy())

    def close(self):
        """Nothing to release (the API of the HDF5 reader)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

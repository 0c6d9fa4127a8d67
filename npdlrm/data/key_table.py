"""`KeyTable`: one column's hash table of uint64 keys -> int32 ids by first appearance.

The arrays and the probing live in the Numba kernels (kernels/hash_dict.py); this
class owns the arrays, grows them by half when full, and refuses a column whose
keys would not fit int32 ids. Memory: 4 / load + 8 bytes per key (13.3 B full, 20 B
just after growing), plus 8 / fill bytes per key when it counts occurrences.
"""
import math

import numpy as np

from ..kernels import hash_dict as hk

GROWTH = 1.5
_NONE_I64 = np.zeros(0, np.int64)
_NONE_I32 = np.zeros(0, np.int32)


def _slots_for(limit):
    return max(int(math.ceil(limit / hk.MAX_LOAD)) + 1, 2)


class KeyTable:
    """Keys numbered 0, 1, ... in the order they are first added.

    capacity: keys it holds before growing; count: also count each key's occurrences;
    max_keys: the most keys allowed (int32 ids: 2**31 - 1; smaller in tests).
    """

    def __init__(self, capacity=1024, count=False, max_keys=hk.INT32_MAX):
        self.max_keys = int(max_keys)
        self._count = bool(count)
        self._alloc(max(min(int(capacity), self.max_keys), 1))

    def _alloc(self, limit):
        self._slots = np.full(_slots_for(limit), hk.EMPTY, dtype=np.int32)
        self._keys = np.zeros(limit, dtype=np.uint64)
        self._counts = np.zeros(limit if self._count else 0, dtype=np.int64)
        self._state = np.array([0, limit], dtype=np.int64)

    @property
    def n(self):
        """Number of keys."""
        return int(self._state[0])

    @property
    def keys(self):
        """(n,) uint64: keys[i] is the key of id i (a view)."""
        return self._keys[:self.n]

    @property
    def counts(self):
        """(n,) int64 occurrences of each id (a view), or None when not counting."""
        return self._counts[:self.n] if self._count else None

    @property
    def nbytes(self):
        return self._slots.nbytes + self._keys.nbytes + self._counts.nbytes

    def _grow(self):
        n, limit = self.n, int(self._state[1])
        if limit >= self.max_keys:
            raise ValueError(f"a categorical column has more than {self.max_keys:,} distinct "
                             "keys: its ids would not fit int32 (use --max-ind-range)")
        keys, counts = self._keys, self._counts
        self._alloc(min(int(limit * GROWTH) + 1, self.max_keys))
        self._keys[:n] = keys[:n]
        if self._count:
            self._counts[:n] = counts[:n]
        self._state[0] = n
        hk.rehash(self._slots, self._keys, n)

    def add(self, values, weights=None, out_ids=None):
        """Add keys in order (new ones get the next ids). values: (m,) uint64;
        weights: (m,) int64 occurrences of each (default 1); out_ids: (m,) int32 or None,
        receives each value's id."""
        values = np.ascontiguousarray(values, dtype=np.uint64)
        w = _NONE_I64 if weights is None else np.ascontiguousarray(weights, dtype=np.int64)
        out = _NONE_I32 if out_ids is None else out_ids
        start = 0
        while start < len(values):
            done = hk.insert(self._slots, self._keys, self._state, self._counts,
                             values[start:], w[start:] if len(w) else w,
                             out[start:] if len(out) else out)
            start += done
            if start < len(values):
                self._grow()

    def lookup(self, values, remap=None, out=None, column=None):
        """(m,) int32 ids of values (remap[id] when remap is given); every value must be in
        the table, else ValueError. values: (m,) uint64; remap: (n,) int32 or None."""
        values = np.ascontiguousarray(values, dtype=np.uint64)
        out = np.empty(len(values), np.int32) if out is None else out
        bad = hk.lookup(self._slots, self._keys, values,
                        _NONE_I32 if remap is None else remap, out)
        if bad >= 0:
            where = "" if column is None else f"categorical column {column} "
            raise ValueError(f"{where}key {int(values[bad]):#x} is absent from the dictionary: "
                             "the raw files changed since it was built")
        return out

    @classmethod
    def from_keys(cls, keys, max_keys=hk.INT32_MAX):
        """A table of distinct `keys` ((n,) uint64) with ids 0..n-1, sized for exactly n."""
        t = cls(max(len(keys), 1), max_keys=max_keys)
        t.add(keys)
        if t.n != len(keys):
            raise ValueError(f"the dictionary's keys are not distinct ({len(keys):,} keys, "
                             f"{t.n:,} distinct): the dictionary file is damaged")
        return t

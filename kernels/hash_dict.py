"""Open-addressing hash table of uint64 keys -> int32 ids, ids in order of insertion.

A table is three arrays: `slots` (cap,) int32 holding an id or EMPTY, `keys` (kcap,)
uint64 where keys[id] is the key of id, and `state` (2,) int64 = [number of keys,
the most keys the table may hold before it must grow]. The slot of a key is found by
a 64-bit mix of the key scaled to `cap` (any capacity, not only powers of two), then
linear probing. Lookups read one slot and one key per probe, so a table costs
4 / load + 8 bytes per key (13.3 B at the full load of 0.75).

`insert` numbers new keys in the order it meets them: run over the rows of a column
in file order, the ids are the order of first appearance. It stops, and says where,
when the table is full; the caller grows it (`rehash` into larger arrays) and goes on.
"""
import numpy as np

from ._numba import jit

EMPTY = np.int32(-1)
MAX_LOAD = 0.75
INT32_MAX = 2**31 - 1

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)


@jit
def _slot(key, cap):
    """splitmix64's finaliser of key, its top 32 bits scaled to [0, cap) (cap < 2**32)."""
    z = key
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return np.int64(((z >> _S32) * np.uint64(cap)) >> _S32)


@jit
def _find(slots, keys, key):
    """(slot index, id) of key; id is EMPTY when absent and the slot is where it goes."""
    cap = slots.shape[0]
    s = _slot(key, cap)
    while True:
        i = slots[s]
        if i == EMPTY or keys[i] == key:
            return s, i
        s += 1
        if s == cap:
            s = 0


@jit
def insert(slots, keys, state, counts, values, weights, out_ids):
    """Insert values[start:] in order; returns how many were done (all, or fewer when
    the table filled up: grow it and call again with the rest).

    slots: (cap,) int32; keys: (kcap,) uint64; state: (2,) int64 [n, limit];
    counts: (kcap,) int64 or (0,) to count nothing; values: (m,) uint64;
    weights: (m,) int64 added to counts, or (0,) to add 1 each;
    out_ids: (m,) int32 receiving each value's id, or (0,) to skip.
    """
    n, limit = state[0], state[1]
    count = counts.shape[0] > 0
    weighted = weights.shape[0] > 0
    write = out_ids.shape[0] > 0
    for k in range(values.shape[0]):
        key = values[k]
        s, i = _find(slots, keys, key)
        if i == EMPTY:
            if n >= limit:
                state[0] = n
                return k
            i = np.int32(n)
            slots[s] = i
            keys[n] = key
            n += 1
        if count:
            counts[i] += weights[k] if weighted else 1
        if write:
            out_ids[k] = i
    state[0] = n
    return values.shape[0]


@jit
def lookup(slots, keys, values, remap, out):
    """out[k] = remap[id of values[k]] (remap (0,): the id itself); returns the index of
    the first value absent from the table, or -1 when all are present.

    values: (m,) uint64; remap: (n,) int32 or (0,); out: (m,) int32.
    """
    use_remap = remap.shape[0] > 0
    for k in range(values.shape[0]):
        s, i = _find(slots, keys, values[k])
        if i == EMPTY:
            return k
        out[k] = remap[i] if use_remap else i
    return -1


@jit
def rehash(slots, keys, n):
    """Place ids 0..n-1 (keys[:n], distinct) into the empty `slots`."""
    for i in range(n):
        s, _ = _find(slots, keys, keys[i])
        slots[s] = np.int32(i)

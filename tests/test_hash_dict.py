"""KeyTable (the Numba open-addressing table) and the dictionary built on it, against
naive Python dicts: first-seen ids, counts, collisions, growth, empty columns, the
int32 limit, spilled runs merged in order."""
import collections
import hashlib

import numpy as np
import pytest

from npdlrm.data.criteo_dict import DictionaryBuilder, merge_runs
from npdlrm.data.key_table import KeyTable
from npdlrm.kernels import hash_dict as hk


def naive_ids(values):
    ids = {}
    for v in values:
        ids.setdefault(int(v), len(ids))
    return ids


def naive_sha(columns, threshold=0):
    """The dictionary digest as version 1 defined it: per column the number of keys,
    the keys sorted, the int64 id of each (ids by first appearance; rare keys last)."""
    h = hashlib.sha256()
    for col in columns:
        counts = collections.Counter(int(v) for v in col)
        mapping = {}
        for v in col:
            v = int(v)
            if v not in mapping and (threshold <= 1 or counts[v] >= threshold):
                mapping[v] = len(mapping)
        keys = sorted(counts)
        h.update(np.int64(len(keys)).tobytes())
        h.update(np.array(keys, dtype="<u8").tobytes())
        h.update(np.array([mapping.get(k, len(mapping)) for k in keys], dtype="<i8").tobytes())
    return h.hexdigest()


def zipf_column(rng, n, vocab):
    raw = np.minimum(rng.zipf(1.3, n), vocab).astype(np.uint64)
    return raw * np.uint64(0x9E3779B97F4A7C15)  # spread over all 64 bits (wraps)


def test_ids_follow_first_appearance_and_counts_match():
    rng = np.random.default_rng(0)
    col = zipf_column(rng, 20_000, 3_000)
    t = KeyTable(capacity=4, count=True)
    out = np.empty(len(col), np.int32)
    for lo in range(0, len(col), 1234):
        t.add(col[lo:lo + 1234], out_ids=out[lo:lo + 1234])
    want = naive_ids(col)
    assert t.n == len(want)
    assert [int(k) for k in t.keys] == list(want)  # keys by id = first-seen order
    assert np.array_equal(out, [want[int(v)] for v in col])
    counts = collections.Counter(int(v) for v in col)
    assert np.array_equal(t.counts, [counts[int(k)] for k in t.keys])
    assert np.array_equal(t.lookup(col), out)
    remap = np.arange(t.n, dtype=np.int32)[::-1].copy()
    assert np.array_equal(t.lookup(col, remap), remap[out])


def test_colliding_keys_and_extreme_values():
    t = KeyTable(capacity=48)  # keys that all start probing at the same slot of its table
    cap = t._slots.shape[0]
    same = [k for k in range(200_000) if hk._slot(np.uint64(k), cap) == 7][:40]
    extremes = [0, 1, 2**63, 2**64 - 1, 2**32, 2**32 - 1]
    keys = np.array(same + extremes + same[::-1], dtype=np.uint64)
    t.add(keys)
    want = naive_ids(keys)
    assert len(same) == 40 and t.n == len(want) == 46
    assert np.array_equal(t.lookup(keys), [want[int(k)] for k in keys])
    with pytest.raises(ValueError, match="absent from the dictionary"):
        t.lookup(np.array([same[0], 12345678901], dtype=np.uint64))


def test_growth_keeps_ids_and_memory_per_key():
    rng = np.random.default_rng(1)
    keys = rng.permutation(np.arange(1, 300_001, dtype=np.uint64) * np.uint64(7919))
    t = KeyTable(capacity=1)
    sizes = set()
    for lo in range(0, len(keys), 10_000):
        t.add(keys[lo:lo + 10_000])
        sizes.add(t._slots.shape[0])
    assert len(sizes) > 3  # it grew several times
    assert np.array_equal(t.lookup(keys), np.arange(len(keys), dtype=np.int32))
    assert t.nbytes / t.n <= 8 * 1.5 + 4 / (hk.MAX_LOAD / 1.5) + 1  # <= ~20 B per key
    exact = KeyTable.from_keys(keys)
    assert exact.nbytes / exact.n < 13.5  # sized for its keys: 8 + 4 / 0.75
    with pytest.raises(ValueError, match="not distinct"):
        KeyTable.from_keys(np.array([5, 6, 5], dtype=np.uint64))


def test_empty_column():
    t = KeyTable()
    t.add(np.zeros(0, np.uint64))
    assert t.n == 0 and len(t.lookup(np.zeros(0, np.uint64))) == 0
    with pytest.raises(ValueError, match="absent"):
        t.lookup(np.array([3], np.uint64))
    d = DictionaryBuilder(2).finish()
    assert d.table_sizes == (0, 0) and d.sha256() == naive_sha([[], []])


def test_int32_overflow_is_refused():
    assert KeyTable().max_keys == 2**31 - 1
    t = KeyTable(capacity=2, max_keys=5)
    t.add(np.arange(5, dtype=np.uint64))
    t.add(np.arange(5, dtype=np.uint64))  # known keys need no room
    with pytest.raises(ValueError, match="more than 5 distinct keys.*int32"):
        t.add(np.array([1, 99], dtype=np.uint64))
    assert t.n == 5


@pytest.mark.parametrize("threshold", [0, 3])
def test_spilled_runs_merge_to_the_in_memory_dictionary(tmp_path, threshold):
    rng = np.random.default_rng(2)
    cats = np.stack([zipf_column(rng, 6_000, v) for v in (5, 400, 5_000)], axis=1)
    whole = DictionaryBuilder(3, count=threshold > 1)
    spilled = DictionaryBuilder(3, count=threshold > 1, memory_limit=20_000,
                                spill_dir=str(tmp_path / "spill"))
    for lo in range(0, len(cats), 500):
        whole.add(cats[lo:lo + 500])
        spilled.add(cats[lo:lo + 500])
    assert len(spilled.runs) > 3
    a = whole.finish(threshold)
    b = spilled.finish(threshold, str(tmp_path / "d.h5"), {"x": 1})
    assert a.sha256() == b.sha256() == naive_sha(cats.T, threshold)
    assert a.table_sizes == b.table_sizes
    assert all(t is None for t in b.tables)  # merged column by column into the file
    b.load([0, 2])
    assert np.array_equal(a.map(cats)[:, [0, 2]], b.map(cats, [0, 2])[:, [0, 2]])
    with pytest.raises(ValueError, match="not loaded"):
        b.map(cats)
    assert not (tmp_path / "spill").exists() or not list((tmp_path / "spill").iterdir())


def test_partial_dictionaries_merged_in_day_order(tmp_path):
    rng = np.random.default_rng(3)
    days = [np.stack([zipf_column(rng, n, 300)], axis=1) for n in (700, 50, 900)]
    runs = []
    for i, cats in enumerate(days):
        b = DictionaryBuilder(1, count=True, memory_limit=1 << 30,
                              spill_dir=str(tmp_path / f"day_{i}"))
        b.add(cats)
        b.spill()
        runs += b.runs
    merged = merge_runs(runs, 1, threshold=2)
    whole = np.concatenate(days)
    assert merged.sha256() == naive_sha(whole.T, 2)
    counts = collections.Counter(int(v) for v in whole[:, 0])
    frequent = [k for k in naive_ids(whole[:, 0]) if counts[k] >= 2]
    ids = merged.map(whole)[:, 0]
    assert np.array_equal(ids, [frequent.index(int(v)) if counts[int(v)] >= 2
                                else len(frequent) for v in whole[:, 0]])


def test_column_groups_fit_the_budget():
    from npdlrm.data.write_pass import column_groups

    class Sized:
        tables = [None] * 26

        def lookup_bytes(self, j):
            return [900, 50, 10, 400, 700, 300, 5, 5][j % 8] * 1000
    d = Sized()
    groups = column_groups(d, 1_000_000)
    assert sorted(j for g in groups for j in g) == list(range(26)) and 0 in groups[0]
    assert all(sum(d.lookup_bytes(j) for j in g) <= 1_000_000 for g in groups)
    assert len(groups) == 9  # the fewest possible: 8,060k of tables in groups of 1,000k
    assert column_groups(d, 500_000)[0] == [0]  # over the budget alone: a group of its own
    assert column_groups(d, 0) == [list(range(26))]

"""ArrayData (the reader API in memory) and BatchLoader (chunked shuffling, resume, prefetch,
rank slices)."""
import gc
import threading
import time

import numpy as np
import pytest

from npdlrm.data.arrays import ArrayData
from npdlrm.data.loader import BatchLoader
from npdlrm.data.splits import equal_days, split_ranges


def make_data(N=1000, T=3, day_rows=None, seed=0):
    """dense[:, 0] is the row id, so every batch says which rows it holds."""
    rng = np.random.default_rng(seed)
    dense = np.column_stack([np.arange(N), rng.random((N, 2))]).astype(np.float32)
    sparse = np.column_stack([(np.arange(N) * (k + 1)) % (50 + k) for k in range(T)])
    labels = (rng.random(N) < 0.3).astype(np.float32)
    return ArrayData(dense, sparse, labels, day_rows=day_rows)


def row_ids(mb):
    return mb.dense[:, 0].astype(np.int64)


def epoch_rows(loader, epoch=0, start_batch=0):
    return [row_ids(mb) for mb in loader.epoch(epoch, start_batch)]


def split_rows(data, split):
    return np.concatenate([np.arange(a, b) for a, b in data.split_ranges(split)] or
                          [np.zeros(0, np.int64)])


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for a, b in zip(xs, ys):
        assert np.array_equal(a.dense, b.dense) and np.array_equal(a.labels, b.labels)
        for p, q in zip(a.indices + a.offsets, b.indices + b.offsets):
            assert np.array_equal(p, q)


class CountingReader:
    """Wraps a reader; records every read and can fail on the read of a given row."""

    def __init__(self, data, fail_at=None):
        self.data, self.fail_at, self.reads = data, fail_at, []
        self.num_dense, self.table_sizes = data.num_dense, data.table_sizes

    def split_ranges(self, split):
        return self.data.split_ranges(split)

    def read(self, start, stop):
        self.reads.append((start, stop))
        if self.fail_at is not None and start <= self.fail_at < stop:
            raise OSError(f"disk error reading rows {start}-{stop}")
        return self.data.read(start, stop)


# ----------------------------------------------------------------------------
# ArrayData
# ----------------------------------------------------------------------------
def test_array_data_reader_api():
    sparse = [np.array([0, 4, 2, 1]), np.array([3, 0, 0, 1])]
    with ArrayData(np.ones((4, 2)), sparse, [0, 1, 1, 0], day_rows=(2, 2)) as d:
        assert d.num_rows == 4 and d.num_dense == 2 and d.table_sizes == (5, 4)
        assert d.day_rows == (2, 2) and d.split_ranges("test") == [(2, 3)]
        dense, cols, labels = d.read(1, 3)
        assert dense.dtype == np.float32 and dense.shape == (2, 2)
        assert [c.tolist() for c in cols] == [[4, 2], [0, 0]] and cols[0].dtype == np.int64
        assert labels.tolist() == [1.0, 1.0] and labels.dtype == np.float32
        dense[:] = 7  # a read is a copy
        assert d.read(1, 3)[0].max() == 1
        assert d.read(4, 4)[0].shape == (0, 2)
        for a, b in ((-1, 2), (3, 5), (3, 2)):
            with pytest.raises(ValueError, match="out of range"):
                d.read(a, b)


def test_array_data_defaults():
    d = make_data(N=20)
    assert d.day_rows == equal_days(20, 7)
    for split in ("train", "test", "val", "all"):
        assert d.split_ranges(split) == split_ranges(d.day_rows, split)
    assert ArrayData(np.ones((3, 1)), np.zeros((3, 2), int), np.zeros(3),
                     table_sizes=[10, 20]).table_sizes == (10, 20)


@pytest.mark.parametrize("args,match", [
    ((np.ones(4), np.zeros((4, 1), int), np.zeros(4)), "2-D"),
    ((np.ones((4, 1)), np.zeros((3, 1), int), np.zeros(4)), "sparse"),
    ((np.ones((4, 1)), [np.zeros(4, int), np.zeros(3, int)], np.zeros(4)), "column 1"),
    ((np.ones((4, 1)), [np.array([0, -1, 0, 0])], np.zeros(4)), "negative"),
    ((np.ones((4, 1)), [np.zeros(4)], np.zeros(4)), "integers"),
    ((np.ones((4, 1)), [np.zeros(4, int)], np.zeros(5)), "labels"),
])
def test_array_data_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ArrayData(*args)


def test_array_data_refuses_bad_days_and_sizes():
    args = (np.ones((4, 1)), [np.array([0, 5, 1, 2])], np.zeros(4))
    with pytest.raises(ValueError, match="day_rows"):
        ArrayData(*args, day_rows=(2, 1))
    with pytest.raises(ValueError, match="index 5"):
        ArrayData(*args, table_sizes=[5])
    with pytest.raises(ValueError, match="table_sizes"):
        ArrayData(*args, table_sizes=[6, 6])


# ----------------------------------------------------------------------------
# every row once, order, splits
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("B,chunk,window", [(32, 50, 4), (7, 13, 1), (1000, 64, 3), (1, 100, 2),
                                            (64, 1000, 4)])
def test_every_row_of_the_split_once_per_epoch(shuffle, B, chunk, window):
    d = make_data()
    ld = BatchLoader(d, B, "train", shuffle=shuffle, chunk_rows=chunk, window_chunks=window,
                     prefetch=0)
    rows = epoch_rows(ld)
    n = len(split_rows(d, "train"))
    assert len(rows) == len(ld) == -(-n // B)
    assert all(r.size == B for r in rows[:-1]) and rows[-1].size == n - B * (len(rows) - 1)
    got = np.concatenate(rows)
    assert np.array_equal(np.sort(got), split_rows(d, "train"))
    assert np.array_equal(got, split_rows(d, "train")) == (not shuffle)


def test_shuffled_windows_hold_whole_chunks_in_permuted_order():
    d = make_data(N=7 * 120)  # 720 training rows: 36 chunks, 12 windows
    chunk, window = 20, 3
    ld = BatchLoader(d, 16, "train", shuffle=True, chunk_rows=chunk, window_chunks=window,
                     prefetch=0)
    stream = np.concatenate(epoch_rows(ld, epoch=2))
    span = chunk * window
    for w in range(0, stream.size, span):
        chunks = np.unique(stream[w:w + span] // chunk)
        assert chunks.size == window
        assert np.array_equal(np.sort(stream[w:w + span]),
                              np.concatenate([np.arange(c * chunk, (c + 1) * chunk)
                                              for c in chunks]))
    first_chunk_of_window = [np.min(stream[w:w + span] // chunk) for w in range(0, 720, span)]
    assert first_chunk_of_window != sorted(first_chunk_of_window)  # the chunk order is permuted
    other_epoch = np.concatenate(epoch_rows(ld, epoch=3))
    assert not np.array_equal(np.unique(stream[:span] // chunk),
                              np.unique(other_epoch[:span] // chunk))  # and differs by epoch


@pytest.mark.parametrize("split", ["train", "test", "val", "all"])
def test_split_ranges_are_honoured(split):
    d = make_data(N=999)
    ld = BatchLoader(d, 50, split, chunk_rows=40, prefetch=0)
    got = np.concatenate(epoch_rows(ld))
    assert np.array_equal(np.sort(got), split_rows(d, split))
    assert ld.shuffle == (split == "train")


def test_splits_partition_the_rows():
    d = make_data(N=999)
    parts = [np.concatenate(epoch_rows(BatchLoader(d, 64, s, prefetch=0)))
             for s in ("train", "test", "val")]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(999))


def test_empty_split():
    d = make_data(N=10, day_rows=(10, 0))
    ld = BatchLoader(d, 4, "test")
    assert len(ld) == 0 and list(ld.epoch(0)) == []


def test_order_depends_on_seed_and_epoch_only():
    d = make_data()
    kw = dict(chunk_rows=30, window_chunks=2, prefetch=0)
    a = BatchLoader(d, 50, "train", seed=3, **kw)
    e1_first = epoch_rows(a, 1)  # epoch 1 before epoch 0: no state carried between epochs
    e0 = epoch_rows(a, 0)
    b = BatchLoader(d, 50, "train", seed=3, **kw)
    assert all(np.array_equal(x, y) for x, y in zip(e0, epoch_rows(b, 0)))
    assert all(np.array_equal(x, y) for x, y in zip(e1_first, epoch_rows(b, 1)))
    assert not np.array_equal(np.concatenate(e0), np.concatenate(e1_first))
    other_seed = epoch_rows(BatchLoader(d, 50, "train", seed=4, **kw), 0)
    assert not np.array_equal(np.concatenate(e0), np.concatenate(other_seed))


# ----------------------------------------------------------------------------
# batches: format, drop_last, resume
# ----------------------------------------------------------------------------
def test_minibatch_format_is_one_hot_bags():
    d = make_data()
    mb = next(iter(BatchLoader(d, 10, "val", prefetch=0).epoch(0)))
    rows = row_ids(mb)
    assert mb.dense.dtype == np.float32 and mb.labels.dtype == np.float32 and mb.truth is None
    dense, cols, labels = d.read(rows[0], rows[-1] + 1)
    assert np.array_equal(mb.dense, dense) and np.array_equal(mb.labels, labels)
    for k, (idx, off) in enumerate(zip(mb.indices, mb.offsets)):
        assert np.array_equal(idx, cols[k]) and idx.dtype == np.int64
        assert np.array_equal(off, np.arange(11)) and off.dtype == np.int64


def test_drop_last():
    d = make_data()
    n = len(split_rows(d, "train"))
    ld = BatchLoader(d, 100, "train", drop_last=True, chunk_rows=64, prefetch=0)
    rows = epoch_rows(ld)
    assert len(ld) == len(rows) == n // 100 and all(r.size == 100 for r in rows)
    got = np.concatenate(rows)
    assert np.unique(got).size == got.size and np.isin(got, split_rows(d, "train")).all()
    exact = BatchLoader(d, n, "train", drop_last=True, prefetch=0)
    assert len(exact) == 1 and epoch_rows(exact)[0].size == n


@pytest.mark.parametrize("shuffle", [False, True])
def test_start_batch_resume_equals_the_tail_of_the_full_epoch(shuffle):
    d = make_data()
    ld = BatchLoader(d, 24, "train", shuffle=shuffle, chunk_rows=40, window_chunks=3, seed=9)
    full = list(ld.epoch(5))
    for start in range(0, len(ld) + 1, 3):
        assert_same_batches(list(ld.epoch(5, start)), full[start:])
    assert_same_batches(list(ld.epoch(5, len(ld) - 1)), full[-1:])
    with pytest.raises(ValueError):
        ld.epoch(0, len(ld) + 1)
    with pytest.raises(ValueError):
        ld.epoch(-1)


def test_resume_reads_little_of_what_it_skips():
    reader = CountingReader(make_data(N=2000))
    ld = BatchLoader(reader, 32, "train", chunk_rows=50, window_chunks=4, prefetch=0)
    batches = list(ld.epoch(0, len(ld) - 2))
    assert len(batches) == 2
    assert sum(b - a for a, b in reader.reads) <= 2 * 50 * 4  # at most the last two windows


def test_prefetch_on_and_off_give_identical_batches():
    d = make_data()
    kw = dict(chunk_rows=30, window_chunks=2, seed=1)
    for prefetch in (1, 3):
        assert_same_batches(list(BatchLoader(d, 33, "train", prefetch=prefetch, **kw).epoch(2)),
                            list(BatchLoader(d, 33, "train", prefetch=0, **kw).epoch(2)))


def test_chunk_rows_default_comes_from_the_reader():
    d = make_data()
    assert BatchLoader(d, 8).chunk_rows == 32768
    d.chunk_rows = 17
    assert BatchLoader(d, 8).chunk_rows == 17 and BatchLoader(d, 8, chunk_rows=5).chunk_rows == 5


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(split="dev"), dict(chunk_rows=0),
                                 dict(window_chunks=0), dict(prefetch=-1), dict(world_size=0),
                                 dict(rank=2, world_size=2), dict(rank=-1), dict(seed=-1)])
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError):
        BatchLoader(make_data(N=20), **{"batch_size": 4, **bad})


# ----------------------------------------------------------------------------
# the prefetch thread
# ----------------------------------------------------------------------------
def started_since(before):
    """The live threads not in `before` (a set of threads): counting only the threads a
    test started keeps it blind to other tests' threads ending meanwhile."""
    return [t for t in threading.enumerate() if t not in before]


def wait_for_no_threads_since(before, timeout=5.0):
    """How many of the threads started since `before` are still alive after up to
    `timeout` seconds."""
    end = time.monotonic() + timeout
    while started_since(before) and time.monotonic() < end:
        time.sleep(0.01)
    return len(started_since(before))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_reader_exceptions_reach_the_consumer(prefetch):
    base = set(threading.enumerate())
    reader = CountingReader(make_data(), fail_at=500)
    ld = BatchLoader(reader, 50, "train", shuffle=False, chunk_rows=100, prefetch=prefetch)
    got = []
    with pytest.raises(OSError, match="disk error"):
        for mb in ld.epoch(0):
            got.append(row_ids(mb))
    assert np.array_equal(np.concatenate(got), np.arange(500))
    assert wait_for_no_threads_since(base) == 0


def test_abandoned_iterators_stop_their_threads():
    base = set(threading.enumerate())
    ld = BatchLoader(make_data(N=5000), 10, "train", chunk_rows=100, prefetch=2)
    for _ in ld.epoch(0):  # break out early
        break
    assert started_since(base) == []
    it = ld.epoch(1)
    next(it)
    assert len(started_since(base)) == 1
    del it  # garbage-collected mid-epoch
    gc.collect()
    assert wait_for_no_threads_since(base) == 0
    it = ld.epoch(2)
    next(it)
    it.close()
    assert started_since(base) == []
    unused = ld.epoch(3)  # never started: no thread
    assert started_since(base) == []
    del unused


def test_a_slow_consumer_gets_every_batch():
    d = make_data(N=300)
    ld = BatchLoader(d, 7, "all", shuffle=True, chunk_rows=16, prefetch=1)
    rows = []
    for mb in ld.epoch(0):
        rows.append(row_ids(mb))
        time.sleep(0.001)
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(300))


# ----------------------------------------------------------------------------
# rank slices
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("B,W", [(24, 2), (25, 3), (10, 4), (3, 5)])
def test_rank_slices_concatenate_to_the_single_process_batch(B, W):
    d = make_data()
    kw = dict(chunk_rows=40, window_chunks=2, seed=2, shuffle=True)
    whole = list(BatchLoader(d, B, "train", prefetch=0, **kw).epoch(1))
    ranks = [list(BatchLoader(d, B, "train", rank=r, world_size=W, prefetch=r % 2, **kw)
                  .epoch(1)) for r in range(W)]
    assert all(len(r) == len(whole) for r in ranks)
    for i, mb in enumerate(whole):
        pieces = [r[i] for r in ranks]
        assert [p.size for p in pieces] == [len(a) for a in np.array_split(range(mb.size), W)]
        assert np.array_equal(np.concatenate([p.dense for p in pieces]), mb.dense)
        assert np.array_equal(np.concatenate([p.labels for p in pieces]), mb.labels)
        for k in range(len(mb.indices)):
            assert np.array_equal(np.concatenate([p.indices[k] for p in pieces]), mb.indices[k])
            assert all(np.array_equal(p.offsets[k], np.arange(p.size + 1)) for p in pieces)


def test_batches_feed_a_training_step():
    import npdlrm
    d = make_data(N=200)
    model = npdlrm.DLRM.from_arch(arch_mlp_bot="3-4", arch_mlp_top="4-1",
                                  arch_embedding_size="-".join(map(str, d.table_sizes)),
                                  arch_sparse_feature_size=4, seed=0)
    opt = npdlrm.Optimizer("sgd", lr=0.01)
    for mb in BatchLoader(d, 64, "train", rank=1, world_size=2).epoch(0):
        loss = model.train_step(mb.dense, mb.indices, mb.offsets, mb.labels, opt)
        assert np.isfinite(loss)


@pytest.mark.parametrize("shuffle", [False, True])
def test_tables_reads_only_those_columns(shuffle):
    data = make_data(N=700, T=4)
    full = BatchLoader(data, 64, "train", shuffle=shuffle, seed=3, chunk_rows=50)
    some = BatchLoader(data, 64, "train", shuffle=shuffle, seed=3, chunk_rows=50,
                       tables=[3, 1])
    xs, ys = list(full.epoch(1, 2)), list(some.epoch(1, 2))
    assert len(xs) == len(ys) == len(full) - 2
    for a, b in zip(xs, ys):
        assert np.array_equal(a.dense, b.dense) and np.array_equal(a.labels, b.labels)
        for k in range(4):
            if k in (1, 3):
                assert np.array_equal(a.indices[k], b.indices[k])
                assert np.array_equal(a.offsets[k], b.offsets[k])
            else:
                assert b.indices[k] is None and b.offsets[k] is None


def test_day_shuffle_keeps_rows_in_their_day_and_days_in_order():
    d = make_data(N=190, day_rows=(50, 70, 40, 30))
    ld = BatchLoader(d, 16, "train", shuffle="day", chunk_rows=12, window_chunks=2, seed=5)
    assert all(e <= 50 or s >= 50 for s, e in ld.chunks)  # no chunk crosses a day
    day_of = np.repeat(np.arange(3), (50, 70, 40))
    orders = []
    for epoch in (0, 1):
        got = np.concatenate([row_ids(mb) for mb in ld.epoch(epoch)])
        assert sorted(got) == list(split_rows(d, "train"))  # every training row once
        assert np.all(np.diff(day_of[got]) >= 0)  # days in order, rows stay in their day
        assert not np.array_equal(got, np.sort(got))  # shuffled within the days
        orders.append(got)
    assert not np.array_equal(*orders)  # a new order each epoch

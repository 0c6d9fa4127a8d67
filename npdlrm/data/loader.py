"""Minibatches from any reader (`split_ranges`, `read`): chunked reads, chunk shuffling,
exact mid-epoch resume, a prefetch thread and per-rank slices.

Epoch e's order is a function of (seed, e) only: the split's rows are cut into chunks of
`chunk_rows` contiguous rows; a shuffled epoch permutes the chunk order, groups the
permuted chunks into windows of `window_chunks`, and permutes the rows inside each window.
The batches are consecutive runs of `batch_size` rows of that stream.
"""
import queue
import threading

import numpy as np

from .minibatch import Minibatch, check_position
from .splits import SPLITS

DEFAULT_CHUNK_ROWS = 32768
_POLL_S = 0.05  # how often a blocked producer checks whether the consumer left
_DONE = object()


def rank_bounds(batch_rows, rank, world_size):
    """[lo, hi) of np.array_split(range(batch_rows), world_size)[rank]."""
    base, extra = divmod(int(batch_rows), int(world_size))
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def slice_rows(mb, lo, hi):
    """Rows [lo, hi) of a Minibatch (bags kept whole, offsets rebased to 0)."""
    indices, offsets = [], []
    for idx, off in zip(mb.indices, mb.offsets):
        a, b = int(off[lo]), int(off[hi])
        indices.append(idx[a:b])
        offsets.append(off[lo:hi + 1] - a)
    truth = None if mb.truth is None else mb.truth[lo:hi]
    return Minibatch(mb.dense[lo:hi], indices, offsets, mb.labels[lo:hi], truth)


def _each(columns, fn):
    """fn of every sparse column that was read (None stays None: a column not read)."""
    return [None if c is None else fn(c) for c in columns]


class _Failure:
    """An exception raised by the producer thread, carried to the consumer."""

    def __init__(self, exc):
        self.exc = exc


def prefetched(source, depth):
    """Iterate `source` (a generator) on a background thread, `depth` items ahead.

    The producer's exceptions are raised in the consumer; closing or dropping the
    returned generator stops and joins the thread (it starts on the first next())."""
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failure(exc))
        finally:
            source.close()

    def consume():
        worker = threading.Thread(target=produce, name="npdlrm-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            stop.set()
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            worker.join()

    return consume()


class BatchLoader:
    """Batches of one split of a reader (ArrayData, the HDF5 ProcessedData, ...)."""

    def __init__(self, data, batch_size, split="train", shuffle=None, seed=0, drop_last=False,
                 chunk_rows=None, window_chunks=4, prefetch=2, rank=0, world_size=1,
                 tables=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        chunk_rows = getattr(data, "chunk_rows", DEFAULT_CHUNK_ROWS) if chunk_rows is None \
            else chunk_rows
        for name, value, low in (("batch_size", batch_size, 1), ("chunk_rows", chunk_rows, 1),
                                 ("window_chunks", window_chunks, 1), ("prefetch", prefetch, 0),
                                 ("world_size", world_size, 1)):
            if int(value) < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        shuffle = (split == "train") if shuffle is None else shuffle
        if shuffle != "day":
            shuffle = bool(shuffle)
        self.data, self.split = data, split
        self.batch_size, self.seed, self.drop_last = int(batch_size), int(seed), bool(drop_last)
        self.shuffle = shuffle
        self.chunk_rows, self.window_chunks = int(chunk_rows), int(window_chunks)
        self.prefetch, self.rank, self.world_size = int(prefetch), int(rank), int(world_size)
        # the tables whose columns are read (None: all; the others' indices and offsets
        # are None): a distributed rank reads only the tables it needs
        self.tables = None if tables is None else sorted(int(k) for k in tables)
        # chunks of each day ("day": no chunk crosses a day, rows stay in their day)
        self.day_chunks = [[(s, min(s + self.chunk_rows, stop))
                            for s in range(int(start), int(stop), self.chunk_rows)]
                           for start, stop in self._ranges(data, split)]
        self.chunks = [c for day in self.day_chunks for c in day]
        self.num_rows = sum(e - s for s, e in self.chunks)

    def _ranges(self, data, split):
        """The split's row ranges; cut at the day boundaries when shuffling by day."""
        ranges = data.split_ranges(split)
        if self.shuffle != "day":
            return ranges
        if not hasattr(data, "day_rows"):
            raise ValueError("shuffling within days needs data with days (day_rows)")
        bounds = np.cumsum([0] + [int(d) for d in data.day_rows])
        return [(max(a, int(lo)), min(b, int(hi))) for a, b in ranges
                for lo, hi in zip(bounds[:-1], bounds[1:]) if max(a, lo) < min(b, hi)]

    def __len__(self):
        full, rest = divmod(self.num_rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def epoch(self, epoch=0, start_batch=0):
        """Iterator of this rank's Minibatches of `epoch`, from batch `start_batch` on."""
        n = len(self)
        check_position(epoch, start_batch, n)
        source = self._batches(int(epoch), int(start_batch))
        return prefetched(source, self.prefetch) if self.prefetch else source

    def windows(self, epoch):
        """[(chunks, seed key or None)] of `epoch` in order; None: rows stay in order.

        shuffle True: chunks in a new order each epoch, rows permuted within windows of
        `window_chunks` chunks; "day": the same within each day, the days in order."""
        if not self.shuffle:
            return [([c], None) for c in self.chunks]
        w = self.window_chunks
        if self.shuffle == "day":
            out = []
            for d, chunks in enumerate(self.day_chunks):
                order = np.random.default_rng([self.seed, epoch, 0, d]).permutation(len(chunks))
                out += [([chunks[i] for i in order[j:j + w]], [self.seed, epoch, 1, d, j // w])
                        for j in range(0, len(order), w)]
            return out
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.chunks))
        return [([self.chunks[i] for i in order[j:j + w]], [self.seed, epoch, 1, j // w])
                for j in range(0, len(order), w)]

    def _read_window(self, chunks, key):
        """dense (n, n_dense), [T x (n,)] sparse, labels (n,) of `chunks`, permuted by `key`."""
        if self.tables is None:
            parts = [self.data.read(s, e) for s, e in chunks]
        else:
            parts = [self.data.read(s, e, tables=self.tables) for s, e in chunks]
        dense = np.concatenate([p[0] for p in parts])
        sparse = [None if parts[0][1][k] is None else np.concatenate([p[1][k] for p in parts])
                  for k in range(len(parts[0][1]))]
        labels = np.concatenate([p[2] for p in parts])
        if key is not None:
            perm = np.random.default_rng(key).permutation(labels.shape[0])
            dense, labels, sparse = dense[perm], labels[perm], _each(sparse, lambda c: c[perm])
        return dense, sparse, labels

    def _batches(self, epoch, start_batch):
        B, total = self.batch_size, len(self)
        remaining = total - start_batch
        if remaining <= 0:
            return
        skip = start_batch * B  # rows of the epoch's stream before the first batch
        carry = None  # rows read but not yet handed out: (dense, sparse, labels)
        for chunks, key in self.windows(epoch):
            rows = sum(e - s for s, e in chunks)
            if skip >= rows:
                skip -= rows
                continue
            dense, sparse, labels = self._read_window(chunks, key)
            if skip:
                dense, sparse, labels = (dense[skip:], _each(sparse, lambda c: c[skip:]),
                                         labels[skip:])
                skip = 0
            if carry is not None:
                dense = np.concatenate([carry[0], dense])
                sparse = [None if b is None else np.concatenate([a, b])
                          for a, b in zip(carry[1], sparse)]
                labels = np.concatenate([carry[2], labels])
            n, lo = labels.shape[0], 0
            while n - lo >= B and remaining:
                yield self._minibatch(dense, sparse, labels, lo, lo + B)
                lo, remaining = lo + B, remaining - 1
            if not remaining:
                return
            carry = (dense[lo:], _each(sparse, lambda c: c[lo:]), labels[lo:])
        if remaining and carry is not None and carry[2].shape[0]:
            yield self._minibatch(*carry, 0, carry[2].shape[0])

    def _minibatch(self, dense, sparse, labels, lo, hi):
        """This rank's rows of the global batch rows [lo, hi) of a window."""
        r0, r1 = rank_bounds(hi - lo, self.rank, self.world_size)
        a, b = lo + r0, lo + r1
        offsets = np.arange(b - a + 1, dtype=np.int64)
        return Minibatch(np.ascontiguousarray(dense[a:b], dtype=np.float32),
                         _each(sparse, lambda c: np.ascontiguousarray(c[a:b], dtype=np.int64)),
                         [None if c is None else offsets for c in sparse],
                         np.ascontiguousarray(labels[a:b], dtype=np.float32))


class BlockLoader:
    """Batches that are the consecutive blocks of `batch_size` rows of a split (the last
    one partial), each block one batch, in file order or, with shuffle, in an order that
    is a function of (seed, epoch) only: the reference's MLPerf binary loader, whose
    file reads are whole batches and whose shuffle (--mlperf-bin-shuffle) permutes them."""

    def __init__(self, data, batch_size, split="train", shuffle=False, seed=0, rank=0,
                 world_size=1):
        if int(batch_size) < 1 or int(seed) < 0 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need batch_size >= 1, seed >= 0 and 0 <= rank < world_size, "
                             f"got {batch_size}, {seed}, {rank}, {world_size}")
        self.data, self.split, self.shuffle = data, split, bool(shuffle)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.tables = None  # as BatchLoader: the tables a distributed rank reads
        B = self.batch_size
        self.blocks = [(s, min(s + B, stop)) for start, stop in data.split_ranges(split)
                       for s in range(int(start), int(stop), B)]

    def __len__(self):
        return len(self.blocks)

    def order(self, epoch):
        """The block numbers of `epoch` in the order they are read."""
        if not self.shuffle:
            return np.arange(len(self.blocks))
        return np.random.default_rng([self.seed, epoch, 2]).permutation(len(self.blocks))

    def epoch(self, epoch=0, start_batch=0):
        n = len(self)
        check_position(epoch, start_batch, n)
        return self._batches(self.order(int(epoch))[int(start_batch):])

    def _batches(self, blocks):
        for i in blocks:
            lo, hi = self.blocks[i]
            r0, r1 = rank_bounds(hi - lo, self.rank, self.world_size)
            if self.tables is None:
                dense, sparse, labels = self.data.read(lo + r0, lo + r1)
            else:
                dense, sparse, labels = self.data.read(lo + r0, lo + r1, tables=self.tables)
            offsets = np.arange(r1 - r0 + 1, dtype=np.int64)
            yield Minibatch(np.ascontiguousarray(dense, dtype=np.float32),
                            [None if c is None else np.ascontiguousarray(c, dtype=np.int64)
                             for c in sparse],
                            [None if c is None else offsets for c in sparse],
                            np.ascontiguousarray(labels, dtype=np.float32))

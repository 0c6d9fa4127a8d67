"""The reference's random and trace-based input stream, draw for draw.

The reference (dlrm_data_pytorch.py RandomDataset) seeds NumPy's global generator with
--numpy-rand-seed when batch 0 is read, then draws every batch in turn from it:

    dense (B, n) uniform [0, 1) in float32
    for each table, for each sample: the bag size (fixed, or round(max(1, r*min(V, K)))
        with one draw r), then the bag's rows:
          uniform:  unique(round(r * (V - 1)))         r: bag-size uniforms
          gaussian: unique(clip(N(mu, sigma), min, max)) cast to int (mu = -1: the
                    middle of [min, max]); the rows do not depend on V
          trace:    unique(LRU replay of the table's profile), taken mod V if outside
    labels (B,) uniform [0, 1) (no signal: the loss cannot fall far)

Here a `numpy.random.RandomState(seed)` plays the global generator, so the batches are
the reference's, bit for bit. The stream is sequential: batch i needs the draws of
batches 0..i-1 (a resume regenerates and drops them).
"""
import numpy as np

from .loader import rank_bounds, slice_rows
from .minibatch import Minibatch, check_position
from .trace import generate_lru

INDEX_DISTRIBUTIONS = ("uniform", "gaussian", "trace")


class ReferenceStream:
    """The reference's random / synthetic input batches (see the module doc).

    dist: 'uniform' | 'gaussian' | 'trace'; profiles: one trace.StackProfile per table
    (dist 'trace' only)."""

    def __init__(self, num_dense, table_sizes, num_samples, bag_size=10, fixed_bag_size=False,
                 dist="uniform", rand_min=0.0, rand_max=1.0, mu=-1.0, sigma=1.0,
                 profiles=None, enable_padding=False, seed=123):
        if dist not in INDEX_DISTRIBUTIONS:
            raise ValueError(f"index distribution must be one of {INDEX_DISTRIBUTIONS}, "
                             f"got {dist!r}")
        sizes = tuple(int(v) for v in table_sizes)
        if any(v < 1 for v in sizes):
            raise ValueError(f"table sizes must be >= 1, got {sizes}")
        if int(num_dense) < 0 or int(num_samples) < 0 or int(bag_size) < 1:
            raise ValueError(f"need num_dense >= 0, num_samples >= 0 and bag_size >= 1, got "
                             f"{num_dense}, {num_samples}, {bag_size}")
        if dist == "gaussian":
            if not (np.isfinite(rand_min) and np.isfinite(rand_max) and rand_min <= rand_max):
                raise ValueError(f"--rand-data-min {rand_min} must be <= --rand-data-max "
                                 f"{rand_max}")
            if rand_min < 0 or int(rand_max) > min(sizes, default=1) - 1:
                raise ValueError(f"gaussian rows are clipped to [--rand-data-min, "
                                 f"--rand-data-max] = [{rand_min}, {rand_max}]: both must be "
                                 f"rows of every table (0 .. {min(sizes, default=1) - 1})")
            if not sigma >= 0:
                raise ValueError(f"--rand-data-sigma must be >= 0, got {sigma}")
        if dist == "trace" and (profiles is None or len(profiles) != len(sizes)):
            raise ValueError(f"trace data needs one profile per table ({len(sizes)}), got "
                             f"{0 if profiles is None else len(profiles)}")
        self.num_dense, self.table_sizes = int(num_dense), sizes
        self.num_samples, self.seed = int(num_samples), int(seed)
        self.bag_size, self.fixed_bag_size = int(bag_size), bool(fixed_bag_size)
        self.dist, self.rand_min, self.rand_max = dist, float(rand_min), float(rand_max)
        self.mu = (self.rand_max + self.rand_min) / 2.0 if mu == -1 else float(mu)
        self.sigma, self.profiles = float(sigma), profiles
        self.enable_padding = bool(enable_padding)

    def num_batches(self, batch_size):
        """ceil(num_samples / batch_size): the last batch is partial."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return -(-self.num_samples // int(batch_size))

    def batches(self, batch_size, start=0):
        """Iterator of the Minibatches from batch `start` on (batches before it are drawn
        and dropped: the stream is sequential)."""
        rs = np.random.RandomState(self.seed)
        B = int(batch_size)
        for i in range(self.num_batches(B)):
            mb = self.draw(rs, min(B, self.num_samples - i * B))
            if i >= start:
                yield mb

    def draw(self, rs, n):
        """The next batch of n samples drawn from RandomState rs."""
        dense = rs.rand(n, self.num_dense).astype(np.float32)
        indices, offsets = [], []
        for k, size in enumerate(self.table_sizes):
            bags = self._bags_fixed(rs, n, size) if self.fixed_bag_size and \
                self.dist != "trace" else [self._bag(rs, k, size) for _ in range(n)]
            lengths = np.array([b.size for b in bags], dtype=np.int64)
            off = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths, out=off[1:])
            indices.append(np.concatenate(bags) if bags else np.zeros(0, np.int64))
            offsets.append(off)
        labels = rs.rand(n, 1).astype(np.float32)[:, 0]
        return Minibatch(dense, indices, offsets, labels)

    def _bag_size(self, rs, size):
        if self.fixed_bag_size:
            return self.bag_size
        return int(np.rint(max(1.0, rs.random(1)[0] * min(size, self.bag_size))))

    def _bag(self, rs, k, size):
        """One bag of table k (size rows): its sorted unique rows (int64)."""
        g = self._bag_size(rs, size)
        if self.dist == "uniform":
            return np.unique(np.rint(rs.random(g) * (size - 1)).astype(np.int64))
        if self.dist == "gaussian":
            r = rs.normal(self.mu, self.sigma, g)
            return np.unique(np.clip(r, self.rand_min, self.rand_max)).astype(np.int64)
        rows = np.unique(generate_lru(self.profiles[k], g, rs, self.enable_padding))
        if rows[0] < 0 or rows[-1] >= size:  # the profile's rows exceed the table
            rows = np.mod(rows, size)
        return rows

    def _bags_fixed(self, rs, n, size):
        """n bags of a fixed size in one draw: the same numbers as n draws of g each."""
        g = self.bag_size
        if self.dist == "uniform":
            rows = np.rint(rs.random(n * g) * (size - 1)).astype(np.int64).reshape(n, g)
        else:
            rows = np.clip(rs.normal(self.mu, self.sigma, n * g), self.rand_min,
                           self.rand_max).reshape(n, g)
        rows = np.sort(rows, axis=1)
        keep = np.ones(rows.shape, dtype=bool)
        keep[:, 1:] = rows[:, 1:] != rows[:, :-1]
        flat = rows[keep].astype(np.int64)
        return np.split(flat, np.cumsum(keep.sum(axis=1))[:-1])


class ReferenceStreamLoader:
    """A ReferenceStream's batches with the loaders' interface (`len()`, `epoch(epoch,
    start_batch)`). Every epoch restarts the stream from the seed, as the reference's
    RandomDataset does when it reads batch 0. round_labels: labels rounded to 0 / 1 (the
    reference's --round-targets; evaluation needs them)."""

    def __init__(self, stream, batch_size, rank=0, world_size=1, round_labels=False):
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.stream, self.batch_size = stream, int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.round_labels = bool(round_labels)
        self._len = stream.num_batches(self.batch_size)

    def __len__(self):
        return self._len

    def epoch(self, epoch=0, start_batch=0):
        check_position(epoch, start_batch, self._len)
        return self._iterate(int(start_batch))

    def _iterate(self, start_batch):
        for mb in self.stream.batches(self.batch_size, start_batch):
            if self.round_labels:
                mb = mb._replace(labels=np.round(mb.labels))
            if self.world_size > 1:
                mb = slice_rows(mb, *rank_bounds(mb.size, self.rank, self.world_size))
            yield mb

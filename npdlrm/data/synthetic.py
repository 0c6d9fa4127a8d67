"""Synthetic click data with a planted signal: uniform or power-law indices, addressable batches.

Batch `i` of a split is drawn from a generator seeded by (seed, split, i) only, so any
batch can be regenerated alone. Labels come from a planted model shared by all splits:

    logit = w . standardized(dense) + sum_k mean_{row in bag k} u_k[row] + bias

where u_k[row] is a normal value derived from a hash of (seed, k, row): no (V,) array is
ever built, whatever the table size.
"""
import math

import numpy as np

from .loader import rank_bounds, slice_rows
from .minibatch import Minibatch, check_position

SPLIT_IDS = {"train": 0, "test": 1, "val": 2}
DISTRIBUTIONS = ("random", "power-law")
DENSE_DISTRIBUTIONS = ("uniform", "lognormal")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_EXP_ONE_TOL = 1e-9  # |1 - exponent| below this uses the exponent-1 (log) form
_MAX_SCRAMBLE = 2 ** 31
_MAX_TABLE_ROWS = 2 ** 32  # a*r + c of the scramble stays below 2**63
_IRWIN_HALL_SCALE = 1.0 / math.sqrt(4 * (65536.0 ** 2 - 1) / 12)


def _splitmix64(x):
    """Bijective 64-bit mix of a uint64 array (wrap-around arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed_normal(keys):
    """An approximately standard-normal value per uint64 key: the standardized sum of the
    four 16-bit words of a hash (Irwin-Hall, |z| <= 3.46). keys: (n,) uint64 -> (n,) float64."""
    h = _splitmix64(np.asarray(keys, dtype=np.uint64))
    m = np.uint64(0xFFFF)
    total = (h & m) + ((h >> np.uint64(16)) & m) + ((h >> np.uint64(32)) & m) \
        + (h >> np.uint64(48))
    return (total.astype(np.float64) - 2.0 * 65535) * _IRWIN_HALL_SCALE


def power_law_params(size, exponent):
    """Per-table constants (log(V + 1), expm1((1 - s) log(V + 1)), 1 / (1 - s), near_one)
    of `power_law_ranks`; near_one tables (s == 1) use the log form. Arrays (T,)."""
    size = np.asarray(size, dtype=np.float64)
    a = 1.0 - np.asarray(exponent, dtype=np.float64)
    near_one = np.abs(a) < _EXP_ONE_TOL
    a_safe = np.where(near_one, 1.0, a)
    log_hi = np.log(size + 1.0)
    return log_hi, np.expm1(a_safe * log_hi), np.where(near_one, 0.0, 1.0 / a_safe), near_one


def power_law_ranks(u, size, exponent):
    """Ranks in [0, size) of a bounded power law P(rank r) ~ integral_{r+1}^{r+2} x^-s dx:
    the inverse CDF of the continuous law on [1, size + 1), floored.
    u: (n,) uniforms in [0, 1); size, exponent: scalars or (n,) arrays."""
    u = np.asarray(u, dtype=np.float64)
    log_hi, c, inv_a, near_one = (np.broadcast_to(p, u.shape)
                                  for p in power_law_params(size, exponent))
    return _ranks(u, np.broadcast_to(np.asarray(size, dtype=np.int64), u.shape),
                  log_hi, c, inv_a, near_one)


def _ranks(u, size, log_hi, c, inv_a, near_one):
    """power_law_ranks from per-element constants (all (n,))."""
    log_x = np.log1p(u * c) * inv_a
    if near_one.any():
        log_x[near_one] = u[near_one] * log_hi[near_one]
    ranks = np.exp(log_x).astype(np.int64) - 1  # x >= 1: truncation is the floor
    return np.clip(ranks, 0, size - 1)


def power_law_probs(size, exponent):
    """Exact P(rank r), r in [0, size), of `power_law_ranks` (slow reference, (size,) array)."""
    edges = np.arange(1, size + 2, dtype=np.float64)
    if abs(1.0 - exponent) < _EXP_ONE_TOL:
        cdf = np.log(edges) / np.log(size + 1.0)
    else:
        a = 1.0 - exponent
        cdf = np.expm1(a * np.log(edges)) / np.expm1(a * np.log(size + 1.0))
    return np.diff(cdf)


def _scramble_params(rng, size):
    """(a, c) with gcd(a, size) = 1: rank r -> row (a*r + c) mod size is a bijection
    (a < 2**31 keeps a*r in int64 for tables below 2**32 rows)."""
    if size == 1:
        return 1, 0
    top = min(size, _MAX_SCRAMBLE)
    a = int(rng.integers(1, top))
    while math.gcd(a, size) != 1:
        a = a % (top - 1) + 1
    return a, int(rng.integers(0, size))


def _as_per_table(value, T, name):
    """A float or a sequence of T floats -> (T,) float64."""
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (T,)) if np.ndim(value) == 0 \
        else np.asarray(value, dtype=np.float64)
    if arr.shape != (T,):
        raise ValueError(f"{name} must be one value or one per table ({T}), got {len(arr)}")
    return arr


class SyntheticData:
    """Planted-model click data; `batch(index, batch_size, split)` -> Minibatch."""

    def __init__(self, num_dense, table_sizes, num_samples, distribution="random",
                 exponents=1.1, bag_size=1, fixed_bag_size=True, dense_distribution="uniform",
                 signal=1.0, bias=-1.0, seed=0):
        sizes = tuple(int(v) for v in table_sizes)
        if any(not 1 <= v <= _MAX_TABLE_ROWS for v in sizes):
            raise ValueError(f"table sizes must be in [1, 2**32], got {sizes}")
        if int(num_dense) < 0 or int(num_samples) < 0:
            raise ValueError(f"num_dense and num_samples must be >= 0, got {num_dense}, "
                             f"{num_samples}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        if dense_distribution not in DENSE_DISTRIBUTIONS:
            raise ValueError(f"dense_distribution must be one of {DENSE_DISTRIBUTIONS}, got "
                             f"{dense_distribution!r}")
        if int(bag_size) < 1:
            raise ValueError(f"bag_size must be >= 1, got {bag_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        exps = _as_per_table(exponents, len(sizes), "exponents")
        if not np.all(np.isfinite(exps)) or np.any(exps < 0):
            raise ValueError(f"power-law exponents must be finite and >= 0, got {exps.tolist()}")
        self._sizes = sizes
        self._num_dense = int(num_dense)
        self.num_samples = int(num_samples)
        self.distribution, self.dense_distribution = distribution, dense_distribution
        self.bag_size, self.fixed_bag_size = int(bag_size), bool(fixed_bag_size)
        self.exponents = exps.copy()
        self.signal, self.bias, self.seed = float(signal), float(bias), int(seed)
        model_rng = np.random.default_rng([self.seed, 0x5EED])
        T, n = len(sizes), self._num_dense
        self.w_dense = model_rng.normal(0.0, self.signal / math.sqrt(max(n, 1)), n)
        self.row_scale = self.signal / math.sqrt(max(T, 1))
        scr = [_scramble_params(model_rng, v) for v in sizes]
        self._scr_a = np.array([a for a, _ in scr], dtype=np.int64)
        self._scr_c = np.array([c for _, c in scr], dtype=np.int64)
        self._size_arr = np.array(sizes, dtype=np.int64)
        self._power_law = power_law_params(self._size_arr, exps)
        self._hash_base = _splitmix64(np.array([self.seed], dtype=np.uint64))[0]

    @property
    def num_dense(self):
        return self._num_dense

    @property
    def table_sizes(self):
        return self._sizes

    def num_batches(self, batch_size):
        """ceil(num_samples / batch_size): the last batch is partial."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return -(-self.num_samples // int(batch_size))

    def row_effects(self, table, rows):
        """Planted effect u_table[row] of each row. rows: (n,) int -> (n,) float64."""
        rows = np.asarray(rows, dtype=np.int64)
        return self._effects(np.full(rows.shape, table, dtype=np.int64), rows)

    def _effects(self, table_of, rows):
        # table_of, rows: (n,) int64
        keys = (rows.astype(np.uint64) + (table_of + 1).astype(np.uint64) * _GOLDEN
                + self._hash_base)
        return hashed_normal(keys) * self.row_scale

    def batch(self, index, batch_size, split="train"):
        """Batch `index` (rows index*batch_size ...) of `split`, generated from
        (seed, split, index) alone."""
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        nb = self.num_batches(batch_size)
        if not 0 <= int(index) < nb:
            raise ValueError(f"batch index {index} out of range [0, {nb}) for "
                             f"{self.num_samples} samples in batches of {batch_size}")
        B = min(int(batch_size), self.num_samples - int(index) * int(batch_size))
        rng = np.random.default_rng([self.seed, SPLIT_IDS[split], int(index)])
        return self._draw(rng, B)

    def _draw(self, rng, B):
        T, bag = len(self._sizes), self.bag_size
        if self.fixed_bag_size:
            counts = None
            per_table = np.full(T, B * bag, dtype=np.int64)
        else:
            counts = rng.integers(1, bag + 1, (T, B), dtype=np.int64)
            per_table = counts.sum(axis=1)
        dense, dense_z = self._dense(rng, B)
        table_of = np.repeat(np.arange(T), per_table)  # (nnz_total,) table of each index
        u = rng.random(table_of.size)
        size = self._size_arr[table_of]
        if self.distribution == "random":
            rows = np.minimum((u * size).astype(np.int64), size - 1)
        else:
            ranks = _ranks(u, size, *(p[table_of] for p in self._power_law))
            rows = (self._scr_a[table_of] * ranks + self._scr_c[table_of]) % size
        effects = self._effects(table_of, rows)
        if counts is None:
            bag_mean = effects.reshape(T, B, bag).mean(axis=2)
            offsets = [np.arange(0, B * bag + 1, bag, dtype=np.int64)] * T
        else:
            bag_of = np.repeat(np.arange(T * B), counts.ravel())  # table-major bag id
            bag_mean = (np.bincount(bag_of, weights=effects, minlength=T * B)
                        / counts.ravel()).reshape(T, B)
            ends = np.zeros((T, B + 1), dtype=np.int64)
            np.cumsum(counts, axis=1, out=ends[:, 1:])
            offsets = list(ends)
        logit = dense_z @ self.w_dense + bag_mean.sum(axis=0) + self.bias
        truth = 1.0 / (1.0 + np.exp(-logit))
        labels = (rng.random(B) < truth).astype(np.float32)
        indices = np.split(rows, np.cumsum(per_table)[:-1]) if T else []
        return Minibatch(dense, indices, offsets, labels, truth)

    def _dense(self, rng, B):
        """dense: (B, n) float32 features and z: (B, n) their standardized version."""
        n = self._num_dense
        if self.dense_distribution == "uniform":
            dense = rng.random((B, n), dtype=np.float32)
            return dense, (dense.astype(np.float64) - 0.5) * math.sqrt(12.0)
        z = rng.standard_normal((B, n))  # log of a lognormal count; features are log(1 + count)
        return np.log1p(np.exp(z)).astype(np.float32), z


class SyntheticLoader:
    """Batches of a SyntheticData split with BatchLoader's interface: `len()` and
    `epoch(epoch, start_batch)`. Every epoch is the same data, like the reference's."""

    def __init__(self, synthetic_data, batch_size, split="train", rank=0, world_size=1):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.data, self.split = synthetic_data, split
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self._len = synthetic_data.num_batches(self.batch_size)

    def __len__(self):
        return self._len

    def epoch(self, epoch=0, start_batch=0):
        """Iterator of this rank's slice of batches start_batch .. len-1."""
        check_position(epoch, start_batch, self._len)
        return self._iterate(int(start_batch))

    def _iterate(self, start_batch):
        for i in range(start_batch, self._len):
            mb = self.data.batch(i, self.batch_size, self.split)
            if self.world_size > 1:
                mb = slice_rows(mb, *rank_bounds(mb.size, self.rank, self.world_size))
            yield mb

"""Pre-generated synthetic batches: uniform indices, one per bag, random labels."""
import numpy as np


def make_batches(table_sizes, num_dense, batch_size, count, seed=0):
    """`count` batches of (dense (B, n) float32, indices [T x (B,) int64],
    offsets [T x (B,) int64 bag starts], labels (B,) float32 in {0, 1})."""
    rng = np.random.default_rng(seed)
    B = batch_size
    offsets = np.arange(B, dtype=np.int64)
    batches = []
    for _ in range(count):
        dense = rng.random((B, num_dense), dtype=np.float32)
        indices = [rng.integers(0, v, B, dtype=np.int64) for v in table_sizes]
        labels = (rng.random(B) < 0.5).astype(np.float32)
        batches.append((dense, indices, [offsets] * len(table_sizes), labels))
    return batches


def unique_rows(batch):
    """Total distinct rows touched by one batch, over all tables."""
    return sum(int(np.unique(idx).size) for idx in batch[1])

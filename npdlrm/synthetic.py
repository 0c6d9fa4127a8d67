"""Synthetic click data with a planted signal (vectorised, no download).

Labels are drawn from a planted model, logit = dense @ w + sum_k u_k[index_k] + c, so
that a trained model's AUC can be set beside the planted model's own.
"""
import numpy as np


class PlantedData:
    """Generator of batches: dense (B, n) float32, one index per table, labels (B,)."""

    def __init__(self, num_dense, table_sizes, seed=0, signal=1.0, bias=-1.0):
        self.rng = np.random.default_rng(seed)
        self.num_dense = num_dense
        self.table_sizes = tuple(int(v) for v in table_sizes)
        r = np.random.default_rng(seed + 1)
        self.w_dense = r.normal(0, signal / np.sqrt(num_dense), num_dense)
        self.row_effects = [r.normal(0, signal / np.sqrt(len(self.table_sizes)), v)
                            for v in self.table_sizes]
        self.bias = bias

    def batch(self, B):
        """Returns dense, indices, offsets, labels, planted probabilities."""
        dense = self.rng.random((B, self.num_dense), dtype=np.float32)
        indices = [self.rng.integers(0, v, B) for v in self.table_sizes]
        offsets = [np.arange(B, dtype=np.int64)] * len(self.table_sizes)
        logit = (dense - 0.5) @ self.w_dense * np.sqrt(12) + self.bias
        for u, idx in zip(self.row_effects, indices):
            logit += u[idx]
        p = 1 / (1 + np.exp(-logit))
        labels = (self.rng.random(B) < p).astype(np.float32)
        return dense, indices, offsets, labels, p

"""The pairs of the dot interaction, in the reference order (host-side, both backends)."""
import numpy as np


def num_pairs(F, self_interaction):
    """P = F(F-1)/2, or F(F+1)/2 with self interaction."""
    return F * (F + 1) // 2 if self_interaction else F * (F - 1) // 2


def pair_indices(F, self_interaction):
    """(li, lj) int64 arrays of the pairs, in the reference order."""
    s = 1 if self_interaction else 0
    li = np.concatenate([np.full(i + s, i, np.int64) for i in range(F)])
    lj = np.concatenate([np.arange(i + s, dtype=np.int64) for i in range(F)])
    return li, lj

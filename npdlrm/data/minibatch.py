"""The batch every data source hands to the trainer."""
from typing import List, NamedTuple, Optional

import numpy as np


class Minibatch(NamedTuple):
    """dense: (B, n) float32; indices/offsets: one int64 array per table, offsets (B+1,)
    (bag b of table k is indices[k][offsets[k][b]:offsets[k][b+1]]); labels: (B,) float32;
    truth: (B,) the planted click probability for synthetic data, else None."""
    dense: np.ndarray
    indices: List[np.ndarray]
    offsets: List[np.ndarray]
    labels: np.ndarray
    truth: Optional[np.ndarray] = None

    @property
    def size(self):
        return self.dense.shape[0]

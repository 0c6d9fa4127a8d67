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


def check_position(epoch, start_batch, num_batches):
    """(epoch, start_batch) as ints, or ValueError unless epoch >= 0 and start_batch is in
    [0, num_batches]: the one check of every loader's `epoch(epoch, start_batch)`."""
    if int(epoch) < 0 or not 0 <= int(start_batch) <= num_batches:
        raise ValueError(f"epoch must be >= 0 and start_batch in [0, {num_batches}], got "
                         f"epoch={epoch}, start_batch={start_batch}")
    return int(epoch), int(start_batch)

"""Days and splits as the reference cuts them.

Kaggle's one file is cut into 7 "days" of equal size (the first `extras` days one row
longer); Terabyte has 24 real days. Training takes every day but the last; the last
day is halved: its first half is the test set, its second half the validation set.
"""
import numpy as np

SPLITS = ("train", "test", "val", "all")


def equal_days(total_rows, days=7):
    """Rows of each day when `total_rows` rows are cut into `days` days (reference)."""
    base, extras = divmod(int(total_rows), int(days))
    return tuple(base + (1 if d < extras else 0) for d in range(days))


def split_ranges(day_rows, split):
    """[(start, stop)] global row ranges of `split` ('train' | 'test' | 'val' | 'all')."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    bounds = np.concatenate([[0], np.cumsum(np.asarray(day_rows, dtype=np.int64))])
    total = int(bounds[-1])
    if split == "all":
        return [(0, total)] if total else []
    if len(day_rows) < 2:
        raise ValueError(f"splits need at least 2 days (train, then test/val), got {len(day_rows)}")
    last_start = int(bounds[-2])
    n_last = total - last_start
    mid = last_start + (n_last + 1) // 2  # np.array_split: the first half takes the extra row
    ranges = {"train": (0, last_start), "test": (last_start, mid), "val": (mid, total)}
    start, stop = ranges[split]
    return [(start, stop)] if stop > start else []

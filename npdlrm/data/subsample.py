"""Negative down-sampling of the training days (--data-sub-sample-rate), before parsing.

As the reference's data_utils.py: line k of a day (raw line numbers, malformed lines
included) draws u_k, the uniforms of NumPy's legacy generator seeded with the seed,
drawn for every line of every day in order; a line whose label is 0 (or missing) is
dropped when u_k < rate. Unlike the reference, which thins every day, only the training
days are thinned: the last day (test and validation) keeps its true click rate. Kaggle's
days are its raw lines cut into `days` equal runs (the first ones a line longer), as the
reference cuts them.

The kept lines are copied as they are into plain-text files under `work_dir`, which the
preprocessing then reads in place of the raw files; `cleanup` removes them.
"""
import gzip
import os
import shutil

import numpy as np

from .criteo_tsv import read_criteo_tsv
from .splits import equal_days

_LINES = 1 << 16  # lines handled per draw


def _open(path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _zero_label(line):
    field = line.split(b"\t", 1)[0].strip()
    return field in (b"", b"0") or (field.isdigit() and int(field) == 0)


def _line_batches(path):
    with _open(path) as f:
        while True:
            lines = f.readlines(_LINES * 64)
            if not lines:
                return
            yield lines


def count_lines(path):
    """Lines of a raw file (a last line without a newline counts)."""
    return sum(len(b) for b in _line_batches(path))


def thin_lines(lines, u, rate):
    """The lines kept: every positive one, a negative one when its draw u >= rate.
    lines: list of n raw lines (bytes); u: (n,) uniforms."""
    return [ln for ln, x in zip(lines, u) if x >= rate or not _zero_label(ln)]


def _copy(src, dst, rs, rate, thin_until, tail=None):
    """Copy raw file src to dst, thinning its first `thin_until` lines (None: all); each
    line draws one uniform from rs; the lines not thinned also go to the file `tail`."""
    read = 0
    with open(dst, "wb") as out:
        for lines in _line_batches(src):
            u = rs.uniform(0.0, 1.0, len(lines))
            if not lines[-1].endswith(b"\n"):
                lines[-1] += b"\n"
            n = len(lines) if thin_until is None else max(0, min(len(lines), thin_until - read))
            out.writelines(thin_lines(lines[:n], u[:n], rate) + lines[n:])
            if tail is not None:
                tail.writelines(lines[n:])
            read += len(lines)


def sample_sources(files, dataset, days, rate, seed, work_dir, strict=False, comm=None):
    """(the files to preprocess, rows of Kaggle's last day or None).

    rate 0 returns the raw files untouched. Otherwise Terabyte's training days (every
    file but the last) and the first (days - 1) / days of Kaggle's lines are thinned
    into copies under work_dir; for Kaggle the valid rows of its last day are counted,
    so that the preprocessing cuts the train / test boundary where the raw days put it."""
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"sub_sample_rate must be in [0, 1], got {rate}")
    if rate == 0.0:
        return list(files), None
    if comm is not None and comm.size > 1:
        raise ValueError("sub-sampling (--data-sub-sample-rate) runs in one process: "
                         "preprocess without mpiexec")
    os.makedirs(work_dir, exist_ok=True)
    rs = np.random.RandomState(int(seed))
    if dataset == "kaggle":
        total = count_lines(files[0])
        last = total // int(days)
        dst = os.path.join(work_dir, "kaggle.tsv")
        tail = os.path.join(work_dir, "last_day.tsv")  # the last day alone: its valid rows
        with open(tail, "wb") as t:
            _copy(files[0], dst, rs, rate, total - last, t)
        valid = sum(len(b.labels) for b in read_criteo_tsv(tail, strict=strict)) if last else 0
        os.remove(tail)
        return [dst], valid
    out = []
    for i, src in enumerate(files[:-1]):
        dst = os.path.join(work_dir, f"day_{i}.tsv")
        _copy(src, dst, rs, rate, None)
        out.append(dst)
    return out + [files[-1]], None


def day_rows_after(rows, days, last_rows):
    """Kaggle's day rows once thinned: the training rows cut into days - 1 equal days,
    then the last day's rows (last_rows None: `rows` cut into `days` equal days)."""
    if last_rows is None or int(days) < 2:
        return equal_days(rows, days)
    return tuple(equal_days(rows - last_rows, days - 1)) + (int(last_rows),)


def options_with(options, rate, seed):
    """The processed file's options, with the rate and its seed when rate > 0 (a file made
    without sub-sampling keeps its options as they were)."""
    if float(rate) == 0.0:
        return options
    return dict(options, sub_sample_rate=float(rate), sub_sample_seed=int(seed))


def cleanup(work_dir):
    """Remove the thinned copies (if any)."""
    if os.path.isdir(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)

"""The dictionary pass of preprocessing: raw files -> `Dictionary` (dict encoding).

Serial: one `DictionaryBuilder` reads the files in order. With a memory limit its
tables spill key runs into a folder beside the output and `finish` merges them one
column at a time. On several processes (MPI ranks or local workers, see
parallel_days) each day file gives a partial dictionary (its runs); they are merged
in day order, which keeps the order of first appearance of the serial pass.
"""
import os
import shutil
from dataclasses import dataclass

import numpy as np

from .criteo_dict import DictionaryBuilder, load_dictionary, merge_runs
from .criteo_tsv import NUM_CAT, read_criteo_tsv
from .parallel_days import map_days


@dataclass(frozen=True)
class PassOptions:
    """What both passes need to read the raw files (picklable, for workers)."""
    encoding: str
    max_ind_range: int
    threshold: int
    strict: bool
    block_bytes: int
    memory_limit: int = 0   # bytes for the dictionary's tables; 0: no limit


def raw_blocks(path, opts):
    """The parsed blocks of raw file `path`, as both passes read them."""
    return read_criteo_tsv(path, opts.block_bytes, opts.strict, require_rows=True)


def reduce_keys(cats, max_ind_range):
    """cats: (n, 26) uint64, taken modulo max_ind_range when it is > 0."""
    return cats % np.uint64(max_ind_range) if max_ind_range > 0 else cats


def day_runs(path, opts, spill_dir, budget):
    """Partial dictionary of one raw file: (run folders in order, rows read)."""
    builder = DictionaryBuilder(NUM_CAT, count=opts.threshold > 1, memory_limit=budget,
                                spill_dir=spill_dir)
    for block in raw_blocks(path, opts):
        builder.add(reduce_keys(block.cats, opts.max_ind_range))
    builder.spill()
    return builder.runs, builder.rows


def build_dictionary(files, opts, dict_path, options, spill_dir, workers=1, comm=None,
                     on_block=None, on_file=None):
    """Build the dictionary of `files` and save it at `dict_path` (with `options`).

    on_block(block) / on_file(path, rows): progress; with workers, on_file only (with
    the day's rows) as each day ends."""
    parallel = (comm is not None and comm.size > 1) or (workers > 1 and len(files) > 1)
    try:
        if not parallel:
            return _serial(files, opts, dict_path, options, spill_dir, on_block, on_file)
        size = comm.size if comm is not None and comm.size > 1 else min(workers, len(files))
        args = [(p, opts, os.path.join(spill_dir, f"day_{i:04d}"), opts.memory_limit // size)
                for i, p in enumerate(files)]
        done = None if on_file is None else (lambda i, r: on_file(files[i], r[1]))
        per_day = map_days(day_runs, args, workers, comm, on_done=done)
        runs = [r for day, _ in per_day for r in day]
        if comm is None or comm.rank == 0:
            d = merge_runs(runs, NUM_CAT, opts.threshold,
                           dict_path if opts.memory_limit else None, options)
            if d.path is None:
                d.save(dict_path, options)
            d.release(range(NUM_CAT))  # the write pass's workers load their own
        if comm is not None and comm.size > 1:
            comm.barrier()
            if comm.rank != 0:
                d = load_dictionary(dict_path, options, load=False)  # loaded by day
                if d is None:
                    raise ValueError(f"rank {comm.rank} cannot read the dictionary {dict_path} "
                                     "rank 0 wrote: the ranks must share one filesystem")
        return d
    finally:
        if comm is None or comm.rank == 0:
            shutil.rmtree(spill_dir, ignore_errors=True)


def _serial(files, opts, dict_path, options, spill_dir, on_block, on_file):
    builder = DictionaryBuilder(NUM_CAT, count=opts.threshold > 1,
                                memory_limit=opts.memory_limit, spill_dir=spill_dir)
    for path in files:
        for block in raw_blocks(path, opts):
            builder.add(reduce_keys(block.cats, opts.max_ind_range))
            if on_block is not None:
                on_block(block)
        if on_file is not None:
            on_file(path)
    return builder.finish(opts.threshold, dict_path, options)

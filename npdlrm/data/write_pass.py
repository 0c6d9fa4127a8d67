"""The write pass of preprocessing: one raw file -> one processed HDF5 file (or part).

Ids come from the dictionary's lookup tables (dict encoding) or value % max_ind_range
(hash). When the lookup tables of all 26 columns do not fit the memory limit, the
columns are cut into groups that do (`column_groups`) and the raw file is read once
per group: the first read writes the dense values, the labels and its columns, the
next ones the other columns. `write_day` is the task a worker runs for one day.
"""

import numpy as np

from ..atomic import atomic_h5, grow_reservation
from ..diskspace import h5_size
from ..signals import check_interrupt
from . import h5data
from .criteo_dict import load_dictionary
from .criteo_tsv import MAX_EXAMPLES, NUM_CAT
from .first_pass import raw_blocks, reduce_keys


def dense_from_ints(ints):
    """log(float32(max(x, 0)) + 1) in float32. ints: (n, 13) int64 -> (n, 13) float32."""
    return np.log(np.maximum(ints, 0).astype(np.float32) + np.float32(1))


def column_groups(dictionary, budget):
    """Groups of columns whose lookup tables fit `budget` bytes together: first fit,
    largest table first (a column over the budget alone is a group of its own); each
    group's columns in order, the group holding column 0 first. One group of all when
    there is no budget, no dictionary, or its tables are all in memory."""
    everything = [list(range(NUM_CAT))]
    if dictionary is None or budget <= 0 or all(t is not None for t in dictionary.tables):
        return everything
    need = [dictionary.lookup_bytes(j) for j in range(NUM_CAT)]
    groups, used = [], []
    for j in sorted(range(NUM_CAT), key=lambda j: (-need[j], j)):
        for g in range(len(groups)):
            if used[g] + need[j] <= budget:
                groups[g].append(j)
                used[g] += need[j]
                break
        else:
            groups.append([j])
            used.append(need[j])
    return sorted(sorted(g) for g in groups)


def mapper_for(opts, dictionary):
    """map(cats (n, 26) uint64, columns) -> (n, 26) ids (the columns asked filled)."""
    mir = opts.max_ind_range
    if opts.encoding == "hash":
        dtype = h5data.sparse_dtype(mir)
        return lambda cats, columns: (cats % np.uint64(mir)).astype(dtype)
    return lambda cats, columns: dictionary.map(reduce_keys(cats, mir), columns)


def space_for_rows(f, table_sizes):
    """reserve(n): hold the disk space of n more rows for the file f (opened by
    open_output) before they are written, and act on a SIGINT / SIGTERM deferred
    meanwhile."""
    row_bytes = 4 * (h5data.NUM_DENSE + 1) + sum(
        np.dtype(h5data.sparse_dtype(n)).itemsize for n in table_sizes)
    rows = [0]

    def reserve(n):
        check_interrupt()
        rows[0] += n
        grow_reservation(f, h5_size(rows[0] * row_bytes, 3 + len(table_sizes)))
    return reserve


def open_output(path):
    """h5data.atomic_h5 (same temporary name) with the space reserved as rows come
    (`space_for_rows`): a full disk raises DiskFullError, the previous file untouched."""
    return atomic_h5(path, h5_size(0, 0), tmp=h5data.partial_path(path),
                     rdcc_nbytes=h5data.chunk_cache_bytes())


def write_rows(f, path, table_sizes, map_ids, opts, chunk_rows, groups, on_block=None):
    """Write the valid rows of raw file `path` into h5py.File f, one read per group.

    Returns (rows, malformed, examples, warnings); a raw file with no valid row raises.
    """
    writer = h5data.RowWriter(f, table_sizes, chunk_rows, columns=groups[0])
    reserve = space_for_rows(f, table_sizes)
    malformed, examples, warnings, kept = 0, [], [], 0
    for block in raw_blocks(path, opts):
        reserve(len(block.labels))
        writer.append(dense_from_ints(block.ints), map_ids(block.cats, groups[0]),
                      block.labels.astype(np.float32))
        malformed += block.n_malformed
        kept += len(block.labels)
        examples.extend(str(m) for m in block.malformed[:MAX_EXAMPLES - len(examples)])
        if block.truncated:
            warnings.append(f"{block.truncated}; kept the {kept:,} valid rows read before it")
        if on_block is not None:
            on_block(block)
    writer.close()
    for group in groups[1:]:
        more = h5data.RowWriter(f, table_sizes, chunk_rows, columns=group, dense=False)
        for block in raw_blocks(path, opts):
            check_interrupt()
            more.append(None, map_ids(block.cats, group), block.labels)
        more.close()
        if more.rows != writer.rows:
            raise ValueError(f"raw data file {path} changed while it was read: "
                             f"{writer.rows:,} rows, then {more.rows:,}")
    return writer.rows, malformed, examples, warnings


def write_day(day, src, part, table_sizes, opts, chunk_rows, part_opts, common, dict_file=None,
              dictionary=None, budget=0, on_block=None):
    """Write raw day file `src` into part file `part`; returns (rows, malformed,
    examples, warnings). dictionary: the one to use, else (dict encoding) the one saved
    at dict_file = (path, options), its tables loaded by groups within `budget` bytes."""
    if dictionary is None and opts.encoding == "dict":
        dictionary = load_dictionary(*dict_file, load=False)
        if dictionary is None:
            raise ValueError(f"the dictionary {dict_file[0]} is missing or was built with "
                             "other options")
    groups = column_groups(dictionary, budget)
    map_ids = group_mapper(opts, dictionary, groups)
    with open_output(part) as f:
        rows, bad, examples, warns = write_rows(f, src, table_sizes, map_ids, opts, chunk_rows,
                                                groups, on_block)
        pre = dict(part_opts, malformed_rows=bad, malformed_examples=examples, warnings=warns)
        h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=[rows], parts=[],
                                preprocessing=pre, **common)
        f.attrs["day"] = np.int64(day)
    return rows, bad, examples, warns


def group_mapper(opts, dictionary, groups):
    """mapper_for, with the dictionary's tables loaded: all now when one group, else each
    group's when it is first asked (dropping the group before)."""
    map_ids = mapper_for(opts, dictionary)
    if dictionary is None:
        return map_ids
    if len(groups) == 1:
        dictionary.load(groups[0])
        return map_ids
    return _loading(dictionary, map_ids)


def _loading(dictionary, map_ids):
    """map_ids that loads a group's tables when first asked and drops the group before."""
    current = []

    def run(cats, columns):
        columns = list(columns)
        if current != [columns]:
            if current:
                dictionary.release(current[0])
            dictionary.load(columns)
            current[:] = [columns]
        return map_ids(cats, columns)
    return run

"""Raw Criteo TSV (Kaggle or Terabyte) -> processed HDF5, as the reference's data_utils.

Missing fields read as 0; negative integers become 0 and the dense value is
log(float32(x) + 1) in float32. Categorical hex values are either hashed
(value % max_ind_range) or, with the default dict encoding, taken modulo
max_ind_range when it is > 0 and then numbered per column in order of first
appearance (first pass, first_pass.py; hash tables of criteo_dict.py), with an
optional frequency threshold. Kaggle without a threshold or memory limit numbers the
values in the same read that writes the rows (the first-seen ids are final). Every
output file is written under a temporary name and renamed when complete, the manifest
last; a rerun reuses the dictionary and the part files built with the same options.
The memory limit, the workers and MPI change how the work is done, never the output.
"""
import json
import os
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from . import h5data, subsample
from .criteo_dict import DictionaryBuilder, load_dictionary
from .criteo_tsv import BLOCK_BYTES, MAX_EXAMPLES, NUM_CAT
from .first_pass import PassOptions, build_dictionary, reduce_keys
from .parallel_days import map_days
from .write_pass import column_groups, dense_from_ints, group_mapper, open_output, write_day
from .write_pass import write_rows

__all__ = ["preprocess_criteo", "resolve_sources", "dense_from_ints", "PreprocessReport"]

DATASETS = ("kaggle", "terabyte")
ENCODINGS = ("dict", "hash")
DEFAULT_DAYS = {"kaggle": 7, "terabyte": 24}
_RESULT_KEYS = ("malformed_rows", "malformed_examples", "dictionary_sha256", "warnings")


@dataclass
class PreprocessReport:
    """What `preprocess_criteo` wrote (or found already written)."""
    path: str
    rows: int
    malformed_rows: int
    malformed_examples: List[str]
    table_sizes: Tuple[int, ...]
    day_rows: Tuple[int, ...]
    skipped: bool = False            # `path` was complete with the same options
    dictionary_reused: bool = False
    parts_reused: int = 0
    part_paths: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # e.g. a truncated .gz, rows kept

    @property
    def resumed(self):
        """True when earlier work (dictionary or part files) was reused."""
        return self.dictionary_reused or self.parts_reused > 0


def resolve_sources(raw, dataset, days=None):
    """The raw files to read: Kaggle one file; Terabyte `{raw}_{i}` (or .gz) or a list."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if dataset == "kaggle":
        if not isinstance(raw, (str, os.PathLike)):
            raise ValueError(f"the kaggle dataset reads one raw file, got {raw!r}")
        files = [os.fspath(raw)]
    elif isinstance(raw, (list, tuple)):
        files = [os.fspath(p) for p in raw]
        if days is not None and days != len(files):
            raise ValueError(f"days={days} but {len(files)} raw files were given")
    else:
        n = DEFAULT_DAYS["terabyte"] if days is None else int(days)
        if n < 1:
            raise ValueError(f"days must be >= 1, got {days}")
        files = []
        for i in range(n):
            plain = f"{os.fspath(raw)}_{i}"
            files.append(plain if os.path.exists(plain) or not os.path.exists(plain + ".gz")
                         else plain + ".gz")
    if not files:
        raise ValueError("no raw files to read")
    for p in files:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"raw data file {p} does not exist")
    return files


def _options(encoding, max_ind_range, threshold, files):
    return {"encoding": encoding, "max_ind_range": max_ind_range,
            "frequency_threshold": threshold,
            "sources": [os.path.basename(p) for p in files],
            "source_sizes": [os.path.getsize(p) for p in files]}


def _matches(path, dataset, chunk_rows, options, extra=None):
    """True when `path` is a complete processed file written with these options."""
    try:
        attrs = h5data.read_attrs(path)
    except (OSError, ValueError, KeyError):
        return False
    got = {k: v for k, v in attrs["preprocessing"].items() if k not in _RESULT_KEYS}
    want = {k: v for k, v in json.loads(json.dumps(options)).items() if k not in _RESULT_KEYS}
    if got != want or str(attrs["dataset"]) != dataset or int(attrs["chunk_rows"]) != chunk_rows:
        return False
    return all(k in attrs and np.array_equal(attrs[k], v) for k, v in (extra or {}).items())


class _Progress:
    """Per-pass counters feeding the user's progress callback."""

    def __init__(self, callback, stage, bytes_total):
        self.callback, self.stage, self.total = callback, stage, bytes_total
        self.rows, self.bytes_before = 0, 0

    def block(self, block):
        self.rows += len(block.labels)
        if self.callback is not None:
            self.callback(self.stage, self.rows, self.bytes_before + block.bytes_done, self.total)

    def file_done(self, path, rows=0):
        self.bytes_before += os.path.getsize(path)
        self.rows += rows
        if rows and self.callback is not None:
            self.callback(self.stage, self.rows, self.bytes_before, self.total)


def preprocess_criteo(raw, out, dataset="kaggle", encoding="dict", max_ind_range=-1,
                      frequency_threshold=0, strict=False, days=None, chunk_rows=32768,
                      force=False, progress=None, block_bytes=BLOCK_BYTES, memory_limit=0,
                      workers=1, comm=None, sub_sample_rate=0.0,
                      sub_sample_seed=123) -> PreprocessReport:
    """Preprocess raw Criteo TSV into the processed HDF5 file `out` (see module doc).

    progress: optional callable(stage, rows_done, bytes_done, bytes_total), once a block
    (once a day file with workers). memory_limit: bytes the dictionary's tables may
    take (0: no limit); over it the first pass spills key runs to disk and the write
    pass reads the raw files once per group of columns whose tables fit. workers: local
    processes for the day files of Terabyte; comm: an MPI communicator (npdlrm.parallel
    .comm) whose ranks share the days. Neither changes the output. Local workers are
    spawned processes: a script calling this with workers > 1 needs the usual
    `if __name__ == "__main__":` guard.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    max_ind_range = int(max_ind_range) if int(max_ind_range) > 0 else -1
    if encoding == "hash" and max_ind_range <= 0:
        raise ValueError(f"encoding='hash' needs max_ind_range > 0, got {max_ind_range}")
    threshold = int(frequency_threshold) if int(frequency_threshold) > 1 else 0
    if encoding == "hash" and threshold:
        raise ValueError(f"frequency_threshold={frequency_threshold} applies to "
                         "encoding='dict' only")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if int(memory_limit) < 0:
        raise ValueError(f"memory_limit must be >= 0 bytes, got {memory_limit}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    chunk_rows, workers = int(chunk_rows), int(workers)
    files = resolve_sources(raw, dataset, days)
    if dataset == "kaggle":
        days = DEFAULT_DAYS["kaggle"] if days is None else int(days)
        if days < 1:
            raise ValueError(f"days must be >= 1, got {days}")
    out = os.path.abspath(os.fspath(out))
    if any(os.path.abspath(p) == out for p in files):
        raise ValueError(f"the output {out} is one of the raw files")
    folder = os.path.dirname(out)
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(out))[0]
    options = subsample.options_with(_options(encoding, max_ind_range, threshold, files),
                                     sub_sample_rate, sub_sample_seed)
    out_options = dict(options, days=days) if dataset == "kaggle" else options
    opts = PassOptions(encoding, max_ind_range, threshold, bool(strict), int(block_bytes),
                       int(memory_limit))

    if not force and _matches(out, dataset, chunk_rows, out_options) and _parts_present(out):
        return _report_existing(out)
    # --data-sub-sample-rate: thinned copies of the training days replace the raw files
    thinned = os.path.join(folder, f".{stem}.subsampled")
    files, last_rows = subsample.sample_sources(files, dataset, days, sub_sample_rate,
                                                sub_sample_seed, thinned, strict, comm)

    dictionary, dict_reused, dict_path = None, False, None
    # Kaggle without threshold or limit: one pass; the first-seen ids are the final ones
    one_pass = dataset == "kaggle" and encoding == "dict" and not threshold and not memory_limit
    if encoding == "dict":
        dict_path = os.path.join(folder, f"{stem}.dict.h5")
        serial = workers == 1 and (comm is None or comm.size == 1)
        dictionary = None if force else load_dictionary(dict_path, options,
                                                        load=serial and not memory_limit)
        dict_reused = dictionary is not None
        if dictionary is None and one_pass:
            report = _kaggle_one_pass(files[0], out, dict_path, options, out_options, opts,
                                      days, chunk_rows, progress, last_rows)
            subsample.cleanup(thinned)
            return report
        if dictionary is None:
            prog = _Progress(progress, "dictionary", sum(os.path.getsize(p) for p in files))
            dictionary = build_dictionary(
                files, opts, dict_path, options, os.path.join(folder, f".{stem}.spill"),
                workers, comm, on_block=prog.block, on_file=prog.file_done)
        table_sizes = dictionary.table_sizes
        sha = dictionary.sha256()
    else:
        table_sizes = (max_ind_range,) * NUM_CAT
        sha = None

    prog = _Progress(progress, "write", sum(os.path.getsize(p) for p in files))
    common = dict(dataset=dataset, chunk_rows=chunk_rows)
    if dataset == "kaggle":
        groups = column_groups(dictionary, opts.memory_limit)
        with open_output(out) as f:
            rows, bad, examples, warns = write_rows(f, files[0], table_sizes,
                                                    group_mapper(opts, dictionary, groups),
                                                    opts, chunk_rows, groups, prog.block)
            day_rows = subsample.day_rows_after(rows, days, last_rows)
            pre = dict(out_options, dictionary_sha256=sha, malformed_rows=bad,
                       malformed_examples=examples, warnings=warns)
            h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=day_rows, parts=[],
                                    preprocessing=pre, **common)
        subsample.cleanup(thinned)
        return PreprocessReport(out, rows, bad, examples, tuple(table_sizes), tuple(day_rows),
                                dictionary_reused=dict_reused, warnings=warns)

    names = [f"{stem}_day_{day}.h5" for day in range(len(files))]
    results, todo = [None] * len(files), []
    for day, src in enumerate(files):
        part = os.path.join(folder, names[day])
        part_opts = dict(_options(encoding, max_ind_range, threshold, [src]),
                         dictionary_sha256=sha)
        if not force and _matches(part, dataset, chunk_rows, part_opts,
                                  {"day": day, "table_sizes": table_sizes}) \
                and _part_sha(part) == sha:
            pre = h5data.read_attrs(part)["preprocessing"]
            results[day] = (int(h5data.read_attrs(part)["num_rows"]), int(pre["malformed_rows"]),
                            pre["malformed_examples"], list(pre.get("warnings", [])))
            prog.file_done(src)
        else:
            todo.append((day, src, part, table_sizes, opts, chunk_rows, part_opts, common))
    parallel = (comm is not None and comm.size > 1) or (workers > 1 and len(todo) > 1)
    if parallel:  # each process loads the dictionary from its file
        size = comm.size if comm is not None and comm.size > 1 else min(workers, len(todo))
        args = [t + ((dict_path, options), None, opts.memory_limit // size) for t in todo]
    else:
        args = [t + (None, dictionary, opts.memory_limit, prog.block) for t in todo]
    done = map_days(write_day, args, workers if parallel else 1, comm,
                    on_done=lambda i, r: prog.file_done(todo[i][1], r[0] if parallel else 0))
    for t, r in zip(todo, done):
        results[t[0]] = r
    day_rows = [r[0] for r in results]
    bad_total = sum(r[1] for r in results)
    all_examples = [e for r in results for e in r[2]][:MAX_EXAMPLES]
    all_warns = [w for r in results for w in r[3]]
    if comm is None or comm.rank == 0:
        with open_output(out) as f:
            pre = dict(out_options, dictionary_sha256=sha, malformed_rows=bad_total,
                       malformed_examples=all_examples, warnings=all_warns)
            h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=day_rows,
                                    parts=names, preprocessing=pre, **common)
    if comm is not None and comm.size > 1:
        comm.barrier()
    subsample.cleanup(thinned)
    return PreprocessReport(out, sum(day_rows), bad_total, all_examples, tuple(table_sizes),
                            tuple(day_rows), dictionary_reused=dict_reused,
                            parts_reused=len(files) - len(todo),
                            part_paths=[os.path.join(folder, n) for n in names],
                            warnings=all_warns)


def _kaggle_one_pass(src, out, dict_path, options, out_options, opts, days, chunk_rows,
                     progress, last_rows):
    """Dictionary and processed file in one read of `src` (no threshold, no spill)."""
    builder = DictionaryBuilder(NUM_CAT)
    prog = _Progress(progress, "write", os.path.getsize(src))
    groups = [list(range(NUM_CAT))]

    def map_ids(cats, columns):
        return builder.add(reduce_keys(cats, opts.max_ind_range), ids=True)
    with open_output(out) as f:  # ids are int32: any table size <= 2**31 - 1 writes them
        rows, bad, examples, warns = write_rows(f, src, (1,) * NUM_CAT, map_ids, opts,
                                                chunk_rows, groups, prog.block)
        dictionary = builder.finish(0, dict_path, options)
        table_sizes = dictionary.table_sizes
        day_rows = subsample.day_rows_after(rows, days, last_rows)
        pre = dict(out_options, dictionary_sha256=dictionary.sha256(), malformed_rows=bad,
                   malformed_examples=examples, warnings=warns)
        h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=day_rows, parts=[],
                                preprocessing=pre, dataset="kaggle", chunk_rows=chunk_rows)
    return PreprocessReport(out, rows, bad, examples, tuple(table_sizes), tuple(day_rows),
                            warnings=warns)


def _part_sha(path):
    return h5data.read_attrs(path)["preprocessing"].get("dictionary_sha256")


def _parts_present(out):
    """True when every part file the manifest `out` names is a readable processed file."""
    folder = os.path.dirname(out)
    try:
        for name in h5data.read_attrs(out)["parts"]:
            h5data.read_attrs(os.path.join(folder, name))
    except (OSError, ValueError, KeyError):
        return False
    return True


def _report_existing(out) -> PreprocessReport:
    """The report of an already complete output."""
    a = h5data.read_attrs(out)
    pre = a["preprocessing"]
    folder = os.path.dirname(out)
    return PreprocessReport(out, int(a["num_rows"]), int(pre["malformed_rows"]),
                            list(pre["malformed_examples"]),
                            tuple(int(n) for n in a["table_sizes"]),
                            tuple(int(n) for n in a["day_rows"]), skipped=True,
                            part_paths=[os.path.join(folder, n) for n in a["parts"]],
                            warnings=list(pre.get("warnings", [])))

"""Raw Criteo TSV (Kaggle or Terabyte) -> processed HDF5, as the reference's data_utils.

Missing fields read as 0; negative integers become 0 and the dense value is
log(float32(x) + 1) in float32. Categorical hex values are either hashed
(value % max_ind_range) or, with the default dict encoding, taken modulo
max_ind_range when it is > 0 and then numbered per column in order of first
appearance (first pass), with an optional frequency threshold. Every output file is
written under a temporary name and renamed when complete, the manifest last; a rerun
reuses the dictionary and the part files built with the same options.
"""
import json
import os
from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from ..atomic import atomic_h5, grow_reservation
from ..diskspace import h5_size
from ..signals import check_interrupt
from . import h5data
from .criteo_dict import DictionaryBuilder, load_dictionary
from .criteo_tsv import BLOCK_BYTES, MAX_EXAMPLES, NUM_CAT, read_criteo_tsv
from .splits import equal_days

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


def dense_from_ints(ints):
    """log(float32(max(x, 0)) + 1) in float32. ints: (n, 13) int64 -> (n, 13) float32."""
    return np.log(np.maximum(ints, 0).astype(np.float32) + np.float32(1))


def _reduce_keys(cats, max_ind_range):
    """cats: (n, 26) uint64, taken modulo max_ind_range when it is > 0."""
    return cats % np.uint64(max_ind_range) if max_ind_range > 0 else cats


class _Progress:
    """Per-pass counters feeding the user's progress callback."""

    def __init__(self, callback, stage, bytes_total):
        self.callback, self.stage, self.total = callback, stage, bytes_total
        self.rows, self.bytes_before = 0, 0

    def block(self, block):
        self.rows += len(block.labels)
        if self.callback is not None:
            self.callback(self.stage, self.rows, self.bytes_before + block.bytes_done, self.total)

    def file_done(self, path):
        self.bytes_before += os.path.getsize(path)


def _build_dictionary(files, max_ind_range, threshold, strict, block_bytes, progress):
    builder = DictionaryBuilder(NUM_CAT)
    prog = _Progress(progress, "dictionary", sum(os.path.getsize(p) for p in files))
    for path in files:
        for block in read_criteo_tsv(path, block_bytes, strict, require_rows=True):
            builder.add(_reduce_keys(block.cats, max_ind_range))
            prog.block(block)
        prog.file_done(path)
    return builder.finish(threshold)


def _write_rows(f, path, table_sizes, mapper, chunk_rows, strict, block_bytes, prog):
    """Write the valid rows of raw file `path` into h5py.File f.

    Returns (rows, malformed, examples, warnings); a raw file with no valid row raises.
    """
    writer = h5data.RowWriter(f, table_sizes, chunk_rows)
    reserve = _space_for_rows(f, table_sizes)
    malformed, examples, warnings, kept = 0, [], [], 0
    for block in read_criteo_tsv(path, block_bytes, strict, require_rows=True):
        reserve(len(block.labels))
        writer.append(dense_from_ints(block.ints), mapper(block.cats),
                      block.labels.astype(np.float32))
        malformed += block.n_malformed
        kept += len(block.labels)
        examples.extend(str(m) for m in block.malformed[:MAX_EXAMPLES - len(examples)])
        if block.truncated:
            warnings.append(f"{block.truncated}; kept the {kept:,} valid rows read before it")
        prog.block(block)
    writer.close()
    prog.file_done(path)
    return writer.rows, malformed, examples, warnings


def _space_for_rows(f, table_sizes):
    """reserve(n): hold the disk space of n more rows for the file f (opened by _atomic_h5)
    before they are written, and act on a SIGINT / SIGTERM deferred meanwhile."""
    row_bytes = 4 * (h5data.NUM_DENSE + 1) + sum(
        np.dtype(h5data.sparse_dtype(n)).itemsize for n in table_sizes)
    rows = [0]

    def reserve(n):
        check_interrupt()
        rows[0] += n
        grow_reservation(f, h5_size(rows[0] * row_bytes, 3 + len(table_sizes)))
    return reserve


def _atomic_h5(path):
    """h5data.atomic_h5 (same temporary name) with the space reserved as rows come
    (`_space_for_rows`): a full disk raises DiskFullError, the previous file untouched."""
    return atomic_h5(path, h5_size(0, 0), tmp=h5data.partial_path(path),
                     rdcc_nbytes=h5data.CHUNK_CACHE_BYTES)


def preprocess_criteo(raw, out, dataset="kaggle", encoding="dict", max_ind_range=-1,
                      frequency_threshold=0, strict=False, days=None, chunk_rows=32768,
                      force=False, progress=None, block_bytes=BLOCK_BYTES) -> PreprocessReport:
    """Preprocess raw Criteo TSV into the processed HDF5 file `out` (see module doc).

    progress: optional callable(stage, rows_done, bytes_done, bytes_total), once a block.
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
    chunk_rows = int(chunk_rows)
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
    options = _options(encoding, max_ind_range, threshold, files)
    out_options = dict(options, days=days) if dataset == "kaggle" else options

    if not force and _matches(out, dataset, chunk_rows, out_options) and _parts_present(out):
        return _report_existing(out)

    dictionary, dict_reused = None, False
    if encoding == "dict":
        dict_path = os.path.join(folder, f"{stem}.dict.h5")
        dictionary = None if force else load_dictionary(dict_path, options)
        dict_reused = dictionary is not None
        if dictionary is None:
            dictionary = _build_dictionary(files, max_ind_range, threshold, strict,
                                           block_bytes, progress)
            dictionary.save(dict_path, options)
        table_sizes = dictionary.table_sizes

        def mapper(cats):
            return dictionary.map(_reduce_keys(cats, max_ind_range))
        sha = dictionary.sha256()
    else:
        table_sizes = (max_ind_range,) * NUM_CAT

        def mapper(cats):
            return (cats % np.uint64(max_ind_range)).astype(np.int64)
        sha = None

    prog = _Progress(progress, "write", sum(os.path.getsize(p) for p in files))
    common = dict(dataset=dataset, chunk_rows=chunk_rows)
    if dataset == "kaggle":
        with _atomic_h5(out) as f:
            rows, bad, examples, warns = _write_rows(f, files[0], table_sizes, mapper,
                                                     chunk_rows, strict, block_bytes, prog)
            day_rows = equal_days(rows, days)
            pre = dict(out_options, dictionary_sha256=sha, malformed_rows=bad,
                       malformed_examples=examples, warnings=warns)
            h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=day_rows, parts=[],
                                    preprocessing=pre, **common)
        return PreprocessReport(out, rows, bad, examples, tuple(table_sizes), tuple(day_rows),
                                dictionary_reused=dict_reused, warnings=warns)

    day_rows, bad_total, all_examples, names, reused, all_warns = [], 0, [], [], 0, []
    for day, src in enumerate(files):
        name = f"{stem}_day_{day}.h5"
        part = os.path.join(folder, name)
        part_opts = dict(_options(encoding, max_ind_range, threshold, [src]),
                         dictionary_sha256=sha)
        if not force and _matches(part, dataset, chunk_rows, part_opts,
                                  {"day": day, "table_sizes": table_sizes}) \
                and _part_sha(part) == sha:
            attrs = h5data.read_attrs(part)
            rows = int(attrs["num_rows"])
            bad = int(attrs["preprocessing"]["malformed_rows"])
            examples = attrs["preprocessing"]["malformed_examples"]
            warns = list(attrs["preprocessing"].get("warnings", []))
            prog.file_done(src)
            reused += 1
        else:
            with _atomic_h5(part) as f:
                rows, bad, examples, warns = _write_rows(f, src, table_sizes, mapper,
                                                         chunk_rows, strict, block_bytes, prog)
                pre = dict(part_opts, malformed_rows=bad, malformed_examples=examples,
                           warnings=warns)
                h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=[rows], parts=[],
                                        preprocessing=pre, **common)
                f.attrs["day"] = np.int64(day)
        day_rows.append(rows)
        bad_total += bad
        all_examples.extend(examples[:MAX_EXAMPLES - len(all_examples)])
        all_warns.extend(warns)
        names.append(name)
    with _atomic_h5(out) as f:
        pre = dict(out_options, dictionary_sha256=sha, malformed_rows=bad_total,
                   malformed_examples=all_examples, warnings=all_warns)
        h5data.write_root_attrs(f, table_sizes=table_sizes, day_rows=day_rows, parts=names,
                                preprocessing=pre, **common)
    return PreprocessReport(out, sum(day_rows), bad_total, all_examples, tuple(table_sizes),
                            tuple(day_rows), dictionary_reused=dict_reused, parts_reused=reused,
                            part_paths=[os.path.join(folder, n) for n in names],
                            warnings=all_warns)


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

"""`npdlrm preprocess`: raw Criteo TSV (Kaggle or Terabyte) -> processed HDF5."""
import argparse
import io
import os
import sys
import time

from . import from_reference


def add_arguments(p):
    p.description = ("Parse raw Criteo TSV (plain or .gz) into the processed HDF5 file that "
                     "npdlrm train reads (reference data_utils.py rules).")
    p.add_argument("--raw-data-file", default="",
                   help="Kaggle: train.txt(.gz); Terabyte: the prefix of day_0 ... (e.g. "
                        "/data/day); required unless --from-reference")
    p.add_argument("--processed-data-file", required=True, help="output HDF5 file")
    p.add_argument("--data-set", choices=["kaggle", "terabyte"], default="kaggle",
                   help="dataset layout (default kaggle)")
    p.add_argument("--encoding", choices=["dict", "hash"], default="dict",
                   help="categorical ids: per-column dictionary by first appearance, or "
                        "value %% max-ind-range (default dict). hash gives EVERY table "
                        "max-ind-range rows, even a column with 3 values (26 x max-ind-range "
                        "rows to train)")
    p.add_argument("--max-ind-range", type=int, default=-1,
                   help="take categorical values modulo this when > 0 (default -1)")
    p.add_argument("--frequency-threshold", type=int, default=0,
                   help="dict encoding: keys seen fewer times share one id (default 0: off)")
    p.add_argument("--days", type=int, default=None,
                   help="Kaggle: equal days to cut the rows into (default 7); Terabyte: "
                        "day files to read (default 24)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first malformed row instead of skipping it")
    p.add_argument("--force", action="store_true",
                   help="redo everything, even a complete output with the same options")
    p.add_argument("--chunk-rows", type=int, default=32768,
                   help="rows per HDF5 chunk (default 32768)")
    p.add_argument("--memory-limit", type=parse_bytes, default=0, metavar="BYTES",
                   help="dict encoding: memory for the dictionary's tables, e.g. 8G (default: "
                        "no limit). Over it the first pass spills key runs beside the output "
                        "and the write pass reads the raw files once per group of columns "
                        "whose tables fit. The process itself needs about 0.5 GiB more")
    p.add_argument("--workers", type=int, default=1,
                   help="terabyte: local processes sharing the day files (default 1); under "
                        "mpiexec the MPI ranks share them instead")
    p.add_argument("--data-sub-sample-rate", type=float, default=0.0, metavar="RATE",
                   help="drop each negative row of the training days with this probability "
                        "(the reference's negative down-sampling; the test day is kept whole)")
    p.add_argument("--numpy-rand-seed", type=int, default=123,
                   help="seed of the sub-sampling draws (default 123, as npdlrm train's)")
    from_reference.add_arguments(p)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text):
    """'8G', '512M', '1.5G', '1000' -> bytes (binary units; a trailing B or iB is allowed)."""
    t = str(text).strip().upper()
    for tail in ("IB", "B"):
        if t.endswith(tail) and len(t) > len(tail):
            t = t[:-len(tail)]
            break
    unit = t[-1] if t and t[-1] in _UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8G, 512M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a size must be >= 0, got {text!r}")
    return int(value * _UNITS[unit])


def _world():
    """MPI's world when launched by mpiexec with more than one rank, else None."""
    if not any(k in os.environ for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")):
        return None
    from ..parallel.comm import world
    comm = world()
    return comm if comm.size > 1 else None


class _StderrProgress:
    """Prints one progress line to stderr at most every `every` seconds."""

    def __init__(self, err, every=1.0):
        self.err, self.every, self.last, self.stage = err, every, 0.0, None

    def __call__(self, stage, rows, done, total):
        now = time.monotonic()
        if self.stage is not None and stage != self.stage:
            print(file=self.err)
        if now - self.last >= self.every or done >= total or stage != self.stage:
            self.stage = stage
            self.last = now
            pct = 100.0 * done / total if total else 100.0
            print(f"\r{stage}: {rows:,} rows, {pct:5.1f}% of the raw bytes",
                  end="", file=self.err, flush=True)


def run(args, err=None) -> int:
    """Run the subcommand, printing progress and a summary to `err` (default stderr).

    Returns the exit code: 0, or 2 on bad input (with a message, no traceback).
    """
    from ..data.preprocess import preprocess_criteo
    err = sys.stderr if err is None else err
    if args.from_reference:
        return from_reference.run(args, err)
    if not args.raw_data_file:
        print("npdlrm preprocess: error: --raw-data-file is required (or --from-reference)",
              file=err)
        return 2
    comm = _world()
    if comm is not None and comm.rank != 0:  # rank 0 speaks for all
        err = io.StringIO()
    progress = _StderrProgress(err)
    try:
        report = preprocess_criteo(
            args.raw_data_file, args.processed_data_file, dataset=args.data_set,
            encoding=args.encoding, max_ind_range=args.max_ind_range,
            frequency_threshold=args.frequency_threshold, strict=args.strict,
            days=args.days, chunk_rows=args.chunk_rows, force=args.force, progress=progress,
            memory_limit=args.memory_limit, workers=args.workers, comm=comm,
            sub_sample_rate=args.data_sub_sample_rate, sub_sample_seed=args.numpy_rand_seed)
    except (ValueError, OSError) as e:
        if progress.last:
            print(file=err)
        print(f"npdlrm preprocess: error: {e}", file=err)
        return 2
    if progress.last:
        print(file=err)
    if report.skipped:
        print(f"{report.path} is already complete with these options; nothing to do "
              "(--force redoes it)", file=err)
    elif report.resumed:
        print(f"resumed: dictionary reused: {report.dictionary_reused}, part files reused: "
              f"{report.parts_reused}", file=err)
    print(f"{report.path}: {report.rows:,} rows, day rows {list(report.day_rows)}",
          file=err)
    print(f"table sizes: {list(report.table_sizes)}", file=err)
    if args.encoding == "hash":
        print(f"hash encoding: every table has max-ind-range = {args.max_ind_range:,} rows, "
              "however few values its column holds", file=err)
    print(f"malformed rows skipped: {report.malformed_rows:,}", file=err)
    for example in report.malformed_examples:
        print(f"  {example}", file=err)
    for warning in report.warnings:
        print(f"npdlrm preprocess: warning: {warning} (--strict refuses it)", file=err)
    return 0

"""Criteo TSV parsing speed: the Numba block parser vs a line-by-line Python parser.

Builds a raw file by repeating the real Criteo sample (or synthetic lines when it is
absent), then times, in this one run and on the same bytes:
  python-line   `parse_line_python` on every line (the slow reference parser)
  numba-block   `read_criteo_tsv` (block reads + the Numba kernel), plain file
  numba-gz      the same on the gzip file
  preprocess    `preprocess_criteo` end to end (dict encoding: two passes + HDF5 writes)
and prints rows/s of each. Usage: .venv/bin/python bench/bench_preprocess.py [--rows N]

With --raw FILE (a raw file, or a Terabyte day prefix with --days), it instead runs
`npdlrm preprocess` on it in a child process, once per --modes entry, and prints the
wall time, rows/s and the child's peak RSS (bench/gen_criteo.py makes such files):
  .venv/bin/python bench/bench_preprocess.py --raw /data/train.txt --modes dict hash
"""
import argparse
import gzip
import os
import sys
import tempfile
import time

import numpy as np

from npdlrm.data.criteo_tsv import parse_line_python, read_criteo_tsv
from npdlrm.data.preprocess import preprocess_criteo

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                      "shared", "data", "criteo_sample", "train_10k.txt.gz")


def sample_lines():
    if os.path.exists(SAMPLE):
        with gzip.open(SAMPLE, "rb") as f:
            return f.read().splitlines()
    rng = np.random.default_rng(0)
    return [b"\t".join([b"%d" % rng.integers(0, 2)]
                       + [b"%d" % rng.integers(0, 1000) for _ in range(13)]
                       + [b"%08x" % rng.integers(0, 2**32) for _ in range(26)])
            for _ in range(10_000)]


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


MODES = {"dict": [], "hash": ["--encoding", "hash", "--max-ind-range", "10000000"],
         "dict-t2": ["--frequency-threshold", "2"]}


def run_modes(args):
    """`npdlrm preprocess` on args.raw once per mode, in a child: time, rows/s, peak RSS."""
    import resource
    import subprocess
    import h5py
    print(f"{'mode':<10}{'extra':<28}{'rows':>13}{'seconds':>9}{'rows/s':>11}{'peak GiB':>9}")
    for mode in args.modes:
        out = os.path.join(args.out_dir, f"bench_{mode}.h5")
        extra = []
        if args.memory_limit:
            extra += ["--memory-limit", args.memory_limit]
        if args.workers > 1:
            extra += ["--workers", str(args.workers)]
        if args.days:
            extra += ["--data-set", "terabyte", "--days", str(args.days)]
        cmd = [sys.executable, "-m", "npdlrm", "preprocess", "--raw-data-file", args.raw,
               "--processed-data-file", out, "--force", *MODES[mode], *extra]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with h5py.File(out, "r") as f:
            rows = int(f.attrs["num_rows"])
        # ru_maxrss of the children is the largest of any one child so far
        shown = f"{peak / 2**20:.2f}" if peak > before else f"<={peak / 2**20:.2f}"
        print(f"{mode:<10}{' '.join(extra):<28}{rows:>13,}{seconds:>9.1f}"
              f"{rows / seconds:>11,.0f}{shown:>9}", flush=True)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=400_000, help="rows of the raw file")
    p.add_argument("--python-rows", type=int, default=50_000,
                   help="rows timed with the slow Python parser (it is slow)")
    p.add_argument("--raw", help="time `npdlrm preprocess` on this raw file (or day prefix)")
    p.add_argument("--modes", nargs="+", default=["dict", "hash"], choices=sorted(MODES))
    p.add_argument("--days", type=int, default=0, help="with --raw: terabyte day files")
    p.add_argument("--memory-limit", default="", help="with --raw: e.g. 8G")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out-dir", default=tempfile.gettempdir())
    args = p.parse_args(argv)
    if args.raw:
        return run_modes(args)
    base = sample_lines()
    lines = (base * (args.rows // len(base) + 1))[:args.rows]
    data = b"\n".join(lines) + b"\n"
    with tempfile.TemporaryDirectory() as tmp:
        plain, gz = os.path.join(tmp, "train.txt"), os.path.join(tmp, "train.txt.gz")
        with open(plain, "wb") as f:
            f.write(data)
        with gzip.open(gz, "wb", compresslevel=6) as f:
            f.write(data)

        def run_numba(path):
            return sum(len(b.labels) for b in read_criteo_tsv(path))

        run_numba(plain)  # compile (or load the cache) before timing
        rows = {}
        n_py = min(args.python_rows, len(lines))
        _, t = timed(lambda: [parse_line_python(x) for x in lines[:n_py]])
        rows["python-line"] = (n_py, t)
        rows["numba-block"] = timed(lambda: run_numba(plain))
        rows["numba-gz"] = timed(lambda: run_numba(gz))
        rep, t = timed(lambda: preprocess_criteo(plain, os.path.join(tmp, "out.h5")))
        rows["preprocess"] = (rep.rows, t)
        print(f"raw file: {len(lines):,} rows, {len(data) / 2**20:.1f} MiB "
              f"({os.path.getsize(gz) / 2**20:.1f} MiB gzip); cpus: {os.cpu_count()}")
        print(f"{'what':<14}{'rows':>12}{'seconds':>10}{'rows/s':>14}{'MiB/s':>9}")
        bytes_per_row = len(data) / len(lines)
        for name, (n, t) in rows.items():
            print(f"{name:<14}{n:>12,}{t:>10.2f}{n / t:>14,.0f}"
                  f"{n * bytes_per_row / t / 2**20:>9.1f}")
        speedup = (rows["numba-block"][0] / rows["numba-block"][1]) / (n_py / rows["python-line"][1])
        print(f"numba-block vs python-line: {speedup:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

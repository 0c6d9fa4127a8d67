"""What the file checksums cost per GB: checkpoint writes (CRC-32 attribute) and loads
with and without the verification pass (`--no-verify`), beside the rejected alternative
(HDF5's Fletcher-32 filter on chunked datasets); processed-data chunk reads and writes
with and without Fletcher-32 (what the data files use).

    .venv/bin/python bench/bench_checksum.py              # 1 GB checkpoint table, 0.5 GB data
    .venv/bin/python bench/bench_checksum.py --gb 4 --data-gb 2 --folder /big/disk

Reads are from the page cache (the files were just written): the CPU cost of checking is
then as large a share of the time as it can be; from a disk that reads slower than the
checks run, the share is smaller.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from npdlrm import DLRM, DLRMConfig  # noqa: E402
from npdlrm import checkpoint as ckpt_mod  # noqa: E402
from npdlrm.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def best(fn, repeat):
    """The shortest of `repeat` timed calls of fn (seconds)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def row(what, nbytes, seconds, base=None):
    extra = "" if base is None else f"{seconds / base:8.2f}x"
    print(f"  {what:58s} {seconds:8.3f} s {nbytes / seconds / 1e9:8.2f} GB/s {extra}")


def bench_checkpoint(folder, gb, repeat):
    D = 64
    rows = int(gb * 1e9) // (4 * D)
    config = DLRMConfig(table_sizes=(rows, 1000), embedding_dim=D, bottom_mlp=(13, 64, D),
                        top_mlp=(64, 1))
    model = DLRM(config, init="none")
    rng = np.random.default_rng(0)
    for t in model.embeddings.tables:
        t.weight[:] = rng.standard_normal(t.weight.shape, dtype=np.float32)
    for v in model.params.views.values():
        v[...] = rng.standard_normal(v.shape)
    nbytes = sum(a.nbytes for a in model.state_dict().values())
    table = model.embeddings.tables[0].weight
    print(f"checkpoint: {nbytes / 1e9:.2f} GB ({rows:,} x {D} float32 table)")
    path = os.path.join(folder, "ck.h5")
    plain = os.path.join(folder, "plain.h5")
    fl = os.path.join(folder, "fletcher.h5")

    def write_plain():  # what a save wrote before checksums
        with h5py.File(plain, "w") as f:
            f.create_dataset("t", data=table)

    def write_fletcher():
        with h5py.File(fl, "w") as f:
            f.create_dataset("t", data=table, chunks=(max(1, (1 << 20) // (4 * D)), D),
                             fletcher32=True)

    crc = ckpt_mod.array_crc32
    ckpt_mod.array_crc32 = lambda a: 0  # a save as before checksums (same fsyncs)
    try:
        s0 = best(lambda: save_checkpoint(path, model), repeat)
    finally:
        ckpt_mod.array_crc32 = crc
    row("save_checkpoint without CRC-32 (before; includes fsync)", nbytes, s0)
    row("save_checkpoint (CRC-32 attribute per dataset)", nbytes,
        best(lambda: save_checkpoint(path, model), repeat), s0)
    row("  zlib.crc32 of the table alone", table.nbytes,
        best(lambda: zlib.crc32(table.reshape(-1).view(np.uint8)), repeat))
    w0 = best(write_plain, repeat)
    row("h5py write, table only, contiguous, no fsync", table.nbytes, w0)
    row("h5py write, table only, chunked + Fletcher-32 (alternative)", table.nbytes,
        best(write_fletcher, repeat), w0)

    target = DLRM(config, init="none")
    r0 = best(lambda: load_checkpoint(path, model=target, with_optimizer=False,
                                      verify=False), repeat)
    row("load_checkpoint verify=False (--no-verify)", nbytes, r0)
    row("load_checkpoint verify=True (CRC-32 + finite pass first)", nbytes,
        best(lambda: load_checkpoint(path, model=target, with_optimizer=False), repeat), r0)
    out = np.empty_like(table)

    def read(p):
        with h5py.File(p, "r") as f:
            f["t"].read_direct(out)

    rp = best(lambda: read(plain), repeat)
    row("read_direct, table only, contiguous", table.nbytes, rp)
    row("read_direct, table only, chunked + Fletcher-32 (alternative)", table.nbytes,
        best(lambda: read(fl), repeat), rp)
    for p in (path, plain, fl):
        os.remove(p)


def bench_data(folder, gb, repeat, chunk_rows=32768):
    """Processed-file layout: (n,) int32 columns in chunks of chunk_rows, read chunk by
    chunk as the BatchLoader does."""
    cols = 8
    n = int(gb * 1e9) // (4 * cols)
    n -= n % chunk_rows
    data = np.random.default_rng(1).integers(0, 1 << 30, (cols, n)).astype(np.int32)
    nbytes = data.nbytes
    print(f"processed data: {nbytes / 1e9:.2f} GB ({cols} int32 columns of {n:,} rows, "
          f"chunks of {chunk_rows:,} rows)")
    paths = {}
    for fletcher in (False, True):
        p = paths[fletcher] = os.path.join(folder, f"data{int(fletcher)}.h5")

        def write():
            with h5py.File(p, "w") as f:
                for k in range(cols):
                    ds = f.create_dataset(str(k), (n,), np.int32, chunks=(chunk_rows,),
                                          maxshape=(None,), fletcher32=fletcher)
                    for lo in range(0, n, chunk_rows * 16):  # appended in blocks
                        ds[lo:lo + chunk_rows * 16] = data[k, lo:lo + chunk_rows * 16]
        paths[fletcher, "w"] = best(write, repeat)

    def read(p):
        with h5py.File(p, "r") as f:
            sets = [f[str(k)] for k in range(cols)]
            for lo in range(0, n, chunk_rows):
                for ds in sets:
                    ds[lo:lo + chunk_rows]

    w0 = paths[False, "w"]
    row("write, no filter (before)", nbytes, w0)
    row("write, Fletcher-32 (processed files now)", nbytes, paths[True, "w"], w0)
    r0 = best(lambda: read(paths[False]), repeat)
    row("chunk reads, no filter (before)", nbytes, r0)
    row("chunk reads, Fletcher-32 checked on every read (now)", nbytes,
        best(lambda: read(paths[True]), repeat), r0)
    for key in (False, True):
        os.remove(paths[key])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=1.0, help="checkpoint table size (default 1)")
    p.add_argument("--data-gb", type=float, default=0.5,
                   help="processed data size (default 0.5)")
    p.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    p.add_argument("--folder", default=None, help="where the files go (default: a temp dir)")
    args = p.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="npdlrm-bench-", dir=args.folder)
    try:
        print(f"best of {args.repeat}; times, GB/s, and x the unchecked baseline")
        bench_checkpoint(folder, args.gb, args.repeat)
        bench_data(folder, args.data_gb, args.repeat)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
